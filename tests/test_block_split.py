"""Block-wise split with fusion (seed 002) on VGG16 and ResNet18.

Costs are checked against a closed form written here from seed 002 Eq. 1-2, independently of
the model code: a 3x3 layer split by K costs C_in * C_out * 9 / K weights, the first layer of a
block stays dense, and every split block adds a fusion 1x1 conv (C * C) with its BN (2C).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitsearch.blocks.fusion import Fusion
from splitsearch.models import BuildArgs, build_network, resolve_arch
from splitsearch.models.resnet import Shortcut

PAPER_FACTORS = (8, 2, 2, 4, 4)  # seed 002's VGG16 "proposed_I"
UNSPLIT = (1, 1, 1, 1, 1)
VGG16_CFG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_cost(factors: tuple[int, ...], num_classes: int = 10, size: int = 32) -> tuple[int, int]:
    """(params, MACs) of CIFAR VGG16-BN split by ``factors``, from seed 002 Eq. 1-2."""
    params = macs = 0
    c_in, hw = 3, size
    for convs, k in zip(VGG16_CFG, factors):
        for index, c_out in enumerate(convs):
            split = 1 if index == 0 else k
            assert (c_in * c_out * 9) % split == 0
            weights = c_in * c_out * 9 // split
            params += weights + 2 * c_out  # conv + its BN
            macs += weights * hw * hw
            c_in = c_out
        hw //= 2  # the block's max-pool (inside the fusion when split)
        if k > 1:
            params += c_in * c_in + 2 * c_in  # fusion 1x1 conv + BN
            macs += c_in * c_in * hw * hw
    params += c_in * num_classes + num_classes
    macs += c_in * num_classes
    return params, macs


def measured_cost(arch: str, factors: tuple[int, ...]) -> tuple[int, int]:
    """(params, MACs) of the built network, counted on the meta device.

    Eval mode: the last VGG fusion normalises a 1x1 map, which BN refuses for batch 1 in training.
    """
    with torch.device("meta"):
        net = build_network(arch, BuildArgs(num_classes=10, block_factors=factors)).eval()
        params = sum(p.numel() for p in net.parameters())
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, 32, 32))
    return params, counter.get_total_flops() // 2


def split_blocks(net: nn.Module) -> list[nn.Module]:
    """The five blocks that take a split factor, in order."""
    return list(net.blocks) if hasattr(net, "blocks") else [net.stem, *net.stages]


def branch_convs(block: nn.Module) -> list[nn.Conv2d]:
    """Convolutions on the block's main path, in order: not the fusion's, not a shortcut's."""
    excluded = {
        id(conv)
        for module in block.modules()
        if isinstance(module, (Fusion, Shortcut))
        for conv in module.modules()
        if isinstance(conv, nn.Conv2d)
    }
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and id(m) not in excluded]


@pytest.mark.parametrize("factors", [UNSPLIT, PAPER_FACTORS])
def test_vgg16_params_and_macs_match_eq_1_2(factors: tuple[int, ...]) -> None:
    assert measured_cost("vgg16", factors) == vgg16_cost(factors)


def test_vgg16_split_saves_what_the_formula_says() -> None:
    split, unsplit = measured_cost("vgg16", PAPER_FACTORS), measured_cost("vgg16", UNSPLIT)
    formula_split, formula_unsplit = vgg16_cost(PAPER_FACTORS), vgg16_cost(UNSPLIT)
    for measured_s, measured_u, formula_s, formula_u in zip(split, unsplit, formula_split, formula_unsplit):
        assert measured_s < measured_u
        assert Fraction(measured_s, measured_u) == Fraction(formula_s, formula_u)


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_split_network_runs_on_cpu(arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch, BuildArgs(num_classes=10, width_mult=0.25, block_factors=PAPER_FACTORS))
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
@pytest.mark.parametrize("factors", [(8, 2, 2, 4), (1, 1, 1, 1, 1, 1)])
def test_wrong_number_of_factors_names_arch_and_length(arch: str, factors: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"{arch} has 5 blocks.*needs 5 entries"):
        build_network(arch, BuildArgs(num_classes=10, block_factors=factors))


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_zero_factor_is_rejected(arch: str) -> None:
    with pytest.raises(ValueError, match="positive integers"):
        build_network(arch, BuildArgs(num_classes=10, block_factors=(8, 2, 0, 4, 4)))


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_split_block_groups_all_but_its_first_conv(arch: str) -> None:
    with torch.device("meta"):
        net = build_network(arch, BuildArgs(num_classes=10, block_factors=PAPER_FACTORS))
    for block, k in zip(split_blocks(net), PAPER_FACTORS, strict=True):
        groups = [conv.groups for conv in branch_convs(block)]
        assert groups[0] == 1
        assert all(g == k for g in groups[1:])
        fusions = [m for m in block.modules() if isinstance(m, Fusion)]
        assert len(fusions) == 1
        assert all(conv.groups == 1 for conv in fusions[0].modules() if isinstance(conv, nn.Conv2d))


def test_factor_one_leaves_vgg16_block_as_unsplit() -> None:
    with torch.device("meta"):
        mixed = build_network("vgg16", BuildArgs(num_classes=10, block_factors=(8, 1, 2, 1, 4)))
        plain = build_network("vgg16", BuildArgs(num_classes=10))
    for index in (1, 3):
        assert repr(mixed.blocks[index]) == repr(plain.blocks[index])


def test_resnet18_wins_over_the_resnet_6n_plus_2_pattern() -> None:
    family, _ = resolve_arch("resnet18")
    assert family.priority == 1 and family.num_blocks == 5


@pytest.mark.parametrize(("arch", "first_width"), [("vgg16", 32), ("resnet18", 32)])
def test_division_by_four_halves_the_first_width(arch: str, first_width: int) -> None:
    with torch.device("meta"):
        net = build_network(arch, BuildArgs(num_classes=10, S=4))
    assert branch_convs(split_blocks(net)[0])[0].out_channels == first_width
