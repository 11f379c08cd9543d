"""``--mode auto``: the execution mode of a candidate chosen by timing the viable ones.

Which mode trains a candidate fastest depends on the network, S, the batch and the machine
(packing measured slower than sequential on the CPU and faster on a GPU; a compiled step saves
a share of every step but costs a compile first), so ``auto`` measures rather than guesses.
Each mode measured (of :func:`viable_modes`) runs a few steps on a throwaway copy of the
candidate after one warm-up step; the warm-up's extra time over a timed step is a compiled mode's
compile cost.  The choice (:func:`decide`) is the fastest mode whose saving over the fastest eager
one, over the trial's steps, exceeds what compiling it still costs: nothing for a mode compiled
by the measurement itself (this process's Dynamo cache keeps it), its measured compile for a mode
whose timings come from the cache.

A trial shorter than :data:`MIN_MEASURED_TRIAL_STEPS` is not measured (measuring would cost a
noticeable share of it): it runs as ``auto`` did before measuring, packed on a GPU where the
members pack and sequential on the CPU.  Measuring a compiled mode costs its whole compile
whether or not it then wins, so compiled modes are measured only where they can pay (where the
trial's eager time times the expected saving exceeds the expected compile, :func:`compile_prior`),
and only the compiled variants of the fastest eager mode: a second compile measured doubles the
stake for a mode that, eager, is already the slower one.  The expectation is what compiling gave
the shapes measured before on this kind of device (the medians), or, before any,
:data:`EXPECTED_COMPILED_SAVING` and :data:`COMPILE_SECONDS_PRIOR`: a machine on which compiling
has not paid stops staking compiles on it.

The timings are cached per shape (architecture, S, widths, input, batch, device kind) in a
:class:`ModeCache` (the store, in a search), so a later candidate of the same shape does not
measure again; its choice is made again from the cached timings and its own number of steps.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from splitsearch.config import SplitConfig, compile_mode, ensemble_mode
from splitsearch.ensemble import can_fuse

MEASURED_STEPS = 3
# Measuring costs a warm-up and MEASURED_STEPS steps per mode; a trial of fewer steps than this
# trains as auto did before it measured (packed on a GPU where possible, sequential on the CPU).
MIN_MEASURED_TRIAL_STEPS = 200
# A compiled step saved 25 % of the eager one for ResNet-20 S=2 and 16 % for S=4 on an idle 2-core
# CPU (benchmarks/compile_step.py, 2026-12-07); a trial whose eager time this share of cannot pay a
# compile is not compiled.
EXPECTED_COMPILED_SAVING = 0.2
# Cold torch.compile of those steps took 49 s and 61 s on that CPU; where nothing was measured on
# this device kind yet, a compile is expected to cost this much.
COMPILE_SECONDS_PRIOR = 60.0


@dataclass(frozen=True)
class ModeTiming:
    """One mode's measured step time and compile cost (0 for an eager mode), in seconds."""

    mode: str
    step_seconds: float
    compile_seconds: float = 0.0

    @property
    def compiled(self) -> bool:
        return compile_mode(self.mode) is not None


@dataclass(frozen=True)
class CompilePrior:
    """What a compile is expected to save (a share of the fastest eager step) and to cost (seconds).

    ``shapes``: how many measured shapes it comes from (0: the constants measured for this code).
    """

    saving: float
    compile_seconds: float
    shapes: int = 0


@dataclass(frozen=True)
class ModeChoice:
    """The mode ``auto`` chose, the timings it chose from, and whether they came from the cache."""

    mode: str
    timings: tuple[ModeTiming, ...]
    cached: bool
    steps: int
    prior: CompilePrior | None = None  # what a compile was expected to give (None: compiled timings were cached)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "cached": self.cached, "steps": self.steps,
                "timings": [asdict(timing) for timing in self.timings],
                **({"prior": asdict(self.prior)} if self.prior is not None else {})}


