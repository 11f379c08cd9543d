"""Counted params / MACs of every seed 004 Table 2 row next to the paper's figure.

Run:  python benchmarks/reference_costs.py

MACs are printed twice: as the authors counted them (thop's per-module rules: convolutions and
linear layers plus batch norm, average pooling and conv biases; ``--macs-convention paper``,
:mod:`splitsearch.paper_macs`) and as PyTorch's FlopCounterMode
counts them (convolutions and matrix products only; the default).  Ratios are counted / paper.
"""

from __future__ import annotations

import torch

from splitsearch.config import SplitConfig
from splitsearch.cost import count_config
from splitsearch.reference import TABLE2_CIFAR100


def main() -> None:
    print(f"torch {torch.__version__}")
    print(f"{'arch':<17}{'S':>2}{'params':>10}{'paper':>8}{'ratio':>7}{'MACs paper-conv.':>18}{'paper':>8}"
          f"{'ratio':>7}{'MACs pytorch':>14}")
    for row in TABLE2_CIFAR100:
        config = SplitConfig(arch=row.arch, S=row.S, dataset="cifar100")
        paper, pytorch = count_config(config, "paper"), count_config(config)
        print(f"{row.arch:<17}{row.S:>2}{paper.params / 1e6:>9.3f}M{row.params / 1e6:>7.2f}M"
              f"{paper.params / row.params:>7.3f}{paper.macs / 1e9:>17.3f}G{row.macs / 1e9:>7.2f}G"
              f"{paper.macs / row.macs:>7.3f}{pytorch.macs / 1e9:>13.3f}G")


if __name__ == "__main__":
    main()
