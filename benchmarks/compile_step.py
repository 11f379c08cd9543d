"""The compiled co-training step against the eager one, what compiling costs, and ``--mode auto`` against eager.

Run:  python benchmarks/compile_step.py [--cases resnet20:2,resnet20:4] [--batch-size 128] [--steps 3]
                                        [--epochs 10] [--threads 1] [--data PATH] [--skip-steps | --skip-auto | --profile]
                                        [--save-auto NAME]

Every measurement runs on ``--threads`` threads (default 1, as the tests run: on a CPU shared
with other work, OpenMP threads spinning against other processes made a step many times slower,
and inductor compiles its kernels for the thread count it finds).

Three tables, measured side by side in one run on this machine:

1. **Step time.** For each ``ARCH:S`` (CIFAR-10-shaped inputs, batch 128), the co-training step of
   :mod:`splitsearch.train.step` (forwards, CE + JS loss, backward, SGD) eager (sequential) and
   compiled (``compiled-sequential``: ``torch.compile`` with fused SGD), the median of ``--steps``
   steps after a warm-up, and the ratio.
2. **Compile time.** Cold: the compiled step's first call beyond a step, in a fresh process with
   an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR`` set to a new folder).  Cached: the same in
   a second fresh process over the same folder, which is what inductor's on-disk caches (FX graph
   and autotuning caches) give a later candidate of the same shape in another worker.  In-process:
   a second step of the same shape compiled in the process that compiled the first (what a
   worker's next trial of the same shape pays, Dynamo reusing its graph).
3. **auto vs eager.** A candidate (ResNet-20 S=2 at width factor 1, the CIFAR-10 subset,
   ``--epochs``) trained with ``--mode sequential`` and with ``--mode auto`` (measurement and any
   compile included, from an empty inductor cache), wall time of ``Trainer.fit`` each.

``--profile`` instead prints and saves (``compile_step_profile``) where the eager step's time goes
(``torch.profiler``, self CPU time of 3 steps after a warm-up): the convolutions' share is what a
compile leaves to oneDNN, so it bounds the speed-up compiling the rest can give.

Each table is printed with its ratio and saved as a result file (``benchmarks/resultfiles.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import resultfiles
from splitsearch.config import SplitConfig, TrainConfig, compile_mode
from splitsearch.ensemble import make_ensemble
from splitsearch.train.optim import make_optimizer
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.stage import PlainStage
from splitsearch.train.step import CotrainStep, step_optimizer_options

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
CASES = (("resnet20", 2), ("resnet20", 4))
TARGET_SPEEDUP = 1.3
TARGET_CACHED_COMPILE = 10.0


def make_step(arch: str, S: int, mode: str, batch_size: int) -> CotrainStep:
    config = SplitConfig(arch=arch, S=S, dataset="cifar10", lambda_cot=0.5, train=TrainConfig(batch_size=batch_size))
    ensemble = make_ensemble(config, mode).train()
    optimizer = make_optimizer(ensemble, config.train, config.wd_rule, S,
                               step_optimizer_options(torch.device("cpu"), compile_mode(mode) is not None))
    return CotrainStep(ensemble, ensemble, MemberGroup.single(S), optimizer, PlainStage(config, torch.device("cpu")),
                       members=S, cotrain=True, label_smoothing=0.0, autocast=False, compile_mode=compile_mode(mode))


def timed_steps(step: CotrainStep, S: int, batch_size: int, steps: int) -> tuple[float, float]:
    """Seconds of the first call (with any compile) and the median of ``steps`` steps after it."""
    views = torch.randn(S, batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        step(views, labels, None, 1.0, 0.5)
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def child(arch: str, S: int, batch_size: int, steps: int) -> None:
    """One fresh process's measurements of one case, printed as JSON (the parent sets the cache folder)."""
    _, eager = timed_steps(make_step(arch, S, "sequential", batch_size), S, batch_size, steps)
    first, compiled = timed_steps(make_step(arch, S, "compiled-sequential", batch_size), S, batch_size, steps)
    again, _ = timed_steps(make_step(arch, S, "compiled-sequential", batch_size), S, batch_size, 1)
    print(json.dumps({"eager": eager, "compiled": compiled, "compile": max(first - compiled, 0.0),
                      "in_process_compile": max(again - compiled, 0.0)}))


