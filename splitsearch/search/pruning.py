"""Pruning a Pareto search: asynchronous successive halving on (accuracy, known cost).

Optuna's pruners compare one intermediate value per step, and ``Trial.report`` refuses
multi-objective trials, so a Pareto study of accuracy against a cost trained every candidate to
the end.  Yet the cost objectives (params, MACs, activation memory, latency) are known exactly
before a candidate trains; only accuracy is learned epoch by epoch.  At an epoch, a candidate is
therefore a point (accuracy so far, exact cost), comparable with every other candidate that
reached the same epoch, and can be stopped like asynchronous successive halving stops one.

:class:`ParetoHalvingPruner` is an ordinary Optuna pruner, so the trials it stops are ordinary
PRUNED trials wherever Optuna's trials are read (optuna-dashboard, the report, ``db check``).
Its input is not Optuna's intermediate values (multi-objective trials cannot hold any) but the
trial's :attr:`~splitsearch.search.record.TrialRecord.epoch_val_accuracies`, a user attribute the
objective writes after every epoch before it calls the pruner itself
(:class:`~splitsearch.search.objective.SearchObjective`).  A user attribute rather than a system
attribute: it goes through :class:`TrialRecord` like every other fact splitsearch keeps of a trial,
optuna-dashboard shows it beside the trial, and Optuna deprecates writing system attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from splitsearch.search.record import TrialRecord

# Each cost objective as the trial records it, in the unit of the trial's value for it
# (the latency objective is in milliseconds, the record in seconds).
KNOWN_COSTS: dict[str, Callable[[TrialRecord], float | None]] = {
    "params": lambda record: record.params,
    "macs": lambda record: record.macs,
    # What the activation objective holds a candidate to (CandidateCost.deployed_activation_bytes).
    "activation": lambda record: (record.activation_bytes if record.sequential_activation_bytes is None
                                  else record.sequential_activation_bytes),
    "latency": lambda record: None if record.latency_seconds is None else 1000 * record.latency_seconds,
}
# η: the reduction factor of this pruner and of the Hyperband pruner of single-objective studies (study.make_pruner).
REDUCTION_FACTOR = 3
# Below this many candidates at a rung nothing is pruned: with n <= REDUCTION_FACTOR the kept share,
# ceil(n / 3), is a single candidate, and a candidate would be stopped merely for not being the one
# best of two or three noisy early accuracies.  From 4 on, at least two continue.
MIN_CANDIDATES = REDUCTION_FACTOR + 1
# The trials whose reports count at a rung.  A failed trial is left out: an interrupted one is
# retried, and its retry carries the same reports on (it inherits the trial's attributes).
_COMPETING = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def prunable(objectives: Sequence[str]) -> bool:
    """Whether :class:`ParetoHalvingPruner` can prune a study of ``objectives``: accuracy and known costs."""
    return len(objectives) > 1 and objectives[0] == "accuracy" and all(o in KNOWN_COSTS for o in objectives[1:])


def rungs(max_epochs: int, reduction_factor: int = REDUCTION_FACTOR) -> tuple[int, ...]:
    """The epochs where candidates are compared: 1, η, η², ... below ``max_epochs``.

    Not at ``max_epochs`` itself: a candidate at its last epoch has no training left to save.
    """
    found, epoch = [], 1
    while epoch < max_epochs:
        found.append(epoch)
        epoch *= reduction_factor
    return tuple(found)


@dataclass(frozen=True)
class Candidate:
    """One trial at a rung: its accuracy there (maximised) and its costs (minimised)."""

    accuracy: float
    costs: tuple[float, ...]
    baseline: bool = False

    def dominates(self, other: Candidate) -> bool:
        """At least as good on every objective and better on one."""
        mine, theirs = (self.accuracy, *(-c for c in self.costs)), (other.accuracy, *(-c for c in other.costs))
        return all(a >= b for a, b in zip(mine, theirs)) and mine != theirs

    def costs_no_more_than(self, other: Candidate) -> bool:
        return all(a <= b for a, b in zip(self.costs, other.costs))


@dataclass(frozen=True)
class RungDecision:
    """Why a candidate continues or stops at a rung: ``ahead`` candidates rank before it, ``kept`` continue."""

    epoch: int
    candidates: int
    ahead: int
    kept: int
    pruned: bool
    reason: str


def pareto_ranks(candidates: Sequence[Candidate]) -> list[int]:
    """Each candidate's non-domination rank: 0 for the front, 1 for the front without it, and so on."""
    ranks = [-1] * len(candidates)
    rank, left = 0, set(range(len(candidates)))
    while left:
        layer = {i for i in left if not any(candidates[j].dominates(candidates[i]) for j in left)}
        for i in layer:
            ranks[i] = rank
        left -= layer
        rank += 1
    return ranks


