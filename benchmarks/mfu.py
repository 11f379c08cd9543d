"""Model FLOP utilisation of a co-training step: the FLOP/s the step achieves over the device's peak.

Run:  python benchmarks/mfu.py [--device auto|cpu|cuda] [--peak-tflops T] [--steps N] [--warmup N]

For the cases of ``benchmarks/cotrain_step.py`` (WRN-16-8 by S=4, ResNet-110 by S=2, 32x32 inputs
of 100 classes, batch 128) and each way (undivided, S sequential, S fused), the FLOPs of one
training step (forward and backward) are counted by torch's own
:class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, 2 FLOPs a
multiply-add; the element-wise ops and the optimiser step are left out, as MFU counts them), and
the step is timed as ``cotrain_step.py`` times it (bf16 autocast and channels_last on CUDA).
The fused way does the arithmetic of the sequential way (the same members, packed into grouped
convolutions), so it is given the sequential way's FLOPs: torch's counter (2.14) counts a grouped
convolution's weight gradient as if the convolution were dense, G times too many FLOPs, which
would inflate the packed ensemble's MFU.  Achieved FLOP/s = FLOPs / median step seconds; MFU =
achieved / peak.  The peak is the dense
bf16 peak of the device, taken by name from :data:`PEAK_BF16_TFLOPS` or given by
``--peak-tflops``; without either (the CPU) MFU is not printed, the achieved FLOP/s are.

The co-trained members are small networks; small convolutions do not fill a large GPU, so their
MFU is far below a large transformer's.  What the table shows is how much packing (fused)
recovers of what running small members one after another (sequential) leaves idle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cotrain_step import DEFAULT_STEPS, build, parse_cases, step_time  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak from the table (the first name found in ``device_name``), else None."""
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name.lower() in device_name.lower():
            return peak
    return None


def step_flops(ensemble: torch.nn.Module, batch_size: int, device: torch.device) -> int:
    """FLOPs of one forward and backward of ``ensemble`` on a batch, as the timed step runs it."""
    S = ensemble.num_members
    views = torch.randn(S, batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 100, (batch_size,), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = sum(F.cross_entropy(logits.float(), labels) for logits in ensemble(views))
        loss.backward()
    ensemble.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (default: from the table by name)")
    parser.add_argument("--steps", type=int, help="measured steps (default: 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cases", help="comma-separated ARCH:S (default: wrn16_8:4,resnet110:2)")
    options = parser.parse_args()

    name = "cuda" if options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available()) else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    device = torch.device(name)
    cases = parse_cases(options.cases)
    steps = options.steps if options.steps is not None else DEFAULT_STEPS[name][0]
    warmup = options.warmup if options.warmup is not None else DEFAULT_STEPS[name][1]
    hardware = torch.cuda.get_device_name(device) if name == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak = options.peak_tflops if options.peak_tflops is not None else (
        peak_tflops(hardware) if name == "cuda" else None)
    peak_text = f"peak {peak:g} TFLOP/s dense bf16" if peak else "peak unknown (pass --peak-tflops): no MFU"
    print(f"device: {hardware}; {peak_text}; batch {options.batch_size}, 3x32x32, 100 classes; "
          f"median of {steps} steps after {warmup} warm-up")
    print(f"{'network':<12}{'S':>3}{'way':>12}{'GFLOP/step':>12}{'step':>10}{'TFLOP/s':>10}{'MFU':>8}")
    for arch, S in cases:
        flops = 0
        for label, members, mode in (("undivided", 1, "sequential"), ("sequential", S, "sequential"),
                                     ("fused", S, "fused")):
            ensemble = build(arch, members, mode, device)
            if mode == "sequential":  # fused: the sequential way's arithmetic (see the module's docstring)
                flops = step_flops(ensemble, options.batch_size, device)
            seconds = step_time(ensemble, options.batch_size, steps, warmup, device)
            achieved = flops / seconds / 1e12
            mfu = f"{achieved / peak:>7.1%}" if peak else f"{'-':>7}"
            print(f"{arch:<12}{S if members > 1 else 1:>3}{label:>12}{flops / 1e9:>12.1f}{seconds * 1000:>8.1f}ms"
                  f"{achieved:>10.3g} {mfu}", flush=True)
            del ensemble


if __name__ == "__main__":
    main()
