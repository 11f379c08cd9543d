"""How a worker runs its trainings: device, execution mode, folders, its heartbeat and its patience with the database.

None of these settings changes what a study searches or what its results mean, so they are not
part of a study's definition (:class:`~splitsearch.search.study.StudySpec`) and may differ from
worker to worker: one worker on a GPU, another on a CPU, each with its own data folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from splitsearch.config import SplitConfig
from splitsearch.data import DEFAULT_DATA_DIR, DataCache
from splitsearch.errors import TrainingError
from splitsearch.search.artifacts import ARTIFACTS_FOLDER, DEFAULT_KEEP_BEST, ArtifactKeeper, file_store
from splitsearch.search.worker import HEARTBEAT_SECONDS
from splitsearch.store.retry import RETRY_SECONDS
from splitsearch.train.plan import TrainRequest


# What a study file's ``worker:`` section (or ``--set worker.KEY=VALUE``) may set: the worker's
# settings that are not options of ``splitsearch run`` itself, with their type and least value.
WORKER_SETTINGS: dict[str, tuple[type, float | None]] = {
    "heartbeat_seconds": (int, 1), "storage_retry_seconds": (float, 0), "keep_best": (int, 0),
    "keep_checkpoints": (bool, None), "artifacts_dir": (Path, None), "data_parallel": (int, 1),
}


def worker_settings(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :class:`ExecutionOptions` fields a ``worker:`` section sets, checked and converted.

    Raises:
        TrainingError: an unknown key or a value of the wrong type (one line).
    """
    settings = {}
    for key, value in dict(data or {}).items():
        if key not in WORKER_SETTINGS:
            raise TrainingError(f"unknown key worker.{key} (known keys: {', '.join(sorted(WORKER_SETTINGS))})")
        kind, least = WORKER_SETTINGS[key]
        plain_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is bool and not isinstance(value, bool):
            raise TrainingError(f"worker.{key} must be true or false, got {value!r}")
        if kind in (int, float) and not (plain_number and (kind is float or isinstance(value, int))
                                         and value >= least):
            raise TrainingError(f"worker.{key} must be a {'whole ' if kind is int else ''}number of at least "
                                f"{least:g}, got {value!r}")
        settings[key] = Path(value) if kind is Path else kind(value)
    return settings


@dataclass(frozen=True)
class ExecutionOptions:
    """Where and how a worker trains candidates.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:N`` (resolve ``auto`` before, with
            :func:`splitsearch.train.loop.resolve_device`).
        mode: how the S members run together: ``auto``, ``fused`` or ``sequential``.
        runs_dir: per-trial checkpoints, ``runs_dir/<study>-<key>/trial-<n>``; a retried trial
            continues from its checkpoint, so a cluster puts it on a shared file system.
        data_dir, download: where torchvision datasets are found, and whether to download one
            that is not there.
        keep_checkpoints: keep a trial's checkpoint after it ends (by default only an
            interrupted trial's stays).
        heartbeat_seconds: seconds between a running trial's heartbeats; a trial silent for
            three beats belongs to a dead worker and is queued again.
        nproc_per_trial: train each trial's members in up to this many processes (member-parallel,
            :mod:`splitsearch.train.launch`); see :meth:`trial_processes`.
        data_parallel: of those processes, how many train the same members on shards of each batch
            (data ranks, :mod:`splitsearch.train.parallel`); it must divide ``nproc_per_trial``.
        storage_retry_seconds: how long the worker waits for an unreachable database before it
            stops (:mod:`splitsearch.store.retry`).
        artifacts_dir: the artifact store's folder, where completed trials' weights are kept
            (default ``runs_dir/artifacts``; :mod:`splitsearch.search.artifacts`).
        artifact_store: any Optuna ``ArtifactStore`` to keep them in instead (``Boto3ArtifactStore``
            for S3, ``GCSArtifactStore``); the command line offers the folder store only.
        keep_best: how many searched trials keep their weights there (plus the baselines).
        data_path, loader_workers: whether an image folder is held in memory or streamed from
            disk, and by how many decoding processes (:func:`splitsearch.data.prepare_data`).
    """

    device: str = "cpu"
    mode: str = "auto"
    runs_dir: Path = Path("runs")
    data_dir: Path = DEFAULT_DATA_DIR
    download: bool = False
    keep_checkpoints: bool = False
    heartbeat_seconds: int = HEARTBEAT_SECONDS
    storage_retry_seconds: float = RETRY_SECONDS
    nproc_per_trial: int = 1
    data_parallel: int = 1
    artifacts_dir: Path | None = None
    artifact_store: Any = None
    keep_best: int = DEFAULT_KEEP_BEST
    data_path: str = "auto"
    loader_workers: int | None = None

    def artifact_keeper(self) -> ArtifactKeeper:
        """What keeps this worker's completed trials' weights: ``artifact_store``, else a folder store."""
        store = self.artifact_store or file_store(self.artifacts_dir or self.runs_dir / ARTIFACTS_FOLDER)
        return ArtifactKeeper(store, self.keep_best)

    def __post_init__(self) -> None:
        if self.nproc_per_trial % self.data_parallel:
            raise TrainingError(f"worker.data_parallel {self.data_parallel} does not divide --nproc-per-trial "
                                f"{self.nproc_per_trial}: use a multiple of {self.data_parallel} processes per trial")

    def trial_processes(self, config: SplitConfig) -> int:
        """How many processes train ``config``: the most, up to ``nproc_per_trial``, that share its S members equally.

        A study's candidates differ in S, so a worker asked for 4 processes trains S=4 in 4, S=2
        in 2 and the undivided network in 1 (itself).  With ``data_parallel`` D, ``nproc_per_trial
        / D`` member ranks share S the same way, each with D data ranks (4 processes, D=2: S=2 and
        S=4 in 2 x 2, S=1 in 1 x 2).  The semantic split trains member-parallel only
        (:func:`trial_data_parallel`).
        """
        return self.trial_data_parallel(config) * math.gcd(config.S, self.nproc_per_trial // self.data_parallel)

    def trial_data_parallel(self, config: SplitConfig) -> int:
        """The data ranks per member rank of the processes that train ``config`` (1: none; always 1 for a
        semantic split, whose ranks each learn their own members' groups)."""
        return 1 if config.groups > 1 else self.data_parallel

    def trial_member_ranks(self, config: SplitConfig) -> int:
        """Among how many processes ``config``'s S members are shared out (each holding S / that many)."""
        return self.trial_processes(config) // self.trial_data_parallel(config)

    def train_request(self, config: SplitConfig, out_dir: Path, resume: bool,
                      warm_start_from: Path | None = None) -> TrainRequest:
        """What the ranks of a process group train for ``config``, with this worker's device, mode and data."""
        return TrainRequest(config=config, device=self.device, mode=self.mode, out_dir=out_dir, data_dir=self.data_dir,
                            download=self.download, resume=resume, data_path=self.data_path,
                            loader_workers=self.loader_workers, data_parallel=self.trial_data_parallel(config),
                            warm_start_from=warm_start_from)

    def data_cache(self) -> DataCache:
        """A dataset cache for this worker: each dataset loaded once, on ``device``."""
        return DataCache(self.device, self.data_dir, self.download, self.data_path, self.loader_workers)
