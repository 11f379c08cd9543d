"""``splitsearch evaluate``: trained weights measured without training, in one process or a member a process.

The figures must be the training's own: the validation accuracy a training reported for its last
epoch is what evaluating its model.pt on the validation split gives, and the member-parallel
evaluation (real processes, gloo) gives the one-process figures and predictions.
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.train.loop import METRICS_NAME, MODEL_NAME

from conftest import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny S=2 co-training run: (its config, its output folder)."""
    folder = tmp_path_factory.mktemp("evaluate")
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits",
                         train=TrainConfig(epochs=2, batch_size=16, val_fraction=0.25))
    path = folder / "config.yaml"
    path.write_text(config.to_yaml())
    from splitsearch.cli import main

    assert main(["train", str(path), "--device", "cpu", "--quiet", "--out", str(folder / "run")]) == 0
    return path, folder / "run"


def accuracies(out: str) -> list[str]:
    """The accuracy column of the printed table: ensemble, then each member."""
    return [next(word for word in line.split() if word.endswith("%")) for line in _table(out)]


def calibration(out: str) -> list[list[str]]:
    """The NLL, ECE and Brier columns of the printed table: ensemble, then each member."""
    return [line.split()[-3:] for line in _table(out)]


def _table(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("ensemble", "member"))]


def test_the_validation_split_gives_the_accuracies_the_training_reported(trained, capsys):
    config, run = trained
    code, out, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--split", "val",
                             "--device", "cpu")
    assert code == 0, err
    last = json.loads((run / METRICS_NAME).read_text())["history"][-1]
    expected = [last["val_accuracy"], *last["val_member_accuracies"]]
    assert accuracies(out) == [f"{value:.2%}" for value in expected]
    # Calibration too: the same weights on the same images give the figures the training reported.
    figures = [(last["val_nll"], last["val_ece"], last["val_brier"]),
               *zip(last["val_member_nll"], last["val_member_ece"], last["val_member_brier"])]
    assert calibration(out) == [[f"{value:.3f}" for value in row] for row in figures]
    assert f"val split ({json.loads((run / METRICS_NAME).read_text())['val_samples']:,} images" in out


def test_a_member_a_process_or_a_grid_of_data_ranks_gives_the_one_process_figures_and_predictions(
        trained, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config, run = trained
    outputs = {}
    for nproc, data_parallel in ((1, 1), (2, 1), (2, 2)):  # one process, a member a process, 1 x 2 data ranks
        predictions = tmp_path / f"predictions-{nproc}-{data_parallel}.csv"
        code, out, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--device", "cpu",
                                 "--nproc", nproc, "--data-parallel", data_parallel, "--predictions", predictions)
        assert code == 0, err
        with open(predictions, newline="") as file:
            outputs[nproc, data_parallel] = (accuracies(out), list(csv.DictReader(file)))
        assert ("2 processes" in out) == (nproc == 2)
    one_figures, one_rows = outputs[1, 1]
    assert outputs[2, 1] == outputs[2, 2] == (one_figures, one_rows)
    # The file says what the table says: the ensemble's accuracy over the test split's rows.
    assert len(one_rows) == 359 and list(one_rows[0]) == ["index", "label", "prediction", "member_1", "member_2"]
    correct = sum(row["label"] == row["prediction"] for row in one_rows)
    assert f"{correct / len(one_rows):.2%}" == one_figures[0]


def test_the_line_counts_the_processes_that_joined_the_group_not_the_option(trained, tmp_path):
    """Under torchrun the group is torchrun's and --nproc stays at its default of 1."""
    config, run = trained
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "splitsearch.cli", "evaluate", str(config), "--weights", str(run / MODEL_NAME),
                           "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "2 processes" in done.stdout


def test_weights_that_do_not_fit_are_one_line(trained, capsys, tmp_path):
    config, run = trained
    other = tmp_path / "S4.yaml"
    other.write_text(SplitConfig.from_yaml(config).replace(S=4).to_yaml())
    code, out, err = run_cli(capsys, "evaluate", other, "--weights", run / MODEL_NAME, "--device", "cpu")
    assert code == 2 and out == ""
    assert err == f"Error: {run / MODEL_NAME} holds 2 members, the config has S=4\n"
    code, _, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--nproc", "3")
    assert code == 2 and "3 processes cannot share 2 members equally" in err and err.count("\n") == 1


def test_a_split_without_images_is_one_line(trained, capsys, tmp_path):
    config, run = trained
    final = tmp_path / "final.yaml"
    loaded = SplitConfig.from_yaml(config)
    final.write_text(loaded.replace(train=dataclasses.replace(loaded.train, val_fraction=0.0)).to_yaml())
    code, _, err = run_cli(capsys, "evaluate", final, "--weights", run / MODEL_NAME, "--split", "val",
                           "--device", "cpu")
    assert code == 2
    assert err.startswith("Error: the val split of digits has no images") and err.count("\n") == 1


@pytest.fixture(scope="module")
def trained_semantic(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny semantic split (S=2, G=2), cut after its first epoch: (its config, its output folder)."""
    folder = tmp_path_factory.mktemp("semantic")
    config = SplitConfig(arch="resnet20", S=2, groups=2, split_depth="deep", width_mult=0.25, dataset="synthetic:160",
                         train=TrainConfig(epochs=2, batch_size=32, lr=0.05, val_fraction=0.2, grouping_fraction=0.5))
    path = folder / "config.yaml"
    path.write_text(config.to_yaml())
    from splitsearch.cli import main

    assert main(["train", str(path), "--device", "cpu", "--quiet", "--out", str(folder / "run")]) == 0
    return path, folder / "run"


def test_a_semantic_split_evaluates_its_cut_members_to_the_accuracies_its_training_reported(
        trained_semantic, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config, run = trained_semantic
    last = json.loads((run / METRICS_NAME).read_text())["history"][-1]
    expected = [f"{value:.2%}" for value in (last["val_accuracy"], *last["val_member_accuracies"])]
    for nproc in (1, 2):
        code, out, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--split", "val",
                                 "--device", "cpu", "--nproc", nproc)
        assert code == 0, err
        assert accuracies(out) == expected
