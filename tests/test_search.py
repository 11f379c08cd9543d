"""The search service end to end on a real SQLite storage (and PostgreSQL where configured)."""

import dataclasses
import os
import re
import subprocess
import sys

import optuna
import pytest

from splitsearch.config import SplitConfig
from splitsearch.search.export import export_best
from splitsearch.report import build_figures, write_report
from splitsearch.search.record import count_trials
from splitsearch.search.run import MAX_REPEATS_IN_A_ROW, no_new_candidates, run_study
from splitsearch.search.study import StudyError, load_study_spec, make_sampler, nsga2_population_size
from splitsearch.store import Store
from splitsearch.data import prepare_data
from splitsearch.train.loop import Trainer

from conftest import run_cli, runs_in, tiny_spec

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
COMPLETE = optuna.trial.TrialState.COMPLETE


def finished(study):
    """The trials n_trials counts: complete or pruned, repeats of a finished candidate left out."""
    return [trial for trial in study.get_trials(deepcopy=False, states=FINISHED) if "repeat_of" not in trial.user_attrs]


def test_fit_mode_runs_baselines_first_and_uses_the_budget(storage, tmp_path):
    spec = tiny_spec()
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    trials = study.trials
    assert len(finished(study)) == 4
    assert [t.user_attrs.get("baseline") for t in trials[:3]] == ["undivided", "paper S=2", "paper S=4"]
    assert trials[0].params["S"] == 1 and trials[2].params["S"] == 4
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        params, step = trial.user_attrs["params"], trial.user_attrs["width_step"]
        assert params <= 30_000
        # Within 5 % below the budget, or as close as the family's finest width step allows.
        assert params >= 0.95 * 30_000 or params * (1 + step) > 30_000

    rows = Store(storage).candidates(spec.name)
    assert [row.trial_number for row in rows] == [t.number for t in trials]
    assert all(row.state in ("complete", "pruned", "reused") for row in rows)


def test_reject_mode_prunes_over_budget_candidates_untrained(storage, tmp_path):
    # At width 0.5 the S=2 division has 77.9K parameters, S=1 68.8K and S=4 70.1K.
    spec = tiny_spec("reject", budget_mode="reject", budget_params="75K", n_trials=5,
                     base={"width_mult": 0.5, "train": {"batch_size": 32, "val_fraction": 0.25}})
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    over = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert over and all(t.state == optuna.trial.TrialState.PRUNED for t in over)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all(t.user_attrs["params"] <= 75_000 for t in complete)
    # The sampler learns the feasible region from each trial's constraint (> 0: infeasible).
    assert all(t.constraints["budget"] > 0 for t in over) and all(t.constraints["budget"] <= 0 for t in complete)
    rows = {row.trial_number: row for row in Store(storage).candidates(spec.name)}
    assert all(rows[t.number].state == "over_budget" for t in over)
    assert all(not Store(storage).epochs(rows[t.number].id) for t in over)


def test_same_name_resumes_without_losing_or_repeating_trials(storage, tmp_path):
    run_study(tiny_spec(n_trials=2), storage, runs_in(tmp_path), progress=False)
    study = run_study(tiny_spec(n_trials=5), storage, runs_in(tmp_path), progress=False)
    numbers = [t.number for t in study.trials]
    assert len(finished(study)) == 5 and numbers == sorted(set(numbers))
    assert [t.user_attrs.get("baseline") for t in study.trials].count("undivided") == 1
    assert len(Store(storage).candidates("tiny")) == len(study.trials)


def test_changed_settings_are_refused_unless_forced(storage, tmp_path):
    run_study(tiny_spec(n_trials=1), storage, runs_in(tmp_path), progress=False)
    with pytest.raises(StudyError, match="exists with other settings"):
        run_study(tiny_spec(n_trials=2, budget_params="40K"), storage, runs_in(tmp_path), progress=False)
    study = run_study(tiny_spec(n_trials=2, budget_params="40K"), storage, runs_in(tmp_path), progress=False,
                      force=True)
    assert len(finished(study)) == 2


