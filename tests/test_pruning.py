"""The Pareto pruner: its decisions on constructed rungs, and studies that prune with it.

Unit tests build an in-memory two-objective study whose trials carry the user attributes a worker
writes (each epoch's accuracy, the candidate's cost); the pruner reads nothing else.
"""

from __future__ import annotations

import itertools

import optuna
import pytest
from optuna.trial import TrialState

from splitsearch.search.pruning import Candidate, ParetoHalvingPruner, decide, pareto_ranks, rungs
from splitsearch.search.record import TrialRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)

# At epoch 1, (accuracy, params) of six trials: A, E and B form the front (B the cheapest), C and
# D are dominated, F is a baseline behind them all.  Six at the rung: ceil(6 / 3) = 2 continue.
RUNG = {
    "A": (0.90, 100, None),
    "E": (0.85, 60, None),
    "B": (0.80, 50, None),
    "C": (0.70, 200, None),
    "D": (0.60, 300, None),
    "F": (0.50, 400, "undivided"),
}
EXPECTED = {"A": False, "E": False, "B": False, "C": True, "D": True, "F": False}


def new_study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"],
                               pruner=ParetoHalvingPruner(("accuracy", "params"), max_epochs=9))


def add(study: optuna.Study, label: str, accuracies: dict[int, float], params: int, baseline: str | None = None,
        state: TrialState = TrialState.RUNNING) -> None:
    """A trial as a worker leaves it: its cost and each epoch's accuracy in its record (a complete one's
    values: its last accuracy and its cost)."""
    record = TrialRecord(params=params, baseline=baseline,
                         epoch_val_accuracies={str(epoch): value for epoch, value in accuracies.items()})
    values = [accuracies[max(accuracies)], params] if state == TrialState.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=state, values=values,
                                              user_attrs={**record.to_attrs(), "label": label}))


def decisions(study: optuna.Study) -> dict[str, bool]:
    return {trial.user_attrs["label"]: study.pruner.prune(study, trial) for trial in study.get_trials()}


def study_of(order: tuple[str, ...]) -> optuna.Study:
    study = new_study()
    for label in order:
        accuracy, params, baseline = RUNG[label]
        add(study, label, {1: accuracy}, params, baseline)
    return study


def test_rungs_are_powers_of_the_reduction_factor_below_the_last_epoch():
    assert rungs(9) == (1, 3) and rungs(10) == (1, 3, 9) and rungs(1) == () and rungs(27, 2) == (1, 2, 4, 8, 16)


def test_pareto_ranks_peel_the_fronts():
    points = [Candidate(0.9, (100,)), Candidate(0.8, (50,)), Candidate(0.7, (200,)), Candidate(0.6, (300,))]
    assert pareto_ranks(points) == [0, 0, 1, 2]


def test_a_dominated_candidate_is_pruned_and_the_front_the_cheapest_and_a_baseline_are_kept():
    found = decisions(study_of(tuple(RUNG)))
    assert found == EXPECTED
    assert found["C"] and found["D"]  # dominated: pruned
    assert not found["A"] and not found["E"]  # on the front and first by accuracy: kept


def test_the_only_candidate_at_its_cost_level_is_never_pruned_by_costlier_ones():
    # B is on the front but third by accuracy (2 continue): only its cost, the lowest, keeps it.
    candidate = Candidate(0.80, (50.0,))
    others = [Candidate(accuracy, (float(params),)) for label, (accuracy, params, _) in RUNG.items() if label != "B"]
    decision = decide(candidate, others, epoch=1)
    assert (decision.ahead, decision.kept, decision.pruned) == (2, 2, False)
    # The same point with a candidate as cheap beside it is pruned.
    assert decide(candidate, [*others, Candidate(0.95, (50.0,))], epoch=1).pruned


def test_a_baseline_is_never_pruned_even_when_dominated_by_every_other_candidate():
    study = study_of(tuple(RUNG))
    baseline = next(trial for trial in study.get_trials() if trial.user_attrs["label"] == "F")
    decision = study.pruner.decision(study, baseline)
    assert decision.ahead == 5 and not decision.pruned


