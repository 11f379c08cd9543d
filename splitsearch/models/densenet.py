"""DenseNet-BC for CIFAR (Huang et al.) as the divide-and-co-train authors train it.

Their default CIFAR DenseNet-BC-190 is the torchvision-style one: a 3x3 stem of 2k channels with
BN and ReLU, three dense blocks of 31 bottleneck layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv
to k), transitions that halve the channels (BN-ReLU-1x1 conv, 2x2 average pooling), and a final
BN-ReLU before the classifier.  No dropout, no ShakeDrop (their defaults).

Divided by S, only the growth rate k changes (40, 28, 20 for S = 1, 2, 4); every other width
follows from it.  The dense concatenation is internal to one small network.  ``width_mult``
scales k, so the finest step of the width knob is one channel of growth rate.

Block-wise splitting is not offered: grouping a dense block would have to keep every branch's
concatenated features apart across 31 layers, which is no longer the paper's network.
"""

from __future__ import annotations

import torch
from torch import nn

from splitsearch.blocks.divide import densenet_growth_rate
from splitsearch.models.layers import Classifier, conv1x1, conv3x3, init_weights, scale_channels
from splitsearch.models.registry import BuildArgs

_GROWTH_RATE = 40
_BOTTLENECK_FACTOR = 4
_COMPRESSION = 0.5


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class DenseLayer(nn.Module):
    """Pre-activation bottleneck that appends ``growth`` new feature maps to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        width = _BOTTLENECK_FACTOR * growth
        self.branch = nn.Sequential(
            *_bn_relu(in_channels), conv1x1(in_channels, width),
            *_bn_relu(width), conv3x3(width, growth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.branch(x)], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compressing the channels) and 2x2 average pooling between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(*_bn_relu(in_channels), conv1x1(in_channels, out_channels), nn.AvgPool2d(2))


class CifarDenseNetBC(nn.Module):
    """Stem, three dense blocks of ``layers_per_block`` layers with two transitions, classifier."""

    def __init__(self, layers_per_block: int, growth: int, args: BuildArgs) -> None:
        super().__init__()
        channels = 2 * growth
        self.stem = nn.Sequential(conv3x3(args.in_channels, channels), *_bn_relu(channels))
        stages: list[nn.Module] = []
        for index in range(3):
            if index > 0:
                compressed = int(channels * _COMPRESSION)
                stages.append(Transition(channels, compressed))
                channels = compressed
            layers = [DenseLayer(channels + i * growth, growth) for i in range(layers_per_block)]
            stages.append(nn.Sequential(*layers))
            channels += layers_per_block * growth
        stages += _bn_relu(channels)
        self.features = nn.Sequential(*stages)
        self.classifier = Classifier(channels, args.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.stem(x)))


def densenet_bc190(args: BuildArgs) -> nn.Module:
    """DenseNet-BC-190 (k = 40 undivided): three blocks of (190 - 4) / 6 = 31 bottleneck layers."""
    growth = scale_channels(densenet_growth_rate(_GROWTH_RATE, args.S), args.width_mult)
    return CifarDenseNetBC((190 - 4) // 6, growth, args)
