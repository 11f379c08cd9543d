"""Every execution mode's co-training step side by side, with its model FLOP utilisation.

Run:  python benchmarks/modes_step.py [--device auto|cpu|cuda] [--cases wrn16_8:4,resnet110:2,wrn28_10:4]
                                      [--batch-size 128] [--steps N] [--warmup N] [--modes M,...]
                                      [--peak-tflops T]

For each ``ARCH:S`` (32x32 inputs of 100 classes), the training step of
:mod:`splitsearch.train.step` (forwards, CE + JS co-training loss, backward, SGD) in every mode:
the undivided network (S = 1) eager and compiled, and the S members ``sequential``, ``fused``,
``compiled-sequential``, ``compiled-fused`` and, on CUDA, ``graphed-sequential`` and
``graphed-fused`` (``torch.compile(mode="reduce-overhead")``: CUDA graphs).  On CUDA the step
runs under bf16 autocast with channels_last weights, as the trainer runs it.  Each row: the
first call's extra time (a compiled mode's compile), the median of ``--steps`` steps after
``--warmup``, the ratio to the fastest undivided step measured before it (:func:`run_order`
measures the undivided network eager and compiled first),
and the MFU: the step's FLOPs (forward and backward, counted by ``benchmarks/mfu.py``; every
mode of a case does the sequential way's arithmetic) over its time, over the device's dense bf16
peak.  Rows print as they are measured, so a run cut short keeps them.  Saved as the
``modes_step`` result file.

Untested on a GPU when written (no GPU was lent): the CUDA-graph rows in particular.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resultfiles  # noqa: E402
from cotrain_step import parse_cases  # noqa: E402
from mfu import peak_tflops, step_flops  # noqa: E402

from splitsearch.config import EXECUTION_MODES, SplitConfig, TrainConfig, compile_mode  # noqa: E402
from splitsearch.ensemble import make_ensemble  # noqa: E402
from splitsearch.train.optim import make_optimizer  # noqa: E402
from splitsearch.train.parallel import MemberGroup  # noqa: E402
from splitsearch.train.stage import PlainStage  # noqa: E402
from splitsearch.train.step import CotrainStep, step_optimizer_options  # noqa: E402

CASES = "wrn16_8:4,resnet110:2,wrn28_10:4"
DEFAULT_STEPS = {"cpu": (3, 1), "cuda": (20, 5)}  # (measured steps, warm-up steps after the first)


def make_step(arch: str, S: int, mode: str, batch_size: int, device: torch.device) -> CotrainStep:
    config = SplitConfig(arch=arch, S=S, dataset="cifar100", lambda_cot=0.5, train=TrainConfig(batch_size=batch_size))
    ensemble = make_ensemble(config, mode, device=device).train()
    if device.type == "cuda":
        ensemble = ensemble.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(ensemble, config.train, config.wd_rule, S,
                               step_optimizer_options(device, compile_mode(mode) is not None))
    return CotrainStep(ensemble, ensemble, MemberGroup.single(S), optimizer, PlainStage(config, device),
                       members=S, cotrain=S > 1, label_smoothing=0.0, autocast=device.type == "cuda",
                       compile_mode=compile_mode(mode))


def time_step(step: CotrainStep, S: int, batch_size: int, steps: int, warmup: int,
              device: torch.device) -> tuple[float, float]:
    """The first call's seconds beyond a step (a compile), and the median step after ``warmup`` more."""
    views = torch.randn(S, batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 100, (batch_size,), device=device)
    times = []
    for _ in range(1 + warmup + steps):
        _synchronize(device)
        started = time.perf_counter()
        step(views, labels, None, 1.0, 0.5)
        _synchronize(device)
        times.append(time.perf_counter() - started)
    median = statistics.median(times[1 + warmup:])
    return max(times[0] - median, 0.0), median


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def modes_of(device: torch.device, asked: str | None) -> list[str]:
    """The divided modes to run: every one this device runs, or those asked for."""
    available = [mode for mode in EXECUTION_MODES if mode != "auto"
                 and (device.type == "cuda" or compile_mode(mode) != "reduce-overhead")]
    if asked is None:
        return available
    modes = asked.split(",")
    unknown = [mode for mode in modes if mode not in available]
    if unknown:
        raise SystemExit(f"--modes: {', '.join(unknown)} cannot run here (on {device.type}: {', '.join(available)})")
    return modes


