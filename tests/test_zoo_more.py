"""DenseNet-BC, PyramidNet, Shake-Shake and EfficientNet-B0: build, divide, train a step.

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
from splitsearch.models.densenet import DenseLayer
from splitsearch.models.pyramidnet import PyramidBottleneck, ShakeDrop
from splitsearch.models.shake_shake import ShakeBlock, shake_shake

NAMES = ("densenet_bc190", "pyramidnet164", "pyramidnet272", "shake_shake26_2x96d", "efficientnet_b0")
NUM_CLASSES = 100


@lru_cache(maxsize=None)
def meta_cost(name: str, S: int) -> tuple[tuple[int, ...], int, int]:
    """(output shape, params, MACs) of one small network on a 1x3x32x32 meta input.

    Evaluation mode: the count is the same in both modes, and meta batch norm is twice as fast
    without batch statistics (training mode on meta is covered by ``test_random_ops_run_on_meta``).
    """
    with torch.device("meta"):
        net = build_network(name, BuildArgs(num_classes=NUM_CLASSES, S=S)).eval()
        params = sum(p.numel() for p in net.parameters())
        with FlopCounterMode(display=False) as counter:
            out = net(torch.empty(1, 3, 32, 32))
    return tuple(out.shape), params, counter.get_total_flops() // 2


@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_builds_on_meta(name: str, S: int) -> None:
    shape, _, _ = meta_cost(name, S)
    assert shape == (1, NUM_CLASSES)


def test_random_ops_run_on_meta() -> None:
    """ShakeDrop, shake-shake and drop-path draw their randomness on the input's device."""
    with torch.device("meta"):
        x = torch.empty(2, 3, 4, 4, requires_grad=True)
        ShakeDrop(0.5).train()(x).sum().backward()
        assert x.grad.device.type == "meta"
        for name in ("shake_shake26_2x96d", "efficientnet_b0"):
            net = build_network(name, BuildArgs(num_classes=NUM_CLASSES, width_mult=0.25)).train()
            net(torch.empty(2, 3, 32, 32)).sum().backward()


@pytest.mark.parametrize("name", NAMES)
def test_tiny_variant_trains_on_cpu(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(name, BuildArgs(num_classes=10, S=2, width_mult=0.1))
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(net(inputs), targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(inputs), net(inputs)), "evaluation must be deterministic"


@pytest.mark.parametrize("name", NAMES)
def test_smallest_input(name: str) -> None:
    family, _ = resolve_arch(name)
    size = family.min_input_size
    with torch.device("meta"):
        out = build_network(name, BuildArgs(num_classes=NUM_CLASSES)).eval()(torch.empty(1, 3, size, size))
    assert out.shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(("S", "growth"), [(1, 40), (2, 28), (4, 20)])
def test_densenet_growth_rate_divided(S: int, growth: int) -> None:
    with torch.device("meta"):
        net = build_network("densenet_bc190", BuildArgs(num_classes=NUM_CLASSES, S=S))
    layers = [m for m in net.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 3 * 31
    assert {layer.branch[-1].out_channels for layer in layers} == {growth}
    assert net.stem[0].out_channels == 2 * growth


@pytest.mark.parametrize("S", [1, 2, 4])
def test_pyramidnet_alpha_and_shakedrop_divided(S: int) -> None:
    with torch.device("meta"):
        net = build_network("pyramidnet272", BuildArgs(num_classes=NUM_CLASSES, S=S))
    blocks = [m for m in net.modules() if isinstance(m, PyramidBottleneck)]
    assert len(blocks) == 90
    assert net.stem[0].out_channels == 16
    assert blocks[-1].branch[-2].num_features == 4 * round(16 + 200 / math.sqrt(S))
    assert blocks[-1].branch[-1].p == pytest.approx(0.5 / math.sqrt(S))


@pytest.mark.parametrize(("S", "width"), [(1, 96), (2, 64), (4, 48)])
def test_shake_shake_base_width_divided(S: int, width: int) -> None:
    with torch.device("meta"):
        net = build_network("shake_shake26_2x96d", BuildArgs(num_classes=NUM_CLASSES, S=S))
    stages = [stage for stage in net.stages if isinstance(stage, nn.Sequential)]
    assert [stage[0].branches[0][1].out_channels for stage in stages] == [width, 2 * width, 4 * width]


def test_efficientnet_widths_and_cifar_strides() -> None:
    with torch.device("meta"):
        net = build_network("efficientnet_b0", BuildArgs(num_classes=NUM_CLASSES, S=2))
        features = net.stages(net.stem(torch.empty(1, 3, 32, 32)))
    assert net.stem[0].out_channels == 24 and net.stem[0].stride == (1, 1)
    assert features.shape == (1, 920, 8, 8)


def test_width_mult_shrinks_every_family() -> None:
    for name in NAMES:
        with torch.device("meta"):
            full, half = (build_network(name, BuildArgs(num_classes=10, width_mult=w)) for w in (1.0, 0.5))
        assert sum(p.numel() for p in half.parameters()) < 0.4 * sum(p.numel() for p in full.parameters())


def test_shake_shake_block_split() -> None:
    with torch.device("meta"):
        net = build_network("shake_shake26_2x96d", BuildArgs(num_classes=10, block_factors=(2, 1, 4)))
        out = net(torch.empty(1, 3, 32, 32))
    assert out.shape == (1, 10)
    blocks = [m for m in net.stages[0] if isinstance(m, ShakeBlock)]
    assert blocks[0].branches[0][1].groups == 1 and blocks[1].branches[0][1].groups == 2
    assert isinstance(net.stages[0][-1], Fusion)
    assert all(m.groups == 1 for m in net.stages[1].modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["densenet_bc190", "pyramidnet272", "efficientnet_b0"])
def test_block_split_refused(name: str) -> None:
    family, _ = resolve_arch(name)
    with pytest.raises(ValueError, match="block-wise"):
        build_network(name, BuildArgs(num_classes=10, block_factors=(2,) + (1,) * (family.num_blocks - 1)))


def test_stochastic_mixers_train_and_eval() -> None:
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    drop = ShakeDrop(0.3)
    assert torch.allclose(drop.eval()(x), 0.7 * x)
    assert torch.equal(ShakeDrop(0.0).train()(x), x)
    drop.train()(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    assert torch.allclose(shake_shake(a, b, training=False), (a + b) / 2)
    mixed = shake_shake(a, b, training=True)
    assert ((mixed - torch.minimum(a, b)) >= -1e-6).all() and ((torch.maximum(a, b) - mixed) >= -1e-6).all()


# Seed 004, Table 2 (CIFAR-100): params and MACs of all S networks together.
