"""EfficientNet-B0 (Tan & Le) adapted to CIFAR-size inputs as the divide-and-co-train authors do.

On ImageNet, B0 down-samples five times (the stem and stages 2, 3, 4 and 6).  The authors'
CIFAR adaptation runs the stem and stages 3 and 6 at stride 1, so a 32x32 input is processed at
32, 16 and 8 pixels.  Blocks are MBConv: 1x1 expansion (x6, absent in the first stage), depthwise
k x k convolution, squeeze-and-excitation reducing to a quarter of the block's input width, 1x1
projection; BN everywhere with TensorFlow's eps/momentum and Swish (SiLU) activations.  A block
whose input and output shapes agree adds its input back, with drop-path on the residual branch
at a rate rising linearly over the stages to 0.2; the head is a 1x1 convolution to 1280
channels, pooling, dropout 0.2 and the classifier.  (The authors' code drops whole channels of
the residual branch, ``dropout2d``, where this module drops the branch per sample, the usual
drop-path; the cost is the same.)

Divided by S, every width follows the authors' table (:func:`efficientnet_b0_widths`) and both
drop rates are divided by sqrt(S).  ``width_mult`` scales every width of that table.

Block-wise splitting is not offered: the depthwise convolutions are already split to the limit.
"""

from __future__ import annotations

import torch
from torch import nn

from splitsearch.blocks.divide import drop_rate, efficientnet_b0_widths
from splitsearch.models.layers import Classifier, init_weights, scale_channels
from splitsearch.models.registry import BuildArgs

# One row per stage: expansion ratio, number of blocks, kernel size, stride (CIFAR strides).
_B0_STAGES = ((1, 1, 3, 1), (6, 2, 3, 2), (6, 2, 5, 1), (6, 3, 3, 2), (6, 3, 5, 1), (6, 4, 5, 1), (6, 1, 3, 1))
_DROP_RATE = 0.2
_SE_REDUCTION = 4


def _norm(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's BN settings, which EfficientNet was tuned with.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def conv_bn_swish(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        _norm(out_channels),
        nn.SiLU(inplace=True),
    )


class SqueezeExcite(nn.Module):
    """Channel attention: pooled features -> 1x1 conv -> Swish -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1), nn.SiLU(inplace=True),
            nn.Conv2d(reduced, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero a residual branch for a random ``p`` of the samples and rescale the rest by 1 / (1 - p).

    The mask is made on ``x``'s device, so this also runs on the meta device.
    """
    if not training or p == 0:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


class MBConv(nn.Module):
    """Inverted bottleneck with squeeze-and-excitation; residual with drop-path where shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 drop_path_p: float) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_swish(in_channels, hidden, 1))
        layers += [
            conv_bn_swish(hidden, hidden, kernel_size, stride, groups=hidden),
            SqueezeExcite(hidden, max(1, in_channels // _SE_REDUCTION)),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            _norm(out_channels),
        ]
        self.branch = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path_p = drop_path_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.residual:
            out = drop_path(out, self.drop_path_p, self.training) + x
        return out


class CifarEfficientNet(nn.Module):
    """Stem, seven MBConv stages, 1x1 head, classifier; ``widths`` = (stem, 7 stages, head)."""

    def __init__(self, widths: tuple[int, ...], p: float, args: BuildArgs) -> None:
        super().__init__()
        stem, *stage_widths, head = widths
        self.stem = conv_bn_swish(args.in_channels, stem, 3)
        stages = []
        in_channels = stem
        for index, ((expand, blocks, kernel, stride), channels) in enumerate(zip(_B0_STAGES, stage_widths)):
            stage_p = p * (index + 1) / len(_B0_STAGES)
            stage = []
            for block in range(blocks):
                stage.append(MBConv(in_channels, channels, expand, kernel, stride if block == 0 else 1, stage_p))
                in_channels = channels
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages, conv_bn_swish(in_channels, head, 1))
        self.classifier = Classifier(head, args.num_classes, dropout=p)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def efficientnet_b0(args: BuildArgs) -> nn.Module:
    """EfficientNet-B0 for 32x32 inputs (stride-1 stem, 8x8 final feature map)."""
    widths = tuple(scale_channels(c, args.width_mult) for c in efficientnet_b0_widths(args.S))
    return CifarEfficientNet(widths, drop_rate(_DROP_RATE, args.S), args)