def run_order(S: int, modes: list[str]) -> list[tuple[int, str]]:
    """(members, mode) in the order measured: what the aims compare first, so a case cut short keeps it.

    The undivided step eager and at its fastest compiled (CUDA graphs on CUDA), then the divided
    modes packed before sequential and graphed before compiled, then the rest of the undivided ones.
    """
    undivided = [mode for mode in ("graphed-sequential", "compiled-sequential") if mode in modes][:1]
    first = [(1, "sequential")] + [(1, mode) for mode in undivided]
    order = ("fused", "graphed-fused", "compiled-fused", "sequential", "graphed-sequential", "compiled-sequential")
    divided = [(S, mode) for mode in order if mode in modes]
    rest = [(1, mode) for mode in ("graphed-sequential", "compiled-sequential")
            if mode in modes and mode not in undivided]
    return first + divided + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cases", default=CASES, help=f"comma-separated ARCH:S (default: {CASES})")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help="measured steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="warm-up steps after the first (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--modes", help="comma-separated divided modes (default: every one the device runs)")
    parser.add_argument("--case-seconds", type=float, default=float("inf"),
                        help="stop measuring a case's modes after this many seconds (the GPU suite: 75)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (default: from mfu.py's table)")
    options = parser.parse_args()

    name = "cuda" if options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available()) else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(name)
    modes = modes_of(device, options.modes)
    steps = options.steps if options.steps is not None else DEFAULT_STEPS[name][0]
    warmup = options.warmup if options.warmup is not None else DEFAULT_STEPS[name][1]
    hardware = torch.cuda.get_device_name(device) if name == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak = options.peak_tflops
    if peak is None and name == "cuda":
        peak = peak_tflops(hardware)
    precision = "bf16 autocast, channels_last" if name == "cuda" else "float32"
    print(f"device: {hardware}, {precision}; peak {peak or 'unknown'} TFLOP/s; batch {options.batch_size}, 3x32x32, "
          f"100 classes; median of {steps} steps after a first and {warmup} warm-up")
    print(f"{'network':<11}{'S':>3} {'mode':<20}{'compile':>9}{'step':>10}{'/undiv':>8}{'TFLOP/s':>9}{'MFU':>7}")
    rows = []
    for arch, S in parse_cases(options.cases):
        flops = {}
        for members in (1, S):  # the sequential way's arithmetic, which every mode of a case does
            flops[members] = step_flops(make_ensemble(SplitConfig(arch=arch, S=members, dataset="cifar100"),
                                                      "sequential", device=device).train(), options.batch_size, device)
        started, reference = time.perf_counter(), None
        for members, mode in run_order(S, modes):
            if time.perf_counter() - started > options.case_seconds:
                print(f"{arch:<11}{members:>3} {mode:<20} skipped: the case's {options.case_seconds:.0f} s are spent")
                rows.append({"network": arch, "S": members, "mode": mode, "failed": "skipped (time)"})
                continue
            try:
                compile_seconds, seconds = time_step(make_step(arch, members, mode, options.batch_size, device),
                                                     members, options.batch_size, steps, warmup, device)
            except Exception as error:  # noqa: BLE001 - a mode that fails is a row that says so, not the end
                print(f"{arch:<11}{members:>3} {mode:<20} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                rows.append({"network": arch, "S": members, "mode": mode, "failed": type(error).__name__})
                continue
            if members == 1:
                reference = min(seconds, reference or seconds)
            achieved = flops[members] / seconds / 1e12
            mfu = achieved / peak if peak else None
            print(f"{arch:<11}{members:>3} {mode:<20}{compile_seconds:>8.1f}s{seconds * 1000:>8.1f}ms"
                  f"{seconds / reference:>7.2f}x{achieved:>9.3g}{f'{mfu:.1%}' if mfu is not None else '-':>7}",
                  flush=True)
            rows.append({"network": arch, "S": members, "mode": mode, "compile (s)": round(compile_seconds, 1),
                         "step (ms)": round(seconds * 1000, 2), "step / undivided": round(seconds / reference, 2),
                         "TFLOP/s": round(achieved, 3), "MFU": None if mfu is None else round(mfu, 4)})
    resultfiles.save("modes_step", rows, notes=(
        f"{hardware}, {precision}; batch {options.batch_size}, 3x32x32, 100 classes; co-training step (CE + JS, "
        f"SGD) per mode, median of {steps} steps after a first and {warmup} warm-up; step / undivided: to the "
        "fastest undivided step measured before it; MFU over the dense bf16 peak of mfu.py's table."))


if __name__ == "__main__":
    main()
