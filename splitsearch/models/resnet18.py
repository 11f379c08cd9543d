"""CIFAR ResNet18, cut into the five blocks the block-wise split paper splits.

A 3x3 stem of width w (BN, ReLU, no max-pool), four stages of two basic blocks with widths
w, 2w, 4w, 8w and strides 1, 2, 2, 2, global average pooling and a linear layer.  The residual
blocks and projection shortcuts (2x2 average pool, 1x1 conv, BN) are those of
:mod:`splitsearch.models.resnet`, the divide-and-co-train authors' form.  Divided by S, the base
width follows the authors' ImageNet-ResNet table (64, 44, 32 for S = 1, 2, 4).

Block-wise split (MalekHosseini et al. 2020 split ResNet18 at five positions): block 1 is the stem, blocks 2-5
are the four stages.  Splitting a stage follows :func:`~splitsearch.models.resnet.make_stage`.
The stem is a single convolution, and the convention keeps the first convolution of every split
block dense, so splitting the stem by K_1 > 1 groups nothing: it only appends a fusion
(1x1 conv, BN, ReLU; no pool, as this stem does not down-sample).  K_1 therefore adds
parameters and MACs instead of saving them; it is kept so the five factors line up with the
paper's five split positions.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from splitsearch.blocks.divide import resnet_imagenet_base_width
from splitsearch.blocks.factors import check_block_factors
from splitsearch.blocks.fusion import Fusion
from splitsearch.models.layers import Classifier, conv3x3, init_weights, scale_channels
from splitsearch.models.registry import BuildArgs
from splitsearch.models.resnet import BasicBlock, make_stage, stage_widths

STAGE_MULTIPLIERS = (1, 2, 4, 8)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def stem_block(in_channels: int, out_channels: int, split_factor: int = 1) -> nn.Sequential:
    """conv3x3-BN-ReLU; split by ``split_factor`` > 1 it only gains a fusion (its one conv stays dense)."""
    layers: list[nn.Module] = [conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    if split_factor > 1:
        layers.append(Fusion(out_channels, branches=split_factor))
    return nn.Sequential(*layers)


class ResNet18(nn.Module):
    """Stem, four stages, classifier; block b of the split is ``[stem, *stages][b]``."""

    def __init__(self, stem_channels: int, stage_channels: list[int], block_factors: tuple[int, ...],
                 in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = stem_block(in_channels, stem_channels, block_factors[0])
        stages = []
        in_channels = stem_channels
        for channels, stride, factor in zip(stage_channels, STAGE_STRIDES, block_factors[1:], strict=True):
            stages.append(make_stage(BasicBlock, in_channels, channels, BLOCKS_PER_STAGE, stride, factor))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.classifier = Classifier(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def resnet18(args: BuildArgs) -> nn.Module:
    """``resnet18``: CIFAR ResNet18 (3x3 stem, no max-pool), five split blocks (stem + four stages)."""
    factors = check_block_factors(args.block_factors, 1 + len(STAGE_MULTIPLIERS), "resnet18")
    base = resnet_imagenet_base_width(args.S)
    stage_args = replace(args, block_factors=factors[1:])
    widths = stage_widths(base, stage_args, STAGE_MULTIPLIERS, num_blocks=len(STAGE_MULTIPLIERS))
    stem = scale_channels(base, args.width_mult)
    return ResNet18(stem, widths, factors, args.in_channels, args.num_classes)
