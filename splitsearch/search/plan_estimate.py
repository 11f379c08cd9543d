"""Know the cost before paying it: what ``splitsearch run`` will train, and about how long it will take.

Before the first trial, ``run`` prints the base candidate's size after fitting the budget, the
measured time of a few training steps and from them the time of an epoch and of the whole
study (``run --dry-run`` prints only that, and stores nothing).  A budget far beyond what the
dataset can support gets a one-line warning, since a 36M-parameter network for 1,437 digits
trains for an hour to learn nothing a 60K one would not.  While the study runs,
:class:`StudyProgress` puts the running trial's epoch and an ETA on its progress bar.

The time of a step is measured, not derived from MACs: grouped convolutions, S small members and
the machine's thread count make MACs a poor clock.  It is measured on one candidate only, so a
dry run of a large budget stays within seconds: the one with the study's largest S (fitted to
the budget like every candidate), since at a fixed budget more and smaller members run fewer
MACs per second, so the estimate leans to the long side rather than the short (at the quick
start's 60K on a 2-core CPU, one thread: 80 ms a step for S=4 against 27 ms for S=1).
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
from splitsearch.search.execution import ExecutionOptions
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
class RunPlan:
    """What a study will train and the measured figures its time estimate is made from.

    Attributes:
        base, base_cost: the base candidate after fitting the budget, and its cost.
        timed: the candidate whose steps were timed: the study's largest S (:func:`largest_s`), fitted.
        step_times: the seconds of each timed training step after the warm-up (:func:`time_training_steps`).
        steps_per_epoch, val_batches: the batches of an epoch's training and validation.
        epochs: the most epochs a candidate trains.
        n_trials: the study's trials (None: it runs until its timeout).
        epoch_fraction, fraction_source: the share of epochs the pruner is expected to train, and why.
        train_images: the dataset's training images (None where unknown without loading).
    """

    base: SplitConfig
    base_cost: CandidateCost
    timed: SplitConfig
    step_times: tuple[float, ...]
    steps_per_epoch: int
    val_batches: int
    epochs: int
    n_trials: int | None
    epoch_fraction: float
    fraction_source: str
    train_images: int | None

    @property
    def step_seconds(self) -> float:
        """The median timed step: on a machine shared with other work one step in a few can take much longer."""
        return statistics.median(self.step_times)

    @property
    def epoch_seconds(self) -> float:
        return self.step_seconds * (self.steps_per_epoch + EVAL_STEP_FRACTION * self.val_batches)

    @property
    def unpruned_seconds(self) -> float | None:
        """Every trial trained to its last epoch; None without ``n_trials``."""
        return None if self.n_trials is None else self.n_trials * self.epochs * self.epoch_seconds

    def lines(self) -> list[str]:
        """The plan in a few lines, in human units."""
        return [self._size_line(), self._timing_line(), self._study_line()]

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

    def _timing_line(self) -> str:
        return (f"plan: {format_duration(self.step_seconds)} a training step (median of {len(self.step_times)} after "
                f"{WARMUP_STEPS} warm-up, S={self.timed.S} candidate: the study's largest S, the slowest per step), "
                f"{self.steps_per_epoch} steps + {self.val_batches} validation batches an epoch: "
                f"about {format_duration(self.epoch_seconds)} an epoch")

    def _study_line(self) -> str:
        if self.unpruned_seconds is None:
            return (f"plan: about {format_duration(self.epochs * self.epoch_seconds)} a trial of {self.epochs} epochs; "
                    "no --n-trials, so the study runs until its --timeout")
        expected = self.unpruned_seconds * self.epoch_fraction
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
    timed, _ = fitted(spec, spec.base.replace(S=largest_s(spec)))
    loaded = (data or execution.data_cache()).get(timed.dataset, timed.train, timed.crop)
    trainer = Trainer(timed, loaded, execution.device, mode=execution.mode, progress=False)
    fraction, source = expected_epoch_fraction(spec)
    return RunPlan(base, base_cost, timed, tuple(time_training_steps(trainer)), len(loaded.train), len(loaded.val),
                   spec.max_epochs, spec.n_trials, fraction, source, dataset_info(spec.base.dataset).train_images)


def fitted(spec: StudySpec, config: SplitConfig) -> tuple[SplitConfig, CandidateCost]:
    """``config`` as a trial would train it: fitted to the budget in ``fit`` mode, as it is otherwise."""
    if spec.budget_mode != "fit" or not spec.has_budget:
        return config, count_config(config)
    result = fit_width(config, budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                       budget_activation=spec.budget_activation)
    return result.config, result.cost


def largest_s(spec: StudySpec) -> int:
    """The largest number of members a candidate of the study can have (the base's where S is not searched)."""
    if "S" in spec.space.fixed:
        return int(spec.space.fixed["S"])
    for param in spec.space.params:
        if param.key == "S":
            return int(max(param.choices) if param.kind == "categorical" else param.high)
    return spec.base.S


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
    pruner's saving is not, so none is assumed.
    """
    if spec.pruner == "hyperband":
        trials = spec.n_trials or HYPERBAND_MEASURED[-1][0]
        measured_at, fraction = min(HYPERBAND_MEASURED, key=lambda item: abs(item[0] - trials))
        return fraction, (f"Hyperband trains about {fraction:.0%} of the epochs (median of 100 replayed "
                          f"{measured_at}-trial studies; the documentation's search benchmarks)")
    if spec.pruner == "median":
        return 1.0, "the median pruner's saving is not measured, so none is assumed"
    return 1.0, "no pruning"


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
