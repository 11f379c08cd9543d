"""What ``splitsearch train`` trains, and the training itself, in one process or as one rank of many.

A user retrains an exported configuration on another dataset, for more epochs, with another
seed, or as the final run of a chosen candidate (every training image, test accuracy once).
A :class:`TrainRequest` holds what was asked; :func:`plan_training` applies those overrides,
loads the data and names the output folder; :func:`run_training` trains.  The request is plain
picklable data, so that each rank of a member-parallel process group
(:mod:`splitsearch.train.launch`) acts on the same request; rank 0 alone reports and returns the
outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from splitsearch.config import SplitConfig
from splitsearch.data import DEFAULT_DATA_DIR, DataCache, DeviceData, prepare_data
from splitsearch.ensemble import Ensemble, FusedEnsemble, pack_state_dicts
from splitsearch.errors import OutputWriteError, TrainingError
from splitsearch.metrics import EpochMetrics, TrainResult
from splitsearch.train.launch import rank_device
from splitsearch.train.loop import Trainer
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.pool import RankPool


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """A training as asked: the config and the overrides (None: keep the config's) and where it runs.

    ``data_parallel`` (D) is the number of ranks of a process group that train the same members
    on shards of each batch (:mod:`splitsearch.train.parallel`); ``sync_bn`` has their BatchNorm
    layers share batch statistics.  ``warm_start_from``: a weights file (``model.pt``) whose tensors
    start the members wherever they fit (:meth:`~splitsearch.train.loop.Trainer.warm_start`, a
    fine-tuning of another candidate), unlike ``init_from``, which must fit exactly.  ``keep_data``:
    this process keeps the dataset for later requests (a rank kept across trials,
    :mod:`splitsearch.train.pool`)."""

    config: SplitConfig
    device: str = "cpu"
    mode: str = "auto"
    dataset: str | None = None
    epochs: int | None = None
    seed: int | None = None
    final: bool = False
    out_dir: Path | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    download: bool = False
    resume: bool = False
    init_from: Path | None = None
    data_path: str = "auto"
    loader_workers: int | None = None
    data_parallel: int = 1
    sync_bn: bool = False
    warm_start_from: Path | None = None
    keep_data: bool = False

    def resolved_config(self) -> SplitConfig:
        """The config with the request's overrides applied."""
        config = self.config if self.dataset is None else self.config.replace(dataset=self.dataset)
        settings = {"epochs": self.epochs, "seed": self.seed, "val_fraction": 0.0 if self.final else None}
        settings = {key: value for key, value in settings.items() if value is not None}
        return config.replace(train=dataclasses.replace(config.train, **settings)) if settings else config

    def resolved_out_dir(self) -> Path:
        """``out_dir``, else ``runs/<arch>-S<S>-<config hash>``: the same config resumes there."""
        config = self.resolved_config()
        return self.out_dir or Path("runs") / f"{config.arch}-S{config.S}-{config.config_hash()[:8]}"


@dataclass(frozen=True)
class TrainingPlan:
    """A training about to start.

    Attributes:
        config: the candidate with every override applied.
        data: its dataset on the training device.
        out_dir: where checkpoints, metrics and the model go.
        final: a final training (no validation split: test accuracy is reported once, at the end).
    """

    config: SplitConfig
    data: DeviceData
    out_dir: Path
    final: bool


@dataclass(frozen=True)
class TrainOutcome:
    """A finished training, as rank 0 saw it: what the command prints.

    ``processes`` and ``data_ranks`` count the ranks that joined the group (1, 1 in one
    process); ``warm_started_tensors`` how many tensors a warm start took (None: no warm start).
    """

    plan_config: SplitConfig
    out_dir: Path
    final: bool
    result: TrainResult
    ensemble_kind: str
    val_samples: int
    test_samples: int
    processes: int = 1
    data_ranks: int = 1
    warm_started_tensors: int | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a training: ``epochs`` finished epochs are checkpointed in ``out_dir``."""

    def __init__(self, out_dir: Path, epochs: int) -> None:
        super().__init__(f"{epochs} finished epoch(s) are checkpointed in {out_dir}")
        self.out_dir = out_dir
        self.epochs = epochs


class TrainReporter(Protocol):
    """Where a training tells its progress (rank 0 only): the data plan, then every epoch; ``progress``
    asks for a progress bar per epoch.  ``epoch`` returning True stops the training (a pruned trial)."""

    progress: bool

    def data_plan(self, plan: TrainingPlan) -> None: ...

    def epoch(self, plan: TrainingPlan, metrics: EpochMetrics) -> bool | None: ...

    def write_error(self, error: OutputWriteError) -> None:
        """A checkpoint, model or metrics file could not be written: raise to stop the training, return
        to train on without it (see :class:`~splitsearch.train.loop.Trainer`'s ``on_write_error``)."""


def plan_training(request: TrainRequest, device: str | None = None) -> TrainingPlan:
    """The request's config with its overrides, its data on ``device`` (default the request's), folder and mode.

    ``final`` trains on every training image (``train.val_fraction`` 0); a run whose dataset
    leaves no validation image is final too, as there is nothing to select on.
    """
    config = request.resolved_config()
    if request.keep_data:
        cache = _kept_data(device or request.device, request)
        data = cache.get(config.dataset, config.train, config.crop)
    else:
        data = prepare_data(config.dataset, config.train, device or request.device, request.data_dir,
                            request.download, config.crop, request.data_path, request.loader_workers)
    return TrainingPlan(config, data, request.resolved_out_dir(), request.final or data.val.num_samples == 0)


def run_training(request: TrainRequest, reporter: TrainReporter | None = None, device: str | None = None,
                 members_parallel: bool = False) -> TrainOutcome | None:
    """Train as ``request`` asks; in a process group (``members_parallel``) this rank's share of the members.

    Returns the outcome on rank 0 (in one process: always) and None on the other ranks.

    Raises:
        TrainingInterrupted: Ctrl-C; the last finished epoch's checkpoint stays, and ``resume``
            continues from it.
    """
    plan = plan_training(request, device)
    group = (MemberGroup.from_process_group(plan.config.S, request.data_parallel) if members_parallel
             else MemberGroup.single(plan.config.S))
    report = reporter if reporter is not None and group.is_main else None
    if report is not None:
        report.data_plan(plan)
    callbacks = [] if report is None else [lambda metrics: report.epoch(plan, metrics)]
    trainer = Trainer(plan.config, plan.data, device or request.device, plan.out_dir, request.mode,
                      callbacks=callbacks, progress=report is not None and report.progress, group=group,
                      on_write_error=None if report is None else report.write_error, sync_bn=request.sync_bn)
    if request.init_from is not None:
        start_from(trainer, read_weights(request.init_from, plan.config.S)[group.own], request.init_from)
    warm_started = None
    if request.warm_start_from is not None:
        # The members share one architecture, so every rank's members take as many tensors as rank 0's.
        taken = trainer.warm_start(read_weights(request.warm_start_from, plan.config.S)[group.own])
        warm_started = len(taken) * group.world
    try:
        result = trainer.fit(resume=request.resume, test=plan.final)
    except KeyboardInterrupt:
        raise TrainingInterrupted(plan.out_dir, len(trainer.history)) from None
    if not group.is_main:
        return None
    return TrainOutcome(plan.config, plan.out_dir, plan.final, result, type(trainer.ensemble).__name__,
                        plan.data.val.num_samples, plan.data.test.num_samples, group.processes, group.data_ranks,
                        warm_started)


def run_training_rank(request: TrainRequest, reporter: TrainReporter | None = None) -> TrainOutcome | None:
    """This process's rank of a member-parallel training (started by :func:`~splitsearch.train.launch.launch`
    or by torchrun): its share of the members, on its own GPU where the request asks for CUDA."""
    return run_training(request, reporter, rank_device(request.device), members_parallel=True)


def train_on(pool: RankPool, processes: int, request: TrainRequest,
             reporter: TrainReporter | None = None) -> TrainOutcome:
    """``request`` trained by ``processes`` ranks of a kept pool (they keep its dataset); rank 0's outcome.

    A data-parallel request makes subgroups (:class:`~splitsearch.train.parallel.MemberGroup`), so
    its ranks join a fresh group rather than gather subgroups trial after trial.
    """
    return pool.run(processes, run_training_rank, dataclasses.replace(request, keep_data=True), reporter,
                    new_group=request.data_parallel > 1)


# The datasets a process keeps for its later requests (``TrainRequest.keep_data``), by where they come from.
_KEPT_DATA: dict[tuple, DataCache] = {}


def _kept_data(device: str, request: TrainRequest) -> DataCache:
    key = (device, request.data_dir, request.download, request.data_path, request.loader_workers)
    if key not in _KEPT_DATA:
        _KEPT_DATA[key] = DataCache(device, request.data_dir, request.download, request.data_path,
                                    request.loader_workers)
    return _KEPT_DATA[key]


class WeightsMismatchError(TrainingError):
    """Weights given to start from (``--init-from``) do not fit the config being trained."""


def read_weights(path: Path, members: int) -> list[dict[str, torch.Tensor]]:
    """The ``members`` state dicts of a weights file (``model.pt`` of a training, ``export --weights``)."""
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)["members"]
    except Exception as error:  # torch.load raises many kinds (pickle, zip, EOF, index) on what is no weights file
        raise WeightsMismatchError(f"cannot read weights from {path}: {error or type(error).__name__}") from None
    if len(states) != members:
        raise WeightsMismatchError(f"{path} holds {len(states)} members, the config has S={members}")
    return states


def start_from(trainer: Trainer, states: list[dict[str, torch.Tensor]], path: Path) -> None:
    """Start ``trainer``'s members (this process's share) from ``states``, which must fit them exactly
    (:func:`load_weights`)."""
    load_weights(trainer.ensemble, states, path)


def load_weights(ensemble: Ensemble, states: list[dict[str, torch.Tensor]], path: Path) -> None:
    """Load ``states`` (from ``path``) into ``ensemble``'s members, which they must fit exactly.

    A warm start takes whatever fits, which suits a search's fine-tuning; weights a user names
    must be those of this config, so a missing or misshapen tensor is an error naming the first
    one, rather than a training that quietly starts partly from scratch.
    """
    for network, state in zip(ensemble.members, states):
        for name, tensor in network.state_dict().items():
            theirs = state.get(name)
            if theirs is None or theirs.shape != tensor.shape:
                found = "missing" if theirs is None else f"shaped {tuple(theirs.shape)}"
                raise WeightsMismatchError(f"{path} does not fit the config: {name} is {found}, "
                                           f"the config needs {tuple(tensor.shape)}")
    if isinstance(ensemble, FusedEnsemble):  # one packed network: the members packed the same way
        ensemble.network.load_state_dict(pack_state_dicts(states, ensemble.template))
        return
    for network, state in zip(ensemble.members, states):
        network.load_state_dict({name: state[name] for name in network.state_dict()})
