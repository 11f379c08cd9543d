"""Semantic split (SplitNet): plan, regularisers, hard assignment, the cut, counting and config."""

import itertools

import pytest
import torch
from torch import nn

from splitsearch.blocks.semantic_groups import stage_groups
from splitsearch.build import build_one, semantic_plan
from splitsearch.config import ConfigError, SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.split.grouping import SemanticGrouping, balance, disjointness
from splitsearch.split.semantic import CLASSES, GroupedLinear, balanced_assignment, group_sizes, split_network

DEPTHS = [("fc", 2), ("shallow", 2), ("deep", 2), ("hierarchical", 4), ("shallow", 3)]


def unsplit(depth: str, groups: int, arch: str = "resnet20", width_mult: float = 0.5):
    config = SplitConfig(arch=arch, groups=groups, split_depth=depth, width_mult=width_mult, dataset="cifar10")
    torch.manual_seed(0)
    network = build_one(config, grouping=True)
    return config, network, semantic_plan(config, network)


def random_batch_norms(network: nn.Module) -> None:
    """Non-trivial BN statistics, so a wrongly permuted BN changes the logits."""
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)


def random_balanced_assignment(plan, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, node_set in plan.node_sets.items():
        groups = torch.repeat_interleave(torch.arange(node_set.groups),
                                         torch.tensor(group_sizes(node_set.size, node_set.groups)))
        result[name] = groups[torch.randperm(node_set.size, generator=generator)]
    return result


def connected(layer, plan, assignment) -> torch.Tensor:
    """[out, in] mask of the connections a layer keeps: input and output in the same (super)group."""
    outputs, inputs = assignment[layer.outputs], assignment[layer.inputs]
    ratio = plan.node_sets[layer.outputs].groups // plan.node_sets[layer.inputs].groups
    return (outputs // ratio)[:, None] == inputs[None, :]


def zero_inter_group_weights(network, plan, assignment) -> None:
    with torch.no_grad():
        for layer in plan.layers:
            if layer.inputs is None:
                continue
            weight = network.get_submodule(layer.path).weight
            mask = connected(layer, plan, assignment).to(weight.dtype)
            weight.mul_(mask[:, :, None, None] if weight.dim() == 4 else mask)


# -- which stages each depth cuts -----------------------------------------------------------------

def test_stage_groups_per_depth():
    assert stage_groups(3, 2, "fc") == (1, 1, 1)
    assert stage_groups(3, 2, "shallow") == (1, 1, 2)
    assert stage_groups(3, 2, "deep") == (1, 2, 2)
    assert stage_groups(3, 4, "hierarchical") == (1, 2, 4)


@pytest.mark.parametrize("depth, groups", DEPTHS)
def test_the_stem_and_first_stage_are_never_split(depth, groups):
    _, network, plan = unsplit(depth, groups)
    assert all(not layer.path.startswith(("stem", "stages.0")) for layer in plan.layers)
    split = split_network(network, plan)
    assert all(conv.groups == 1 for conv in list(split.stem.modules()) + list(split.stages[0].modules())
               if isinstance(conv, nn.Conv2d))


# -- regularisers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("depth, groups", DEPTHS)
def test_regularisers_are_one_at_uniform_assignments_and_initial_weights(depth, groups):
    _, network, plan = unsplit(depth, groups)
    grouping = SemanticGrouping(network, plan)
    with torch.no_grad():
        for value in grouping.values.values():
            value.zero_()  # softmax of equal logits: exactly uniform
    values = grouping.regularisers(network)
    for value in (values.disjoint, values.group_weight, values.balance):
        assert value.item() == pytest.approx(1.0, abs=1e-5)


def test_disjointness_falls_to_zero_as_assignments_become_hard():
    hard = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).t().float()
    uniform = torch.full_like(hard, 1 / 3)
    values = [disjointness((1 - t) * uniform + t * hard).item() for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values[0] == pytest.approx(1.0)
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] == pytest.approx(0.0, abs=1e-7)


def test_balance_is_one_for_equal_groups_and_more_for_unequal_ones():
    equal = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1]), 2).t().float()
    unequal = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 1]), 2).t().float()
    collapsed = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0]), 2).t().float()
    assert balance(equal).item() == pytest.approx(1.0)
    assert 1.0 < balance(unequal).item() < balance(collapsed).item() == pytest.approx(2.0)


