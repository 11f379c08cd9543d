"""Build the S small networks of a candidate: the one public entry from a config to modules.

With ``groups`` > 1 a network is the semantic split's cut network (contiguous groups, the
architecture ``count`` measures and a trained split network loads into); ``grouping=True``
gives the unsplit network its first stage trains instead (same widths).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from splitsearch.config import SplitConfig
from splitsearch.data.specs import dataset_info
from splitsearch.models import BuildArgs, build_network
from splitsearch.split.semantic import SemanticPlan, plan_for, split_network


def build_args(config: SplitConfig) -> BuildArgs:
    """What the family builder needs, with the dataset's input channels and class count."""
    info = dataset_info(config.dataset)
    return BuildArgs(
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        S=config.S,
        width_mult=config.width_mult,
        block_factors=config.block_factors,
        groups=config.groups,
        split_depth=config.split_depth,
    )


def build_one(config: SplitConfig, grouping: bool = False) -> nn.Module:
    """One small network of ``config`` on the current default device (cut if ``groups`` > 1)."""
    network = build_network(config.arch, build_args(config))
    if config.groups == 1 or grouping:
        return network
    return split_network(network, semantic_plan(config, network))


def semantic_plan(config: SplitConfig, network: nn.Module) -> SemanticPlan:
    """The semantic split of ``config`` laid over ``network`` (an unsplit network of its architecture)."""
    return plan_for(network, config.groups, config.split_depth)


def build_networks(config: SplitConfig, device: torch.device | str | None = None,
                   grouping: bool = False) -> list[nn.Module]:
    """The S small networks of ``config``: same architecture, independent random initialisation.

    Args:
        config: the candidate.
        device: where to create the parameters (``"meta"`` builds without memory).
        grouping: with ``groups`` > 1, the unsplit networks the semantic split's first stage trains.
    """
    with torch.device(device) if device is not None else nullcontext():
        return [build_one(config, grouping) for _ in range(config.S)]

