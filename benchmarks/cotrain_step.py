"""Training-step time of co-training: the undivided network, S members one after another, S members packed.

Run:  python benchmarks/cotrain_step.py [--device auto|cpu|cuda] [--steps N] [--warmup N] [--batch-size 128]
                                        [--cases ARCH:S,...]

For WRN-16-8 divided by S = 4 and ResNet-110 (bottleneck) divided by S = 2, on 32x32 inputs of
100 classes, one training step is forward, loss (the sum of the members' cross-entropies; the
co-training term costs little beside the networks), backward and an SGD step.  The three ways
are timed in the same run: the undivided network (S = 1), the S members run one after another
(the authors' way, :class:`~splitsearch.ensemble.SequentialEnsemble`) and the S members packed
into one network (:class:`~splitsearch.ensemble.FusedEnsemble`).  Each time is the median of
``--steps`` steps after ``--warmup`` steps.  On CUDA the step runs under bf16 autocast with
channels_last weights, synchronising before each clock reading.

Target: the fused step within 1.15x of the undivided network's step, and faster than sequential.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import resultfiles
from splitsearch.config import SplitConfig
from splitsearch.ensemble import Ensemble, make_ensemble

CASES = (("wrn16_8", 4), ("resnet110", 2))
DATASET = "cifar100"  # 3x32x32 inputs, 100 classes
TARGET_RATIO = 1.15
# Steps on CPU are seconds long, so fewer of them: the whole CPU run stays within minutes.
DEFAULT_STEPS = {"cpu": (3, 1), "cuda": (30, 10)}  # (measured steps, warm-up steps)


def step_time(ensemble: Ensemble, batch_size: int, steps: int, warmup: int, device: torch.device) -> float:
    """Median seconds of one training step of ``ensemble`` on random data."""
    S = ensemble.num_members
    views = torch.randn(S, batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 100, (batch_size,), device=device)
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for index in range(warmup + steps):
        _synchronize(device)
        start = time.perf_counter()
        with autocast:
            logits = ensemble(views)
            loss = sum(F.cross_entropy(member_logits.float(), labels) for member_logits in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_cases(text: str | None) -> tuple[tuple[str, int], ...]:
    """``--cases`` (``ARCH:S,...``) as pairs; the default :data:`CASES` where not given."""
    if text is None:
        return CASES
    try:
        return tuple((arch, int(S)) for arch, S in (case.split(":") for case in text.split(",")))
    except ValueError:
        raise SystemExit(f"--cases: expected ARCH:S,... (e.g. resnet20:2), got {text!r}") from None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(arch: str, S: int, mode: str, device: torch.device) -> Ensemble:
    ensemble = make_ensemble(SplitConfig(arch=arch, S=S, dataset=DATASET), mode=mode, device=device).train()
    if device.type == "cuda":
        ensemble = ensemble.to(memory_format=torch.channels_last)
    return ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, help="measured steps (default: 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cases", help="comma-separated ARCH:S (default: wrn16_8:4,resnet110:2)")
    options = parser.parse_args()

    name = "cuda" if options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available()) else "cpu"
    device = torch.device(name)
    steps = options.steps if options.steps is not None else DEFAULT_STEPS[name][0]
    warmup = options.warmup if options.warmup is not None else DEFAULT_STEPS[name][1]
    hardware = torch.cuda.get_device_name(device) if name == "cuda" else f"{torch.get_num_threads()} threads"
    precision = "bf16 autocast, channels_last" if name == "cuda" else "float32"
    print(f"device: {name} ({hardware}), {precision}; batch {options.batch_size}, 3x32x32 inputs, 100 classes; "
          f"median of {steps} steps after {warmup} warm-up")
    print(f"{'network':<12}{'S':>3}{'undivided':>12}{'sequential':>12}{'fused':>10}"
          f"{'fused/undiv':>13}{'fused/seq':>11}  target")
    all_met = True
    rows = []
    for arch, S in parse_cases(options.cases):
        seconds = {}
        for label, members, mode in (("undivided", 1, "sequential"), ("sequential", S, "sequential"),
                                     ("fused", S, "fused")):
            ensemble = build(arch, members, mode, device)
            seconds[label] = step_time(ensemble, options.batch_size, steps, warmup, device)
            del ensemble
        to_undivided = seconds["fused"] / seconds["undivided"]
        to_sequential = seconds["fused"] / seconds["sequential"]
        met = to_undivided <= TARGET_RATIO and to_sequential < 1
        all_met &= met
        print(f"{arch:<12}{S:>3}{seconds['undivided']:>11.3f}s{seconds['sequential']:>11.3f}s"
              f"{seconds['fused']:>9.3f}s{to_undivided:>12.2f}x{to_sequential:>10.2f}x  {'met' if met else 'NOT met'}")
        rows.append({"network": arch, "S": S, **{f"{label} (s)": round(value, 4) for label, value in seconds.items()},
                     "fused / undivided": round(to_undivided, 2), "fused / sequential": round(to_sequential, 2),
                     "target": "met" if met else "NOT met"})
    print(f"target (fused within {TARGET_RATIO}x of the undivided network's step, and faster than sequential): "
          f"{'met' if all_met else 'NOT met'}")
    resultfiles.save("cotrain_step", rows, notes=f"{name} ({hardware}), {precision}; batch {options.batch_size}, "
                     f"3x32x32 inputs, 100 classes; median of {steps} steps after {warmup} warm-up. Target: the fused "
                     f"step within {TARGET_RATIO}x of the undivided network's step, and faster than sequential.")


if __name__ == "__main__":
    main()
