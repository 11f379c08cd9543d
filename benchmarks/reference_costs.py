"""Counted params / MACs of every seed 004 Table 2 row next to the paper's figure.

Run:  python benchmarks/reference_costs.py

Prints one row per (architecture, S) with the counted figures, the paper's, and the ratios.
"""

from __future__ import annotations

from splitsearch.config import SplitConfig
from splitsearch.cost import count_config
from splitsearch.reference import TABLE2_CIFAR100


def main() -> None:
    print(f"{'arch':<18}{'S':>2}{'params':>14}{'paper':>9}{'ratio':>8}{'MACs':>16}{'paper':>9}{'ratio':>8}")
    for row in TABLE2_CIFAR100:
        cost = count_config(SplitConfig(arch=row.arch, S=row.S, dataset="cifar100"))
        print(f"{row.arch:<18}{row.S:>2}{cost.params:>14,}{row.params / 1e6:>8.2f}M{cost.params / row.params:>8.3f}"
              f"{cost.macs:>16,}{row.macs / 1e9:>8.2f}G{cost.macs / row.macs:>8.3f}")


if __name__ == "__main__":
    main()
