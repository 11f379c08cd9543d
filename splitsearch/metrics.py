"""What a training produced: each epoch's metrics and the whole run's result.

Plain figures without torch, so that the store, the search and the command line read and write
them without importing the training loop (:mod:`splitsearch.train.loop` makes them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from splitsearch.stats import accuracy_standard_error


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch produced; ``epoch`` counts from 1."""

    epoch: int
    train_loss: float
    train_cross_entropy: float
    train_cotraining: float
    lr: float
    lambda_cot: float
    val_accuracy: float
    val_member_accuracies: list[float]
    seconds: float
    train_regularisers: float = 0.0


@dataclass
class TrainResult:
    """The outcome of :meth:`Trainer.fit`."""

    history: list[EpochMetrics]
    stopped_early: bool = False
    test_accuracy: float | None = None
    test_member_accuracies: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    val_samples: int = 0
    test_samples: int = 0
    resumed_from_epoch: int = 0
    semantic: dict[str, Any] | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1].val_accuracy if self.history else None

    @property
    def val_standard_error(self) -> float | None:
        """Binomial standard error of the final validation accuracy (:mod:`splitsearch.stats`)."""
        return accuracy_standard_error(self.val_accuracy, self.val_samples)

    @property
    def test_standard_error(self) -> float | None:
        return accuracy_standard_error(self.test_accuracy, self.test_samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": [asdict(metrics) for metrics in self.history],
            "stopped_early": self.stopped_early,
            "val_accuracy": self.val_accuracy,
            "val_standard_error": self.val_standard_error,
            "val_samples": self.val_samples,
            "val_member_accuracies": self.history[-1].val_member_accuracies if self.history else [],
            "test_accuracy": self.test_accuracy,
            "test_member_accuracies": self.test_member_accuracies,
            "test_standard_error": self.test_standard_error,
            "test_samples": self.test_samples,
            "wall_seconds": self.wall_seconds,
            "resumed_from_epoch": self.resumed_from_epoch,
            "semantic": self.semantic,
        }
