import pytest
import torch
from torch import nn

from splitsearch.build import build_args, build_networks
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config, count_module
from splitsearch.cost.fitting import BudgetError, fit_width
from splitsearch.cost.paper_macs import UncountedModuleError, paper_macs
from splitsearch.models import available_archs, build_network


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


def _conv_bn_relu_pool_linear() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),  # 4x8x8 = 256 outputs, each 3*9 multiply-adds + 1 bias add
            nn.BatchNorm2d(4),  # 256 elements
            nn.ReLU(),
            nn.AvgPool2d(2),  # 4x4x4 = 64 outputs
            nn.AdaptiveAvgPool2d(1),  # 4 outputs, each the mean of 16 cells
            nn.Flatten(),
            nn.Linear(4, 3),  # 3 outputs, each 4 multiply-adds
        )


def test_hand_counted_network_in_both_conventions():
    network = _conv_bn_relu_pool_linear()
    params = (3 * 4 * 9 + 4) + (4 + 4) + (4 * 3 + 3)

    pytorch = count_module(network, (3, 8, 8), "pytorch")
    # PyTorch's FlopCounterMode: convolution and matrix product multiply-adds, nothing else.
    assert pytorch.macs == 256 * 27 + 3 * 4
    assert pytorch.params == params

    paper = count_module(network, (3, 8, 8), "paper")
    # thop: conv with its bias add, 2 per batch-norm element, 1 per average-pool output,
    # (16 + 1) per adaptive-pool output, the linear layer's multiplies; ReLU is free.
    assert paper.macs == 256 * (27 + 1) + 2 * 256 + 64 + 4 * (16 + 1) + 3 * 4
    assert paper.params == params
    assert paper.activation_bytes == pytorch.activation_bytes


def test_paper_convention_names_a_module_it_cannot_count():
    class Doubling(nn.Module):
        def forward(self, x):
            return 2 * x

    network = _conv_bn_relu_pool_linear()
    network.insert(3, Doubling())
    with pytest.raises(UncountedModuleError, match=r"no paper-convention MACs rule for 3 \(Doubling\)"):
        count_module(network, (3, 8, 8), "paper")
    assert count_module(network, (3, 8, 8), "pytorch").macs > 0  # PyTorch's count needs no rule


def test_counting_leaves_the_network_as_it_was():
    network = _conv_bn_relu_pool_linear().train()
    first = count_module(network, (3, 8, 8), "paper")
    assert network.training
    # No counting hook stays behind: a second count is not inflated by the first one's hooks.
    assert count_module(network, (3, 8, 8), "paper") == first
    assert count_module(network, (3, 8, 8), "pytorch") == count_module(_conv_bn_relu_pool_linear(), (3, 8, 8))


def test_batch_norm_is_real_again_after_counting_on_the_meta_device():
    # Counting on meta swaps batch norm for a shape-only stand-in; the swap must not outlive it.
    network = _conv_bn_relu_pool_linear()
    count_module(network, (3, 8, 8), "paper")
    network = network.to_empty(device="cpu")
    batch_norm = network[1]
    batch_norm.reset_parameters()
    batch_norm.train()
    output = batch_norm(torch.randn(4, 4, 8, 8) * 3 + 5)
    assert output.mean().abs() < 1e-5 and (output.var(unbiased=False) - 1).abs() < 1e-3


@pytest.mark.parametrize("arch", available_archs())
def test_module_hooks_see_every_convolution_and_matrix_product(arch):
    # The paper convention counts per module; PyTorch counts per operator.  Their common part
    # (conv and linear multiply-adds without biases) must agree, or a module went uncounted.
    config = SplitConfig(arch=arch, S=2, dataset="cifar100")
    with torch.device("meta"):
        network = build_network(arch, build_args(config))
    counted = paper_macs(network, (3, 32, 32)).by_kind
    assert counted["convolution"] + counted["linear"] == count_module(network, (3, 32, 32)).macs
    assert counted["batch_norm"] > 0 and counted["pooling"] > 0


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
    with pytest.raises(BudgetError, match="give a parameter, MACs or activation-memory budget"):
        fit_width(SplitConfig(arch="resnet20"))