def test_ctrl_c_then_rerun_continues_the_interrupted_trial(storage, tmp_path, monkeypatch):
    spec = tiny_spec(n_trials=3, epochs=3)
    original = Trainer._train_step
    calls = {"count": 0}

    def interrupt_in_second_trial(self, *args):
        calls["count"] += 1
        if calls["count"] == len(self.data.train) * 4 + 1:  # trial 1, epoch 2, first step
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_in_second_trial)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, storage, runs_in(tmp_path), progress=False)
    monkeypatch.setattr(Trainer, "_train_step", original)
    interrupted = optuna.load_study(study_name="tiny", storage=storage).trials
    # Trial 1 is interrupted and queued again at once (trial 3), behind the waiting baseline.
    assert [t.state for t in interrupted] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                                             optuna.trial.TrialState.WAITING, optuna.trial.TrialState.WAITING]
    assert interrupted[3].system_attrs["failed_trial"] == 1
    assert Store(storage).candidates("tiny")[1].state == "interrupted"

    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    assert len(finished(study)) == 3
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == interrupted[1].params
    assert study.trials[0].datetime_complete == interrupted[0].datetime_complete  # not run again
    # The retry continued from the checkpoint of epoch 1; each row holds the epochs its attempt trained.
    rows = {row.trial_number: row for row in Store(storage).candidates("tiny")}
    assert (rows[1].state, rows[1].retried_as) == ("interrupted", retry.number)
    assert (rows[retry.number].retry_of, rows[retry.number].resumed_from_epoch) == (1, 1)
    assert [m.epoch for m in Store(storage).epochs(rows[1].id)] == [1]
    assert [m.epoch for m in Store(storage).epochs(rows[retry.number].id)] == [2, 3]
    assert not any((tmp_path / "runs").rglob("checkpoint.pt")), "finished trials leave no checkpoint"


def test_identical_candidates_are_reused_not_retrained(storage, tmp_path):
    spec = tiny_spec(n_trials=2, baselines=False)
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    first = study.trials[0]
    other = run_study(tiny_spec("other", n_trials=1, baselines=False), storage, runs_in(tmp_path), progress=False)
    # Same seed and sampler: the other study's first candidate is the same config.
    reused = other.trials[0]
    assert reused.user_attrs["config_hash"] == first.user_attrs["config_hash"]
    assert reused.user_attrs["reused_from"] == f"tiny#{first.number}" and reused.value == first.value
    row = Store(storage).candidates("other")[0]
    assert row.state == "reused" and not Store(storage).epochs(row.id)


def test_export_retrains_to_the_same_validation_accuracy(storage, tmp_path):
    study = run_study(tiny_spec(n_trials=3), storage, runs_in(tmp_path), progress=False)
    trial = export_best(study, tmp_path / "best.yaml")
    config = SplitConfig.from_yaml(tmp_path / "best.yaml")
    assert config.config_hash() == trial.user_attrs["config_hash"]
    retrained = Trainer(config, prepare_data(config.dataset, config.train), progress=False).fit()
    assert retrained.val_accuracy == trial.user_attrs["val_accuracy"]
    assert retrained.history[-1].val_nll == pytest.approx(trial.value)  # the default objective: NLL


def test_multi_objective_study_has_a_pareto_front_and_no_pruning(storage, tmp_path):
    spec = tiny_spec("pareto", objectives="accuracy,params", n_trials=4, budget_params=None, budget_mode="reject",
                     base={"width_mult": 0.25, "train": {"batch_size": 32, "val_fraction": 0.25}})
    assert spec.sampler == "tpe" and spec.pruner == "none"  # multi-objective TPE; tiny_spec turns pruning off
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    assert len(study.directions) == 2 and study.best_trials
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert all(t.values[1] == t.user_attrs["params"] for t in complete)
    export_best(study, tmp_path / "knee.yaml", pick="knee")
    assert SplitConfig.from_yaml(tmp_path / "knee.yaml").arch == "resnet20"


