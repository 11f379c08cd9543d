"""Block-wise split with fusion (MalekHosseini et al. 2020).

A block split by K becomes K slim parallel branches, written here as grouped convolutions
(``groups=K``): branch k owns channels ``[k*C/K, (k+1)*C/K)`` of every layer in the block.
The first convolution of a split block (and a projection shortcut, which reads the same input)
stays dense: every branch sees the block's whole input, as the paper's Eq. 2 counts it
(``L0 x L1/K1`` weights per branch; :mod:`splitsearch.blocks.factors` holds these rules).  After
the block a :class:`Fusion` mixes the branches: the block's pooling (if it down-samples there),
the concatenation (free: the branches already sit side by side on the channel axis) and a 1x1
convolution.

So a 3x3 layer inside a split block costs ``C_in * C_out * 9 / K`` weights, plus one fusion
``C * C_out`` per split block.  A block with K = 1 is left exactly as the unsplit network.
"""

from __future__ import annotations

from torch import nn


class Fusion(nn.Sequential):
    """Fusion after a split block: [pool] -> (concat, implicit) -> 1x1 conv -> BN -> ReLU.

    ``branches`` is the block's split factor K: the fusion's input is K branches side by side,
    which :func:`splitsearch.split.sequential.branch_sequential` needs to run them one at a time.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, pool: nn.Module | None = None, *,
                 branches: int) -> None:
        if isinstance(branches, bool) or not isinstance(branches, int) or branches < 1:
            raise ValueError(f"a fusion mixes a positive whole number of branches, got branches={branches!r}")
        out_channels = in_channels if out_channels is None else out_channels
        layers: list[nn.Module] = [] if pool is None else [pool]
        layers += [
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        super().__init__(*layers)
        self.branches = branches
