"""Know the cost before paying it: what ``splitsearch run`` will train, and about how long it will take.

Before the first trial, ``run`` prints the base candidate's size after fitting the budget, the
measured time of a few training steps and from them the time of an epoch and of the whole
study (``run --dry-run`` prints only that, and stores nothing).  A budget far beyond what the
dataset can support gets a one-line warning, since a 36M-parameter network for 1,437 digits
trains for an hour to learn nothing a 60K one would not.  While the study runs,
:class:`StudyProgress` puts the running trial's epoch and an ETA on its progress bar.

The time of a step is measured, not derived from MACs: grouped convolutions, S small members and
the machine's thread count make MACs a poor clock.  It is measured on a sample of the kinds of
candidate the space holds (:func:`sample_kinds`), each fitted to the budget like every candidate:
the study's largest S, since at a fixed budget more and smaller members run fewer MACs per second
(at the quick start's 60K on a 2-core CPU, one thread: 80 ms a step for S=4 against 27 ms for
S=1); where the space has semantic groups, the most groups at the largest S, timed in its grouping
stage (the regularisers and assignments that stage adds); where it splits blocks, every searched
block at its largest factor.  A 10-trial study of the ``full`` space timed on its largest-S
candidate alone was estimated at 9 min and took 26: its semantic and block-split candidates cost
up to 1.7x the timed one's MACs, plus their grouping stage.  The study's epoch is the mean of the
kinds' (the sampler draws them alike at first), and ``run`` closes with the estimate beside the
time the study took.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.figures import CandidateCost
from splitsearch.cost.fitting import fit_width
from splitsearch.data import DataCache, dataset_info
from splitsearch.metrics import EpochMetrics
from splitsearch.models import resolve_arch
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.pruning import REDUCTION_FACTOR, rungs
from splitsearch.search.study import StudySpec
from splitsearch.train.loop import Trainer
from splitsearch.units import format_count

WARMUP_STEPS = 1
TIMED_STEPS = 3
# Timing stops after the step that reaches this many seconds (see time_training_steps).
TIMING_SECONDS = 5.0
# A validation batch runs the forward pass only, about a third of a training step (the backward
# pass costs about twice the forward one).
EVAL_STEP_FRACTION = 1 / 3
# More parameters than this per training image is far outside what a dataset supports.
PARAMS_PER_IMAGE_LIMIT = 1000
# Median training epochs spent with Hyperband over those spent without it, over 100 replays of
# TPE studies of 10 and 20 trials on the quick-start's space (the sampler replays on the 6-epoch
# digits table, result file benchmarks/results/2026-12-01-cpu2/sampler_efficiency_6_epochs.json:
# 48 of 60 and 77 of 120 epochs).
HYPERBAND_MEASURED = ((10, 48 / 60), (20, 77 / 120))


@dataclass(frozen=True)
class TimedKind:
    """One kind of candidate whose training steps were timed (:func:`sample_kinds`).

    Attributes:
        label: what it stands for (``largest S``, ``semantic G=4``, ``most-split blocks``).
        config: the candidate timed, fitted to the budget.
        step_times: the seconds of each timed training step after the warm-up (:func:`time_training_steps`).
    """

    label: str
    config: SplitConfig
    step_times: tuple[float, ...]

    @property
    def step_seconds(self) -> float:
        """The median timed step: on a machine shared with other work one step in a few can take much longer."""
        return statistics.median(self.step_times)


@dataclass(frozen=True)
class RunPlan:
    """What a study will train and the measured figures its time estimate is made from.

    Attributes:
        base, base_cost: the base candidate after fitting the budget, and its cost.
        timed: the kinds of candidate whose steps were timed (:func:`sample_kinds`), the largest S first.
        steps_per_epoch, val_batches: the batches of an epoch's training and validation.
        epochs: the most epochs a candidate trains.
        n_trials: the study's trials (None: it runs until its timeout).
        epoch_fraction, fraction_source: the share of epochs the pruner is expected to train, and why.
        train_images: the dataset's training images (None where unknown without loading).
    """

    base: SplitConfig
    base_cost: CandidateCost
    timed: tuple[TimedKind, ...]
    steps_per_epoch: int
    val_batches: int
    epochs: int
    n_trials: int | None
    epoch_fraction: float
    fraction_source: str
    train_images: int | None

    @property
    def step_seconds(self) -> float:
        """The mean of the timed kinds' median steps."""
        return statistics.mean(kind.step_seconds for kind in self.timed)

    @property
    def epoch_seconds(self) -> float:
        return self.step_seconds * (self.steps_per_epoch + EVAL_STEP_FRACTION * self.val_batches)

    @property
    def expected_seconds(self) -> float | None:
        """The study's estimated time, the pruner's expected saving included; None without ``n_trials``."""
        return None if self.unpruned_seconds is None else self.unpruned_seconds * self.epoch_fraction

    @property
    def unpruned_seconds(self) -> float | None:
        """Every trial trained to its last epoch; None without ``n_trials``."""
        return None if self.n_trials is None else self.n_trials * self.epochs * self.epoch_seconds

    def lines(self) -> list[str]:
        """The plan in a few lines, in human units."""
        return [self._size_line(), *self._timing_lines(), self._study_line()]

    def warning(self) -> str | None:
        """One line where the candidate has far more parameters than the dataset has images to train them."""
        params = self.base_cost.params
        if self.train_images is None or params <= PARAMS_PER_IMAGE_LIMIT * self.train_images:
            return None
        return (f"{format_count(params)} parameters for {self.train_images:,} training images "
                f"({params / self.train_images:,.0f} per image, over {PARAMS_PER_IMAGE_LIMIT:,}) is far more than "
                f"this dataset supports: expect long epochs and overfitting; a smaller --budget-params trains faster")

    def _size_line(self) -> str:
        return (f"plan: base candidate {self.base.arch} S={self.base.S}, width factor {self.base.width_mult:g}: "
                f"{format_count(self.base_cost.params)} params, {format_count(self.base_cost.macs)} MACs")

    def _timing_lines(self) -> list[str]:
        lines = [f"plan: {format_duration(kind.step_seconds)} a training step (median of {len(kind.step_times)} after "
                 f"{WARMUP_STEPS} warm-up) of the {kind.label} candidate ({describe_kind(kind.config)})"
                 for kind in self.timed]
        mean = "" if len(self.timed) == 1 else f"at their mean of {format_duration(self.step_seconds)} a step, "
        return lines + [f"plan: {mean}{self.steps_per_epoch} steps + {self.val_batches} validation batches an epoch: "
                        f"about {format_duration(self.epoch_seconds)} an epoch"]

    def closing_line(self, seconds: float) -> str | None:
        """The study's time beside the estimate (``run``'s last line), None where there was no estimate."""
        if self.expected_seconds is None:
            return None
        return (f"time: the study took {format_duration(seconds)}, against the plan's estimate of "
                f"{format_duration(self.expected_seconds)} ({seconds / self.expected_seconds:.2f}x)")

    def _study_line(self) -> str:
        if self.unpruned_seconds is None:
            return (f"plan: about {format_duration(self.epochs * self.epoch_seconds)} a trial of {self.epochs} epochs; "
                    "no --n-trials, so the study runs until its --timeout")
        expected = self.expected_seconds
        return (f"plan: the study: {self.n_trials} trials x {self.epochs} epochs x "
                f"{format_duration(self.epoch_seconds)} = {format_duration(self.unpruned_seconds)} unpruned; "
                f"{self.fraction_source}: about {format_duration(expected)}")


