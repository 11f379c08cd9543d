"""What each figure of the report shows, worked out from the study without drawing anything.

Every figure of :mod:`splitsearch.report` is a data function here and a drawing function in
:mod:`.draw`, as Optuna's own plots split ``_get_*_info`` from ``_get_*_plot``: what a figure
says can then be tested without plotly (this module does not import it).  A data function that
has nothing to show for a study raises :class:`NothingToDraw`, whose message takes the figure's
place in the page.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from splitsearch.search.confirm import ConfirmedCandidate, load_verdicts
from splitsearch.search.pruning import KNOWN_COSTS, epoch_accuracies
from splitsearch.search.record import (
    StudyRecord,
    TrialRecord,
    count_trials,
    format_cost,
    front_hypervolume,
    hypervolume_text,
    pareto_front,
    trial_accuracy,
)
from splitsearch.units import format_bytes, format_count, format_duration

ACCURACY = "validation accuracy"
COST_LABELS = {"params": "parameters", "macs": "MACs", "activation": "activation bytes per image",
               "latency": "latency (ms)"}
# The costs a trial's hover text and the best-trial line show (TrialRecord fields).
_TRIAL_COSTS = {"params": "parameters", "macs": "MACs"}


class NothingToDraw(Exception):
    """A figure has nothing to show for this study yet; the message says why, for the reader."""


@dataclass(frozen=True)
class Point:
    """One trial in a scatter: its cost (x), accuracy (y), standard error and hover lines."""

    trial: int
    x: float
    y: float
    error: float
    hover: tuple[str, ...]


@dataclass(frozen=True)
class Series:
    """Points drawn alike: ``kind`` is ``searched``, ``pareto``, ``pruned`` or ``baseline`` (one series per baseline)."""

    name: str
    kind: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class AccuracyVsCost:
    """The accuracy-vs-parameters figure: its series, and the budget line where the study has one."""

    series: tuple[Series, ...]
    budget: int | None


@dataclass(frozen=True)
class Hypervolume:
    """The share of the accuracy-cost box a Pareto front dominates, and the reference point's cost."""

    value: float
    reference: float
    text: str


