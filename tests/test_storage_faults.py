"""Faults between a worker and its database, made by a TCP proxy in front of the test PostgreSQL server.

:mod:`test_storage_outage` stops a whole server; here a :class:`~fault_proxy.FaultProxy` breaks
single connections of real ``splitsearch run`` processes (and of a storage in this process):
refused while the worker starts, cut in the middle of its start-up, cut right after the server
committed and before the client heard.  Each test first checks that the fault happened (the
proxy's counters, the worker's outage line), then that the worker ended well and the store
agrees with Optuna (``splitsearch db check``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from conftest import run_cli
from fault_proxy import FaultProxy, wait_for
from private_postgres import private_postgres  # noqa: F401 - the fixture
from splitsearch.store import Store
from test_workers import (  # noqa: F401 - study_file is a fixture
    assert_store_follows_optuna,
    finish,
    start_worker,
    study_file,
    trial_in_progress,
    wait_until,
)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[FaultProxy]:
    with FaultProxy.in_front_of(postgres_url) as proxy:
        yield proxy


def outage_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "unreachable (" in line and "retrying for up to" in line]


def assert_db_check_clean(capsys: pytest.CaptureFixture, url: str, runs: Path) -> None:
    code, out, err = run_cli(capsys, "db", "check", "--storage", url, "--runs-dir", runs)
    assert code == 0, out + err


def creation_tokens(url: str) -> list[str]:
    """The creation token of every trial, read from the table (the storage keeps them out of what it returns)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        tokens = list(connection.scalars(sqlalchemy.text(
            "SELECT value_json FROM trial_system_attributes WHERE key = 'splitsearch:creation_token'")))
    engine.dispose()
    return tokens


def assert_no_trial_created_twice(url: str, n_trials: int) -> None:
    """Every trial has its own creation token: no creation that lost its COMMIT's answer made a second trial."""
    tokens = creation_tokens(url)
    assert len(tokens) == n_trials, (len(tokens), n_trials)
    assert len(tokens) == len(set(tokens)), "a trial was created twice"


def start_logged_worker(path: Path, url: str, runs: Path, log: Path) -> subprocess.Popen:
    """A worker like :func:`test_workers.start_worker` whose stderr goes to ``log``, to be read while it runs."""
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(path), "--storage", url, "--device", "cpu",
               "--runs-dir", str(runs)]
    with log.open("w") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_worker_started_while_the_database_refuses_connections_waits_and_finishes(
        proxy, postgres_url, study_file, tmp_path, capsys):
    path, runs, log = study_file(n_trials=2, epochs=1), tmp_path / "runs", tmp_path / "worker.err"
    proxy.refuse()
    worker = start_logged_worker(path, proxy.url(postgres_url), runs, log)
    # The database stays away until the worker has met the refusal and said so, then comes back.
    wait_for(lambda: outage_lines(log.read_text()) or worker.poll() is not None, timeout=120,
             what="the worker's outage line")
    time.sleep(2)  # a try or two more while refused
    proxy.accept_again()
    assert worker.wait(timeout=300) == 0, log.read_text()[-3000:]
    err = log.read_text()
    assert "Traceback" not in err, err[-3000:]
    lines = outage_lines(err)
    assert len(lines) == 1 and "refused" in lines[0].lower(), err[-3000:]
    assert lines[0].startswith("Warning: storage "), lines[0]  # the CLI's handler, not Python's last resort
    assert_store_follows_optuna(postgres_url)
    assert_db_check_clean(capsys, postgres_url, runs)


