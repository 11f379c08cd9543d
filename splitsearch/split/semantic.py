"""Semantic split (SplitNet, Kim et al. 2017): G branches cut along learned groups.

SplitNet learns which classes, and which channels of the top layers, belong together, then cuts
the top of the network into G branches with no connection between them.  This module holds the
structure of that cut for any network that implements the semantic hooks
(:class:`~splitsearch.blocks.hooks.SemanticNetwork`; the CIFAR ResNets ``resnet{6n+2}`` and
``wrn{d}_{k}`` do):

* :func:`~splitsearch.blocks.semantic_groups.stage_groups` - how many groups each stage gets for a
  split depth (the rule lives below the models, which round their widths by it).
* :class:`SemanticPlan` (:func:`plan_for`) - the node sets that get an assignment (the classes,
  the classifier's input features, each split stage's channels, the middle channels of each
  split block) and which layer reads and writes which set.  A residual block's output shares
  the stage's assignment (identity shortcuts add channel i to channel i), so one assignment per
  stage plus one per block is all there is.  The lowest split layer reads the unsplit layer
  below whole (every branch sees all of it), which is how the paper's WRN-16-8 counts come out.
* :func:`balanced_assignment` - the hard assignment: argmax, repaired so every group gets its
  equal share (see its docstring for why equal).
* :func:`split_network` - the cut: every split convolution becomes a grouped convolution over
  channels permuted so each group is contiguous, BN is permuted with it, the classifier becomes
  a :class:`GroupedLinear`.  The dropped weights do not exist in the result, and equal groups
  run as ONE grouped convolution, so the split network is faster in proportion to what it drops.

Learning the assignments (stage 1) is :mod:`splitsearch.split.grouping`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from splitsearch.blocks.hooks import SemanticBlock, SemanticNetwork
from splitsearch.blocks.semantic_groups import stage_groups
from splitsearch.models.registry import SEMANTIC_SPLIT_FAMILIES


# -- the plan: node sets and the layers between them ----------------------------------------------


@dataclass(frozen=True)
class NodeSet:
    """Nodes that share one assignment: ``size`` nodes into ``groups`` groups."""

    name: str
    size: int
    groups: int


@dataclass(frozen=True)
class SplitLayer:
    """A convolution or the classifier's linear layer inside the split part.

    ``inputs`` is the node set its input channels belong to, or None where it reads the unsplit
    layer below whole (the lowest split layer: every branch sees all of it).
    """

    path: str
    inputs: str | None
    outputs: str


@dataclass(frozen=True)
class SemanticPlan:
    """Where the assignments are and which layers they cut (see :func:`plan_for`).

    ``layers`` runs bottom-up and ends with the classifier (its path is ``classifier``).
    """

    node_sets: Mapping[str, NodeSet]
    layers: tuple[SplitLayer, ...]
    batch_norms: tuple[tuple[str, str], ...]
    classifier: str

    @property
    def convolutions(self) -> tuple[SplitLayer, ...]:
        return self.layers[:-1]

    @property
    def classifier_inputs(self) -> str:
        """The node set the classifier reads: the last split stage's channels, or ``features``."""
        return self.layers[-1].inputs


CLASSES = "classes"
FEATURES = "features"


