"""Packed (fused) and sequential ensembles give the same numbers; packing refuses what it cannot do.

The zoo comparisons run in float64 with ``torch.testing.assert_close``'s float64 defaults
(rtol 1e-7, atol 1e-7): in float32 a grouped convolution sums in a different order than S separate
ones, and through 36 blocks with batch statistics of 4 samples that rounding grows to ~1e-4
relative, which would hide nothing but fails float32's default tolerance.  One float32 case
(``test_float32_matches_within_default_tolerance``) keeps the everyday precision honest.
BN parameters and running statistics are randomised first: freshly built networks zero their last
BN in every residual block, which would hide a packing error inside the residual branches.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig
from splitsearch.ensemble import (
    FusedEnsemble,
    SequentialEnsemble,
    can_fuse,
    make_ensemble,
    pack,
    pack_state_dicts,
    unpack,
    unpack_state_dict,
)
from splitsearch.models.registry import available_families

BATCH = 4

# (arch, S, block_factors): one case per fusable family, plus block-wise splits (grouped convs).
FUSABLE_CASES = [
    ("resnet20", 2, ()),
    ("resnet20", 3, (1, 2, 2)),
    ("wrn16_8", 2, ()),
    ("resnet110", 2, ()),
    ("se_resnet110", 2, (1, 1, 2)),
    ("resnext29_8x64d", 2, ()),
    ("resnext29_8x64d", 2, (1, 2, 1)),
    ("vgg16", 2, (2, 2, 2, 2, 2)),
    ("resnet18", 2, (2, 1, 2, 1, 2)),
    ("wrn50_2", 2, (1, 2, 1, 2)),
    ("resnext50_32x4d", 2, (1, 2, 1, 1)),
]


def _networks(arch: str, S: int, block_factors: tuple[int, ...] = (), device: str | None = None) -> list[nn.Module]:
    config = SplitConfig(arch=arch, S=S, block_factors=block_factors, width_mult=0.25, dataset="cifar10")
    networks = build_networks(config, device=device)
    if device != "meta":
        for network in networks:
            _randomise(network)
    return networks


def _randomise(network: nn.Module) -> None:
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.2, 0.6)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0, 0.1)


def _views(S: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(S, BATCH, 3, 32, 32, dtype=dtype)


def _member_grads(network: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.grad for name, parameter in network.named_parameters()}


@pytest.mark.parametrize(("arch", "S", "block_factors"), FUSABLE_CASES)
def test_fused_matches_sequential(arch: str, S: int, block_factors: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    networks = [network.double() for network in _networks(arch, S, block_factors)]
    sequential = SequentialEnsemble(copy.deepcopy(networks))
    fused = pack(networks)
    views, labels = _views(S, torch.float64), torch.randint(0, 10, (BATCH,))

    # Train mode: BN normalises with batch statistics and updates its running statistics.
    logits = {}
    for name, ensemble in (("sequential", sequential), ("fused", fused)):
        out = ensemble.train()(views)
        assert out.shape == (S, BATCH, 10)
        sum(F.cross_entropy(member_logits, labels) for member_logits in out).backward()
        logits[name] = out.detach()
    assert_close(logits["fused"], logits["sequential"])

    unpacked_states = unpack_state_dict(fused.network.state_dict(), fused.template, S)
    unpacked_grads = unpack_state_dict(_member_grads(fused.network), fused.template, S)
    for member, state, grads in zip(sequential.members, unpacked_states, unpacked_grads):
        assert_close(state, member.state_dict())  # parameters and BN running statistics
        assert_close(grads, _member_grads(member))

    # Eval mode: BN normalises with the running statistics just updated.
    with torch.no_grad():
        assert_close(fused.eval()(views), sequential.eval()(views))


def test_float32_matches_within_default_tolerance() -> None:
    """float32, train mode: logits, and member 0's stem gradient against its slice of the packed one."""
    torch.manual_seed(0)
    networks = _networks("resnet20", 2)
    sequential, fused = SequentialEnsemble(copy.deepcopy(networks)), pack(networks)
    views = _views(2)
    expected, actual = sequential(views), fused(views)
    assert_close(actual, expected)
    expected.sum().backward()
    actual.sum().backward()
    member_grad = sequential.networks[0].stem[0].weight.grad
    assert_close(fused.network.stem[0].weight.grad[: member_grad.shape[0]], member_grad)


