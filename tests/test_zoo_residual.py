"""WRN, bottleneck ResNet / SE-ResNet and ResNeXt families: names, division rules, block split.

Their costs against the paper's Table 2 are checked in test_reference_costs.py.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitsearch.blocks.fusion import Fusion
from splitsearch.models import BuildArgs, build_network, resolve_arch
from splitsearch.models.resnet import BasicBlock
from splitsearch.models.resnet_bottleneck import Bottleneck, SqueezeExcite

NAMES = ("wrn16_8", "wrn28_10", "wrn40_10", "resnet110", "resnet164", "se_resnet110", "se_resnet164",
         "resnext29_8x64d", "resnext29_16x64d")


@lru_cache(maxsize=None)
def meta_cost(name: str, S: int) -> tuple[int, int, tuple[int, ...]]:
    """Parameters, MACs and output shape of ONE small network, built and run on the meta device."""
    with torch.device("meta"):
        net = build_network(name, BuildArgs(num_classes=100, S=S))
        params = sum(p.numel() for p in net.parameters())
        # eval + no_grad halve the time of a meta forward and change no count.
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = net.eval()(torch.empty(1, 3, 32, 32))
    return params, counter.get_total_flops() // 2, tuple(out.shape)


def build(name: str, S: int = 1, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_network(name, BuildArgs(num_classes=100, S=S, **kwargs))


@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_full_size_builds_on_meta(name: str, S: int) -> None:
    assert meta_cost(name, S)[2] == (1, 100)


@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_block_split_builds_on_meta(name: str, S: int) -> None:
    """Full-size split networks build; their forward is checked on tiny variants below."""
    net = build(name, S, block_factors=(1, 2, 2))
    assert isinstance(net.stages[1][-1], Fusion) and not isinstance(net.stages[0][-1], Fusion)
    for stage, K in zip(net.stages, (1, 2, 2)):
        assert all(conv.out_channels % K == 0 for conv in stage.modules() if isinstance(conv, nn.Conv2d))


# Tiny variants (small depth or width_mult) so a real CPU forward stays fast.
@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("name, width_mult", [
    ("wrn10_2", 1.0), ("wrn16_8", 0.25), ("resnet110", 0.25), ("se_resnet20", 0.5),
    ("resnext29_2x4d", 1.0), ("resnext29_8x64d", 0.05),
])
def test_real_forward_on_cpu(name: str, width_mult: float, S: int) -> None:
    net = build_network(name, BuildArgs(num_classes=10, S=S, width_mult=width_mult, block_factors=(1, 2, 2)))
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_bottleneck_resnet110_wins_over_basic_block_pattern() -> None:
    assert resolve_arch("resnet110")[0].priority == 1
    assert isinstance(build("resnet110").stages[0][0], Bottleneck)
    assert isinstance(build("resnet56").stages[0][0], BasicBlock)


@pytest.mark.parametrize("name", ["wrn15_8", "wrn16_0", "se_resnet100", "resnext29_0x64d"])
def test_invalid_names_raise(name: str) -> None:
    with pytest.raises(ValueError):
        build(name)


@pytest.mark.parametrize("name, widths", [("wrn16_8", (128, 96, 64)), ("wrn28_10", (160, 112, 80)),
                                          ("wrn40_10", (160, 112, 80))])
def test_wrn_division_rule(name: str, widths: tuple[int, ...]) -> None:
    for S, width in zip((1, 2, 4), widths):
        net = build(name, S)
        assert net.stem[0].out_channels == 16
        assert [stage[0].conv1.out_channels for stage in net.stages] == [width, 2 * width, 4 * width]


def test_wrn_dropout_as_the_authors_set_it() -> None:
    head = build("wrn40_10", 4).classifier
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [pytest.approx(0.1 / 2)]
    assert not any(isinstance(m, nn.Dropout) for m in build("wrn28_10").classifier)


@pytest.mark.parametrize("name", ["resnet110", "se_resnet164"])
def test_bottleneck_division_rule(name: str) -> None:
    for S, base in zip((1, 2, 4), (16, 12, 8)):
        net = build(name, S)
        assert net.stem[0].out_channels == base
        first = [stage[0] for stage in net.stages]
        assert [block.conv2.out_channels for block in first] == [base, 2 * base, 4 * base]
        assert [block.conv3.out_channels for block in first] == [4 * base, 8 * base, 16 * base]


def test_se_module_as_the_authors_define_it() -> None:
    block = build("se_resnet110").stages[2][1]
    assert isinstance(block.se, SqueezeExcite)
    assert (block.se.fc1.in_channels, block.se.fc1.out_channels) == (256, 64)  # reduction 4 on CIFAR
    assert block.se.fc1.bias is not None
    assert isinstance(build("resnet110").stages[2][1].se, nn.Identity)


def test_resnext_division_rule() -> None:
    for S, cardinality in zip((1, 2, 4), (8, 4, 2)):
        net = build("resnext29_8x64d", S)
        assert net.stem[0].out_channels == 64
        first = [stage[0] for stage in net.stages]
        assert [block.conv2.groups for block in first] == [cardinality] * 3
        assert [block.conv2.out_channels for block in first] == [64 * cardinality * m for m in (1, 2, 4)]
        assert [block.conv3.out_channels for block in first] == [256, 512, 1024]


def test_resnext_width_mult_scales_width_per_group() -> None:
    net = build("resnext29_8x64d", width_mult=0.5)
    assert [stage[0].conv2.out_channels for stage in net.stages] == [8 * 32, 8 * 64, 8 * 128]
    finest = build("resnext29_8x64d", width_mult=1 / 64).stages[0][0].conv2
    assert finest.out_channels // finest.groups == 1


@pytest.mark.parametrize("name", ["resnext29_8x64d", "resnext29_2x4d"])
@pytest.mark.parametrize("factors", [(1, 2, 4), (3, 2, 1)])
def test_resnext_block_split_groups(name: str, factors: tuple[int, ...]) -> None:
    net = build(name, block_factors=factors, width_mult=0.3)
    cardinality = resolve_arch(name)[1]["cardinality"]
    for stage, K in zip(net.stages, factors):
        blocks = [module for module in stage if isinstance(module, Bottleneck)]
        assert blocks[0].conv1.groups == 1 and blocks[1].conv1.groups == K
        for block in blocks:
            assert block.conv2.groups == math.lcm(cardinality, K)
            assert block.conv3.groups == K
            assert block.conv2.out_channels % block.conv2.groups == 0
            assert block.conv3.out_channels % K == 0


@pytest.mark.parametrize("name", ["wrn16_8", "se_resnet110"])
def test_split_stage_first_conv_and_shortcut_stay_dense(name: str) -> None:
    stage = build(name, block_factors=(1, 4, 2)).stages[1]
    first, second = stage[0], stage[1]
    assert first.conv1.groups == 1 and first.shortcut[1].groups == 1
    assert second.conv1.groups == 4
    assert all(conv.out_channels % 4 == 0 for conv in stage.modules() if isinstance(conv, nn.Conv2d))
    if isinstance(first, Bottleneck):
        assert first.se.fc1.groups == 4
