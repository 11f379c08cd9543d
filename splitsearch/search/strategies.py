"""Search strategies that are procedures, not samplers: the greedy block-wise split (MalekHosseini et al. 2020).

The greedy algorithm (the block-wise split paper's Fig. 4) visits the blocks of a network in
order, first block first (its feature maps are the largest, so splitting it saves the most).
For each block it tries increasing split factors; it keeps going while the validation accuracy
stays within ``threshold`` points of the unsplit baseline, and stops at the first factor that
drops further.  The block keeps the last factor that passed (1 if none did), and the next block
is tried on top of that choice.

The procedure is written against an ``evaluate`` function (factors, and the factors of the
network it may start from -> validation accuracy), so it can be tested on a function of the
factors and run by :mod:`splitsearch.search.greedy` with every evaluation an ordinary trial of
an Optuna study, fine-tuned from the network chosen so far as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from splitsearch.errors import SplitsearchError


class GreedyError(SplitsearchError, ValueError):
    """The greedy procedure cannot run as asked (its factors or threshold), or has no baseline to compare with."""

DEFAULT_FACTORS = (2, 4, 6, 8)
DEFAULT_THRESHOLD = 0.5  # points of accuracy, as in the block-wise split paper


@dataclass(frozen=True)
class GreedySettings:
    """How the greedy block-wise split runs (a study file's ``greedy:`` section, or ``--set greedy.KEY=VALUE``).

    Attributes:
        threshold: the validation-accuracy drop against the unsplit baseline, in points, a kept
            factor must stay under.
        factors: the split factors tried for every block, increasing.
        finetune_epochs: epochs each split candidate is fine-tuned (None: a third of the study's epochs).
    """

    threshold: float = DEFAULT_THRESHOLD
    factors: tuple[int, ...] = DEFAULT_FACTORS
    finetune_epochs: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GreedySettings:
        """The settings of a ``greedy:`` section; a wrong key or value raises :class:`GreedyError` in one line."""
        data = dict(data or {})
        if unknown := sorted(set(data) - {"threshold", "factors", "finetune_epochs"}):
            raise GreedyError(f"unknown key greedy.{unknown[0]} (known keys: factors, finetune_epochs, threshold)")
        factors = data.get("factors", DEFAULT_FACTORS)
        if isinstance(factors, str):
            factors = [part.strip() for part in factors.split(",")]
        try:
            factors = tuple(int(factor) for factor in factors)
            threshold = float(data.get("threshold", DEFAULT_THRESHOLD))
        except (TypeError, ValueError):
            raise GreedyError("greedy.factors must be positive whole numbers (e.g. [2, 4, 6, 8]) and "
                              "greedy.threshold a number of points") from None
        finetune = data.get("finetune_epochs")
        if finetune is not None and (isinstance(finetune, bool) or not isinstance(finetune, int) or finetune < 1):
            raise GreedyError(f"greedy.finetune_epochs must be a whole number of at least 1, got {finetune!r}")
        if threshold < 0 or not factors or min(factors) < 1:
            raise GreedyError("greedy.threshold must be at least 0 and greedy.factors positive whole numbers")
        return cls(threshold, factors, finetune)


@dataclass(frozen=True)
class GreedyStep:
    """One evaluated candidate: the factors tried, its accuracy, and whether the block kept it.

    ``accuracy`` is None where the candidate could not be trained (over budget, failed): that
    counts as a drop beyond the threshold.
    """

    block: int
    factors: tuple[int, ...]
    accuracy: float | None
    drop_points: float | None
    accepted: bool


@dataclass(frozen=True)
class GreedyResult:
    """The chosen factors, the baseline they are compared with, and every step on the way."""

    factors: tuple[int, ...]
    baseline_accuracy: float
    steps: tuple[GreedyStep, ...]

    @property
    def accuracy(self) -> float:
        """Accuracy of the chosen network: its last accepted step (the baseline if none)."""
        accepted = [step.accuracy for step in self.steps if step.accepted and step.accuracy is not None]
        return accepted[-1] if accepted else self.baseline_accuracy

    @property
    def drop_points(self) -> float:
        return 100 * (self.baseline_accuracy - self.accuracy)


Evaluate = Callable[[tuple[int, ...], "tuple[int, ...] | None"], "float | None"]


def greedy_block_split(num_blocks: int, evaluate: Evaluate,
                       threshold: float = DEFAULT_THRESHOLD, factors: Sequence[int] = DEFAULT_FACTORS,
                       on_step: Callable[[GreedyStep], None] | None = None) -> GreedyResult:
    """The greedy block-wise split: per block, the largest factor before the first one that drops too much.

    Args:
        num_blocks: blocks of the base network.
        evaluate: ``evaluate(factors, start_from)`` is the validation accuracy (0..1) of a
            network with these per-block factors, or None if it cannot be trained.
            ``start_from`` is the network chosen so far (whose unchanged blocks may keep their
            weights); None for the first call, the baseline with all ones.
        threshold: the accuracy drop against the baseline, in points, a kept factor must stay under.
        factors: the factors tried for every block, increasing.
        on_step: told every candidate's step as soon as it is decided.

    Raises:
        ValueError: factors not increasing integers > 1, a negative threshold, or a baseline
            that cannot be trained.
    """
    factors = tuple(factors)
    if not factors or any(k <= 1 for k in factors) or list(factors) != sorted(set(factors)):
        raise GreedyError(f"split factors must be increasing integers above 1, got {list(factors)}")
    if threshold < 0:
        raise GreedyError(f"the accuracy-drop threshold must be >= 0 points, got {threshold}")
    chosen = [1] * num_blocks
    baseline = evaluate(tuple(chosen), None)
    if baseline is None:
        raise GreedyError("the unsplit baseline could not be trained, so there is nothing to compare with")
    steps = []
    for block in range(num_blocks):
        for factor in factors:
            candidate = tuple(chosen[:block] + [factor] + chosen[block + 1:])
            accuracy = evaluate(candidate, tuple(chosen))
            drop = None if accuracy is None else 100 * (baseline - accuracy)
            accepted = drop is not None and drop < threshold
            steps.append(GreedyStep(block, candidate, accuracy, drop, accepted))
            if on_step is not None:
                on_step(steps[-1])
            if not accepted:
                break
            chosen[block] = factor
    return GreedyResult(tuple(chosen), baseline, tuple(steps))