@pytest.mark.parametrize(("arch", "S", "block_factors"), [FUSABLE_CASES[1], FUSABLE_CASES[7]])
def test_pack_unpack_round_trip(arch: str, S: int, block_factors: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    networks = _networks(arch, S, block_factors)
    networks[1](torch.randn(BATCH, 3, 32, 32))  # members with different num_batches_tracked are fine too
    members = unpack(pack(networks))
    assert len(members) == S
    for original, member in zip(networks, members):
        assert type(member) is type(original)
        original_state, member_state = original.state_dict(), member.state_dict()
        assert member_state.keys() == original_state.keys()
        for key, value in original_state.items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(member_state[key], value), key
    states = [network.state_dict() for network in networks]
    for state, back in zip(states, unpack_state_dict(pack_state_dicts(states, networks[0]), networks[0], S)):
        assert all(torch.equal(back[key], state[key]) for key in state if not key.endswith("num_batches_tracked"))


def test_members() -> None:
    networks = _networks("resnet20", 2)
    assert SequentialEnsemble(networks).members == networks
    fused = pack(networks)
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        for original, member in zip(networks, fused.eval().members):
            assert_close(member(x), original.eval()(x))


def test_views_must_have_one_view_per_member() -> None:
    fused = pack(_networks("resnet20", 2))
    with pytest.raises(ValueError, match="S=2"):
        fused(torch.randn(3, BATCH, 3, 32, 32))


@pytest.mark.parametrize("family", available_families(), ids=lambda family: family.examples[0])
def test_can_fuse_agrees_with_pack(family) -> None:
    arch = family.examples[0]
    networks = _networks(arch, 2, device="meta")
    if can_fuse(arch):
        assert isinstance(pack(networks), FusedEnsemble)
    else:
        with pytest.raises(ValueError, match="cannot pack"):
            pack(networks)


@pytest.mark.parametrize(
    ("arch", "reason"),
    [("densenet_bc190", r"DenseLayer\) calls cat"), ("pyramidnet164", r"PyramidBottleneck\) calls pad"),
     ("shake_shake26_2x96d", r"ShakeBlock\) calls rand"), ("efficientnet_b0", r"MBConv\) calls rand")],
)
def test_pack_names_what_mixes_members(arch: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        pack(_networks(arch, 2, device="meta"))


class _ViewSqueezeExcite(nn.Module):
    """SE written with ``.view(b, c)``: a stored channel count, which packing would get wrong."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        gate = torch.sigmoid(self.fc(self.pool(x).view(b, c)))
        return x * gate.view(b, c, 1, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), "GroupNorm"),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1)), "Softmax"),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _ViewSqueezeExcite(4)), "calls view"),
    ],
)
def test_pack_refuses_layers_it_cannot_convert(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack([make(), make()])


class _FlattenHead(nn.Module):
    """torchvision's head idiom, ``x.view(x.size(0), -1)`` on a 2x2 map: each member stays contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


def test_flatten_to_batch_size_packs() -> None:
    networks = [_FlattenHead() for _ in range(3)]
    views = torch.randn(3, BATCH, 3, 8, 8)
    assert_close(pack(networks)(views), SequentialEnsemble(networks)(views))


def test_pack_refuses_different_architectures() -> None:
    with pytest.raises(ValueError, match="different architectures"):
        pack([nn.Conv2d(3, 4, 3), nn.Conv2d(3, 8, 3)])


def test_make_ensemble_fuses_where_it_can() -> None:
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="cifar10")
    ensemble = make_ensemble(config, mode="fused")
    assert isinstance(ensemble, FusedEnsemble)
    assert ensemble(_views(2)).shape == (2, BATCH, 10)
    assert isinstance(make_ensemble(config, mode="sequential"), SequentialEnsemble)
    # auto: packed off the CPU (meta stands in for an accelerator), one after another on it.
    assert isinstance(make_ensemble(config, device="meta"), FusedEnsemble)
    assert isinstance(make_ensemble(config, device="cpu"), SequentialEnsemble)
    with pytest.raises(ValueError, match="mode"):
        make_ensemble(config, mode="parallel")


def test_make_ensemble_falls_back_to_sequential() -> None:
    config = SplitConfig(arch="densenet_bc190", S=2, width_mult=0.25, dataset="cifar10")
    with pytest.warns(UserWarning, match="densenet_bc190: running the 2 networks one after another"):
        ensemble = make_ensemble(config, device="meta")
    assert isinstance(ensemble, SequentialEnsemble)
    with pytest.raises(ValueError, match="cannot be fused"):
        make_ensemble(config, mode="fused", device="meta")
