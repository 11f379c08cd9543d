"""The cut semantic split as shared layers + G separate branches: same logits, one branch per process."""

import pytest
import torch
from torch import nn

from splitsearch.build import build_one, semantic_plan
from splitsearch.config import SplitConfig
from splitsearch.split.semantic import split_network
from splitsearch.split.semantic_branches import semantic_branches


def cut_network(depth: str, groups: int, seed: int = 0) -> nn.Module:
    """A cut network with random BN statistics and a random (balanced) grouping, in evaluation mode."""
    from tests.test_semantic import random_balanced_assignment, random_batch_norms

    config = SplitConfig(arch="resnet20", groups=groups, split_depth=depth, width_mult=0.5, dataset="cifar10")
    torch.manual_seed(seed)
    network = build_one(config, grouping=True)
    random_batch_norms(network)
    with torch.no_grad():
        network.get_classifier().bias.normal_()
    plan = semantic_plan(config, network)
    return split_network(network, plan, random_balanced_assignment(plan, seed)).eval()


@pytest.mark.parametrize(("depth", "groups"), [("fc", 2), ("shallow", 2), ("deep", 2), ("shallow", 3)])
def test_the_branches_compute_the_cut_networks_logits(depth, groups):
    network = cut_network(depth, groups)
    branches = semantic_branches(network, groups, depth).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected, shared = network(images), branches.trunk(images)
        torch.testing.assert_close(branches(images), expected, rtol=1e-4, atol=1e-5)
        # each branch writes its own classes and nothing else; together they cover every class once
        covered = torch.cat([branches.classes(g) for g in range(groups)]).sort().values
        assert covered.tolist() == list(range(10))
        for g in range(groups):
            own = branches.classes(g)
            logits = branches.branch_logits(g, shared)
            torch.testing.assert_close(logits[:, own], expected[:, own], rtol=1e-4, atol=1e-5)
            others = torch.ones(10, dtype=torch.bool)
            others[own] = False
            assert not logits[:, others].any()


def test_a_branch_holds_only_its_share_of_the_split_weights():
    network = cut_network("deep", 2)
    branches = semantic_branches(network, 2, "deep")
    trunk = sum(p.numel() for p in branches.trunk.parameters())
    per_branch = [sum(p.numel() for p in branch.parameters()) for branch in branches.branches]
    assert per_branch[0] == per_branch[1]
    # the cut network is the trunk plus both branches, save the lowest split layers' dense reads
    assert trunk + sum(per_branch) == sum(p.numel() for p in network.parameters())


def test_the_hierarchical_split_does_not_come_apart_into_branches():
    network = cut_network("hierarchical", 4)
    with pytest.raises(ValueError, match="does not come apart"):
        semantic_branches(network, 4, "hierarchical")


def test_an_uncut_network_is_refused():
    config = SplitConfig(arch="resnet20", groups=2, split_depth="deep", width_mult=0.5, dataset="cifar10")
    with pytest.raises(ValueError, match="not cut yet"):
        semantic_branches(build_one(config, grouping=True), 2, "deep")


def _parallel_logits(depth: str, groups: int) -> list[list[float]] | None:
    import torch.distributed as dist

    from splitsearch.split.semantic_branches import branch_parallel_logits

    branches = semantic_branches(cut_network(depth, groups), groups, depth).eval()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        shape = branches.trunk(images).shape
        logits = branch_parallel_logits(branches, images if dist.get_rank() == 0 else None, shape)
        expected = branches(images)
    assert torch.allclose(logits, expected, rtol=1e-4, atol=1e-5)  # on every rank
    return logits.tolist() if dist.get_rank() == 0 else None


def test_one_branch_per_process_gives_the_cut_networks_logits():
    from splitsearch.train.launch import launch

    logits = launch(2, _parallel_logits, "cpu", "deep", 2)
    with torch.no_grad():
        expected = cut_network("deep", 2)(torch.manual_seed(1) and torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(torch.tensor(logits), expected, rtol=1e-4, atol=1e-5)
