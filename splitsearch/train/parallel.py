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

Data-parallel ranks inside one member (``--data-parallel D``) make the group a grid: ``world =
M x D`` ranks, member rank ``m`` and data rank ``d`` at global rank ``m * D + d`` (the D ranks that
hold the same members are neighbours, so on a cluster their gradient all-reduce, the heavy
traffic, stays inside a node).  The D ranks of a member rank each take a 1/D shard of the same
global batch, after all S views of the whole batch have been drawn (and mixed), so the union of
the shards is exactly what one process trains on; their members are wrapped in
``DistributedDataParallel`` over the subgroup of those D ranks.  The logits are all-gathered over
the subgroup of the M ranks that hold the same shard.  BatchNorm sees a rank's shard (DDP's usual
per-rank statistics; rank ``d = 0``'s running statistics are the ones kept) unless the layers are
converted to ``SyncBatchNorm`` over the D ranks, which torch runs on GPUs only.

Checkpoints are written by rank 0 in the one-process format (a sequential ensemble of all S
members and one optimiser over them), so a run resumes on any grid whose member ranks divide S,
one process included.  :class:`MemberGroup` is what the trainer asks; in one process
(``MemberGroup.single(S)``) every collective is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from splitsearch.config import SplitConfig
from splitsearch.errors import TrainingError
from splitsearch.train.launch import COLLECTIVE_TIMEOUT


SYNC_BN_NEEDS_CUDA = ("--sync-bn needs CUDA: torch's SyncBatchNorm runs on GPUs only; on the CPU leave it out "
                      "(each data rank then normalises with its own shard's statistics)")


SEMANTIC_MEMBERS_ONLY = ("the semantic split trains member-parallel only (each rank learns and cuts its own "
                         "members' groups): leave out --data-parallel")


