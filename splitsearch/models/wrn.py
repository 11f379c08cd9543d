"""Wide ResNets (Zagoruyko & Komodakis) for CIFAR, in the divide-and-co-train authors' form.

``wrn{d}_{k}``: a 3x3 stem of 16 channels, then three stages of n = (d - 4) / 6 blocks of widths
16k', 32k', 64k'.  Two differences from the WRN paper, both taken from the authors' code so that
parameter counts match their Table 2: the blocks are the *post*-activation basic blocks of
:mod:`splitsearch.models.resnet` (the WRN paper uses pre-activation blocks), and a shortcut that
changes shape is 2x2 average pooling + 1x1 conv + BN.

Divided by S, the widening factor becomes k' = max(floor(k / sqrt(S) + 0.4), 1)
(:func:`~splitsearch.blocks.divide.wrn_widen_factor`); the stem keeps 16 channels for every S.
"""

from __future__ import annotations

from torch import nn

from splitsearch.blocks.divide import drop_rate, wrn_widen_factor
from splitsearch.models.layers import scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs
from splitsearch.models.resnet import BasicBlock, CifarResNet, stage_widths

STEM_CHANNELS = 16

# Dropout before the classifier, as the authors' constructors set it (``dropout_p=0.1`` for
# WRN-40-10 and WRN-52-8 only; their WRN-16-8 and WRN-28-10 train without it).
_DROPOUT = {(40, 10): 0.1, (52, 8): 0.1}


def wide_resnet(args: BuildArgs, depth: int, k: int) -> nn.Module:
    """``wrn{d}_{k}``: WRN-d-k with (d - 4) / 6 post-activation basic blocks per stage."""
    if (depth - 4) % 6 != 0 or depth < 10 or k < 1:
        raise ArchitectureError(f"wrn{depth}_{k}: a WRN needs depth 6n+4 (10, 16, 22, 28, 40, ...) and k >= 1")
    n = (depth - 4) // 6
    widths = stage_widths(STEM_CHANNELS * wrn_widen_factor(k, args.S), args)
    stem = scale_channels(STEM_CHANNELS, args.width_mult)
    dropout = drop_rate(_DROPOUT.get((depth, k), 0.0), args.S)
    return CifarResNet(BasicBlock, [n] * 3, stem, widths, args, dropout=dropout)
