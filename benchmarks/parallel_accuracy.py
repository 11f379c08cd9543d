"""Does member-parallel training reach the accuracy of one process?  Seeds side by side.

Run (about 3 minutes on 2 CPU cores with the defaults):
    python benchmarks/parallel_accuracy.py
    python benchmarks/parallel_accuracy.py --groups 2        # a semantic split (SplitNet, Kim et al. 2017)
    python benchmarks/parallel_accuracy.py --dataset npz:../shared/data/cifar10-subset.npz --epochs 10

``splitsearch train`` of ResNet-20 S=2 (60K parameters, the quick-start's digits settings) for
each seed, once in one process and once with ``--nproc 2`` (one member per process, one thread
each, so both ways sum in the same order), then the validation accuracy of both side by side.
The joint loss reaches a member only through its own outputs, so the two are the same
algorithm and must agree within the seed spread; on the CPU they agree exactly.  With
``--groups G`` each member is a semantic split into G branches (deep split): every rank learns
its own member's class groups, cuts it and fine-tunes it.  Saved as the ``parallel_accuracy``
(``parallel_accuracy_semantic``) result file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from resultfiles import save

CONFIG = """\
arch: resnet20
S: 2
width_mult: {width}
dataset: {dataset}
groups: {groups}
{split_depth}train:
  epochs: {epochs}
  seed: {seed}
{digits}"""
DIGITS_SETTINGS = "  batch_size: 64\n  lr: 0.05\n  crop_padding: 1\n  hflip: false\n"


def train(folder: Path, dataset: str, epochs: int, seed: int, width: float, nproc: int, groups: int) -> float:
    """Validation accuracy of one ``splitsearch train`` run."""
    config = folder / f"seed{seed}.yaml"
    config.write_text(CONFIG.format(width=width, dataset=dataset, epochs=epochs, seed=seed, groups=groups,
                                    split_depth="split_depth: deep\n" if groups > 1 else "",
                                    digits=DIGITS_SETTINGS if dataset == "digits" else ""))
    out = folder / f"seed{seed}-nproc{nproc}"
    command = [sys.executable, "-m", "splitsearch.cli", "train", str(config), "--device", "cpu", "--quiet",
               "--nproc", str(nproc), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "metrics.json").read_text())["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--width", type=float, default=0.7, help="width multiplier (0.7: S=2 in about 60K params)")
    parser.add_argument("--groups", type=int, default=1, help="semantic groups G of each member (1: no split)")
    options = parser.parse_args()
    seeds = [int(seed) for seed in options.seeds.split(",")]
    semantic = f", semantic split G={options.groups} (deep)" if options.groups > 1 else ""
    print(f"resnet20 S=2 x{options.width}{semantic} on {options.dataset}, {options.epochs} epochs; validation accuracy")
    print(f"{'seed':>4}{'1 process':>12}{'2 processes':>13}")
    results: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="parallel-accuracy-") as folder:
        for seed in seeds:
            for nproc in (1, 2):
                results[nproc].append(train(Path(folder), options.dataset, options.epochs, seed, options.width, nproc,
                                            options.groups))
            print(f"{seed:>4}{results[1][-1]:>12.2%}{results[2][-1]:>13.2%}", flush=True)
    for nproc in (1, 2):
        spread = statistics.stdev(results[nproc]) if len(seeds) > 1 else 0.0
        mean = statistics.mean(results[nproc])
        print(f"{nproc} process(es): {mean:.2%} +- {100 * spread:.2f} over {len(seeds)} seeds")
    differences = [abs(a - b) for a, b in zip(results[1], results[2])]
    print(f"largest difference between the two ways, same seed: {100 * max(differences):.4f} points")
    rows = [{"seed": seed, "val_accuracy_1_process": one, "val_accuracy_2_processes": two,
             "difference_points": round(100 * (two - one), 4)}
            for seed, one, two in zip(seeds, results[1], results[2])]
    name = "parallel_accuracy_semantic" if options.groups > 1 else "parallel_accuracy"
    path = save(name, rows, notes=f"resnet20 S=2 x{options.width}{semantic} on {options.dataset}, "
                                  f"{options.epochs} epochs; 1-minute load average {os.getloadavg()[0]:.1f} "
                                  f"on {os.cpu_count()} CPUs at the end")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
