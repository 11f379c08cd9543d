"""Counted params / MACs of every row of Zhao et al.'s Tables 2 and 4 (divide and co-train) beside the paper's.

Run:  python benchmarks/reference_costs.py

MACs are printed twice: as the authors counted them (thop's per-module rules: convolutions and
linear layers plus batch norm, average pooling and conv biases; ``--macs-convention paper``,
:mod:`splitsearch.cost.paper_macs`) and as PyTorch's FlopCounterMode
counts them (convolutions and matrix products only; the default).  Ratios are counted / paper.
Table 4 rows are ImageNet at the crop the paper counts them at (224, EfficientNet-B7 320,
SE-ResNeXt-101 416).
"""

from __future__ import annotations

import torch

import resultfiles
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.published import TABLE2_CIFAR100, TABLE4_IMAGENET


def main() -> None:
    print(f"torch {torch.__version__}")
    found = []
    for title, rows, dataset in (("Table 2, CIFAR-100", TABLE2_CIFAR100, "cifar100"),
                                 ("Table 4, ImageNet", TABLE4_IMAGENET, "imagenet")):
        print(title)
        print(f"{'arch':<20}{'S':>2}{'crop':>5}{'params':>10}{'paper':>9}{'ratio':>7}{'MACs paper-conv.':>18}"
              f"{'paper':>8}{'ratio':>7}{'MACs pytorch':>14}")
        for row in rows:
            config = SplitConfig(arch=row.arch, S=row.S, dataset=dataset, crop=row.crop)
            paper, pytorch = count_config(config, "paper"), count_config(config)
            crop = config.input_info().image_size
            print(f"{row.arch:<20}{row.S:>2}{crop:>5}{paper.params / 1e6:>9.3f}M{row.params / 1e6:>8.2f}M"
                  f"{paper.params / row.params:>7.3f}{paper.macs / 1e9:>17.3f}G{row.macs / 1e9:>7.2f}G"
                  f"{paper.macs / row.macs:>7.3f}{pytorch.macs / 1e9:>13.3f}G")
            found.append({"table": title, "network": row.arch, "S": row.S, "crop": crop,
                          "params": paper.params, "paper params": row.params,
                          "params ratio": round(paper.params / row.params, 3),
                          "MACs (paper convention)": paper.macs, "paper MACs": row.macs,
                          "MACs ratio": round(paper.macs / row.macs, 3), "MACs (PyTorch convention)": pytorch.macs})
    resultfiles.save("reference_costs", found, notes="Ratios are counted / published; the published figures are "
                     "Tables 2 and 4 of Zhao et al. (2020), Divide and Co-training, as splitsearch keeps them "
                     "for its tests.")

if __name__ == "__main__":
    main()
