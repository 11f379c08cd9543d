"""The hooks through which a kind of run changes the co-training loop, and plain co-training's.

The :class:`~splitsearch.train.loop.Trainer` runs one loop for every candidate.  What a kind of
run adds to it (the semantic split, :class:`~splitsearch.train.semantic_stage.SemanticStage`:
members built unsplit, regularisers in the loss, assignments stepped beside the weights, a cut
that replaces the members, state to checkpoint) comes through the :class:`TrainingStage` hooks,
which the trainer calls at fixed points of every run.  :class:`PlainStage`, ordinary
co-training, adds nothing, so the loop needs no branch on the kind of run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import torch
from torch import nn

from splitsearch.config import SplitConfig
from splitsearch.ensemble import Ensemble, EnsembleMode, make_ensemble


@dataclass(frozen=True)
class MemberChange:
    """New members the run trains, one after another, from the end of ``after_epoch`` on.

    The trainer gives them a fresh optimiser; the learning-rate schedule is the run's and goes
    on from ``after_epoch`` (the semantic split's cut).
    """

    members: list[nn.Module]
    after_epoch: int


class TrainingStage(Protocol):
    """What the trainer asks of a kind of run; it calls every hook in every run, whatever the kind."""

    def build_ensemble(self, mode: EnsembleMode) -> Ensemble:
        """The members the run starts with (``mode`` as :func:`~splitsearch.ensemble.make_ensemble`'s)."""
        ...

    def optimizer_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Parameter groups the optimiser gets beside the members' (``base_lr`` is ``train.lr``)."""
        ...

    def regularisation(self, ensemble: Ensemble) -> torch.Tensor:
        """A scalar added to this step's co-training loss (logged as ``train_regularisers``)."""
        ...

    def after_optimizer_step(self, lr: float) -> None:
        """Called after every optimiser step, before the schedule moves on from ``lr``."""
        ...

    def end_of_epoch(self, epoch: int, ensemble: Ensemble) -> MemberChange | None:
        """After ``epoch`` is trained and before it is validated: members to go on with, or None."""
        ...

    def summary(self) -> dict[str, Any] | None:
        """What the run learned beyond weights, for metrics.json, the store and the report (None: nothing)."""
        ...

    def checkpoint_entries(self) -> dict[str, Any]:
        """Entries the stage adds to the trainer's checkpoint (top-level keys, read back by :meth:`resume`).

        Every rank of a process group calls it, as it may gather; the entries of rank 0 are written."""
        ...

    def resume(self, checkpoint: Mapping[str, Any]) -> MemberChange | None:
        """Restore the stage from a checkpoint; the members its weights belong to if not the initial ones."""
        ...


class PlainStage:
    """Ordinary co-training: fresh members (fused where possible), and every other hook does nothing.

    ``members`` is the slice of the S this process trains (all of them unless member-parallel).
    """

    def __init__(self, config: SplitConfig, device: torch.device, members: slice = slice(None)) -> None:
        self.config = config
        self.device = device
        self.members = members

    def build_ensemble(self, mode: EnsembleMode) -> Ensemble:
        return make_ensemble(self.config, mode=mode, device=self.device, members=self.members)

    def optimizer_groups(self, base_lr: float) -> list[dict[str, Any]]:
        return []

    def regularisation(self, ensemble: Ensemble) -> torch.Tensor:
        return torch.zeros((), device=self.device)

    def after_optimizer_step(self, lr: float) -> None:
        pass

    def end_of_epoch(self, epoch: int, ensemble: Ensemble) -> MemberChange | None:
        return None

    def summary(self) -> dict[str, Any] | None:
        return None

    def checkpoint_entries(self) -> dict[str, Any]:
        return {}

    def resume(self, checkpoint: Mapping[str, Any]) -> MemberChange | None:
        return None