def plan_for(network: nn.Module, groups: int, depth: str) -> SemanticPlan:
    """The semantic split of ``network``, read through its hooks (:class:`~splitsearch.blocks.hooks.SemanticNetwork`).

    Raises:
        ValueError: the network has no semantic hooks, or a stage to split holds a module that is
            not a block the cut knows (a block-split stage's fusion: the block-wise split and this one
            do not compose on one stage).
    """
    if not isinstance(network, SemanticNetwork):
        raise ValueError(f"{SEMANTIC_SPLIT_FAMILIES}, not for {type(network).__name__}")
    path_of = {module: path for path, module in network.named_modules()}
    linear = network.get_classifier()
    stages = network.semantic_stages()
    per_stage = stage_groups(len(stages), groups, depth)
    node_sets = {CLASSES: NodeSet(CLASSES, linear.out_features, groups)}
    layers: list[SplitLayer] = []
    batch_norms: list[tuple[str, str]] = []
    feeding: str | None = None  # the node set the next stage reads (None: the unsplit layers below)
    for s, (stage, stage_g) in enumerate(zip(stages, per_stage)):
        if stage_g == 1:
            feeding = None
            continue
        if not all(isinstance(block, SemanticBlock) for block in stage):
            raise ValueError(f"stage {s + 1} holds other modules than basic blocks (a block-split stage?): the "
                             "semantic split needs block factor 1 on the stages it splits")
        blocks = [block.semantic_layers() for block in stage]
        stage_set = f"stage{s + 1}"
        node_sets[stage_set] = NodeSet(stage_set, blocks[0].output.conv.out_channels, stage_g)
        for b, block in enumerate(blocks):
            middle = f"{stage_set}.block{b + 1}"
            node_sets[middle] = NodeSet(middle, block.middle.conv.out_channels, stage_g)
            block_input = feeding if b == 0 else stage_set
            cut = [(block.middle, block_input, middle), (block.output, middle, stage_set)]
            if block.projection is not None:
                cut.append((block.projection, block_input, stage_set))
            elif block_input != stage_set:
                raise ValueError(f"block {b + 1} of stage {s + 1} adds its input unchanged to a regrouped output")
            layers += [SplitLayer(path_of[part.conv], inputs, outputs) for part, inputs, outputs in cut]
            batch_norms += [(path_of[part.norm], outputs) for part, _, outputs in cut]
        feeding = stage_set
    if feeding is None:
        node_sets[FEATURES] = NodeSet(FEATURES, linear.in_features, groups)
        feeding = FEATURES
    classifier = path_of[linear]
    layers.append(SplitLayer(classifier, feeding, CLASSES))
    return SemanticPlan(node_sets, tuple(layers), tuple(batch_norms), classifier)


# -- hard assignment ------------------------------------------------------------------------------


