"""Calibration beside accuracy: NLL, ECE (15 bins) and Brier score, hand-computed, stored and searched on."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml

from splitsearch.report import write_report
from splitsearch.store import Store
from splitsearch.train.calibration import CalibrationMeter, ensemble_log_probs
from splitsearch.report import data, draw

from conftest import run_cli

# Four images, three classes; the top probabilities sit inside 15 equal bins of [0, 1], off their edges:
# 0.70 (bin (0.667, 0.733], right), 0.62 (bin (0.600, 0.667], wrong), 0.90 and 0.92 (bin (0.867, 0.933],
# one right, one wrong).
PROBABILITIES = [[0.70, 0.20, 0.10], [0.62, 0.30, 0.08], [0.05, 0.90, 0.05], [0.92, 0.04, 0.04]]
LABELS = [0, 1, 1, 2]
# ECE = sum over bins of (images in bin / 4) * |accuracy - mean confidence| in the bin.
ECE = 1 / 4 * abs(1 - 0.70) + 1 / 4 * abs(0 - 0.62) + 2 / 4 * abs(0.5 - (0.90 + 0.92) / 2)
NLL = -(math.log(0.70) + math.log(0.30) + math.log(0.90) + math.log(0.04)) / 4
# Brier: squared distance to the one-hot label, summed over classes, averaged over images.
BRIER = ((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.62 ** 2 + 0.7 ** 2 + 0.08 ** 2) + (0.05 ** 2 + 0.1 ** 2 + 0.05 ** 2)
         + (0.92 ** 2 + 0.04 ** 2 + 0.96 ** 2)) / 4


def test_calibration_of_a_constructed_set_equals_the_hand_computation() -> None:
    assert ECE == pytest.approx(0.435)
    log_probs = torch.tensor(PROBABILITIES).log()
    labels = torch.tensor(LABELS)
    meter = CalibrationMeter(outputs=1, classes=3, device="cpu")
    meter.update(log_probs[None, :2], labels[:2])  # over two batches, as evaluation adds them
    meter.update(log_probs[None, 2:], labels[2:])
    [calibration] = meter.compute()
    assert calibration.ece == pytest.approx(ECE, abs=1e-6)
    assert calibration.nll == pytest.approx(NLL, abs=1e-6)
    assert calibration.brier == pytest.approx(BRIER, abs=1e-6)


def test_the_ensemble_comes_first_then_each_member() -> None:
    members = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])  # two members, one image, two classes
    log_probs = ensemble_log_probs(members, members.mean(0))
    assert log_probs.shape == (3, 1, 2)
    assert log_probs.exp()[:, 0, 0].tolist() == pytest.approx(
        [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2)), 0.5])


STUDY = """\
name: calibrated
arch: resnet20
dataset: digits
space: divide
epochs: 1
n_trials: 4
budget_params: 20K
base: {train: {batch_size: 128}}
"""


def test_a_pareto_study_of_accuracy_and_ece_runs_to_the_end_and_stores_calibration(tmp_path, capsys) -> None:
    (tmp_path / "study.yaml").write_text(STUDY)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, out, err = run_cli(capsys, "run", tmp_path / "study.yaml", "--storage", storage, "--device", "cpu",
                             "--runs-dir", tmp_path / "runs", "--objectives", "accuracy,ece")
    assert code == 0, err
    study = optuna.load_study(study_name="calibrated", storage=storage)
    assert [direction.name for direction in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4 and "Pareto front" in out

    rows = {row.trial_number: row for row in Store(storage).candidates("calibrated")}
    for trial in complete:
        row = rows[trial.number]
        assert trial.values == [pytest.approx(row.val_accuracy), pytest.approx(row.val_ece)]
        assert 0 <= row.val_ece <= 1 and 0 <= row.val_brier <= 2 and row.val_nll > 0
        assert len(row.member_val_calibration["nll"]) == row.S
        [epoch] = Store(storage).epochs(row.id)
        assert (epoch.val_nll, epoch.val_ece, epoch.val_brier) == (row.val_nll, row.val_ece, row.val_brier)
        assert epoch.val_member_ece == row.member_val_calibration["ece"]
        assert trial.user_attrs["val_nll"] == pytest.approx(row.val_nll)

    # The report draws every trial's ensemble beside its members.
    points = {point["trial"]: point for point in data.calibration_points(study)}
    assert sorted(points) == sorted(trial.number for trial in complete)
    for trial in complete:
        assert points[trial.number]["member_eces"] == rows[trial.number].member_val_calibration["ece"]
        assert points[trial.number]["ece"] == pytest.approx(rows[trial.number].val_ece)
    figure = draw.calibration(study)
    members, ensembles = figure.data[-2:]
    assert len(ensembles.x) == 4 and len(members.x) == sum(rows[number].S for number in points)
    page = write_report(study, tmp_path / "report.html").read_text()
    assert "Validation accuracy vs calibration error (ensemble and members)" in page

    # export writes the pick's calibration into its provenance.
    code, _, err = run_cli(capsys, "export", "--study", "calibrated", "--storage", storage, "--pick", "knee",
                           "-o", tmp_path / "best.yaml")
    assert code == 0, err
    provenance = yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]
    row = rows[provenance["trial"]]
    assert (provenance["val_nll"], provenance["val_ece"], provenance["val_brier"]) == (
        pytest.approx(row.val_nll), pytest.approx(row.val_ece), pytest.approx(row.val_brier))
    assert provenance["member_val_calibration"] == row.member_val_calibration


def test_nll_is_a_single_objective_minimised_and_test_figures_are_recorded_on_request(tmp_path, capsys) -> None:
    (tmp_path / "study.yaml").write_text(STUDY.replace("n_trials: 4", "n_trials: 1") + "record_test: true\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, out, err = run_cli(capsys, "run", tmp_path / "study.yaml", "--storage", storage, "--device", "cpu",
                             "--runs-dir", tmp_path / "runs", "--objectives", "nll", "--set", "pruner=none")
    assert code == 0, err
    study = optuna.load_study(study_name="calibrated", storage=storage)
    assert [direction.name for direction in study.directions] == ["MINIMIZE"]
    rows = {row.trial_number: row for row in Store(storage).candidates("calibrated")}
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete and all(trial.value == pytest.approx(rows[trial.number].val_nll) for trial in complete)
    assert study.best_trial.value == min(trial.value for trial in complete)
    assert all(trial.intermediate_values[1] == pytest.approx(trial.value) for trial in complete)
    assert "validation NLL" in out
    # record_test: each completed candidate measured once on the test split, recorded beside its result.
    for trial in complete:
        row = rows[trial.number]
        assert 0 <= row.test_accuracy <= 1 and row.test_nll > 0 and 0 <= row.test_ece <= 1
        assert trial.user_attrs["test_accuracy"] == pytest.approx(row.test_accuracy)
