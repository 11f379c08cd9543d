"""Tables of trainings recorded by ``trainer_vs_reference.py --out``: mean +- sd per side, paired differences.

Run:
    python benchmarks/ablation_table.py benchmarks/gpu_results/2026-11-30-h200/*.jsonl --base authors
    python benchmarks/ablation_table.py runs.jsonl --base reference

A paired difference compares two sides on the same seeds (the same initial weights and batch
order on splitsearch's sides), so it is far less noisy than the difference of two means: it is
printed as mean +- standard error over the seeds both sides have, with the count.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import resultfiles


def load(paths: list[Path]) -> dict[tuple[str, int], dict[int, float]]:
    """``(side, S) -> {seed: test accuracy in points}``; a later file's run of the same key wins."""
    runs: dict[tuple[str, int], dict[int, float]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                run = json.loads(line)
                runs.setdefault((run["side"], run["S"]), {})[run["seed"]] = 100 * run["test_accuracy"]
    return runs


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} +- {sd:4.2f} (n={len(values)})"


def paired(side: dict[int, float], base: dict[int, float]) -> str:
    seeds = sorted(set(side) & set(base))
    if len(seeds) < 2:
        return ""
    differences = [side[seed] - base[seed] for seed in seeds]
    error = statistics.stdev(differences) / len(differences) ** 0.5
    return f"{statistics.mean(differences):+6.2f} +- {error:4.2f} (n={len(seeds)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSON-lines files written by trainer_vs_reference.py --out")
    parser.add_argument("--base", default="authors", help="the side every other side is paired with")
    parser.add_argument("--save", metavar="NAME", help="also write the table as result file NAME "
                        "(benchmarks/resultfiles.py), on the machine that ran the trainings")
    options = parser.parse_args()
    runs = load(options.files)
    print(f"{'S':>2}  {'side':<20}  {'test accuracy, %':>24}  {'paired with ' + options.base:>26}")
    rows = []
    for S in sorted({S for _, S in runs}):
        base = runs.get((options.base, S), {})
        for (side, size), values in sorted(runs.items()):
            if size == S:
                difference = paired(values, base) if side != options.base else ""
                print(f"{S:>2}  {side:<20}  {mean_sd(list(values.values())):>24}  {difference:>26}")
                rows.append({"S": S, "side": side, "test accuracy, %": mean_sd(list(values.values())).strip(),
                             f"paired with {options.base}, points": difference.strip()})
    if options.save:
        resultfiles.save(options.save, rows, notes="Trainings: " + ", ".join(map(str, options.files)))


if __name__ == "__main__":
    main()