def test_a_multi_objective_study_uses_tpe_and_its_report_shows_the_front_with_the_baselines(storage, tmp_path):
    spec = tiny_spec("pareto12", objectives="accuracy,params", n_trials=12, epochs=1, budget_params=None,
                     budget_mode="reject", base={"width_mult": 0.25, "train": {"batch_size": 32, "val_fraction": 0.25}})
    assert (spec.sampler, spec.pruner) == ("tpe", "none")
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    assert isinstance(study.sampler, optuna.samplers.TPESampler) and len(study.directions) == 2
    assert len(finished(study)) == 12

    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    title = "Pareto front: validation accuracy vs parameters"
    names = [trace.name for trace in dict(build_figures(study))[title].data]
    assert names[-3:] == ["undivided", "paper S=2", "paper S=4"]
    assert f"<h2>{title}</h2>" in page and all(f'"name":"{name}"' in page for name in names[-3:])
    summary = re.search(r"Pareto front: \d+ trials \(#[^)]*\); hypervolume (0\.\d{3}) \(reference point: accuracy 0, "
                        r"[\d.]+K parameters, 1\.1 x the largest\)", page)
    assert summary and page.count(f"hypervolume {summary.group(1)}") == 2  # the summary and the figure


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # TPE's group, used on purpose
def test_nsga2_only_when_asked_with_a_population_sized_to_the_trial_budget():
    assert isinstance(make_sampler(tiny_spec(objectives="accuracy,macs")), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(tiny_spec(objectives="accuracy,macs", sampler="nsga2")),
                      optuna.samplers.NSGAIISampler)
    # A quarter of n_trials (four generations), at least 4, at most Optuna's default of 50.
    assert [nsga2_population_size(n) for n in (1, 12, 40, 199, 200, 1000, None)] == [4, 4, 10, 49, 50, 50, 50]


def test_a_repeat_of_a_finished_candidate_is_not_trained_and_not_counted(storage, tmp_path):
    """The divide space's S=1 is one configuration: proposing it again repeats the undivided baseline."""
    run_study(tiny_spec("repeats", n_trials=3, epochs=1), storage, runs_in(tmp_path), progress=False)  # baselines
    optuna.load_study(study_name="repeats", storage=storage).enqueue_trial({"S": 1})  # as a sampler would propose
    study = run_study(tiny_spec("repeats", n_trials=4, epochs=1), storage, runs_in(tmp_path), progress=False)
    trials = study.trials
    repeat = trials[3]
    assert (repeat.state, repeat.user_attrs["repeat_of"], repeat.value) == (COMPLETE, 0, trials[0].value)
    assert repeat.user_attrs["config_hash"] == trials[0].user_attrs["config_hash"]
    counts = count_trials(study)
    assert (counts.finished, counts.repeats) == (4, len(trials) - 4) and len(finished(study)) == 4
    assert len({trial.user_attrs["config_hash"] for trial in finished(study)}) == 4  # distinct candidates
    store = Store(storage)
    rows = {row.trial_number: row for row in store.candidates("repeats")}
    for trial in trials:
        if "repeat_of" in trial.user_attrs:  # answered from the first trial's row: nothing trained
            row, original = rows[trial.number], rows[trial.user_attrs["repeat_of"]]
            assert (row.state, row.reused_from_id, row.wall_seconds) == ("reused", original.id, 0.0)
            assert not store.epochs(row.id) and store.epochs(original.id)


TWO_CANDIDATES = """\
name: two
params:
  S: {type: categorical, choices: [1, 2]}
"""


