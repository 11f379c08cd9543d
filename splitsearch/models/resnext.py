"""ResNeXt-29 for CIFAR (Xie et al.) in the divide-and-co-train authors' form.

``resnext29_{d}x{w}d``: a 3x3 stem of 64 channels, then three stages of 3 bottleneck blocks with
outputs 256, 512, 1024 and grouped 3x3 convolutions of cardinality d with w, 2w, 4w channels per
group (the authors' bottleneck width ``int(planes * w / 64) * d`` with planes 64, 128, 256).
Blocks, stride placement and shortcuts are those of
:class:`~splitsearch.models.resnet_bottleneck.Bottleneck`.

Divided by S, only the cardinality shrinks, d' = max(floor(d / S), 1); the width per group, the
stem and the stage outputs are kept, which is why S = 2 and S = 4 cost a little *more* than S = 1
in the paper's Table 2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitsearch.blocks.divide import resnext_cardinality
from splitsearch.blocks.factors import check_block_factors
from splitsearch.models.layers import Classifier, conv_bn_relu, init_weights, scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs
from splitsearch.models.resnet import make_stage
from splitsearch.models.resnet_bottleneck import Bottleneck

STEM_CHANNELS = 64
BLOCKS_PER_STAGE = 3
STAGE_MULTIPLIERS = (1, 2, 4)


class CifarResNeXt(nn.Module):
    """Stem, three bottleneck stages, classifier (the layout of
    :class:`~splitsearch.models.resnet.CifarResNet`, with a bottleneck width chosen per stage,
    which that class cannot express)."""

    def __init__(self, stem_channels: int, stage_channels: list[int], mid_channels: list[int],
                 cardinality: int, args: BuildArgs) -> None:
        super().__init__()
        factors = check_block_factors(args.block_factors, len(stage_channels), "this ResNeXt")
        self.stem = conv_bn_relu(args.in_channels, stem_channels)
        stages = []
        in_channels = stem_channels
        for index, (out_channels, mid, factor) in enumerate(zip(stage_channels, mid_channels, factors)):
            stride = 1 if index == 0 else 2
            stages.append(make_stage(Bottleneck, in_channels, out_channels, BLOCKS_PER_STAGE, stride, factor,
                                     mid_channels=mid, cardinality=cardinality))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.classifier = Classifier(in_channels, args.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def _group_width(width: int, cardinality: int, split_factor: int, width_mult: float) -> int:
    """Channels per group of the grouped 3x3 conv, scaled by ``width_mult``.

    In a stage split by K the 3x3 conv has lcm(cardinality, K) groups, so the bottleneck width
    ``cardinality * group_width`` must be a multiple of that: the width per group is rounded to a
    multiple of K / gcd(cardinality, K) (1 whenever K divides the cardinality).
    """
    return scale_channels(width, width_mult, divisor=split_factor // math.gcd(cardinality, split_factor))


def cifar_resnext29(args: BuildArgs, cardinality: int, group_width: int) -> nn.Module:
    """``resnext29_{d}x{w}d``: ResNeXt-29 with cardinality d divided by S and w channels per group."""
    if cardinality < 1 or group_width < 1:
        raise ArchitectureError(f"resnext29_{cardinality}x{group_width}d: cardinality and width must be >= 1")
    factors = check_block_factors(args.block_factors, 3, f"resnext29_{cardinality}x{group_width}d")
    card = resnext_cardinality(cardinality, args.S)
    stage_channels, mid_channels = [], []
    for multiplier, factor in zip(STAGE_MULTIPLIERS, factors):
        stage_channels.append(scale_channels(4 * STEM_CHANNELS * multiplier, args.width_mult, divisor=factor))
        mid_channels.append(card * _group_width(group_width * multiplier, card, factor, args.width_mult))
    stem = scale_channels(STEM_CHANNELS, args.width_mult)
    return CifarResNeXt(stem, stage_channels, mid_channels, card, args)
