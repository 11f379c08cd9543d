"""Stage 1 of the semantic split: learn the assignments with SplitNet's three regularisers.

For every node set of a :class:`~splitsearch.split.semantic.SemanticPlan` an assignment
``A [G, D]`` says how much node i belongs to group g (each column a distribution).  As in the
authors' code, the assignments never enter the forward pass: they are trained only through the
regularisers, jointly with the weights, which the group-weight term pushes towards the
block-diagonal form the cut keeps (SplitNet, Kim et al. 2017).

* Group weight ``R_W``: the l2,1 norm of the inter-group connections of each split layer,
  rows and columns (``W_bar`` = mean over the kernel taps of ``W**2``).
* Disjointness ``R_D``: overlap of the groups, ``sum_{g<g'} sum_i A_gi A_g'i``.
* Balance ``R_E``: ``sum_g (sum_i A_gi)**2``.

Each is normalised to 1 at uniform assignments and averaged over the node sets, so the total
is ``gamma_1 + gamma_2 + gamma_3`` at the start whatever the depth of the split.  ``R_W`` is the
sum over the split layers divided by that sum at uniform assignments and the initial weights:
one normaliser for all layers, not one per layer, because a per-layer one would divide the
classifier's term by its tiny initial weights (std 1e-3) and the penalty would then pin the
classifier at zero (measured: chance accuracy on the CIFAR-10 subset).
Two parametrisations: ``softmax`` over free variables initialised N(0, 0.01) (the paper's
default, trained by the network's optimiser) and ``reduced_gradient``, SimpleMKL's reduced
gradient on the simplex (the SplitNet supplement, section 1), which the supplement reports converging faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from splitsearch.blocks.semantic_groups import PARAMETRISATIONS, Parametrisation
from splitsearch.split.semantic import SemanticPlan, balanced_assignment

_INIT_STD = 0.01
_SQRT_EPS = 1e-12  # keeps the gradient of sqrt finite where a connection is already zero


@dataclass(frozen=True)
class Regularisers:
    """The three normalised regularisers of one network (scalars, differentiable)."""

    disjoint: torch.Tensor
    group_weight: torch.Tensor
    balance: torch.Tensor

    def total(self, gamma_disjoint: float, gamma_group_weight: float, gamma_balance: float) -> torch.Tensor:
        return gamma_disjoint * self.disjoint + gamma_group_weight * self.group_weight + gamma_balance * self.balance


def disjointness(assignment: torch.Tensor) -> torch.Tensor:
    """``sum_{g<g'} sum_i A_gi A_g'i``, divided by its value at uniform assignments, ``D (G-1) / 2G``."""
    groups, size = assignment.shape
    overlap = (assignment.sum(0).square() - assignment.square().sum(0)).sum() / 2
    return overlap / (size * (groups - 1) / (2 * groups))


def balance(assignment: torch.Tensor) -> torch.Tensor:
    """``sum_g (sum_i A_gi)**2`` divided by ``D**2 / G``: 1 for equal groups (its minimum), more otherwise."""
    groups, size = assignment.shape
    return assignment.sum(1).square().sum() / (size * size / groups)


def connection_strength(weight: torch.Tensor) -> torch.Tensor:
    """``W_bar [in, out]``: squared weights, averaged over a convolution's kernel taps."""
    squared = weight.square()
    if squared.dim() == 4:
        squared = squared.mean(dim=(2, 3))
    return squared.t()


def group_weight(strength: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Unnormalised ``R_W`` of one layer: l2,1 of its inter-group connections, by rows and by columns.

    ``strength`` is ``W_bar [in, out]``, ``inputs`` ``P [G, in]``, ``outputs`` ``Q [G', out]``.
    Where the outputs have more groups than the inputs (a hierarchical split), consecutive output
    groups are merged into the input's supergroups (rows summed), since a subgroup may connect to
    all of its supergroup.
    """
    groups = inputs.shape[0]
    if outputs.shape[0] != groups:
        outputs = outputs.reshape(groups, outputs.shape[0] // groups, -1).sum(1)
    to_group = outputs.square() @ strength.t()          # [G, in]:  sum_k Q_gk^2 W_jk
    from_group = inputs.square() @ strength              # [G, out]: sum_j P_gj^2 W_jk
    rows = ((1 - inputs).square() * to_group + _SQRT_EPS).sqrt().sum()
    columns = ((1 - outputs).square() * from_group + _SQRT_EPS).sqrt().sum()
    return rows + columns


class SemanticGrouping(nn.Module):
    """The learnable assignments of one network and its regularisers.

    Args:
        network: the unsplit network (its initial weights fix the ``R_W`` normalisers).
        plan: :func:`~splitsearch.split.semantic.plan_for` of the network.
        parametrisation: ``softmax`` or ``reduced_gradient``.
    """

    def __init__(self, network: nn.Module, plan: SemanticPlan, parametrisation: Parametrisation = "softmax") -> None:
        super().__init__()
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"assignment must be one of {', '.join(PARAMETRISATIONS)}, got {parametrisation!r}")
        self.plan = plan
        self.parametrisation = parametrisation
        self.values = nn.ParameterDict()
        device = next(network.parameters()).device
        for name, node_set in plan.node_sets.items():
            logits = torch.randn(node_set.groups, node_set.size, device=device) * _INIT_STD
            value = logits if parametrisation == "softmax" else logits.softmax(0)
            self.values[_key(name)] = nn.Parameter(value)
        # Layers reading the unsplit layer below have no inter-group connections; the
        # classifier always reads a split set, so this is never empty.
        self.weighted_layers = tuple(layer for layer in plan.layers if layer.inputs is not None)
        uniform = {name: torch.full((node_set.groups, node_set.size), 1 / node_set.groups, device=device)
                   for name, node_set in plan.node_sets.items()}
        with torch.no_grad():
            self.register_buffer("group_weight_scale", self._group_weight(network, uniform))

    def assignment(self, name: str) -> torch.Tensor:
        """``A [G, D]`` of a node set, each column on the simplex."""
        value = self.values[_key(name)]
        return value.softmax(0) if self.parametrisation == "softmax" else value

    def regularisers(self, network: nn.Module) -> Regularisers:
        """``R_D``, ``R_W``, ``R_E`` of ``network`` (the one this grouping belongs to), each 1 at uniform."""
        assignments = {name: self.assignment(name) for name in self.plan.node_sets}
        disjoint = torch.stack([disjointness(matrix) for matrix in assignments.values()]).mean()
        balanced = torch.stack([balance(matrix) for matrix in assignments.values()]).mean()
        weight = self._group_weight(network, assignments) / self.group_weight_scale
        return Regularisers(disjoint=disjoint, group_weight=weight, balance=balanced)

    def hard_assignment(self) -> dict[str, torch.Tensor]:
        """Group of every node of every set (:func:`~splitsearch.split.semantic.balanced_assignment`)."""
        return {name: balanced_assignment(self.assignment(name).detach()) for name in self.plan.node_sets}

    def argmax_agreement(self, hard_assignment: Mapping[str, torch.Tensor]) -> float:
        """Share of nodes whose group in ``hard_assignment`` is their most probable one (1.0: no repair)."""
        agree = total = 0
        for name, hard in hard_assignment.items():
            agree += int((self.assignment(name).detach().argmax(0).cpu() == hard).sum())
            total += hard.numel()
        return agree / total

    def confidence(self) -> float:
        """Mean over all nodes of their largest group probability: 1/G at uniform, 1.0 when hard."""
        largest = torch.cat([self.assignment(name).detach().amax(0) for name in self.plan.node_sets])
        return float(largest.mean())

    @torch.no_grad()
    def reduced_gradient_step(self, lr: float) -> None:
        """One reduced-gradient descent step of every simplex assignment (after ``backward``).

        Per node (a column ``d`` over the groups) with ``mu`` its largest component: the
        direction of component m != mu is ``g_m - g_mu`` (0 where ``d_m`` is 0 and would only
        fall further), that of mu minus their sum, so the column stays summing to one; the step
        is ``lr``, cut where a component would turn negative (SimpleMKL, as in the SplitNet supplement).
        """
        if self.parametrisation != "reduced_gradient":
            raise ValueError("reduced_gradient_step is for the reduced_gradient parametrisation")
        for value in self.values.values():
            if value.grad is None:
                continue
            largest = value.argmax(0, keepdim=True)
            direction = value.grad - value.grad.gather(0, largest)
            direction = torch.where((value <= 0) & (direction > 0), torch.zeros_like(direction), direction)
            direction.scatter_(0, largest, 0.0)
            direction.scatter_(0, largest, -direction.sum(0, keepdim=True))
            shrinking = direction > 0
            room = torch.where(shrinking, value / direction.clamp_min(1e-30), torch.full_like(value, float("inf")))
            step = room.amin(0).clamp(max=lr)
            value.sub_(step * direction).clamp_(min=0.0)
            value.div_(value.sum(0, keepdim=True))
            value.grad = None

    def _group_weight(self, network: nn.Module, assignments: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised ``R_W`` summed over the layers that read a split node set."""
        return sum(group_weight(connection_strength(network.get_submodule(layer.path).weight),
                                assignments[layer.inputs], assignments[layer.outputs])
                   for layer in self.weighted_layers)


def _key(name: str) -> str:
    """``nn.ParameterDict`` keys cannot hold dots: ``stage3.block1`` -> ``stage3:block1``."""
    return name.replace(".", ":")
