"""A table of real results: every configuration of a small grid of the ``divide`` space, trained.

Run (19 minutes on 2 CPU cores with the defaults, with other work on the machine; running it again resumes):
    python benchmarks/split_table.py
    python benchmarks/split_table.py --out benchmarks/tables/digits-divide.json --workdir /tmp/split-table

Samplers are judged the way NAS-Bench-201, HPOBench and Syne Tune's blackbox repository judge
them: train every point of a space once (here: once per seed), then replay any number of
searches on the table without training (``benchmarks/sampler_efficiency.py``).  The grid is
the ``divide`` space on the quick-start's setting (ResNet-20 fitted to 60K parameters, the
8x8 digits, the quick-start's training settings) with ``lambda_cot`` on a few values:
S = 1, and S in {2, 4} x weight-decay rule x ``--lambdas``, each with ``--seeds``.

Every run is an ordinary trial of one study (``train.seed`` is a searched key of the table's
space, so the seeds are distinct candidates): the store keeps every result and per-epoch
curve, ``splitsearch report`` works on it, and ``--workers`` real ``splitsearch run``
processes (one thread each) share it.  The table is a JSON file: per configuration its
params, MACs, and per seed the validation accuracy, the per-epoch validation curve and the
seconds per epoch, with mean and sd over seeds.  Each run also records its validation
negative log-likelihood (NLL) and expected calibration error (ECE) per epoch
(``nll_curve``, ``ece_curve``) and, measured once at the end and never searched on, its
accuracy and NLL on the test split (``test_accuracy``, ``test_nll``; ``test_mean`` and
``test_sd`` over seeds per configuration): what ``benchmarks/objective_noise.py`` ranks the
search-time signals against.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
STUDY_NAME = "split-table"
WD_RULES = ("none", "linear", "exp")


def grid(lambdas: list[float]) -> list[dict]:
    """The configurations of the table: S=1 once (no wd rule, no co-training), S>1 crossed."""
    points = [{"S": 1}]
    points += [{"S": S, "wd_rule": rule, "lambda_cot": value}
               for S, rule, value in itertools.product((2, 4), WD_RULES, lambdas)]
    return points


def write_study(workdir: Path, lambdas: list[float], seeds: list[int], epochs: int, budget: str) -> Path:
    """The table's space and study files: the quick-start's setting, every grid point a trial."""
    space = {
        "name": "divide-grid",
        "description": "the divide space with lambda_cot on a grid, and the seed as a key",
        "params": {
            "S": {"type": "categorical", "choices": [1, 2, 4]},
            "wd_rule": {"type": "categorical", "choices": list(WD_RULES), "when": "S > 1"},
            "lambda_cot": {"type": "categorical", "choices": lambdas, "when": "S > 1"},
            "train.seed": {"type": "categorical", "choices": seeds},
        },
    }
    quickstart = yaml.safe_load((REPOSITORY / "studies" / "quickstart.yaml").read_text())
    study = {
        "name": STUDY_NAME, "arch": quickstart["arch"], "dataset": quickstart["dataset"],
        "space": str(workdir / "space.yaml"), "budget_params": budget, "budget_mode": "fit",
        "objectives": ["accuracy"], "sampler": "random", "pruner": "none", "baselines": False,
        "n_trials": len(grid(lambdas)) * len(seeds), "seed": 0, "epochs": epochs,
        "dataset_train": quickstart["dataset_train"], "record_test": True,
    }
    (workdir / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def enqueue_grid(study_file: Path, storage: str, lambdas: list[float], seeds: list[int]) -> int:
    """Create the study and queue every (configuration, seed) not queued yet; returns the trial count."""
    import optuna

    from splitsearch.search.run import open_search
    from splitsearch.search.study import load_study_spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study, store = open_search(load_study_spec(study_file), storage)
    try:
        for point, seed in itertools.product(grid(lambdas), seeds):
            study.enqueue_trial({**point, "train.seed": seed}, skip_if_exists=True)
        return len(study.get_trials(deepcopy=False))
    finally:
        store.close()


def run_workers(study_file: Path, storage: str, workdir: Path, workers: int) -> None:
    """``workers`` real ``splitsearch run`` processes, one thread each, until the queue is empty."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "splitsearch.cli", "run", str(study_file), "--storage", storage,
               "--runs-dir", str(workdir / "runs"), "--device", "cpu"]
    processes = [subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(workers)]
    failed = [(process.wait(), process.stderr.read()) for process in processes]
    for code, errors in failed:
        if code != 0:
            raise SystemExit(f"a worker exited {code}: {errors.strip().splitlines()[-1:]}")


