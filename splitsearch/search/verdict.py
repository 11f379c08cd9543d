"""Is the pick really better than the baselines?  Paired differences over the seeds they share.

``confirm`` retrains the pick and the baselines with the same further seeds.  A seed fixes the
initialisation, the validation split, the data order and the augmentation draws, so two
candidates trained with the same seed share part of their luck, and the difference of their
results seed by seed is less noisy than the difference of their means: the comparison is
*paired* by seed (Student's paired t-test; Dietterich, "Approximate Statistical Tests for
Comparing Supervised Classification Learning Algorithms", 1998, discusses why a paired test is
the honest one for two learners trained on the same splits).

For each baseline: the mean of the per-seed differences (pick minus baseline, so positive is
better for accuracy), its standard error ``sd / sqrt(n)``, and the 95 % interval from the
t-distribution with ``n - 1`` degrees of freedom.  The pick is *better* when the whole interval
lies on the better side of zero, *worse* when it lies on the other side, and otherwise *not
distinguishable*: a tie, said as one, because a tie at this budget means dividing the network
does not pay.  The verdict also says how many seeds would resolve a difference of one point at
the measured spread (a paired t-test at the 5 % level with 80 % power).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from scipy import stats

CONFIDENCE = 0.95
POWER = 0.80
# Seeds beyond which a sample-size answer stops being useful advice ("more than 1000").
_MOST_SEEDS = 1000


@dataclass(frozen=True)
class Metric:
    """What is compared: its name in sentences, its direction, and how a difference is written.

    ``scale`` turns a difference into ``unit`` (accuracy 0.012 -> 1.2 points), written with
    ``decimals`` (the interval's bounds with ``interval_decimals``); ``resolution`` is the
    difference (in the metric's own units) whose seeds count :class:`Verdict` reports.
    """

    name: str
    higher_is_better: bool
    scale: float
    unit: str
    decimals: int
    interval_decimals: int
    resolution: float


METRICS = {
    "accuracy": Metric("accuracy", True, 100.0, "points", 2, 1, 0.01),
    "nll": Metric("NLL", False, 1.0, "nats", 3, 3, 0.01),
    "ece": Metric("ECE", False, 100.0, "points", 2, 1, 0.01),
}

# How a baseline is named in a sentence.
_BASELINE_NAMES = {"undivided": "the undivided network", "paper S=2": "the paper's S=2", "paper S=4": "the paper's S=4"}


@dataclass(frozen=True)
class Verdict:
    """The pick against one baseline on one metric, paired by the seeds both were confirmed with.

    Attributes:
        baseline: the baseline's label (``undivided``, ``paper S=2``, ``undivided (tuned)`` ...).
        pick_trial, baseline_trial: the trials compared.
        metric: a key of :data:`METRICS`.
        seeds: the seeds both were confirmed with, in order.
        differences: pick minus baseline per seed, in the metric's own units (accuracy 0..1).
        mean, standard_error, low, high: the mean difference, its standard error and its 95 %
            interval (None with fewer than two shared seeds).
        seeds_needed: seeds that would resolve a difference of ``Metric.resolution`` at the
            measured spread (None with fewer than two shared seeds; at most 1000).
    """

    baseline: str
    pick_trial: int
    baseline_trial: int
    metric: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float | None
    standard_error: float | None
    low: float | None
    high: float | None
    seeds_needed: int | None

    @property
    def outcome(self) -> str:
        """``better``, ``worse``, ``not distinguishable``, ``same candidate`` or ``too few seeds``."""
        if self.pick_trial == self.baseline_trial:
            return "same candidate"
        if self.low is None or self.high is None:
            return "too few seeds"
        sign = 1 if METRICS[self.metric].higher_is_better else -1
        if min(sign * self.low, sign * self.high) > 0:
            return "better"
        if max(sign * self.low, sign * self.high) < 0:
            return "worse"
        return "not distinguishable"

    @property
    def pays(self) -> bool:
        """Whether the pick beats this baseline (what ``export`` may call "best" without a caveat)."""
        return self.outcome == "better"

    def sentence(self) -> str:
        """One plain sentence: "better than the undivided network by 1.20 points (95 % CI 0.3 to 2.1)"."""
        metric = METRICS[self.metric]
        prefix = "" if self.metric == "accuracy" else f"{metric.name}: "
        name = _BASELINE_NAMES.get(self.baseline, self.baseline)
        undivided = self.baseline.startswith("undivided")
        outcome = self.outcome
        if outcome == "same candidate":
            text = f"the pick is {name} itself"
            return prefix + text + (": at this budget dividing does not pay" if undivided and not prefix else "")
        if outcome == "too few seeds":
            shared = len(self.seeds)
            return (f"{prefix}cannot be compared with {name}: {shared} shared seed{'' if shared == 1 else 's'} "
                    "(confirm with at least 2 seeds)")
        if outcome == "not distinguishable":
            text = (f"not distinguishable from {name} ({self._value(self.mean, signed=True)}, 95 % CI "
                    f"{self._value(self.low, signed=True, interval=True)} to "
                    f"{self._value(self.high, signed=True, interval=True)})")
        else:
            # Magnitudes in the direction the sentence names: "worse by 1.2 (95 % CI 0.4 to 2.0)".
            low, high = sorted((abs(self.low), abs(self.high)))
            text = (f"{outcome} than {name} by {self._value(abs(self.mean))} {metric.unit} (95 % CI "
                    f"{self._value(low, interval=True)} to {self._value(high, interval=True)})")
        if undivided and outcome != "better" and self.metric == "accuracy":
            text += ": at this budget dividing does not pay"
        return prefix + text

    def resolution_sentence(self) -> str | None:
        """How many seeds would resolve a difference of ``Metric.resolution`` (None where unknown)."""
        if self.seeds_needed is None:
            return None
        metric = METRICS[self.metric]
        count = f"more than {_MOST_SEEDS}" if self.seeds_needed > _MOST_SEEDS else str(self.seeds_needed)
        return (f"{count} seeds would resolve a {metric.resolution * metric.scale:g}-{metric.unit.rstrip('s')} "
                "difference at this spread")

    def _value(self, value: float, signed: bool = False, interval: bool = False) -> str:
        metric = METRICS[self.metric]
        decimals = metric.interval_decimals if interval else metric.decimals
        return f"{value * metric.scale:{'+' if signed else ''}.{decimals}f}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row (what the study's attributes, ``export`` and the report keep)."""
        return {**asdict(self), "seeds": list(self.seeds), "differences": list(self.differences),
                "outcome": self.outcome, "sentence": self.sentence(), "resolution": self.resolution_sentence()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        fields = {key: data[key] for key in cls.__dataclass_fields__}
        return cls(**{**fields, "seeds": tuple(fields["seeds"]), "differences": tuple(fields["differences"])})


def paired_verdict(baseline: str, pick_trial: int, baseline_trial: int, pick: Mapping[int, float],
                   reference: Mapping[int, float], metric: str = "accuracy") -> Verdict:
    """The pick's results per seed against a baseline's, on ``metric``, paired by the seeds both have.

    ``pick`` and ``reference`` map a seed to the value its run reached (accuracy as 0..1).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    seeds = tuple(sorted(set(pick) & set(reference)))
    differences = tuple(pick[seed] - reference[seed] for seed in seeds)
    mean = statistics.fmean(differences) if differences else None
    if len(differences) < 2:
        return Verdict(baseline, pick_trial, baseline_trial, metric, seeds, differences, mean, None, None, None, None)
    spread = statistics.stdev(differences)
    standard_error = spread / math.sqrt(len(differences))
    half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(differences) - 1)) * standard_error
    return Verdict(baseline, pick_trial, baseline_trial, metric, seeds, differences, mean, standard_error,
                   mean - half_width, mean + half_width, seeds_to_resolve(spread, METRICS[metric].resolution))


def seeds_to_resolve(spread: float, difference: float) -> int:
    """Seeds a paired t-test needs to find ``difference`` at the 5 % level with 80 % power.

    ``spread`` is the standard deviation of the per-seed differences.  The smallest n >= 2 with
    ``(t(0.975, n-1) + t(0.80, n-1)) * spread / sqrt(n) <= difference``; 1001 when more than 1000.
    """
    for count in range(2, _MOST_SEEDS + 1):
        degrees = count - 1
        needed = (stats.t.ppf(0.5 + CONFIDENCE / 2, degrees) + stats.t.ppf(POWER, degrees)) * spread / math.sqrt(count)
        if needed <= difference:
            return count
    return _MOST_SEEDS + 1


def verdict_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """One line per verdict, as ``confirm`` prints them: "vs undivided: <sentence>; <seeds advice>"."""
    lines = []
    for verdict in verdicts:
        advice = verdict.resolution_sentence()
        seeds = f"{len(verdict.seeds)} paired seed{'' if len(verdict.seeds) == 1 else 's'}"
        lines.append(f"vs {verdict.baseline}: {verdict.sentence()} [{seeds}"
                     + (f"; {advice}]" if advice and verdict.outcome != "same candidate" else "]"))
    return lines