def test_a_space_without_new_candidates_stops_and_never_trains_or_counts_a_repeat(tmp_path, capsys):
    """S in {1, 2} and nothing else: two candidates, both baselines, so every proposal after them is a repeat."""
    (tmp_path / "two.yaml").write_text(TWO_CANDIDATES)
    study_file = tmp_path / "two-study.yaml"
    study_file.write_text(f"name: two\narch: resnet20\ndataset: synthetic:96\nspace: {tmp_path / 'two.yaml'}\n"
                          "epochs: 1\nn_trials: 4\npruner: none\n"
                          "base: {width_mult: 0.25, train: {batch_size: 32, val_fraction: 0.25}}\n")
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    argv = ("run", study_file, "--storage", storage, "--device", "cpu", "--runs-dir", tmp_path / "runs")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "stopped: the space has no new candidates" in out
    assert f"2 complete, 0 pruned, 0 fail trials; {MAX_REPEATS_IN_A_ROW} repeat proposals" in out

    study = optuna.load_study(study_name="two", storage=storage)
    trials = study.trials
    assert [trial.user_attrs.get("baseline") for trial in trials[:2]] == ["undivided", "paper S=2"]
    assert len(trials) == 2 + MAX_REPEATS_IN_A_ROW
    for trial in trials[2:]:
        original = trials[{1: 0, 2: 1}[trial.params["S"]]]
        assert trial.state == COMPLETE and trial.user_attrs["repeat_of"] == original.number
        assert trial.value == original.value
    counts = count_trials(study)
    assert (counts.finished, counts.repeats, counts.repeats_in_a_row) == (2, MAX_REPEATS_IN_A_ROW, MAX_REPEATS_IN_A_ROW)
    store = Store(storage)
    rows = store.candidates("two")
    assert [(row.trial_number, row.state) for row in rows[:2]] == [(0, "complete"), (1, "complete")]
    assert all(row.state == "reused" and row.wall_seconds == 0 and not store.epochs(row.id) for row in rows[2:])

    code, out, _ = run_cli(capsys, *argv)  # run again: still nothing new, nothing started
    assert code == 0 and "stopped: the space has no new candidates" in out
    assert len(optuna.load_study(study_name="two", storage=storage).trials) == len(trials)


def test_a_study_without_n_trials_also_ends_when_the_space_has_no_new_candidates(storage, tmp_path):
    (tmp_path / "two.yaml").write_text(TWO_CANDIDATES)
    spec = tiny_spec("two", space=str(tmp_path / "two.yaml"), epochs=1, budget_params=None, budget_mode="reject",
                     base={"width_mult": 0.25, "train": {"batch_size": 32, "val_fraction": 0.25}})
    study = run_study(dataclasses.replace(spec, n_trials=None, timeout=600), storage, runs_in(tmp_path), progress=False)
    counts = count_trials(study)
    assert no_new_candidates(counts) and (counts.finished, counts.repeats) == (2, MAX_REPEATS_IN_A_ROW)


def test_budget_smaller_than_the_smallest_network_touches_nothing(storage, tmp_path):
    with pytest.raises(ValueError, match="budget too small"):
        run_study(tiny_spec(budget_params="50"), storage, runs_in(tmp_path), progress=False)
    assert not (tmp_path / "study.db").exists()


def test_two_workers_share_one_postgres_study(postgres_url, tmp_path):
    study_file = tmp_path / "shared.yaml"
    study_file.write_text(
        "name: shared\narch: resnet20\ndataset: synthetic:96\nspace: divide\nepochs: 2\nn_trials: 6\n"
        "budget_params: 30K\npruner: none\nbase: {train: {batch_size: 32, val_fraction: 0.25}}\n"
    )
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(study_file), "--storage", postgres_url,
               "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
               for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    # Each worker stops once the study has 6 finished trials; one in flight may finish after that.
    assert 6 <= len(finished(study)) <= 7
    rows = Store(postgres_url).candidates("shared")
    assert sorted(row.trial_number for row in rows) == sorted(numbers)
    assert [t.user_attrs.get("baseline") for t in study.trials].count("undivided") == 1


