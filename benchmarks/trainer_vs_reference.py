"""Does ``splitsearch train`` train as well as a textbook loop?  Same networks, same data, side by side.

Run (about 50 minutes on 2 CPU cores with the defaults: 12 trainings, two at a time):
    python benchmarks/trainer_vs_reference.py
    python benchmarks/trainer_vs_reference.py -S 1,2 --seeds 0,1,2 --epochs 10 --jobs 2
    python benchmarks/trainer_vs_reference.py -S 2 --seeds 0,1 --set cot_warmup_fraction=0   # try a change

For every S and seed it trains ``--arch`` on the whole training split of the real CIFAR-10
subset twice: with splitsearch's :class:`~splitsearch.train.loop.Trainer` (``val_fraction: 0``,
every other setting at its default, or as ``--set`` says) and with the plain loop of
``benchmarks/plain_loop.py``.  It prints each run's test accuracy (1,017 images) and, per S, the
mean and standard deviation over seeds of both sides and their difference.  The acceptance line
is: splitsearch's mean at least the plain loop's mean minus 1 point, for every S.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
ACCEPTED_GAP = 0.01


def _one_thread() -> None:
    # Two trainings share two cores: one thread each is steadier than two fighting over both.
    torch.set_num_threads(1)


def train_ours(arch: str, S: int, seed: int, epochs: int, data: str, overrides: dict) -> tuple[float, float]:
    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    train = TrainConfig(**{"epochs": epochs, "batch_size": 128, "seed": seed, "val_fraction": 0.0, **overrides})
    config = SplitConfig(arch=arch, S=S, dataset=f"npz:{data}", train=train)
    result = Trainer(config, prepare_data(config.dataset, config.train), "cpu", progress=False).fit()
    return result.test_accuracy, result.wall_seconds


def train_reference(arch: str, S: int, seed: int, epochs: int, data: str, schedule: str) -> tuple[float, float]:
    from plain_loop import train_plain

    from splitsearch.config import SplitConfig

    result = train_plain(SplitConfig(arch=arch, S=S, dataset=f"npz:{data}"), Path(data), epochs, seed,
                         schedule=schedule)
    return result.test_accuracy, result.seconds


def _parse_set(values: list[str]) -> dict:
    overrides = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator:
            raise SystemExit(f"--set takes key=value (a train setting), got {value!r}")
        overrides[key] = yaml.safe_load(text)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("-S", default="1,2", help="comma-separated S values")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one thread each")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train setting for splitsearch's side only (repeatable)")
    parser.add_argument("--only", choices=["ours", "reference"], help="train one side only")
    parser.add_argument("--reference-schedule", choices=["cosine", "onecycle"], default="cosine",
                        help="the plain loop's learning-rate schedule (see plain_loop.py)")
    options = parser.parse_args()
    if not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")
    overrides = _parse_set(options.set)
    S_values = [int(value) for value in options.S.split(",")]
    seeds = [int(value) for value in options.seeds.split(",")]
    sides = [options.only] if options.only else ["ours", "reference"]

    print(f"torch {torch.__version__}; {options.arch}, {options.epochs} epochs, batch 128, whole training split of "
          f"{options.data.name}; test accuracy; splitsearch settings changed: {overrides or 'none'}; plain loop "
          f"schedule: {options.reference_schedule}", flush=True)
    started = time.perf_counter()
    results: dict[tuple[str, int], list[float]] = {}
    with ProcessPoolExecutor(options.jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        futures = {}
        for S in S_values:
            for seed in seeds:
                data = str(options.data)
                if "ours" in sides:
                    futures[pool.submit(train_ours, options.arch, S, seed, options.epochs, data, overrides)] = (
                        "splitsearch", S, seed)
                if "reference" in sides:
                    futures[pool.submit(train_reference, options.arch, S, seed, options.epochs, data,
                                        options.reference_schedule)] = ("plain loop", S, seed)
        for future in as_completed(futures):
            side, S, seed = futures[future]
            accuracy, seconds = future.result()
            results.setdefault((side, S), []).append(accuracy)
            print(f"  {side:<12} S={S} seed={seed}: {accuracy:.2%} ({seconds:.0f} s)", flush=True)

    print(f"\n{'S':>2}  {'splitsearch train':>20}  {'plain loop':>20}  {'difference':>10}  verdict")
    for S in S_values:
        row = {side: results.get((side, S), []) for side in ("splitsearch", "plain loop")}
        cells = [_mean_sd(row[side]) for side in ("splitsearch", "plain loop")]
        if all(row.values()):
            difference = statistics.mean(row["splitsearch"]) - statistics.mean(row["plain loop"])
            verdict = "ok" if difference >= -ACCEPTED_GAP else "BEHIND"
            print(f"{S:>2}  {cells[0]:>20}  {cells[1]:>20}  {difference * 100:>+9.2f}p  {verdict}")
        else:
            print(f"{S:>2}  {cells[0]:>20}  {cells[1]:>20}")
    print(f"(mean +- sd over seeds {options.seeds}; ok = splitsearch at least the plain loop minus "
          f"{ACCEPTED_GAP * 100:g} point); wall time {(time.perf_counter() - started) / 60:.1f} min")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} +- {sd * 100:.2f} (n={len(values)})"


if __name__ == "__main__":
    main()
