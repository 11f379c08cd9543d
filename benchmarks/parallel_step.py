"""Does member-parallel co-training make S=2 cost what the undivided network costs?  Epoch times side by side.

Run (about 10 minutes on 2 CPU cores with the defaults):
    python benchmarks/parallel_step.py
    python benchmarks/parallel_step.py --arch wrn16_4 --epochs 2 --rounds 3
    python benchmarks/parallel_step.py --device cuda --arch wrn16_8   # what benchmarks/gpu_suite.sh runs
    python benchmarks/parallel_step.py --dataset synthetic:640 --epochs 2 --rounds 1   # a check in seconds

ResNet-20 on the real CIFAR-10 subset (all 5,085 training images, batch 128: 39 steps an epoch),
trained by :class:`~splitsearch.train.loop.Trainer` exactly as ``splitsearch train`` does, four
ways, each on the machine's cores:

* ``undivided``: S=1, one process with every core's thread;
* ``sequential``: S=2, the members one after another in one process with every core's thread;
* ``fused``: S=2, the members packed into one network, one process with every core's thread;
* ``parallel``: S=2, member-parallel, one process per member with cores/2 threads each (a
  torch.distributed group over gloo, the logits all-gathered every step).

With ``--device cuda`` every way trains on the GPU (bf16 autocast, channels_last, as the trainer
does on CUDA); ``parallel`` is then one process per member on its own GPU where there are two,
and two processes sharing the one GPU (over gloo) where there is one: two CUDA streams of work
from two processes, which the GPU time-slices unless MPS is running.  ``--dataset`` trains on
another dataset spec (``synthetic:N`` for a check that takes seconds).

Each way trains ``--epochs`` epochs per round, the first epoch of each run is dropped as warm-up,
and the rounds rotate the order of the ways so that a slower machine state does not always hit
the same one.  It prints the median seconds per epoch and per step of each way, and the ratios
parallel / undivided and parallel / sequential.  Aim: parallel within 1.10x of the undivided
network's step and faster than sequential.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
AIM = 1.10


def epoch_seconds(arch: str, S: int, mode: str, epochs: int, dataset: str, device: str,
                  members_parallel: bool = False) -> list[float] | None:
    """Seconds of each epoch of a training (rank 0's; None on the other ranks of a group)."""
    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.data import prepare_data
    from splitsearch.train.launch import rank_device
    from splitsearch.train.loop import Trainer
    from splitsearch.train.parallel import MemberGroup

    config = SplitConfig(arch=arch, S=S, dataset=dataset,
                         train=TrainConfig(epochs=epochs, batch_size=128, val_fraction=0.0))
    group = MemberGroup.from_process_group(S) if members_parallel else None
    trainer = Trainer(config, prepare_data(config.dataset, config.train), rank_device(device), mode=mode,
                      progress=False, group=group)
    result = trainer.fit(test=False)
    if group is not None and not group.is_main:
        return None
    return [metrics.seconds for metrics in result.history]


def parallel_epoch_seconds(arch: str, S: int, epochs: int, dataset: str, device: str) -> list[float] | None:
    return epoch_seconds(arch, S, "sequential", epochs, dataset, device, members_parallel=True)


def run_way(way: str, arch: str, epochs: int, dataset: str, device: str) -> list[float]:
    from splitsearch.train.launch import launch

    if way == "parallel":
        return launch(2, parallel_epoch_seconds, device, arch, 2, epochs, dataset, device)
    torch.set_num_threads(os.cpu_count() or 1)
    S, mode = {"undivided": (1, "sequential"), "sequential": (2, "sequential"), "fused": (2, "fused")}[way]
    return epoch_seconds(arch, S, mode, epochs, dataset, device)


def steps_per_epoch(dataset: str) -> int:
    """Optimiser steps in one epoch of ``dataset`` at batch 128 (every training image, no validation split)."""
    from splitsearch.config import TrainConfig
    from splitsearch.data import prepare_data

    return len(prepare_data(dataset, TrainConfig(batch_size=128, val_fraction=0.0)).train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CIFAR-10 subset .npz")
    parser.add_argument("--dataset", help="a dataset spec instead of --data (synthetic:N: no file needed)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    if options.dataset is None and not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dataset = options.dataset or f"npz:{options.data}"
    steps = steps_per_epoch(dataset)
    if options.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of each run is warm-up")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ranks import this module by name
    ways = ["undivided", "sequential", "fused", "parallel"]
    cores = os.cpu_count() or 1
    if options.device == "cuda":
        gpus = torch.cuda.device_count()
        where = (f"{torch.cuda.get_device_name()}, bf16 autocast; parallel: 2 processes on "
                 + ("their own GPUs (nccl)" if gpus >= 2 else "the one GPU (gloo)"))
    else:
        where = f"{cores} cores: one process x {cores} threads, or 2 processes x {max(1, cores // 2)}"
    print(f"torch {torch.__version__}; {options.arch} S=2 vs S=1, batch 128 on {dataset} ({steps} steps an "
          f"epoch); {where}; {options.rounds} rounds x {options.epochs} epochs, first epoch of each run dropped",
          flush=True)
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    started = time.perf_counter()
    for round_index in range(options.rounds):
        order = ways[round_index % len(ways):] + ways[:round_index % len(ways)]
        for way in order:
            epochs = run_way(way, options.arch, options.epochs, dataset, options.device)
            seconds[way] += epochs[1:]
            print(f"  round {round_index + 1} {way:<10} " + ", ".join(f"{value:.1f}s" for value in epochs),
                  flush=True)
    medians = {way: statistics.median(values) for way, values in seconds.items()}
    print(f"\n{'way':<12}{'epoch':>9}{'step':>10}{'vs undivided':>14}")
    for way in ways:
        ratio = medians[way] / medians["undivided"]
        print(f"{way:<12}{medians[way]:>8.2f}s{medians[way] / steps * 1000:>8.1f}ms{ratio:>13.2f}x")
    to_undivided = medians["parallel"] / medians["undivided"]
    to_sequential = medians["parallel"] / medians["sequential"]
    met = to_undivided <= AIM and to_sequential < 1
    print(f"parallel / undivided {to_undivided:.2f}x (aim <= {AIM}), parallel / sequential {to_sequential:.2f}x "
          f"(aim < 1): {'met' if met else 'NOT met'}; wall time {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