def test_an_outage_while_the_progress_bar_runs_is_told_in_one_line_above_it(
        proxy, postgres_url, study_file, tmp_path):
    path, runs, log = study_file(n_trials=2, epochs=2, images=480), tmp_path / "runs", tmp_path / "worker.err"
    worker = start_logged_worker(path, proxy.url(postgres_url), runs, log)
    store = Store(postgres_url)
    wait_until(lambda: trial_in_progress(store, after=0, epochs=1), what="a trial's first epoch")
    assert "study cluster:" in log.read_text()  # the bar is on the screen
    proxy.refuse(3)
    assert worker.wait(timeout=300) == 0, log.read_text()[-3000:]
    err = log.read_text()
    assert "Traceback" not in err, err[-3000:]
    # Split at carriage returns too: a line written into the bar would follow the bar's text.
    told = [line for line in err.replace("\r", "\n").splitlines() if "unreachable (" in line]
    assert len(told) == 1, err[-3000:]
    assert told[0].startswith("Warning: storage ") and told[0].endswith("retrying for up to 180 s"), told[0]


@pytest.mark.parametrize("after_bytes", [60, 400, 3000])
def test_a_worker_whose_first_connections_are_cut_during_start_up_finishes(
        proxy, postgres_url, study_file, tmp_path, capsys, after_bytes):
    """60 bytes: within libpq's startup message; 400: in Optuna's first queries; 3000: later,
    in its table creation or schema check."""
    path, runs = study_file(n_trials=2, epochs=1), tmp_path / "runs"
    proxy.cut_new(3, after_bytes=after_bytes)
    err = finish(start_worker(path, proxy.url(postgres_url), runs))
    assert proxy.cuts == 3, err[-3000:]
    assert len(outage_lines(err)) >= 1, err[-3000:]
    assert_store_follows_optuna(postgres_url)
    assert_db_check_clean(capsys, postgres_url, runs)


def test_a_wrong_database_name_still_fails_at_once_in_one_line(proxy, postgres_url, study_file, tmp_path):
    from sqlalchemy.engine import make_url

    wrong = make_url(proxy.url(postgres_url)).set(database="no_such_database_here").render_as_string(
        hide_password=False)
    worker = start_worker(study_file(n_trials=1, epochs=1), wrong, tmp_path / "runs")
    _, err = worker.communicate(timeout=120)
    assert proxy.accepted >= 1  # it did reach the server, which said no
    assert worker.returncode == 2, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("Error: cannot open storage") and "does not exist" in err
    assert "Traceback" not in err and not outage_lines(err)


@pytest.fixture
def proxied_storage(proxy, postgres_url):
    """Optuna's storage in this process, through the proxy, waiting out an outage for up to 60 s."""
    from splitsearch.store.retry import StoragePatience
    from splitsearch.store.storage import open_storage

    url = proxy.url(postgres_url)
    storage = open_storage(url, StoragePatience(url, seconds=60))
    yield storage
    storage.engine.dispose()


def test_a_trial_created_and_finished_across_lost_commits_is_made_once_and_ends_as_told(proxy, proxied_storage):
    study = optuna.create_study(study_name="ambiguous", storage=proxied_storage)
    proxy.cut_after_commit(containing=b"INSERT INTO trials ")
    trial = study.ask()
    assert proxy.commit_cuts == 1  # the creation committed and its answer was lost
    proxy.cut_after_commit(containing=b"UPDATE trials SET state")
    study.tell(trial, 0.25)
    assert proxy.commit_cuts == 2  # so was the finish's
    proxy.cut_after_commit(containing=b"INSERT INTO trials ")
    study.enqueue_trial({"x": 1.0})
    assert proxy.commit_cuts == 3  # and a queued trial's
    trials = optuna.load_study(study_name="ambiguous", storage=proxied_storage.url).trials
    assert [(t.number, t.state, t.values) for t in trials] == [(0, TrialState.COMPLETE, [0.25]),
                                                                (1, TrialState.WAITING, None)]
    assert trials[1].system_attrs["fixed_params"] == {"x": 1.0}


def test_a_study_created_across_a_lost_commit_is_the_creators_and_made_once(proxy, proxied_storage):
    """Before the study's creation carried a token, the try after the lost commit raised
    DuplicatedStudyError: the creating worker took its own study for another's and waited for a
    set-up nobody would do."""
    proxy.cut_after_commit(containing=b"INSERT INTO studies ")
    study_id = proxied_storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "lost-answer")
    assert proxy.commit_cuts == 1  # the creation committed and its answer was lost
    assert proxied_storage.get_study_id_from_name("lost-answer") == study_id
    assert [s.study_name for s in proxied_storage.get_all_studies()] == ["lost-answer"]
    assert proxied_storage.get_study_system_attrs(study_id) == {}  # the token is not shown
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):  # another creation of the name still fails
        proxied_storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "lost-answer")


