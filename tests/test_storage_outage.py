"""Workers and a database that goes away: real ``splitsearch run`` processes on a PostgreSQL server the test stops.

Each test starts a server of its own (:mod:`private_postgres`; skipped with the reason where
``initdb`` and ``pg_ctl`` are missing), so it can stop and start it under the workers: a
restart, a fail-over, or an outage longer than the workers wait.  The 16-worker test counts the
connections the workers hold (``pg_stat_activity``) while they share one study.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from conftest import run_cli
from private_postgres import PrivateServer, private_postgres  # noqa: F401 - the fixture
from splitsearch.errors import StorageUnavailableError
from splitsearch.search.record import TrialRecord, count_trials
from splitsearch.search.run import WORKER_CONNECTIONS
from splitsearch.search.worker import retry_history
from splitsearch.store import Store
from splitsearch.store.retry import StoragePatience, is_transient
from splitsearch.store.urls import mask_url
from test_workers import (  # noqa: F401 - study_file is a fixture
    FINISHED,
    ROW_STATES,
    assert_store_follows_optuna,
    epochs_of,
    finish,
    rows_of,
    start_worker,
    study_file,
    trial_in_progress,
    wait_until,
)

OUTAGE_SECONDS = 20


def running_trials(url: str) -> list[int]:
    study = optuna.load_study(study_name="cluster", storage=url)
    return [trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def store_follows_optuna_but_for_trials_cut_before_training(url: str, runs: Path) -> optuna.Study:
    """What :func:`assert_store_follows_optuna` checks, but a trial whose worker stopped before it
    started training has no row: the store holds what trained, and that trial trained nothing.
    It must then be an interrupted trial (failed without a reason), retried, and without a checkpoint."""
    study = optuna.load_study(study_name="cluster", storage=url)
    rows = rows_of(Store(url))
    retried = {number for trial in study.trials for number in retry_history(trial)}
    for trial in study.trials:
        if trial.state == TrialState.WAITING:
            assert trial.number not in rows
        elif trial.number in rows:
            assert rows[trial.number].state in ROW_STATES[trial.state], (trial.number, trial.state)
        else:
            assert trial.state == TrialState.FAIL and TrialRecord.from_trial(trial).failure is None, trial
            assert trial.number in retried and not list(runs.rglob(f"trial-{trial.number}/*")), trial.number
    return study


def outage_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "unreachable (" in line and "retrying for up to" in line]


def error_of(url: str, statement: str) -> SQLAlchemyError:
    """The error SQLAlchemy raises running ``statement`` on a new connection to ``url``."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    except SQLAlchemyError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{statement} raised nothing")


