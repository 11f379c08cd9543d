"""Architecture registry: a name such as ``wrn28_10`` -> how to build one small network.

Every family registers a regular expression; named groups in it become keyword arguments of the
family's builder, so ``wrn{d}_{k}`` needs one entry, not one per depth and width.

A builder builds ONE of the S small networks.  It always receives the same keyword arguments
(see :class:`BuildArgs`); the division rule for S, the width multiplier and the per-block split
factors are applied inside the family, because only the family knows which of its widths the
paper divides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from torch import nn


@dataclass(frozen=True)
class BuildArgs:
    """What every builder receives besides the arguments parsed out of the architecture name.

    ``width_mult`` scales every channel count of the divided network (channels are rounded to the
    nearest valid integer, see :func:`splitsearch.models.layers.scale_channels`), so ``1.0`` is the
    network exactly as the paper divides it.  ``block_factors`` has one split factor per block
    (seed 002); all ones is the unsplit network.  ``groups`` and ``split_depth`` are the semantic
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
        builder: builds one small network.
        examples: canonical names, shown in ``--help`` and error messages.
        num_blocks: number of blocks that take a split factor (length of ``block_factors``).
        min_input_size: smallest square input the network accepts (down-sampling stops there).
        width_unit: what one step of the width knob changes, for users reading a fitted config.
        supports_block_split: whether K_b > 1 is implemented for this family.
        supports_semantic_split: whether G > 1 (:mod:`splitsearch.split.semantic`) is implemented.
        priority: where several patterns match a name, the highest priority wins (so the
            bottleneck ``resnet110`` can be registered beside the basic ``resnet{6n+2}``).
    """

    pattern: str
    builder: Builder
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


_FAMILIES: list[ArchFamily] = []


def register_family(
    pattern: str,
    *,
    examples: tuple[str, ...],
    num_blocks: int,
    min_input_size: int = 8,
    width_unit: str | None = None,
    supports_block_split: bool = True,
    supports_semantic_split: bool = False,
    priority: int = 0,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` for every architecture name matching ``pattern``."""

    def decorate(builder: Builder) -> Builder:
        extra = {} if width_unit is None else {"width_unit": width_unit}
        _FAMILIES.append(
            ArchFamily(
                pattern=pattern,
                builder=builder,
                examples=examples,
                num_blocks=num_blocks,
                min_input_size=min_input_size,
                supports_block_split=supports_block_split,
                supports_semantic_split=supports_semantic_split,
                priority=priority,
                **extra,
            )
        )
        return builder

    return decorate


def _load_families() -> None:
    # Importing the package runs every family module's @register_family.
    import splitsearch.models  # noqa: F401


def resolve_arch(name: str) -> tuple[ArchFamily, dict[str, int]]:
    """Return the family that builds ``name`` and the integers parsed out of the name.

    Raises:
        ValueError: the name matches no family; the message lists the known names.
    """
    _load_families()
    matches = [(family, args) for family in _FAMILIES if (args := family.match(name)) is not None]
    if matches:
        return max(matches, key=lambda match: match[0].priority)
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(available_archs())}")


def available_families() -> list[ArchFamily]:
    """Every registered family, in registration order."""
    _load_families()
    return list(_FAMILIES)


def available_archs() -> list[str]:
    """Canonical architecture names (patterns such as ``wrn{d}_{k}`` accept more)."""
    _load_families()
    return [example for family in _FAMILIES for example in family.examples]
