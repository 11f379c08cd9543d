"""Know the cost before paying it: `run` prints its plan, `run --dry-run` only that, and the bar has an ETA."""

import io
import re

import pytest
from tqdm import tqdm

from splitsearch.metrics import EpochMetrics
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.search.plan_estimate import (RunPlan, StudyProgress, TimedKind, expected_epoch_fraction,
                                              format_duration, sample_kinds)
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
    timed, per_epoch = map(int, re.search(r"median of (\d+) after .*?(\d+) steps \+", out, re.S).groups())
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


def test_the_plan_times_one_candidate_of_each_kind_the_space_holds():
    quickstart = load_study_spec(resolve_study_file("quickstart"))
    assert [(label, config.S) for label, config in sample_kinds(quickstart)] == [("largest S", 4)]

    full = load_study_spec(resolve_study_file("quickstart"), {"space": "full"})
    kinds = dict(sample_kinds(full))
    assert list(kinds) == ["largest S", "semantic G=4", "most-split blocks"]
    assert (kinds["largest S"].S, kinds["largest S"].groups) == (4, 1)
    assert (kinds["semantic G=4"].S, kinds["semantic G=4"].groups) == (4, 4)
    assert (kinds["most-split blocks"].S, kinds["most-split blocks"].block_factors) == (4, (4, 4, 4))


def test_the_estimate_is_the_kinds_mean_and_the_closing_line_sets_it_beside_the_actual_time():
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits")
    kinds = (TimedKind("largest S", config, (0.1, 0.3, 0.2)), TimedKind("most-split blocks", config, (0.4,)))
    plan = RunPlan(config, count_config(config), kinds, steps_per_epoch=10, val_batches=3, epochs=2, n_trials=5,
                   epoch_fraction=0.5, fraction_source="x", train_images=1000)
    # Medians 0.2 s and 0.4 s: a step at their mean of 0.3 s; 10 + 3/3 step-equivalents an epoch.
    assert plan.epoch_seconds == pytest.approx(0.3 * 11)
    assert plan.expected_seconds == pytest.approx(5 * 2 * 0.3 * 11 * 0.5)
    assert len(plan.lines()) == 5  # size, one line per kind, the epoch, the study
    assert plan.closing_line(33.0) == "time: the study took 33.0 s, against the plan's estimate of 16.5 s (2.00x)"
    timeout_only = RunPlan(config, count_config(config), kinds, 10, 3, 2, None, 1.0, "x", None)
    assert timeout_only.closing_line(33.0) is None
