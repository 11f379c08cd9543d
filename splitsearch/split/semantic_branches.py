"""A cut semantic split as its parts: the shared lower layers, then G branches that share nothing.

SplitNet (Kim et al. 2017) calls the cut network "embarrassingly model-parallelizable" at test time:
above the layers every branch reads, branch g touches only its own channels and writes only its
own classes' logits.  :func:`split_network` runs the G branches at once as grouped convolutions
(fast on one device); :func:`semantic_branches` rewrites the same cut network, with the same
weights, as :class:`SemanticBranches`: a ``trunk`` (the unsplit lower layers) and G separate
branch modules, so each branch can run on its own process or device.  In evaluation mode it
computes the cut network's logits exactly (``tests/test_semantic_branches.py``).

:func:`branch_parallel_logits` is that test-time parallelism over a torch.distributed group of G
ranks: rank 0 computes the shared layers once and broadcasts their output, each rank runs its
branch, and one all-reduce of the logits (each branch writes its classes, zeros elsewhere)
gives every rank the whole logits.  Broadcast and all-reduce are the two collectives gloo runs
on CUDA tensors too, so G ranks may share one GPU.

Only splits whose every split layer has G groups come apart into G branches: the hierarchical
split's lower split stage is shared by several branches, a tree, not G parallel branches.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from splitsearch.blocks.hooks import LayeredNetwork
from splitsearch.split.semantic import FEATURES, GroupedLinear, SemanticPlan, plan_for
from splitsearch.split.sequential import restrict_to_branch


class _BranchHead(nn.Module):
    """Branch g's classifier head: the features it reads (all of the unsplit layer's, or its own), one linear."""

    def __init__(self, linear: nn.Linear, features: torch.Tensor | None) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("features", features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x if self.features is None else x.index_select(1, self.features))


class SemanticBranches(nn.Module):
    """The shared lower layers (``trunk``) and G ``branches``; branch g writes the logits of ``classes[g]``.

    Calling it runs the trunk once and the branches one after another: the cut network's logits.
    """

    def __init__(self, trunk: nn.Module, branches: list[nn.Module], classes: list[torch.Tensor],
                 num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.branches = nn.ModuleList(branches)
        self.num_classes = num_classes
        for g, indices in enumerate(classes):
            self.register_buffer(f"classes_{g}", indices)

    @property
    def groups(self) -> int:
        return len(self.branches)

    def classes(self, g: int) -> torch.Tensor:
        """The dataset's class indices whose logits branch ``g`` writes."""
        return getattr(self, f"classes_{g}")

    def branch_logits(self, g: int, shared: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` float32 logits, branch ``g``'s classes filled from ``shared`` (the trunk's output), zeros elsewhere."""
        own = self.branches[g](shared).float()
        logits = own.new_zeros(own.shape[0], self.num_classes)
        return logits.index_copy_(1, self.classes(g), own)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.trunk(x)
        return sum(self.branch_logits(g, shared) for g in range(self.groups))


def semantic_branches(network: nn.Module, groups: int, depth: str) -> SemanticBranches:
    """The cut semantic split ``network`` (as :func:`~splitsearch.split.semantic.split_network` or
    ``build_one`` returns it, split into ``groups`` at ``depth``) as shared layers and G branches.

    The result is a new module with copies of the weights; put it in evaluation mode to compare.

    Raises:
        ValueError: ``network`` is not a cut semantic split, does not expose its layer sequence
            (:class:`~splitsearch.blocks.hooks.LayeredNetwork`), or its split layers do not all
            have ``groups`` groups (the hierarchical split).
    """
    plan = plan_for(network, groups, depth)
    uneven = sorted(name for name, node_set in plan.node_sets.items() if node_set.groups != groups)
    if uneven:
        raise ValueError(f"the {depth} split shares {', '.join(uneven)} between branches (fewer than {groups} "
                         "groups there): it does not come apart into G separate branches")
    if not isinstance(network, LayeredNetwork):
        raise ValueError(f"{type(network).__name__} does not expose its layer sequence (layer_sequence())")
    linear = network.get_submodule(plan.classifier)
    if not isinstance(linear, GroupedLinear):
        raise ValueError("the network is not cut yet: its classifier is not G heads (use split_network)")
    layers = list(network.layer_sequence())
    lowest = network.get_submodule(plan.layers[0].path)
    first = next(index for index, layer in enumerate(layers) if any(part is lowest for part in layer.modules()))
    trunk, top = nn.Sequential(*copy.deepcopy(layers[:first])), layers[first:]
    convolutional = [layer for layer in top if any(isinstance(part, nn.Conv2d) for part in layer.modules())]
    if top[:len(convolutional)] != convolutional:
        raise ValueError("the layers above the shared ones mix convolutional stages and head layers")
    between = [layer for layer in top[len(convolutional):] if layer is not linear]
    branches = [nn.Sequential(*([restrict_to_branch(nn.Sequential(*convolutional), g, groups, "split stages")]
                                if convolutional else []),
                              *copy.deepcopy(between), _head(linear, plan, g))
                for g in range(groups)]
    return SemanticBranches(trunk, branches, _class_groups(linear), linear.out_features)


def _head(linear: GroupedLinear, plan: SemanticPlan, g: int) -> _BranchHead:
    """Head g; where only the classifier is split it reads its group's features of the unsplit layer."""
    features = linear.feature_order.chunk(len(linear.heads))[g].clone() if plan.classifier_inputs == FEATURES else None
    return _BranchHead(copy.deepcopy(linear.heads[g]), features)


def _class_groups(linear: GroupedLinear) -> list[torch.Tensor]:
    """The classes of each head, in the order the head writes them."""
    class_at = torch.argsort(linear.class_position)  # the class whose logit sits at each head output
    sizes = [head.out_features for head in linear.heads]
    return [part.clone() for part in class_at.split(sizes)]


def branch_parallel_logits(branches: SemanticBranches, images: torch.Tensor | None, shared_shape: torch.Size,
                           shared_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The logits of ``images`` with one branch per rank of the default process group (G ranks).

    Rank 0 holds ``images`` (None elsewhere) and computes the shared layers once; their output,
    of ``shared_shape`` and ``shared_dtype`` (every rank must know both to receive it: bfloat16
    under CUDA's autocast), is broadcast; each rank runs its branch; an all-reduce sums the
    branches' float32 logits, each of which fills only its own classes.  Every rank returns the
    whole ``[B, K]`` logits.

    Raises:
        ValueError: the group's size is not the number of branches.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != branches.groups:
        raise ValueError(f"{world} processes for {branches.groups} branches: run one process per branch")
    device = branches.classes(0).device
    if rank == 0:
        shared = branches.trunk(images).to(shared_dtype).contiguous()
    else:
        shared = torch.empty(shared_shape, device=device, dtype=shared_dtype)
    dist.broadcast(shared, src=0)
    logits = branches.branch_logits(rank, shared)
    dist.all_reduce(logits)
    return logits
