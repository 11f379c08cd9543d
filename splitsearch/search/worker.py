"""A worker's part in a shared study: its sampler seed, its signals, and the trials others left behind.

Many workers (one per GPU, node or job) run the same study on one storage; Optuna's RDB storage
is the only coordinator.  A trial's life (DESIGN.md):

* an exception inside a candidate is a *failure*: the trial ends FAIL with its reason and the
  worker goes on with the next trial;
* Ctrl-C, SIGTERM (what SLURM and Kubernetes send) and a dead worker are *interruptions*: the
  trial is queued again (Optuna gives the retry a new number), at most :data:`MAX_RETRIES`
  times, and the retry continues from the last epoch the checkpoint holds.

A dead worker is found two ways: Optuna's heartbeat (any worker, after the grace period), and,
at once, by a worker starting on the same machine that sees the dead one's process is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from splitsearch.search.record import StudyRecord, TrialRecord
from splitsearch.store import Store

# How often an interrupted trial is queued again before it is left failed.
MAX_RETRIES = 3
# Optuna's heartbeat: a running trial that has not beaten for three beats belongs to a dead worker.
HEARTBEAT_SECONDS = 60


def retry_callback(max_retry: int = MAX_RETRIES) -> RetryHeartbeatStaleTrialCallback:
    """Queues an interrupted trial again, with its reported epochs, at most ``max_retry`` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # used on purpose
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like Ctrl-C (the trial is interrupted and queued again), then exit."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` raised in the main thread, for the duration of the block.

    Training stops at once; the checkpoint of the last finished epoch stays (checkpoints are
    written atomically), so the retry loses at most the epoch in progress.
    """
    def terminate(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def this_worker() -> dict[str, object]:
    """Where a trial runs: the trial user attr ``worker`` that lets a restart find its dead trials."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the attempts ``trial`` retries, first attempt first (empty for a first attempt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # used on purpose
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def original_trial_number(trial: FrozenTrial) -> int:
    """The number of the first attempt of ``trial`` (itself unless it is a retry): names its checkpoint."""
    history = retry_history(trial)
    return history[0] if history else trial.number


def retried_trial(trial: FrozenTrial) -> int | None:
    """The attempt ``trial`` retries directly, or None."""
    history = retry_history(trial)
    return history[-1] if history else None


def checkpoint_root(study: optuna.Study, runs_dir: str | Path) -> Path:
    """The folder of this study's checkpoints: named after the study and its key in this storage.

    The key is drawn when the study is created (:func:`splitsearch.search.study.open_study`), so
    a new database holding a study of the same name never resumes an old study's files.
    """
    return Path(runs_dir) / f"{study.study_name}-{StudyRecord.from_study(study).checkpoint_key}"


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue again every interrupted trial that has no retry yet; returns how many were queued."""
    retried = {number for trial in study.get_trials(deepcopy=False)
               for number in retry_history(trial)}
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if TrialRecord.from_trial(trial).interrupted and trial.number not in retried:
            retry_callback()(study, trial)
            count += 1
    return count


def dead_local_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The running trials of workers on this machine whose process is gone.

    Only this machine's: whether a process elsewhere lives is for Optuna's heartbeat to tell.
    """
    host = socket.gethostname()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.from_trial(trial).worker or {}
        if worker.get("host") == host and not _alive(int(worker.get("pid", -1))):
            dead.append(trial)
    return dead


def recover_dead_local_trials(study: optuna.Study, store: Store) -> list[int]:
    """Fail and queue again the running trials of workers on this machine whose process is gone.

    Optuna would find them too, but only after its heartbeat grace period; a worker restarted
    right after a crash finds them at once.  Returns the numbers of the trials it recovered.
    """
    return [trial.number for trial in dead_local_trials(study) if recover_trial(study, store, trial)]


def recover_trial(study: optuna.Study, store: Store, trial: FrozenTrial) -> bool:
    """Fail a running trial whose worker is gone, queue it again and end its row as interrupted.

    False when another worker (starting at the same moment) has recovered it first.
    """
    try:
        study.tell(trial.number, state=TrialState.FAIL)
    except ValueError:
        return False
    retry_callback()(study, trial)
    store.mark_interrupted(study.study_name, trial.number)
    return True


def settle_store(study: optuna.Study, store: Store) -> None:
    """Make the rows a dead worker left behind follow how Optuna's trial ended.

    A row still ``running`` though its trial has ended ends ``interrupted``.  So does a row
    ``complete`` whose trial FAILED: its worker died (or lost the database) after the store
    took the result and before Optuna did, so Optuna failed the trial as stale and retries it;
    the result is the retry's to give, and the row must not answer later proposals as a repeat.
    """
    states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
    for number in store.running_trial_numbers(study.study_name):
        if states.get(number) not in (TrialState.RUNNING, None):
            store.mark_interrupted(study.study_name, number)
    for row in store.candidates(study.study_name):
        if row.state == "complete" and states.get(row.trial_number) == TrialState.FAIL:
            store.settle_candidate(study.study_name, row.trial_number, "interrupted")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
