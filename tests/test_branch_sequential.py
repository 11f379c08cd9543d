"""Split blocks run branch by branch (seed 002's deployment): same function, 1/K of the block's memory.

The memory figures are counted by hand from what :class:`splitsearch.cost._PeakActivationMode`
tracks: every tensor an operator returns, float32, alive until the last Python reference to it
goes; an in-place ReLU and a view add nothing; parameters, buffers and the input image are
excluded.  On the meta device batch norm returns ``empty_like(input)``: a new map.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from splitsearch.blocks.fusion import Fusion
from splitsearch.build import build_args
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config, count_module
from splitsearch.models import build_network
from splitsearch.models.vgg import vgg_block
from splitsearch.split.sequential import BranchSequentialBlock, branch_sequential, is_split_block

FLOAT32 = 4  # bytes

SPLIT_NETWORKS = [
    SplitConfig(arch="vgg16", block_factors=(2, 4, 1, 2, 4), width_mult=0.125, dataset="cifar10"),
    SplitConfig(arch="resnet20", block_factors=(2, 1, 4), dataset="cifar10"),
    SplitConfig(arch="resnet18", block_factors=(2, 2, 1, 2, 4), width_mult=0.25, dataset="cifar10"),
]


def _build(config: SplitConfig, device: str = "cpu") -> nn.Module:
    with torch.device(device):
        return build_network(config.arch, build_args(config))


def _randomize_batch_norms(network: nn.Module, generator: torch.Generator) -> None:
    """Random BN weights and running statistics, so a wrongly sliced BN changes the output.

    Freshly built, every BN is the identity in evaluation (and ``last_bn`` zeroes its residual path).
    """
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(generator=generator)
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)


@pytest.mark.parametrize("config", SPLIT_NETWORKS, ids=lambda config: config.arch)
def test_branch_by_branch_computes_the_grouped_network(config: SplitConfig) -> None:
    generator = torch.Generator().manual_seed(0)
    network = _build(config)
    _randomize_batch_norms(network, generator)
    network.eval()
    sequential = branch_sequential(network)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        expected, actual = network(images), sequential(images)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert not any(is_split_block(module) for module in sequential.modules())
    assert sum(isinstance(module, BranchSequentialBlock) for module in sequential.modules()) == sum(
        factor > 1 for factor in config.block_factors
    )


@pytest.mark.parametrize("config", SPLIT_NETWORKS, ids=lambda config: config.arch)
def test_branch_by_branch_has_the_same_params_and_macs(config: SplitConfig) -> None:
    network = _build(config, "meta")
    grouped, sequential = count_module(network, (3, 32, 32)), count_module(branch_sequential(network), (3, 32, 32))
    assert (sequential.params, sequential.macs) == (grouped.params, grouped.macs)
    assert grouped.sequential_activation_bytes == sequential.activation_bytes
    assert grouped.sequential_activation_bytes < grouped.activation_bytes


def test_the_original_network_is_left_alone() -> None:
    network = _build(SPLIT_NETWORKS[1])
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    branch_sequential(network)
    after = network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_fusion_knows_its_split_factor() -> None:
    network = _build(SplitConfig(arch="vgg16", block_factors=(8, 2, 1, 4, 4), dataset="cifar10"), "meta")
    fusions = [block[-1].branches if isinstance(block[-1], Fusion) else 1 for block in network.blocks]
    assert fusions == [8, 2, 1, 4, 4]
    with pytest.raises(TypeError, match="branches"):
        Fusion(8)
    with pytest.raises(ValueError, match="branches=0"):
        Fusion(8, branches=0)


# -- seed 002's memory argument, on one VGG block --------------------------------------------------

IN_CHANNELS, CHANNELS, SIZE = 4, 64, 16
FULL_MAP = CHANNELS * SIZE * SIZE * FLOAT32  # 65,536: one map of the block's full width
FUSED = CHANNELS * (SIZE // 2) * (SIZE // 2) * FLOAT32  # 16,384: the fusion's output, after the 2x2 pool


def test_a_split_vgg_block_needs_1_over_k_of_the_memory_inside_it_when_run_branch_by_branch() -> None:
    """vgg_block(4, 64, num_convs=3, K) on a 4x16x16 input: conv-BN-ReLU x3, then pool / fusion.

    Grouped form, any K (K = 1 is the unsplit block, whose max-pool ends it).  The peak is in
    the second (or third) conv-BN-ReLU, while its BN writes: the previous layer's output (held
    by the block's Sequential as that layer's input), this layer's conv output (held by the
    layer's Sequential as the BN's input) and the BN output; ReLU works in place.  Three maps
    of the full width: 3 * 65,536 = 196,608 bytes.  (The first layer reaches only two: its input
    is the image, excluded; the pool writes its output, 16,384 bytes, and int64 indices,
    32,768 bytes, beside one 65,536-byte map: 114,688.)

    Branch by branch (K > 1): each branch is the same three layers at width 64 / K, so the same
    three maps are 65,536 / K bytes each; from branch 1 on, the fused output (64 x 8 x 8,
    16,384 bytes) accumulated so far is alive too: 16,384 + 3 * 65,536 / K.  The other moments
    stay below for K <= 8: the pool (16,384 + 65,536 / K + 3 * 16,384 / K for output and
    indices) and the branch's 1x1 mixing conv (16,384 accumulated + its input 16,384 / K + its
    output 16,384).  With K = 8: 40,960 against 34,816.
    """
    for factor in (1, 2, 4, 8):
        with torch.device("meta"):
            block = vgg_block(IN_CHANNELS, CHANNELS, num_convs=3, split_factor=factor)
        cost = count_module(block, (IN_CHANNELS, SIZE, SIZE))
        assert cost.activation_bytes == 3 * FULL_MAP == 196_608
        if factor == 1:
            assert cost.sequential_activation_bytes == cost.activation_bytes
            continue
        inside_block = cost.sequential_activation_bytes - FUSED
        assert inside_block == 3 * FULL_MAP // factor  # 98,304 / 49,152 / 24,576 for K = 2 / 4 / 8
        assert cost.sequential_activation_bytes == {2: 114_688, 4: 65_536, 8: 40_960}[factor]


# -- what count reports --------------------------------------------------------------------------------

def test_candidate_cost_reports_the_branch_by_branch_peak() -> None:
    config = SplitConfig(arch="vgg16", S=2, block_factors=(8, 2, 2, 4, 4), width_mult=0.25, dataset="cifar10")
    cost = count_config(config)
    report = cost.to_dict()
    assert report["sequential_activation_bytes"] == cost.sequential_activation_bytes
    assert cost.sequential_activation_bytes == 2 * cost.networks[0].sequential_activation_bytes
    assert cost.sequential_activation_bytes < cost.activation_bytes
    assert report["networks"][0]["sequential_activation_bytes"] == cost.networks[0].sequential_activation_bytes


def test_an_unsplit_network_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def second_pass(network: nn.Module) -> nn.Module:
        raise AssertionError("an unsplit network needs no branch-by-branch pass")

    monkeypatch.setattr("splitsearch.cost.counting.branch_sequential", second_pass)
    cost = count_config(SplitConfig(arch="resnet20", S=2, dataset="cifar10"))
    assert cost.sequential_activation_bytes == cost.activation_bytes
    assert cost.to_dict()["sequential_activation_bytes"] == cost.activation_bytes


# -- what cannot run branch by branch ---------------------------------------------------------------

def test_a_module_that_mixes_branches_is_named() -> None:
    network = nn.Sequential(OrderedDict(
        stem=nn.Conv2d(3, 8, 3, padding=1),
        block=nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 8), Fusion(8, branches=2)),
    ))
    with pytest.raises(ValueError, match=r"block\.1 \(Linear\) cannot run branch by branch"):
        branch_sequential(network)


def test_a_dense_convolution_inside_the_block_is_refused() -> None:
    block = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), Fusion(8, branches=2))
    with pytest.raises(ValueError, match=r"network\.1 \(Conv2d 8->8, groups=1\) mixes the channels of 2 branches"):
        branch_sequential(block)


def test_count_reports_none_where_a_split_block_cannot_run_branch_by_branch() -> None:
    # Shake-shake's projection shortcut concatenates two convolutions: its channels are not the branches'.
    config = SplitConfig(arch="shake_shake26_2x96d", block_factors=(2, 1, 1), width_mult=0.25, dataset="cifar10")
    with pytest.raises(ValueError, match=r"stages\.0\.0 \(ShakeBlock\)"):
        branch_sequential(_build(config, "meta"))
    cost = count_config(config)
    assert cost.sequential_activation_bytes is None
    assert cost.to_dict()["sequential_activation_bytes"] is None
