"""Member-parallel co-training: the S members spread over the ranks of a torch.distributed group.

Divide-and-co-train's members are independent networks; only the co-training term ties them,
through their softmax outputs.  So each rank trains its own ``S / world`` members on its own
device (or CPU threads), every rank cuts the same batch and draws all S views from the same
seeded generator (so every member sees the view it would see in one process), and each step
all-gathers the members' logits, a ``[S, B, K]`` tensor tiny beside the networks.  A rank's loss
is the joint loss computed on the gathered logits with the other ranks' as constants: the joint
loss reaches member i's weights only through member i's outputs, so each member's gradient is
exactly the one-process gradient, and member-parallel and one-process training are the same
algorithm (``tests/test_parallel.py`` checks the weights after a step).  BatchNorm statistics stay
per member, as in one process.

Checkpoints are written by rank 0 in the one-process format (a sequential ensemble of all S
members and one optimiser over them), so a run resumes on any number of ranks that divides S,
one process included.  :class:`MemberGroup` is what the trainer asks; in one process
(``MemberGroup.single(S)``) every collective is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from splitsearch.errors import TrainingError


@dataclass(frozen=True)
class MemberGroup:
    """Which of the S members this process trains, and the collectives that join it to the others.

    Rank r owns members ``r * k .. (r + 1) * k - 1`` with ``k = S / world``.
    """

    rank: int
    world: int
    members: int

    def __post_init__(self) -> None:
        if self.members % self.world:
            raise TrainingError(f"{self.world} processes cannot share {self.members} members equally: "
                                f"use a number of processes that divides S={self.members}")

    @classmethod
    def single(cls, members: int) -> MemberGroup:
        """All S members in this one process."""
        return cls(rank=0, world=1, members=members)

    @classmethod
    def from_process_group(cls, members: int) -> MemberGroup:
        """This rank's share of the initialised default process group."""
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), members=members)

    @property
    def per_rank(self) -> int:
        return self.members // self.world

    @property
    def own(self) -> slice:
        """This rank's members, as a slice of the S."""
        return slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, prints and talks to Optuna and the store."""
        return self.rank == 0

    def gather(self, local: Tensor) -> Tensor:
        """``[k, ...]`` of this rank's members -> ``[S, ...]`` of all, in member order.

        This rank's part keeps its autograd graph; the other ranks' parts are constants.  The
        gather is an all-reduce of the ``[S, ...]`` tensor in which each rank filled its own rows
        (zeros elsewhere, so the sum is exact): gloo all-reduces CUDA tensors but cannot
        all-gather them, and ranks that share one GPU talk over gloo.
        """
        if self.world == 1:
            return local
        full = local.new_zeros((self.members, *local.shape[1:]), dtype=torch.float32)
        full[self.own] = local.detach().float()
        dist.all_reduce(full)
        parts = list(full.split(self.per_rank))
        parts[self.rank] = local.float()
        return torch.cat(parts)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (whether to stop: rank 0 alone asks Optuna)."""
        if self.world == 1:
            return flag
        decision = [flag]
        dist.broadcast_object_list(decision, src=0)
        return bool(decision[0])

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0 (in rank order); None on the others."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    # -- the one-process checkpoint format -----------------------------------------------------------

    def full_ensemble_state(self, parts: list[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """A sequential ensemble's state dict over all S members from each rank's over its own."""
        state = {}
        for rank, part in enumerate(parts):
            for key, value in part.items():
                index, _, rest = key.removeprefix("networks.").partition(".")
                state[f"networks.{rank * self.per_rank + int(index)}.{rest}"] = value
        return state

    def own_ensemble_state(self, full: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """This rank's part of a sequential ensemble's state dict over all S members."""
        state = {}
        for key, value in full.items():
            index, _, rest = key.removeprefix("networks.").partition(".")
            member = int(index) - self.own.start
            if 0 <= member < self.per_rank:
                state[f"networks.{member}.{rest}"] = value
        return state

    def full_optimizer_state(self, parts: list[Mapping[str, Any]]) -> dict[str, Any]:
        """The optimiser state over all S members, as one process holds it, from each rank's over its own.

        Every parameter group lists its members' parameters member after member, each member the
        same number (the members share one architecture), so a parameter's index in a group is
        ``member * per_member + position``; the state is keyed by the index over all groups.
        """
        groups = parts[0]["param_groups"]
        per_member = [len(group["params"]) // self.per_rank for group in groups]
        state = {}
        for rank, part in enumerate(parts):
            for local, value in part["state"].items():
                state[self._index(int(local), per_member, self.per_rank, rank * self.per_rank, self.members)] = value
        offsets = _offsets([count * self.members for count in per_member])
        full_groups = [{**group, "params": list(range(offset, offset + count * self.members))}
                       for group, offset, count in zip(groups, offsets, per_member)]
        return {"state": state, "param_groups": full_groups}

    def own_optimizer_state(self, full: Mapping[str, Any]) -> dict[str, Any]:
        """This rank's part of an optimiser state over all S members (see :meth:`full_optimizer_state`)."""
        groups = full["param_groups"]
        per_member = [len(group["params"]) // self.members for group in groups]
        local_of = {self._index(local, per_member, self.per_rank, self.own.start, self.members): local
                    for local in range(sum(per_member) * self.per_rank)}
        state = {local_of[int(index)]: value for index, value in full["state"].items() if int(index) in local_of}
        offsets = _offsets([count * self.per_rank for count in per_member])
        own_groups = [{**group, "params": list(range(offset, offset + count * self.per_rank))}
                      for group, offset, count in zip(groups, offsets, per_member)]
        return {"state": state, "param_groups": own_groups}

    @staticmethod
    def _index(local: int, per_member: list[int], local_members: int, first_member: int, all_members: int) -> int:
        """The index over all members of parameter ``local`` of an optimiser over ``local_members`` members."""
        local_offsets = _offsets([count * local_members for count in per_member])
        full_offsets = _offsets([count * all_members for count in per_member])
        group = next(g for g, (offset, count) in enumerate(zip(local_offsets, per_member))
                     if offset <= local < offset + count * local_members)
        member, position = divmod(local - local_offsets[group], per_member[group])
        return full_offsets[group] + (first_member + member) * per_member[group] + position


def _offsets(sizes: list[int]) -> list[int]:
    """Where each of consecutive blocks of ``sizes`` starts."""
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts
