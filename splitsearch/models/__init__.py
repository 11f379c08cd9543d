"""Model zoo: one module per family, listed with its facts in :mod:`splitsearch.models.registry`.

Importing the package loads no family (and no torch); :func:`build_network` imports the one it
builds.  The families build from :mod:`splitsearch.blocks` and implement its hooks, through which
the whole-network transformations of :mod:`splitsearch.split` reach them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from splitsearch.blocks.factors import check_block_factors
from splitsearch.models.registry import (
    SEMANTIC_SPLIT_FAMILIES,
    ArchFamily,
    ArchitectureError,
    BuildArgs,
    available_archs,
    resolve_arch,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ArchFamily", "ArchitectureError", "BuildArgs", "available_archs", "build_network", "resolve_arch"]


def build_network(arch: str, args: BuildArgs) -> nn.Module:
    """Build ONE small network of architecture ``arch`` (on the current default device).

    Use ``with torch.device("meta"):`` around the call to build it without memory, as the cost
    module does.
    """
    family, name_args = resolve_arch(arch)
    factors = check_block_factors(args.block_factors, family.num_blocks, arch)
    if not family.supports_block_split and any(k > 1 for k in factors):
        raise ArchitectureError(f"{arch} does not support block-wise splitting yet; use block_factors of all 1")
    if args.width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {args.width_mult}")
    if args.groups > 1 and not family.supports_semantic_split:
        raise ArchitectureError(f"{arch}: {SEMANTIC_SPLIT_FAMILIES}")
    args = dataclasses.replace(args, block_factors=factors)
    return family.load_builder()(args, **name_args)