def check_grid(processes: int, data_parallel: int, members: int) -> None:
    """Refuse, in one line, a grid of ``processes`` ranks, ``data_parallel`` per member rank, that cannot hold S.

    Raises:
        TrainingError: ``data_parallel`` does not divide ``processes``, or the member ranks
            ``processes / data_parallel`` do not divide S.
    """
    if data_parallel < 1:
        raise TrainingError(f"--data-parallel must be at least 1, got {data_parallel}")
    if processes % data_parallel:
        raise TrainingError(f"--data-parallel {data_parallel} does not divide the {processes} processes: "
                            f"use a number of processes that is a multiple of {data_parallel}")
    if data_parallel > 1 and members % (processes // data_parallel):
        raise TrainingError(f"{processes // data_parallel} member ranks ({processes} processes / --data-parallel "
                            f"{data_parallel}) cannot share {members} members equally: use member ranks that "
                            f"divide S={members}")
    MemberGroup(rank=0, world=processes // data_parallel, members=members)


def check_data_parallel(processes: int, data_parallel: int, config: SplitConfig, device: str, sync_bn: bool) -> None:
    """Refuse, in one line and before any process starts, a grid or BatchNorm option that cannot train ``config``.

    Raises:
        TrainingError: the grid cannot hold the S members (:func:`check_grid`), a batch has fewer
            images than data ranks, or ``sync_bn`` without data ranks or off CUDA.
    """
    check_grid(processes, data_parallel, config.S)
    batch_size = config.train.with_dataset_defaults(config.input_info())[0].batch_size  # unset: the dataset's
    if batch_size < data_parallel:
        raise TrainingError(f"train.batch_size {batch_size} cannot be shared by {data_parallel} "
                            f"data ranks: use a batch of at least {data_parallel} images")
    if data_parallel > 1 and config.groups > 1:
        raise TrainingError(SEMANTIC_MEMBERS_ONLY)
    if sync_bn and data_parallel == 1:
        raise TrainingError("--sync-bn shares BatchNorm statistics between data ranks: use it with "
                            "--data-parallel 2 or more")
    if sync_bn and not device.startswith("cuda"):
        raise TrainingError(SYNC_BN_NEEDS_CUDA)


@dataclass(frozen=True)
class MemberGroup:
    """Which of the S members this process trains, which shard of the batch, and the collectives that join it.

    ``rank`` and ``world`` count member ranks: member rank r owns members ``r * k .. (r + 1) * k - 1``
    with ``k = S / world``.  ``data_rank`` and ``data_ranks`` (D) place it among the ranks that hold
    the same members; its global rank is ``rank * D + data_rank``.  ``member_group`` joins the
    ranks of one data rank (different members; None: the default group), ``data_group`` the ranks
    of one member rank (None where D = 1).
    """

    rank: int
    world: int
    members: int
    data_rank: int = 0
    data_ranks: int = 1
    member_group: Any = field(default=None, compare=False, repr=False)
    data_group: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.members % self.world:
            raise TrainingError(f"{self.world} processes cannot share {self.members} members equally: "
                                f"use a number of processes that divides S={self.members}")

    @classmethod
    def single(cls, members: int) -> MemberGroup:
        """All S members in this one process."""
        return cls(rank=0, world=1, members=members)

    @classmethod
    def from_process_group(cls, members: int, data_parallel: int = 1) -> MemberGroup:
        """This rank's place in the initialised default process group, a grid of ``world / D`` member ranks x D.

        Every rank creates every subgroup, in the same order, as ``torch.distributed.new_group`` requires;
        their collectives time out as the whole group's do (:data:`~splitsearch.train.launch.COLLECTIVE_TIMEOUT`).

        Raises:
            TrainingError: the grid cannot hold the S members (:func:`check_grid`).
        """
        processes, rank = dist.get_world_size(), dist.get_rank()
        check_grid(processes, data_parallel, members)
        member_ranks = processes // data_parallel
        member_rank, data_rank = divmod(rank, data_parallel)
        data_group = member_group = None
        if data_parallel > 1:  # torch makes every rank create every subgroup and hands each its own
            grid = [[m * data_parallel + d for d in range(data_parallel)] for m in range(member_ranks)]
            data_group, _ = dist.new_subgroups_by_enumeration(grid, timeout=COLLECTIVE_TIMEOUT)
            if member_ranks > 1:
                columns = [list(column) for column in zip(*grid)]
                member_group, _ = dist.new_subgroups_by_enumeration(columns, timeout=COLLECTIVE_TIMEOUT)
        return cls(rank=member_rank, world=member_ranks, members=members, data_rank=data_rank,
                   data_ranks=data_parallel, member_group=member_group, data_group=data_group)

    @property
    def per_rank(self) -> int:
        return self.members // self.world

    @property
    def own(self) -> slice:
        """This rank's members, as a slice of the S."""
        return slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)

    @property
    def processes(self) -> int:
        """Ranks in the whole grid: member ranks x data ranks."""
        return self.world * self.data_ranks

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, prints and talks to Optuna and the store."""
        return self.rank == 0 and self.data_rank == 0

    def shard(self, batch_size: int) -> slice:
        """This data rank's part of a batch: D nearly equal, consecutive parts that cover it."""
        start, end = self.data_rank, self.data_rank + 1
        return slice(batch_size * start // self.data_ranks, batch_size * end // self.data_ranks)

    def owns_batch(self, index: int) -> bool:
        """Whether this data rank evaluates batch ``index`` of a validation or test split (every D-th)."""
        return index % self.data_ranks == self.data_rank

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
        dist.all_reduce(full, group=self.member_group)
        parts = list(full.split(self.per_rank))
        parts[self.rank] = local.float()
        return torch.cat(parts)

    def sum_over_data(self, value: Tensor) -> Tensor:
        """``value`` summed over the D ranks that hold this rank's members (itself where D = 1)."""
        if self.data_ranks > 1:
            dist.all_reduce(value, group=self.data_group)
        return value

    def data_parallel(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` wrapped in ``DistributedDataParallel`` over this member rank's D data ranks (itself where D = 1).

        Its gradients are averaged over the D ranks in backward; its parameters start as data
        rank 0's.
        """
        if self.data_ranks == 1:
            return module
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                       process_group=self.data_group)

    def sync_batch_norm(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` with its BatchNorm layers computing batch statistics over the D data ranks' shards.

        Raises:
            TrainingError: not on a GPU: torch's ``SyncBatchNorm`` refuses CPU tensors.
        """
        if device.type != "cuda":
            raise TrainingError(SYNC_BN_NEEDS_CUDA)
        # torch's convert_sync_batchnorm visits a layer once, under its first name; a block that also
        # names its last BatchNorm ``last_bn`` would keep the plain layer there.  So convert each
        # layer once with it and put the result under every name the layer has.
        converted: dict[nn.Module, nn.Module] = {}
        for path, child in list(module.named_modules(remove_duplicate=False)):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and path:
                if child not in converted:
                    converted[child] = nn.SyncBatchNorm.convert_sync_batchnorm(child, process_group=self.data_group)
                parent, _, name = path.rpartition(".")
                setattr(module.get_submodule(parent), name, converted[child])
        return module

    def share_buffers(self, module: nn.Module) -> None:
        """Data rank 0's buffers (BatchNorm's running statistics) on the D ranks, as DDP does before each forward.

        Per-rank BatchNorm leaves each rank's statistics of its own shards; rank 0's are the kept ones.
        """
        if self.data_ranks == 1:
            return
        source = self.rank * self.data_ranks  # the global rank of data rank 0
        for buffer in module.buffers():
            dist.broadcast(buffer, src=source, group=self.data_group)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (whether to stop: rank 0 alone asks Optuna)."""
        if self.processes == 1:
            return flag
        decision = [flag]
        dist.broadcast_object_list(decision, src=0)
        return bool(decision[0])

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """Every member rank's ``value`` (in rank order) on rank 0, sent by its data rank 0; None on the others."""
        if self.data_rank != 0:
            return None
        if self.world == 1:
            return [value]
        gathered = [None] * self.world if self.is_main else None
        dist.gather_object(value, gathered, dst=0, group=self.member_group)
        return gathered

    def gather_over_data(self, value: Any) -> list[Any] | None:
        """Every data rank's ``value`` of this member rank (in data-rank order) on its data rank 0; None on the others."""
        if self.data_ranks == 1:
            return [value]
        gathered = [None] * self.data_ranks if self.data_rank == 0 else None
        dist.gather_object(value, gathered, dst=self.rank * self.data_ranks, group=self.data_group)
        return gathered

    # -- the one-process checkpoint format -----------------------------------------------------------

    def gather_training_state(self, ensemble: dict[str, Tensor], optimizer: dict[str, Any]
                              ) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """This rank's ensemble and optimiser states as one process over all S members holds them, on rank 0.

        Every rank must call it (member ranks send theirs to rank 0); the other ranks get None.
        """
        if self.world == 1:
            return (ensemble, optimizer) if self.is_main else None
        parts = self.gather_to_main((to_cpu(ensemble), to_cpu(optimizer)))
        if parts is None:
            return None
        return (self.full_ensemble_state([part[0] for part in parts]),
                self.full_optimizer_state([part[1] for part in parts]))

    def own_training_state(self, ensemble: dict[str, Tensor], optimizer: dict[str, Any]
                           ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """This rank's part of ensemble and optimiser states over all S members (all of them in one process)."""
        if self.world == 1:
            return ensemble, optimizer
        return self.own_ensemble_state(ensemble), self.own_optimizer_state(optimizer)

    def gather_members(self, members: list[Mapping[str, Tensor]]) -> list[dict[str, Tensor]] | None:
        """All S members' state dicts, in member order and on the CPU, on rank 0 from each rank's own; None elsewhere."""
        parts = self.gather_to_main([to_cpu(member) for member in members])
        return None if parts is None else [member for part in parts for member in part]


    def full_ensemble_state(self, parts: list[Mapping[str, Tensor]], prefix: str = "networks.") -> dict[str, Tensor]:
        """A sequential ensemble's state dict over all S members from each rank's over its own.

        ``prefix``: where the members' list sits in the state dict (``""``: a list of per-member modules).
        """
        state = {}
        for rank, part in enumerate(parts):
            for key, value in part.items():
                index, _, rest = key.removeprefix(prefix).partition(".")
                state[f"{prefix}{rank * self.per_rank + int(index)}.{rest}"] = value
        return state

    def own_ensemble_state(self, full: Mapping[str, Tensor], prefix: str = "networks.") -> dict[str, Tensor]:
        """This rank's part of a sequential ensemble's state dict over all S members (``prefix`` as above)."""
        state = {}
        for key, value in full.items():
            index, _, rest = key.removeprefix(prefix).partition(".")
            member = int(index) - self.own.start
            if 0 <= member < self.per_rank:
                state[f"{prefix}{member}.{rest}"] = value
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


def to_cpu(state: Any) -> Any:
    """A state (nested dicts, lists and tensors) with every tensor on the CPU, to send to another process."""
    if isinstance(state, Tensor):
        return state.cpu()
    if isinstance(state, Mapping):
        return {key: to_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(value) for value in state)
    return state


def _offsets(sizes: list[int]) -> list[int]:
    """Where each of consecutive blocks of ``sizes`` starts."""
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts
