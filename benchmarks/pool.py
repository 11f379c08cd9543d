"""How long a member-parallel trial takes to start: a process group launched per trial vs ranks kept across trials.

Run (about 3 minutes on 2 busy CPU cores with the defaults):
    python benchmarks/pool.py
    python benchmarks/pool.py --device cuda --trials 6      # the GPU suite's call

The same candidates (ResNet-20 S=2 at the quick start's 60K parameters on digits, one epoch,
a seed each) train in two processes two ways, trial by trial side by side: launched as a new
process group per trial (torch's elastic launcher, ``splitsearch train --nproc``'s way and the
search's before the pool), and on one :class:`~splitsearch.train.pool.RankPool` kept across the
trials (``splitsearch run --nproc-per-trial``'s way).  Both report each epoch to this process
as a search worker's trials do.  A trial's *start* is the time from the call until rank 0's
first epoch report, less the epoch itself as rank 0 timed it: starting processes, importing
torch, joining the group, loading the data and building the members.  The pool pays that once,
in its first trial.  Saved as the ``pool`` result file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from resultfiles import save

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.train.epoch_channel import EpochServer
from splitsearch.train.launch import launch
from splitsearch.train.plan import TrainRequest, run_training_rank, train_on
from splitsearch.train.pool import RankPool

PROCESSES = 2


def quickstart_candidate(seed: int) -> SplitConfig:
    """The quick start's paper S=2 baseline on digits (width 0.7: about 60K parameters)."""
    return SplitConfig(arch="resnet20", S=2, width_mult=0.7, dataset="digits", lambda_cot=0.5, wd_rule="exp",
                       train=TrainConfig(epochs=1, seed=seed, batch_size=64, lr=0.05, crop_padding=1, hflip=False))


def timed_trial(run, request: TrainRequest) -> tuple[float, float]:
    """(start, whole trial) seconds of ``run(request, reporter)``; the start ends at rank 0's first report."""
    reports: list[tuple[float, float]] = []

    def first_epoch(metrics) -> bool:
        reports.append((time.perf_counter(), metrics.seconds))
        return False

    started = time.perf_counter()
    with EpochServer(first_epoch, on_write_error=print) as server:
        run(request, server.client())
    server.raise_failure()
    ended = time.perf_counter()
    reported, epoch_seconds = reports[0]
    return reported - epoch_seconds - started, ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (the ranks share the GPUs there are)")
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the ranks share the cores, as the search's do
    rows = []
    print(f"resnet20 S=2 (60K params) on digits, 1 epoch, {PROCESSES} processes, {options.device}; seconds")
    print(f"{'trial':>5}{'start, launched':>17}{'start, kept pool':>18}{'ratio':>8}"
          f"{'trial, launched':>17}{'trial, kept pool':>18}")
    with tempfile.TemporaryDirectory(prefix="pool-benchmark-") as folder, \
            RankPool(PROCESSES, options.device) as pool:
        for trial in range(options.trials):
            request = TrainRequest(config=quickstart_candidate(seed=trial), device=options.device, mode="sequential")
            launched = timed_trial(lambda req, client: launch(PROCESSES, run_training_rank, options.device, req, client),
                                   dataclasses.replace(request, out_dir=Path(folder) / f"launched-{trial}"))
            kept = timed_trial(lambda req, client: train_on(pool, PROCESSES, req, client),
                               dataclasses.replace(request, out_dir=Path(folder) / f"pool-{trial}"))
            rows.append({"trial": trial, "start_launched_s": round(launched[0], 3), "start_pool_s": round(kept[0], 3),
                         "start_ratio": round(launched[0] / kept[0], 1), "trial_launched_s": round(launched[1], 3),
                         "trial_pool_s": round(kept[1], 3)})
            print(f"{trial:>5}{launched[0]:>17.2f}{kept[0]:>18.2f}{launched[0] / kept[0]:>7.1f}x"
                  f"{launched[1]:>17.2f}{kept[1]:>18.2f}", flush=True)
    later = rows[1:]
    if later:
        launched_start = statistics.median(row["start_launched_s"] for row in later)
        pool_start = statistics.median(row["start_pool_s"] for row in later)
        print(f"after the first trial, median start: launched {launched_start:.2f} s, kept pool {pool_start:.2f} s "
              f"({launched_start / pool_start:.0f}x)")
    load = os.getloadavg()[0]
    path = save("pool", rows, notes=f"{options.device}; 1-minute load average {load:.1f} on {os.cpu_count()} CPUs "
                                    "at the end; the two ways alternate trial by trial")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