def test_nothing_is_pruned_with_fewer_candidates_than_the_minimum():
    study = study_of(("A", "B", "C"))
    assert decisions(study) == {"A": False, "B": False, "C": False}  # C is dominated, but only 3 reached epoch 1
    add(study, "D", {1: 0.60}, 300)
    assert decisions(study)["D"]


def test_decisions_are_the_same_for_every_arrival_order():
    # T and U are twins tied at the edge of the kept share (ceil(6 / 3) = 2, one candidate before
    # them): they share their place and both continue, whichever arrived first.
    points = {"A": RUNG["A"], "T": (0.85, 80, None), "U": (0.85, 80, None), "B": RUNG["B"], "C": RUNG["C"],
              "F": RUNG["F"]}
    for order in itertools.permutations(points):
        study = new_study()
        for label in order:
            accuracy, params, baseline = points[label]
            add(study, label, {1: accuracy}, params, baseline)
        assert decisions(study) == {"A": False, "T": False, "U": False, "B": False, "C": True, "F": False}, order


def test_only_rungs_decide_and_the_latest_epoch_is_the_one_judged():
    study = study_of(tuple(RUNG))
    add(study, "late", {1: 0.95, 2: 0.30}, 500)  # epoch 2 is no rung: no decision there
    late = study.get_trials()[-1]
    assert study.pruner.decision(study, late) is None and not study.pruner.prune(study, late)


def test_a_failed_trials_reports_do_not_count_and_finished_ones_do():
    study = study_of(("A", "B"))
    add(study, "C", {1: 0.70}, 200, state=TrialState.PRUNED)
    add(study, "X", {1: 0.99}, 10, state=TrialState.FAIL)  # interrupted: its retry carries its reports
    add(study, "D", {1: 0.60}, 300)
    d = study.get_trials()[-1]
    assert study.pruner.decision(study, d).candidates == 4


def test_the_pruner_refuses_objectives_it_cannot_order():
    with pytest.raises(ValueError, match="accuracy and costs known before training"):
        ParetoHalvingPruner(("accuracy", "ece"), max_epochs=9)


# -- what the report draws ------------------------------------------------------------------------

def test_the_pareto_figure_data_holds_the_pruned_trials_apart_at_their_accuracy_when_stopped():
    from splitsearch.report import data

    study = new_study()
    study.set_user_attr("objectives", ["accuracy", "params"])
    add(study, "done", {1: 0.5, 2: 0.7}, 100, state=TrialState.COMPLETE)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, user_attrs=TrialRecord(params=300, epoch_val_accuracies={"1": 0.4},
                                                        pruned_at_epoch=1, pruned_reason="2 of 6 ...").to_attrs()))
    add(study, "over budget", {}, 900, state=TrialState.PRUNED)  # refused untrained: not the pruner's
    pruned = data.pareto_pruned(study)
    assert pruned.kind == "pruned" and [(p.trial, p.x, p.y) for p in pruned.points] == [(1, 300, 0.4)]
    assert "stopped after epoch 1: 2 of 6 ..." in pruned.points[0].hover
    curves = data.epoch_curves(study)
    assert [(c.trial, c.epochs, c.accuracies, c.pruned) for c in curves] == [(0, (1, 2), (0.5, 0.7), False),
                                                                            (1, (1,), (0.4,), True)]


# -- which studies it prunes -----------------------------------------------------------------------

@pytest.mark.parametrize(("objectives", "pruner"), [("nll", "hyperband"), ("accuracy", "hyperband"),
                                                    ("accuracy,params", "pareto"), ("accuracy,latency", "pareto"),
                                                    ("accuracy,ece", "none")])
def test_each_objective_gets_its_default_pruner(objectives, pruner):
    from splitsearch.search.study import load_study_spec, make_pruner

    spec = load_study_spec(None, {"arch": "resnet20", "objectives": objectives, "epochs": 9})
    assert spec.pruner == pruner
    assert isinstance(make_pruner(spec), ParetoHalvingPruner) == (pruner == "pareto")