def test_a_finish_that_differs_from_the_stored_one_still_fails(proxy, proxied_storage):
    study = optuna.create_study(study_name="conflict", storage=proxied_storage)
    trial = study.ask()
    study.tell(trial, 0.25)
    with pytest.raises(UpdateFinishedTrialError):
        proxied_storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])
    # Optuna commits its read of the finished trial before it refuses: that answer is lost, the
    # change is tried again, and refused again, since the stored finish is not the one asked for.
    proxy.cut_after_commit()
    with pytest.raises(UpdateFinishedTrialError):
        proxied_storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    assert proxy.commit_cuts == 1
    assert optuna.load_study(study_name="conflict", storage=proxied_storage.url).trials[0].values == [0.25]


def test_a_worker_whose_trial_creation_and_finish_lose_their_commits_finishes_without_duplicates(
        proxy, postgres_url, study_file, tmp_path, capsys):
    path, runs = study_file(n_trials=2, epochs=1), tmp_path / "runs"
    proxy.cut_after_commit(containing=b"INSERT INTO trials ")  # the first creation: the first baseline queued
    proxy.cut_after_commit(containing=b"INSERT INTO trial_values ")  # the first trial's finish, with its value
    err = finish(start_worker(path, proxy.url(postgres_url), runs))
    assert proxy.commit_cuts == 2, err[-3000:]
    study = assert_store_follows_optuna(postgres_url)
    # The three baselines, each queued once; the first two trained (n_trials), the third left queued.
    assert [(trial.number, trial.state, trial.system_attrs["fixed_params"]["S"]) for trial in study.trials] == [
        (0, TrialState.COMPLETE, 1), (1, TrialState.COMPLETE, 2), (2, TrialState.WAITING, 4)]
    assert_db_check_clean(capsys, postgres_url, runs)


def test_the_optuna_internals_the_storage_relies_on_are_there():
    """Optuna's private names may change in any release: the pin in setup.cfg holds optuna to
    VERIFIED_OPTUNA, and this says which name went missing if a newer release is installed."""
    import importlib
    import inspect

    from splitsearch.store.retry import OPTUNA_INTERNALS, VERIFIED_OPTUNA

    release = ".".join(optuna.__version__.split(".")[:2])
    assert release in VERIFIED_OPTUNA, (optuna.__version__, VERIFIED_OPTUNA)
    for name in OPTUNA_INTERNALS:
        if name.startswith("RDBStorage."):
            attribute = name.removeprefix("RDBStorage.")
            if attribute == "scoped_session":  # an instance attribute: set in the constructor
                assert "self.scoped_session" in inspect.getsource(optuna.storages.RDBStorage.__init__)
            else:
                assert callable(getattr(optuna.storages.RDBStorage, attribute)), name
        elif name.endswith(".models"):
            module = importlib.import_module(name)
            assert all(hasattr(module, model) for model in
                       ("TrialModel", "TrialHeartbeatModel", "TrialSystemAttributeModel", "StudyModel",
                        "StudyDirectionModel", "StudySystemAttributeModel")), name
        else:  # a module's function
            module, function = name.rsplit(".", 1)
            assert callable(getattr(importlib.import_module(module), function)), name


def test_a_server_that_said_no_is_not_transient_even_beside_a_refused_address():
    """libpq joins the messages of every address it tried: a refused ::1 before 127.0.0.1's wrong
    password must not make a worker wait minutes for a password that will never work."""
    from sqlalchemy.exc import OperationalError

    from splitsearch.store.retry import is_transient

    def error(message: str) -> OperationalError:
        return OperationalError("connect", {}, psycopg.OperationalError(message))

    both = ('connection failed: connection to server at "::1", port 5432 failed: Connection refused\n'
            'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed '
            'for user "postgres"')
    assert not is_transient(error(both))
    assert is_transient(error('connection failed: connection to server at "::1", port 5432 failed: '
                              'Connection refused'))


