"""A study on a cluster: real worker processes on a real PostgreSQL, killed, terminated and raced.

Each test gets a fresh database on the server named by ``SPLITSEARCH_TEST_POSTGRES_URL`` (skipped
with the reason where it is unset).  Workers are ``splitsearch run`` subprocesses; the tests read
the store and Optuna while they run and send SIGKILL or SIGTERM at a chosen moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from splitsearch.store import Store

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The store's state for each of Optuna's final trial states.
ROW_STATES = {
    TrialState.COMPLETE: {"complete", "reused"},
    TrialState.PRUNED: {"pruned", "over_budget"},
    TrialState.FAIL: {"failed", "interrupted"},
}

SPACE = """\
name: cluster-space
params:
  S: {type: categorical, choices: [1, 2, 4]}
  lambda_cot: {type: float, low: 0.0, high: 1.0}
fixed: {wd_rule: exp}
"""


@pytest.fixture
def study_file(tmp_path) -> Callable[..., Path]:
    """A tiny study on synthetic images: every trial samples a continuous lambda_cot, so no two
    sampled trials may share a parameter set unless two workers drew the same random numbers."""
    (tmp_path / "space.yaml").write_text(SPACE)

    def write(n_trials: int, epochs: int, images: int = 96) -> Path:
        """``images`` sets how long an epoch takes: tests that kill a trial mid-way need about a second."""
        path = tmp_path / "cluster.yaml"
        path.write_text(
            f"name: cluster\narch: resnet20\ndataset: synthetic:{images}\nspace: {tmp_path / 'space.yaml'}\n"
            f"epochs: {epochs}\nn_trials: {n_trials}\nbudget_params: 30K\npruner: none\n"
            "base: {train: {batch_size: 32, val_fraction: 0.25}}\n"
        )
        return path

    return write


def start_worker(study_file: Path, url: str, runs: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(study_file), "--storage", url,
               "--device", "cpu", "--runs-dir", str(runs), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(worker: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a worker to end well; its stderr (which must hold no traceback)."""
    _, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return err