class ModeCache(Protocol):
    """Where measured timings are kept per shape (:class:`splitsearch.store.Store` is one)."""

    def mode_timings(self, shape: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The timings measured before for ``shape`` (:func:`shape_key`), None if none."""
        ...

    def record_mode_timings(self, shape: dict[str, Any], timings: list[dict[str, Any]]) -> None:
        """Keep ``timings`` (``ModeTiming`` as dicts) for ``shape``."""
        ...

    def device_mode_timings(self, device_kind: str) -> list[list[dict[str, Any]]]:
        """The timings of every shape measured on ``device_kind`` (:func:`device_kind`)."""
        ...


def compile_prior(measured: Sequence[Sequence[ModeTiming]]) -> CompilePrior:
    """The median saving and compile of the best compiled mode of each shape in ``measured`` that has one."""
    savings, compiles = [], []
    for timings in measured:
        eager = [timing.step_seconds for timing in timings if not timing.compiled]
        compiled = [timing for timing in timings if timing.compiled]
        if eager and compiled:
            best = min(compiled, key=lambda timing: timing.step_seconds)
            savings.append(1 - best.step_seconds / min(eager))
            compiles.append(best.compile_seconds)
    if not savings:
        return CompilePrior(EXPECTED_COMPILED_SAVING, COMPILE_SECONDS_PRIOR)
    return CompilePrior(statistics.median(savings), statistics.median(compiles), len(savings))


def device_kind(device: torch.device) -> str:
    """``cpu`` or the GPU's name: timings hold for that kind of device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def shape_key(config: SplitConfig, device: torch.device) -> dict[str, Any]:
    """What a step's speed depends on: architecture, S, widths, input, batch and device kind."""
    widths = f"width {config.width_mult:g}, blocks {list(config.block_factors)}, groups {config.groups}"
    if config.groups > 1:
        widths += f" cut {config.split_depth}"
    return {"arch": config.arch, "S": config.S, "widths": widths, "input": f"{config.dataset} crop {config.crop}",
            "batch_size": config.train.batch_size, "device_kind": device_kind(device)}


def viable_modes(config: SplitConfig, device: torch.device) -> list[str]:
    """The modes that can train ``config`` on ``device`` in one process, eager ones first."""
    eager = ["sequential"]
    if config.S > 1 and config.groups == 1 and can_fuse(config.arch):
        eager.append("fused")
    prefixes = ["compiled"] + (["graphed"] if device.type == "cuda" else [])
    return eager + [f"{prefix}-{mode}" for prefix in prefixes for mode in eager]


def measure_mode(run_steps: Callable[[int], None], mode: str,
                 timer: Callable[[], float] = time.perf_counter) -> ModeTiming:
    """Time one warm-up step and :data:`MEASURED_STEPS` steps of ``run_steps`` (a throwaway trainer's).

    The step time is the median (a shared machine slows one step in a few); a compiled mode's
    compile cost is what its warm-up took beyond a step.
    """
    started = timer()
    run_steps(1)
    first = timer() - started
    times = []
    for _ in range(MEASURED_STEPS):
        started = timer()
        run_steps(1)
        times.append(timer() - started)
    step = statistics.median(times)
    return ModeTiming(mode, step, max(first - step, 0.0) if compile_mode(mode) is not None else 0.0)


def decide(timings: Sequence[ModeTiming], steps: int, compiled_here: bool = False) -> str:
    """The fastest mode whose saving over the fastest eager mode, over ``steps``, exceeds its compile cost.

    ``compiled_here``: the compiled modes among ``timings`` were just compiled in this process
    (measured, not cached), so training in one of them compiles nothing more.
    """
    eager = min((timing for timing in timings if not timing.compiled), key=lambda timing: timing.step_seconds)
    paying = [timing for timing in timings if timing.compile_seconds == 0 or compiled_here
              or (eager.step_seconds - timing.step_seconds) * steps > timing.compile_seconds]
    return min(paying, key=lambda timing: timing.step_seconds).mode


def choose_mode(config: SplitConfig, device: torch.device, steps: int, measure: Callable[[str], ModeTiming | None],
                cache: ModeCache | None = None) -> ModeChoice:
    """The mode to train ``config`` for ``steps`` steps on ``device``, from cached timings or measured ones.

    ``measure(mode)`` times a mode (:func:`measure_mode` on a throwaway trainer), or returns None
    where the mode turns out not to run this candidate (members that do not pack).  Cached timings
    without compiled modes (measured for a shorter trial) get them measured once a trial is long
    enough for a compile to pay.
    """
    shape = shape_key(config, device)
    stored = cache.mode_timings(shape) if cache is not None else None
    modes = viable_modes(config, device)
    timings = ([ModeTiming(**timing) for timing in stored] if stored
               else _measured(measure, [mode for mode in modes if compile_mode(mode) is None]))
    measured, compiled_here, prior = not stored, False, None
    if not any(timing.compiled for timing in timings):  # cached compiled timings need no expectation
        fastest = min(timings, key=lambda timing: timing.step_seconds)
        history = cache.device_mode_timings(shape["device_kind"]) if cache is not None else []
        prior = compile_prior([[ModeTiming(**timing) for timing in timings] for timings in history])
        if fastest.step_seconds * steps * prior.saving > prior.compile_seconds:
            timings += _measured(measure, [mode for mode in modes if compile_mode(mode) is not None
                                           and ensemble_mode(mode) == fastest.mode])
            measured = compiled_here = True
    if measured and cache is not None:
        cache.record_mode_timings(shape, [asdict(timing) for timing in timings])
    return ModeChoice(decide(timings, steps, compiled_here), tuple(timings), cached=not measured, steps=steps,
                      prior=prior)


def _measured(measure: Callable[[str], ModeTiming | None], modes: list[str]) -> list[ModeTiming]:
    return [timing for timing in map(measure, modes) if timing is not None]