def build_exploding(args, depth):
    """``exploding{depth}``: resnet20, except that with S=4 its forward raises in the second epoch."""
    from torch import nn

    from splitsearch.models.resnet import cifar_resnet_basic

    class ExplodesInEpochTwo(nn.Module):
        def __init__(self, network: nn.Module, steps_per_epoch: int) -> None:
            super().__init__()
            self.network, self.steps, self.calls = network, steps_per_epoch, 0

        def forward(self, x):
            if self.training:
                self.calls += 1
                if self.calls > self.steps:
                    raise RuntimeError("CUDA out of memory (simulated, epoch 2)")
            return self.network(x)

    network = cifar_resnet_basic(args, depth=20)
    return ExplodesInEpochTwo(network, steps_per_epoch=1) if args.S == 4 else network


@pytest.fixture
def exploding_arch(monkeypatch):
    """``exploding20`` registered for one test, built by :func:`build_exploding`."""
    from splitsearch.models import registry

    family = registry.ArchFamily(r"exploding(?P<depth>\d+)", f"{__name__}:build_exploding", examples=("exploding20",),
                                 num_blocks=3)
    monkeypatch.setattr(registry, "_FAMILIES", [*registry._FAMILIES, family])
    return "exploding20"


def test_a_candidate_that_raises_fails_with_its_reason_and_the_search_goes_on(storage, tmp_path, exploding_arch):
    spec = tiny_spec(arch=exploding_arch, n_trials=3, epochs=2, budget_params=None, budget_mode="reject",
                     base={"width_mult": 0.25, "train": {"batch_size": 32, "val_fraction": 0.25}})
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed and all(t.params["S"] == 4 for t in failed)
    assert failed[0].user_attrs["failure"] == "RuntimeError: CUDA out of memory (simulated, epoch 2)"
    assert not failed[0].user_attrs["interrupted"]
    assert len(finished(study)) == 3  # the other trials ran, and one more took the failed one's place
    assert not any(t.system_attrs.get("failed_trial") is not None for t in study.trials), "failures are not retried"
    rows = {row.trial_number: row for row in Store(storage).candidates("tiny")}
    assert rows[failed[0].number].state == "failed" and "simulated, epoch 2" in rows[failed[0].number].error
    assert [m.epoch for m in Store(storage).epochs(rows[failed[0].number].id)] == [1]


def test_a_diverging_candidate_fails_instead_of_training_on_nan(storage, tmp_path):
    spec = tiny_spec(n_trials=1, epochs=2, baselines=False,
                     base={"train": {"batch_size": 32, "val_fraction": 0.25, "lr": 1e30}})
    with pytest.raises(StudyError, match="1 trials failed"):
        run_study(spec, storage, runs_in(tmp_path), progress=False)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 1  # every candidate diverges: the worker stops instead of failing forever
    assert study.trials[0].user_attrs["failure"].startswith("NonFiniteLossError: training diverged in epoch")


def test_baselines_are_never_pruned_and_take_the_base_value_of_searched_settings(storage, tmp_path, monkeypatch):
    (tmp_path / "lr.yaml").write_text(
        "name: lr\nparams:\n  S: {type: categorical, choices: [1, 2, 4]}\n"
        "  train.lr: {type: float, low: 0.01, high: 0.2, log: true}\nfixed: {train.epochs: 3}\n")
    spec = tiny_spec(space=str(tmp_path / "lr.yaml"), n_trials=4, epochs=9, pruner="hyperband",
                     base={"train": {"batch_size": 32, "val_fraction": 0.25, "lr": 0.05}})
    assert spec.max_epochs == 3  # Hyperband's resource: the epochs the space fixes, not the base's 9
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)  # a pruner that stops everyone
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    baselines = [t for t in study.trials if t.user_attrs.get("baseline")]
    searched = [t for t in study.trials if not t.user_attrs.get("baseline")]
    assert len(baselines) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in baselines)
    assert all(t.params["train.lr"] == 0.05 for t in baselines)
    assert all(len(t.intermediate_values) == 3 for t in baselines)
    assert searched and all(t.state == optuna.trial.TrialState.PRUNED for t in searched)


