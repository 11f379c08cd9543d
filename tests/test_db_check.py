"""``splitsearch db check`` and ``--repair`` on studies a real worker left in disagreement.

Each disagreement is made the way it happens: a worker killed with SIGKILL in the middle of a
trial, checkpoints kept on disk (``--keep-checkpoints``), rows deleted or changed by hand in SQL.
The check must report each one, ``--repair`` mend it, and a second check find nothing (exit 0).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from splitsearch.cost.counting import count_config
from splitsearch.search.record import TrialRecord
from splitsearch.store import Store
from splitsearch.train.loop import CHECKPOINT_NAME

from conftest import postgres_database, run_cli
from test_disk_faults import rows, trained_epochs
from test_workers import finish, start_worker, study_file, wait_until  # noqa: F401 - study_file: a fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty database of each backend (PostgreSQL where SPLITSEARCH_TEST_POSTGRES_URL names a server)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
    else:
        with postgres_database(request.getfixturevalue("postgres_server")) as url:
            yield url


def db_check(capsys: pytest.CaptureFixture, url: str, runs: Path, *extra: str) -> tuple[int, list[str]]:
    code, out, err = run_cli(capsys, "db", "check", "--storage", url, "--runs-dir", runs, *extra)
    assert "Traceback" not in err and err == "", err
    return code, out.splitlines()


def sql(url: str, statement: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()


def test_a_consistent_study_checks_clean_and_a_missing_study_is_one_line(study_file, tmp_path, capsys):
    url, runs = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "runs"
    finish(start_worker(study_file(n_trials=2, epochs=1), url, runs))

    assert db_check(capsys, url, runs) == (0, ["consistent: Optuna's trials, the store's rows and the "
                                               "checkpoints agree"])
    code, out, err = run_cli(capsys, "db", "check", "--storage", url, "--study", "nope")
    assert code == 2 and err.startswith("Error: no study 'nope'") and len(err.splitlines()) == 1


def test_a_killed_workers_trial_is_found_and_queued_again(study_file, tmp_path, capsys):
    url, runs = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "runs"
    path = study_file(n_trials=3, epochs=3, images=480)  # the retry of trial 0 is queued after the baselines 1 and 2
    worker = start_worker(path, url, runs)
    wait_until(lambda: len(trained_epochs(url, 0)) >= 1, what="trial 0's first epoch")
    worker.kill()
    worker.wait()

    code, lines = db_check(capsys, url, runs)
    assert code == 1
    assert lines == [f"cluster, trial 0: RUNNING in Optuna, but its worker (pid {worker.pid} on "
                     f"{socket.gethostname()}, this machine) is gone",
                     "1 disagreement(s); splitsearch db check --repair mends 1 of them"]
    assert rows(url)[0].state == "running"

    code, lines = db_check(capsys, url, runs, "--repair")
    assert code == 0 and lines[0].startswith("repaired: cluster, trial 0: RUNNING in Optuna")
    assert lines[-1] == "repaired 1 of 1 disagreement(s); now consistent"
    study = optuna.load_study(study_name="cluster", storage=url)
    assert study.trials[0].state == TrialState.FAIL and rows(url)[0].state == "interrupted"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [trial.system_attrs.get("failed_trial") for trial in waiting] == [None, None, 0]  # baselines, the retry
    assert list(runs.rglob(f"trial-0/{CHECKPOINT_NAME}")), "the retry's checkpoint stays"
    assert db_check(capsys, url, runs)[0] == 0

    finish(start_worker(path, url, runs))
    retry = rows(url)[rows(url)[0].retried_as]
    assert retry.resumed_from_epoch >= 1 and retry.state == "complete"
    assert db_check(capsys, url, runs)[0] == 0


def test_rows_links_and_checkpoints_that_disagree_are_found_and_mended(storage_url, study_file, tmp_path, capsys):
    url, runs = storage_url, tmp_path / "runs"
    finish(start_worker(study_file(n_trials=3, epochs=1), url, runs, "--set", "worker.keep_checkpoints=true"))
    study = optuna.load_study(study_name="cluster", storage=url)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    lost = rows(url)[1]
    sql(url, "DELETE FROM splitsearch_epoch_metrics WHERE candidate_id = "
             "(SELECT id FROM splitsearch_candidates WHERE trial_number = 1)")  # SQLite's cascade needs a pragma
    sql(url, "DELETE FROM splitsearch_candidates WHERE trial_number = 1")
    sql(url, "UPDATE splitsearch_candidates SET state = 'failed' WHERE trial_number = 2")
    sql(url, "UPDATE splitsearch_candidates SET state = 'running', retried_as = 42 WHERE trial_number = 0")

    code, out, _ = run_cli(capsys, "db", "check", "--storage", url, "--runs-dir", runs, "--json")
    assert code == 1
    found = {(finding["trial"], finding["kind"]) for finding in json.loads(out)["findings"]}
    assert found == {(0, "running-row"), (2, "state"), (1, "missing-row"), (0, "retry-link"),
                     (0, "checkpoint"), (1, "checkpoint"), (2, "checkpoint")}
    code, lines = db_check(capsys, url, runs)
    assert code == 1 and len(lines) == 8
    assert "cluster, trial 2: the row says failed, Optuna says COMPLETE" in lines
    assert "cluster, trial 0: retried_as 42 points to no row" in lines

    code, lines = db_check(capsys, url, runs, "--repair")
    assert code == 0, lines
    assert sum(line.startswith("repaired: ") for line in lines) == 7
    assert lines[-1] == "repaired 7 of 7 disagreement(s); now consistent"
    assert db_check(capsys, url, runs) == (0, ["consistent: Optuna's trials, the store's rows and the "
                                               "checkpoints agree"])
    restored = rows(url)
    assert [restored[number].state for number in (0, 1, 2)] == ["complete"] * 3
    assert restored[0].retried_as is None
    assert (restored[1].config_hash, restored[1].val_accuracy, restored[1].baseline) == \
        (lost.config_hash, study.trials[1].user_attrs["val_accuracy"], lost.baseline)
    assert Store(url).epochs(restored[1].id) == []
    assert not list(runs.rglob("trial-*"))


def test_rows_nothing_can_mend_are_reported_and_left(study_file, tmp_path, capsys):
    """A row of no trial, and rows of a study Optuna does not have: nothing says what they should be.

    A plain Optuna study in the same database is not splitsearch's, and is left out.
    """
    url, runs = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "runs"
    finish(start_worker(study_file(n_trials=1, epochs=1), url, runs))
    optuna.create_study(study_name="plain", storage=url).optimize(lambda trial: trial.suggest_float("x", 0, 1),
                                                                  n_trials=1)
    config = TrialRecord.from_trial(optuna.load_study(study_name="cluster", storage=url).trials[0]).config
    store = Store(url)
    store.start_candidate("cluster", 99, config, count_config(config))
    store.start_candidate("ghost", 0, config, count_config(config))

    code, lines = db_check(capsys, url, runs)
    assert code == 1 and lines == [
        "cluster, trial 99: the store has a row (running), Optuna has no such trial",
        "ghost: the store has 1 row(s) of this study, Optuna has no such study",
        "2 disagreement(s); splitsearch db check --repair mends 0 of them",
    ]
    code, lines = db_check(capsys, url, runs, "--repair")
    assert code == 1 and lines == [
        "not repaired: cluster, trial 99: the store has a row (running), Optuna has no such trial: "
        "nothing says what it should be",
        "not repaired: ghost: the store has 1 row(s) of this study, Optuna has no such study: "
        "nothing says what it should be",
        "remains: cluster, trial 99: the store has a row (running), Optuna has no such trial",
        "remains: ghost: the store has 1 row(s) of this study, Optuna has no such study",
        "repaired 0 of 2 disagreement(s); 2 remain",
    ]
    assert len(store.candidates("cluster")) == 2 and len(store.candidates("ghost")) == 1
    code, _, err = run_cli(capsys, "db", "check", "--storage", url, "--study", "plain")
    assert code == 2 and err == "Error: study 'plain' was not made by splitsearch: it has no rows to check\n"
