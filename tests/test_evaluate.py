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
    return [line.split()[-1] for line in out.splitlines() if line.startswith(("ensemble", "member"))]


def test_the_validation_split_gives_the_accuracies_the_training_reported(trained, capsys):
    config, run = trained
    code, out, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--split", "val",
                             "--device", "cpu")
    assert code == 0, err
    last = json.loads((run / METRICS_NAME).read_text())["history"][-1]
    expected = [last["val_accuracy"], *last["val_member_accuracies"]]
    assert accuracies(out) == [f"{value:.2%}" for value in expected]
    assert f"val split ({json.loads((run / METRICS_NAME).read_text())['val_samples']:,} images" in out


def test_a_member_a_process_gives_the_one_process_figures_and_predictions(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config, run = trained
    outputs = {}
    for nproc in (1, 2):
        predictions = tmp_path / f"predictions-{nproc}.csv"
        code, out, err = run_cli(capsys, "evaluate", config, "--weights", run / MODEL_NAME, "--device", "cpu",
                                 "--nproc", nproc, "--predictions", predictions)
        assert code == 0, err
        with open(predictions, newline="") as file:
            outputs[nproc] = (accuracies(out), list(csv.DictReader(file)))
        assert ("2 processes" in out) == (nproc == 2)
    (one_figures, one_rows), (two_figures, two_rows) = outputs[1], outputs[2]
    assert two_figures == one_figures and two_rows == one_rows
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
