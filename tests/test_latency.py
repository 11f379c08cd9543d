"""Measured latency as a budget and as an objective of the search.

Latency is noisy on a shared CPU, so no test depends on fine timing: the budgets are far under
(1 us) or far over (60 s) what any pass of these tiny networks takes.
"""

from __future__ import annotations

import shutil

import optuna
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from splitsearch.config import SplitConfig
from splitsearch.cost.latency import measure_latency
from splitsearch.report import write_report
from splitsearch.search.export import export_best
from splitsearch.search.objective import SearchObjective
from splitsearch.search.run import open_for_reading, run_study
from splitsearch.search.study import StudyError, load_study_spec
from splitsearch.store import Store
from splitsearch.units import UnitError, format_duration, parse_duration

from conftest import run_cli, runs_in, tiny_spec

COMPLETE = (optuna.trial.TrialState.COMPLETE,)
PRUNED = (optuna.trial.TrialState.PRUNED,)
# No budget, one epoch, no baselines: the latency is what these studies are about.
LATENCY_STUDY = {"epochs": 1, "n_trials": 2, "baselines": False, "budget_params": None, "budget_mode": "reject",
                 "base": {"width_mult": 0.25, "train": {"batch_size": 32, "val_fraction": 0.25}}}


def latency_spec(name: str, **overrides):
    return tiny_spec(name, **(LATENCY_STUDY | overrides))


# -- the duration parser ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("5ms", 5e-3), ("0.2s", 0.2), ("800us", 800e-6), ("800µs", 800e-6),
                                           ("1e-3s", 1e-3), ("2 ms", 2e-3), ("5MS", 5e-3), ("1_500ns", 1.5e-6),
                                           (0.25, 0.25), (3, 3.0)])
def test_durations_are_read_in_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5m", "ms", "5 mss", "-1ms", "0s", "5_ms", "", True, 0, float("nan"),
                                  float("inf")])
def test_a_bad_duration_is_one_clear_line(text):
    with pytest.raises(UnitError) as error:
        parse_duration(text)
    assert "\n" not in str(error.value) and ("duration" in str(error.value))


def test_durations_are_written_in_a_readable_unit():
    assert [format_duration(value) for value in (2.5, 5.12e-3, 3e-6, 4e-9)] == ["2.5 s", "5.12 ms", "3 us", "4 ns"]


@pytest.mark.parametrize("argv", [("--budget-latency", "5"), ("--budget-latency", "-2ms"),
                                  ("--set", "latency_batch_size=0")])
