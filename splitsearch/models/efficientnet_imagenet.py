"""EfficientNet-B1..B7 for ImageNet-sized inputs, divided as the divide-and-co-train authors do.

Built with ``torchvision.models.EfficientNet``: its MBConv blocks (1x1 expansion, depthwise
k x k, squeeze-and-excitation to a quarter of the block's input width, 1x1 projection,
stochastic depth on the residual) are those of the paper.  Only the stage table differs from
torchvision's: the authors scale the *divided* B0 table by the variant's width coefficient,
rounding to multiples of 8 at S = 1 and of 4 for S > 1
(:func:`~splitsearch.blocks.divide.efficientnet_scaled_widths`), and the depth by the depth
coefficient (ceil), so the channel counts are set here after torchvision's own rounding.
ImageNet strides: the stem and stages 2, 3, 4 and 6 down-sample (32x in all).  Dropout before
the classifier is the variant's (0.5 for B7) / sqrt(S); stochastic depth 0.2 / sqrt(S), rising
over the blocks as torchvision does.  BN uses TensorFlow's eps and momentum.

``efficientnet_b0`` is the CIFAR adaptation (:mod:`splitsearch.models.efficientnet`), not this.
Block-wise splitting is not offered (the depthwise convolutions are already split to the limit),
and the fused ensemble refuses EfficientNets (per-sample stochastic depth,
:data:`splitsearch.ensemble.NOT_FUSABLE_ARCH_PREFIXES`).
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.efficientnet import EfficientNet, MBConvConfig

from splitsearch.blocks.divide import (
    EFFICIENTNET_COEFFICIENTS,
    drop_rate,
    efficientnet_repeats,
    efficientnet_scaled_widths,
)
from splitsearch.models.layers import scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs

# B0's stages: expansion, kernel, stride (ImageNet), blocks.
_B0_STAGES = ((1, 3, 1, 1), (6, 3, 2, 2), (6, 5, 2, 2), (6, 3, 2, 3), (6, 5, 1, 3), (6, 5, 2, 4), (6, 3, 1, 1))
# Classifier dropout of B1..B7 (Tan & Le's code, as the authors use it).
_DROPOUT = {1: 0.2, 2: 0.3, 3: 0.3, 4: 0.4, 5: 0.4, 6: 0.5, 7: 0.5}
_STOCHASTIC_DEPTH = 0.2


def _stage_configs(widths: list[int], depth_coefficient: float) -> list[MBConvConfig]:
    """torchvision stage configs with the exact widths given (its own rounding undone)."""
    stem, *stages, _ = widths
    configs = []
    in_channels = stem
    for (expand, kernel, stride, blocks), out_channels in zip(_B0_STAGES, stages, strict=True):
        config = MBConvConfig(expand, kernel, stride, in_channels, out_channels,
                              efficientnet_repeats(blocks, depth_coefficient))
        config.input_channels, config.out_channels = in_channels, out_channels
        configs.append(config)
        in_channels = out_channels
    return configs


def imagenet_efficientnet(args: BuildArgs, variant: int) -> nn.Module:
    """``efficientnet_b{1..7}``: one of the S networks at ImageNet strides (input 224..600)."""
    if variant not in EFFICIENTNET_COEFFICIENTS:
        raise ArchitectureError(f"efficientnet_b{variant}: ImageNet EfficientNets are b1..b7 (b0 is the CIFAR one)")
    width_coefficient, depth_coefficient = EFFICIENTNET_COEFFICIENTS[variant]
    widths = [scale_channels(c, args.width_mult) for c in efficientnet_scaled_widths(args.S, width_coefficient)]
    network = EfficientNet(
        _stage_configs(widths, depth_coefficient),
        dropout=drop_rate(_DROPOUT[variant], args.S),
        stochastic_depth_prob=drop_rate(_STOCHASTIC_DEPTH, args.S),
        num_classes=args.num_classes,
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01),
        last_channel=widths[-1],
    )
    if args.in_channels != 3:
        stem = network.features[0][0]
        network.features[0][0] = nn.Conv2d(args.in_channels, stem.out_channels, 3, stride=2, padding=1, bias=False)
    return network
