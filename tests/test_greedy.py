"""``splitsearch run --strategy greedy-blocks``: seed 002's procedure as trials of an Optuna study."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from splitsearch.search.greedy import run_greedy_blocks
from splitsearch.search.study import load_study_spec
from splitsearch.store import Store

from conftest import run_cli, runs_in


def greedy_study(name: str = "greedy"):
    """ResNet-20 at half width (stages of 8, 16, 32 channels: every factor 2 divides them)."""
    return load_study_spec(None, {
        "name": name, "arch": "resnet20", "dataset": "synthetic:96", "epochs": 2,
        "base": {"width_mult": 0.5, "train": {"batch_size": 32, "val_fraction": 0.25}},
            "greedy": {"threshold": 100, "factors": [2], "finetune_epochs": 1},
    })


def test_every_network_is_a_trial_fine_tuned_from_the_one_before(storage, tmp_path):
    lines: list[str] = []
    study, result = run_greedy_blocks(greedy_study(), storage, runs_in(tmp_path), on_step=lines.append)
    assert result.factors == (2, 2, 2)
    trials = study.get_trials(deepcopy=False)
    assert [tuple(t.params[f"block_factors.{b}"] for b in range(3)) for t in trials] == [
        (1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["baseline"] == "undivided" and trials[0].params["train.epochs"] == 2
    assert [t.user_attrs.get("warm_start_from") for t in trials] == [None, 0, 1, 2]
    assert all(t.params["train.epochs"] == 1 for t in trials[1:])
    # The unchanged stem, the other stages and the classifier kept their trained weights.
    assert all(t.user_attrs["warm_started_tensors"] > 0 for t in trials[1:])
    rows = Store(storage).candidates("greedy")
    assert [row.warm_started_from for row in rows] == [None, 0, 1, 2]
    assert [len(Store(storage).epochs(row.id)) for row in rows] == [2, 1, 1, 1]
    assert not list((tmp_path / "runs").rglob("*.pt")), "no weights are left behind"

    summary = study.user_attrs["greedy_result"]
    assert summary["factors"] == [2, 2, 2] and summary["trial"] == 3 and summary["baseline_trial"] == 0
    assert summary["params"] < summary["params_baseline"] and summary["macs"] < summary["macs_baseline"]
    assert summary["sequential_activation_bytes"] < summary["sequential_activation_bytes_baseline"]
    assert summary["accuracy"] == pytest.approx(trials[3].value)
    assert len(lines) == 4 and "baseline" in lines[0] and "kept" in lines[3]


def test_a_crash_resumes_where_it_stopped_and_nothing_is_trained_twice(storage, tmp_path):
    def crash_after_second_network(line: str) -> None:
        if line.startswith("trial 1:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_greedy_blocks(greedy_study(), storage, runs_in(tmp_path), on_step=crash_after_second_network)
    # The next candidate starts from trial 1's weights: they survived the crash.
    assert list((tmp_path / "runs").rglob("trial-1/model.pt"))

    study, result = run_greedy_blocks(greedy_study(), storage, runs_in(tmp_path))
    assert result.factors == (2, 2, 2)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.trials[2].user_attrs["warm_start_from"] == 1


def test_cli_prints_the_choice_and_export_takes_it(storage, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--strategy", "greedy-blocks", "--arch", "resnet20", "--dataset",
                             "synthetic:96", "--epochs", "1", "--set", "greedy.factors=[2]", "--set", "greedy.threshold=100", "--study", "g",
                             "--storage", storage, "--runs-dir", tmp_path / "runs", "--device", "cpu")
    assert code == 0, err
    assert "chosen factors 2,2,2 (trial 3)" in out and "activation memory" in out
    code, out, err = run_cli(capsys, "export", "--study", "g", "--storage", storage, "-o", tmp_path / "best.yaml")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["block_factors"] == [2, 2, 2]


def test_two_objectives_are_refused_in_one_line(storage, tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--strategy", "greedy-blocks", "--arch", "resnet20", "--dataset",
                           "synthetic:96", "--objectives", "accuracy,params", "--storage", storage)
    assert code == 2 and "accuracy alone" in err and "Traceback" not in err
    assert not (tmp_path / "study.db").exists() or not optuna.get_all_study_summaries(storage)
