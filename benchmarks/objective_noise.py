"""Which search-time signal ranks candidates best: validation accuracy or validation NLL?

Run (about 15 minutes on 2 CPU cores with the defaults; the tables come from ``benchmarks/split_table.py``):
    python benchmarks/objective_noise.py
    python benchmarks/objective_noise.py --replays 100 --bootstrap 2000

A search sees one run of each candidate, measured on a few hundred validation images: its
accuracy moves in steps of one image and carries about two points of noise.  The ensemble's
negative log-likelihood (NLL) on the same images is continuous, and may rank candidates more
faithfully.  This measures it on the digits tables (6 and 15 epochs, every configuration of the
``divide`` grid trained with three seeds, each run's validation accuracy and NLL recorded per
epoch and its test accuracy at the end):

- Spearman's rank correlation between a signal (one run's validation accuracy, or minus its NLL,
  at Hyperband's rungs and at the last epoch) and the configurations' test accuracy.  The test
  accuracy a run is ranked against is the mean over the *other* seeds' runs, so the signal and
  its target share no training noise.  Averaged over the seeds; the 95 % interval is a
  percentile bootstrap over configurations, and so is the difference between the two signals.
- The regret of TPE + Hyperband searching on each signal, replayed on the table without training
  (``benchmarks/sampler_efficiency.py``'s replay, the product's sampler and pruner): the best
  test accuracy of the table minus the test accuracy of the configuration the search picks, in
  points, after 10 and 20 trials; median [quartiles] over ``--replays`` replays.

Figures go to result files ``objective-noise-spearman`` and ``objective-noise-regret``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import resultfiles  # noqa: E402
from sampler_efficiency import Table, replay  # noqa: E402

TABLES = Path(__file__).resolve().parent / "tables"
DEFAULT_TABLES = (TABLES / "digits-divide-6-epochs.json", TABLES / "digits-divide.json")
SIGNALS = {"val accuracy": ("curve", 1.0), "val NLL": ("nll_curve", -1.0)}  # run key, sign (higher is better)
BUDGETS = (10, 20)
HYPERBAND_REDUCTION = 3  # the product's HyperbandPruner: min_resource 1, reduction factor 3


def rungs(epochs: int) -> list[int]:
    """The epochs at which Hyperband decides (1, 3, 9, ...) and the last epoch."""
    found, epoch = [], 1
    while epoch < epochs:
        found.append(epoch)
        epoch *= HYPERBAND_REDUCTION
    return found + [epochs]


def signal_matrix(table: Table, signal: str, epoch: int) -> np.ndarray:
    """``[seeds, configurations]``: each run's signal at ``epoch``, higher is better."""
    key, sign = SIGNALS[signal]
    return np.array([[sign * row["runs"][seed][key][epoch - 1] for row in table.rows.values()]
                     for seed in range(_seeds(table))])


def leave_one_out_targets(table: Table) -> np.ndarray:
    """``[seeds, configurations]``: the mean test accuracy of the configuration's runs with the other seeds."""
    tests = np.array([[run["test_accuracy"] for run in row["runs"]] for row in table.rows.values()]).T
    seeds = len(tests)
    return (tests.sum(0, keepdims=True) - tests) / (seeds - 1)