def plan_run(spec: StudySpec, execution: ExecutionOptions, data: DataCache | None = None) -> RunPlan:
    """Fit the base candidate, time a few training steps on this worker's device, and make the plan.

    Nothing is stored and no checkpoint is written: the dataset is loaded into memory only (a
    torchvision dataset that is not there is downloaded first where ``execution.download`` asks
    for it, as ``run`` would).

    ``data``: the worker's dataset cache, so that the study does not load the dataset again.

    Raises:
        BudgetError: even the narrowest network breaks the budget (as ``run`` would).
    """
    base, base_cost = fitted(spec, spec.base)
    timed = []
    for label, config in sample_kinds(spec):
        config, _ = fitted(spec, config)
        loaded = (data or execution.data_cache()).get(config.dataset, config.train, config.crop)
        trainer = Trainer(config, loaded, execution.device, mode=execution.mode, progress=False)
        timed.append(TimedKind(label, config, tuple(time_training_steps(trainer))))
    fraction, source = expected_epoch_fraction(spec)
    return RunPlan(base, base_cost, tuple(timed), len(loaded.train), len(loaded.val), spec.max_epochs, spec.n_trials,
                   fraction, source, dataset_info(spec.base.dataset).train_images)


def sample_kinds(spec: StudySpec) -> list[tuple[str, SplitConfig]]:
    """The kinds of candidate the plan times (before fitting): one of each kind the space can sample.

    Always the largest S (:func:`largest_s`); where the space has semantic groups, the most groups
    at the largest S (trained first in its grouping stage, which :meth:`Trainer.train_steps` times);
    where it splits blocks, every searched block at its largest factor at the largest S.
    """
    widest = spec.base.replace(S=largest_s(spec))
    kinds = [("largest S", widest)]
    groups = _largest(spec, "groups")
    if groups is not None and groups > 1:
        depth = spec.space.fixed.get("split_depth") or spec.base.split_depth
        kinds.append((f"semantic G={groups}", widest.replace(groups=groups, split_depth=depth, block_factors=())))
    for param in spec.space.params:
        if param.kind == "per_block" and max(param.choices) > 1:
            num_blocks = resolve_arch(spec.base.arch)[0].num_blocks
            factors = [1] * num_blocks
            for block in range(num_blocks) if param.blocks is None else param.blocks:
                factors[block] = int(max(param.choices))
            split = widest.replace(groups=1, split_depth=None, block_factors=tuple(factors))
            kinds.append(("most-split blocks", split))
    return kinds


