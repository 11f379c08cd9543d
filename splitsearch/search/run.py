"""Run a study end to end: check everything, open the storage, enqueue baselines, optimise.

This is what ``splitsearch run`` calls; it is also the Python entry point::

    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec, resolve_study_file
    study = run_study(load_study_spec(resolve_study_file("quickstart")), "sqlite:///splitsearch.db")
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState
from tqdm.auto import tqdm

from splitsearch.cost.fitting import fit_width
from splitsearch.search.objective import (
    SearchObjective,
    enqueue_baselines,
    enqueue_tuned_baselines,
    tuned_baseline_trials,
    warn,
)
from splitsearch.data import DataCache
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.plan_estimate import StudyProgress
from splitsearch.search.record import TrialCounts, TrialRecord, count_trials
from splitsearch.search.study import (
    StudyError,
    StudySpec,
    make_sampler,
    open_study,
    publish_settings,
)
from splitsearch.search.worker import (
    HEARTBEAT_SECONDS,
    MAX_RETRIES,
    recover_dead_local_trials,
    requeue_interrupted,
    retry_callback,
    settle_store,
    sigterm_interrupts,
)
from splitsearch.metrics import EpochMetrics
from splitsearch.store import Store, upgrade
from splitsearch.store.records import STORE_CONNECTIONS
from splitsearch.store.retry import RETRY_SECONDS, PatientRDBStorage, StoragePatience
from splitsearch.store.storage import OPTUNA_CONNECTIONS, open_storage
from splitsearch.store.urls import mask_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The most connections a worker holds on a database server: Optuna's storage (its main thread, and
# its heartbeat thread while the main one queries) and the store's.  Opening the store briefly
# holds one more for Alembic, while the store's own is not open yet.
WORKER_CONNECTIONS = OPTUNA_CONNECTIONS + STORE_CONNECTIONS
# How often a worker with nothing to start looks again at trials other workers are running.
_POLL_SECONDS = 5.0
# A study without n_trials stops after this many failed trials.
MAX_FAILURES = 10
# The sampler proposing this many repeats in a row (candidates the study has finished) ends the
# search: in a small or collapsed space (the divide space's S=1 is one configuration) it would
# otherwise draw known points for ever, since repeats do not count toward n_trials.
MAX_REPEATS_IN_A_ROW = 20


def check_budget(spec: StudySpec) -> None:
    """Fail before anything is stored when even the narrowest base network breaks the budget."""
    if spec.has_budget:
        fit_width(spec.base, budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                  budget_activation=spec.budget_activation)


def open_search(spec: StudySpec, storage_url: str, force: bool = False,
                heartbeat_seconds: int = HEARTBEAT_SECONDS,
                retry_seconds: float = RETRY_SECONDS) -> tuple[optuna.Study, Store]:
    """Open (or create) the study and the store in the same database, and join the study as a worker.

    The creator queues the baselines before it publishes the study's settings; every worker
    then gets its own sampler seed (:meth:`splitsearch.store.Store.register_worker`), fails and
    requeues what dead workers on this machine left running, and requeues interrupted trials.
    Both wait out an outage of the database for up to ``retry_seconds``, together.
    """
    storage = open_storage(storage_url, StoragePatience(storage_url, retry_seconds), heartbeat_seconds,
                           stale_trial_callback=retry_callback(MAX_RETRIES))
    store = open_store(storage)
    study, created = open_study(spec, storage, force=force)
    if created:
        if spec.baselines:
            enqueue_baselines(study, spec)
        publish_settings(study, spec)
    seed = store.register_worker(spec.name, socket.gethostname(), os.getpid(), spec.seed, creator=created)
    study.sampler = make_sampler(spec, seed)
    recover_dead_local_trials(study, store)
    fail_stale_trials(study)
    requeue_interrupted(study)
    settle_store(study, store)
    return study, store


def run_study(spec: StudySpec, storage_url: str, execution: ExecutionOptions = ExecutionOptions(),
              force: bool = False, progress: bool = True,
              on_epoch: Callable[[int, EpochMetrics], None] | None = None,
              on_warning: Callable[[str], None] = warn, data: DataCache | None = None) -> optuna.Study:
    """Work on ``spec`` until the study has ``n_trials`` candidates, the space has no new ones, or ``timeout`` passes.

    ``n_trials`` counts the candidates trained (complete or pruned) or reused from another study;
    a *repeat*, a proposal of a candidate this study has finished, is answered from that
    trial's result without training and is not counted (:class:`~splitsearch.search.record.TrialCounts`).
    When the sampler's last :data:`MAX_REPEATS_IN_A_ROW` proposals were all repeats, the search
    ends early (:func:`no_new_candidates`); that is not an error.

    Any number of workers may run the same spec against one storage (PostgreSQL for more than
    one machine): a worker starts a trial only while finished + running trials of the whole
    study are fewer than ``n_trials``, so workers that check at the same instant can overshoot
    by at most (workers - 1) trials.  A worker with nothing to start waits while others run the
    last trials, and runs the retry of any that dies.  A trial that raises ends FAIL with its
    reason and the worker goes on, until as many trials failed as ``n_trials`` asks for;
    Ctrl-C and SIGTERM stop the worker and queue the interrupted trial again.  When the study
    has its trials, the baselines are trained once more with the best searched trial's training
    settings where the space searches any (:func:`~splitsearch.search.objective.enqueue_tuned_baselines`),
    so a pick and its baselines can be compared at the same training settings.  Optuna's
    experimental-feature warnings (heartbeats, trial retries, grouped TPE, constant liar) are
    silenced while it runs: we use them on purpose.  ``on_warning`` is told, in one line, each
    disk fault the worker rides out (:class:`~splitsearch.search.objective.SearchObjective`).
    """
    check_budget(spec)
    data = data or execution.data_cache()  # ``run``'s plan may have loaded the dataset already
    data.get(spec.base.dataset, spec.base.train, spec.base.crop)  # a missing dataset fails here, before the storage is touched
    with sigterm_interrupts(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        study, store = open_search(spec, storage_url, force, execution.heartbeat_seconds,
                                   execution.storage_retry_seconds)
        objective = SearchObjective(spec, store, execution, data, on_epoch, on_warning)
        try:
            _work(study, objective, spec, progress)
        except KeyboardInterrupt:
            requeue_interrupted(study)  # another worker may take the interrupted trial at once
            raise
        finally:
            objective.close()
            settle_store(study, store)
    return study


def _work(study: optuna.Study, objective: SearchObjective, spec: StudySpec, progress: bool) -> None:
    """Start trials one at a time while the study needs more (see :func:`run_study`)."""
    deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
    bar = tqdm(total=spec.n_trials, initial=count_trials(study).finished, desc=f"study {spec.name}", unit="trial",
               disable=not progress)
    objective.on_epoch = StudyProgress(bar, spec, objective.on_epoch)  # the running trial's epoch and an ETA
    try:
        while deadline is None or time.monotonic() < deadline:
            fail_stale_trials(study)
            counts = count_trials(study)
            finished, running, failed = counts.finished, counts.running, counts.failed
            bar.n = finished
            bar.refresh()
            if (spec.n_trials is not None and finished >= spec.n_trials) or no_new_candidates(counts):
                # The search is done; the baselines get the best trial's training settings too.
                enqueue_tuned_baselines(study, spec)
                tuned = tuned_baseline_trials(study)
                searched = finished if spec.n_trials is None else min(finished, spec.n_trials)
                bar.total = searched + len({TrialRecord.from_trial(trial).baseline for trial in tuned})
                if not any(trial.state == TrialState.WAITING for trial in tuned):
                    return
                study.optimize(objective, n_trials=1, catch=(Exception,))
                continue
            if failed >= (spec.n_trials or MAX_FAILURES):
                # As many failures as trials asked for: something is wrong with every candidate.
                raise StudyError(f"study {spec.name!r}: {failed} trials failed (see each trial's 'failure'); "
                                 "stopping instead of failing forever")
            if spec.n_trials is None or finished + running < spec.n_trials:
                study.optimize(objective, n_trials=1, catch=(Exception,))
            elif running:
                time.sleep(_POLL_SECONDS)
            else:
                return
    finally:
        bar.close()


def no_new_candidates(counts: TrialCounts) -> bool:
    """Whether the sampler's last :data:`MAX_REPEATS_IN_A_ROW` proposals all repeated finished candidates.

    Then the space has no new candidates for this sampler, and the search stops.  Baselines,
    tuned ones included, are not proposals: a tuned baseline that repeats a searched trial
    neither adds to the run nor breaks it.
    """
    return counts.repeats_in_a_row >= MAX_REPEATS_IN_A_ROW


def load_existing_study(study_name: str | None, storage: str | PatientRDBStorage) -> optuna.Study:
    """An existing study by name; with no name, the storage's only study.

    ``storage``: a URL, or a storage :func:`open_existing_storage` opened.

    Raises:
        StudyError: unknown study, several studies and no name, or an unreachable storage.
    """
    if isinstance(storage, str):
        storage = open_existing_storage(storage)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    if study_name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise StudyError(f"give --study: {mask_url(storage.url)} holds {len(names)} studies ({listing})")
        study_name = names[0]
    if study_name not in names:
        raise StudyError(f"no study {study_name!r} in {mask_url(storage.url)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def open_for_reading(study_name: str | None, storage_url: str) -> tuple[optuna.Study, Store]:
    """An existing study (see :func:`load_existing_study`) and the store beside it, its tables up to date."""
    storage = open_existing_storage(storage_url)
    return load_existing_study(study_name, storage), open_store(storage)


def open_store(storage: PatientRDBStorage) -> Store:
    """The store in the database of ``storage``, its tables up to date, sharing its patience with an outage."""
    storage.patience.call(upgrade, storage.url)
    return Store(storage.url, storage.patience)


def open_existing_storage(storage_url: str, patience: StoragePatience | None = None) -> PatientRDBStorage:
    """The storage at ``storage_url``, without heartbeats, which must exist: a mistyped SQLite path
    is not made into a new database.  ``patience``: see :func:`~splitsearch.store.storage.open_storage`."""
    if storage_url.startswith("sqlite:///") and not storage_url.endswith(":memory:"):
        path = Path(storage_url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StudyError(f"no database at {path} (storage {mask_url(storage_url)})")
    return open_storage(storage_url, patience)
