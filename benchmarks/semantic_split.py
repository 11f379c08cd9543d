"""The semantic split (SplitNet) on real images, beside the unsplit network with the same training.

Run (about 35 minutes on 2 CPU cores with the defaults: 6 trainings, two at a time):
    python benchmarks/semantic_split.py
    python benchmarks/semantic_split.py --arch resnet20 --groups 2 --depth shallow --epochs 15 --seeds 0,1,2
    python benchmarks/semantic_split.py --epochs 3 --seeds 0 --set assignment_lr_mult=1   # try a setting

For every seed it trains ``--arch`` on the real CIFAR-10 subset twice with splitsearch's
:class:`~splitsearch.train.loop.Trainer` and the same settings: once unsplit (``groups: 1``) and
once semantically split (``groups: G``: the first ``grouping_fraction`` of the epochs learn the
groups with the regularisers, then the network is cut and the rest fine-tune it).  Both hold out
the usual 10% validation split and report the test accuracy (1,017 images) once, at the end.

It prints, per seed, the learned class groups (by name) and checks them: disjoint, non-empty,
covering every class; the parameters of the split network as built by training, next to what
``count`` predicts for the config and to the unsplit network's; and the mean +- sd over seeds of
both sides' test accuracy and their difference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _one_thread() -> None:
    # Two trainings share two cores: one thread each is steadier than two fighting over both.
    torch.set_num_threads(1)


def train_one(arch: str, groups: int, depth: str, seed: int, epochs: int, data: str, overrides: dict) -> dict:
    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    config = SplitConfig(arch=arch, groups=groups, split_depth=depth if groups > 1 else None,
                         dataset=f"npz:{data}", train=TrainConfig(epochs=epochs, seed=seed, **overrides))
    trainer = Trainer(config, prepare_data(config.dataset, config.train), "cpu", progress=False)
    result = trainer.fit()
    member = trainer.ensemble.members[0]
    return {"groups": groups, "seed": seed, "test": result.test_accuracy, "val": result.val_accuracy,
            "seconds": result.wall_seconds, "params": sum(p.numel() for p in member.parameters()),
            "semantic": result.semantic,
            "val_by_epoch": [round(epoch.val_accuracy, 4) for epoch in result.history]}


def check_groups(class_groups: list[list[int]], num_classes: int) -> str:
    flat = [c for group in class_groups for c in group]
    problems = []
    if any(not group for group in class_groups):
        problems.append("an empty group")
    if len(flat) != len(set(flat)):
        problems.append("a class in two groups")
    if sorted(set(flat)) != list(range(num_classes)):
        problems.append("a class in no group")
    return "ok (disjoint, non-empty, every class once)" if not problems else "FAILED: " + ", ".join(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--depth", default="shallow")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train setting for both sides, e.g. assignment_lr_mult=1 (YAML value)")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}

    from splitsearch.config import SplitConfig
    from splitsearch.cost.counting import count_config

    dataset = f"npz:{args.data}"
    unsplit_count = count_config(SplitConfig(arch=args.arch, dataset=dataset)).params
    split_count = count_config(SplitConfig(arch=args.arch, groups=args.groups, split_depth=args.depth,
                                           dataset=dataset)).params
    started = time.perf_counter()
    jobs = [(args.arch, groups, args.depth, seed, args.epochs, args.data, overrides)
            for seed in seeds for groups in (1, args.groups)]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        results = list(pool.map(train_one, *zip(*jobs)))
    minutes = (time.perf_counter() - started) / 60

    print(f"{args.arch} on the CIFAR-10 subset, {args.epochs} epochs, seeds {seeds}; split: G={args.groups} "
          f"{args.depth} (groups learned in the first half, then cut and fine-tuned); {minutes:.1f} min"
          + (f"; settings {overrides}" if overrides else ""))
    print(f"parameters: unsplit {unsplit_count:,}; split predicted by count {split_count:,} "
          f"({split_count / unsplit_count - 1:+.1%})")
    for result in results:
        line = (f"  G={result['groups']} seed {result['seed']}: test {result['test']:.2%}  val {result['val']:.2%}  "
                f"params {result['params']:,}  {result['seconds'] / 60:.1f} min  val by epoch {result['val_by_epoch']}")
        print(line)
        if result["semantic"]:
            semantic = result["semantic"]
            groups = semantic["class_groups"][0]
            named = [[CIFAR10_NAMES[c] for c in group] for group in groups]
            print(f"      class groups {named}: {check_groups(groups, 10)}")
            print(f"      assignment confidence {semantic['assignment_confidence'][0]:.3f} (1/G at uniform), "
                  f"balanced = argmax for {semantic['argmax_agreement'][0]:.1%} of nodes; "
                  f"params as built {'==' if result['params'] == split_count else '!='} count's prediction")
    summary = {}
    for groups in (1, args.groups):
        tests = [r["test"] for r in results if r["groups"] == groups]
        summary[groups] = (statistics.mean(tests), statistics.stdev(tests) if len(tests) > 1 else 0.0)
        print(f"test accuracy G={groups}: {summary[groups][0]:.2%} +- {summary[groups][1]:.2%} (sd over seeds)")
    difference = summary[args.groups][0] - summary[1][0]
    print(f"split - unsplit: {difference * 100:+.2f} points, with {split_count / unsplit_count - 1:+.1%} parameters")


if __name__ == "__main__":
    main()
