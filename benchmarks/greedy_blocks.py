"""The greedy block-wise split (MalekHosseini et al. 2020) against TPE over the same space, on the same training budget.

Run (about 15 minutes on 2 CPU cores with the defaults):
    python benchmarks/greedy_blocks.py
    python benchmarks/greedy_blocks.py --width 0.25 --epochs 6 --finetune-epochs 2 --threshold 0.5

On the real CIFAR-10 subset (5,085 training images; validation: 10 % of them), a CIFAR VGG16-BN
at ``--width`` (the full VGG16 takes minutes an epoch on this CPU):

1. ``splitsearch run --strategy greedy-blocks``: the baseline trains ``--epochs``, every split
   candidate is fine-tuned ``--finetune-epochs`` from the network chosen so far, factors
   2, 4, 6, 8 per block, ``--threshold`` points;
2. a TPE study over the shipped ``blocks`` space (K_b in {1, 2, 4} per block, no pruning),
   trained from scratch for ``--epochs``, with as many trials as the greedy run's training
   epochs allow (its total epochs / ``--epochs``, rounded up).

It prints, for the greedy choice and for TPE's best trial: the factors, validation accuracy and
its drop against the greedy baseline, and the parameter, MAC and activation-memory reductions
(activation memory per image with the split blocks run branch by branch, as the block-wise split paper deploys
them).  Validation on 508 images has a standard error of about 2 points: far above the paper's
0.5-point threshold, so single decisions of the procedure are noise at this scale.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import optuna
import torch

from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.greedy import run_greedy_blocks
from splitsearch.search.record import StudyRecord, TrialRecord
from splitsearch.search.run import run_study
from splitsearch.search.study import load_study_spec
from splitsearch.units import format_bytes, format_count

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"


def study_settings(name: str, options: argparse.Namespace) -> dict:
    return {"name": name, "arch": "vgg16", "dataset": f"npz:{options.data}", "epochs": options.epochs,
            "base": {"width_mult": options.width, "train": {"batch_size": 128}}, "seed": 0}


def row(label: str, factors: list[int], accuracy: float, baseline_accuracy: float, config: SplitConfig,
        baseline: SplitConfig) -> str:
    cost, before = count_config(config), count_config(baseline)
    change = {name: getattr(cost, name) / getattr(before, name) - 1
              for name in ("params", "macs", "sequential_activation_bytes")}
    return (f"{label:<10}{','.join(map(str, factors)):<12}{accuracy:>8.2%}{100 * (baseline_accuracy - accuracy):>+8.2f}"
            f"{format_count(cost.params):>9}{change['params']:>+8.1%}{format_count(cost.macs):>9}{change['macs']:>+8.1%}"
            f"{format_bytes(cost.sequential_activation_bytes):>11}{change['sequential_activation_bytes']:>+8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--width", type=float, default=0.25, help="width_mult of VGG16")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.5)
    options = parser.parse_args()
    if not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(2)
    workdir = Path(tempfile.mkdtemp(prefix="greedy-blocks-"))
    storage = f"sqlite:///{workdir / 'studies.db'}"
    print(f"torch {torch.__version__}; vgg16 x{options.width} on {options.data.name}; greedy: baseline "
          f"{options.epochs} epochs, candidates fine-tuned {options.finetune_epochs}, threshold {options.threshold} "
          f"points; storage {storage}", flush=True)

    started = time.perf_counter()
    greedy_spec = load_study_spec(None, {**study_settings("greedy", options), "greedy": {
        "threshold": options.threshold, "finetune_epochs": options.finetune_epochs}})
    execution = ExecutionOptions(runs_dir=workdir / "runs")
    greedy, result = run_greedy_blocks(greedy_spec, storage, execution,
                                       on_step=lambda line: print("  " + line, flush=True))
    greedy_minutes = (time.perf_counter() - started) / 60
    trained_epochs = sum(trial.params["train.epochs"] for trial in greedy.trials)
    print(f"greedy: {len(greedy.trials)} networks, {trained_epochs} epochs in {greedy_minutes:.1f} min", flush=True)

    n_trials = math.ceil(trained_epochs / options.epochs)
    started = time.perf_counter()
    tpe_spec = load_study_spec(None, {**study_settings("tpe", options), "space": "blocks", "n_trials": n_trials,
                                      "pruner": "none", "baselines": False})
    tpe = run_study(tpe_spec, storage, execution, progress=False)
    tpe_minutes = (time.perf_counter() - started) / 60
    print(f"TPE over the blocks space: {n_trials} trials x {options.epochs} epochs in {tpe_minutes:.1f} min\n")

    summary = StudyRecord.from_study(greedy).greedy_result
    trials = greedy.get_trials(deepcopy=False)
    baseline = TrialRecord.from_trial(trials[summary.baseline_trial]).config
    chosen = TrialRecord.from_trial(trials[summary.trial]).config
    best = tpe.best_trial
    print(f"{'':<10}{'factors':<12}{'val acc':>8}{'drop':>8}{'params':>9}{'':>8}{'MACs':>9}{'':>8}"
          f"{'act/img':>11}{'':>8}")
    print(row("baseline", [1] * len(result.factors), result.baseline_accuracy, result.baseline_accuracy,
              baseline, baseline))
    print(row("greedy", list(result.factors), result.accuracy, result.baseline_accuracy, chosen, baseline))
    best_config = TrialRecord.from_trial(best).config
    print(row("TPE", list(best_config.block_factors), best.value, result.baseline_accuracy, best_config, baseline))
    print(f"\n(drop: points of validation accuracy below the greedy baseline; act/img: activation memory per "
          f"image, split blocks branch by branch; wall time {greedy_minutes + tpe_minutes:.1f} min)")


if __name__ == "__main__":
    main()