DIGITS_STUDY = """\
name: cluster
arch: resnet20
dataset: digits
space: {space}
epochs: 1
n_trials: 12
budget_params: 30K
pruner: none
base: {{train: {{batch_size: 64, lr: 0.05, crop_padding: 1, hflip: false, val_fraction: 0.2}}}}
"""


@pytest.mark.slow
def test_two_workers_through_seeded_cuts_from_the_start_finish_a_12_trial_study(
        proxy, postgres_url, study_file, tmp_path, capsys):
    study_file(n_trials=1, epochs=1)  # writes the space file beside it
    path, runs = tmp_path / "digits.yaml", tmp_path / "runs"
    path.write_text(DIGITS_STUDY.format(space=tmp_path / "space.yaml"))
    # From before the first connection: whole connections cut every 2 to 8 s, and one write
    # transaction in ten losing its COMMIT's answer.
    proxy.cut_randomly(seed=11, every=(2.0, 8.0))
    proxy.cut_commits_randomly(seed=12, chance=0.1, containing=b"INSERT INTO")
    url = proxy.url(postgres_url)
    workers = [start_worker(path, url, runs, "--set", "worker.heartbeat_seconds=2") for _ in range(2)]
    errs = [finish(worker, timeout=1200) for worker in workers]
    assert proxy.cuts > proxy.commit_cuts > 0, (proxy.cuts, proxy.commit_cuts)  # both kinds of fault happened
    with capsys.disabled():  # what the faults were, for a run with -s
        print(f"\n{proxy.cuts} connections cut, {proxy.commit_cuts} of them after a COMMIT; "
              f"{sum(len(outage_lines(err)) for err in errs)} outage lines")

    study = assert_store_follows_optuna(postgres_url)
    finished = [trial for trial in study.trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 12
    assert_no_trial_created_twice(postgres_url, len(study.trials))
    assert_db_check_clean(capsys, postgres_url, runs)


def test_a_wrong_password_fails_at_once_though_the_caller_would_wait(private_postgres):
    """Opening waits out an outage only: a server that asks for a password and gets a wrong one
    answers at once, and so must the worker, in one line without the password."""
    import time as clock

    from sqlalchemy.engine import make_url

    from splitsearch.store.retry import StoragePatience
    from splitsearch.store.storage import StorageOpenError, open_storage

    url = private_postgres.create_database("guarded")
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("CREATE ROLE guard LOGIN PASSWORD 'right-pw'"))
        connection.execute(sqlalchemy.text("ALTER SCHEMA public OWNER TO guard"))
    engine.dispose()
    hba = private_postgres.data / "pg_hba.conf"
    hba.write_text("host all guard 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # the first match wins
    private_postgres.stop()
    private_postgres.start()

    guarded = make_url(url).set(username="guard")
    right = guarded.set(password="right-pw").render_as_string(hide_password=False)
    wrong = guarded.set(password="wrong-pw").render_as_string(hide_password=False)
    open_storage(right, StoragePatience(right, seconds=60)).engine.dispose()  # the role can log in
    started = clock.monotonic()
    with pytest.raises(StorageOpenError, match="password authentication failed") as raised:
        open_storage(wrong, StoragePatience(wrong, seconds=60))
    assert clock.monotonic() - started < 10
    assert "wrong-pw" not in str(raised.value) and "\n" not in str(raised.value)


# -- acceptance: two real workers on a 12-trial digits study through faults (slow) -----------------


def digits_study(study_file, tmp_path: Path) -> tuple[Path, Path]:
    study_file(n_trials=1, epochs=1)  # writes the space file beside it
    path = tmp_path / "digits.yaml"
    path.write_text(DIGITS_STUDY.format(space=tmp_path / "space.yaml"))
    return path, tmp_path / "runs"


def assert_every_trial_done_once(url: str, n_trials: int = 12) -> optuna.Study:
    """All trials finished, none left RUNNING or FAILED (a phantom of a lost connection), none
    created twice, none retried (trained a second time after being taken for dead), and no two
    trained trials with the same parameters."""
    study = assert_store_follows_optuna(url)
    states = [trial.state for trial in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) >= n_trials, states
    assert TrialState.RUNNING not in states and TrialState.FAIL not in states, states
    assert_no_trial_created_twice(url, len(study.trials))
    assert not [trial.number for trial in study.trials if "failed_trial" in trial.system_attrs]
    trained = {row.trial_number for row in Store(url).candidates("cluster") if row.state in ("complete", "pruned")}
    params = [tuple(sorted(trial.params.items())) for trial in study.trials if trial.number in trained]
    assert len(params) == len(set(params)), "a candidate was trained twice"
    return study


@pytest.mark.slow
def test_two_workers_through_200_ms_of_latency_finish_a_12_trial_study(
        proxy, postgres_url, study_file, tmp_path, capsys):
    path, runs = digits_study(study_file, tmp_path)
    proxy.delay(0.2)
    url = proxy.url(postgres_url)
    workers = [start_worker(path, url, runs, "--set", "worker.heartbeat_seconds=2") for _ in range(2)]
    errs = [finish(worker, timeout=1500) for worker in workers]
    assert proxy.delayed > 100 and proxy.cuts == 0, (proxy.delayed, proxy.cuts)
    with capsys.disabled():
        print(f"\n{proxy.delayed} client sends delayed 200 ms; "
              f"{sum(len(outage_lines(err)) for err in errs)} outage lines")
    assert_every_trial_done_once(postgres_url)
    assert_db_check_clean(capsys, postgres_url, runs)


@pytest.mark.slow
def test_two_workers_whose_connections_all_drop_every_few_seconds_finish_a_12_trial_study(
        proxy, postgres_url, study_file, tmp_path, capsys):
    path, runs = digits_study(study_file, tmp_path)
    proxy.cut_randomly(seed=21, every=(2.0, 5.0))  # every live connection, from before the first
    url = proxy.url(postgres_url)
    workers = [start_worker(path, url, runs, "--set", "worker.heartbeat_seconds=2") for _ in range(2)]
    errs = [finish(worker, timeout=1200) for worker in workers]
    assert proxy.cuts > 5, proxy.cuts
    with capsys.disabled():
        print(f"\n{proxy.cuts} connections cut; {sum(len(outage_lines(err)) for err in errs)} outage lines")
    assert_every_trial_done_once(postgres_url)
    assert_db_check_clean(capsys, postgres_url, runs)


@pytest.mark.slow
def test_two_workers_racing_to_create_a_study_whose_first_commits_are_cut_end_with_one_study(
        proxy, postgres_url, study_file, tmp_path, capsys):
    path, runs = study_file(n_trials=2, epochs=1), tmp_path / "runs"
    # The first two commits on the fresh database (whoever's: the race to create Optuna's tables),
    # then the study's creation, each lose their answer.
    proxy.cut_after_commit(2)
    proxy.cut_after_commit(containing=b"INSERT INTO studies ")
    url = proxy.url(postgres_url)
    workers = [start_worker(path, url, runs) for _ in range(2)]  # at the same instant
    errs = [finish(worker, timeout=600) for worker in workers]
    assert proxy.commit_cuts == 3, (proxy.commit_cuts, errs[0][-2000:], errs[1][-2000:])
    assert optuna.get_all_study_names(postgres_url) == ["cluster"]
    study = assert_store_follows_optuna(postgres_url)
    assert_no_trial_created_twice(postgres_url, len(study.trials))
    baselines = [trial.system_attrs["fixed_params"]["S"] for trial in study.trials
                 if "fixed_params" in trial.system_attrs]
    assert sorted(baselines) == [1, 2, 4]  # queued once, by the one creator
    assert_db_check_clean(capsys, postgres_url, runs)
