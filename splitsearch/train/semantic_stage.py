"""The semantic split inside a training run: learn the groups, cut, then fine-tune (SplitNet, Kim et al. 2017).

:class:`SemanticStage` is the :class:`~splitsearch.train.stage.TrainingStage` with which the
:class:`~splitsearch.train.loop.Trainer` runs a ``groups`` > 1 candidate.  During the first
``train.grouping_epochs()`` epochs the S members are the unsplit networks, each with its own
:class:`~splitsearch.split.grouping.SemanticGrouping`, and the loss gains the regularisers.
After the last of those epochs :meth:`~SemanticStage.end_of_epoch` replaces every member by its
split network (:func:`~splitsearch.split.semantic.split_network` with the balanced hard
assignment); the rest of the epochs fine-tune it without regularisers, and the deployed model is
the split one, the architecture ``count`` measured.

In member-parallel training (:mod:`splitsearch.train.parallel`) each rank learns the groups of
its own members and cuts them, as it trains them: a member's groups depend on that member alone.
The regularisers of all S members are averaged through the same gather as the logits, so each
member's gradient is the one-process gradient; rank 0 gathers what the cut learned and the
groupings' state, and writes them in the one-process format.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from splitsearch.build import build_networks, semantic_plan
from splitsearch.config import SplitConfig, ensemble_mode
from splitsearch.ensemble import Ensemble, EnsembleMode, SequentialEnsemble
from splitsearch.errors import TrainingError
from splitsearch.split.grouping import SemanticGrouping
from splitsearch.split.semantic import CLASSES, node_groups, split_network
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.stage import MemberChange

GROUPING, SPLIT = "grouping", "split"
CLASS_GROUPS_NAME = "class_groups.json"
CHECKPOINT_KEY = "semantic"


class SemanticStage:
    """The :class:`~splitsearch.train.stage.TrainingStage` of a semantic split: its two stages and the cut.

    Args:
        config: a candidate with ``groups`` > 1.
        device: where the members train.
        class_names: the dataset's class names, for the summary (None: class indices).
        write_file: writes the class groups at the cut, given a file name and its bytes (the
            trainer's, into its folder, atomically; None: they are not written).
        group: the members this process trains (all S by default); rank 0 writes the class groups.
    """

    def __init__(self, config: SplitConfig, device: torch.device, class_names: Sequence[str] | None = None,
                 write_file: Callable[[str, bytes], None] | None = None, group: MemberGroup | None = None) -> None:
        self.config = config
        self.device = device
        self.class_names = class_names
        self.write_file = write_file
        self.group = group or MemberGroup.single(config.S)
        self.grouping_epochs = config.train.grouping_epochs()
        self.grouping = True  # in the first stage; False from the cut on
        # All S networks and groupings are made, in order, so a member's initial state does not
        # depend on which rank trains it; this rank keeps its own.
        networks = build_networks(config, device=device, grouping=True)
        groupings = [SemanticGrouping(network, semantic_plan(config, network), config.train.assignment)
                     for network in networks]
        self.networks = networks[self.group.own]
        self.groupings = nn.ModuleList(groupings[self.group.own])
        self.class_groups: list[list[list[int]]] = []
        self.argmax_agreement: list[float] = []
        self.confidence: list[float] = []

    def build_ensemble(self, mode: EnsembleMode) -> Ensemble:
        """The unsplit members, run one after another.

        The groupings and the cut work on each member's own layers, of which packing makes copies.
        """
        if ensemble_mode(mode) == "fused":
            raise TrainingError("the semantic split (groups > 1) trains its members one after another; "
                                "use --mode sequential or auto")
        return SequentialEnsemble(self.networks)

    def optimizer_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The assignments' group in the first stage (softmax logits; the reduced gradient steps them itself)."""
        if not self.grouping or self.config.train.assignment != "softmax":
            return []
        return [{"params": list(self.groupings.parameters()), "weight_decay": 0.0,
                 "lr": base_lr * self.config.train.assignment_lr_mult}]

    def regularisation(self, ensemble: Ensemble) -> torch.Tensor:
        """gamma-weighted ``R_D + R_W + R_E``, averaged over the S members (zero once cut).

        The other ranks' members' terms arrive as constants, as their logits do.
        """
        train = self.config.train
        if not self.grouping:
            return torch.zeros((), device=self.device)
        totals = [grouping.regularisers(member).total(train.gamma_disjoint, train.gamma_group_weight,
                                                        train.gamma_balance)
                  for grouping, member in zip(self.groupings, ensemble.members)]
        return self.group.gather(torch.stack(totals)).sum() / self.config.S

    def after_optimizer_step(self, lr: float) -> None:
        """The reduced-gradient step of the assignments (softmax logits are stepped by the optimiser)."""
        if self.grouping and self.config.train.assignment == "reduced_gradient":
            for grouping in self.groupings:
                grouping.reduced_gradient_step(lr * self.config.train.assignment_lr_mult)

    def end_of_epoch(self, epoch: int, ensemble: Ensemble) -> MemberChange | None:
        """After the last grouping epoch: the members cut along their groups, which go to ``class_groups.json``."""
        if not self.grouping or epoch < self.grouping_epochs:
            return None
        change = MemberChange(self._cut(ensemble.members), after_epoch=epoch)
        learned = self.group.gather_to_main((self.class_groups, self.argmax_agreement, self.confidence))
        if learned is not None:  # rank 0: every member's, in member order
            self.class_groups, self.argmax_agreement, self.confidence = (
                [value for part in learned for value in part[index]] for index in range(3))
            if self.write_file is not None:
                self.write_file(CLASS_GROUPS_NAME, json.dumps(self.summary(), indent=2).encode())
        return change

    @torch.no_grad()
    def _cut(self, members: Sequence[nn.Module]) -> list[nn.Module]:
        """The split networks of the trained ``members``, by each one's learned (balanced) grouping."""
        split_members = []
        for grouping, member in zip(self.groupings, members):
            hard = grouping.hard_assignment()
            split_members.append(split_network(member, grouping.plan, hard))
            self.class_groups.append(node_groups(hard[CLASSES], self.config.groups))
            self.argmax_agreement.append(grouping.argmax_agreement(hard))
            self.confidence.append(grouping.confidence())
        self.grouping = False
        return split_members

    def summary(self) -> dict[str, Any] | None:
        """What the run learned, for metrics.json, the store and the report; None before the cut.

        On rank 0 of a process group every member's; on the others their own."""
        if self.grouping:
            return None
        named = None
        if self.class_names is not None:
            named = [[[self.class_names[c] for c in group] for group in member] for member in self.class_groups]
        return {
            "groups": self.config.groups,
            "split_depth": self.config.split_depth,
            "grouping_epochs": self.grouping_epochs,
            "class_groups": self.class_groups,
            "class_group_names": named,
            "argmax_agreement": self.argmax_agreement,
            "assignment_confidence": self.confidence,
        }

    def checkpoint_entries(self) -> dict[str, Any]:
        """The stage, the groupings and what the cut learned, under ``"semantic"`` as checkpoints always had them.

        Every rank calls it (the groupings of all S members are gathered); rank 0 gets the
        entries in the one-process format, the others none.
        """
        parts = self.group.gather_to_main({key: value.cpu() for key, value in self.groupings.state_dict().items()})
        if parts is None or not self.group.is_main:
            return {}
        return {CHECKPOINT_KEY: {
            "stage": GROUPING if self.grouping else SPLIT, "groupings": self.group.full_ensemble_state(parts, prefix=""),
            "class_groups": self.class_groups, "argmax_agreement": self.argmax_agreement,
            "assignment_confidence": self.confidence,
        }}

    def resume(self, checkpoint: Mapping[str, Any]) -> MemberChange | None:
        """Restore this rank's groupings and what the cut learned; after the cut, fresh split networks for its weights."""
        state = checkpoint[CHECKPOINT_KEY]
        change = None
        if self.grouping and state["stage"] == SPLIT:
            self.grouping = False
            change = MemberChange(build_networks(self.config, device=self.device)[self.group.own],
                                  after_epoch=self.grouping_epochs)
        self.groupings.load_state_dict(self.group.own_ensemble_state(state["groupings"], prefix=""))
        self.class_groups = state["class_groups"]
        self.argmax_agreement = state["argmax_agreement"]
        self.confidence = state["assignment_confidence"]
        return change


def class_group_text(summary: dict[str, Any]) -> list[str]:
    """One line per member, its branches' classes: ``"airplane, ship | bird, cat"`` (indices without names)."""
    members = summary.get("class_group_names") or summary["class_groups"]
    return [" | ".join(", ".join(str(c) for c in group) for group in member) for member in members]
