"""Bottleneck CIFAR ResNets and SE-ResNets in the divide-and-co-train authors' form.

The authors' ``resnet110`` / ``resnet164`` for CIFAR are *bottleneck* networks with 12 / 18 blocks
per stage (depth 9n + 2), not the basic-block ResNet-110 of He et al.  The stem is a 3x3 conv of
the base width w (16, 12, 8 for S = 1, 2, 4); the stages have bottleneck widths w, 2w, 4w and
outputs 4w, 8w, 16w.  The stride sits on the 3x3 convolution (torchvision's "v1.5"), and a
shortcut that changes shape is [2x2 average pooling] + 1x1 conv + BN
(:class:`~splitsearch.models.resnet.Shortcut`).

``se_resnet{9n+2}`` adds squeeze-and-excitation as the authors' ``SEResNetBottleneck``: after the
last BN of the residual branch, before the addition, with reduction 4 on CIFAR (their code
overrides the usual 16) and biased 1x1 convolutions as its two fully connected layers.  Stem,
widths and shortcuts are the same as the plain network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitsearch.blocks.divide import resnet_cifar_base_width
from splitsearch.models.layers import conv1x1, conv3x3, scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs
from splitsearch.models.resnet import CifarResNet, ResidualBlock, Shortcut, stage_widths

# Squeeze-and-excitation reduction of the authors' CIFAR SE-ResNets.
CIFAR_SE_REDUCTION = 4


class SqueezeExcite(nn.Module):
    """Channel gate x * sigmoid(fc2(relu(fc1(avgpool(x))))), the FCs written as biased 1x1 convs.

    ``groups`` keeps the gate inside each branch of a block-split stage.
    """

    def __init__(self, channels: int, reduction: int, groups: int = 1) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden % groups != 0:
            raise ValueError(f"SE hidden width {hidden} is not divisible by the split factor {groups}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, groups=groups)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.relu(self.fc1(self.pool(x))))
        return x * torch.sigmoid(gate)

    def input_passthroughs(self) -> tuple[nn.Module, ...]:
        """The branch-by-branch hook: none; its grouped FCs gate each branch's channels by themselves."""
        return ()


class Bottleneck(ResidualBlock):
    """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1-BN, [SE], plus the shortcut, then ReLU.

    ``mid_channels`` defaults to ``out_channels // 4`` (the ResNet expansion); ResNeXt passes its
    own.  In a block-split stage ``first_groups`` is the groups of conv1 (1 in the stage's first
    block) and ``groups`` the split factor K of every later conv; the 3x3 conv is grouped by
    lcm(cardinality, K), which is K for a plain ResNet and the cardinality for a ResNeXt whose
    cardinality is a multiple of K.  ``se_reduction = 0`` leaves squeeze-and-excitation out.
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, first_groups: int = 1,
                 groups: int = 1, mid_channels: int | None = None, cardinality: int = 1,
                 se_reduction: int = 0) -> None:
        super().__init__()
        mid = out_channels // self.expansion if mid_channels is None else mid_channels
        self.conv1 = conv1x1(in_channels, mid, groups=first_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=math.lcm(cardinality, groups))
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, out_channels, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.last_bn = self.bn3
        self.se = SqueezeExcite(out_channels, se_reduction, groups) if se_reduction else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + self.shortcut(x))


def _bottleneck_resnet(args: BuildArgs, depth: int, se_reduction: int) -> nn.Module:
    """CIFAR bottleneck ResNet of depth 9n + 2, with SE when ``se_reduction`` > 0."""
    if (depth - 2) % 9 != 0 or depth < 11:
        raise ArchitectureError(f"depth {depth}: a CIFAR bottleneck ResNet needs depth 9n+2 (110, 164, ...)")
    n = (depth - 2) // 9
    base = resnet_cifar_base_width(args.S)
    # Bottleneck widths are multiples of the split factor, so outputs (4x) are too.
    outputs = [Bottleneck.expansion * width for width in stage_widths(base, args)]
    stem = scale_channels(base, args.width_mult)
    return CifarResNet(Bottleneck, [n] * 3, stem, outputs, args, block_kwargs={"se_reduction": se_reduction})


def cifar_resnet_bottleneck(args: BuildArgs, depth: int) -> nn.Module:
    """``resnet110`` / ``resnet164``: the authors' bottleneck CIFAR ResNets (12 / 18 blocks per stage)."""
    return _bottleneck_resnet(args, depth, se_reduction=0)


def cifar_se_resnet(args: BuildArgs, depth: int) -> nn.Module:
    """``se_resnet{9n+2}``: bottleneck CIFAR ResNet with squeeze-and-excitation (reduction 4)."""
    return _bottleneck_resnet(args, depth, se_reduction=CIFAR_SE_REDUCTION)
