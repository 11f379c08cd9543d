"""How long the command line takes to answer: ``--help`` without torch, and the dry run's plan.

Run:  python benchmarks/cli_startup.py [--repeats 5] [--skip-dry-run]

Issue 22 asks for ``splitsearch --help`` and ``splitsearch run --help`` in well under a second and
``splitsearch run --budget-params 36M --dry-run`` in under 30 s.  Each command is run as a user
runs it, a fresh process through the ``splitsearch`` entry point, ``--repeats`` times; the
median wall time is printed beside two references measured in the same run: the bare
interpreter (``python -c pass``, the floor) and ``python -c "import torch"`` (what every command
would pay if the command line imported torch first).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import resultfiles

HELP_TARGET_SECONDS = 1.0
DRY_RUN_TARGET_SECONDS = 30.0


def wall_seconds(command: list[str], repeats: int, cwd: str | None = None) -> float:
    """Median wall-clock seconds of ``command`` as a fresh process (it must succeed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command; the median is printed")
    parser.add_argument("--skip-dry-run", action="store_true", help="time --help only (the dry run trains a few steps)")
    args = parser.parse_args()
    entry = shutil.which("splitsearch")
    if entry is None:
        sys.exit("cli_startup.py: no splitsearch on the PATH; install with pip install -e .")

    bare = wall_seconds([sys.executable, "-c", "pass"], args.repeats)
    torch_import = wall_seconds([sys.executable, "-c", "import torch"], args.repeats)
    print(f"references: python -c pass {bare:.2f} s, python -c 'import torch' {torch_import:.2f} s "
          f"(median of {args.repeats})")
    rows = [{"command": "python -c pass", "seconds": round(bare, 2), "target (s)": None, "target": None},
            {"command": "python -c 'import torch'", "seconds": round(torch_import, 2), "target (s)": None,
             "target": None}]
    for command in (["--help"], ["run", "--help"], ["train", "--help"]):
        seconds = wall_seconds([entry, *command], args.repeats)
        verdict = "met" if seconds < HELP_TARGET_SECONDS else "NOT met"
        print(f"splitsearch {' '.join(command):<12} {seconds:5.2f} s  ({seconds / torch_import:.2f}x import torch; "
              f"target < {HELP_TARGET_SECONDS:.0f} s: {verdict})")
        rows.append({"command": f"splitsearch {' '.join(command)}", "seconds": round(seconds, 2),
                     "target (s)": HELP_TARGET_SECONDS, "target": verdict})
    if not args.skip_dry_run:
        with tempfile.TemporaryDirectory() as folder:  # the dry run stores nothing; a fresh folder shows it
            seconds = wall_seconds([entry, "run", "--budget-params", "36M", "--dry-run"], 1, cwd=folder)
        verdict = "met" if seconds < DRY_RUN_TARGET_SECONDS else "NOT met"
        print(f"splitsearch run --budget-params 36M --dry-run  {seconds:5.1f} s  "
              f"(target < {DRY_RUN_TARGET_SECONDS:.0f} s: {verdict})")
        rows.append({"command": "splitsearch run --budget-params 36M --dry-run", "seconds": round(seconds, 1),
                     "target (s)": DRY_RUN_TARGET_SECONDS, "target": verdict})
    resultfiles.save("cli_startup", rows, notes=f"Median wall time of {args.repeats} fresh processes "
                     "(the dry run: one), each started as a user starts it.")


if __name__ == "__main__":
    main()