def test_only_connection_failures_are_transient(private_postgres):
    url = private_postgres.create_database("kinds")
    assert not is_transient(error_of(url, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (1)"))
    assert not is_transient(error_of(url, "SELEC 1"))
    assert not is_transient(error_of(private_postgres.url("no_such_database"), "SELECT 1"))
    # Cut by an administrator (a fail-over does the same), then a server that is not there.
    terminate = "SELECT pg_terminate_backend(pg_backend_pid())"
    assert is_transient(error_of(url, terminate))
    private_postgres.stop()
    assert is_transient(error_of(url, "SELECT 1"))


def test_a_call_waits_for_the_database_and_gives_up_after_its_time(private_postgres):
    url = private_postgres.create_database("patience")
    lines: list[str] = []
    patience = StoragePatience(url, seconds=60, announce=lines.append)
    # No ping before use: the pooled connection breaks in use after the restart, the harder case.
    ask = create_engine(url, pool_pre_ping=False)

    def select() -> int:
        with ask.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar_one()

    assert patience.call(select) == 1
    private_postgres.stop()
    restart = threading.Timer(3, private_postgres.start)
    restart.start()
    started = time.monotonic()
    assert patience.call(select) == 1
    restart.join()
    assert 3 <= time.monotonic() - started < 30
    assert len(lines) == 1 and "unreachable (" in lines[0] and "retrying for up to 60 s" in lines[0]

    private_postgres.stop()
    impatient = StoragePatience(url, seconds=2, announce=lines.append)
    with pytest.raises(StorageUnavailableError, match="unreachable for 2 s"):
        impatient.call(select)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError):  # a process on its way out does not wait again
        impatient.call(select)
    assert time.monotonic() - started < 0.5
    ask.dispose()


@pytest.mark.parametrize("command", ["export", "report", "confirm"])
def test_reading_commands_say_in_one_line_that_the_storage_is_gone(private_postgres, tmp_path, capsys, command):
    url = private_postgres.create_database("gone")
    private_postgres.stop()
    output = [] if command == "confirm" else ["-o", tmp_path / "out"]
    code, _, err = run_cli(capsys, command, "--storage", url, *output)
    assert code == 2 and err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err


def test_a_database_away_for_20_seconds_is_waited_out(private_postgres, study_file, tmp_path):
    url = private_postgres.create_database("outage")
    path = study_file(n_trials=3, epochs=2, images=480)
    store = Store(url)
    # A short heartbeat: its grace period (6 s) is far shorter than the outage, so the test also
    # shows that no worker takes the other's trial for a dead one when the database comes back.
    workers = [start_worker(path, url, tmp_path / "runs", "--set", "worker.heartbeat_seconds=2") for _ in range(2)]
    wait_until(lambda: trial_in_progress(store, after=0, epochs=1), what="a trial's first epoch")
    private_postgres.stop()
    time.sleep(OUTAGE_SECONDS)
    private_postgres.start()

    for worker in workers:
        err = finish(worker)
        assert len(outage_lines(err)) == 1, err[-3000:]
        assert mask_url(url) in outage_lines(err)[0]
    study = assert_store_follows_optuna(url)
    assert all(trial.state in FINISHED for trial in study.trials), [(t.number, t.state) for t in study.trials]
    assert count_trials(study).finished >= 3


def test_a_database_away_longer_than_the_workers_wait_stops_them_and_a_later_run_continues(
        private_postgres, study_file, tmp_path):
    url = private_postgres.create_database("outage")
    # The server trusts every local connection, so any password is accepted: it must never be printed.
    secret = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
    path = study_file(n_trials=3, epochs=3, images=480)
    runs = tmp_path / "runs"
    store = Store(url)
    workers = [start_worker(path, secret, runs, "--set", "worker.storage_retry_seconds=5") for _ in range(2)]
    wait_until(lambda: trial_in_progress(store, after=0, epochs=1), what="a trial's first epoch")
    private_postgres.stop()

    for worker in workers:
        out, err = worker.communicate(timeout=90)
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert worker.returncode == 2 and len(errors) == 1, err[-3000:]
        assert f"storage {mask_url(secret)} unreachable for 5 s" in errors[0]
        assert "s3cret-pw" not in out + err and "Traceback" not in out + err
    private_postgres.start()
    interrupted = running_trials(url)
    checkpointed = [number for number in interrupted if list(runs.rglob(f"trial-{number}/checkpoint.pt"))]
    assert checkpointed, "the outage cut no trial after an epoch"
    trained_before = {number: epochs_of(store, number) for number in checkpointed}

    # A trial a worker took just before it gave up may never have beaten: with a short heartbeat
    # the later run finds it stale after 6 s (and every other one at once, by its dead process).
    finish(start_worker(path, url, runs, "--set", "worker.heartbeat_seconds=2"))
    study = store_follows_optuna_but_for_trials_cut_before_training(url, runs)
    assert len(study.get_trials(states=FINISHED)) == 3
    rows = rows_of(store)
    for number in checkpointed:
        assert study.trials[number].state == TrialState.FAIL and rows[number].state == "interrupted"
        retry = rows[rows[number].retried_as]
        assert retry.retry_of == number and retry.state == "complete"
        # The checkpoint is written before the epoch is reported, so it may hold one epoch more than
        # the store: the epoch whose report met the outage.
        stored = max(trained_before[number], default=0)
        assert retry.resumed_from_epoch in (stored, stored + 1) and retry.resumed_from_epoch >= 1
        assert epochs_of(store, retry.trial_number) == list(range(retry.resumed_from_epoch + 1, 4))


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def test_the_dashboard_answers_503_while_the_database_is_away_and_serves_again_after(private_postgres):
    url = private_postgres.create_database("dash")
    optuna.create_study(study_name="cluster", storage=url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    studies = f"http://127.0.0.1:{port}/api/studies"
    server = subprocess.Popen([sys.executable, "-m", "splitsearch.cli", "dashboard", "--storage", url, "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: http_get(studies)[0] == 200, timeout=60, what="the dashboard")
        private_postgres.stop()
        status, body = http_get(studies)
        assert status == 503 and f"storage {mask_url(url)} unreachable for 10 s" in body
        private_postgres.start()
        assert http_get(studies)[0] == 200
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err, err[-3000:]
    assert len([line for line in err.splitlines() if "unreachable for 10 s" in line]) == 1, err[-3000:]


class ConnectionWatch(threading.Thread):
    """Polls the connections of one database until stopped; keeps the most it saw."""

    def __init__(self, server: PrivateServer, database: str) -> None:
        super().__init__(daemon=True)
        self.server, self.database = server, database
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.server.connections(self.database))
            self.samples += 1
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join()


@pytest.mark.slow
def test_16_workers_hold_a_bounded_number_of_connections(private_postgres, study_file, tmp_path):
    workers_count, n_trials = 16, 24
    url = private_postgres.create_database("many")
    path = study_file(n_trials=n_trials, epochs=1)
    watch = ConnectionWatch(private_postgres, "many")
    watch.start()
    workers = [start_worker(path, url, tmp_path / "runs") for _ in range(workers_count)]
    try:
        for worker in workers:
            finish(worker, timeout=1200)
    finally:
        watch.stop()
    print(f"\n{workers_count} workers: at most {watch.peak} connections seen in {watch.samples} samples "
          f"(bound {workers_count} x {WORKER_CONNECTIONS})")
    assert 0 < watch.peak <= workers_count * WORKER_CONNECTIONS

    study = assert_store_follows_optuna(url)
    # Workers start a trial only while finished + running < n_trials: at most workers - 1 more.
    assert n_trials <= count_trials(study).finished <= n_trials + workers_count - 1
    records = {trial.number: TrialRecord.from_trial(trial) for trial in study.trials}
    trained = [trial for trial in study.trials if not records[trial.number].is_repeat]
    parameter_sets = [tuple(sorted(trial.params.items())) for trial in trained]
    assert len(parameter_sets) == len(set(parameter_sets)), "a parameter set was trained twice"
    rows = rows_of(Store(url))
    assert all(rows[number].state == "reused" for number, record in records.items() if record.is_repeat)
