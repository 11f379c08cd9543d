"""benchmarks/objective_noise.py's statistics: Spearman as scipy computes it, targets that leave the run's own
seed out, and the epochs at which Hyperband decides."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import objective_noise  # noqa: E402
from sampler_efficiency import Table  # noqa: E402


def test_spearman_is_scipys_averaged_over_seeds() -> None:
    draw = np.random.default_rng(0)
    signal, target = draw.integers(0, 5, size=(3, 12)).astype(float), draw.normal(size=(3, 12))  # ties in signal
    expected = np.mean([stats.spearmanr(signal[seed], target[seed]).statistic for seed in range(3)])
    assert objective_noise.spearman(signal, target) == pytest.approx(expected)


def test_targets_leave_the_runs_own_seed_out_and_signals_are_higher_is_better() -> None:
    runs = lambda tests, nlls: [{"test_accuracy": test, "curve": [0.5, 0.6], "nll_curve": [nll, nll / 2]}  # noqa: E731
                                for test, nll in zip(tests, nlls)]
    table = Table({(1,): {"runs": runs((0.6, 0.7, 0.8), (1.0, 2.0, 3.0))},
                   (2, "exp", 0.5): {"runs": runs((0.3, 0.4, 0.5), (4.0, 5.0, 6.0))}}, (0.5,), {"epochs": 2})
    np.testing.assert_allclose(objective_noise.leave_one_out_targets(table), [[0.75, 0.45], [0.7, 0.4], [0.65, 0.35]])
    assert objective_noise.signal_matrix(table, "val NLL", 2).tolist() == [[-0.5, -2.0], [-1.0, -2.5], [-1.5, -3.0]]


def test_hyperband_rungs_and_the_last_epoch() -> None:
    assert objective_noise.rungs(6) == [1, 3, 6]
    assert objective_noise.rungs(15) == [1, 3, 9, 15]
    assert objective_noise.rungs(1) == [1]
