"""How long counting one candidate takes (target: WRN-28-10, S=4, CIFAR-100 under 100 ms).

Run:  python benchmarks/count_speed.py [--arch wrn28_10] [-S 4] [--dataset cifar100] [--repeats 21]

Prints the median wall time of ``count_config`` after one warm-up call (imports and PyTorch's
first-call set-up are excluded, as "after import" in the target), and its ratio to the target.
"""

from __future__ import annotations

import argparse
import statistics
import time

import resultfiles
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config

TARGET_SECONDS = 0.100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="wrn28_10")
    parser.add_argument("-S", type=int, default=4)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--repeats", type=int, default=21)
    options = parser.parse_args()

    config = SplitConfig(arch=options.arch, S=options.S, dataset=options.dataset)
    cost = count_config(config)  # warm-up
    times = []
    for _ in range(options.repeats):
        start = time.perf_counter()
        count_config(config)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{options.arch} S={options.S} {options.dataset}: {cost.params:,} params, {cost.macs:,} MACs")
    print(f"count_config median over {options.repeats} runs: {median * 1e3:.1f} ms "
          f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
    verdict = "met" if median < TARGET_SECONDS else "NOT met"
    print(f"ratio to the {TARGET_SECONDS * 1e3:.0f} ms target: {median / TARGET_SECONDS:.2f}x -> target {verdict}")
    resultfiles.save("count_speed", [{
        "network": options.arch, "S": options.S, "dataset": options.dataset, "params": cost.params,
        "MACs": cost.macs, "median (ms)": round(median * 1e3, 1), "min (ms)": round(min(times) * 1e3, 1),
        "max (ms)": round(max(times) * 1e3, 1), "runs": options.repeats,
        "target (ms)": TARGET_SECONDS * 1e3, "target": verdict}])


if __name__ == "__main__":
    main()
