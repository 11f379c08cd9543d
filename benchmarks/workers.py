"""Do more workers finish a study faster, and what does coordinating them through the database cost?

Run (about 2 minutes on 2 CPU cores with the defaults):
    python benchmarks/workers.py
    python benchmarks/workers.py --server postgresql+psycopg://postgres@127.0.0.1:5432/postgres --trials 8
    python benchmarks/workers.py --workers 1,4,16 --trivial

Runs the same study once per worker count, each time on a fresh database of the PostgreSQL
server, with that many ``splitsearch run`` workers started together, each on one thread.  It
prints the wall time and trials per minute of each, and with 1 and 2 workers their ratio; on a
2-core machine the ideal ratio is 2, and what is lost goes to process start-up, coordination
through the database and the workers' shared memory bandwidth.

``--trivial`` trains trials of a few milliseconds (a ResNet-20 at a quarter of its width, no
budget to fit, one epoch of three batches of synthetic images), so what is left of a trial is
the cost of coordination: per trial it prints the median time a trial spends outside its
training (sampling, counting the candidate's cost on the meta device, building it, its storage
writes and the storage's answers) and the median gap between a worker's trials (counting the
study's trials, looking for stale ones, creating the next).
Both are read from the storage afterwards: a trial's start and end in Optuna, its training's
``wall_seconds`` in the store.  The storage's own share is estimated apart: the transactions the
study's database served per trial (PostgreSQL's ``pg_stat_database``, all workers and all their
reads and writes included) times the time of one storage write on the idle database.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from splitsearch.search.record import TrialRecord
from splitsearch.store import Store

DEFAULT_SERVER = os.environ.get("SPLITSEARCH_TEST_POSTGRES_URL",
                                "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
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
# A continuous co-training weight, searched for every S, so that no two trials repeat each other.
TRIVIAL_SPACE = """\
name: trivial
params:
  S: {type: categorical, choices: [1, 2]}
  lambda_cot: {type: float, low: 0.0, high: 1.0}
fixed: {wd_rule: exp}
"""
TRIVIAL_STUDY = """\
name: workers
arch: resnet20
dataset: synthetic:128
space: {space}
epochs: 1
n_trials: {trials}
pruner: none
baselines: false
base: {{width_mult: 0.25, train: {{batch_size: 32, val_fraction: 0.25}}}}
"""


@dataclass(frozen=True)
class Measurement:
    """One study run by ``workers`` workers; times in seconds, per trial as medians."""

    workers: int
    seconds: float
    finished: int
    training: float
    outside_training: float
    between_trials: float | None
    transactions: int
    storage_call: float

    @property
    def per_minute(self) -> float:
        return self.finished / self.seconds * 60


def timed_study(server: str, workers: int, study_text: str, folder: Path) -> Measurement:
    """``workers`` workers running one study on a fresh database of ``server``, measured."""
    name = f"splitsearch_bench_{secrets.token_hex(4)}"
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT",
                          poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    storage_call = time_storage_call(url)
    transactions_before = transactions(admin, name)
    study_file = folder / f"study-{workers}.yaml"
    study_file.write_text(study_text)
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
        time.sleep(1)  # the server publishes its statistics within a second of a session's last transaction
        return measure(url, workers, seconds, transactions(admin, name) - transactions_before, storage_call)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def time_storage_call(url: str, calls: int = 50) -> float:
    """The median time of one of Optuna's storage writes (a trial's user attribute) on an idle database."""
    storage = optuna.storages.RDBStorage(url)
    trial_id = optuna.create_study(study_name="scratch", storage=storage).ask()._trial_id
    times = []
    for index in range(calls):
        started = time.perf_counter()
        storage.set_trial_user_attr(trial_id, "index", index)
        times.append(time.perf_counter() - started)
    storage.engine.dispose()
    return statistics.median(times)


def transactions(admin: Engine, database: str) -> int:
    """The transactions ``database`` has committed or rolled back: the storage's round trips."""
    with admin.connect() as connection:
        return connection.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                       "WHERE datname = :name"), {"name": database}).scalar_one()


