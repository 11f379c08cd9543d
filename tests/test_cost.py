import pytest
import torch
from torch import nn

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig
from splitsearch.cost import BudgetError, count_config, count_module, fit_width


@pytest.mark.parametrize(
    "config",
    [
        SplitConfig(arch="resnet20", S=2, dataset="cifar10"),
        SplitConfig(arch="resnet20", S=4, block_factors=(2, 2, 4), width_mult=0.7, dataset="cifar100"),
        SplitConfig(arch="wrn16_4", S=2, dataset="digits"),
        SplitConfig(arch="vgg16", S=1, block_factors=(8, 2, 2, 4, 4), width_mult=0.25, dataset="cifar10"),
    ],
    ids=lambda config: f"{config.arch}-S{config.S}",
)
def test_counted_params_equal_the_real_modules(config):
    cost = count_config(config)
    networks = build_networks(config)
    assert len(cost.networks) == len(networks) == config.S
    assert cost.params == sum(p.numel() for network in networks for p in network.parameters())
    assert cost.flops == 2 * cost.macs
    assert cost.macs == config.S * cost.networks[0].macs


def test_macs_and_peak_activation_of_a_hand_counted_network():
    with torch.device("meta"):
        network = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),  # 4x8x8 out: 3*4*9*64 = 6912 MACs, 1024 bytes
            nn.ReLU(inplace=True),  # in place: no new memory
            nn.Conv2d(4, 8, 3, padding=1, bias=False),  # 8x8x8 out: 4*8*9*64 = 18432 MACs, 2048 bytes
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 2),  # 16 MACs
        )
    cost = count_module(network, (3, 8, 8))
    assert cost.macs == 6912 + 18432 + 16
    assert cost.params == 3 * 4 * 9 + 4 * 8 * 9 + 8 * 2 + 2
    # Peak: the first conv's output is still referenced while the second conv writes its own.
    assert cost.activation_bytes == 1024 + 2048


def test_block_split_reduces_cost():
    unsplit = count_config(SplitConfig(arch="vgg16", dataset="cifar10"))
    split = count_config(SplitConfig(arch="vgg16", block_factors=(8, 2, 2, 4, 4), dataset="cifar10"))
    assert split.params < 0.6 * unsplit.params
    assert split.macs < 0.6 * unsplit.macs


@pytest.mark.parametrize(
    ("budget_params", "budget_macs"),
    [(600_000, None), (None, 30_000_000), (400_000, 25_000_000)],
)
def test_fit_width_lands_just_under_the_budget(budget_params, budget_macs):
    config = SplitConfig(arch="resnet20", S=4, dataset="cifar10")
    result = fit_width(config, budget_params=budget_params, budget_macs=budget_macs)
    if budget_params is not None:
        assert result.cost.params <= budget_params
    if budget_macs is not None:
        assert result.cost.macs <= budget_macs
    assert result.cost == count_config(result.config)
    # The next wider network breaks the budget, so no wider width fits.
    assert result.next_cost is not None
    assert (budget_params is not None and result.next_cost.params > budget_params) or (
        budget_macs is not None and result.next_cost.macs > budget_macs
    )
    assert 0 < result.step < 0.1
    assert result.usage > 1 - result.step


def test_fit_width_for_wrn28_10_at_36m_is_within_a_percent():
    result = fit_width(SplitConfig(arch="wrn28_10", S=4, dataset="cifar100"), budget_params=36_000_000)
    assert 0.99 <= result.usage <= 1.0


def test_budget_below_the_smallest_network_is_a_clear_error():
    with pytest.raises(BudgetError, match="budget too small for resnet20 with S=4"):
        fit_width(SplitConfig(arch="resnet20", S=4), budget_params=100)


def test_fit_width_needs_a_budget():
    with pytest.raises(BudgetError, match="give a parameter budget"):
        fit_width(SplitConfig(arch="resnet20"))


def test_semantic_groups_are_refused_until_the_semantic_split_exists():
    config = SplitConfig(arch="resnet20", groups=2)  # the field exists and validates...
    with pytest.raises(ValueError, match="semantic split .* is not implemented yet"):
        count_config(config)  # ...but no network is built or counted as if it were split
