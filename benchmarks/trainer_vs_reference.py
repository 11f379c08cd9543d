"""Does ``splitsearch train`` train as well as a careful practitioner's loop?  Same networks and data, side by side.

Run (on 2 CPU cores, two trainings at a time, one thread each):
    python benchmarks/trainer_vs_reference.py                        # S=1,2,4 x seeds 0,1,2, both sides
    python benchmarks/trainer_vs_reference.py -S 2 --sides authors,recipe,reference --seeds 0,1,2,3,4,5
    python benchmarks/trainer_vs_reference.py --ablation -S 2 --device cuda --jobs 8   # one change at a time
    python benchmarks/trainer_vs_reference.py -S 2 --set cot_warmup_fraction=0          # try a change

For every S, seed and side it trains ``--arch`` on the whole training split of the real CIFAR-10
subset and tests the ensemble on its 1,017 test images.  The sides:

* ``splitsearch``: :class:`~splitsearch.train.loop.Trainer` with every training setting at its
  default (``val_fraction: 0``, batch 128), changed only by ``--set``;
* ``reference``: the loop of ``benchmarks/reference_loop.py`` (OneCycleLR with momentum
  cycling, mean-colour padding, co-training from the first step, no decay on BatchNorm);
* the ablation: the trainer with the settings of :data:`ABLATION`, each one difference between
  the authors' recipe and the reference's, taken one at a time in both directions.

It prints each run as it ends (and appends it to ``--out`` as a JSON line), then per S the mean
and standard deviation over seeds of every side and its difference to the reference.  The
acceptance line: splitsearch's mean at least the reference's mean minus 1 point, for every S.
"""

from __future__ import annotations

import argparse
import json
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

# The settings the trainer's schedule, co-training warm-up and padding can take, as the
# divide-and-co-train authors use them (Zhao et al. 2020) and as the reference loop does.
AUTHORS = {"lr_schedule": "warmup_cosine", "lr_warmup_fraction": 0.02, "cycle_momentum": False,
           "cot_warmup_fraction": 0.1333, "crop_fill": "zero"}
RECIPE = {"lr_schedule": "onecycle", "lr_warmup_fraction": 0.15, "cycle_momentum": True,
          "cot_warmup_fraction": 0.0, "crop_fill": "mean"}
ONE_CYCLE = {"lr_schedule": "onecycle", "lr_warmup_fraction": 0.15}
ABLATION: dict[str, dict] = {
    "authors": AUTHORS,
    "warmup15": {**AUTHORS, "lr_warmup_fraction": 0.15},
    "onecycle": {**AUTHORS, **ONE_CYCLE},
    "onecycle-momentum": {**AUTHORS, **ONE_CYCLE, "cycle_momentum": True},
    "no-cot-warmup": {**AUTHORS, "cot_warmup_fraction": 0.0},
    "mean-fill": {**AUTHORS, "crop_fill": "mean"},
    "recipe": RECIPE,
    "recipe-no-momentum": {**RECIPE, "cycle_momentum": False},
    "recipe-cosine": {**RECIPE, "lr_schedule": "warmup_cosine", "cycle_momentum": False},
    "recipe-cot-warmup": {**RECIPE, "cot_warmup_fraction": 0.1333},
    "recipe-zero-fill": {**RECIPE, "crop_fill": "zero"},
}
REFERENCES = ("reference", "reference-cycled")
SIDES = ("splitsearch", *REFERENCES, *ABLATION)


def _init_worker(threads: int) -> None:
    # Trainings share the cores: a fixed thread count each is steadier than all fighting over all.
    torch.set_num_threads(threads)


def train_one(side: str, arch: str, S: int, seed: int, epochs: int, data: str, device: str,
              overrides: dict, width_mult: float = 1.0) -> dict:
    """One training of ``side``; its test accuracy, member accuracies and seconds."""
    if side in REFERENCES:
        from reference_loop import train_reference

        from splitsearch.config import SplitConfig

        cycled = side == "reference-cycled"
        result = train_reference(SplitConfig(arch=arch, S=S, width_mult=width_mult, dataset=f"npz:{data}"),
                                 Path(data), epochs, seed, device=device, cycle_momentum=cycled)
        return {"test_accuracy": result.test_accuracy, "members": result.member_accuracies,
                "seconds": result.seconds, "settings": f"reference_loop.py, cycle_momentum={cycled}"}

    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    settings = {**(ABLATION[side] if side in ABLATION else {}), **overrides}
    train = TrainConfig(**{"epochs": epochs, "batch_size": 128, "seed": seed, "val_fraction": 0.0, **settings})
    config = SplitConfig(arch=arch, S=S, width_mult=width_mult, dataset=f"npz:{data}", train=train)
    result = Trainer(config, prepare_data(config.dataset, config.train, device), device, progress=False).fit()
    return {"test_accuracy": result.test_accuracy, "members": result.test_member_accuracies,
            "seconds": result.wall_seconds, "settings": settings}


