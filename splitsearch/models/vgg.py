"""CIFAR VGG16 with BatchNorm, cut into the five blocks the block-wise split paper splits.

Thirteen conv3x3-BN-ReLU layers in five groups (64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3),
each group closed by a 2x2 max-pool; on a 32x32 input the last map is 1x1x512 and a single
linear layer classifies it, as in the common CIFAR VGG.  The head is the shared
:class:`~splitsearch.models.layers.Classifier`: its global average pool is the identity on that
1x1 map (no parameters, no MACs) and keeps larger inputs working.

Block-wise split (MalekHosseini et al. 2020): each conv group is one block, so ``block_factors`` has five entries.
Block b split by K_b keeps its first convolution dense, groups the others by K_b, and replaces
its max-pool by a :class:`~splitsearch.blocks.fusion.Fusion` that pools, then mixes the branches
with a 1x1 convolution.  K_b = 1 leaves the block exactly as in the unsplit VGG.

Division by S (divide-and-co-train) for VGG is in neither paper: here every width is scaled by
1/sqrt(S), as the divide-and-co-train authors scale the widths of WRN, DenseNet and PyramidNet:
conv costs grow with width squared, so S small networks together cost about one large one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitsearch.blocks.divide import check_S
from splitsearch.blocks.factors import check_block_factors, layer_groups
from splitsearch.blocks.fusion import Fusion
from splitsearch.models.layers import Classifier, conv_bn_relu, init_weights, scale_channels
from splitsearch.models.registry import BuildArgs

# Conv widths of VGG16, one tuple per block (a block ends at a max-pool).
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg_block(in_channels: int, out_channels: int, num_convs: int, split_factor: int = 1) -> nn.Sequential:
    """``num_convs`` conv3x3-BN-ReLU layers, then the max-pool (or, when split, a fusion that pools)."""
    layers: list[nn.Module] = []
    for index in range(num_convs):
        groups = layer_groups(split_factor, first_in_block=index == 0)
        layers.append(conv_bn_relu(in_channels if index == 0 else out_channels, out_channels, groups=groups))
    pool = nn.MaxPool2d(2)
    layers.append(Fusion(out_channels, pool=pool, branches=split_factor) if split_factor > 1 else pool)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Conv blocks, then the classifier; ``blocks[b]`` is block b of the block-wise split."""

    def __init__(self, block_widths: list[int], convs_per_block: list[int], block_factors: tuple[int, ...],
                 in_channels: int, num_classes: int) -> None:
        super().__init__()
        blocks = []
        for width, num_convs, factor in zip(block_widths, convs_per_block, block_factors, strict=True):
            blocks.append(vgg_block(in_channels, width, num_convs, factor))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = Classifier(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x))


def vgg16(args: BuildArgs) -> nn.Module:
    """``vgg16``: CIFAR VGG16-BN; widths scaled by ``width_mult / sqrt(S)`` (not from the papers)."""
    factors = check_block_factors(args.block_factors, len(VGG16_BLOCKS), "vgg16")
    width_mult = args.width_mult / math.sqrt(check_S(args.S))
    widths = [scale_channels(block[0], width_mult, divisor=k) for block, k in zip(VGG16_BLOCKS, factors)]
    convs_per_block = [len(block) for block in VGG16_BLOCKS]
    return VGG(widths, convs_per_block, factors, args.in_channels, args.num_classes)
