"""Small building blocks shared by the model families."""

from __future__ import annotations

from torch import nn


def scale_channels(channels: float, width_mult: float = 1.0, divisor: int = 1) -> int:
    """Scale a channel count by ``width_mult`` and round it to the nearest multiple of ``divisor``.

    Rounding to the nearest (not down) keeps ``width_mult = 1`` exact and makes every channel
    count a non-decreasing function of ``width_mult``, which the budget fitter relies on.  The
    result is never below ``divisor``: a grouped convolution needs at least one channel per group.
    """
    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    return max(divisor, int(round(channels * width_mult / divisor)) * divisor)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, groups=groups, bias=False)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
            groups=groups, bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Sequential):
    """Global average pooling, optional dropout, linear layer: the head of every CIFAR family."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)

    @property
    def linear(self) -> nn.Linear:
        """The layer that writes the logits (last)."""
        return self[-1]


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convolutions, unit BN, small linear weights, as the authors train.

    Residual blocks that expose a ``last_bn`` attribute get it zero-initialised, so every block
    starts as the identity (Goyal et al.; the divide-and-co-train code does the same).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1e-3)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        last_bn = getattr(module, "last_bn", None)
        if isinstance(last_bn, nn.BatchNorm2d):
            nn.init.zeros_(last_bn.weight)
