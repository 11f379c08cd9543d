"""Does the sampler help?  Searches replayed on a table of real results, without training.

Run (about 20 minutes on 2 CPU cores for 100 replays; the table comes from ``benchmarks/split_table.py``):
    python benchmarks/sampler_efficiency.py
    python benchmarks/sampler_efficiency.py --table benchmarks/tables/digits-divide.json --replays 100

Each replay is a study as ``splitsearch run`` makes it: the product's own space (``divide``,
``lambda_cot`` continuous, snapped to the nearest value in the table), the product's sampler
and pruner objects (:func:`~splitsearch.search.study.make_sampler`, ``make_pruner``), the
baselines queued first and never pruned, and a repeat (a candidate the replay has finished)
answered from its result and not counted, 20 of them in a row ending the study.  A trained
candidate draws one of the table's seeds at random and reports that run's per-epoch
validation curve, so the pruner sees real curves and the sampler real noise.

Single objective: the regret after 5, 10 and 20 counted trials is the best mean accuracy in
the table minus the mean accuracy of the configuration the study would pick (its best
observed trial), in points; the training epochs the replay spent; and the time a sampler
takes to propose a trial (``study.ask`` and the space's suggestions; Optuna's GPSampler fits a
Gaussian process each time).  Multi-objective (accuracy and MACs, accuracy and parameters),
each sampler without pruning and with the product's Pareto pruner
(:class:`~splitsearch.search.pruning.ParetoHalvingPruner`, fed each epoch's accuracy as a
worker feeds it): the hypervolume of the front the study found (its observed front, at the
configurations' mean accuracies) as a fraction of the table's own front's, after 10, 20 and 40
trials, reference point accuracy 0 and 1.1 x the table's largest cost; and the epochs spent.
Printed: median [first quartile, third quartile] over ``--replays`` replays.  ``--part``
runs the single- or the multi-objective replays alone.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPOSITORY / "benchmarks" / "tables" / "digits-divide.json"
SINGLE_BUDGETS = (5, 10, 20)
MULTI_BUDGETS = (10, 20, 40)
SINGLE_VARIANTS = (("tpe", "hyperband"), ("tpe", "none"), ("tpe-5-startup", "hyperband"), ("random", "hyperband"),
                   ("random", "none"), ("gp", "hyperband"), ("gp", "none"))
MULTI_VARIANTS = tuple((sampler, pruner) for sampler in ("tpe", "nsga2", "random") for pruner in ("none", "pareto"))
MULTI_OBJECTIVES = (("accuracy", "macs"), ("accuracy", "params"))
REFERENCE_COST_FACTOR = 1.1


@dataclass(frozen=True)
class Table:
    """The table's configurations: per key ``(S,)`` or ``(S, wd_rule, lambda_cot)``, its runs and costs."""

    rows: dict[tuple, dict]
    lambdas: tuple[float, ...]
    study: dict

    @classmethod
    def load(cls, path: Path) -> Table:
        data = json.loads(path.read_text())
        rows = {_key(row["S"], row.get("wd_rule"), row.get("lambda_cot")): row for row in data["rows"]}
        return cls(rows, tuple(data["space"]["lambda_cot"]), data["study"])

    def snap(self, S: int, wd_rule: str, lambda_cot: float) -> tuple:
        """The table's configuration nearest to a proposal (``lambda_cot`` is continuous in the space)."""
        return _key(S, wd_rule, min(self.lambdas, key=lambda value: abs(value - lambda_cot)))

    @property
    def best_mean(self) -> float:
        return max(row["mean"] for row in self.rows.values())

    def reference_cost(self, cost: str) -> float:
        return REFERENCE_COST_FACTOR * max(row[cost] for row in self.rows.values())


def _key(S: int, wd_rule: str | None, lambda_cot: float | None) -> tuple:
    return (S,) if S == 1 else (S, wd_rule, float(lambda_cot))


def make_spec(table: Table, sampler: str, pruner: str, n_trials: int, objectives: list[str]):  # noqa: ANN201
    """The StudySpec ``splitsearch run`` would build for the table's study with these settings."""
    from splitsearch.search.study import load_study_spec

    study = table.study
    return load_study_spec(None, {
        "name": "replay", "arch": study["arch"], "dataset": study["dataset"], "space": "divide",
        "budget_params": study["budget_params"], "budget_mode": "fit", "epochs": study["epochs"],
        "objectives": objectives, "sampler": sampler if sampler in ("random", "nsga2") else "tpe", "pruner": pruner,
        "n_trials": n_trials, "seed": 0,
    })


def make_sampler(spec, sampler: str, seed: int) -> optuna.samplers.BaseSampler:  # noqa: ANN001
    from splitsearch.search import study

    # Not product options: measured here to see whether they should be.
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler == "tpe-5-startup":  # the product's TPE, random for 5 trials instead of Optuna's 10
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=5)
    return study.make_sampler(spec, seed)


