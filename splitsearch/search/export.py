"""Hand the best candidate of a study back as a YAML that ``splitsearch train`` retrains.

"Best" is only as good as its verdict: a pick the confirmation found not distinguishable from
the undivided network is exported with that verdict in its provenance (and in ``export``'s
message), so nobody divides a network for nothing.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any, Sequence

import optuna

from splitsearch.config import dump_yaml
from splitsearch.search.confirm import ConfirmedCandidate, confirmed_pick, load_verdicts, pick_metric
from splitsearch.search.record import StudyRecord, TrialRecord, trial_accuracy
from splitsearch.search.verdict import Verdict
from splitsearch.errors import SplitsearchError

PICKS = ("max-accuracy", "min-cost", "knee")


class ExportError(SplitsearchError, ValueError):
    """Nothing can be exported (no finished trial, unknown pick)."""


def pick_trial(study: optuna.Study, pick: str = "max-accuracy",
               confirmed: Sequence[ConfirmedCandidate] = ()) -> optuna.trial.FrozenTrial:
    """The trial to export.

    Single objective: the candidate with the best confirmed mean (accuracy, or NLL in an ``nll``
    study) where ``confirmed``
    (:func:`splitsearch.search.confirm.summarize`) holds any; else, for a greedy block-wise study
    (:mod:`splitsearch.search.greedy`), the network the procedure chose (the most split within its
    accuracy threshold, not the most accurate); else the best trial of the search.
    Multi-objective (accuracy, cost): among the Pareto front, ``max-accuracy``, ``min-cost``
    (fewest params or MACs, least activation memory or latency), or ``knee`` (closest to the ideal point after scaling both
    objectives to [0, 1] over the front); confirmations do not change a Pareto pick.
    """
    if pick not in PICKS:
        raise ExportError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no completed trial yet")
    if len(study.directions) == 1:
        if (best := confirmed_pick(confirmed, pick_metric(study))) is not None:
            return study.get_trials(deepcopy=False)[best.trial_number]
        if (greedy := StudyRecord.from_study(study).greedy_result) is not None:
            return study.get_trials(deepcopy=False)[greedy.trial]
        return study.best_trial
    front = study.best_trials
    if pick == "max-accuracy":
        return max(front, key=lambda trial: (trial.values[0], -trial.values[1]))
    if pick == "min-cost":
        return min(front, key=lambda trial: (trial.values[1], -trial.values[0]))
    return min(front, key=lambda trial: _distance_to_ideal(trial, front))


def _distance_to_ideal(trial: optuna.trial.FrozenTrial, front: list[optuna.trial.FrozenTrial]) -> float:
    accuracies = [t.values[0] for t in front]
    costs = [t.values[1] for t in front]

    def scaled(value: float, values: list[float]) -> float:
        span = max(values) - min(values)
        return 0.0 if span == 0 else (value - min(values)) / span

    return math.hypot(1 - scaled(trial.values[0], accuracies), scaled(trial.values[1], costs))


def verdicts_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> list[Verdict]:
    """The verdicts ``confirm`` recorded for ``trial`` as the pick (empty when it is not the confirmed pick)."""
    return [verdict for verdict in load_verdicts(study) if verdict.pick_trial == trial.number]


def exported_document(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                      confirmed: ConfirmedCandidate | None = None) -> dict[str, Any]:
    """The config of ``trial`` plus where it came from (``provenance``), its verdict and what it costs.

    ``provenance.verdict`` holds, per baseline, the pick's paired comparison (outcome, mean
    difference, 95 % interval, the sentence); an empty list when the pick was not confirmed
    against the baselines.
    """
    record = TrialRecord.from_trial(trial)
    provenance = {
        "study": study.study_name,
        "trial": trial.number,
        "val_accuracy": trial_accuracy(trial),
        "val_standard_error": record.val_standard_error,
        "val_nll": record.val_nll,
        "val_ece": record.val_ece,
        "val_brier": record.val_brier,
        "member_val_calibration": None if record.member_val_calibration is None else dict(record.member_val_calibration),
        "baseline": record.baseline,
        "verdict": [_verdict_row(verdict) for verdict in verdicts_of(study, trial)],
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if confirmed is not None:
        provenance["confirmed"] = {"mean_val_accuracy": confirmed.mean, "sd": confirmed.sd,
                                   "seeds": list(confirmed.seeds), "val_accuracies": list(confirmed.accuracies),
                                   "mean_val_nll": confirmed.mean_of("nll"), "mean_val_ece": confirmed.mean_of("ece")}
    cost = {key: getattr(record, key) for key in ("params", "macs", "flops", "activation_bytes", "width_step")}
    if record.latency_seconds is not None:  # measured where the study measures latency, on its worker's device
        cost |= {"latency_seconds": record.latency_seconds, "latency_iqr_seconds": record.latency_iqr_seconds,
                 "latency_execution": record.latency_execution,
                 "latency_batch_size": StudyRecord.from_study(study).latency_batch_size}
    return {**record.config.to_dict(), "provenance": provenance, "cost": cost}


def _verdict_row(verdict: Verdict) -> dict[str, Any]:
    return {"baseline": verdict.baseline, "metric": verdict.metric, "outcome": verdict.outcome,
            "difference": verdict.mean, "standard_error": verdict.standard_error, "ci95": [verdict.low, verdict.high],
            "seeds": list(verdict.seeds), "seeds_to_resolve": verdict.seeds_needed, "sentence": verdict.sentence()}


def export_best(study: optuna.Study, path: str | Path, pick: str = "max-accuracy",
                confirmed: Sequence[ConfirmedCandidate] = ()) -> optuna.trial.FrozenTrial:
    """Write the picked trial's config YAML to ``path`` (see :func:`pick_trial`); returns the trial."""
    trial = pick_trial(study, pick, confirmed)
    summary = next((summary for summary in confirmed if summary.trial_number == trial.number), None)
    Path(path).write_text(dump_yaml(exported_document(study, trial, summary)))
    return trial