def _largest(spec: StudySpec, key: str) -> int | None:
    """The largest value the space gives ``key`` (fixed or searched), None where it does not set it."""
    if key in spec.space.fixed:
        return int(spec.space.fixed[key])
    values = [max(param.choices) if param.kind == "categorical" else param.high
              for param in spec.space.params if param.key == key]
    return int(max(values)) if values else None


def describe_kind(config: SplitConfig) -> str:
    """``S=4``, ``S=4, G=4``, ``S=4, blocks 4,4,4``: what sets a timed candidate's kind."""
    text = f"S={config.S}"
    if config.groups > 1:
        text += f", G={config.groups} (grouping stage)"
    if any(factor > 1 for factor in config.block_factors):
        text += f", blocks {','.join(map(str, config.block_factors))}"
    return text


def fitted(spec: StudySpec, config: SplitConfig) -> tuple[SplitConfig, CandidateCost]:
    """``config`` as a trial would train it: fitted to the budget in ``fit`` mode, as it is otherwise."""
    if spec.budget_mode != "fit" or not spec.has_budget:
        return config, count_config(config)
    result = fit_width(config, budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                       budget_activation=spec.budget_activation)
    return result.config, result.cost


def largest_s(spec: StudySpec) -> int:
    """The largest number of members a candidate of the study can have (the base's where S is not searched)."""
    largest = _largest(spec, "S")
    return spec.base.S if largest is None else largest


