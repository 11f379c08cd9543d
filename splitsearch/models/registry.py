"""Architecture registry: a name such as ``wrn28_10`` -> its family's facts and its builder.

Every family is one row of :data:`_FAMILIES`: a regular expression whose named groups become
keyword arguments of the family's builder (so ``wrn{d}_{k}`` needs one row, not one per depth
and width), what the family supports, and where its builder lives.  This module does not import
torch: the config checks a candidate against these facts, and ``splitsearch archs`` lists them,
without loading a model; the builder's module (which does import torch) is imported only when a
network is built.

A builder builds ONE of the S small networks.  It always receives the same keyword arguments
(see :class:`BuildArgs`); the division rule for S, the width multiplier and the per-block split
factors are applied inside the family, because only the family knows which of its widths the
paper divides.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from splitsearch.errors import SplitsearchError

if TYPE_CHECKING:
    from torch import nn

SEMANTIC_SPLIT_FAMILIES = ("the semantic split (groups > 1) is implemented for the CIFAR ResNets with basic "
                           "blocks (resnet20, resnet32, ..., wrn16_8, wrn28_10, ...) only")


class ArchitectureError(SplitsearchError, ValueError):
    """An architecture name that no family knows, or a depth or width its family cannot build."""


@dataclass(frozen=True)
class BuildArgs:
    """What every builder receives besides the arguments parsed out of the architecture name.

    ``width_mult`` scales every channel count of the divided network (channels are rounded to the
    nearest valid integer, see :func:`splitsearch.models.layers.scale_channels`), so ``1.0`` is the
    network exactly as the paper divides it.  ``block_factors`` has one split factor per block
    (block-wise split with fusion); all ones is the unsplit network.  ``groups`` and ``split_depth`` are the semantic
    split (:mod:`splitsearch.split.semantic`): the builder only rounds the split stages' widths so
    the groups come out equal; it always builds the unsplit network, which the split cuts.
    """

    num_classes: int
    in_channels: int = 3
    S: int = 1
    width_mult: float = 1.0
    block_factors: tuple[int, ...] = ()
    groups: int = 1
    split_depth: str | None = None


class Builder(Protocol):
    def __call__(self, args: BuildArgs, **name_args: int) -> nn.Module: ...


@dataclass(frozen=True)
class ArchFamily:
    """A registered family of architectures.

    Attributes:
        pattern: regular expression matched against the whole name; named groups are ints.
        builder: ``module:function`` of the function that builds one small network.
        examples: canonical names, shown in ``--help`` and error messages.
        num_blocks: number of blocks that take a split factor (length of ``block_factors``).
        min_input_size: smallest square input the network accepts (down-sampling stops there).
        width_unit: what one step of the width knob changes, for users reading a fitted config.
        supports_block_split: whether K_b > 1 is implemented for this family.
        supports_semantic_split: whether G > 1 (:mod:`splitsearch.split.semantic`) is implemented;
            its networks then implement the semantic hooks of :mod:`splitsearch.blocks.hooks`.
        priority: where several patterns match a name, the highest priority wins (so the
            bottleneck ``resnet110`` can be registered beside the basic ``resnet{6n+2}``).
    """

    pattern: str
    builder: str
    examples: tuple[str, ...]
    num_blocks: int
    min_input_size: int = 8
    width_unit: str = "every channel count scaled by width_mult, rounded to whole channels"
    supports_block_split: bool = True
    supports_semantic_split: bool = False
    priority: int = 0
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def match(self, name: str) -> dict[str, int] | None:
        found = self._regex.fullmatch(name)
        if found is None:
            return None
        return {key: int(value) for key, value in found.groupdict().items()}

    def load_builder(self) -> Builder:
        """The builder function, its module imported now (and torch with it)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)


_BOTTLENECK_WIDTH_UNIT = ("bottleneck base width 16/12/8 (S=1/2/4) x width_mult; bottleneck widths w, 2w, 4w "
                          "rounded to a multiple of the stage's split factor, outputs 4x that")

_IMAGENET_RESNET_UNIT = ("stem and stage widths x width_mult, rounded to whole channels (stage outputs and "
                         "bottleneck widths to multiples of the stage's split factor); finest step: 1 channel")