def measure(url: str, workers: int, seconds: float, transactions: int, storage_call: float) -> Measurement:
    """What the storage says about the finished study: trials, their training and what surrounds it."""
    study = optuna.load_study(study_name="workers", storage=url)
    trials = study.get_trials(states=FINISHED)
    store = Store(url)
    training = {row.trial_number: row.wall_seconds or 0.0 for row in store.candidates("workers")}
    store.close()
    outside = [_duration(trial) - training.get(trial.number, 0.0) for trial in trials]
    return Measurement(workers, seconds, len(trials), statistics.median(training.values()),
                       statistics.median(outside), _median_gap(trials), transactions, storage_call)


def _duration(trial: FrozenTrial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _median_gap(trials: list[FrozenTrial]) -> float | None:
    """The median time between the end of a worker's trial and the start of its next one."""
    by_worker: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        by_worker.setdefault(int((TrialRecord.from_trial(trial).worker or {}).get("pid", 0)), []).append(trial)
    gaps = []
    for own in by_worker.values():
        own.sort(key=lambda trial: trial.datetime_start)
        gaps += [(after.datetime_start - before.datetime_complete).total_seconds()
                 for before, after in zip(own, own[1:])]
    return statistics.median(gaps) if gaps else None


def describe(result: Measurement, trivial: bool) -> str:
    line = (f"{result.workers:>2} worker{'s' if result.workers > 1 else ' '}: {result.finished} trials in "
            f"{result.seconds:6.1f} s = {result.per_minute:6.2f} trials/min")
    if not trivial:
        return line
    gap = "n/a" if result.between_trials is None else f"{1000 * result.between_trials:.0f} ms"
    per_trial = result.transactions / result.finished
    return (f"{line}\n    per trial (median): training {1000 * result.training:.0f} ms, the rest of the trial "
            f"{1000 * result.outside_training:.0f} ms, between a worker's trials {gap}\n"
            f"    storage: {per_trial:.0f} transactions per trial x {1000 * result.storage_call:.1f} ms for one "
            f"write on the idle database = about {per_trial * result.storage_call * 1000:.0f} ms per trial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER,
                        help="a PostgreSQL URL; its server gets a scratch database per worker count")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, e.g. 1,4,16")
    parser.add_argument("--trials", type=int, help="trials per study [default: 8, 48 with --trivial]")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs per trial; short trials measure process start-up, not training")
    parser.add_argument("--trivial", action="store_true",
                        help="trials of a few milliseconds of training: the cost of coordination shows")
    options = parser.parse_args()
    counts = [int(part) for part in options.workers.split(",")]
    trials = options.trials or (48 if options.trivial else 8)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    server = make_url(options.server).render_as_string(hide_password=True)
    with tempfile.TemporaryDirectory() as folder:
        if options.trivial:
            (Path(folder) / "space.yaml").write_text(TRIVIAL_SPACE)
            study_text = TRIVIAL_STUDY.format(space=Path(folder) / "space.yaml", trials=trials)
            print(f"study: trivial trials (resnet20 at width 0.25, 1 epoch of 3 batches of synthetic images), "
                  f"{trials} trials, one thread per worker; server {server}", flush=True)
        else:
            study_text = STUDY.format(epochs=options.epochs, trials=trials)
            print(f"study: resnet20 on digits, {trials} trials x {options.epochs} epochs, one thread per worker; "
                  f"server {server}", flush=True)
        results = {}
        for workers in counts:
            results[workers] = timed_study(options.server, workers, study_text, Path(folder))
            print(describe(results[workers], options.trivial), flush=True)
    if 1 in results and 2 in results:
        print(f"ratio 2 workers / 1: {results[2].per_minute / results[1].per_minute:.2f}x (ideal on 2 cores: 2x)")


if __name__ == "__main__":
    main()
