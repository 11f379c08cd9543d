"""Inference latency of a candidate as it would be deployed: the median time of one forward pass.

Parameters and MACs are counted, but how long a prediction takes depends on the device, its
threads and how the S members run (one after another, or packed into one network), which no
count can tell: so it is measured, on the device the study runs on, before the candidate trains
(its weights do not change the time).  Timing uses ``torch.utils.benchmark.Timer``, which
synchronises CUDA around each measurement and reports the median and the interquartile range;
a few warm-up passes run first (allocator, cuDNN's choice of kernels, lazy initialisation), and
the measuring stops once the spread is small or a time limit is reached, so a slow candidate
costs a bounded time.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig
from splitsearch.cost.figures import Latency
from splitsearch.ensemble import (
    FusedEnsemble,
    SequentialEnsemble,
    combine_logits,
    make_ensemble,
)

DEFAULT_BATCH_SIZE = 1
WARMUP_PASSES = 3
# adaptive_autorange stops when IQR / median falls under THRESHOLD, after at least MIN_SECONDS
# and at most MAX_SECONDS of measuring (a pass slower than MAX_SECONDS is still timed a few times).
THRESHOLD = 0.1
MIN_SECONDS = 0.1
MAX_SECONDS = 1.0


@dataclass(frozen=True)
class Timing:
    """Seconds of one call: the median and the interquartile range, over ``runs`` timed calls."""

    median: float
    iqr: float
    runs: int


def time_call(run: Callable[[], object], warmup: int = WARMUP_PASSES, min_seconds: float = MIN_SECONDS,
              max_seconds: float = MAX_SECONDS) -> Timing:
    """Median and spread of ``run()`` after ``warmup`` calls, measured with all of torch's threads.

    ``Timer`` times blocks of calls (as many per block as make its own overhead negligible) and
    reports the median and IQR of the per-call time of each block; it would time with one thread
    unless told, where a deployed model uses them all.
    """
    for _ in range(warmup):
        run()
    timer = _timer_class()(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    measurement = timer.adaptive_autorange(threshold=THRESHOLD, min_run_time=min_seconds, max_run_time=max_seconds)
    return Timing(median=measurement.median, iqr=measurement.iqr,
                  runs=len(measurement.raw_times) * measurement.number_per_run)


def measure_latency(config: SplitConfig, device: torch.device | str = "cpu", mode: str = "auto",
                    batch_size: int = DEFAULT_BATCH_SIZE, processes: int = 1) -> Latency:
    """The forward latency of ``config``'s ensemble prediction, as a trial of the search would run it.

    What is timed: the members in evaluation mode under ``torch.inference_mode`` (with the
    bfloat16 autocast of evaluation on CUDA), each given the same ``batch_size`` images, and
    their logits combined by ``config.train.combine``.  ``mode`` (``auto``, ``fused``,
    ``sequential``) decides how the members run, as in training; a semantic split (groups > 1)
    runs its cut members one after another, as it trains.  With ``processes`` > 1
    (member-parallel, one process per share of the members) one process's share is timed: the
    gathering of the logits between processes is not.

    Raises:
        FusionError: ``mode`` is ``fused`` and the architecture cannot be packed.
    """
    device = torch.device(device)
    share = config.S // processes
    if config.groups > 1 or processes > 1:
        ensemble = SequentialEnsemble(build_networks(config, device=device)[:share])
    else:
        with warnings.catch_warnings():  # "not fused" is told by the training of the same candidate
            warnings.simplefilter("ignore")
            ensemble = make_ensemble(config, mode=mode, device=device)
    ensemble.eval()
    images = torch.randn(batch_size, *config.input_info().input_shape, device=device)
    views = images.unsqueeze(0).expand(share, *images.shape).contiguous()

    def forward() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=device.type == "cuda"):
            return combine_logits(ensemble(views).float(), config.train.combine)

    timing = time_call(forward)
    kind = "fused" if isinstance(ensemble, FusedEnsemble) else "sequential"
    where = f"{kind} on {device.type}"
    if processes > 1:
        where += f", {share} of {config.S} members (one of {processes} processes; gather not timed)"
    return Latency(seconds=timing.median, iqr_seconds=timing.iqr, batch_size=batch_size, runs=timing.runs,
                   execution=where)


def _timer_class() -> type:
    """``torch.utils.benchmark.Timer``, imported when a latency is measured.

    Importing it imports ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found" on a
    machine with a CUDA compiler and no GPU: a line about compiling extensions that a study's
    output has no use for, so that logger is quietened for the import.
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer
