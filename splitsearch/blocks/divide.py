"""Division rules of divide-and-co-train (Zhao et al. 2020, Appendix A).

Each rule maps the undivided network's width hyper-parameter to the one of each of the S small
networks, so that S small networks together cost about what the large one costs.  S = 1, 2, 4
give exactly the numbers of the authors' code; any other S uses the same formula (or, for the
tables, a width scaled by 1/sqrt(S) from the nearest tabulated S).
"""

from __future__ import annotations

import math

# Base width of CIFAR ResNet / SE-ResNet (stage widths w, 2w, 4w), as tabulated by the authors.
_RESNET_CIFAR_BASE = {1: 16, 2: 12, 4: 8, 8: 6, 16: 4}
# Base width of the ImageNet-style ResNet (stage widths w..8w).
_RESNET_IMAGENET_BASE = {1: 64, 2: 44, 4: 32, 8: 24}
# Shake-Shake 26 2x96d base width.
_SHAKE_SHAKE_BASE = {1: 96, 2: 64, 4: 48}
# EfficientNet-B0 widths: stem, 7 stages, head.
_EFFICIENTNET_B0 = {
    1: (32, 16, 24, 40, 80, 112, 192, 320, 1280),
    2: (24, 12, 16, 24, 56, 80, 136, 224, 920),
    4: (16, 12, 16, 20, 40, 56, 96, 160, 640),
}


def check_S(S: int) -> int:
    """Validate the number of small networks."""
    if isinstance(S, bool) or not isinstance(S, int) or S < 1:
        raise ValueError(f"S must be a positive integer, got {S!r}")
    return S


def _from_table(table: dict[int, int], S: int) -> int:
    """Tabulated value for S, else the nearest smaller tabulated value scaled by sqrt(S0/S)."""
    check_S(S)
    if S in table:
        return table[S]
    nearest = max(s for s in table if s <= S)
    return max(1, round(table[nearest] * math.sqrt(nearest / S)))


def resnet_cifar_base_width(S: int) -> int:
    """First-stage width of a CIFAR ResNet divided by S (16, 12, 8, 6, 4 for S = 1, 2, 4, 8, 16)."""
    return _from_table(_RESNET_CIFAR_BASE, S)


def resnet_imagenet_base_width(S: int) -> int:
    """First-stage width of an ImageNet ResNet divided by S (64, 44, 32, 24 for S = 1, 2, 4, 8)."""
    return _from_table(_RESNET_IMAGENET_BASE, S)


def wrn_widen_factor(k: float, S: int) -> int:
    """WRN widening factor k' = max(floor(k / sqrt(S) + 0.4), 1) (authors' code)."""
    check_S(S)
    return int(max(k / math.sqrt(S) + 0.4, 1.0))


def resnext_cardinality(d: int, S: int) -> int:
    """ResNeXt cardinality d' = max(floor(d / S), 1); the width per group is kept."""
    check_S(S)
    return max(d // S, 1)


def densenet_growth_rate(k: int, S: int) -> int:
    """DenseNet-BC growth rate k' = int(2k / sqrt(S)) // 2 (40 -> 28 -> 20)."""
    check_S(S)
    return max(int(2 * k / math.sqrt(S)) // 2, 1)


def pyramidnet_alpha(alpha: float, S: int) -> float:
    """PyramidNet widening step alpha' = alpha / sqrt(S); the base width 16 is kept."""
    check_S(S)
    return alpha / math.sqrt(S)


def shake_shake_base_width(S: int) -> int:
    """Shake-Shake 26 2x96d base width (96, 64, 48 for S = 1, 2, 4)."""
    return _from_table(_SHAKE_SHAKE_BASE, S)


def efficientnet_b0_widths(S: int) -> tuple[int, ...]:
    """EfficientNet-B0 widths (stem, 7 stages, head) for S; other S scale the S=1 row by 1/sqrt(S)."""
    check_S(S)
    if S in _EFFICIENTNET_B0:
        return _EFFICIENTNET_B0[S]
    return tuple(max(8, int(round(c / math.sqrt(S) / 4)) * 4) for c in _EFFICIENTNET_B0[1])


def drop_rate(p: float, S: int) -> float:
    """Dropout / drop-path / ShakeDrop rate of a small network: p' = p / sqrt(S)."""
    check_S(S)
    return p / math.sqrt(S)


# Compound-scaling coefficients of EfficientNet-B1..B7 (width, depth), Tan & Le Table/code.
EFFICIENTNET_COEFFICIENTS = {
    1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8), 5: (1.6, 2.2), 6: (1.8, 2.6), 7: (2.0, 3.1),
}


def wrn_imagenet_division(k: int, S: int) -> tuple[int, int]:
    """(base width, widening factor) of an ImageNet WRN-d-k divided by S, as the authors' code does.

    Their code treats S = 2 and the other S differently: at S = 2 the base width stays 64 and
    the widening factor shrinks by the CIFAR WRN rule, k' = max(floor(k / sqrt(2) + 0.4), 1)
    (WRN-50-2 -> 1, WRN-50-3 -> 2); at S = 4 (and 8) the widening factor is kept and the base
    width follows the ImageNet ResNet table (32, 24).
    """
    check_S(S)
    if S == 1:
        return resnet_imagenet_base_width(1), k
    if S == 2:
        return resnet_imagenet_base_width(1), wrn_widen_factor(k, S)
    return resnet_imagenet_base_width(S), k


def round_efficientnet_filters(channels: float, divisor: int) -> int:
    """EfficientNet's channel rounding: nearest multiple of ``divisor``, never more than 10 % below."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def efficientnet_scaled_widths(S: int, width_coefficient: float) -> tuple[int, ...]:
    """Widths (stem, 7 stages, head) of a compound-scaled EfficientNet divided by S.

    The authors scale the divided B0 table (:func:`efficientnet_b0_widths`) by the variant's
    width coefficient and round to multiples of 8 for S = 1 and of 4 for S > 1 (finer, as the
    divided widths are small).
    """
    divisor = 8 if S == 1 else 4
    return tuple(round_efficientnet_filters(c * width_coefficient, divisor) for c in efficientnet_b0_widths(S))


def efficientnet_repeats(repeats: int, depth_coefficient: float) -> int:
    """Blocks of a stage after compound scaling: ceil(depth coefficient x B0's count); S keeps depth."""
    return int(math.ceil(depth_coefficient * repeats))
