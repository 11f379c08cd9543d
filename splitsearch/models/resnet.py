"""CIFAR ResNets (He et al.) in the form the divide-and-co-train authors use.

Post-activation residual blocks; a shortcut that changes shape is 2x2 average pooling (where it
down-samples) followed by a 1x1 convolution and BN; three stages of widths w, 2w, 4w after a
3x3 stem of width w.  ``resnet{6n+2}`` uses basic blocks.  Divided by S, the base width w follows
the authors' table (16, 12, 8 for S = 1, 2, 4).  Each of the three stages is one block for the
block-wise split (``block_factors`` has three entries).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from splitsearch.blocks.divide import resnet_cifar_base_width
from splitsearch.blocks.factors import check_block_factors, layer_groups
from splitsearch.blocks.fusion import Fusion
from splitsearch.blocks.hooks import ConvNorm, ResidualLayers
from splitsearch.blocks.semantic_groups import channel_divisors
from splitsearch.models.layers import Classifier, conv1x1, conv3x3, init_weights, scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs


class Shortcut(nn.Sequential):
    """Projection shortcut: [2x2 average pool] -> 1x1 conv -> BN (the authors' down-sampling)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        layers: list[nn.Module] = []
        if stride > 1:
            layers.append(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False))
        layers += [conv1x1(in_channels, out_channels), nn.BatchNorm2d(out_channels)]
        super().__init__(*layers)

    def conv_norm(self) -> ConvNorm:
        """Its convolution and BN (the pool before them has no channels to regroup)."""
        return ConvNorm(self[-2], self[-1])


class ResidualBlock(nn.Module):
    """A residual block: convolutions, BNs, ReLUs (and a channel gate), plus ``self.shortcut(x)``.

    Past its first convolutions every operation keeps a split stage's channel groups apart, so
    once those convolutions are cut to one branch the block computes that branch alone: it
    implements the branch-by-branch hook (:class:`~splitsearch.blocks.hooks.BranchwiseModule`).
    """

    shortcut: nn.Module

    def input_passthroughs(self) -> tuple[nn.Module, ...]:
        """The identity shortcut, where the block has one: it hands the block input on unchanged."""
        return (self.shortcut,) if isinstance(self.shortcut, nn.Identity) else ()


class BasicBlock(ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    ``first_groups`` is the ``groups`` of the first convolution (1 in the first block of a split
    stage, whose input is the whole stage input), ``groups`` that of the second.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, first_groups: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride, groups=first_groups)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, groups=groups)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.last_bn = self.bn2
        self.relu = nn.ReLU(inplace=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))

    def semantic_layers(self) -> ResidualLayers:
        """The semantic split's hook: conv1 writes the block's middle channels, conv2 the stage's."""
        projection = self.shortcut.conv_norm() if isinstance(self.shortcut, Shortcut) else None
        return ResidualLayers(ConvNorm(self.conv1, self.bn1), ConvNorm(self.conv2, self.bn2), projection)


BlockFactory = Callable[..., nn.Module]


def make_stage(block: BlockFactory, in_channels: int, out_channels: int, num_blocks: int, stride: int,
               split_factor: int = 1, **block_kwargs) -> nn.Sequential:
    """``num_blocks`` residual blocks; split into ``split_factor`` branches with a fusion after.

    Every block receives ``first_groups`` and ``groups``: the first convolution of the stage reads
    the whole stage input and stays dense; every later convolution is grouped by the split factor.
    """
    layers: list[nn.Module] = []
    for index in range(num_blocks):
        layers.append(
            block(
                in_channels if index == 0 else out_channels,
                out_channels,
                stride if index == 0 else 1,
                first_groups=layer_groups(split_factor, first_in_block=index == 0),
                groups=split_factor,
                **block_kwargs,
            )
        )
    if split_factor > 1:
        layers.append(Fusion(out_channels, branches=split_factor))
    return nn.Sequential(*layers)


class CifarResNet(nn.Module):
    """Stem, three residual stages, classifier; ``stage_channels`` are the stages' output widths."""

    def __init__(self, block: BlockFactory, depth_per_stage: list[int], stem_channels: int,
                 stage_channels: list[int], args: BuildArgs, block_kwargs: dict | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        factors = check_block_factors(args.block_factors, len(stage_channels), "this ResNet")
        self.stem = nn.Sequential(
            conv3x3(args.in_channels, stem_channels), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True)
        )
        stages = []
        in_channels = stem_channels
        for index, (blocks, channels, factor) in enumerate(zip(depth_per_stage, stage_channels, factors)):
            stride = 1 if index == 0 else 2
            stages.append(make_stage(block, in_channels, channels, blocks, stride, factor, **(block_kwargs or {})))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.classifier = Classifier(in_channels, args.num_classes, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))

    def layer_sequence(self) -> nn.Sequential:
        """The layered-network hook: stem, stages, then the classifier's pool, flatten (dropout) and linear."""
        return nn.Sequential(self.stem, *self.stages, *self.classifier)

    def semantic_stages(self) -> tuple[nn.Sequential, ...]:
        """The semantic split's hook: its stages, each a sequence of blocks (and a fusion if block-split)."""
        return tuple(self.stages)

    def get_classifier(self) -> nn.Linear:
        """The semantic split's hook: the linear layer it makes G heads."""
        return self.classifier.linear


def stage_widths(base: int, args: BuildArgs, multipliers: tuple[int, ...] = (1, 2, 4),
                 num_blocks: int = 3) -> list[int]:
    """Widths ``base * m`` scaled by ``width_mult``, each a multiple of its stage's split factor and groups."""
    factors = check_block_factors(args.block_factors, num_blocks, "this ResNet")
    groups = channel_divisors(num_blocks, args.groups, args.split_depth)
    return [scale_channels(base * m, args.width_mult, divisor=math.lcm(k, g))
            for m, k, g in zip(multipliers, factors, groups)]


def cifar_resnet_basic(args: BuildArgs, depth: int) -> nn.Module:
    """``resnet{6n+2}``: CIFAR ResNet with n basic blocks per stage."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ArchitectureError(f"resnet{depth}: a CIFAR basic-block ResNet needs depth 6n+2 (20, 32, 44, 56, ...)")
    n = (depth - 2) // 6
    widths = stage_widths(resnet_cifar_base_width(args.S), args)
    stem = scale_channels(resnet_cifar_base_width(args.S), args.width_mult)
    return CifarResNet(BasicBlock, [n] * 3, stem, widths, args)