def test_group_weight_falls_as_inter_group_weights_shrink():
    _, network, plan = unsplit("deep", 2)
    grouping = SemanticGrouping(network, plan)
    assignment = random_balanced_assignment(plan)
    with torch.no_grad():  # the assignments: almost hard, at the chosen groups
        for name, groups in assignment.items():
            grouping.values[name.replace(".", ":")].copy_(
                torch.nn.functional.one_hot(groups, plan.node_sets[name].groups).t().float() * 20)
    values = []
    for keep in (1.0, 0.5, 0.1, 0.0):
        shrunk = build_one(SplitConfig(arch="resnet20", groups=2, split_depth="deep", width_mult=0.5,
                                       dataset="cifar10"), grouping=True)
        shrunk.load_state_dict(network.state_dict())
        with torch.no_grad():
            for layer in plan.layers:
                if layer.inputs is not None:
                    weight = shrunk.get_submodule(layer.path).weight
                    mask = connected(layer, plan, assignment).to(weight.dtype)
                    mask = mask + keep * (1 - mask)
                    weight.mul_(mask[:, :, None, None] if weight.dim() == 4 else mask)
        values.append(grouping.regularisers(shrunk).group_weight.item())
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] < 1e-3


# -- hard assignment ------------------------------------------------------------------------------

def test_balanced_assignment_is_the_argmax_where_that_is_balanced():
    soft = torch.tensor([[0.9, 0.2, 0.7, 0.1], [0.1, 0.8, 0.3, 0.9]])
    assert balanced_assignment(soft).tolist() == [0, 1, 0, 1]


def test_balanced_assignment_repairs_a_collapsed_grouping_into_equal_groups():
    soft = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.55, 0.51], [0.1, 0.2, 0.3, 0.4, 0.45, 0.49]])
    hard = balanced_assignment(soft)
    assert torch.bincount(hard, minlength=2).tolist() == [3, 3]
    assert hard[:3].tolist() == [0, 0, 0]  # the surest nodes keep their argmax
    uneven = balanced_assignment(torch.rand(3, 10, generator=torch.Generator().manual_seed(1)))
    assert sorted(torch.bincount(uneven, minlength=3).tolist()) == [3, 3, 4]


# -- the cut --------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth, groups", DEPTHS)
def test_the_split_keeps_exactly_the_intra_group_weights(depth, groups):
    """Every cut layer holds sum_g |in_g| |out_g| k^2 weights, counted pair by pair from the assignment."""
    _, network, plan = unsplit(depth, groups)
    assignment = random_balanced_assignment(plan, seed=3)
    split = split_network(network, plan, assignment)
    for layer in plan.layers:
        original = network.get_submodule(layer.path)
        kernel = original.weight[0, 0].numel() if original.weight.dim() == 4 else 1
        if layer.inputs is None:
            expected = original.weight.numel()
        else:
            expected = int(connected(layer, plan, assignment).sum()) * kernel
        cut = split.get_submodule(layer.path)
        kept = sum(head.weight.numel() for head in cut.heads) if isinstance(cut, GroupedLinear) else cut.weight.numel()
        assert kept == expected, layer.path
    removed = sum(network.get_submodule(layer.path).weight.numel() - split.get_submodule(layer.path).weight.numel()
                  for layer in plan.convolutions)
    classifier = network.get_submodule(plan.classifier)
    heads = split.get_submodule(plan.classifier).heads
    removed += classifier.weight.numel() - sum(head.weight.numel() for head in heads)
    assert sum(p.numel() for p in split.parameters()) == sum(p.numel() for p in network.parameters()) - removed


@pytest.mark.parametrize("depth, groups", DEPTHS)
def test_split_logits_equal_the_unsplit_logits_when_inter_group_weights_are_zero(depth, groups):
    _, network, plan = unsplit(depth, groups)
    random_batch_norms(network)
    with torch.no_grad():
        classifier = network.get_submodule(plan.classifier)
        classifier.weight.normal_()
        classifier.bias.normal_()
    assignment = random_balanced_assignment(plan, seed=5)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    network.eval()
    with_inter_group = split_network(network, plan, assignment).eval()
    assert not torch.allclose(with_inter_group(images), network(images), atol=1e-4)  # the cut does drop weights
    zero_inter_group_weights(network, plan, assignment)
    split = split_network(network, plan, assignment).eval()
    torch.testing.assert_close(split(images), network(images), rtol=1e-4, atol=1e-5)


