"""ImageNet bottleneck ResNets of Table 4 of Zhao et al. (divide and co-train): ResNet, WRN-d-k, ResNeXt and SE-ResNeXt.

The divide-and-co-train authors' ImageNet layout (their public code) differs from torchvision's
in two places, and both change the counts, so this module builds the networks from the
project's own blocks rather than ``torchvision.models.ResNet``:

* the stem is three 3x3 convolutions (the first with stride 2; widths w, w, 2w for ResNet and
  WRN, 64, 64, 128 for ResNeXt, 64, 64, 64 for SE-ResNeXt), each with BN and ReLU, then 3x3 max
  pooling with stride 2 -- no 7x7 convolution;
* a shortcut that down-samples is 2x2 average pooling + 1x1 conv + BN (a 1x1 conv + BN where
  only the width changes), :class:`~splitsearch.models.resnet.Shortcut`.

Four stages of :class:`~splitsearch.models.resnet_bottleneck.Bottleneck` blocks (stride on the
3x3 convolution) with outputs 4w, 8w, 16w, 32w follow, then pooling, [dropout] and the
classifier.  The bottleneck width of stage i (planes p = w * 2^i) is ``p * k`` for WRN-d-k and
``card * g * 2^i`` for ResNeXt d x g d (the authors' ``int(p * g / 64) * card``).

Division by S (:mod:`splitsearch.blocks.divide`): ResNet takes the base width from the table
64 / 44 / 32 / 24; WRN-d-k follows :func:`~splitsearch.blocks.divide.wrn_imagenet_division`;
ResNeXt and SE-ResNeXt keep every width and divide the cardinality, d' = d // S.  SE-ResNeXt
has squeeze-and-excitation with reduction 16 after the last BN of each block, and dropout
0.2 / sqrt(S) before the classifier; the others have no dropout (the authors' defaults).

Block-wise split: the four stages are the four blocks (``block_factors`` has four entries),
split as :func:`~splitsearch.models.resnet.make_stage` does; the stem is not split.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitsearch.blocks.divide import (
    drop_rate,
    resnet_imagenet_base_width,
    resnext_cardinality,
    wrn_imagenet_division,
)
from splitsearch.blocks.factors import check_block_factors
from splitsearch.models.layers import Classifier, conv_bn_relu, init_weights, scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs
from splitsearch.models.resnet import make_stage
from splitsearch.models.resnet_bottleneck import Bottleneck

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_MULTIPLIERS = (1, 2, 4, 8)
STAGE_STRIDES = (1, 2, 2, 2)
# ResNeXt and SE-ResNeXt keep the undivided stem and stage widths; only the cardinality shrinks.
RESNEXT_BASE = 64
IMAGENET_SE_REDUCTION = 16
SE_RESNEXT_DROPOUT = 0.2


class ImageNetResNet(nn.Module):
    """Three-conv stem with max pooling, four bottleneck stages, classifier.

    ``stage_channels`` are the stages' output widths and ``mid_channels`` their bottleneck widths.
    """

    def __init__(self, stem_channels: tuple[int, int, int], depths: tuple[int, ...], stage_channels: list[int],
                 mid_channels: list[int], args: BuildArgs, cardinality: int = 1, se_reduction: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        factors = check_block_factors(args.block_factors, len(stage_channels), "this ImageNet ResNet")
        first, second, third = stem_channels
        self.stem = nn.Sequential(
            conv_bn_relu(args.in_channels, first, stride=2),
            conv_bn_relu(first, second),
            conv_bn_relu(second, third),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_channels = third
        for blocks, out_channels, mid, stride, factor in zip(depths, stage_channels, mid_channels, STAGE_STRIDES,
                                                             factors, strict=True):
            stages.append(make_stage(Bottleneck, in_channels, out_channels, blocks, stride, factor,
                                     mid_channels=mid, cardinality=cardinality, se_reduction=se_reduction))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.classifier = Classifier(in_channels, args.num_classes, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def _depths(name: str, depth: int) -> tuple[int, ...]:
    if depth not in BLOCKS_PER_STAGE:
        raise ArchitectureError(f"{name}: the ImageNet bottleneck ResNets have depth 50, 101 or 152")
    return BLOCKS_PER_STAGE[depth]


def _output_widths(base: int, factors: tuple[int, ...], width_mult: float, se_reduction: int = 0) -> list[int]:
    """Stage outputs 4 * base * 2^i, multiples of the stage's split factor (and of the SE reduction
    times it, so each branch's SE hidden width is whole)."""
    return [scale_channels(4 * base * m, width_mult, divisor=k * max(se_reduction, 1))
            for m, k in zip(STAGE_MULTIPLIERS, factors)]


