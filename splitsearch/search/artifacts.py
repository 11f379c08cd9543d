"""What a search trained, kept: a completed trial's weights in Optuna's artifact store, the best K of them.

A trial's checkpoint folder is removed when it ends (checkpoints are large), which used to throw
the trained weights away: the best candidate had to be retrained from its YAML.  Now a trial
that completes uploads its ``model.pt`` (the S members' state dicts and the config that
rebuilds them) and its ``metrics.json`` (history, a semantic split's class groups) to an
artifact store (:mod:`optuna.artifacts`), where optuna-dashboard lists them beside the trial.
The store is a folder by default (``<runs-dir>/artifacts``); any store Optuna supports (S3
through ``Boto3ArtifactStore``, Google Cloud Storage) works through the Python API, as
:class:`ArtifactKeeper` takes any ``ArtifactStore``.

The keep policy bounds the disk a long search uses: after each completed trial, the weights of
the searched trials pushed out of the best ``keep_best`` (single objective) or off the Pareto
front (two objectives) are removed.  Baselines keep theirs: they are the yardstick a pick is
compared with.  A trial's record says which artifact it uploaded (``artifact_id``); a trial that
removed others' says whose (``removed_artifacts``), as a finished trial's attributes cannot change.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from splitsearch.errors import SplitsearchError
from splitsearch.search.record import TrialRecord

# The store's folder under the runs directory when --artifacts-dir is not given.
ARTIFACTS_FOLDER = "artifacts"
DEFAULT_KEEP_BEST = 3


class WeightsNotKeptError(SplitsearchError, ValueError):
    """The trial's trained weights are not in the artifact store (never uploaded, or removed)."""


def file_store(directory: Path) -> FileSystemArtifactStore:
    """A file-system artifact store in ``directory`` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


@dataclass(frozen=True)
class ArtifactKeeper:
    """Uploads a completed trial's weights and applies the keep policy.

    Attributes:
        store: any Optuna ``ArtifactStore``.
        keep_best: how many searched trials keep their weights (single objective).
    """

    store: Any
    keep_best: int = DEFAULT_KEEP_BEST

    def keep(self, trial: optuna.Trial, model_file: Path, values: Sequence[float], metrics_file: Path | None = None,
             ) -> None:
        """Upload ``model_file`` as ``trial``'s weights, then remove those the policy no longer keeps.

        ``metrics_file`` (the training's ``metrics.json``: config, per-epoch history and, for a
        semantic split, the class groups) goes beside the weights, so that the dashboard shows the
        files a user downloads together.  ``trial`` is still running (its ``values`` are not
        stored yet), so the policy ranks it with the values it is about to return.
        """
        artifact_id = upload_artifact(study_or_trial=trial, file_path=str(model_file), artifact_store=self.store)
        TrialRecord(artifact_id=artifact_id).write_to(trial)
        if metrics_file is not None:
            metrics_id = upload_artifact(study_or_trial=trial, file_path=str(metrics_file), artifact_store=self.store,
                                         mimetype="application/json")
            TrialRecord(metrics_artifact_id=metrics_id).write_to(trial)
        dropped = self.dropped(trial.study, trial.number, tuple(values))
        for _, dropped_ids in dropped:
            for dropped_id in dropped_ids:
                with contextlib.suppress(ArtifactNotFound):  # another worker's policy removed it at the same time
                    self.store.remove(dropped_id)
        if dropped:
            TrialRecord(removed_artifacts=tuple(number for number, _ in dropped)).write_to(trial)

    def dropped(self, study: optuna.Study, current: int, values: tuple[float, ...]
                ) -> list[tuple[int, tuple[str, ...]]]:
        """``(trial, artifact ids)`` of the searched trials whose files the policy no longer keeps.

        ``current`` is the trial completing now, with ``values``; the others are read from ``study``.
        """
        holders = _holders(study, current, values)
        signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
        if len(study.directions) == 1:
            # Best first in the study's own direction: accuracy is maximised, NLL minimised.
            ranked = sorted(holders, key=lambda holder: (-signs[0] * holder[1][0], holder[0]))
            kept = {number for number, _, _ in ranked[:self.keep_best]}
        else:
            kept = {number for number, point, _ in holders
                    if not any(_dominates(other, point, signs) for _, other, _ in holders)}
        return [(number, artifact_ids) for number, _, artifact_ids in holders if number not in kept]


def _holders(study: optuna.Study, current: int, values: tuple[float, ...]
             ) -> list[tuple[int, tuple[float, ...], tuple[str, ...]]]:
    """``(trial, values, artifact ids)`` of the searched (non-baseline) trials whose weights are still kept."""
    trials = study.get_trials(deepcopy=False)
    removed = {number for trial in trials for number in TrialRecord.from_trial(trial).removed_artifacts or ()}
    holders = []
    for trial in trials:
        record = TrialRecord.from_trial(trial)
        if record.artifact_id is None or record.is_baseline or trial.number in removed:
            continue
        ids = tuple(artifact for artifact in (record.artifact_id, record.metrics_artifact_id) if artifact is not None)
        if trial.number == current:
            holders.append((trial.number, values, ids))
        elif trial.state == TrialState.COMPLETE:
            holders.append((trial.number, tuple(trial.values), ids))
    return holders


def _dominates(first: tuple[float, ...], second: tuple[float, ...], signs: list[int]) -> bool:
    """Whether ``first`` is at least as good as ``second`` in every objective and better in one."""
    pairs = [(sign * a, sign * b) for a, b, sign in zip(first, second, signs)]
    return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)


def download_weights(study: optuna.Study, trial: FrozenTrial, store: Any, path: Path, config_file: Path) -> None:
    """Write ``trial``'s kept weights to ``path`` (a repeat's are those of the trial it repeats).

    ``config_file`` is the trial's exported YAML, which the error names for retraining.

    Raises:
        WeightsNotKeptError: the trial has none in ``store``, saying why and how to retrain.
    """
    source = trial
    if (repeat_of := TrialRecord.from_trial(trial).repeat_of) is not None:
        source = study.get_trials(deepcopy=False)[repeat_of]
    artifact_id = TrialRecord.from_trial(source).artifact_id
    if artifact_id is None or not _in_store(artifact_id, store):
        raise WeightsNotKeptError(f"the weights of trial {trial.number} were {_why_not_kept(study, source)}; "
                                  f"retrain it from the exported YAML: splitsearch train {config_file}")
    download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)


def _in_store(artifact_id: str, store: Any) -> bool:
    """Whether the artifact is still there (the keep policy, or a user, may have removed it)."""
    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


def _why_not_kept(study: optuna.Study, trial: FrozenTrial) -> str:
    """Why a trial's weights are not in the store, in a few words."""
    record = TrialRecord.from_trial(trial)
    if record.reused_from is not None:
        return f"not trained in this study (its result was reused from {record.reused_from})"
    if record.artifact_id is None:
        return "not kept (it did not complete here, or the study ran before weights were kept)"
    remover = next((other.number for other in study.get_trials(deepcopy=False)
                    if trial.number in (TrialRecord.from_trial(other).removed_artifacts or ())), None)
    if remover is not None:
        return f"removed by the keep policy (--keep-best) when trial {remover} completed"
    return "removed from the artifact store, or it is another store (--artifacts-dir)"