LR_SPACE = """\
name: divide-lr
description: S and the learning rate
params:
  S: {type: categorical, choices: [1, 2]}
  train.lr: {type: float, low: 0.01, high: 0.3, log: true}
"""


def test_baselines_are_trained_again_with_the_best_searched_training_settings(storage, tmp_path):
    """Where the space searches train.lr, each baseline is also trained at the best searched trial's lr."""
    space = tmp_path / "divide-lr.yaml"
    space.write_text(LR_SPACE)
    spec = tiny_spec("tuned", space=str(space), n_trials=4, epochs=1,
                     base={"lambda_cot": 0.5, "train": {"lr": 0.05, "batch_size": 32, "val_fraction": 0.25}})
    study = run_study(spec, storage, runs_in(tmp_path), progress=False)
    trials = study.get_trials(deepcopy=False)
    labels = [trial.user_attrs.get("baseline") for trial in trials]
    assert labels[:2] == ["undivided", "paper S=2"]  # S=4 is outside this space
    searched = [t for t in trials[:4]
                if not t.user_attrs.get("baseline") and t.state == optuna.trial.TrialState.COMPLETE]
    best = min(searched, key=lambda trial: (trial.values[0], trial.number))  # NLL, the default, is minimised
    tuned = {trial.user_attrs["baseline"]: trial for trial in trials[4:]}
    assert set(tuned) == {"undivided (tuned)", "paper S=2 (tuned)"}
    for label, trial in tuned.items():
        untuned = trials[labels.index(label.removesuffix(" (tuned)"))]
        assert untuned.params["train.lr"] == 0.05
        assert trial.params == {**untuned.params, "train.lr": best.params["train.lr"]}
        assert trial.state == optuna.trial.TrialState.COMPLETE and trial.user_attrs["tuned_from"] == best.number
        assert SplitConfig.from_dict(trial.user_attrs["config"]).train.lr == best.params["train.lr"]

    again = run_study(spec, storage, runs_in(tmp_path), progress=False)  # resuming queues nothing new
    assert len(again.trials) == len(trials)


def test_a_space_without_training_settings_gets_no_tuned_baselines(storage, tmp_path):
    study = run_study(tiny_spec("plain", n_trials=3, epochs=1), storage, runs_in(tmp_path), progress=False)
    assert len(study.trials) == 3
    assert not any(trial.user_attrs.get("baseline", "").endswith("(tuned)") for trial in study.trials)


@pytest.mark.parametrize(("text", "message"), [
    ("dataset_train: 0.05\n", "dataset_train must be a mapping"),
    ("base: {train: {lr: 0.1}}\ndataset_train: {lr: 0.05}\n", "train.lr is set in both"),
])
def test_dataset_train_is_checked(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text("arch: resnet20\ndataset: digits\n" + text)
    with pytest.raises(StudyError, match=message):
        load_study_spec(path)


def test_dataset_train_applies_to_the_files_own_dataset_only(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("arch: resnet20\ndataset: synthetic:96\ndataset_train: {lr: 0.02, batch_size: 8}\n")
    own = load_study_spec(path)
    assert (own.base.train.lr, own.base.train.batch_size, dict(own.dataset_train_dropped)) == (0.02, 8, {})
    same = load_study_spec(path, {"dataset": "synthetic:96"})
    assert same.base.train.lr == 0.02
    other = load_study_spec(path, {"dataset": "digits"})
    assert (other.base.train.lr, other.base.train.batch_size) == (0.1, None)
    assert dict(other.dataset_train_dropped) == {"lr": 0.02, "batch_size": 8}