def run_child(case: tuple[str, int], options: argparse.Namespace, cache: Path) -> dict[str, float]:
    environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    command = [sys.executable, __file__, "--child", f"{case[0]}:{case[1]}", "--batch-size", str(options.batch_size),
               "--steps", str(options.steps), "--threads", str(options.threads)]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        raise SystemExit(f"measuring {case[0]}:{case[1]} failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def step_tables(options: argparse.Namespace) -> list[dict]:
    print(f"{'network':<10}{'S':>3}{'eager':>10}{'compiled':>10}{'speed-up':>10}{'cold compile':>14}"
          f"{'cached':>9}{'in-process':>12}")
    rows = []
    for case in parse_cases(options.cases):
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            cold = run_child(case, options, Path(cache))
            cached = run_child(case, options, Path(cache))
        speedup = cold["eager"] / cold["compiled"]
        print(f"{case[0]:<10}{case[1]:>3}{cold['eager'] * 1000:>8.0f}ms{cold['compiled'] * 1000:>8.0f}ms"
              f"{speedup:>9.2f}x{cold['compile']:>13.1f}s{cached['compile']:>8.1f}s"
              f"{cold['in_process_compile']:>11.1f}s")
        rows.append({"network": case[0], "S": case[1], "eager step (s)": round(cold["eager"], 4),
                     "compiled step (s)": round(cold["compiled"], 4), "eager / compiled": round(speedup, 2),
                     "cold compile (s)": round(cold["compile"], 1), "cached compile (s)": round(cached["compile"], 1),
                     "in-process second compile (s)": round(cold["in_process_compile"], 1),
                     "second process: eager / compiled": round(cached["eager"] / cached["compiled"], 2)})
    print(f"aims: compiled at least {TARGET_SPEEDUP}x faster; a cached compile under {TARGET_CACHED_COMPILE:.0f} s")
    return rows


def auto_table(options: argparse.Namespace) -> list[dict]:
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    config = SplitConfig(arch="resnet20", S=2, dataset=f"npz:{options.data}", lambda_cot=0.5,
                         train=TrainConfig(epochs=options.epochs, batch_size=options.batch_size))
    data = prepare_data(config.dataset, config.train)
    rows, seconds = [], {}
    for mode in ("sequential", "auto"):
        started = time.perf_counter()
        trainer = Trainer(config, data, mode=mode, progress=False)
        result = trainer.fit(test=False)
        seconds[mode] = time.perf_counter() - started
        choice = trainer.mode_choice.to_dict() if trainer.mode_choice else None
        rows.append({"mode asked": mode, "mode trained": trainer.mode, "epochs": options.epochs,
                     "steps": trainer.total_steps, "wall (s)": round(seconds[mode], 1),
                     "val accuracy": round(result.history[-1].val_accuracy, 4), "auto's timings": json.dumps(choice)})
        print(f"--mode {mode:<11} trained as {trainer.mode:<20} {seconds[mode]:>8.1f}s "
              f"({trainer.total_steps} steps{'; ' + json.dumps(choice) if choice else ''})")
    print(f"auto / eager: {seconds['auto'] / seconds['sequential']:.2f}x (aim: at most 1.00x, compile included)")
    return rows


def profile_table(options: argparse.Namespace) -> list[dict]:
    """The share of the eager step's self CPU time in convolutions (forward, backward) and the rest."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    for arch, S in parse_cases(options.cases):
        step = make_step(arch, S, "sequential", options.batch_size)
        views, labels = torch.randn(S, options.batch_size, 3, 32, 32), torch.randint(0, 10, (options.batch_size,))
        step(views, labels, None, 1.0, 0.5)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(options.steps):
                step(views, labels, None, 1.0, 0.5)
        self_time = {event.key: event.self_cpu_time_total for event in profiler.key_averages()}
        total = sum(self_time.values())
        backward = sum(time for key, time in self_time.items() if key == "aten::convolution_backward")
        forward = sum(time for key, time in self_time.items() if "convolution" in key and "backward" not in key)
        share = (forward + backward) / total
        print(f"{arch} S={S}: convolutions {share:.0%} of the eager step (forward {forward / total:.0%}, "
              f"backward {backward / total:.0%}); a compile of the rest gives at most {1 / share:.2f}x")
        rows.append({"network": arch, "S": S, "convolution forward share": round(forward / total, 3),
                     "convolution backward share": round(backward / total, 3),
                     "bound on compiled speed-up": round(1 / share, 2)})
    return rows


def parse_cases(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return tuple((arch, int(S)) for arch, S in (case.split(":") for case in text.split(",")))
    except ValueError:
        raise SystemExit(f"--cases: expected ARCH:S,... (e.g. resnet20:2), got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(f"{arch}:{S}" for arch, S in CASES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="measured steps after the first")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the auto-vs-eager candidate")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CIFAR-10 subset .npz")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every measurement")
    parser.add_argument("--skip-auto", action="store_true", help="the step and compile tables only")
    parser.add_argument("--skip-steps", action="store_true", help="the auto-vs-eager table only")
    parser.add_argument("--profile", action="store_true", help="only where the eager step's time goes")
    parser.add_argument("--save-auto", default="compile_step_auto", help="the auto-vs-eager table's result file name")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    if options.child:
        [(arch, S)] = parse_cases(options.child)
        return child(arch, S, options.batch_size, options.steps)
    threads = torch.get_num_threads()
    print(f"cpu, {threads} threads, float32; batch {options.batch_size}, 3x32x32 inputs; "
          f"median of {options.steps} steps after the first")
    if options.profile:
        rows = profile_table(options)
        resultfiles.save("compile_step_profile", rows, notes=(
            f"cpu, {threads} threads; eager sequential co-training step, batch {options.batch_size}: self CPU time "
            f"of {options.steps} steps after a warm-up (torch.profiler); the bound is 1 / the convolutions' share."))
        return None
    if not options.skip_steps:
        rows = step_tables(options)
        resultfiles.save("compile_step", rows, notes=(
            f"cpu, {threads} threads; co-training step (CE + JS, SGD) eager sequential vs compiled-sequential "
            f"(torch.compile, fused SGD), batch {options.batch_size}, median of {options.steps} steps. Cold "
            "compile: fresh process, empty TORCHINDUCTOR_CACHE_DIR; cached: second fresh process over the same "
            "cache folder; in-process: a second step of the same shape in the first process."))
    if options.skip_auto:
        return None
    if not options.data.is_file():
        raise SystemExit(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz (or --skip-auto)")
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # auto's compile starts cold, as a first candidate's does
        rows = auto_table(options)
    resultfiles.save(options.save_auto, rows, notes=(
        f"ResNet-20 S=2 (width factor 1) on the CIFAR-10 subset, {options.epochs} epochs, batch "
        f"{options.batch_size}, cpu {threads} threads: Trainer.fit wall time with --mode sequential and --mode auto "
        "(auto's measurement and any compile included; inductor's cache empty at the start)."))
    return None


if __name__ == "__main__":
    main()