@dataclass(frozen=True)
class Confirmed:
    """Confirmed candidates, best mean first: the mean and sd over new seeds beside the search's figure."""

    labels: tuple[str, ...]
    means: tuple[float, ...]
    sds: tuple[float, ...]
    runs: tuple[str, ...]
    search: tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class Strip:
    """Accuracy per value of one choice: every trial's (category, accuracy, hover lines)."""

    param: str
    categories: tuple[str, ...]
    points: tuple[tuple[str, float, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Curve:
    """One trial's validation accuracy by epoch, and whether the pruner stopped it there."""

    trial: int
    epochs: tuple[int, ...]
    accuracies: tuple[float, ...]
    pruned: bool


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# -- figures ----------------------------------------------------------------------------------------

def accuracy_vs_params(study: optuna.Study) -> AccuracyVsCost:
    """What accuracy each parameter count buys, against the budget and the baselines.

    The point of splitting is a better accuracy for the same (or a smaller) size, so each
    baseline (undivided network, the paper's S=2 and S=4, and their tuned retrainings) is a
    series of its own, named in the legend: they sit within a few thousand parameters of one
    another, where labels printed beside the points would cover each other.  A multi-objective
    study's Pareto front is a series apart.
    """
    trials = [trial for trial in completed(study) if count(trial, "params") is not None]
    if not trials:
        raise NothingToDraw("No completed trial recorded its parameter count (user attr 'params').")
    params = functools.partial(count, key="params")
    front = {trial.number for trial in pareto_front(study)} if is_multi_objective(study) else set()
    searched = [trial for trial in trials if not TrialRecord.from_trial(trial).is_baseline]
    series = [Series("searched trials", "searched", points([t for t in searched if t.number not in front], params)),
              Series("Pareto front", "pareto", points([t for t in searched if t.number in front], params))]
    series += baseline_series([trial for trial in trials if TrialRecord.from_trial(trial).is_baseline], params)
    return AccuracyVsCost(tuple(s for s in series if s.points), StudyRecord.from_study(study).budget_params)


def baseline_series(baselines: Sequence[FrozenTrial], cost: Callable[[FrozenTrial], float]) -> list[Series]:
    """One series per baseline, in the order they were trained."""
    return [Series(TrialRecord.from_trial(trial).baseline or f"baseline #{trial.number}", "baseline",
                   points([trial], cost)) for trial in baselines]


def pareto_baselines(study: optuna.Study) -> list[Series]:
    """The baselines at (the study's cost objective, accuracy), for the Pareto-front figure."""
    return baseline_series([trial for trial in completed(study) if TrialRecord.from_trial(trial).is_baseline],
                           lambda trial: trial.values[1])


def pareto_pruned(study: optuna.Study) -> Series:
    """The trials the Pareto pruner stopped, at (their known cost, their accuracy when stopped).

    Drawn apart from the front: their accuracy is an early epoch's, not a finished candidate's,
    so they show what the pruner gave up, not points the front could hold.  Trials refused over
    budget were never trained and are not here.
    """
    objectives = StudyRecord.from_study(study).objectives or ()
    cost = KNOWN_COSTS.get(objectives[1]) if len(objectives) > 1 else None
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        record = TrialRecord.from_trial(trial)
        stopped_at = epoch_accuracies(record).get(record.pruned_at_epoch)
        if cost is None or stopped_at is None or (value := cost(record)) is None:
            continue
        hover = (*describe(trial), f"stopped after epoch {record.pruned_at_epoch}: {record.pruned_reason}")
        found.append(Point(trial.number, value, stopped_at, standard_error(trial), hover))
    return Series("pruned (accuracy when stopped)", "pruned", tuple(found))


def epoch_curves(study: optuna.Study) -> tuple[Curve, ...]:
    """A multi-objective study's accuracy curves, from the trials' records (Optuna keeps no intermediate
    values for such trials): what the Pareto pruner saw when it stopped a trial."""
    curves = []
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(trial)
        if by_epoch := sorted(epoch_accuracies(record).items()):
            epochs, accuracies = zip(*by_epoch)
            curves.append(Curve(trial.number, epochs, accuracies, record.pruned_at_epoch is not None))
    if not curves:
        raise NothingToDraw("No trial recorded its validation accuracy by epoch yet.")
    return tuple(curves)


def points(trials: Sequence[FrozenTrial], cost: Callable[[FrozenTrial], float]) -> tuple[Point, ...]:
    """Trials at (``cost``, accuracy); the error is the accuracy's binomial standard error on the validation split."""
    return tuple(Point(trial.number, cost(trial), accuracy(trial), standard_error(trial), describe(trial))
                 for trial in trials)


def hypervolume(study: optuna.Study) -> Hypervolume:
    """The front in one figure (:func:`~splitsearch.search.record.front_hypervolume`), with its reference in words."""
    completed(study)  # nothing to draw without a completed trial
    value, reference = front_hypervolume(study)
    objectives = StudyRecord.from_study(study).objectives or ()
    # The label says "latency (ms)" already.
    cost_text = f"{reference:.3g}" if objectives[1:] == ("latency",) else format_cost(objectives[1], reference)
    return Hypervolume(value, reference, hypervolume_text(value, f"{cost_text} {cost_label(study)}"))


def confirmed_accuracy(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> Confirmed:
    """Each confirmed candidate's mean accuracy over new seeds (sd) beside its search result (SE).

    The search's figure is the best of many noisy draws; the confirmed mean is what the
    candidate is worth.  The export picks by the confirmed mean.
    """
    if not confirmed:
        raise NothingToDraw(f"No confirmation runs yet: splitsearch confirm --study {study.study_name} retrains the "
                            "best candidates and the baselines with other seeds.")
    trials = study.get_trials(deepcopy=False)
    labels = tuple(f"#{summary.trial_number} {summary.baseline or split(trials[summary.trial_number])}"
                   for summary in confirmed)
    runs = tuple(f"{len(summary.accuracies)} runs, seeds {', '.join(map(str, summary.seeds))}: "
                 + ", ".join(f"{value:.4f}" for value in summary.accuracies) for summary in confirmed)
    search = tuple((label, summary.search_accuracy, standard_error(trials[summary.trial_number]))
                   for label, summary in zip(labels, confirmed) if summary.search_accuracy is not None)
    return Confirmed(labels, tuple(summary.mean for summary in confirmed),
                     tuple(summary.sd or 0.0 for summary in confirmed), runs, search)


def accuracy_by(study: optuna.Study, param: str) -> Strip:
    """The spread of accuracy for each value of one choice (S, the weight-decay rule, G).

    Every trial is a point, so a value tried once is not mistaken for a trend.
    """
    trials = [trial for trial in completed(study) if param in trial.params]
    if not trials:
        raise NothingToDraw(f"No completed trial has the parameter {param}.")
    categories = tuple(str(value) for value in sorted({trial.params[param] for trial in trials}, key=_sort_key))
    return Strip(param, categories,
                 tuple((str(trial.params[param]), accuracy(trial), describe(trial)) for trial in trials))


def class_groups(study: optuna.Study) -> Table:
    """Which classes each branch of a semantic split learned to take, best trials first."""
    trials = sorted((trial for trial in completed(study) if TrialRecord.from_trial(trial).class_groups),
                    key=accuracy, reverse=True)
    if not trials:
        raise NothingToDraw("No completed trial with a semantic split (groups > 1) yet.")
    rows = tuple((f"#{trial.number}", f"{accuracy(trial):.4f}", split(trial), str(member), groups)
                 for trial in trials
                 for member, groups in enumerate(TrialRecord.from_trial(trial).class_groups, start=1))
    return Table(("trial", ACCURACY, "split", "member", "class groups (branch | branch ...)"), rows)


def verdict_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per verdict ``confirm`` recorded: baseline, metric, outcome, difference, interval, seeds, sentence.

    The page shows them as a table above the figures: before anyone reads a scatter plot, it says
    whether the confirmed pick beats the baselines (:mod:`splitsearch.search.verdict`).
    """
    return [{"pick": verdict.pick_trial, "baseline": verdict.baseline, "metric": verdict.metric,
             "outcome": verdict.outcome, "difference": verdict.mean, "low": verdict.low, "high": verdict.high,
             "seeds": len(verdict.seeds), "seeds_to_resolve": verdict.seeds_needed, "sentence": verdict.sentence()}
            for verdict in load_verdicts(study)]


def calibration_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Per completed trial that measured its calibration: the ensemble's and the members' accuracy and ECE.

    Shows whether a split's ensemble is better calibrated than its members, or than the undivided
    network, at the accuracy it reaches.
    """
    points = []
    for trial in completed(study):
        record = TrialRecord.from_trial(trial)
        if record.val_ece is None:
            continue
        points.append({"trial": trial.number, "label": record.baseline or f"trial {trial.number}",
                       "accuracy": accuracy(trial), "ece": record.val_ece, "nll": record.val_nll,
                       "member_accuracies": list(record.member_val_accuracies or ()),
                       "member_eces": list((record.member_val_calibration or {}).get("ece", ()))})
    if not points:
        raise NothingToDraw("No completed trial recorded its calibration (trials record it since ECE is measured).")
    return points


def summary_lines(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> list[str]:
    """The page's head lines: objectives, trials by state, best result, confirmed pick and budget."""
    verbs = {StudyDirection.MAXIMIZE: "maximise", StudyDirection.MINIMIZE: "minimise"}
    names = [ACCURACY, *([cost_label(study)] if is_multi_objective(study) else [])]
    return [
        "Objectives: " + ", ".join(f"{verbs[direction]} {name}" for direction, name in zip(study.directions, names)),
        f"Trials: {_trial_counts(study)}",
        _best_line(study),
        *([_confirmed_line(confirmed[0])] if confirmed else []),
        f"Budget: {_budget(study)}",
    ]


def _trial_counts(study: optuna.Study) -> str:
    """``12: 7 complete, 4 pruned (2 over budget), 1 failed; 2 repeats (...)``: where the search's time went.

    The repeats are always named, none included: proposals the search spent on known candidates.
    """
    counts = count_trials(study)
    if not counts.total:
        return "none yet"
    pruned = "pruned" + (f" ({counts.over_budget} over budget)" if counts.over_budget else "")
    parts = [(counts.complete, "complete"), (counts.pruned, pruned), (counts.failed + counts.interrupted, "failed"),
             (counts.running, "running"), (counts.waiting, "waiting")]
    repeats = (f"{counts.repeats} repeat{'' if counts.repeats == 1 else 's'} (proposals of a candidate the study "
               "had finished: answered from its result, not trained, not counted toward n_trials)")
    return f"{counts.total}: {', '.join(f'{count} {label}' for count, label in parts if count)}; {repeats}"


def _best_line(study: optuna.Study) -> str:
    """The best trial of a single-objective study, or the size of a multi-objective study's front."""
    if is_multi_objective(study):
        front = sorted(trial.number for trial in pareto_front(study))
        if not front:
            return "Pareto front: 0 trials"
        return f"Pareto front: {len(front)} trials (#{', #'.join(map(str, front))}); {hypervolume(study).text}"
    try:
        best = study.best_trial
    except ValueError:
        return "Best trial: none completed yet"
    costs = [f"{format_count(value)} {label}" for key, label in _TRIAL_COSTS.items()
             if (value := count(best, key)) is not None]
    costs += [latency_text] if (latency_text := latency(best)) else []
    return ", ".join([f"Best trial #{best.number}: {ACCURACY} {accuracy(best):.4f}", *costs, split(best)])


def _confirmed_line(best: ConfirmedCandidate) -> str:
    """The best confirmed mean: the pick ``export`` makes, beside the search's biased maximum."""
    label = best.baseline or "searched"
    spread = f" +- {best.sd:.4f}" if best.sd is not None else ""
    return (f"Confirmed best #{best.trial_number} ({label}): {ACCURACY} {best.mean:.4f}{spread} over "
            f"{len(best.seeds)} new seed{'s' if len(best.seeds) > 1 else ''} (export picks this one)")


def _budget(study: optuna.Study) -> str:
    """The search's budget as the study recorded it, or ``none``."""
    record = StudyRecord.from_study(study)
    parts = [f"{format_count(budget)} {label}" for budget, label in
             ((record.budget_params, "parameters"), (record.budget_macs, "MACs")) if budget]
    if record.budget_activation:
        parts.append(f"{format_bytes(record.budget_activation)} of activations per image")
    if record.budget_latency:
        parts.append(f"{format_duration(record.budget_latency)} of latency per forward pass of "
                     f"{record.latency_batch_size or 1} image{'' if record.latency_batch_size in (None, 1) else 's'} "
                     "(checked before training, never fitted)")
    if not parts:
        return "none"
    modes = {"fit": "widths fitted to the budget", "reject": "over-budget candidates pruned before training"}
    mode = record.budget_mode
    return ", ".join(parts) + (f" ({modes.get(mode, mode)})" if mode else "")


# -- a trial in words -------------------------------------------------------------------------------

def describe(trial: FrozenTrial) -> tuple[str, ...]:
    """A trial's hover lines: its number, baseline name, split, cost and members' accuracies."""
    record = TrialRecord.from_trial(trial)
    lines = [f"trial #{trial.number}"]
    if record.baseline:
        lines.append(f"baseline: {record.baseline}")
    lines.append(split(trial))
    lines += [f"{format_count(value)} {label}" for key, label in _TRIAL_COSTS.items()
              if (value := count(trial, key)) is not None]
    if latency_text := latency(trial):
        lines.append(latency_text)
    if text := execution(trial):
        lines.append(text)
    if record.width_step is not None:
        lines.append(f"width step {record.width_step:g}")
    if record.member_val_accuracies:
        lines.append("members: " + ", ".join(f"{value:.3f}" for value in record.member_val_accuracies))
    lines += [f"class groups: {groups}" for groups in record.class_groups or ()]
    return tuple(lines)


def split(trial: FrozenTrial) -> str:
    """``S=2, block factors 1,2,2, wd_rule=linear, λ_cot=0.5``: the parts of the split that were chosen."""
    params = trial.params
    factors = sorted(
        (int(name.rpartition(".")[2]), value) for name, value in params.items()
        if name.startswith("block_factors.") and name.rpartition(".")[2].isdigit()
    )
    parts = [f"S={params['S']}"] if "S" in params else []
    if factors:
        parts.append("block factors " + ",".join(str(value) for _, value in factors))
    if "wd_rule" in params:
        parts.append(f"wd_rule={params['wd_rule']}")
    if "lambda_cot" in params:
        parts.append(f"λ_cot={params['lambda_cot']:g}")
    if params.get("groups", 1) > 1:
        parts.append(f"G={params['groups']} {params.get('split_depth', '')}".rstrip())
    return ", ".join(parts) or "split not searched"


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials, a searched candidate once: every figure of results needs at least one.

    A searched repeat (:attr:`TrialRecord.repeat_of`) is the same result drawn again and adds no
    point; a baseline that repeats a searched trial stays, as the baseline it is.  Optuna's own
    plots (history, importances, Pareto front) see every trial.
    """
    trials = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not _is_searched_repeat(TrialRecord.from_trial(trial))]
    if not trials:
        raise NothingToDraw("No completed trial yet.")
    return trials


def _is_searched_repeat(record: TrialRecord) -> bool:
    return record.is_repeat and not record.is_baseline


def accuracy(trial: FrozenTrial) -> float:
    """Validation accuracy: recorded beside the objectives (an ``nll`` study's value is the NLL)."""
    return trial_accuracy(trial)


def count(trial: FrozenTrial, key: str) -> int | None:
    """A positive cost the trial recorded (``params`` or ``macs``), or None where it did not."""
    value = getattr(TrialRecord.from_trial(trial), key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value)


def latency(trial: FrozenTrial) -> str | None:
    """``latency 2.31 ms (IQR 0.12 ms, sequential on cpu)``: where the study measured it, else None."""
    record = TrialRecord.from_trial(trial)
    if record.latency_seconds is None:
        return None
    spread = f"IQR {format_duration(record.latency_iqr_seconds)}, " if record.latency_iqr_seconds is not None else ""
    return f"latency {format_duration(record.latency_seconds)} ({spread}{record.latency_execution or 'measured'})"


def execution(trial: FrozenTrial) -> str | None:
    """``mode compiled-sequential (measured: sequential 392 ms, compiled-sequential 276 ms + 71 s compile a step)``.

    Where ``--mode auto`` measured (or found cached) the modes of the trial's candidate, else None.
    """
    record = TrialRecord.from_trial(trial)
    if record.execution_mode is None:
        return None
    choice = record.mode_choice or {}
    timings = ", ".join(
        f"{timing['mode']} {format_duration(timing['step_seconds'])}"
        + (f" + {format_duration(timing['compile_seconds'])} compile" if timing["compile_seconds"] else "")
        for timing in choice.get("timings", ()))
    source = "cached" if choice.get("cached") else "measured"
    return f"mode {record.execution_mode} ({source}: {timings} a step)" if timings else f"mode {record.execution_mode}"


def standard_error(trial: FrozenTrial) -> float:
    """The trial's validation standard error for an error bar, 0 where it was not recorded."""
    return TrialRecord.from_trial(trial).val_standard_error or 0.0


def cost_label(study: optuna.Study) -> str:
    """The second objective's name for axes and notes: ``parameters`` or ``MACs``."""
    objectives = StudyRecord.from_study(study).objectives or ()
    return COST_LABELS.get(objectives[1], objectives[1]) if len(objectives) > 1 else "cost"


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study trades accuracy against a cost (two directions) rather than maximising it."""
    return len(study.directions) > 1


def _sort_key(value: object) -> tuple[int, float | str]:
    """Numbers in numeric order (S = 2 before 10), then other choices in text order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))