@pytest.mark.parametrize(("objectives", "pruner", "use"), [
    ("accuracy", "pareto", "use hyperband, median or none"),
    ("accuracy,macs", "hyperband", "use pareto or none"),
    ("accuracy,params", "median", "use pareto or none"),
    ("accuracy,ece", "pareto", "use none"),
])
def test_a_pruner_that_does_not_fit_the_objectives_is_one_line_naming_those_that_do(objectives, pruner, use):
    from splitsearch.search.study import StudyError, load_study_spec

    with pytest.raises(StudyError, match=use) as error:
        load_study_spec(None, {"arch": "resnet20", "objectives": objectives, "pruner": pruner})
    assert "\n" not in str(error.value)


def test_pruner_none_turns_it_off_and_the_plan_says_what_it_prunes():
    from splitsearch.search.plan_estimate import expected_epoch_fraction
    from splitsearch.search.study import load_study_spec, make_pruner

    spec = load_study_spec(None, {"arch": "resnet20", "objectives": "accuracy,params", "pruner": "none"})
    assert isinstance(make_pruner(spec), optuna.pruners.NopPruner)
    pareto = load_study_spec(None, {"arch": "resnet20", "objectives": "accuracy,macs", "epochs": 10})
    assert expected_epoch_fraction(pareto)[1].startswith(
        "the Pareto pruner stops, after epochs 1, 3, 9, candidates outside the best 1/3 by Pareto rank on "
        "(accuracy, macs)")
    one_epoch = load_study_spec(None, {"arch": "resnet20", "objectives": "accuracy,macs", "epochs": 1})
    assert expected_epoch_fraction(one_epoch)[1] == ("the Pareto pruner has no epoch to compare at before the last "
                                                     "(1): no pruning")


# -- studies that prune ----------------------------------------------------------------------------

DIGITS_STUDY = """\
name: {name}
arch: resnet20
dataset: digits
space: divide
objectives: accuracy,params
budget_mode: reject
epochs: {epochs}
n_trials: {n_trials}
seed: 0
base: {{width_mult: 0.25, train: {{batch_size: 64, lr: 0.05}}}}
"""


def digits_study(folder, name: str = "pareto-digits", n_trials: int = 12, epochs: int = 3):
    path = folder / f"{name}.yaml"
    path.write_text(DIGITS_STUDY.format(name=name, n_trials=n_trials, epochs=epochs))
    return path