def _plain_network(args: BuildArgs, name: str, depth: int, base: int, widen: int) -> nn.Module:
    """ResNet (widen 1) or WRN (widen k): bottleneck width ``widen`` x planes, stem w, w, 2w."""
    depths = _depths(name, depth)
    factors = check_block_factors(args.block_factors, len(STAGE_MULTIPLIERS), name)
    outputs = _output_widths(base, factors, args.width_mult)
    mids = [scale_channels(base * m * widen, args.width_mult, divisor=k) for m, k in zip(STAGE_MULTIPLIERS, factors)]
    stem = (scale_channels(base, args.width_mult), scale_channels(base, args.width_mult),
            scale_channels(2 * base, args.width_mult))
    return ImageNetResNet(stem, depths, outputs, mids, args)


def imagenet_resnet(args: BuildArgs, depth: int) -> nn.Module:
    """``resnet50`` / ``resnet101`` / ``resnet152``: base width 64 / 44 / 32 / 24 for S = 1 / 2 / 4 / 8."""
    return _plain_network(args, f"resnet{depth}", depth, resnet_imagenet_base_width(args.S), widen=1)


def imagenet_wide_resnet(args: BuildArgs, depth: int, k: int) -> nn.Module:
    """``wrn50_2``, ``wrn50_3``: bottleneck widths k x planes, divided as the authors do.

    Only depth 50 is registered: the authors' S = 2 rule (base 64, k divided) is written for
    WRN-50-2 and WRN-50-3; their WRN-101-2 at S = 2 takes base 44 and keeps k instead.
    """
    if k < 1:
        raise ArchitectureError(f"wrn{depth}_{k}: the widening factor must be >= 1")
    base, widen = wrn_imagenet_division(k, args.S)
    return _plain_network(args, f"wrn{depth}_{k}", depth, base, widen)


def _resnext_network(args: BuildArgs, name: str, depth: int, cardinality: int, group_width: int,
                     se_reduction: int, stem: tuple[int, int, int], dropout: float) -> nn.Module:
    if cardinality < 1 or group_width < 1:
        raise ArchitectureError(f"{name}: cardinality and width per group must be >= 1")
    depths = _depths(name, depth)
    factors = check_block_factors(args.block_factors, len(STAGE_MULTIPLIERS), name)
    card = resnext_cardinality(cardinality, args.S)
    outputs = _output_widths(RESNEXT_BASE, factors, args.width_mult, se_reduction)
    # In a stage split by K the grouped conv has lcm(card, K) groups: round the width per group so
    # card * width is a multiple of it.
    mids = [card * scale_channels(group_width * m, args.width_mult, divisor=k // math.gcd(card, k))
            for m, k in zip(STAGE_MULTIPLIERS, factors)]
    stem_channels = tuple(scale_channels(c, args.width_mult) for c in stem)
    return ImageNetResNet(stem_channels, depths, outputs, mids, args, cardinality=card,  # type: ignore[arg-type]
                          se_reduction=se_reduction, dropout=dropout)


def imagenet_resnext(args: BuildArgs, depth: int, cardinality: int, group_width: int) -> nn.Module:
    """``resnext101_64x4d`` etc.: cardinality divided by S, width per group and stage widths kept."""
    return _resnext_network(args, f"resnext{depth}_{cardinality}x{group_width}d", depth, cardinality, group_width,
                            se_reduction=0, stem=(RESNEXT_BASE, RESNEXT_BASE, 2 * RESNEXT_BASE), dropout=0.0)


def imagenet_se_resnext(args: BuildArgs, depth: int, cardinality: int, group_width: int) -> nn.Module:
    """``se_resnext101_64x4d``: ResNeXt with SE (reduction 16), stem 64, 64, 64, dropout 0.2 / sqrt(S)."""
    return _resnext_network(args, f"se_resnext{depth}_{cardinality}x{group_width}d", depth, cardinality,
                            group_width, se_reduction=IMAGENET_SE_REDUCTION,
                            stem=(RESNEXT_BASE, RESNEXT_BASE, RESNEXT_BASE),
                            dropout=drop_rate(SE_RESNEXT_DROPOUT, args.S))
