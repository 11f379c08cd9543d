"""Shake-Shake ResNet-26 2x96d for CIFAR (Gastaldi) as the divide-and-co-train authors use it.

A 3x3 stem of 16 channels (with bias) and BN, three stages of 4 blocks of widths w, 2w, 4w, then
ReLU, pooling and classifier.  A block has two residual branches (ReLU-3x3 conv-BN-ReLU-3x3
conv-BN) mixed by a per-sample random convex combination in training and averaged in evaluation.
Where the shape changes, the shortcut is ReLU, then two 1x1 convolutions of half the output
width each, one on the input and one on the input shifted by one pixel (both sub-sampled by the
stride), concatenated and batch-normalised.

Divided by S, the base width w follows the authors' table (96, 64, 48 for S = 1, 2, 4); the stem
keeps 16 channels.  Each stage is one block for the block-wise split, as in the CIFAR ResNet:
the first convolutions of a split stage (and its projection shortcut) stay dense, the later ones
are grouped by the split factor, and a fusion follows the stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitsearch.blocks.divide import shake_shake_base_width
from splitsearch.blocks.factors import check_block_factors
from splitsearch.models.layers import Classifier, conv1x1, conv3x3, init_weights, scale_channels
from splitsearch.models.registry import BuildArgs
from splitsearch.models.resnet import make_stage, stage_widths

_STEM_CHANNELS = 16
_BLOCKS_PER_STAGE = (26 - 2) // 6


class _ShakeShakeFunction(torch.autograd.Function):
    """``alpha * a + (1 - alpha) * b`` forwards; the gradient is split by a fresh ``beta`` backwards.

    Drawing ``beta ~ U(0, 1)`` independently of ``alpha`` is the "shake-shake" of Gastaldi's
    best CIFAR setting.  ``beta`` is made on the gradient's device, so this runs on meta tensors.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        ctx.alpha_shape = alpha.shape
        return alpha * a + (1 - alpha) * b

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        beta = torch.rand(ctx.alpha_shape, device=grad.device, dtype=grad.dtype)
        return beta * grad, (1 - beta) * grad, None


def shake_shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """Mix two branches with per-sample ``alpha ~ U(0, 1)`` in training, their mean in evaluation."""
    if not training:
        return 0.5 * (a + b)
    alpha = torch.rand((a.shape[0],) + (1,) * (a.dim() - 1), device=a.device, dtype=a.dtype)
    return _ShakeShakeFunction.apply(a, b, alpha)


class ShiftedPairShortcut(nn.Module):
    """ReLU, then 1x1 convs on the input and on the input shifted by one pixel, concatenated, BN.

    The shifted path sees the pixels the stride-2 sub-sampling of the first path skips.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv_a = conv1x1(in_channels, out_channels // 2)
        self.conv_b = conv1x1(in_channels, out_channels - out_channels // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        s = self.stride
        return self.bn(torch.cat([self.conv_a(x[:, :, ::s, ::s]), self.conv_b(shifted[:, :, ::s, ::s])], dim=1))


class ShakeBlock(nn.Module):
    """Two residual branches mixed by :func:`shake_shake`, plus the shortcut.

    ``first_groups`` / ``groups`` are the ``groups`` of each branch's first / second convolution
    (see :func:`splitsearch.models.resnet.make_stage`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, first_groups: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), conv3x3(in_channels, out_channels, stride, groups=first_groups),
                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
                conv3x3(out_channels, out_channels, groups=groups), nn.BatchNorm2d(out_channels),
            )
            for _ in range(2)
        )
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ShiftedPairShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = shake_shake(self.branches[0](x), self.branches[1](x), self.training)
        return mixed + self.shortcut(x)


class ShakeResNet(nn.Module):
    """Stem, three shake-shake stages, ReLU, classifier."""

    def __init__(self, stem_channels: int, widths: list[int], args: BuildArgs) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(args.in_channels, stem_channels, 3, padding=1), nn.BatchNorm2d(stem_channels)
        )
        stages = []
        in_channels = stem_channels
        factors = check_block_factors(args.block_factors, len(widths), "shake_shake26_2x96d")
        for index, (channels, factor) in enumerate(zip(widths, factors)):
            stride = 1 if index == 0 else 2
            stages.append(make_stage(ShakeBlock, in_channels, channels, _BLOCKS_PER_STAGE, stride, factor))
            in_channels = channels
        self.stages = nn.Sequential(*stages, nn.ReLU(inplace=True))
        self.classifier = Classifier(in_channels, args.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def shake_shake26_2x96d(args: BuildArgs) -> nn.Module:
    """Shake-Shake-26 2x96d: 4 two-branch blocks per stage, base width 96 undivided."""
    widths = stage_widths(shake_shake_base_width(args.S), args)
    return ShakeResNet(scale_channels(_STEM_CHANNELS, args.width_mult), widths, args)
