"""Do more workers finish a study faster?  Trials per minute of 2 workers vs 1, on PostgreSQL.

Run (about 2 minutes on 2 CPU cores with the defaults):
    python benchmarks/workers.py
    python benchmarks/workers.py --server postgresql+psycopg://postgres@127.0.0.1:5432/postgres --trials 8

Runs the same small study twice, each time on a fresh database of the PostgreSQL server: once
with one ``splitsearch run`` worker, then with two started together; every worker trains on one
thread.  It prints the wall time and trials per minute of each and their ratio (2 workers / 1).
On a 2-core machine the ideal ratio is 2; what is lost goes to process start-up, Optuna's
coordination through the database and the workers' shared memory bandwidth.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_SERVER = os.environ.get("SPLITSEARCH_TEST_POSTGRES_URL",
                                "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STUDY = """\
name: workers
arch: resnet20
dataset: digits
space: divide
epochs: {epochs}
n_trials: {trials}
budget_params: 60K
pruner: none
"""


def timed_study(server: str, workers: int, trials: int, epochs: int, folder: Path) -> tuple[float, int]:
    """(wall seconds, finished trials) of ``workers`` workers running one study on a fresh database."""
    name = f"splitsearch_bench_{secrets.token_hex(4)}"
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    study_file = folder / f"study-{workers}.yaml"
    study_file.write_text(STUDY.format(epochs=epochs, trials=trials))
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(study_file), "--storage", url, "--device", "cpu",
               "--runs-dir", str(folder / f"runs-{workers}")]
    try:
        started = time.perf_counter()
        processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(workers)]
        for process in processes:
            _, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"a worker failed:\n{err[-2000:]}")
        seconds = time.perf_counter() - started
        study = optuna.load_study(study_name="workers", storage=url)
        finished = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
        return seconds, finished
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER,
                        help="a PostgreSQL URL; its server gets two scratch databases")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs per trial; short trials measure process start-up, not training")
    options = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"study: resnet20 on digits, {options.trials} trials x {options.epochs} epochs, one thread per worker; "
          f"server {make_url(options.server).render_as_string(hide_password=True)}", flush=True)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        for workers in (1, 2):
            seconds, finished = timed_study(options.server, workers, options.trials, options.epochs, Path(folder))
            rates[workers] = finished / seconds * 60
            print(f"{workers} worker{'s' if workers > 1 else ' '}: {finished} trials in {seconds:6.1f} s = "
                  f"{rates[workers]:5.2f} trials/min", flush=True)
    print(f"ratio 2 workers / 1: {rates[2] / rates[1]:.2f}x (ideal on 2 cores: 2x)")


if __name__ == "__main__":
    main()
