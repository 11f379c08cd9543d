"""Latency of one batch through the S members: undivided vs one after another vs packed vs one process each.

Run (a few minutes on 2 CPU cores):
    python benchmarks/inference_latency.py
    python benchmarks/inference_latency.py --arch wrn16_4 --batches 1,100 --repeats 50

Seed 004 (Fig. 2 right, Fig. 6) measures the inference latency of its divided networks with one
member per device.  This does the same on this machine's CPU for ResNet-20 on 32x32 inputs, S=2:

* ``undivided``: the S=1 network, one process with every core's thread;
* ``sequential``: the two members one after another, one process with every core's thread;
* ``packed``: the two members packed into one network, one process with every core's thread;
* ``parallel``: one process per member with cores/2 threads each (a torch.distributed group over
  gloo): both run their member on the same batch, the logits are all-gathered and averaged.

The single-process ways are timed by :func:`splitsearch.latency.measure_latency`, what a search's
``--budget-latency`` and latency objective measure (eval mode, ``torch.inference_mode``, the median
of ``torch.utils.benchmark.Timer``'s measurements after 3 warm-up passes).  The parallel way needs
its processes synchronised by a barrier before each pass, which that function does not do, so it
is the median over ``--repeats`` passes after 5 warm-up passes, each preceded by a barrier.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

WARMUP = 5


def time_forward(run, repeats: int, barrier=None) -> float:  # noqa: ANN001
    """Median seconds of ``run()`` over ``repeats`` calls after the warm-up."""
    times = []
    for index in range(WARMUP + repeats):
        if barrier is not None:
            barrier()
        start = time.perf_counter()
        run()
        if index >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def single_process(arch: str, batch: int) -> dict[str, float]:
    """Seconds of one pass of each single-process way, as the search measures a candidate's latency."""
    from splitsearch.config import SplitConfig
    from splitsearch.latency import measure_latency

    torch.set_num_threads(os.cpu_count() or 1)
    return {way: measure_latency(SplitConfig(arch=arch, S=S, dataset="cifar10"), "cpu", mode, batch).seconds
            for way, S, mode in (("undivided", 1, "sequential"), ("sequential", 2, "sequential"),
                                 ("packed", 2, "fused"))}


def parallel_rank(arch: str, batch: int, repeats: int) -> float | None:
    """One member per rank on the same batch, logits gathered and averaged; rank 0's median seconds."""
    import torch.distributed as dist

    from splitsearch.config import SplitConfig
    from splitsearch.ensemble import make_ensemble
    from splitsearch.train.losses import combine_logits
    from splitsearch.train.parallel import MemberGroup

    config = SplitConfig(arch=arch, S=2, dataset="cifar10")
    group = MemberGroup.from_process_group(config.S)
    member = make_ensemble(config, mode="sequential", members=group.own).eval()
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32)  # the same batch on every rank
    with torch.no_grad():
        seconds = time_forward(lambda: combine_logits(group.gather(member(images.unsqueeze(0)))), repeats,
                               barrier=dist.barrier)
    return seconds if group.is_main else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batches", default="1,100", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes of the parallel way")
    options = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ranks import this module by name
    from splitsearch.train.launch import launch

    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}; {options.arch} on 32x32 inputs, S=2 vs S=1, eval mode; {cores} cores: one "
          f"process x {cores} threads, or 2 processes x {max(1, cores // 2)}; median of Timer's measurements "
          f"(one process) or of {options.repeats} passes (parallel)")
    print(f"{'batch':>6}{'undivided':>12}{'sequential':>12}{'packed':>10}{'parallel':>10}{'par/undiv':>11}"
          f"{'par/seq':>9}")
    for batch in (int(value) for value in options.batches.split(",")):
        latencies = single_process(options.arch, batch)
        latencies["parallel"] = launch(2, parallel_rank, "cpu", options.arch, batch, options.repeats)
        print(f"{batch:>6}" + "".join(f"{latencies[way] * 1000:>{width}.1f}ms" for way, width in
                                      (("undivided", 10), ("sequential", 10), ("packed", 8), ("parallel", 8)))
              + f"{latencies['parallel'] / latencies['undivided']:>10.2f}x"
              + f"{latencies['parallel'] / latencies['sequential']:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
