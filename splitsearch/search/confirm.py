"""Confirm a study's best candidates over seeds before calling one of them better.

Validation accuracy on a few hundred images carries a standard error of 2-2.5 points, so the
best of many trials is biased upwards: the winner is partly the luckiest draw.
:func:`confirm_study` retrains the study's top K distinct candidates and its baselines with R
further seeds and records every run in the store (one row per candidate and seed).  A seed
changes the initialisation, the augmentation draws and the validation split, so the mean over
seeds estimates how good a candidate is and their spread says how sure that estimate is.  The
search's own run of a candidate is left out of the mean: it is the run the candidate was
selected on.

The confirmation seeds are the search's seed + 1 .. + R, so they never repeat the selection
run, and confirming again with more seeds adds to the runs already recorded.  Finished runs are
never repeated; a run cut off by a crash or Ctrl-C continues from its checkpoint.  Runs train in
process groups as a search's trials do (``execution.nproc_per_trial``), on ranks kept across
the runs (:class:`~splitsearch.train.pool.RankPool`).

Every candidate shares its seeds with the baselines, so the pick is compared with each baseline
seed by seed (:mod:`splitsearch.search.verdict`): :func:`study_verdicts` says whether it is
better, worse or not distinguishable, and :func:`record_verdicts` keeps that in the study for
``export``, the report and optuna-dashboard.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from splitsearch.config import SplitConfig
from splitsearch.data import DataCache
from splitsearch.metrics import TrainResult
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.record import StudyRecord, TrialRecord, trial_accuracy
from splitsearch.search.verdict import METRICS, Verdict, paired_verdict
from splitsearch.stats import mean_and_sd
from splitsearch.store import ConfirmationRecord, Store
from splitsearch.store.records import epoch_calibration
from splitsearch.train.loop import Trainer
from splitsearch.train.plan import train_on
from splitsearch.train.pool import RankPool


@dataclass(frozen=True)
class ConfirmedCandidate:
    """A candidate's confirmation runs, summarised.

    Attributes:
        trial_number: the trial whose config was retrained.
        baseline: its baseline label (``undivided``, ``paper S=2`` ...) or None.
        search_accuracy: the validation accuracy it reached in the search (None if it did not
            complete there, e.g. a pruned baseline).
        seeds, accuracies: the confirmation runs that completed.
        nlls, eces: their validation NLL and ECE (None for a run recorded before calibration was).
    """

    trial_number: int
    config_hash: str
    baseline: str | None
    search_accuracy: float | None
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]
    nlls: tuple[float | None, ...] = ()
    eces: tuple[float | None, ...] = ()

    @property
    def mean(self) -> float:
        return mean_and_sd(self.accuracies)[0]

    @property
    def sd(self) -> float | None:
        return mean_and_sd(self.accuracies)[1]

    def by_seed(self, metric: str = "accuracy") -> dict[int, float]:
        """The runs' ``metric`` (``accuracy``, ``nll`` or ``ece``) by seed, runs that did not measure it left out."""
        values = {"accuracy": self.accuracies, "nll": self.nlls, "ece": self.eces}[metric]
        return {seed: value for seed, value in zip(self.seeds, values) if value is not None}

    def mean_of(self, metric: str) -> float | None:
        """The mean of ``metric`` over the runs that measured it (None when none did)."""
        values = list(self.by_seed(metric).values())
        return mean_and_sd(values)[0] if values else None


