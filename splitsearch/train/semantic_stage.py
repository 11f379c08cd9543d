"""The semantic split inside a training run: learn the groups, cut, then fine-tune (METHODS.md section 3).

:class:`SemanticStage` is what the :class:`~splitsearch.train.loop.Trainer` holds for a
``groups`` > 1 candidate.  During the first ``train.grouping_epochs()`` epochs the S members are
the unsplit networks, each with its own :class:`~splitsearch.split.grouping.SemanticGrouping`,
and the loss gains the regularisers.  After the last of those epochs :meth:`cut` replaces every
member by its split network (:func:`~splitsearch.split.semantic.split_network` with the balanced
hard assignment); the rest of the epochs fine-tune it without regularisers, and the deployed
model is the split one, the architecture ``count`` measured.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from splitsearch.build import build_networks, semantic_plan
from splitsearch.config import SplitConfig
from splitsearch.split.grouping import SemanticGrouping
from splitsearch.split.semantic import CLASSES, node_groups, split_network

GROUPING, SPLIT = "grouping", "split"
CLASS_GROUPS_NAME = "class_groups.json"


class SemanticStage:
    """Which stage a semantic-split run is in, the members' groupings, and the cut between the stages."""

    def __init__(self, config: SplitConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.grouping_epochs = config.train.grouping_epochs()
        self.stage = GROUPING
        self.networks = build_networks(config, device=device, grouping=True)
        self.groupings = nn.ModuleList(
            SemanticGrouping(network, semantic_plan(config, network), config.train.assignment)
            for network in self.networks
        )
        self.class_groups: list[list[list[int]]] = []
        self.argmax_agreement: list[float] = []
        self.confidence: list[float] = []

    @property
    def grouping(self) -> bool:
        return self.stage == GROUPING

    def optimizer_group(self, base_lr: float) -> dict[str, Any] | None:
        """The optimiser's parameter group of the assignments (softmax logits; None for the reduced gradient)."""
        if not self.grouping or self.config.train.assignment != "softmax":
            return None
        return {"params": list(self.groupings.parameters()), "weight_decay": 0.0,
                "lr": base_lr * self.config.train.assignment_lr_mult}

    def regularisation(self, members: Sequence[nn.Module]) -> torch.Tensor:
        """gamma-weighted ``R_D + R_W + R_E``, averaged over the members (zero once cut)."""
        train = self.config.train
        if not self.grouping:
            return torch.zeros((), device=self.device)
        totals = [grouping.regularisers(member).total(train.gamma_disjoint, train.gamma_group_weight,
                                                        train.gamma_balance)
                  for grouping, member in zip(self.groupings, members)]
        return torch.stack(totals).mean()

    def after_optimizer_step(self, lr: float) -> None:
        """The reduced-gradient step of the assignments (softmax logits are stepped by the optimiser)."""
        if self.grouping and self.config.train.assignment == "reduced_gradient":
            for grouping in self.groupings:
                grouping.reduced_gradient_step(lr * self.config.train.assignment_lr_mult)

    def should_cut(self, epoch: int) -> bool:
        return self.grouping and epoch >= self.grouping_epochs

    @torch.no_grad()
    def cut(self, members: Sequence[nn.Module]) -> list[nn.Module]:
        """The split networks of the trained ``members``, by each one's learned (balanced) grouping."""
        split_members = []
        for grouping, member in zip(self.groupings, members):
            hard = grouping.hard_assignment()
            split_members.append(split_network(member, grouping.plan, hard))
            self.class_groups.append(node_groups(hard[CLASSES], self.config.groups))
            self.argmax_agreement.append(grouping.argmax_agreement(hard))
            self.confidence.append(grouping.confidence())
        self.stage = SPLIT
        return split_members

    def fresh_split_members(self) -> list[nn.Module]:
        """Split networks to load a checkpoint written after the cut into (weights and grouping come from it)."""
        self.stage = SPLIT
        return build_networks(self.config, device=self.device)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """What the run learned, for metrics.json, the store and the report."""
        named = None
        if class_names is not None:
            named = [[[class_names[c] for c in group] for group in member] for member in self.class_groups]
        return {
            "groups": self.config.groups,
            "split_depth": self.config.split_depth,
            "grouping_epochs": self.grouping_epochs,
            "class_groups": self.class_groups,
            "class_group_names": named,
            "argmax_agreement": self.argmax_agreement,
            "assignment_confidence": self.confidence,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "groupings": self.groupings.state_dict(), "class_groups": self.class_groups,
                "argmax_agreement": self.argmax_agreement, "assignment_confidence": self.confidence}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groupings.load_state_dict(state["groupings"])
        self.class_groups = state["class_groups"]
        self.argmax_agreement = state["argmax_agreement"]
        self.confidence = state["assignment_confidence"]


def class_group_text(summary: dict[str, Any]) -> list[str]:
    """One line per member, its branches' classes: ``"airplane, ship | bird, cat"`` (indices without names)."""
    members = summary.get("class_group_names") or summary["class_groups"]
    return [" | ".join(", ".join(str(c) for c in group) for group in member) for member in members]