def spearman(signal: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman's correlation along the last axis (ties get their average rank), mean over the seeds axis."""
    ranked_signal = stats.rankdata(signal, axis=-1)
    ranked_target = stats.rankdata(target, axis=-1)
    ranked_signal -= ranked_signal.mean(-1, keepdims=True)
    ranked_target -= ranked_target.mean(-1, keepdims=True)
    numerator = (ranked_signal * ranked_target).sum(-1)
    denominator = np.sqrt((ranked_signal ** 2).sum(-1) * (ranked_target ** 2).sum(-1))
    with np.errstate(invalid="ignore"):  # a resample of one configuration only has no ranking: NaN, left out
        return (numerator / denominator).mean(-1)


def correlations(table: Table, resamples: int, seed: int) -> list[dict]:
    """Per signal and epoch: Spearman with test accuracy and its bootstrap interval; and NLL minus accuracy."""
    targets = leave_one_out_targets(table)
    configurations = targets.shape[1]
    draws = np.random.default_rng(seed).integers(0, configurations, size=(resamples, configurations))
    rows = []
    for epoch in rungs(table.study["epochs"]):
        boot = {}
        for signal in SIGNALS:
            values = signal_matrix(table, signal, epoch)
            point = float(spearman(values, targets))
            boot[signal] = spearman(values[:, draws].transpose(1, 0, 2), targets[:, draws].transpose(1, 0, 2))
            low, high = np.nanpercentile(boot[signal], [2.5, 97.5])
            rows.append({"epochs": table.study["epochs"], "epoch": epoch, "signal": signal, "spearman": point,
                         "ci_low": float(low), "ci_high": float(high)})
        difference = boot["val NLL"] - boot["val accuracy"]
        low, high = np.nanpercentile(difference, [2.5, 97.5])
        rows.append({"epochs": table.study["epochs"], "epoch": epoch, "signal": "NLL minus accuracy",
                     "spearman": rows[-1]["spearman"] - rows[-2]["spearman"], "ci_low": float(low),
                     "ci_high": float(high)})
    return rows


def signal_table(table: Table, signal: str) -> Table:
    """The table as a search on ``signal`` sees it: each run's curve and result are the signal (higher is
    better), and a configuration's merit (``mean``) is its mean test accuracy."""
    key, sign = SIGNALS[signal]
    rows = {}
    for name, row in table.rows.items():
        runs = [{**run, "curve": [sign * value for value in run[key]], "val_accuracy": sign * run[key][-1]}
                for run in row["runs"]]
        rows[name] = {**row, "runs": runs, "mean": statistics.fmean(run["test_accuracy"] for run in row["runs"])}
    return Table(rows, table.lambdas, table.study)


def _replay(arguments: tuple) -> tuple[tuple, dict[int, tuple[float, int]]]:
    path, signal, seed = arguments
    return (path, signal, seed), replay(signal_table(Table.load(path), signal), "tpe", "hyperband", seed, BUDGETS,
                                        ["accuracy"]).merit


def _seeds(table: Table) -> int:
    return min(len(row["runs"]) for row in table.rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, nargs="+", default=list(DEFAULT_TABLES))
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the configurations")
    parser.add_argument("--replays", type=int, default=50, help="searches replayed per table and signal")
    parser.add_argument("--jobs", type=int, default=2, help="replays run in this many processes")
    options = parser.parse_args()
    for path in options.tables:
        if not path.is_file():
            parser.error(f"{path} not found; make it with python benchmarks/split_table.py")
        if any("nll_curve" not in run for row in Table.load(path).rows.values() for run in row["runs"]):
            parser.error(f"{path} has no NLL per epoch: rebuild it with python benchmarks/split_table.py")

    spearman_rows = []
    for path in options.tables:
        table = Table.load(path)
        print(f"\n{path.name}: {len(table.rows)} configurations x {_seeds(table)} seeds, {table.study['epochs']} "
              "epochs; Spearman with the other seeds' mean test accuracy, mean over seeds [95 % bootstrap CI]")
        rows = correlations(table, options.bootstrap, seed=0)
        for row in rows:
            print(f"  epoch {row['epoch']:>2}  {row['signal']:<20}{row['spearman']:+.3f} "
                  f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
        spearman_rows += [{"table": path.name, **row} for row in rows]

    jobs = [(path, signal, seed) for path in options.tables for signal in SIGNALS for seed in range(options.replays)]
    with ProcessPoolExecutor(options.jobs) as pool:
        results = dict(pool.map(_replay, jobs))
    regret_rows = []
    print(f"\nTPE + Hyperband searching on each signal: regret in test-accuracy points (best of the table minus the "
          f"pick's), median [quartiles] over {options.replays} replays; median epochs trained")
    for path in options.tables:
        for signal in SIGNALS:
            line = f"  {path.name:<32}{signal:<14}"
            for budget in BUDGETS:
                regrets = [results[(path, signal, seed)][budget][0] for seed in range(options.replays)]
                epochs = [results[(path, signal, seed)][budget][1] for seed in range(options.replays)]
                first, median, third = statistics.quantiles(regrets, n=4, method="inclusive")
                line += f"  @{budget}: {median:5.2f} [{first:5.2f}, {third:5.2f}] {statistics.median(epochs):4.0f} ep"
                regret_rows.append({"table": path.name, "signal": signal, "trials": budget, "median_regret": median,
                                    "q1_regret": first, "q3_regret": third, "mean_regret": statistics.fmean(regrets),
                                    "median_epochs": statistics.median(epochs), "replays": options.replays})
            print(line)

    notes = ("Spearman: one run's signal vs the mean test accuracy of the other seeds' runs of the same "
             "configuration, averaged over seeds; percentile bootstrap over configurations. Regret: "
             "TPE + Hyperband replays on the table, picking by the signal, judged by mean test accuracy.")
    print(f"\nresult files: {resultfiles.save('objective-noise-spearman', spearman_rows, notes=notes)}, "
          f"{resultfiles.save('objective-noise-regret', regret_rows, notes=notes)}")


if __name__ == "__main__":
    main()