def test_a_split_network_reloads_its_learned_grouping_from_its_state_dict():
    config, network, plan = unsplit("deep", 2)
    random_batch_norms(network)
    split = split_network(network, plan, random_balanced_assignment(plan, seed=7)).eval()
    rebuilt = build_one(config)
    rebuilt.load_state_dict(split.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(images), split(images))


def test_equal_groups_run_as_one_grouped_convolution():
    _, network, plan = unsplit("deep", 2)
    split = split_network(network, plan)
    for layer in plan.convolutions:
        expected = 1 if layer.inputs is None else plan.node_sets[layer.inputs].groups
        assert split.get_submodule(layer.path).groups == expected


# -- counting and configs -------------------------------------------------------------------------

@pytest.mark.parametrize("depth, groups, reference", [("shallow", 2, -0.325), ("deep", 2, -0.464),
                                                      ("hierarchical", 4, -0.626)])
def test_wrn16_8_reductions_match_the_papers_table(depth, groups, reference):
    """Seed 001 Table 1 (CIFAR-100): 11.0M -> 7.42M shallow, 5.90M deep, 4.12M hierarchical."""
    base = count_config(SplitConfig(arch="wrn16_8", dataset="cifar100")).params
    split = count_config(SplitConfig(arch="wrn16_8", groups=groups, split_depth=depth, dataset="cifar100")).params
    assert split / base - 1 == pytest.approx(reference, abs=0.005)


@pytest.mark.parametrize("depth, groups", DEPTHS)
def test_count_matches_the_network_a_cut_produces(depth, groups):
    config, network, plan = unsplit(depth, groups)
    split = split_network(network, plan, random_balanced_assignment(plan, seed=11))
    assert count_config(config).params == sum(p.numel() for p in split.parameters())


def test_groups_need_a_supported_family_and_a_fitting_depth():
    with pytest.raises(ConfigError, match="vgg16"):
        SplitConfig(arch="vgg16", groups=2)
    with pytest.raises(ConfigError, match="even number of groups"):
        SplitConfig(arch="resnet20", groups=2, split_depth="hierarchical")
    with pytest.raises(ConfigError, match="both block-split and semantically split"):
        SplitConfig(arch="resnet20", groups=2, split_depth="deep", block_factors=[1, 2, 1])
    with pytest.raises(ConfigError, match="split_depth"):
        SplitConfig.from_dict({"arch": "resnet20", "groups": 2, "split_depth": "middle"})
    assert SplitConfig(arch="resnet20", groups=2).split_depth == "shallow"
    assert SplitConfig(arch="resnet20", groups=1, split_depth="deep").split_depth is None
    assert SplitConfig(arch="resnet20", groups=2, block_factors=[2, 1, 1]).block_factors == (2, 1, 1)


def test_widths_round_so_every_group_is_equal():
    config = SplitConfig(arch="resnet20", groups=3, split_depth="deep", width_mult=0.5, dataset="cifar10")
    network = build_one(config)
    for layer in semantic_plan(config, build_one(config, grouping=True)).convolutions:
        conv = network.get_submodule(layer.path)
        assert conv.out_channels % 3 == 0


def test_the_class_groups_of_a_cut_cover_every_class_once():
    _, network, plan = unsplit("shallow", 3)
    grouping = SemanticGrouping(network, plan)
    classes = grouping.hard_assignment()[CLASSES]
    assert sorted(torch.bincount(classes, minlength=3).tolist()) == [3, 3, 4]


def test_the_reduced_gradient_step_stays_on_the_simplex_and_descends():
    _, network, plan = unsplit("fc", 2)
    grouping = SemanticGrouping(network, plan, parametrisation="reduced_gradient")
    target = {name: torch.randn(value.shape) for name, value in grouping.values.items()}

    def objective():
        return sum((value * target[name]).sum() for name, value in grouping.values.items())

    before = objective().item()
    for _ in range(20):
        objective().backward()
        grouping.reduced_gradient_step(0.05)
    for value in grouping.values.values():
        assert (value >= 0).all()
        torch.testing.assert_close(value.sum(0), torch.ones(value.shape[1]))
    assert objective().item() < before
