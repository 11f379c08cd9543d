"""Does co-training pay off on real images?  Ensemble vs its own members, lambda_cot 0 vs 0.5.

Run (about 15 minutes on 2 CPU cores with the defaults):
    python benchmarks/cotrain_accuracy.py
    python benchmarks/cotrain_accuracy.py --epochs 30 --seeds 0,1 --lambdas 0,0.5 --arch resnet20 -S 2 --threads 1

Trains ``--arch`` divided into S co-trained networks on the real CIFAR-10 subset
(``../shared/data/cifar10-subset.npz``: 5,085 training and 1,017 test images) once per
lambda_cot and seed, and prints the test accuracy of the ensemble (mean of logits), of each
member, and the ensemble's gain over the mean of its own members.  Test accuracy on 1,017
images moves by about +-2.5 points between seeds (DESIGN.md): read single-seed gaps with care.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.data import prepare_data
from splitsearch.train.loop import Trainer, resolve_device

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("-S", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lambdas", default="0,0.5")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (1 is steadier on a busy machine)")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    if not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")

    device = resolve_device(options.device)
    print(f"{options.arch} S={options.S}, {options.epochs} epochs, {options.data.name}, {device}")
    print(f"{'lambda_cot':>10}{'seed':>6}{'ensemble':>10}{'members':>18}{'member mean':>13}{'gain':>8}{'time':>8}")
    for lambda_cot in (float(value) for value in options.lambdas.split(",")):
        for seed in (int(value) for value in options.seeds.split(",")):
            config = SplitConfig(
                arch=options.arch, S=options.S, lambda_cot=lambda_cot, dataset=f"npz:{options.data}",
                train=TrainConfig(epochs=options.epochs, batch_size=128, seed=seed),
            )
            result = Trainer(config, prepare_data(config.dataset, config.train, device), device,
                             progress=False).fit()
            members = result.test_member_accuracies
            mean_member = statistics.mean(members)
            print(f"{lambda_cot:>10g}{seed:>6}{result.test_accuracy:>10.2%}"
                  f"{' '.join(f'{m:.2%}' for m in members):>18}{mean_member:>13.2%}"
                  f"{(result.test_accuracy - mean_member) * 100:>+7.2f}p{result.wall_seconds:>7.0f}s", flush=True)


if __name__ == "__main__":
    main()
