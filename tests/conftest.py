"""Shared test settings and the real PostgreSQL databases some tests need.

PostgreSQL cases run only when ``SPLITSEARCH_TEST_POSTGRES_URL`` names a server (``.ci/run`` sets
it to the local one, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test); each gets a fresh
database of its own, dropped afterwards, so runs never see each other's rows.
"""

import os
import secrets
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

POSTGRES_URL = os.environ.get("SPLITSEARCH_TEST_POSTGRES_URL")


def run_cli(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    """Run ``splitsearch ARGV...`` in this process: (exit status, stdout, stderr)."""
    from splitsearch.cli import main

    code = main([str(part) for part in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def runs_in(path) -> "ExecutionOptions":
    """Execution options of a test's worker: the CPU, checkpoints under ``path / "runs"``."""
    from splitsearch.search.execution import ExecutionOptions

    return ExecutionOptions(runs_dir=path / "runs")


def tiny_spec(name: str = "tiny", **overrides):
    """A study definition that trains in seconds: ResNet-20 on 96 synthetic images, 2 epochs, 4 trials."""
    from splitsearch.search.study import load_study_spec

    settings = {
        "name": name, "arch": "resnet20", "dataset": "synthetic:96", "space": "divide", "epochs": 2,
        "n_trials": 4, "budget_params": "30K", "budget_mode": "fit", "pruner": "none",
        "base": {"train": {"batch_size": 32, "val_fraction": 0.25}},
    }
    return load_study_spec(None, settings | overrides)


@pytest.fixture
def storage(tmp_path) -> str:
    """A study's storage: a new SQLite database in the test's folder."""
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def one_thread_per_process(monkeypatch):
    """Every process a test starts trains on one thread, as the test's own process does: the thread
    count changes the order of floating-point sums, and the process-group tests compare weights
    and accuracies bit for bit with one process's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run PyTorch on one thread: the tests' networks are tiny, and on a busy 2-core machine two
    OpenMP threads made a 10 ms step take seconds (threads spinning against other processes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Engine]:
    """The server's maintenance database in AUTOCOMMIT (CREATE DATABASE refuses transactions)."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL cases run only when SPLITSEARCH_TEST_POSTGRES_URL is set, "
                    "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    engine = create_engine(make_url(POSTGRES_URL).set(database="postgres"), isolation_level="AUTOCOMMIT",
                           poolclass=NullPool)
    yield engine
    engine.dispose()


@contextmanager
def postgres_database(server: Engine) -> Iterator[str]:
    """A new, empty database on the test server, dropped (with its connections) on exit."""
    name = f"splitsearch_test_{secrets.token_hex(6)}"
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_server: Engine) -> Iterator[str]:
    """An empty PostgreSQL database, for the cases about many workers on one server."""
    with postgres_database(postgres_server) as url:
        yield url
