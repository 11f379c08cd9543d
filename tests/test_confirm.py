"""Noise-aware picks: confirm the best candidates over seeds, export by the confirmed mean, show the noise."""

from __future__ import annotations

import optuna
import pytest
import yaml

from splitsearch.cli import main
from splitsearch.report import build_figures, write_report
from splitsearch.search.confirm import ConfirmedCandidate, confirmation_targets, summarize
from splitsearch.search.export import pick_trial
from splitsearch.store import Store

from conftest import run_cli as run

STUDY = """\
name: noisy
arch: resnet20
objectives: [accuracy]   # this module checks accuracy's standard errors and confirmed means
dataset: synthetic:96
space: divide
epochs: 2
n_trials: 4
budget_params: 30K
base: {train: {batch_size: 32, val_fraction: 0.25}}
"""



@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished study of three baselines and one searched trial, in a real SQLite store (shared by the
    tests of this module: only the confirmation test adds rows, and only confirmation rows)."""
    folder = tmp_path_factory.mktemp("noisy")
    (folder / "noisy.yaml").write_text(STUDY)
    storage = f"sqlite:///{folder / 'noisy.db'}"
    code = main(["run", str(folder / "noisy.yaml"), "--storage", storage, "--device", "cpu",
                 "--runs-dir", str(folder / "runs"), "--set", "pruner=none"])
    assert code == 0
    return storage, optuna.load_study(study_name="noisy", storage=storage)


def test_trials_record_the_standard_error_of_their_accuracy(searched):
    _, study = searched
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        accuracy, count = trial.value, trial.user_attrs["val_samples"]
        assert count == 19
        assert trial.user_attrs["val_standard_error"] == pytest.approx((accuracy * (1 - accuracy) / count) ** 0.5)


def test_confirm_records_one_row_per_candidate_and_seed(tmp_path, searched, capsys):
    storage, study = searched
    targets = confirmation_targets(study, top=1)
    baselines = {trial.number for trial in study.trials if trial.user_attrs.get("baseline")}
    assert baselines <= {trial.number for trial in targets} and len(baselines) == 3

    code, out, err = run(capsys, "confirm", "--study", "noisy", "--storage", storage, "--top", "1", "--seeds", "2",
                         "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    rows = Store(storage).confirmations("noisy")
    assert sorted((row.trial_number, row.seed) for row in rows) == sorted(
        (trial.number, seed) for trial in targets for seed in (1, 2))
    assert all(row.state == "complete" and row.val_samples == 19 and row.val_standard_error is not None
               for row in rows)
    assert "confirmed mean" in out and "undivided" in out
    assert not list((tmp_path / "runs" / "noisy").glob("confirm-*")), "finished runs leave no checkpoint behind"

    # Asking for more seeds trains only the new ones; the finished runs stay as they were.
    code, _, _ = run(capsys, "confirm", "--study", "noisy", "--storage", storage, "--top", "1", "--seeds", "3",
                     "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet")
    again = Store(storage).confirmations("noisy")
    assert code == 0 and len(again) == 3 * len(targets)
    before = {(row.trial_number, row.seed): row for row in rows}
    assert all(before[key] == row for row in again if (key := (row.trial_number, row.seed)) in before)

    # export now picks the best confirmed mean, and says so.
    summaries = summarize(study, again)
    best = summaries[0]
    assert best.mean == max(summary.mean for summary in summaries) and len(best.accuracies) == 3
    code, out, _ = run(capsys, "export", "--study", "noisy", "--storage", storage, "-o", tmp_path / "best.yaml")
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert code == 0 and f"trial {best.trial_number} " in out and "confirmed mean" in out
    assert exported["provenance"]["trial"] == best.trial_number
    assert exported["provenance"]["confirmed"]["mean_val_accuracy"] == pytest.approx(best.mean)
    assert exported["provenance"]["confirmed"]["seeds"] == [1, 2, 3]


def test_confirmed_mean_outranks_the_search_value(searched):
    _, study = searched
    best = study.best_trial
    other = next(trial for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                 if trial.number != best.number)
    confirmed = [
        ConfirmedCandidate(best.number, "a", None, best.value, (1, 2), (0.40, 0.42)),
        ConfirmedCandidate(other.number, "b", None, other.value, (1, 2), (0.50, 0.52)),
    ]
    assert pick_trial(study).number == best.number
    assert pick_trial(study, confirmed=confirmed).number == other.number


def test_report_draws_standard_errors_and_confirmed_spread(searched):
    _, study = searched
    complete = {trial.number: trial for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    confirmed = [ConfirmedCandidate(number, "h", None, trial.value, (1, 2, 3), (0.3, 0.4, 0.5))
                 for number, trial in complete.items()]
    figures = dict(build_figures(study, confirmed))

    scatter_bars = {}
    for trace in figures["Validation accuracy vs parameters"].data:
        for accuracy, bar in zip(trace.y, trace.error_y.array):
            scatter_bars[round(accuracy, 6)] = bar
    for trial in complete.values():
        assert scatter_bars[round(trial.value, 6)] == pytest.approx(trial.user_attrs["val_standard_error"])

    means, searched_values = figures["Confirmed validation accuracy (mean and sd over seeds)"].data
    assert list(means.y) == pytest.approx([0.4] * len(complete))
    assert list(means.error_y.array) == pytest.approx([0.1] * len(complete))  # sd of 0.3, 0.4, 0.5
    assert sorted(searched_values.y) == sorted(trial.value for trial in complete.values())
    assert "Confirmed validation accuracy" not in dict(build_figures(study))


def test_report_head_names_the_confirmed_pick(searched, tmp_path):
    _, study = searched
    trial = study.best_trial
    confirmed = [ConfirmedCandidate(trial.number, "h", None, trial.value, (1, 2), (0.30, 0.40))]
    page = write_report(study, tmp_path / "report.html", confirmed).read_text()
    assert f"Confirmed best #{trial.number} (searched): validation accuracy 0.3500 +- 0.0707 over 2 new seeds" in page
    assert "Confirmed best" not in write_report(study, tmp_path / "plain.html").read_text()
