"""The trial record and the study record: splitsearch's facts in Optuna's user attributes, typed.

Optuna keeps a trial's params, values, intermediate values and state; splitsearch adds its own
facts as user attributes, which optuna-dashboard shows beside every trial.  This module is the
only place that names those attributes: every writer and reader goes through :class:`TrialRecord`
(one trial) and :class:`StudyRecord` (the study), whose fields are typed and whose keys are the
field names, so a misspelt key is an ``AttributeError`` here, not a silent ``None`` somewhere
else.  Optuna's own code keeps its attribute keys the same way, as constants behind accessors
(``optuna/study/_constrained_optimization.py``).

Which copy is authoritative for what:

* **Optuna's trial** (state, values, params and these attributes) is the record of the *search*:
  what was sampled and what it cost, how it ended (a failure and its reason, an interruption, a
  result reused from the store, a repeat of a finished trial, over budget), its labels
  (baseline, tuned from), and the summary figures the report, ``confirm`` and ``export`` read
  (the validation accuracy is the trial's value; its standard error, the members' accuracies
  and the class groups are here).
* **The store's rows** (:mod:`splitsearch.store`) are the record of *training*: every attempt of a
  candidate with its state, per-epoch metrics, retry links and timings, shared by all studies
  of a database so that a trained candidate is reused.  A figure held by both (a trial's final
  accuracy and its row's) is written from the same training result; for the search, Optuna's
  trial decides; for a candidate's training history and reuse, the row does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from splitsearch.config import SplitConfig
from splitsearch.units import format_bytes, format_count

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


class _HasUserAttrs(Protocol):
    """An ``optuna.Trial``, an ``optuna.trial.FrozenTrial`` or an ``optuna.Study``."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class TrialRecord:
    """What splitsearch knows of one trial beyond Optuna's own fields; ``None`` is "not recorded".

    Attributes:
        config: the candidate as trained (after fitting the width to a budget).
        config_hash: :meth:`SplitConfig.config_hash` of ``config`` (how the store finds a reusable result).
        params, macs, flops, activation_bytes, sequential_activation_bytes: the candidate's cost
            (all S members; activation memory per image, at once and branch by branch).
        width_mult, width_step: the fitted width and the relative step to the next wider one.
        baseline: the baseline label (``undivided``, ``paper S=2``, ``undivided (tuned)`` ...).
        tuned_from: for a tuned baseline, the searched trial whose training settings it took.
        worker: ``{"host", "pid"}`` of the worker process that ran the trial.
        failure: why the candidate failed (an exception's one-line text); never retried.
        over_budget, budget_excess, over_budget_reason: ``reject`` mode (or a latency budget):
            over the budget (untrained), by how much (the largest relative excess), and which
            budgets it broke, e.g. ``latency (batch 1, sequential on cpu) 2.1 ms over the budget of 1 us``.
        latency_seconds, latency_iqr_seconds, latency_runs, latency_execution: the candidate's
            forward latency measured before training (:mod:`splitsearch.cost.latency`), where the study
            measures it: the median, its interquartile range, the passes timed, and how the
            members ran (``sequential on cpu``).  A repeat carries its original trial's.
        execution_mode, mode_choice: the mode ``--mode auto`` trained the candidate in, and the
            choice in full (``{"mode", "cached", "steps", "timings": [{"mode", "step_seconds",
            "compile_seconds"}, ...]}``, :mod:`splitsearch.train.autotune`); unrecorded where the mode
            was asked for, or the trial was too short to measure.
        interrupted: stopped by Ctrl-C, SIGTERM or a dead worker (retried from its checkpoint).
        reused_from: ``study#trial`` of the stored result this trial reused instead of training.
        repeat_of: the trial of this study that had already finished this candidate (same config,
            dataset and epochs): this trial is a *repeat*, answered with that trial's stored result
            without training.  It completes with that value, so the sampler learns the point is
            known, but it is not a new candidate: :func:`count_trials` leaves it out of what
            ``n_trials`` counts.
        epoch_val_accuracies: the ensemble's validation accuracy after each epoch, by epoch (as text: a
            JSON key), in multi-objective studies, whose trials Optuna's ``report`` refuses: what the
            Pareto pruner reads (:mod:`splitsearch.search.pruning`).
        pruned_at_epoch: the epoch after which the Pareto pruner stopped the trial, with
            ``pruned_reason`` its standing there (``5 of 9 candidates rank before it at epoch 1, 3 continue``).
        member_val_accuracies, val_standard_error, val_samples, wall_seconds: the result's details.
        val_accuracy, val_nll, val_ece, val_brier: the ensemble's final validation accuracy and
            calibration (:mod:`splitsearch.train.calibration`; lower is better), whatever the
            study's objective (its value is the NLL in an ``nll`` study); ``member_val_calibration``
            the members' as ``{"nll": [...], "ece": [...], "brier": [...]}``.
        test_accuracy, test_nll, test_ece, test_brier: the same on the test split, in studies that
            record it (``record_test``; never read by the search).
        class_groups: the semantic split's learned class groups, one line per member.
        warm_start_from, keep_weights, warm_started_tensors: the greedy block-wise search's
            fine-tuning: the trial whose weights this one starts from, whether this one's weights
            must be kept for the next, and how many tensors the warm start took.
        processes, data_ranks: the ranks that joined the process group the trial trained in, as its
            rank 0 saw the group (``--nproc-per-trial``; data ranks among them); unrecorded where it
            trained in the worker's own process.
        artifact_id: the artifact-store id of the trained weights this trial uploaded when it
            completed (:mod:`splitsearch.search.artifacts`); they may have been removed since.
        metrics_artifact_id: the id of the ``metrics.json`` uploaded beside them (history, class groups).
        removed_artifacts: the trials whose weights the keep policy removed when this one completed
            (recorded here because a finished trial's attributes cannot change).
    """

    config: SplitConfig | None = None
    config_hash: str | None = None
    params: int | None = None
    macs: int | None = None
    flops: int | None = None
    activation_bytes: int | None = None
    sequential_activation_bytes: int | None = None
    latency_seconds: float | None = None
    latency_iqr_seconds: float | None = None
    latency_runs: int | None = None
    latency_execution: str | None = None
    execution_mode: str | None = None
    mode_choice: Mapping[str, Any] | None = None
    width_mult: float | None = None
    width_step: float | None = None
    baseline: str | None = None
    tuned_from: int | None = None
    worker: Mapping[str, Any] | None = None
    failure: str | None = None
    over_budget: bool | None = None
    budget_excess: float | None = None
    over_budget_reason: str | None = None
    interrupted: bool | None = None
    reused_from: str | None = None
    repeat_of: int | None = None
    epoch_val_accuracies: Mapping[str, float] | None = None
    pruned_at_epoch: int | None = None
    pruned_reason: str | None = None
    member_val_accuracies: tuple[float, ...] | None = None
    val_accuracy: float | None = None
    val_nll: float | None = None
    val_ece: float | None = None
    val_brier: float | None = None
    member_val_calibration: Mapping[str, list[float]] | None = None
    test_accuracy: float | None = None
    test_nll: float | None = None
    test_ece: float | None = None
    test_brier: float | None = None
    val_standard_error: float | None = None
    val_samples: int | None = None
    wall_seconds: float | None = None
    class_groups: tuple[str, ...] | None = None
    warm_start_from: int | None = None
    keep_weights: bool | None = None
    warm_started_tensors: int | None = None
    processes: int | None = None
    data_ranks: int | None = None
    artifact_id: str | None = None
    metrics_artifact_id: str | None = None
    removed_artifacts: tuple[int, ...] | None = None

    @classmethod
    def from_trial(cls, trial: _HasUserAttrs) -> TrialRecord:
        """The record held by ``trial``'s user attributes (attributes it does not know are ignored)."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """The record of an attribute mapping (a trial's ``user_attrs``, or what ``enqueue_trial`` takes)."""
        values = _known(cls, attrs)
        if values.get("config") is not None:
            values["config"] = SplitConfig.from_dict(values["config"])
        for name in ("member_val_accuracies", "class_groups", "removed_artifacts"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_attrs(self) -> dict[str, Any]:
        """The recorded fields as JSON-ready user attributes (unrecorded ones left out)."""
        return _recorded(self)

    def write_to(self, trial: _HasUserAttrs) -> None:
        """Set every recorded field on ``trial`` (a live ``optuna.Trial``); others stay as they are."""
        for key, value in self.to_attrs().items():
            trial.set_user_attr(key, value)

    @property
    def is_baseline(self) -> bool:
        return bool(self.baseline)

    @property
    def is_repeat(self) -> bool:
        return self.repeat_of is not None


@dataclass(frozen=True)
class GreedySummary:
    """What the greedy block-wise split chose and what it saves (the study's ``greedy_result``).

    ``*_baseline`` are the unsplit network's costs, the others the chosen network's; an
    activation figure is None where the family cannot measure it.
    """

    factors: tuple[int, ...]
    threshold_points: float
    baseline_accuracy: float
    accuracy: float
    drop_points: float
    trial: int
    baseline_trial: int
    evaluated: int
    params: int
    macs: int
    activation_bytes: int | None
    sequential_activation_bytes: int | None
    params_baseline: int
    macs_baseline: int
    activation_bytes_baseline: int | None
    sequential_activation_bytes_baseline: int | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GreedySummary:
        return cls(**{**data, "factors": tuple(data["factors"])})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "factors": list(self.factors)}


@dataclass(frozen=True)
class StudyRecord:
    """What splitsearch keeps in a study's user attributes; ``None`` is "not recorded".

    Attributes:
        settings: what defines the search (:meth:`StudySpec.settings`), compared on resume.
        settings_fingerprint: their hash, written last by the worker that created the study:
            other workers wait for it before joining.
        checkpoint_key: drawn when the study is created; names its checkpoint folder, so a new
            database never resumes an old study's files.
        objectives, space_name, budget_params, budget_macs, budget_activation, budget_latency
            (seconds), latency_batch_size, budget_mode: what the report and the dashboard show.
        greedy_result: the greedy block-wise split's choice, once it has finished.
        verdicts: the confirmed pick against each baseline, paired by seed
            (:meth:`splitsearch.search.verdict.Verdict.to_dict` rows), written by ``confirm``.
    """

    settings: Mapping[str, Any] | None = None
    settings_fingerprint: str | None = None
    checkpoint_key: str | None = None
    objectives: tuple[str, ...] | None = None
    space_name: str | None = None
    budget_params: int | None = None
    budget_macs: int | None = None
    budget_activation: int | None = None
    budget_latency: float | None = None
    latency_batch_size: int | None = None
    budget_mode: str | None = None
    greedy_result: GreedySummary | None = None
    verdicts: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def from_study(cls, study: _HasUserAttrs) -> StudyRecord:
        """The record held by ``study``'s user attributes (read from the storage anew each call)."""
        values = _known(cls, study.user_attrs)
        if values.get("objectives") is not None:
            values["objectives"] = tuple(values["objectives"])
        if values.get("greedy_result") is not None:
            values["greedy_result"] = GreedySummary.from_dict(values["greedy_result"])
        if values.get("verdicts") is not None:
            values["verdicts"] = tuple(values["verdicts"])
        return cls(**values)

    def write_to(self, study: _HasUserAttrs) -> None:
        """Set every recorded field on ``study``; others stay as they are."""
        for key, value in _recorded(self).items():
            study.set_user_attr(key, value)


def _known(cls: type, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes that are fields of the record class ``cls``."""
    return {field.name: attrs[field.name] for field in dataclasses.fields(cls) if field.name in attrs}


def _recorded(record: Any) -> dict[str, Any]:
    """A record's fields that are not None, as JSON-ready values."""
    attrs = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value is None:
            continue
        if isinstance(value, SplitConfig):
            value = value.to_dict()
        elif isinstance(value, GreedySummary):
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        attrs[field.name] = value
    return attrs


@dataclass(frozen=True)
class TrialCounts:
    """Where a study's trials stand.

    ``complete`` counts the completed candidates, ``repeats`` the completed trials that repeated
    one of them (:attr:`TrialRecord.repeat_of`: answered from its result, nothing trained).
    ``failed`` counts the candidates that raised (a failure with its reason, never retried);
    ``interrupted`` the trials stopped by Ctrl-C, SIGTERM or a dead worker (also Optuna's FAIL
    state, but retried); ``over_budget`` the pruned trials ``reject`` mode never trained.
    ``repeats_in_a_row`` is how many of the sampler's latest ended proposals (baselines left
    out, in trial order) were repeats: how long the sampler has found nothing new.
    """

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0
    running: int = 0
    waiting: int = 0
    over_budget: int = 0
    repeats: int = 0
    repeats_in_a_row: int = 0

    @property
    def finished(self) -> int:
        """Complete or pruned, repeats left out: what ``n_trials`` counts (distinct candidates)."""
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        return self.finished + self.repeats + self.failed + self.interrupted + self.running + self.waiting


def count_trials(study: Any) -> TrialCounts:
    """The :class:`TrialCounts` of ``study`` (an ``optuna.Study``), read from the storage now."""
    from optuna.trial import TrialState

    counts = dict.fromkeys(("complete", "pruned", "failed", "interrupted", "running", "waiting", "over_budget",
                            "repeats", "repeats_in_a_row"), 0)
    by_state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
                TrialState.WAITING: "waiting"}
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(trial)
        if trial.state == TrialState.FAIL:
            counts["failed" if record.failure is not None else "interrupted"] += 1
        elif record.is_repeat and trial.state == TrialState.COMPLETE:
            counts["repeats"] += 1
        elif trial.state in by_state:
            counts[by_state[trial.state]] += 1
        counts["over_budget"] += bool(record.over_budget)
        if trial.state.is_finished() and not record.is_baseline:
            counts["repeats_in_a_row"] = counts["repeats_in_a_row"] + 1 if record.is_repeat else 0
    return TrialCounts(**counts)


def trial_accuracy(trial: Any) -> float | None:
    """A finished trial's validation accuracy: recorded beside its value, or its first value in a study
    made before accuracy was recorded (when the first objective was always accuracy)."""
    recorded = TrialRecord.from_trial(trial).val_accuracy
    if recorded is not None:
        return recorded
    return trial.values[0] if trial.values else None


def pareto_front(study: Any) -> list[FrozenTrial]:
    """The Pareto-optimal trials of a multi-objective ``study``, each candidate once (repeats left out)."""
    return [trial for trial in study.best_trials if not TrialRecord.from_trial(trial).is_repeat]


# The hypervolume's reference point: accuracy 0 and this many times the largest cost of a completed
# trial, so the costliest point of the front still dominates a strip of the box.
REFERENCE_COST_FACTOR = 1.1


def front_hypervolume(study: Any) -> tuple[float, float] | None:
    """The share of the accuracy-cost box the front of a two-objective ``study`` dominates, and the box's cost.

    Two objectives, so computed here in a few lines (Optuna's hypervolume module is private):
    the reference point is accuracy 0 and :data:`REFERENCE_COST_FACTOR` x the largest cost of a
    completed trial; the box runs from cost 0 and accuracy 0 to cost ``reference`` and accuracy 1.
    That is the mean, over every cost budget from 0 to the reference, of the best accuracy the
    front offers within it (1 would be perfect accuracy at no cost).  The reference follows the
    costliest trial, so two studies' hypervolumes compare only where that is the same.  Here, for
    the summary a worker prints and for the report.  None: no trial completed.
    """
    from optuna.trial import TrialState

    costs = [trial.values[1] for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not costs:
        return None
    reference = REFERENCE_COST_FACTOR * max(costs)
    front = sorted((trial.values[1], trial_accuracy(trial)) for trial in pareto_front(study))
    area, best = 0.0, 0.0
    for (cost, value), next_cost in zip(front, [cost for cost, _ in front[1:]] + [reference]):
        best = max(best, value)
        area += (next_cost - cost) * best
    return area / reference, reference


def hypervolume_text(value: float, reference_text: str) -> str:
    """``hypervolume 0.812 (reference point: accuracy 0, 21.9K params, 1.1 x the largest)``: the
    wording the run's summary and the report share; ``reference_text`` is the reference cost with its unit."""
    return (f"hypervolume {value:.3f} (reference point: accuracy 0, {reference_text}, "
            f"{REFERENCE_COST_FACTOR:g} x the largest)")


def format_cost(objective: str, value: float) -> str:
    """A cost objective's value as a person reads it: ``2.19e+04`` params -> ``21.9K``, bytes as bytes."""
    if objective == "activation":
        return format_bytes(int(value))
    if objective == "latency":
        return f"{value:.3g} ms"
    return format_count(int(value))
