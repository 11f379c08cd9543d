"""Does member-parallel training reach the accuracy of one process?  Seeds side by side.

Run (about 3 minutes on 2 CPU cores with the defaults):
    python benchmarks/parallel_accuracy.py
    python benchmarks/parallel_accuracy.py --dataset npz:../shared/data/cifar10-subset.npz --epochs 10

``splitsearch train`` of ResNet-20 S=2 (60K parameters, the quick-start's digits settings) for
each seed, once in one process and once with ``--nproc 2`` (one member per process, one thread
each, so both ways sum in the same order), then the validation accuracy of both side by side.
The joint loss reaches a member only through its own outputs, so the two are the same
algorithm and must agree within the seed spread; on the CPU they agree exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

CONFIG = """\
arch: resnet20
S: 2
width_mult: {width}
dataset: {dataset}
train:
  epochs: {epochs}
  seed: {seed}
{digits}"""
DIGITS_SETTINGS = "  batch_size: 64\n  lr: 0.05\n  crop_padding: 1\n  hflip: false\n"


def train(folder: Path, dataset: str, epochs: int, seed: int, width: float, nproc: int) -> float:
    """Validation accuracy of one ``splitsearch train`` run."""
    config = folder / f"seed{seed}.yaml"
    config.write_text(CONFIG.format(width=width, dataset=dataset, epochs=epochs, seed=seed,
                                    digits=DIGITS_SETTINGS if dataset == "digits" else ""))
    out = folder / f"seed{seed}-nproc{nproc}"
    command = ["splitsearch", "train", str(config), "--device", "cpu", "--quiet", "--nproc", str(nproc),
               "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((out / "metrics.json").read_text())["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--width", type=float, default=0.7, help="width multiplier (0.7: S=2 in about 60K params)")
    options = parser.parse_args()
    seeds = [int(seed) for seed in options.seeds.split(",")]
    print(f"resnet20 S=2 x{options.width} on {options.dataset}, {options.epochs} epochs; validation accuracy")
    print(f"{'seed':>4}{'1 process':>12}{'2 processes':>13}")
    results: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="parallel-accuracy-") as folder:
        for seed in seeds:
            for nproc in (1, 2):
                results[nproc].append(train(Path(folder), options.dataset, options.epochs, seed, options.width, nproc))
            print(f"{seed:>4}{results[1][-1]:>12.2%}{results[2][-1]:>13.2%}", flush=True)
    for nproc in (1, 2):
        spread = statistics.stdev(results[nproc]) if len(seeds) > 1 else 0.0
        mean = statistics.mean(results[nproc])
        print(f"{nproc} process(es): {mean:.2%} +- {100 * spread:.2f} over {len(seeds)} seeds")
    differences = [abs(a - b) for a, b in zip(results[1], results[2])]
    print(f"largest difference between the two ways, same seed: {100 * max(differences):.4f} points")


if __name__ == "__main__":
    main()
