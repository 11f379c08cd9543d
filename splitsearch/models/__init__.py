"""Model zoo: every family registers itself on import (see :mod:`splitsearch.models.registry`)."""

from __future__ import annotations

import dataclasses

from torch import nn

from splitsearch.models.registry import ArchFamily, BuildArgs, available_archs, resolve_arch
from splitsearch.split.blocks import check_block_factors

# Family modules, imported for their @register_family side effect.
from splitsearch.models import (  # noqa: F401,E402  isort: skip
    densenet,
    efficientnet,
    pyramidnet,
    resnet,
    resnet18,
    resnet_bottleneck,
    resnext,
    shake_shake,
    vgg,
    wrn,
)

SEMANTIC_SPLIT_FAMILIES = ("the semantic split (groups > 1) is implemented for the CIFAR ResNets with basic "
                           "blocks (resnet20, resnet32, ..., wrn16_8, wrn28_10, ...) only")

__all__ = ["ArchFamily", "BuildArgs", "available_archs", "build_network", "resolve_arch"]


def build_network(arch: str, args: BuildArgs) -> nn.Module:
    """Build ONE small network of architecture ``arch`` (on the current default device).

    Use ``with torch.device("meta"):`` around the call to build it without memory, as the cost
    module does.
    """
    family, name_args = resolve_arch(arch)
    factors = check_block_factors(args.block_factors, family.num_blocks, arch)
    if not family.supports_block_split and any(k > 1 for k in factors):
        raise ValueError(f"{arch} does not support block-wise splitting yet; use block_factors of all 1")
    if args.width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {args.width_mult}")
    if args.groups > 1 and not family.supports_semantic_split:
        raise ValueError(f"{arch}: {SEMANTIC_SPLIT_FAMILIES}")
    args = dataclasses.replace(args, block_factors=factors)
    return family.builder(args, **name_args)
