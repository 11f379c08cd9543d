"""Know the cost before paying it: `run` prints its plan, `run --dry-run` only that, and the bar has an ETA."""

import io
import re

import pytest
from tqdm import tqdm

from splitsearch.metrics import EpochMetrics
from splitsearch.search.plan_estimate import StudyProgress, expected_epoch_fraction, format_duration
from splitsearch.search.study import load_study_spec, resolve_study_file

from conftest import run_cli as run


def _dry_run(capsys, tmp_path, *options):
    storage = tmp_path / "plan.db"
    code, out, err = run(capsys, "run", "--dry-run", "--storage", f"sqlite:///{storage}", "--device", "cpu",
                         "--runs-dir", tmp_path / "runs", *options)
    assert code == 0, err
    assert not storage.exists() and not (tmp_path / "runs").exists(), "a dry run stored something"
    return out, err


def test_dry_run_of_36m_on_digits_plans_warns_and_stores_nothing(tmp_path, capsys):
    out, err = _dry_run(capsys, tmp_path, "--budget-params", "36M")
    # The plan times a few steps, not an epoch (counted, not clocked: the machine may be loaded).
    timed, per_epoch = map(int, re.search(r"median of (\d+) after .*?(\d+) steps \+", out).groups())
    assert 1 <= timed < per_epoch
    assert "width factor 11.5" in out and "36M params" in out
    assert "plan: the study: 12 trials x 6 epochs" in out and "Hyperband trains about 80% of the epochs" in out
    assert " h\n" in out or " min\n" in out
    warnings = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "1,438 training images" in warnings[0]


def test_the_quick_start_plan_has_no_warning(tmp_path, capsys):
    out, err = _dry_run(capsys, tmp_path)
    assert "width factor 0.46" in out and "59.9K params" in out
    assert "a training step (median of" in out and "an epoch" in out
    assert "Warning" not in err


def test_dry_run_refuses_the_greedy_strategy(tmp_path, capsys):
    code, _, err = run(capsys, "run", "--dry-run", "--strategy", "greedy-blocks", "--storage",
                       f"sqlite:///{tmp_path / 'g.db'}")
    assert code == 2 and "--dry-run plans --strategy sampler studies only" in err


def test_progress_shows_the_trial_epoch_and_an_eta():
    spec = load_study_spec(resolve_study_file("quickstart"))
    bar = tqdm(total=12, file=io.StringIO())
    bar.n = 2  # two trials finished; the third is running
    progress = StudyProgress(bar, spec)
    progress(5, _epoch(2, seconds=10.0))
    # 4 epochs of this trial, then 9 trials x 6 epochs x 80 % (Hyperband at 10 trials), at 10 s an epoch: 472 s.
    assert bar.postfix == "trial 5 epoch 2/6, ETA 7.9 min"
    bar.close()


@pytest.mark.parametrize(("seconds", "text"), [(0.0421, "42 ms"), (4.25, "4.2 s"), (75, "1.2 min"), (5400, "1.5 h")])
def test_durations_read_in_human_units(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("pruner", "n_trials", "fraction"), [("hyperband", 12, 0.8), ("hyperband", 40, 77 / 120),
                                                               ("median", 12, 1.0), ("none", 12, 1.0)])
def test_the_pruner_saving_comes_from_the_measured_replays(pruner, n_trials, fraction):
    spec = load_study_spec(resolve_study_file("quickstart"), {"pruner": pruner, "n_trials": n_trials})
    assert expected_epoch_fraction(spec)[0] == pytest.approx(fraction)


def _epoch(number: int, seconds: float) -> EpochMetrics:
    return EpochMetrics(epoch=number, train_loss=1.0, train_cross_entropy=1.0, train_cotraining=0.0, lr=0.05,
                        lambda_cot=0.0, val_accuracy=0.5, val_member_accuracies=[0.5], seconds=seconds)
