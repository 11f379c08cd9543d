"""Does the search earn its keep?  Search, confirm, then retrain the pick and the baselines over seeds.

Run (22 minutes on 2 CPU cores with the defaults, 52 minutes with the second line):
    python benchmarks/search_quality.py
    python benchmarks/search_quality.py --trials 16 --search-epochs 5 --top 3 --final-epochs 15

On the real CIFAR-10 subset (5,085 training, 1,017 test images), a ResNet-20 study with the
``divide`` space (S in {1, 2, 4}, weight-decay rule, lambda_cot) under a parameter budget
(``fit`` mode: every candidate is widened or narrowed to use it), TPE + Hyperband, runs
``--trials`` trials of ``--search-epochs`` epochs; it starts with the three baselines
(undivided, the paper's S=2 and S=4).  ``splitsearch confirm`` then retrains the ``--top`` best
distinct candidates and the baselines with ``--confirm-seeds`` more seeds, and the confirmed
best candidate and the three baselines are each trained ``--final-seeds`` times on the whole
training split (``splitsearch train --final``) for ``--final-epochs`` epochs.  It prints their
test accuracy, mean +- sd over seeds, side by side, and the wall time of each stage, and the
verdicts a user gets: ``confirm``'s (the pick against each baseline, paired by confirmation
seed, on validation accuracy) and the same paired comparison on the final test accuracies.

The search and the confirmation run in this process (2 threads); the final trainings run two
at a time, one thread each.  The budget of 90 minutes on 2 cores sets the scale: short
schedules, few trials.  Read the final table with the noise in mind: on 1,017 test images a
single run's accuracy has a standard error of about 1.6 points.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
BASELINE_LABELS = ("undivided", "paper S=2", "paper S=4")


def _one_thread() -> None:
    torch.set_num_threads(1)


def final_training(config_dict: dict, seed: int, epochs: int) -> float:
    """``splitsearch train --final``: train on train + validation, then the one test evaluation."""
    from splitsearch.config import SplitConfig
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    config = SplitConfig.from_dict(config_dict)
    config = config.replace(train=dataclasses.replace(config.train, seed=seed, epochs=epochs, val_fraction=0.0))
    result = Trainer(config, prepare_data(config.dataset, config.train), "cpu", progress=False).fit(test=True)
    return result.test_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget-params", default="300K")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--top", type=int, default=2)
    parser.add_argument("--confirm-seeds", type=int, default=2)
    parser.add_argument("--final-epochs", type=int, default=6)
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--storage", help="database URL (default: a SQLite file in a temporary folder)")
    options = parser.parse_args()
    if options.trials < len(BASELINE_LABELS) + 1:  # the baselines come first and count as trials
        parser.error(f"--trials must be at least {len(BASELINE_LABELS) + 1}: the {len(BASELINE_LABELS)} baselines "
                     "are trials too, and the final stage compares the pick with each of them")
    if not options.data.is_file():
        parser.error(f"{options.data} not found; pass --data PATH to the CIFAR-10 subset .npz")

    import optuna

    from splitsearch.data import dataset_info
    from splitsearch.search.confirm import confirm_study, load_verdicts
    from splitsearch.search.execution import ExecutionOptions
    from splitsearch.search.record import TrialRecord
    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec
    from splitsearch.search.verdict import paired_verdict, verdict_lines
    from splitsearch.store import Store
    from splitsearch.units import format_count

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(2)
    workdir = Path(tempfile.mkdtemp(prefix="search-quality-"))
    storage = options.storage or f"sqlite:///{workdir / 'search.db'}"
    spec = load_study_spec(None, {
        "name": "search-quality", "arch": "resnet20", "dataset": f"npz:{options.data}", "space": "divide",
        "budget_params": options.budget_params, "budget_mode": "fit", "epochs": options.search_epochs,
        "n_trials": options.trials, "sampler": "tpe", "pruner": "hyperband", "seed": 0,
        "base": {"train": {"batch_size": 128}},
    })
    print(f"torch {torch.__version__}; {spec.base.arch} on {options.data.name}, budget {options.budget_params} params; "
          f"search: {options.trials} trials x {options.search_epochs} epochs; confirm: top {options.top} + baselines "
          f"x {options.confirm_seeds} seeds; final: {options.final_seeds} seeds x {options.final_epochs} epochs",
          flush=True)

    started = time.perf_counter()
    execution = ExecutionOptions(runs_dir=workdir / "runs")
    study = run_study(spec, storage, execution, progress=False)
    search_minutes = (time.perf_counter() - started) / 60
    states = [trial.state.name.lower() for trial in study.trials]
    print(f"search: {states.count('complete')} complete, {states.count('pruned')} pruned "
          f"in {search_minutes:.1f} min", flush=True)

    started = time.perf_counter()
    confirmed = confirm_study(study, Store(storage), options.top, options.confirm_seeds, execution, progress=False)
    confirm_minutes = (time.perf_counter() - started) / 60
    print(f"confirmation: {sum(len(summary.accuracies) for summary in confirmed)} runs in {confirm_minutes:.1f} min")
    trials = study.get_trials(deepcopy=False)
    for summary in confirmed:
        label = summary.baseline or f"searched #{summary.trial_number}"
        search = "pruned" if summary.search_accuracy is None else f"{summary.search_accuracy:.2%}"
        print(f"  {label:<16} {_describe(trials[summary.trial_number])}: search {search}, confirmed "
              f"{summary.mean:.2%} +- {100 * (summary.sd or 0):.2f} over seeds {list(summary.seeds)}")
    print(f"verdict (confirm, on the study's objective {','.join(spec.objectives)}):")
    print("\n".join(f"  {line}" for line in verdict_lines(load_verdicts(study))))

    best = confirmed[0]
    finalists = {"confirmed best": trials[best.trial_number]}
    for label in BASELINE_LABELS:
        finalists[label] = next(trial for trial in trials if TrialRecord.from_trial(trial).baseline == label)
    started = time.perf_counter()
    # Keyed by trial: where the confirmed best is a baseline, its final runs serve both rows.
    jobs = {(trial.number, seed): (TrialRecord.from_trial(trial).config.to_dict(), seed, options.final_epochs)
            for trial in finalists.values() for seed in range(options.final_seeds)}
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        futures = {key: pool.submit(final_training, *arguments) for key, arguments in jobs.items()}
        accuracies = {key: future.result() for key, future in futures.items()}
    final_minutes = (time.perf_counter() - started) / 60

    print(f"\nfinal trainings ({options.final_epochs} epochs on all {dataset_info(spec.base.dataset).train_images:,} "
          f"training images, seeds 0..{options.final_seeds - 1}; test accuracy) in {final_minutes:.1f} min")
    print(f"{'':<16}{'split':<40}{'params':>8}{'test mean':>11}{'sd':>6}   runs")
    means = {}
    for label, trial in finalists.items():
        runs = [accuracies[(trial.number, seed)] for seed in range(options.final_seeds)]
        means[label] = statistics.mean(runs)
        sd = statistics.stdev(runs) if len(runs) > 1 else 0.0
        print(f"{label:<16}{_describe(trial):<40}{format_count(TrialRecord.from_trial(trial).params):>8}"
              f"{means[label]:>11.2%}{100 * sd:>6.2f}   {', '.join(f'{run:.2%}' for run in runs)}")
    by_seed = {label: {seed: accuracies[(trial.number, seed)] for seed in range(options.final_seeds)}
               for label, trial in finalists.items()}
    final = [paired_verdict(label, best.trial_number, finalists[label].number, by_seed["confirmed best"],
                            by_seed[label]) for label in BASELINE_LABELS]
    print("verdict (final test accuracy, paired by seed):")
    print("\n".join(f"  {line}" for line in verdict_lines(final)))
    gain = 100 * (means["confirmed best"] - means["undivided"])
    versus_s2 = 100 * (means["confirmed best"] - means["paper S=2"])
    print(f"\nconfirmed best - undivided: {gain:+.2f} points (aim: >= +1); "
          f"confirmed best - paper S=2: {versus_s2:+.2f} points (aim: >= 0)")
    total = search_minutes + confirm_minutes + final_minutes
    print(f"wall time: search {search_minutes:.1f} + confirmation {confirm_minutes:.1f} + final {final_minutes:.1f} "
          f"= {total:.1f} min; study kept in {storage}")


def _describe(trial) -> str:  # noqa: ANN001
    from splitsearch.search.record import TrialRecord

    config = TrialRecord.from_trial(trial).config
    text = f"S={config.S} w={config.width_mult:.3g}"
    if config.S > 1:
        text += f" wd={config.wd_rule} lam={config.lambda_cot:.2f}"
    return text


if __name__ == "__main__":
    main()