def read_table(storage: str, lambdas: list[float], seeds: list[int], epochs: int) -> list[dict]:
    """One row per configuration, from the store: costs, and per seed accuracy, curve and time."""
    from splitsearch.store import Store

    store = Store(storage)
    try:
        runs: dict[tuple, list[dict]] = {}
        costs: dict[tuple, dict] = {}
        for candidate in store.candidates(STUDY_NAME):
            if candidate.state != "complete":
                continue
            config = candidate.config
            key = (config.S,) if config.S == 1 else (config.S, config.wd_rule, config.lambda_cot)
            epochs_trained = store.epochs(candidate.id)
            runs.setdefault(key, []).append({
                "seed": config.train.seed, "val_accuracy": candidate.val_accuracy,
                "curve": [metrics.val_accuracy for metrics in epochs_trained],
                "seconds_per_epoch": candidate.wall_seconds / candidate.epochs,
                "val_nll": candidate.val_nll, "val_ece": candidate.val_ece,
                "nll_curve": [metrics.val_nll for metrics in epochs_trained],
                "ece_curve": [metrics.val_ece for metrics in epochs_trained],
                "test_accuracy": candidate.test_accuracy, "test_nll": candidate.test_nll})
            costs[key] = {"params": candidate.params, "macs": candidate.macs, "width_mult": config.width_mult}
    finally:
        store.close()
    rows = []
    for point in grid(lambdas):
        key = tuple(point.values())
        found = sorted(runs.get(key, []), key=lambda run: run["seed"])
        if [run["seed"] for run in found] != seeds or any(len(run["curve"]) != epochs for run in found):
            raise SystemExit(f"{point}: runs for seeds {[run['seed'] for run in found]} of {seeds}; "
                             "run the command again to finish the table")
        accuracies = [run["val_accuracy"] for run in found]
        tests = [run["test_accuracy"] for run in found]
        rows.append({**point, **costs[key], "mean": statistics.mean(accuracies),
                     "sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                     "test_mean": statistics.mean(tests), "test_sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                     "runs": found})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'S':>2} {'wd rule':<8}{'lambda':>7}{'params':>9}{'MACs':>11}{'val mean':>10}{'sd':>6}{'val NLL':>9}"
          f"{'test mean':>10}{'s/epoch':>9}")
    for row in sorted(rows, key=lambda row: -row["mean"]):
        seconds = statistics.mean(run["seconds_per_epoch"] for run in row["runs"])
        nll = statistics.mean(run["val_nll"] for run in row["runs"])
        print(f"{row['S']:>2} {row.get('wd_rule', '-'):<8}{row.get('lambda_cot', '-'):>7}{row['params']:>9,}"
              f"{row['macs']:>11,}{row['mean']:>10.2%}{100 * row['sd']:>6.2f}{nll:>9.3f}{row['test_mean']:>10.2%}"
              f"{seconds:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--lambdas", default="0,0.25,0.5,0.75,1", help="comma-separated lambda_cot values for S > 1")
    parser.add_argument("--budget-params", default="60K")
    parser.add_argument("--workers", type=int, default=2, help="splitsearch run processes, one thread each")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/split-table"),
                        help="the study's database and checkpoints; the same folder resumes")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "benchmarks" / "tables" / "digits-divide.json")
    options = parser.parse_args()
    seeds = [int(seed) for seed in options.seeds.split(",")]
    lambdas = [float(value) for value in options.lambdas.split(",")]

    options.workdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{options.workdir / 'table.db'}"
    study_file = write_study(options.workdir, lambdas, seeds, options.epochs, options.budget_params)
    total = enqueue_grid(study_file, storage, lambdas, seeds)
    print(f"{total} runs ({len(grid(lambdas))} configurations x {len(seeds)} seeds, {options.epochs} epochs) "
          f"in {storage}; {options.workers} workers", flush=True)
    started = time.perf_counter()
    run_workers(study_file, storage, options.workdir, options.workers)
    minutes = (time.perf_counter() - started) / 60
    rows = read_table(storage, lambdas, seeds, options.epochs)
    print_table(rows)

    import torch

    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({
        "command": "python benchmarks/split_table.py " + " ".join(sys.argv[1:]),
        "made": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "study": yaml.safe_load(study_file.read_text()),
        "space": {"S": [1, 2, 4], "wd_rule": list(WD_RULES), "lambda_cot": lambdas}, "seeds": seeds,
        "epochs": options.epochs, "rows": rows,
    }, indent=1))
    print(f"table of {len(rows)} configurations written to {options.out} ({minutes:.1f} min of training this run)")


if __name__ == "__main__":
    main()