_IMAGENET_BLOCKS = "blocks of the block-wise split: the four stages (the stem is not split)"

_FAMILIES: list[ArchFamily] = [
    ArchFamily(
        r"densenet_bc190", "splitsearch.models.densenet:densenet_bc190", examples=("densenet_bc190",),
        num_blocks=3, min_input_size=4, supports_block_split=False,
        width_unit="growth rate k = 40/28/20 (S=1/2/4) x width_mult, rounded to whole channels "
                   "(stem 2k, bottlenecks 4k, transitions halve); finest step: 1 channel of growth rate",
    ),
    ArchFamily(
        r"efficientnet_b0", "splitsearch.models.efficientnet:efficientnet_b0", examples=("efficientnet_b0",),
        num_blocks=7, min_input_size=4, supports_block_split=False,
        width_unit="widths of the authors' table for S (stem, 7 stages, head; 32..1280 at S=1) x width_mult, "
                   "rounded to whole channels; finest step: 1 channel",
    ),
    ArchFamily(
        r"efficientnet_b(?P<variant>[1-7])", "splitsearch.models.efficientnet_imagenet:imagenet_efficientnet",
        examples=("efficientnet_b7",), num_blocks=7, min_input_size=32, supports_block_split=False,
        width_unit="ImageNet EfficientNet (torchvision's MBConv): the authors' divided B0 table x the variant's "
                   "width coefficient (rounded to 8 at S=1, 4 at S>1) x width_mult, rounded to whole channels; finest step: 1 channel",
    ),
    ArchFamily(
        r"pyramidnet(?P<depth>\d+)", "splitsearch.models.pyramidnet:pyramidnet",
        examples=("pyramidnet164", "pyramidnet272"), num_blocks=3, min_input_size=4, supports_block_split=False,
        width_unit="stem 16 and alpha (270 or 200, / sqrt(S)) both x width_mult; each bottleneck width rounds "
                   "to whole channels, its output is 4x; finest step: 1 bottleneck channel",
    ),
    ArchFamily(
        r"resnet(?P<depth>50|101|152)", "splitsearch.models.imagenet_resnet:imagenet_resnet",
        examples=("resnet50",), num_blocks=4, min_input_size=32, priority=1,
        width_unit="ImageNet bottleneck ResNet (3-conv stem, 4 stages): base width 64/44/32 (S=1/2/4) x width_mult; "
                   + _IMAGENET_RESNET_UNIT + "; " + _IMAGENET_BLOCKS,
    ),
    ArchFamily(
        r"resnext(?P<depth>50|101|152)_(?P<cardinality>\d+)x(?P<group_width>\d+)d",
        "splitsearch.models.imagenet_resnet:imagenet_resnext", examples=("resnext101_64x4d",), num_blocks=4,
        min_input_size=32,
        width_unit="ImageNet ResNeXt: cardinality d // S, width per group (finest step 1 channel per group) and "
                   "stem 64 x width_mult; " + _IMAGENET_BLOCKS,
    ),
    ArchFamily(
        r"se_resnext(?P<depth>50|101|152)_(?P<cardinality>\d+)x(?P<group_width>\d+)d",
        "splitsearch.models.imagenet_resnet:imagenet_se_resnext", examples=("se_resnext101_64x4d",), num_blocks=4,
        min_input_size=32,
        width_unit="ImageNet SE-ResNeXt (SE reduction 16): cardinality d // S, width per group x width_mult; "
                   "stage outputs multiples of 16 x the split factor; " + _IMAGENET_BLOCKS,
    ),
    ArchFamily(
        r"wrn(?P<depth>50)_(?P<k>\d+)", "splitsearch.models.imagenet_resnet:imagenet_wide_resnet",
        examples=("wrn50_2", "wrn50_3"), num_blocks=4, min_input_size=32, priority=1,
        width_unit="ImageNet WRN-d-k: bottleneck widths k' x planes; S=2 keeps base 64 and divides k "
                   "(k' = floor(k/sqrt 2 + 0.4)), S=4 keeps k and takes base 32; " + _IMAGENET_RESNET_UNIT + "; "
                   + _IMAGENET_BLOCKS,
    ),
    ArchFamily(
        r"resnet(?P<depth>\d+)", "splitsearch.models.resnet:cifar_resnet_basic",
        examples=("resnet20", "resnet32", "resnet56"), num_blocks=3, supports_semantic_split=True,
        width_unit="base width 16/12/8 (S=1/2/4) x width_mult; stages w, 2w, 4w rounded to whole channels "
                   "(multiples of the split factor and semantic groups)",
    ),
    ArchFamily(
        r"resnet18", "splitsearch.models.resnet18:resnet18", examples=("resnet18",), num_blocks=5, priority=1,
        width_unit="base width 64/44/32 (S=1/2/4) x width_mult; stem w, stages w, 2w, 4w, 8w "
                   "rounded to whole channels",
    ),
    # Only 110 and 164: other 9n+2 depths (20, 56, ...) are also 6n+2 and name basic-block ResNets.
    ArchFamily(
        r"resnet(?P<depth>110|164)", "splitsearch.models.resnet_bottleneck:cifar_resnet_bottleneck",
        examples=("resnet110", "resnet164"), num_blocks=3, width_unit=_BOTTLENECK_WIDTH_UNIT, priority=1,
    ),
    ArchFamily(
        r"se_resnet(?P<depth>\d+)", "splitsearch.models.resnet_bottleneck:cifar_se_resnet",
        examples=("se_resnet110", "se_resnet164"), num_blocks=3, width_unit=_BOTTLENECK_WIDTH_UNIT,
    ),
    ArchFamily(
        r"resnext29_(?P<cardinality>\d+)x(?P<group_width>\d+)d", "splitsearch.models.resnext:cifar_resnext29",
        examples=("resnext29_8x64d", "resnext29_16x64d"), num_blocks=3,
        width_unit="width per group (w, 2w, 4w per stage) x width_mult, finest step 1 channel per group; "
                   "stem 64 and stage outputs 256, 512, 1024 x width_mult",
    ),
    ArchFamily(
        r"shake_shake26_2x96d", "splitsearch.models.shake_shake:shake_shake26_2x96d",
        examples=("shake_shake26_2x96d",), num_blocks=3, min_input_size=4,
        width_unit="base width 96/64/48 (S=1/2/4) x width_mult; stages w, 2w, 4w and stem 16 rounded to "
                   "whole channels (multiples of the stage's split factor); finest step: 1 channel",
    ),
    ArchFamily(
        r"vgg16", "splitsearch.models.vgg:vgg16", examples=("vgg16",), num_blocks=5, min_input_size=32,
        width_unit="VGG16 widths 64..512 x width_mult / sqrt(S), each a multiple of its block's split factor",
    ),
    ArchFamily(
        r"wrn(?P<depth>\d+)_(?P<k>\d+)", "splitsearch.models.wrn:wide_resnet",
        examples=("wrn16_8", "wrn28_10", "wrn40_10"), num_blocks=3, supports_semantic_split=True,
        width_unit="stage widths 16k', 32k', 64k' (k' = divided widening factor) x width_mult, "
                   "rounded to a multiple of the stage's split factor and semantic groups; stem 16 x width_mult",
    ),
]


def resolve_arch(name: str) -> tuple[ArchFamily, dict[str, int]]:
    """Return the family that builds ``name`` and the integers parsed out of the name.

    Raises:
        ArchitectureError: the name matches no family; the message lists the known names.
    """
    matches = [(family, args) for family in _FAMILIES if (args := family.match(name)) is not None]
    if matches:
        return max(matches, key=lambda match: match[0].priority)
    raise ArchitectureError(f"unknown architecture {name!r}; known: {', '.join(available_archs())}")


def register_family(family: ArchFamily) -> None:
    """Add a family, your own network say (its builder ``"module:function"`` is imported when first built).

    The processes splitsearch starts for member-parallel training register the families of the
    process that started them (:func:`splitsearch.train.launch.launch`), so a family added here
    reaches them too.
    """
    if family not in _FAMILIES:
        _FAMILIES.append(family)


def available_families() -> list[ArchFamily]:
    """Every registered family, in registration order."""
    return list(_FAMILIES)


def available_archs() -> list[str]:
    """Canonical architecture names (patterns such as ``wrn{d}_{k}`` accept more)."""
    return [example for family in _FAMILIES for example in family.examples]