def _parse_set(values: list[str]) -> dict:
    overrides = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator:
            raise SystemExit(f"--set takes key=value (a train setting), got {value!r}")
        overrides[key] = yaml.safe_load(text)
    return overrides


def _parse_sides(text: str, ablation: bool) -> list[str]:
    sides = list(ABLATION) + ["reference"] if ablation else [side.strip() for side in text.split(",")]
    unknown = [side for side in sides if side not in SIDES]
    if unknown:
        raise SystemExit(f"unknown side {unknown[0]!r}; use any of: {', '.join(SIDES)}")
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("-S", default="1,2,4", help="comma-separated S values")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width-mult", type=float, default=1.0, help="every channel count times this, after division")
    parser.add_argument("--sides", default="splitsearch,reference", help=f"comma-separated, of: {', '.join(SIDES)}")
    parser.add_argument("--ablation", action="store_true", help="every side of the ablation and the reference")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on both sides there)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train setting for splitsearch's sides (repeatable)")
    parser.add_argument("--out", type=Path, help="append every run to this file as a JSON line")
    options = parser.parse_args()
    if not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")
    overrides = _parse_set(options.set)
    S_values = [int(value) for value in options.S.split(",")]
    seeds = [int(value) for value in options.seeds.split(",")]
    sides = _parse_sides(options.sides, options.ablation)

    cuda = options.device.startswith("cuda")
    hardware = torch.cuda.get_device_name() if cuda else f"{options.threads} thread(s) a run"
    print(f"torch {torch.__version__}; {options.arch} x{options.width_mult:g}, {options.epochs} epochs, batch 128, "
          f"whole training split of "
          f"{options.data.name}; test accuracy; device {options.device} ({hardware}), {options.jobs} at once; "
          f"settings changed on splitsearch's sides: {overrides or 'none'}", flush=True)
    started = time.perf_counter()
    results: dict[tuple[str, int], list[float]] = {}
    context = get_context("spawn")
    with ProcessPoolExecutor(options.jobs, mp_context=context, initializer=_init_worker,
                             initargs=(options.threads,)) as pool:
        futures = {pool.submit(train_one, side, options.arch, S, seed, options.epochs, str(options.data),
                               options.device, overrides, options.width_mult): (side, S, seed)
                   for S in S_values for seed in seeds for side in sides}
        for future in as_completed(futures):
            side, S, seed = futures[future]
            run = future.result()
            results.setdefault((side, S), []).append(run["test_accuracy"])
            print(f"  {side:<20} S={S} seed={seed}: {run['test_accuracy']:.2%} ({run['seconds']:.0f} s)", flush=True)
            if options.out:
                with options.out.open("a") as file:
                    file.write(json.dumps({"side": side, "S": S, "seed": seed, "arch": options.arch,
                                           "width_mult": options.width_mult, "epochs": options.epochs,
                                           "device": options.device, **run}) + "\n")
    print_summary(results, S_values, sides, options.seeds)
    print(f"wall time {(time.perf_counter() - started) / 60:.1f} min")


def print_summary(results: dict[tuple[str, int], list[float]], S_values: list[int], sides: list[str],
                  seeds: str) -> None:
    """Per S and side: mean +- sd over seeds and the difference to the reference; the verdicts."""
    print(f"\n{'S':>2}  {'side':<20}  {'test accuracy':>22}  {'vs reference':>12}")
    for S in S_values:
        reference = results.get(("reference", S))
        for side in sides:
            values = results.get((side, S), [])
            difference = ""
            if values and reference and side != "reference":
                gap = statistics.mean(values) - statistics.mean(reference)
                verdict = "ok" if gap >= -ACCEPTED_GAP else "BEHIND"
                difference = f"{gap * 100:+.2f}p" + (f"  {verdict}" if side == "splitsearch" else "")
            print(f"{S:>2}  {side:<20}  {_mean_sd(values):>22}  {difference:>12}")
    print(f"(mean +- sd over seeds {seeds}; ok = splitsearch at least the reference minus "
          f"{ACCEPTED_GAP * 100:g} point)")
    for side in sides:
        one, two = results.get((side, 1)), results.get((side, 2))
        if one and two:
            gain = statistics.mean(two) - statistics.mean(one)
            print(f"S=2 minus S=1, {side}: {gain * 100:+.2f} points")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} +- {sd * 100:.2f} (n={len(values)})"


if __name__ == "__main__":
    main()