def time_training_steps(trainer: Trainer) -> list[float]:
    """Seconds of each timed training step: up to :data:`TIMED_STEPS` after :data:`WARMUP_STEPS`.

    The warm-up pays for what only the first step does (allocations, kernel selection), which
    an epoch of many steps does not repeat.  Timing stops early once :data:`TIMING_SECONDS` are
    spent: a step of seconds is timed well by one or two, and a dry run of a large budget must
    stay within seconds.
    """
    trainer.train_steps(WARMUP_STEPS)
    timed = [_timed_step(trainer)]
    while len(timed) < TIMED_STEPS and sum(timed) < TIMING_SECONDS:
        timed.append(_timed_step(trainer))
    return timed


def _timed_step(trainer: Trainer) -> float:
    started = time.perf_counter()
    trainer.train_steps(1)
    return time.perf_counter() - started


def expected_epoch_fraction(spec: StudySpec) -> tuple[float, str]:
    """The share of the unpruned epochs the study's pruner is expected to train, and where the figure comes from.

    Hyperband's is measured (:data:`HYPERBAND_MEASURED`, at the nearest trial count); the median
    and Pareto pruners' savings are not, so none is assumed.
    """
    if spec.pruner == "hyperband":
        trials = spec.n_trials or HYPERBAND_MEASURED[-1][0]
        measured_at, fraction = min(HYPERBAND_MEASURED, key=lambda item: abs(item[0] - trials))
        return fraction, (f"Hyperband trains about {fraction:.0%} of the epochs (median of 100 replayed "
                          f"{measured_at}-trial studies; the documentation's search benchmarks)")
    if spec.pruner == "median":
        return 1.0, "the median pruner's saving is not measured, so none is assumed"
    if spec.pruner == "pareto":
        return 1.0, pareto_plan(spec)
    return 1.0, "no pruning"


def pareto_plan(spec: StudySpec) -> str:
    """What the Pareto pruner stops, and where: the plan's words for it (its saving is not measured)."""
    epochs = rungs(spec.max_epochs)
    if not epochs:
        return f"the Pareto pruner has no epoch to compare at before the last ({spec.max_epochs}): no pruning"
    where = ", ".join(map(str, epochs))
    return (f"the Pareto pruner stops, after epoch{'s' if len(epochs) > 1 else ''} {where}, candidates outside "
            f"the best 1/{REDUCTION_FACTOR} by Pareto rank on "
            f"({', '.join(spec.objectives)}) among those that reached the epoch (baselines never); "
            "its saving is not measured, so none is assumed")


def format_duration(seconds: float) -> str:
    """``0.42 -> '420 ms'``, ``75 -> '1.2 min'``, ``5400 -> '1.5 h'``: the unit a person reads at a glance."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class StudyProgress:
    """An epoch hook that puts the running trial's epoch and the study's ETA on its progress bar.

    The ETA is the epochs left (the running trial's, then ``epochs`` for each trial still to
    start, times the pruner's expected share) at the mean epoch time seen so far: a trials-per-
    second rate, tqdm's own, says nothing until a whole trial has finished.
    """

    def __init__(self, bar: tqdm, spec: StudySpec, then: Callable[[int, EpochMetrics], None] | None = None) -> None:
        self.bar = bar
        self.epochs = spec.max_epochs
        self.fraction, _ = expected_epoch_fraction(spec)
        self.then = then
        self._seconds = 0.0
        self._count = 0

    def __call__(self, trial_number: int, metrics: EpochMetrics) -> None:
        self._seconds += metrics.seconds
        self._count += 1
        left = self.epochs - metrics.epoch
        if self.bar.total is not None:
            left += max(self.bar.total - self.bar.n - 1, 0) * self.epochs * self.fraction
        eta = format_duration(left * self._seconds / self._count)
        self.bar.set_postfix_str(f"trial {trial_number} epoch {metrics.epoch}/{self.epochs}, ETA {eta}")
        if self.then is not None:
            self.then(trial_number, metrics)