def stopped_by_the_pruner(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [trial for trial in study.get_trials(states=(TrialState.PRUNED,))
            if TrialRecord.from_trial(trial).pruned_at_epoch is not None]


def run_and_check(tmp_path, capsys, n_trials: int, epochs: int) -> optuna.Study:
    """``splitsearch run`` of a Pareto study on digits: the plan, the pruned trials, the summary's front."""
    from conftest import run_cli

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, out, err = run_cli(capsys, "run", digits_study(tmp_path, n_trials=n_trials, epochs=epochs),
                             "--storage", storage, "--device", "cpu", "--runs-dir", tmp_path / "runs")
    assert code == 0, err[-3000:]
    study = optuna.load_study(study_name="pareto-digits", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) >= n_trials  # trials ran (repeats of finished candidates come on top)
    pruned = stopped_by_the_pruner(study)
    assert len(pruned) >= 1, [(t.number, t.state, t.user_attrs.get("epoch_val_accuracies")) for t in study.trials]
    assert all(TrialRecord.from_trial(trial).pruned_at_epoch in rungs(epochs) for trial in pruned)
    assert not any(TrialRecord.from_trial(trial).is_baseline for trial in pruned)
    assert "the Pareto pruner stops, after epoch 1, candidates outside the best 1/3" in out
    summary = next(line for line in out.splitlines() if line.startswith("Pareto front:"))
    assert f"the Pareto pruner stopped {len(pruned)} trial" in summary and "hypervolume 0." in summary
    return study


def test_a_small_pareto_study_on_digits_prunes(tmp_path, capsys):
    """The fast variant: 8 trials of 2 epochs (rung: epoch 1)."""
    run_and_check(tmp_path, capsys, n_trials=8, epochs=2)


@pytest.mark.slow
def test_a_12_trial_pareto_study_on_digits_prunes_and_its_report_draws_the_pruned_apart(tmp_path, capsys):
    from splitsearch.report import data

    study = run_and_check(tmp_path, capsys, n_trials=12, epochs=3)
    pruned = data.pareto_pruned(study)
    stopped = stopped_by_the_pruner(study)
    assert sorted(point.trial for point in pruned.points) == sorted(trial.number for trial in stopped)
    for point, trial in zip(sorted(pruned.points, key=lambda p: p.trial), sorted(stopped, key=lambda t: t.number)):
        record = TrialRecord.from_trial(trial)
        assert point.x == record.params and point.y == record.epoch_val_accuracies[str(record.pruned_at_epoch)]


@pytest.mark.slow
def test_two_workers_on_postgresql_prune_each_trial_once_and_the_database_checks_clean(postgres_url, tmp_path, capsys):
    """Two ``splitsearch run`` processes share one Pareto study: the pruner's decisions are taken by the
    worker running each trial, once, and Optuna's trials and the store's rows agree afterwards."""
    import os
    import subprocess
    import sys

    from conftest import run_cli
    from splitsearch.store import Store

    path = digits_study(tmp_path, n_trials=12, epochs=2)
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(path), "--storage", postgres_url, "--device", "cpu",
               "--runs-dir", str(tmp_path / "runs")]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0 and "Traceback" not in err, err[-3000:]

    study = optuna.load_study(study_name="pareto-digits", storage=postgres_url)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) >= 12  # trials ran
    stopped = stopped_by_the_pruner(study)
    assert stopped, [(t.number, t.state, t.user_attrs.get("epoch_val_accuracies")) for t in study.trials]
    assert all(trial.state == TrialState.PRUNED for trial in study.trials
               if TrialRecord.from_trial(trial).pruned_at_epoch is not None)  # a decision only on a pruned trial
    store = Store(postgres_url)
    rows = [row for row in store.candidates("pareto-digits")]
    assert len(rows) == len({row.trial_number for row in rows})  # one row, one final state, per trial
    by_trial = {row.trial_number: row for row in rows}
    for trial in stopped:
        row = by_trial[trial.number]
        # Stopped right after the one epoch the pruner judged it at: no later epoch was trained.
        assert row.state == "pruned"
        assert max(metrics.epoch for metrics in store.epochs(row.id)) == TrialRecord.from_trial(trial).pruned_at_epoch

    code, out, err = run_cli(capsys, "db", "check", "--storage", postgres_url, "--runs-dir", tmp_path / "runs")
    assert code == 0 and out.startswith("consistent"), out + err


def test_a_trial_training_again_from_epoch_1_records_only_its_own_epochs(tmp_path):
    """A retry inherits its first attempt's epochs; one that trains again from epoch 1 (its checkpoint
    unreadable) must not leave the later ones there, or the pruner would judge an epoch not yet trained."""
    from conftest import runs_in, tiny_spec
    from splitsearch.search.objective import SearchObjective
    from splitsearch.search.run import run_study
    from splitsearch.store import Store

    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = tiny_spec("retrained", objectives="accuracy,params", n_trials=1, baselines=False, pruner="pareto")
    study = run_study(spec, url, runs_in(tmp_path), progress=False)
    inherited = TrialRecord(epoch_val_accuracies={"1": 0.5, "2": 0.6, "3": 0.7}).to_attrs()
    study.enqueue_trial(study.trials[0].params | {"lambda_cot": 0.123}, user_attrs=inherited)
    store = Store(url)
    study.optimize(SearchObjective(spec, store, runs_in(tmp_path)), n_trials=1)
    store.close()
    assert study.trials[-1].state == TrialState.COMPLETE  # trials ran
    assert sorted(TrialRecord.from_trial(study.trials[-1]).epoch_val_accuracies) == ["1", "2"]  # tiny_spec: 2 epochs
