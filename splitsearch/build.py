"""Build the S small networks of a candidate: the one public entry from a config to modules."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from splitsearch.config import SplitConfig
from splitsearch.data.specs import dataset_info
from splitsearch.models import BuildArgs, build_network


def build_args(config: SplitConfig) -> BuildArgs:
    """What the family builder needs, with the dataset's input channels and class count.

    Raises:
        ValueError: ``groups > 1``: the field exists for the semantic split, which is not built
            yet; refusing beats silently training the unsplit network under that name.
    """
    if config.groups > 1:
        raise ValueError(
            f"groups={config.groups}: the semantic split (Kim et al.) is not implemented yet; use groups: 1"
        )
    info = dataset_info(config.dataset)
    return BuildArgs(
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        S=config.S,
        width_mult=config.width_mult,
        block_factors=config.block_factors,
    )


def build_networks(config: SplitConfig, device: torch.device | str | None = None) -> list[nn.Module]:
    """The S small networks of ``config``: same architecture, independent random initialisation.

    Args:
        config: the candidate.
        device: where to create the parameters (``"meta"`` builds without memory).
    """
    args = build_args(config)
    with torch.device(device) if device is not None else nullcontext():
        return [build_network(config.arch, args) for _ in range(config.S)]

