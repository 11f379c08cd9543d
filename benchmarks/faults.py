"""Storage faults injected under two real workers, and what came of them: trials lost or duplicated, tracebacks, db check.

Each fault mode runs a small study (ResNet-20 on digits, 2 ``splitsearch run`` workers, 1-second
heartbeats) on a fresh database of a real PostgreSQL server, through the fault-injecting TCP
proxy of the tests (``tests/fault_proxy.py``, imported from there: it is test equipment, and
the tests import it by that name)::

    commit cuts   seeded: 15% of the write transactions (an INSERT) lose their COMMIT's answer
    drops         every live connection cut at seeded intervals of 2 to 5 s
    refusals      the port closed until 25 s after the workers start (a server restarting as they start)
    latency       200 ms added to every client send (each round trip)

and the faults run from before the workers' first connection.  Per mode the table gives how
many faults were injected, trials lost (finished short of ``--trials``, or left RUNNING or
FAIL), trials duplicated (a creation token twice, a trial retried as if its worker had died, a
candidate trained twice), tracebacks in the workers' output, their exit codes, and
``splitsearch db check``'s findings.  Needs a PostgreSQL server (``--server``, by default
``SPLITSEARCH_TEST_POSTGRES_URL`` or the local one); ``--save`` writes result file ``faults``.

    python benchmarks/faults.py --trials 6 --save
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from splitsearch.search.consistency import check_storage
from splitsearch.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fault_proxy import FaultProxy  # noqa: E402 - test equipment, see the module's docstring

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resultfiles import save  # noqa: E402

DEFAULT_SERVER = os.environ.get("SPLITSEARCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODES = ("commit cuts", "drops", "refusals", "latency")
# How long the port stays closed after the workers start, in the refusals mode.
REFUSAL_SECONDS = 25.0
TOKEN = "splitsearch:creation_token"
SPACE = """\
name: faults-space
params:
  S: {type: categorical, choices: [1, 2, 4]}
  lambda_cot: {type: float, low: 0.0, high: 1.0}
fixed: {wd_rule: exp}
"""
STUDY = """\
name: faults
arch: resnet20
dataset: digits
space: {space}
epochs: {epochs}
n_trials: {trials}
budget_params: 30K
pruner: none
base: {{train: {{batch_size: 64, lr: 0.05, crop_padding: 1, hflip: false, val_fraction: 0.2}}}}
"""


def inject(proxy: FaultProxy, mode: str, seed: int) -> tuple[str, callable]:
    """Start the fault ``mode`` on ``proxy``; its unit and how to count what was injected."""
    if mode == "commit cuts":
        proxy.cut_commits_randomly(seed=seed, chance=0.15, containing=b"INSERT INTO")
        return "COMMIT answers lost", lambda: proxy.commit_cuts
    if mode == "drops":
        proxy.cut_randomly(seed=seed, every=(2.0, 5.0))
        return "connections cut", lambda: proxy.cuts
    if mode == "refusals":  # the port reopens REFUSAL_SECONDS after the workers start (run_mode)
        proxy.refuse()
        return "seconds refused", lambda: round(proxy.refused_seconds, 1)
    if mode == "latency":
        proxy.delay(0.2)
        return "sends delayed 200 ms", lambda: proxy.delayed
    raise ValueError(mode)


def run_mode(server: str, mode: str, trials: int, epochs: int, seed: int, folder: Path) -> dict:
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"splitsearch_faults_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    (folder / "space.yaml").write_text(SPACE)
    study_file = folder / "faults.yaml"
    study_file.write_text(STUDY.format(space=folder / "space.yaml", epochs=epochs, trials=trials))
    runs = folder / "runs"
    try:
        with FaultProxy.in_front_of(url) as proxy:
            unit, injected = inject(proxy, mode, seed)
            command = [sys.executable, "-m", "splitsearch.cli", "run", str(study_file), "--storage",
                       proxy.url(url), "--device", "cpu", "--runs-dir", str(runs),
                       "--set", "worker.heartbeat_seconds=1"]
            started = time.monotonic()
            workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
            if mode == "refusals":
                # Counted from the workers' start, not the refusal's: a worker takes seconds to
                # import PyTorch, and a shorter refusal ended before either asked for a connection.
                threading.Timer(REFUSAL_SECONDS, proxy.accept_again).start()
            outputs = [worker.communicate(timeout=1200) for worker in workers]
            seconds = time.monotonic() - started
            count = injected()
        errs = [out + err for out, err in outputs]
        study = optuna.load_study(study_name="faults", storage=url)
        states = [trial.state for trial in study.trials]
        finished = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
        phantoms = states.count(TrialState.RUNNING) + states.count(TrialState.FAIL)
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            tokens = list(connection.scalars(
                text(f"SELECT value_json FROM trial_system_attributes WHERE key = '{TOKEN}'")))
        engine.dispose()
        retried = sum("failed_trial" in trial.system_attrs for trial in study.trials)
        trained = {row.trial_number for row in Store(url).candidates("faults") if row.state in ("complete", "pruned")}
        params = [tuple(sorted(trial.params.items())) for trial in study.trials if trial.number in trained]
        findings = check_storage(url, None, runs)
        return {
            "fault": mode, "injected": count, "unit": unit,
            "trials lost": max(trials - finished, 0) + phantoms,
            "trials duplicated": (len(tokens) - len(set(tokens))) + retried + (len(params) - len(set(params))),
            "tracebacks": sum(err.count("Traceback") for err in errs),
            "exit codes": " ".join(str(worker.returncode) for worker in workers),
            "outage lines": sum(err.count("retrying for up to") for err in errs),
            "db check findings": len(findings),
            "finished": finished, "seconds": round(seconds),
            "findings": "; ".join(finding.line() for finding in findings[:3]),
        }
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="a PostgreSQL server's URL [default: %(default)s]")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated fault modes [default: all]")
    parser.add_argument("--trials", type=int, default=6, help="n_trials of each study [default: 6]")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial [default: 1]")
    parser.add_argument("--seed", type=int, default=30, help="the faults' seed [default: 30]")
    parser.add_argument("--save", action="store_true", help="write result file faults")
    args = parser.parse_args()
    rows = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as folder:
            row = run_mode(args.server, mode.strip(), args.trials, args.epochs, args.seed, Path(folder))
        rows.append(row)
        print(" | ".join(f"{key}: {value}" for key, value in row.items()), flush=True)
    columns = ["fault", "injected", "unit", "outage lines", "trials lost", "trials duplicated", "tracebacks",
               "exit codes", "db check findings", "finished", "seconds"]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[column]) for column in columns) + " |")
    if args.save:
        notes = (f"2 workers (splitsearch run, 1-second heartbeats, OMP_NUM_THREADS=1) on a {args.trials}-trial "
                 f"ResNet-20 digits study of {args.epochs} epoch(s) per mode, fresh PostgreSQL database each, "
                 "through tests/fault_proxy.py; faults from before the first connection, seed "
                 f"{args.seed}: commit cuts = 15% of INSERT transactions lose their COMMIT's answer; drops = every "
                 "connection cut every 2-5 s; refusals = port closed until 25 s after the workers start (they meet it "
                 "after importing PyTorch); latency = 200 ms per client "
                 "send. Lost = finished short of n_trials plus trials left RUNNING or FAIL; duplicated = a creation "
                 "token twice, a retried trial, or a candidate trained twice. Shared 2-core machine.")
        print(f"\nsaved {save('faults', rows, notes=notes)}")


if __name__ == "__main__":
    main()