def wait_until(condition: Callable[[], object], timeout: float = 240, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rows_of(store: Store) -> dict:
    """The study's candidate rows by trial number; none before the first worker made the tables."""
    try:
        return {row.trial_number: row for row in store.candidates("cluster")}
    except sqlalchemy.exc.ProgrammingError:  # the tables do not exist yet
        return {}


def epochs_of(store: Store, trial_number: int) -> list[int]:
    rows = rows_of(store)
    row = rows.get(trial_number)
    return [] if row is None else [metrics.epoch for metrics in store.epochs(row.id)]


def trial_in_progress(store: Store, after: int, epochs: int) -> int | None:
    """The number of a running trial numbered ``after`` or more that has trained ``epochs`` epochs."""
    for row in rows_of(store).values():
        if row.trial_number >= after and row.state == "running" and len(store.epochs(row.id)) >= epochs:
            return row.trial_number
    return None


def assert_store_follows_optuna(url: str) -> optuna.Study:
    """One row per trial that started, in the state Optuna gives it; no row left running."""
    study = optuna.load_study(study_name="cluster", storage=url)
    rows = {row.trial_number: row for row in Store(url).candidates("cluster")}
    started = [trial for trial in study.trials if trial.state != TrialState.WAITING]
    assert sorted(rows) == [trial.number for trial in started]
    for trial in started:
        assert rows[trial.number].state in ROW_STATES[trial.state], (trial.number, trial.state, rows[trial.number])
    return study


def assert_retry_continued(url: str, interrupted: int) -> None:
    """The retry of ``interrupted`` started after the epochs its checkpoint held, and completed."""
    store = Store(url)
    rows = {row.trial_number: row for row in store.candidates("cluster")}
    dead = rows[interrupted]
    assert dead.state == "interrupted" and dead.retried_as is not None
    retry = rows[dead.retried_as]
    trained_before = epochs_of(store, interrupted)
    assert retry.retry_of == interrupted and retry.state == "complete"
    assert retry.resumed_from_epoch == max(trained_before) >= 1
    assert epochs_of(store, retry.trial_number)[0] == retry.resumed_from_epoch + 1


def test_three_workers_started_together_share_the_study(postgres_url, study_file, tmp_path):
    path = study_file(n_trials=6, epochs=1)
    workers = [start_worker(path, postgres_url, tmp_path / "runs") for _ in range(3)]
    for worker in workers:
        finish(worker)
    study = assert_store_follows_optuna(postgres_url)
    finished = study.get_trials(states=FINISHED)
    # Workers start a trial only while finished + running < 6: at most two more when all check at once.
    assert 6 <= len(finished) <= 8
    parameter_sets = [tuple(sorted(trial.params.items())) for trial in study.trials]
    assert len(parameter_sets) == len(set(parameter_sets)), "two workers drew the same candidate"
    assert [trial.user_attrs.get("baseline") for trial in study.trials].count("undivided") == 1
    seeds = [worker.sampler_seed for worker in Store(postgres_url).workers("cluster")]
    assert len(seeds) == 3 and len(set(seeds)) == 3


def test_sigkill_in_trial_0_and_in_a_later_trial_then_restart_at_once(postgres_url, study_file, tmp_path):
    path = study_file(n_trials=4, epochs=4, images=960)
    store = Store(postgres_url)
    worker = start_worker(path, postgres_url, tmp_path / "runs")
    wait_until(lambda: len(epochs_of(store, 0)) >= 2, what="trial 0 to finish two epochs")
    worker.kill()
    worker.wait()

    # Restarted before any heartbeat grace period: it sees its predecessor's process is gone.
    worker = start_worker(path, postgres_url, tmp_path / "runs")
    later = wait_until(lambda: trial_in_progress(store, after=1, epochs=2), what="a later trial's second epoch")
    worker.kill()
    worker.wait()

    finish(start_worker(path, postgres_url, tmp_path / "runs"))
    study = assert_store_follows_optuna(postgres_url)
    assert len(study.get_trials(states=FINISHED)) == 4
    for interrupted in (0, later):
        assert study.trials[interrupted].state == TrialState.FAIL
        assert_retry_continued(postgres_url, interrupted)
    assert not list((tmp_path / "runs").rglob("checkpoint.pt")), "finished trials keep no checkpoint"


def test_a_dead_worker_is_found_by_heartbeat_and_its_trial_continued_elsewhere(postgres_url, study_file, tmp_path):
    path = study_file(n_trials=5, epochs=3, images=960)
    store = Store(postgres_url)
    survivor = start_worker(path, postgres_url, tmp_path / "runs", "--set", "worker.heartbeat_seconds=2")
    victim = start_worker(path, postgres_url, tmp_path / "runs", "--set", "worker.heartbeat_seconds=2")

    def victims_trial() -> int | None:
        try:
            study = optuna.load_study(study_name="cluster", storage=postgres_url)
        except KeyError:  # no worker has created the study yet
            return None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker", {}).get("pid") == victim.pid and len(epochs_of(store, trial.number)) >= 1:
                return trial.number
        return None

    number = wait_until(victims_trial, what="the victim's first finished epoch")
    victim.kill()
    victim.wait()
    finish(survivor)
    study = assert_store_follows_optuna(postgres_url)
    assert len(study.get_trials(states=FINISHED)) == 5
    assert_retry_continued(postgres_url, number)


def test_sigterm_checkpoints_and_queues_the_trial_again(postgres_url, study_file, tmp_path):
    path = study_file(n_trials=3, epochs=4, images=960)
    store = Store(postgres_url)
    worker = start_worker(path, postgres_url, tmp_path / "runs")
    wait_until(lambda: len(epochs_of(store, 0)) >= 2, what="trial 0 to finish two epochs")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 143 and "queued again" in err and "Traceback" not in err

    study = optuna.load_study(study_name="cluster", storage=postgres_url)
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["interrupted"]
    retry = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert list((tmp_path / "runs").rglob("trial-0/checkpoint.pt")), "the interrupted trial keeps its checkpoint"

    finish(start_worker(path, postgres_url, tmp_path / "runs"))
    study = assert_store_follows_optuna(postgres_url)
    assert len(study.get_trials(states=FINISHED)) == 3
    assert_retry_continued(postgres_url, 0)


def test_passwords_never_appear_in_what_a_worker_prints(postgres_url, study_file, tmp_path):
    from sqlalchemy.engine import make_url

    secret = make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    worker = start_worker(study_file(n_trials=1, epochs=1), secret, tmp_path / "runs")
    out, err = worker.communicate(timeout=120)
    assert "s3cret-pw" not in out + err
    assert "***" in out + err  # the storage is named, masked (the server may or may not want a password)