def confirmation_targets(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The top ``top`` completed trials with distinct configs, by the first objective, then the baselines.

    Baselines are included whatever the search did with them (a pruned baseline is still the
    yardstick); one rejected as over budget is not, as it was never trainable.
    """
    if top < 0:
        raise ValueError(f"--top must be >= 0, got {top}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    ranked = sorted(complete, key=lambda trial: (sign * trial.values[0], trial.number))
    targets: dict[str, FrozenTrial] = {}
    for trial in ranked:
        if len(targets) == top:
            break
        targets.setdefault(TrialRecord.from_trial(trial).config_hash, trial)
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(trial)
        if record.is_baseline and record.config is not None and not record.over_budget:
            targets.setdefault(record.config_hash, trial)
    return list(targets.values())


def confirmation_seeds(config: SplitConfig, count: int) -> list[int]:
    """The seeds of ``count`` confirmation runs: the search's seed + 1 .. + count."""
    if count < 1:
        raise ValueError(f"--seeds must be at least 1, got {count}")
    return [config.train.seed + offset for offset in range(1, count + 1)]


def confirm_study(study: optuna.Study, store: Store, top: int = 3, seeds: int = 3,
                  execution: ExecutionOptions = ExecutionOptions(), data: DataCache | None = None,
                  progress: bool = True,
                  on_run: Callable[[FrozenTrial, int, TrainResult | Exception], None] | None = None
                  ) -> list[ConfirmedCandidate]:
    """Retrain the study's top ``top`` candidates and its baselines with ``seeds`` more seeds each.

    Args:
        study: a finished (or running) study; its trials hold their configs as user attrs.
        store: where each run is recorded (the study's own database).
        execution: device, mode and processes of the runs (as a search's trials); checkpoints of
            unfinished runs go to ``execution.runs_dir/<study>/confirm-<trial>-seed<seed>`` and are
            deleted when a run completes.
        data: the dataset cache to share with other work (one is made from ``execution`` if not given).
        on_run: called after each run with the trial, the seed and the result, or the exception
            that made the run fail.

    Returns:
        The summaries of every confirmed candidate, best confirmed mean first.  The verdicts of
        the pick against the baselines are recorded in the study (:func:`record_verdicts`;
        :func:`load_verdicts` reads them).

    A run that raises an ordinary exception (a candidate that does not fit in memory, a
    non-finite loss) is recorded as failed and the others go on; Ctrl-C stops everything, and
    the same call continues later.
    """
    data = data or execution.data_cache()
    done = {(row.trial_number, row.seed) for row in store.confirmations(study.study_name) if row.state == "complete"}
    with RankPool(execution.nproc_per_trial, execution.device) as pool:
        for trial in confirmation_targets(study, top):
            config = TrialRecord.from_trial(trial).config
            for seed in confirmation_seeds(config, seeds):
                if (trial.number, seed) in done:
                    continue
                outcome = _confirm_one(study.study_name, trial, config, seed, store, execution, data, progress, pool)
                if on_run is not None:
                    on_run(trial, seed, outcome)
    summaries = summarize(study, store.confirmations(study.study_name))
    record_verdicts(study, study_verdicts(summaries, pick_metric(study)))
    return summaries


def _confirm_one(study_name: str, trial: FrozenTrial, config: SplitConfig, seed: int, store: Store,
                 execution: ExecutionOptions, data: DataCache, progress: bool, pool: RankPool
                 ) -> TrainResult | Exception:
    """One confirmation run, here or on ``pool``'s ranks; its result, or the exception it failed with."""
    config = config.replace(train=dataclasses.replace(config.train, seed=seed))
    baseline = TrialRecord.from_trial(trial).baseline
    row = store.start_confirmation(study_name, trial.number, config, baseline)
    out_dir = Path(execution.runs_dir) / study_name / f"confirm-{trial.number}-seed{seed}"
    try:
        if (processes := execution.trial_processes(config)) > 1:
            result = train_on(pool, processes, execution.train_request(config, out_dir, resume=True)).result
        else:
            trainer = Trainer(config, data.get(config.dataset, config.train, config.crop), execution.device, out_dir,
                              execution.mode, progress=progress)
            result = trainer.fit(resume=True, test=False)
    except Exception as error:  # noqa: BLE001 - a failed run is data; the next one goes on
        store.finish_confirmation(row, "failed")
        return error
    except BaseException:
        store.finish_confirmation(row, "failed")
        raise
    store.finish_confirmation(row, "complete", val_accuracy=result.val_accuracy,
                              val_standard_error=result.val_standard_error, val_samples=result.val_samples,
                              member_val_accuracies=result.history[-1].val_member_accuracies,
                              wall_seconds=result.wall_seconds, **epoch_calibration(result.history[-1]))
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def summarize(study: optuna.Study, rows: list[ConfirmationRecord]) -> list[ConfirmedCandidate]:
    """Group the complete confirmation runs by trial; best confirmed mean first."""
    by_trial: dict[int, list[ConfirmationRecord]] = {}
    for row in rows:
        if row.state == "complete" and row.val_accuracy is not None:
            by_trial.setdefault(row.trial_number, []).append(row)
    summaries = []
    for number, runs in by_trial.items():
        trial = study.get_trials(deepcopy=False)[number]
        summaries.append(ConfirmedCandidate(
            trial_number=number,
            config_hash=runs[0].config_hash,
            baseline=runs[0].baseline,
            search_accuracy=trial_accuracy(trial) if trial.state == TrialState.COMPLETE else None,
            seeds=tuple(run.seed for run in runs),
            accuracies=tuple(run.val_accuracy for run in runs),
            nlls=tuple(run.val_nll for run in runs),
            eces=tuple(run.val_ece for run in runs),
        ))
    return sorted(summaries, key=lambda summary: (-summary.mean, summary.trial_number))


def pick_metric(study: optuna.Study) -> str:
    """What a confirmed pick is chosen on: the study's objective where it is one alone (accuracy or nll)."""
    objectives = StudyRecord.from_study(study).objectives or ("accuracy",)
    return objectives[0] if len(objectives) == 1 and objectives[0] in METRICS else "accuracy"


def confirmed_pick(summaries: Sequence[ConfirmedCandidate], metric: str = "accuracy") -> ConfirmedCandidate | None:
    """The confirmed candidate with the best mean ``metric`` (ties: the earlier trial); None without any."""
    sign = 1 if METRICS[metric].higher_is_better else -1
    measured = [summary for summary in summaries if summary.mean_of(metric) is not None]
    if not measured:
        return None
    return max(measured, key=lambda summary: (sign * summary.mean_of(metric), -summary.trial_number))


def study_verdicts(summaries: Sequence[ConfirmedCandidate], metric: str = "accuracy",
                   calibration: bool = True) -> list[Verdict]:
    """The confirmed pick (best mean ``metric``) against every confirmed baseline, paired by seed.

    On ``metric``, on accuracy (what a user compares, also in an ``nll`` study), then, with
    ``calibration``, on the ECE where the runs measured it (is the pick better calibrated?).
    Empty when nothing is confirmed.
    """
    pick = confirmed_pick(summaries, metric)
    if pick is None:
        return []
    baselines = sorted((summary for summary in summaries if summary.baseline), key=lambda summary: summary.baseline)
    metrics = list(dict.fromkeys([metric, "accuracy"] + (["ece"] if calibration and pick.by_seed("ece") else [])))
    return [paired_verdict(baseline.baseline, pick.trial_number, baseline.trial_number, pick.by_seed(name),
                           baseline.by_seed(name), name)
            for name in metrics for baseline in baselines]


def load_verdicts(study: optuna.Study) -> list[Verdict]:
    """The verdicts ``confirm`` recorded in the study (empty before it ran)."""
    return [Verdict.from_dict(row) for row in StudyRecord.from_study(study).verdicts or ()]


def record_verdicts(study: optuna.Study, verdicts: Sequence[Verdict]) -> None:
    """Keep the verdicts in the study: its user attributes (read by ``export`` and the report) and a
    note optuna-dashboard shows on the study's page."""
    StudyRecord(verdicts=tuple(verdict.to_dict() for verdict in verdicts)).write_to(study)
    if verdicts:
        from optuna_dashboard import save_note

        lines = ["## Verdict of the confirmed pick", "",
                 f"Trial {verdicts[0].pick_trial}, paired by seed against each baseline "
                 "(95 % intervals from the t-distribution):", ""]
        lines += [f"- **{verdict.baseline}**: {verdict.sentence()}" for verdict in verdicts]
        save_note(study, "\n".join(lines))