def decide(candidate: Candidate, others: Sequence[Candidate], epoch: int,
           reduction_factor: int = REDUCTION_FACTOR, min_candidates: int = MIN_CANDIDATES) -> RungDecision:
    """Whether ``candidate`` continues past the rung at ``epoch``, against the ``others`` that reached it.

    Candidates are ordered by Pareto rank on (accuracy at the rung, costs), then by accuracy at
    the rung; ``candidate`` continues while fewer than ``ceil(n / reduction_factor)`` candidates
    come strictly before it.  Ties (same rank and accuracy) therefore share their place and
    continue or stop together, and nothing here reads a trial number or the order of ``others``:
    the decision depends on the reports only.  Within a rank the accuracy decides because it is
    the one objective the rung has measured (the costs are exact, the accuracy is what the
    pruner is for), and the cheap end of the front is guarded by the next rule instead: a
    candidate that no other costs less than or as much as, on every cost, is never pruned, since
    only costlier candidates could outrank it.  A baseline is never pruned, and with fewer than
    ``min_candidates`` candidates at the rung nothing is.
    """
    everyone = [candidate, *others]
    kept = math.ceil(len(everyone) / reduction_factor)
    ranks = pareto_ranks(everyone)
    ahead = sum((rank, -other.accuracy) < (ranks[0], -candidate.accuracy) for rank, other in zip(ranks[1:], others))

    def decision(pruned: bool, reason: str) -> RungDecision:
        return RungDecision(epoch, len(everyone), ahead, kept, pruned, reason)

    if candidate.baseline:
        return decision(False, "a baseline is never pruned")
    if len(everyone) < min_candidates:
        return decision(False, f"{len(everyone)} candidates at epoch {epoch}, fewer than {min_candidates}")
    if not any(other.costs_no_more_than(candidate) for other in others):
        return decision(False, "no other candidate at this epoch costs as little")
    place = f"{ahead} of {len(everyone)} candidates rank before it at epoch {epoch}, {kept} continue"
    return decision(ahead >= kept, place)


class ParetoHalvingPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving for a study of accuracy and known costs (see the module).

    At each rung (:func:`rungs`: epochs 1, η, η², ... below ``max_epochs``) a candidate continues
    while it is among the best ``ceil(n / η)`` of the ``n`` candidates that reached the rung so far,
    by :func:`decide`.  As in Optuna's asynchronous successive halving, the candidates a trial is
    compared with are those that reached the rung before it did; a later arrival never reverses
    a decision taken.

    Args:
        objectives: the study's objectives, accuracy first and then costs (:func:`prunable`).
        max_epochs: the most epochs a candidate trains.
        reduction_factor: η; 3 as the Hyperband pruner of single-objective studies.
        min_candidates: nothing is pruned at a rung fewer candidates reached (:data:`MIN_CANDIDATES`).
    """

    def __init__(self, objectives: Sequence[str], max_epochs: int, reduction_factor: int = REDUCTION_FACTOR,
                 min_candidates: int = MIN_CANDIDATES) -> None:
        if not prunable(objectives):
            raise ValueError(f"the Pareto pruner needs accuracy and costs known before training "
                             f"({', '.join(KNOWN_COSTS)}), got {','.join(objectives)}")
        if reduction_factor < 2:
            raise ValueError(f"the reduction factor must be at least 2, got {reduction_factor}")
        self.costs = tuple(objectives[1:])
        self.reduction_factor = reduction_factor
        self.min_candidates = min_candidates
        self.rungs = rungs(max_epochs, reduction_factor)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        decision = self.decision(study, trial)
        return decision is not None and decision.pruned

    def decision(self, study: optuna.Study, trial: FrozenTrial) -> RungDecision | None:
        """The decision at the trial's latest reported epoch, or None where that epoch is no rung."""
        reported = TrialRecord.from_trial(trial).epoch_val_accuracies or {}
        epoch = max((int(key) for key in reported), default=None)
        if epoch not in self.rungs or (candidate := self.candidate(trial, epoch)) is None:
            return None
        others = [other for frozen in study.get_trials(deepcopy=False, states=_COMPETING)
                  if frozen.number != trial.number and (other := self.candidate(frozen, epoch)) is not None]
        return decide(candidate, others, epoch, self.reduction_factor, self.min_candidates)

    def candidate(self, trial: FrozenTrial, epoch: int) -> Candidate | None:
        """``trial`` at the rung ``epoch``, or None where it did not reach it (or recorded no costs)."""
        record = TrialRecord.from_trial(trial)
        accuracy = (record.epoch_val_accuracies or {}).get(str(epoch))
        costs = tuple(KNOWN_COSTS[cost](record) for cost in self.costs)
        if accuracy is None or any(cost is None for cost in costs):
            return None
        return Candidate(float(accuracy), tuple(float(cost) for cost in costs), record.is_baseline)


def epoch_accuracies(record: TrialRecord) -> Mapping[int, float]:
    """The trial's validation accuracy after each epoch it reported, by epoch."""
    return {int(epoch): value for epoch, value in (record.epoch_val_accuracies or {}).items()}