def group_sizes(size: int, groups: int) -> list[int]:
    """Equal shares of ``size`` nodes, the first ``size % groups`` groups one larger."""
    return [size // groups + (1 if g < size % groups else 0) for g in range(groups)]


def balanced_assignment(assignment: torch.Tensor) -> torch.Tensor:
    """Group of each node (``[D]``) from a soft assignment ``[G, D]``, every group of equal size.

    Nodes are taken in order of how sure their assignment is (largest probability first); each
    goes to its most probable group that still has room.  Where the soft assignment is already
    balanced this is its argmax; elsewhere it is the smallest repair that makes it balanced.
    Equal groups (not just non-empty ones) because (1) the network ``count`` and the budget see
    before training is then exactly the one that is trained, and (2) equal groups run as one
    grouped convolution, which is what makes the split network fast; the balance regulariser
    (weighted 10 by the authors) pushes the learned assignment there anyway.
    """
    groups, size = assignment.shape
    room = group_sizes(size, groups)
    result = torch.full((size,), -1, dtype=torch.long, device="cpu")
    order = torch.argsort(assignment.detach().float().cpu().t().flatten(), descending=True, stable=True)
    for flat in order.tolist():
        node, group = divmod(flat, groups)
        if result[node] < 0 and room[group] > 0:
            result[node] = group
            room[group] -= 1
    return result


def contiguous_assignment(node_set: NodeSet) -> torch.Tensor:
    """Nodes in order, the first share in group 0 and so on: the split network ``count`` measures."""
    # Index tensors live on the CPU even where networks are built under ``torch.device("meta")``.
    return torch.repeat_interleave(torch.arange(node_set.groups, device="cpu"),
                                   torch.tensor(group_sizes(node_set.size, node_set.groups), device="cpu"))


def node_groups(assignment: torch.Tensor, groups: int) -> list[list[int]]:
    """The nodes of each group, e.g. the classes of each branch."""
    return [torch.nonzero(assignment == g).flatten().tolist() for g in range(groups)]


# -- the cut --------------------------------------------------------------------------------------


class GroupedLinear(nn.Module):
    """The split classifier: G linear heads, head g reading feature group g and writing class group g.

    ``feature_order`` picks the input features in group order (identity where the layer below is
    already split and permuted); ``class_position[c]`` is where class c's logit sits among the
    heads' outputs, so the logits come back in the dataset's class order.  Both are buffers: a
    saved split network carries its learned grouping.
    """

    def __init__(self, in_features: int, class_group_sizes: list[int], bias: bool = True) -> None:
        super().__init__()
        groups = len(class_group_sizes)
        if in_features % groups:
            raise ValueError(f"{in_features} features do not split into {groups} equal groups")
        self.in_features = in_features
        self.out_features = sum(class_group_sizes)
        self.heads = nn.ModuleList(nn.Linear(in_features // groups, size, bias=bias) for size in class_group_sizes)
        self.register_buffer("feature_order", torch.arange(in_features))
        self.register_buffer("class_position", torch.arange(self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.index_select(1, self.feature_order).chunk(len(self.heads), dim=1)
        grouped = torch.cat([head(part) for head, part in zip(self.heads, parts)], dim=1)
        return grouped.index_select(1, self.class_position)


def split_network(network: nn.Module, plan: SemanticPlan,
                  assignment: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``network`` cut into the plan's groups; ``assignment`` maps node set -> group per node.

    Without ``assignment`` the groups are contiguous (the architecture ``count`` measures; a
    trained split network loads its learned grouping from its state dict).  Each kept weight is
    the original's, so where the inter-group weights are zero the logits are unchanged.

    Raises:
        ValueError: a channel set's groups are not of equal size (use :func:`balanced_assignment`).
    """
    groups_of = {name: contiguous_assignment(node_set) if assignment is None else assignment[name].cpu()
                 for name, node_set in plan.node_sets.items()}
    orders = {}
    for name, node_set in plan.node_sets.items():
        sizes = torch.bincount(groups_of[name], minlength=node_set.groups)
        if name != CLASSES and len(set(sizes.tolist())) != 1:
            raise ValueError(f"node set {name} has groups of sizes {sizes.tolist()}; channel groups must be equal")
        orders[name] = torch.argsort(groups_of[name], stable=True)
    split = copy.deepcopy(network)
    with torch.no_grad():
        for layer in plan.convolutions:
            conv = split.get_submodule(layer.path)
            in_groups = 1 if layer.inputs is None else plan.node_sets[layer.inputs].groups
            in_order = None if layer.inputs is None else orders[layer.inputs]
            split.set_submodule(layer.path, _grouped_conv(conv, orders[layer.outputs], in_order, in_groups))
        for path, name in plan.batch_norms:
            _permute_batch_norm(split.get_submodule(path), orders[name])
        linear = split.get_submodule(plan.classifier)
        split.set_submodule(plan.classifier, _grouped_linear(linear, plan, groups_of, orders))
    return split


def _grouped_conv(conv: nn.Conv2d, out_order: torch.Tensor, in_order: torch.Tensor | None,
                  groups: int) -> nn.Conv2d:
    """``conv`` with outputs in ``out_order``, keeping only weights from input chunk c to output chunk c."""
    if conv.groups != 1:
        raise ValueError(f"cannot cut an already grouped convolution ({conv})")
    weight = conv.weight[out_order.to(conv.weight.device)]
    if in_order is not None:
        weight = weight[:, in_order.to(conv.weight.device)]
    per_in, per_out = conv.in_channels // groups, conv.out_channels // groups
    blocks = [weight[c * per_out:(c + 1) * per_out, c * per_in:(c + 1) * per_in] for c in range(groups)]
    grouped = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, groups=groups, bias=conv.bias is not None,
                        device=conv.weight.device, dtype=conv.weight.dtype)
    grouped.weight.copy_(torch.cat(blocks))
    if conv.bias is not None:
        grouped.bias.copy_(conv.bias[out_order.to(conv.bias.device)])
    return grouped


def _permute_batch_norm(batch_norm: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for tensor in (batch_norm.weight, batch_norm.bias, batch_norm.running_mean, batch_norm.running_var):
        if tensor is not None:
            tensor.copy_(tensor[order.to(tensor.device)])


def _grouped_linear(linear: nn.Linear, plan: SemanticPlan, groups_of: Mapping[str, torch.Tensor],
                    orders: Mapping[str, torch.Tensor]) -> GroupedLinear:
    classes = plan.node_sets[CLASSES]
    feature_set = plan.classifier_inputs
    sizes = torch.bincount(groups_of[CLASSES], minlength=classes.groups).tolist()
    if min(sizes) == 0:
        raise ValueError(f"class groups of sizes {sizes}: every branch needs at least one class")
    device = linear.weight.device
    head = GroupedLinear(linear.in_features, sizes, bias=linear.bias is not None).to(device=device,
                                                                                   dtype=linear.weight.dtype)
    # Features arrive in group order where the stage below is split (already permuted); the
    # classifier-only split picks them from the unsplit layer's original order.
    if feature_set == FEATURES:
        head.feature_order.copy_(orders[FEATURES])
    class_order = orders[CLASSES]
    head.class_position.copy_(torch.argsort(class_order))
    feature_order = orders[feature_set].to(device)
    for module, rows, columns in zip(head.heads, class_order.to(device).split(sizes),
                                     feature_order.chunk(classes.groups)):
        module.weight.copy_(linear.weight[rows][:, columns])
        if linear.bias is not None:
            module.bias.copy_(linear.bias[rows])
    return head