def test_bad_latency_options_are_one_line_and_store_nothing(argv, capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", *argv, "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and argv[-1].split("=")[0] in err and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()


def test_a_bad_latency_batch_size_in_a_study_file_is_refused():
    with pytest.raises(StudyError, match="latency_batch_size"):
        latency_spec("bad", latency_batch_size="four")


def test_a_study_file_sets_the_latency_budget_and_batch(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("arch: resnet20\nbudget_latency: 5ms\nlatency_batch_size: 4\nobjectives: accuracy,latency\n")
    spec = load_study_spec(path)
    assert (spec.budget_latency, spec.latency_batch_size, spec.objectives) == \
        (pytest.approx(5e-3), 4, ("accuracy", "latency"))
    assert load_study_spec(path, {"budget_latency": 0.25}).budget_latency == 0.25  # a number is in seconds
    path.write_text("arch: resnet20\nbudget_latency: 5 minutes\n")
    with pytest.raises(StudyError, match=r"study.yaml: cannot read '5 minutes' as a duration"):
        load_study_spec(path)


def test_run_help_offers_the_latency_budget_and_objective(capsys):
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    assert "--budget-latency" in out
    text = " ".join(out.split())
    objectives_help = text.split("--objectives TEXT", 1)[1].split(" --", 1)[0]
    assert "accuracy,COST" in objectives_help and "latency" in objectives_help


# -- measuring ----------------------------------------------------------------------------------------

def test_measure_latency_times_the_ensemble_as_it_runs():
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="synthetic:96")
    latency = measure_latency(config, "cpu", "auto", batch_size=3)
    assert latency.seconds > 0 and latency.iqr_seconds >= 0 and latency.runs >= 1
    assert (latency.batch_size, latency.execution) == (3, "sequential on cpu")
    shared = measure_latency(config, "cpu", "auto", processes=2)
    assert shared.execution.startswith("sequential on cpu, 1 of 2 members")


def test_latency_settings_are_part_of_the_study_only_where_measured():
    plain = latency_spec("plain")
    assert "budget_latency" not in plain.settings() and not plain.measures_latency  # old fingerprints kept
    five, six = latency_spec("a", budget_latency="5ms"), latency_spec("a", budget_latency="6ms")
    assert five.settings()["budget_latency"] == pytest.approx(5e-3) and five.fingerprint() != six.fingerprint()
    assert latency_spec("a", budget_latency="5ms", latency_batch_size=8).fingerprint() != five.fingerprint()
    assert latency_spec("a", objectives="accuracy,latency").measures_latency


# -- the budget ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget_mode", ["fit", "reject"])
def test_a_candidate_over_the_latency_budget_is_refused_untrained(budget_mode, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # fit: the width is fitted to the parameter budget first, and the latency is then checked.
    spec = latency_spec("too-slow", budget_latency="1us", budget_mode=budget_mode, n_trials=2, baselines=True,
                     budget_params="50K")
    assert spec.budget_mode == budget_mode
    study = run_study(spec, url, runs_in(tmp_path), progress=False)
    trials = [trial for trial in study.get_trials() if trial.state.is_finished()]
    assert len(trials) == 2 and study.get_trials(states=PRUNED) == trials  # the two baselines the budget allows
    _, store = open_for_reading("too-slow", url)
    rows = {row.trial_number: row for row in store.candidates("too-slow")}
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["over_budget"] is True and not trial.intermediate_values  # no epoch reported
        assert attrs["latency_seconds"] > 1e-6 and attrs["budget_excess"] > 0
        assert attrs["over_budget_reason"].startswith("latency (batch 1, sequential on cpu) ")
        assert attrs["over_budget_reason"].endswith(" over the budget of 1 us")  # the parameters fit: not named
        assert attrs["params"] <= 50_000
        row = rows[trial.number]
        assert row.state == "over_budget" and row.latency_seconds == attrs["latency_seconds"]
        assert store.epochs(row.id) == []  # nothing was trained
    assert study.user_attrs["budget_latency"] == pytest.approx(1e-6)
    store.close()


# -- a study that measures latency: the objective, the store, the report, the export -------------------

@pytest.fixture(scope="module")
def latency_study(tmp_path_factory):
    """A two-objective (accuracy, latency) study under a latency budget far over any real pass,
    whose last trial repeats its first candidate."""
    path = tmp_path_factory.mktemp("latency")
    url = f"sqlite:///{path / 'study.db'}"
    spec = latency_spec("fast-enough", objectives="accuracy,latency", budget_latency="60s", latency_batch_size=2)
    study = run_study(spec, url, runs_in(path), progress=False)
    study.enqueue_trial(study.trials[0].params)
    store = Store(url)
    study.optimize(SearchObjective(spec, store, runs_in(path)), n_trials=1)
    store.close()
    return study, url, path


def test_a_repeat_answers_with_its_original_latency(latency_study):
    study, _, _ = latency_study
    first, repeat = study.trials[0], study.trials[-1]
    assert repeat.user_attrs["repeat_of"] == first.number and repeat.values == first.values
    for key in ("latency_seconds", "latency_iqr_seconds", "latency_runs", "latency_execution"):
        assert repeat.user_attrs[key] == first.user_attrs[key]


def test_the_latency_objective_is_the_measured_milliseconds(latency_study):
    study, url, _ = latency_study
    complete = [trial for trial in study.get_trials(states=COMPLETE) if "repeat_of" not in trial.user_attrs]
    assert len(complete) == 2 and [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["validation accuracy", "latency (ms)"]
    _, store = open_for_reading("fast-enough", url)
    rows = {row.trial_number: row for row in store.candidates("fast-enough")}
    for trial in complete:
        attrs = trial.user_attrs
        assert trial.values[1] > 0 and trial.values[1] == pytest.approx(attrs["latency_seconds"] * 1000)
        assert attrs["budget_excess"] < 0 and "over_budget" not in attrs
        assert attrs["latency_iqr_seconds"] >= 0 and attrs["latency_runs"] >= 1
        assert attrs["latency_execution"] == "sequential on cpu"
        assert rows[trial.number].latency_seconds == attrs["latency_seconds"]
        assert rows[trial.number].latency_iqr_seconds == attrs["latency_iqr_seconds"]
    store.close()


def test_the_report_shows_latency_beside_the_costs(latency_study):
    study, _, path = latency_study
    page = write_report(study, path / "report.html").read_text()
    assert "Pareto front: validation accuracy vs latency (ms)" in page
    assert "60 s of latency per forward pass of 2 images" in page
    assert f"latency {format_duration(study.get_trials(states=COMPLETE)[0].user_attrs['latency_seconds'])}" in page


def test_min_cost_exports_the_fastest_pick_with_its_latency(latency_study):
    study, _, path = latency_study
    trial = export_best(study, path / "best.yaml", pick="min-cost")
    assert trial.values[1] == min(t.values[1] for t in study.best_trials)
    cost = yaml.safe_load((path / "best.yaml").read_text())["cost"]
    assert cost["latency_seconds"] == trial.user_attrs["latency_seconds"] and cost["latency_batch_size"] == 2
    assert cost["latency_execution"] == "sequential on cpu"


def test_run_says_why_candidates_were_refused(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "run", "--budget-latency", "1us", "--n-trials", "1", "--epochs", "1",
                           "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--runs-dir", tmp_path / "runs")
    assert code == 0 and "0 complete, 1 pruned" in out
    assert "1 over budget, refused untrained; the last, trial 0: latency (batch 1, sequential on cpu)" in out
    assert "over the budget of 1 us" in out


def test_db_check_repair_restores_a_lost_rows_latency(latency_study, tmp_path, capsys):
    study, _, path = latency_study
    shutil.copy(path / "study.db", tmp_path / "copy.db")  # the module's study stays as it is
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM splitsearch_epoch_metrics WHERE candidate_id = "
                                "(SELECT id FROM splitsearch_candidates WHERE trial_number = 1)"))
        connection.execute(text("DELETE FROM splitsearch_candidates WHERE trial_number = 1"))
    engine.dispose()
    code, _, _ = run_cli(capsys, "db", "check", "--storage", url, "--runs-dir", tmp_path / "runs", "--repair")
    assert code == 0
    store = Store(url)
    [row] = [row for row in store.candidates("fast-enough") if row.trial_number == 1]
    attrs = study.trials[1].user_attrs
    assert (row.latency_seconds, row.latency_iqr_seconds) == (attrs["latency_seconds"], attrs["latency_iqr_seconds"])
    store.close()
