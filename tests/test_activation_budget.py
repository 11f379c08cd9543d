"""Activation memory (split blocks run branch by branch) as a budget and as an objective of the search."""

from __future__ import annotations

import optuna
import pytest

from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.fitting import fit_width
from splitsearch.search.run import run_study
from splitsearch.search.study import load_study_spec

from conftest import run_cli, runs_in

COMPLETE = (optuna.trial.TrialState.COMPLETE,)


def blocks_spec(**overrides):
    settings = {"name": "memory", "arch": "resnet20", "dataset": "synthetic:96", "space": "blocks", "epochs": 1,
                "n_trials": 4, "pruner": "none", "baselines": False,
                "base": {"width_mult": 0.5, "train": {"batch_size": 32, "val_fraction": 0.25}}}
    return load_study_spec(None, settings | overrides)


def test_fit_width_holds_the_branchwise_activation_budget():
    config = SplitConfig(arch="vgg16", block_factors=(4, 2, 2, 2, 2), dataset="cifar10")
    budget = 400_000
    fitted = fit_width(config, budget_activation=budget)
    assert fitted.cost.deployed_activation_bytes <= budget < fitted.next_cost.deployed_activation_bytes
    # Branch by branch is what the budget holds: the grouped form of the same network needs more.
    assert fitted.cost.activation_bytes > fitted.cost.deployed_activation_bytes


def test_activation_objective_is_the_branchwise_peak(tmp_path):
    spec = blocks_spec(objectives="accuracy,activation")
    study = run_study(spec, f"sqlite:///{tmp_path / 'study.db'}", runs_in(tmp_path), progress=False)
    complete = study.get_trials(states=COMPLETE)
    assert len(complete) == 4
    for trial in complete:
        cost = count_config(SplitConfig.from_dict(trial.user_attrs["config"]))
        assert trial.values[1] == cost.deployed_activation_bytes == trial.user_attrs["sequential_activation_bytes"]


def test_reject_mode_prunes_candidates_over_the_activation_budget(tmp_path):
    unsplit = count_config(SplitConfig(arch="resnet20", width_mult=0.5, dataset="synthetic:96"))
    budget = unsplit.deployed_activation_bytes - 1  # only a split network can fit
    spec = blocks_spec(budget_activation=budget, budget_mode="reject", n_trials=6, baselines=True)
    study = run_study(spec, f"sqlite:///{tmp_path / 'study.db'}", runs_in(tmp_path), progress=False)
    over = [trial for trial in study.trials if trial.user_attrs.get("over_budget")]
    assert study.trials[0].user_attrs["baseline"] == "undivided" and study.trials[0] in over
    assert all(trial.user_attrs["sequential_activation_bytes"] > budget for trial in over)
    assert all(trial.user_attrs["sequential_activation_bytes"] <= budget for trial in study.get_trials(states=COMPLETE))
    assert study.user_attrs["budget_activation"] == budget


@pytest.mark.parametrize("size", ["2XB", "0MB"])
def test_a_bad_activation_budget_is_one_line(size, capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--budget-activation", size, "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and "--budget-activation" in err and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()
