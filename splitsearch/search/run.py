"""Run a study end to end: check everything, open the storage, enqueue baselines, optimise.

This is what ``splitsearch run`` calls; it is also the Python entry point::

    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec, resolve_study_file
    study = run_study(load_study_spec(resolve_study_file("quickstart")), "sqlite:///splitsearch.db")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import optuna
import torch

from splitsearch.cost import fit_width
from splitsearch.data import DEFAULT_DATA_DIR, DataCache
from splitsearch.search.objective import SearchObjective, enqueue_baselines, requeue_interrupted
from splitsearch.search.study import StudyError, StudySpec, open_storage, open_study
from splitsearch.store import Store, upgrade
from splitsearch.train.loop import EpochMetrics

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def check_budget(spec: StudySpec) -> None:
    """Fail before anything is stored when even the narrowest base network breaks the budget."""
    if spec.has_budget:
        fit_width(spec.base, budget_params=spec.budget_params, budget_macs=spec.budget_macs)


def open_search(spec: StudySpec, storage_url: str, force: bool = False) -> tuple[optuna.Study, Store]:
    """Open (or create) the study and the store in the same database, schema upgraded."""
    storage = open_storage(storage_url)
    upgrade(storage_url)
    study, created = open_study(spec, storage, force=force)
    if created and spec.baselines:
        enqueue_baselines(study, spec)
    requeue_interrupted(study)
    return study, Store(storage_url)


def remaining_trials(study: optuna.Study, n_trials: int | None) -> int | None:
    """How many more trials reach ``n_trials`` finished (complete or pruned) in the whole study."""
    if n_trials is None:
        return None
    return max(0, n_trials - len(study.get_trials(deepcopy=False, states=FINISHED)))


def run_study(spec: StudySpec, storage_url: str, runs_dir: str | Path = "runs", device: torch.device | str = "cpu",
              mode: str = "auto", force: bool = False, progress: bool = True,
              on_epoch: Callable[[int, EpochMetrics], None] | None = None,
              data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False) -> optuna.Study:
    """Run ``spec`` until it has ``spec.n_trials`` finished trials or ``spec.timeout`` seconds pass.

    Several workers may run the same spec against one PostgreSQL storage at once: each stops
    when the study as a whole has enough finished trials.  Optuna's experimental-feature
    warnings (heartbeats, trial retries, grouped TPE) are silenced: we use them on purpose.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    check_budget(spec)
    data = DataCache(device, data_dir, download)
    data.get(spec.base.dataset, spec.base.train)  # a missing dataset fails here, before the storage is touched
    study, store = open_search(spec, storage_url, force)
    remaining = remaining_trials(study, spec.n_trials)
    if remaining == 0:
        return study
    objective = SearchObjective(spec, store, Path(runs_dir), torch.device(device), mode, on_epoch, data)
    callbacks = []
    if spec.n_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(spec.n_trials, states=FINISHED))
    study.optimize(objective, n_trials=remaining, timeout=spec.timeout, callbacks=callbacks,
                   show_progress_bar=progress)
    return study


def load_existing_study(study_name: str | None, storage_url: str) -> optuna.Study:
    """An existing study by name; with no name, the storage's only study.

    Raises:
        StudyError: unknown study, several studies and no name, or an unreachable storage.
    """
    if storage_url.startswith("sqlite:///") and not storage_url.endswith(":memory:"):
        path = Path(storage_url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StudyError(f"no database at {path} (storage {storage_url})")
    storage = open_storage(storage_url, heartbeat=False)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    if study_name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise StudyError(f"give --study: {storage_url} holds {len(names)} studies ({listing})")
        study_name = names[0]
    if study_name not in names:
        raise StudyError(f"no study {study_name!r} in {storage_url} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)