@dataclass(frozen=True)
class Replay:
    """One replay: per budget (counted trials) the figure of merit and the epochs spent; the median proposal time."""

    merit: dict[int, tuple[float, int]]
    proposal_seconds: float


def replay(table: Table, sampler: str, pruner: str, seed: int, budgets: tuple[int, ...],
           objectives: list[str]) -> Replay:
    """One study on the table (see the module)."""
    from splitsearch.search.objective import enqueue_baselines
    from splitsearch.search.record import TrialRecord
    from splitsearch.search.study import make_pruner
    from splitsearch.search.space import suggest_config

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = make_spec(table, sampler, pruner or "none", max(budgets), objectives)
    multi = len(objectives) > 1
    study = optuna.create_study(directions=["maximize", "minimize"] if multi else ["maximize"],
                                sampler=make_sampler(spec, sampler, seed), pruner=make_pruner(spec))
    baselines = len(enqueue_baselines(study, spec))
    draw = random.Random(seed)
    finished: dict[tuple, list[float]] = {}
    counted = epochs = repeats_in_a_row = 0
    merit: dict[int, tuple[float, int]] = {}
    proposals = []
    while counted < max(budgets) and repeats_in_a_row < 20:
        started = time.perf_counter()
        trial = study.ask()
        config = suggest_config(spec.space, trial, spec.base)
        proposals.append(time.perf_counter() - started)
        key = table.snap(config.S, config.wd_rule, config.lambda_cot)
        if key in finished:
            study.tell(trial, finished[key])
            repeats_in_a_row += 1
            continue
        repeats_in_a_row = 0
        row = table.rows[key]
        run = draw.choice(row["runs"])
        values = [run["val_accuracy"], row[objectives[1]]] if multi else [run["val_accuracy"]]
        # Baselines report but are never pruned.
        if multi:
            TrialRecord(params=row["params"], macs=row["macs"]).write_to(trial)  # known before training
            spent = _train_multi(study, trial, run["curve"], prunable=trial.number >= baselines)
        else:
            spent = _train(trial, run["curve"], prunable=trial.number >= baselines)
        epochs += spent
        counted += 1
        if spent == len(run["curve"]):
            finished[key] = values
            study.tell(trial, values)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        if counted in budgets:
            merit[counted] = (_merit(table, finished, objectives), epochs)
    final = (_merit(table, finished, objectives), epochs)
    return Replay({budget: merit.get(budget, final) for budget in budgets}, statistics.median(proposals))


def _train(trial: optuna.Trial, curve: list[float], prunable: bool) -> int:
    """Report the run's curve epoch by epoch; the epochs trained before the pruner stopped it."""
    for epoch, accuracy in enumerate(curve, start=1):
        trial.report(accuracy, epoch)
        if prunable and trial.should_prune():
            return epoch
    return len(curve)


def _train_multi(study: optuna.Study, trial: optuna.Trial, curve: list[float], prunable: bool) -> int:
    """The run's curve epoch by epoch into the trial's record, the study's pruner asked after each epoch
    as a worker asks it (``SearchObjective``): the epochs trained before it stopped the trial."""
    from splitsearch.search.record import TrialRecord

    accuracies = {}
    for epoch, accuracy in enumerate(curve, start=1):
        accuracies[str(epoch)] = accuracy
        TrialRecord(epoch_val_accuracies=accuracies).write_to(trial)
        if prunable and study.pruner.prune(study, study.get_trials(deepcopy=False)[trial.number]):
            return epoch
    return len(curve)


def _merit(table: Table, finished: dict[tuple, list[float]], objectives: list[str]) -> float:
    """Regret in points (single objective) or the found front's share of the table's hypervolume."""
    if len(objectives) == 1:
        pick = max(finished, key=lambda key: finished[key][0])
        return 100 * (table.best_mean - table.rows[pick]["mean"])
    observed = [key for key in finished
                if not any(_dominates(finished[other], finished[key]) for other in finished)]
    return _hypervolume(table, observed, objectives[1]) / _hypervolume(table, list(table.rows), objectives[1])


def _dominates(a: list[float], b: list[float]) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def _hypervolume(table: Table, keys: list[tuple], cost: str) -> float:
    """Area dominated by the keys' (cost, mean accuracy) up to accuracy 0 and the reference cost."""
    points = sorted((table.rows[key][cost], table.rows[key]["mean"]) for key in keys)
    reference = table.reference_cost(cost)
    area, best = 0.0, 0.0
    for (cost, accuracy), next_cost in zip(points, [cost for cost, _ in points[1:]] + [reference]):
        best = max(best, accuracy)
        area += (next_cost - cost) * best
    return area


def _job(arguments: tuple) -> tuple[tuple, Replay]:
    table_path, variant, seed, budgets, objectives = arguments
    return (variant, tuple(objectives), seed), replay(Table.load(table_path), *variant, seed, budgets, objectives)


def _quartiles(values: list[float], digits: int = 2) -> str:
    first, median, third = statistics.quantiles(values, n=4, method="inclusive")
    return f"{median:5.{digits}f} [{first:5.{digits}f}, {third:5.{digits}f}]"


def summarise(results: dict, variants: list[tuple], objectives: tuple[str, ...], budgets: tuple[int, ...],
              replays: int, what: str) -> list[dict]:
    """One line per variant: the merit and the epochs at each budget; for one objective, the proposal time.
    Printed, and returned as result-file rows (the same cells)."""
    single = len(objectives) == 1
    print(f"{'':<26}" + "".join(f"{f'{what} @{budget}':>26}{'epochs':>20}" for budget in budgets)
          + (f"{'ms a proposal':>16}" if single else ""))
    rows = []
    for variant in variants:
        runs = [results[(variant, objectives, seed)] for seed in range(replays)]
        row = {"variant": " + ".join(part for part in variant if part)}
        for budget in budgets:
            # A front's share moves in the third digit where the table's accuracies are all close to 1.
            row[f"{what} @{budget}"] = _quartiles([run.merit[budget][0] for run in runs], digits=2 if single else 3)
            row[f"epochs @{budget}"] = _quartiles([run.merit[budget][1] for run in runs], digits=0)
        if single:
            row["ms a proposal"] = round(1000 * statistics.median(run.proposal_seconds for run in runs), 1)
        print(f"{row['variant']:<26}" + "".join(f"{row[f'{what} @{budget}']:>26}{row[f'epochs @{budget}']:>20}"
                                               for budget in budgets)
              + (f"{row['ms a proposal']:>16.1f}" if single else ""))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="replays run in this many processes")
    parser.add_argument("--part", choices=("all", "single", "multi"), default="all",
                        help="the single-objective replays, the multi-objective ones, or both")
    parser.add_argument("--save", metavar="NAME",
                        help="also write result files: NAME (single objective), NAME_multi (accuracy and MACs), "
                             "NAME_multi_params (accuracy and parameters)")
    options = parser.parse_args()
    if not options.table.is_file():
        parser.error(f"{options.table} not found; make it with python benchmarks/split_table.py")
    table = Table.load(options.table)
    best = max(table.rows, key=lambda key: table.rows[key]["mean"])
    undivided = table.rows[(1,)]["mean"]
    print(f"table: {len(table.rows)} configurations, {table.study['epochs']} epochs, {options.table.name}; best "
          f"{best} {table.rows[best]['mean']:.2%}; the undivided baseline alone has regret "
          f"{100 * (table.best_mean - undivided):.2f} points", flush=True)

    with ProcessPoolExecutor(options.jobs) as pool:
        if options.part in ("all", "single"):
            single = [(variant, seed, SINGLE_BUDGETS, ["accuracy"]) for variant in SINGLE_VARIANTS
                      for seed in range(options.replays)]
            results = dict(pool.map(_job, [(options.table, *job) for job in single]))
            print(f"\nsingle objective: regret in points and training epochs spent, median [quartiles] over "
                  f"{options.replays} replays; median time a proposal takes")
            rows = summarise(results, list(SINGLE_VARIANTS), ("accuracy",), SINGLE_BUDGETS, options.replays, "regret")
            _save(options, "", rows, "regret: points of validation accuracy below the table's best mean")
        if options.part in ("all", "multi"):
            for objectives in MULTI_OBJECTIVES:
                multi = [(variant, seed, MULTI_BUDGETS, list(objectives)) for variant in MULTI_VARIANTS
                         for seed in range(options.replays)]
                results = dict(pool.map(_job, [(options.table, *job) for job in multi]))
                print(f"\n{' and '.join(objectives)}: found front's hypervolume / the table's and training epochs "
                      f"spent, median [quartiles] over {options.replays} replays")
                rows = summarise(results, list(MULTI_VARIANTS), objectives, MULTI_BUDGETS, options.replays,
                                 "hypervolume")
                _save(options, "_multi" if objectives[1] == "macs" else f"_multi_{objectives[1]}", rows,
                      f"hypervolume: the found front's share of the table's ({' and '.join(objectives)})")


def _save(options: argparse.Namespace, suffix: str, rows: list[dict], what: str) -> None:
    """A result file of one printed table, when ``--save`` names one."""
    if options.save is None:
        return
    import resultfiles

    table = Table.load(options.table)
    notes = (f"Searches replayed {options.replays} times on {options.table.name} ({len(table.rows)} configurations, "
             f"{table.study['epochs']} epochs) without training; median [quartiles]. {what}.")
    print(f"result file: {resultfiles.save(options.save + suffix, rows, notes=notes)}", flush=True)


if __name__ == "__main__":
    main()
