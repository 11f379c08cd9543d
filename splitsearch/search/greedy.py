"""Run the greedy block-wise split (MalekHosseini et al. 2020) as an Optuna study (``run --strategy greedy-blocks``).

Every network the procedure trains (:func:`splitsearch.search.strategies.greedy_block_split`) is
an ordinary trial of the study: it is enqueued with its per-block factors, trained by the same
objective as any sampled candidate, and lands in the store, the dashboard and the report.  The
baseline (all factors 1) trains the study's epochs; every split candidate is fine-tuned for
``finetune_epochs`` from the network chosen so far, as the paper does (blocks whose shapes did
not change keep their weights; :meth:`splitsearch.train.loop.Trainer.warm_start`).

A crash loses nothing: run the same command again and the procedure replays the trials the
study already holds (looked up by their parameters) and continues with the first one it does
not, an interrupted one from its checkpoint.  The procedure is sequential; a second worker on
the same study waits for the trial the first is training instead of repeating it.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import warnings
from typing import Callable, Sequence

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from splitsearch.cost.counting import count_config
from splitsearch.cost.fitting import fit_width
from splitsearch.models import resolve_arch
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.objective import SearchObjective, warn
from splitsearch.search.record import GreedySummary, StudyRecord, TrialRecord
from splitsearch.search.run import check_budget, open_search
from splitsearch.search.space import Param, SearchSpace
from splitsearch.search.strategies import (
    GreedyResult,
    GreedyStep,
    greedy_block_split,
)
from splitsearch.search.study import StudyError, StudySpec
from splitsearch.search.worker import (
    checkpoint_root,
    original_trial_number,
    requeue_interrupted,
    settle_store,
    sigterm_interrupts,
)
from splitsearch.metrics import EpochMetrics

_POLL_SECONDS = 5.0


def default_finetune_epochs(epochs: int) -> int:
    """A third of the baseline's epochs, at least one: the paper fine-tunes 'a few epochs'."""
    return max(1, math.ceil(epochs / 3))


def greedy_spec(spec: StudySpec, factors: Sequence[int], finetune_epochs: int) -> StudySpec:
    """``spec`` as a greedy block-wise study: its space holds the per-block factors and the two
    training lengths, S is 1, nothing is pruned and nothing sampled.  A ``fit`` budget fits the
    baseline's width; every candidate keeps it.

    Raises:
        StudyError: a setting the procedure cannot honour (two objectives, no fine-tuning epoch).
    """
    if spec.multi_objective:
        raise StudyError("--strategy greedy-blocks maximises accuracy alone: drop --objectives")
    # The procedure keeps a split while the accuracy it loses stays under the threshold (in points),
    # so its trials are ranked by accuracy whatever single objective a search would use.
    spec = dataclasses.replace(spec, objectives=("accuracy",))
    if spec.has_budget and spec.budget_mode == "fit":
        # The baseline is fitted to the budget; splitting only makes a network cheaper, so the
        # candidates keep its widths and the budget is then a plain limit.
        fitted = fit_width(spec.base, budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                           budget_activation=spec.budget_activation)
        spec = dataclasses.replace(spec, base=fitted.config, budget_mode="reject")
    epochs = spec.base.train.epochs
    space = SearchSpace(
        name="greedy-blocks",
        params=(
            Param("block_factors", "per_block", choices=(1, *factors)),
            Param("train.epochs", "categorical", choices=tuple(sorted({epochs, finetune_epochs}))),
        ),
        fixed={"S": 1},
        description=f"the greedy block-wise split: factors {list(factors)}, fine-tune {finetune_epochs} epochs",
    )
    return dataclasses.replace(spec, space=space, baselines=False, pruner="none", n_trials=None)


def _ranks(trial: FrozenTrial) -> str:
    """``, N data ranks`` where ``trial`` trained in a group: the ranks that joined it, as its rank 0
    recorded them (not the option's figure); empty in one process."""
    data_ranks = TrialRecord.from_trial(trial).data_ranks or 1
    return f", {data_ranks} data ranks" if data_ranks > 1 else ""


def greedy_execution(execution: ExecutionOptions) -> ExecutionOptions:
    """How the procedure trains: one network after another (S is 1: nothing to fuse), and every
    process of ``--nproc-per-trial`` a data rank, as an undivided network has no members to share out."""
    data_parallel = execution.data_parallel if execution.data_parallel > 1 else execution.nproc_per_trial
    return dataclasses.replace(execution, mode="sequential", data_parallel=data_parallel)


def run_greedy_blocks(spec: StudySpec, storage_url: str, execution: ExecutionOptions = ExecutionOptions(),
                      force: bool = False,
                      on_step: Callable[[str], None] | None = None,
                      on_epoch: Callable[[int, EpochMetrics], None] | None = None,
                      on_warning: Callable[[str], None] = warn) -> tuple[optuna.Study, GreedyResult]:
    """Run (or resume) the greedy block-wise split of ``spec.base`` and record its result in the study.

    ``on_step`` receives one line per evaluated network, ``on_epoch`` every epoch's metrics,
    ``on_warning`` a line per disk fault ridden out (as in :func:`~splitsearch.search.run.run_study`).
    The result is also stored as the study's ``greedy_result`` (:class:`~splitsearch.search.record.StudyRecord`).
    Networks train as :func:`greedy_execution` says, each in a process group of data ranks where
    ``execution.nproc_per_trial`` asks for one (on ranks kept across them).  Optuna's experimental-feature
    warnings are silenced while it runs, as in :func:`~splitsearch.search.run.run_study`.
    """
    threshold, factors = spec.greedy.threshold, spec.greedy.factors
    finetune_epochs = spec.greedy.finetune_epochs or default_finetune_epochs(spec.base.train.epochs)
    spec = greedy_spec(spec, factors, finetune_epochs)
    check_budget(spec)
    execution = greedy_execution(execution)
    data = execution.data_cache()
    data.get(spec.base.dataset, spec.base.train, spec.base.crop)  # a missing dataset fails here, before the storage is touched
    num_blocks = resolve_arch(spec.base.arch)[0].num_blocks
    with sigterm_interrupts(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        study, store = open_search(spec, storage_url, force, execution.heartbeat_seconds,
                                   execution.storage_retry_seconds)
        objective = SearchObjective(spec, store, execution, data, on_epoch, on_warning)
        evaluate = _TrialEvaluator(study, objective, spec.base.train.epochs, finetune_epochs, on_step)
        try:
            result = greedy_block_split(num_blocks, evaluate, threshold, factors,
                                        on_step=None if on_step is None else evaluate.report)
        except KeyboardInterrupt:
            requeue_interrupted(study)
            raise
        finally:
            objective.close()
            settle_store(study, store)
        evaluate.drop_weights(keep=None)
    StudyRecord(greedy_result=greedy_summary(study, result, evaluate.trial_numbers, threshold)).write_to(study)
    return study, result


class _TrialEvaluator:
    """``evaluate(factors, start_from)`` for :func:`greedy_block_split`: one study trial per network.

    ``trials`` maps every evaluated network's factors to its finished trial.
    """

    def __init__(self, study: optuna.Study, objective: SearchObjective, epochs: int, finetune_epochs: int,
                 on_step: Callable[[str], None] | None) -> None:
        self.study = study
        self.objective = objective
        self.epochs = epochs
        self.finetune_epochs = finetune_epochs
        self.on_step = on_step
        self.trials: dict[tuple[int, ...], FrozenTrial] = {}

    @property
    def trial_numbers(self) -> dict[tuple[int, ...], int]:
        """The completed networks' trial numbers (the ones whose weights may be kept)."""
        return {factors: trial.number for factors, trial in self.trials.items() if trial.state == TrialState.COMPLETE}

    def __call__(self, factors: tuple[int, ...], start_from: tuple[int, ...] | None) -> float | None:
        params: dict[str, int] = {f"block_factors.{block}": factor for block, factor in enumerate(factors)}
        params["train.epochs"] = self.epochs if start_from is None else self.finetune_epochs
        if start_from is None:
            record = TrialRecord(keep_weights=True, baseline="undivided")
        else:
            record = TrialRecord(keep_weights=True, warm_start_from=self.trials[start_from].number)
        trial = self.trials[factors] = self._finished(params, record, start_from)
        accuracy = trial.value if trial.state == TrialState.COMPLETE else None
        if start_from is None and self.on_step is not None and accuracy is not None:
            self.on_step(f"trial {trial.number}: baseline (factors {_names(factors)}) {accuracy:.2%}{_ranks(trial)}")
        return accuracy

    def report(self, step: GreedyStep) -> None:
        """One line for a decided candidate (``greedy_block_split``'s ``on_step``)."""
        trial = self.trials[step.factors]
        if step.accuracy is None:
            record = TrialRecord.from_trial(trial)
            over = f"over budget: {record.over_budget_reason}" if record.over_budget_reason else "over budget"
            reason = record.failure or (over if record.over_budget else trial.state.name.lower())
            line = f"factors {_names(step.factors)} could not be trained ({reason}): block ends"
        else:
            verdict = "kept" if step.accepted else "over the threshold: block ends"
            line = (f"factors {_names(step.factors)} {step.accuracy:.2%}, drop {step.drop_points:+.2f} points"
                    f"{_ranks(trial)}, {verdict}")
        self.on_step(f"trial {trial.number}: {line}")

    def _finished(self, params: dict[str, int], record: TrialRecord,
                  start_from: tuple[int, ...] | None) -> FrozenTrial:
        """The study's finished trial of ``params``: found (a replay), or enqueued and trained now."""
        trained_here = False
        while True:
            trial = self._latest(params)
            if trial is None:
                self.study.enqueue_trial(params, user_attrs=record.to_attrs())
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                return trial  # a FAIL failed with its reason, or was interrupted more often than retried
            elif trial.state == TrialState.WAITING:
                if not trained_here:
                    # Only the network this one starts from is needed from now on.
                    self.drop_weights(keep=start_from)
                    trained_here = True
                self.study.optimize(self.objective, n_trials=1, catch=(Exception,))
            else:  # another worker trains it
                time.sleep(_POLL_SECONDS)
                fail_stale_trials(self.study)

    def _latest(self, params: dict[str, int]) -> FrozenTrial | None:
        for trial in reversed(self.study.get_trials(deepcopy=False)):
            given = trial.system_attrs.get("fixed_params") if trial.state == TrialState.WAITING else trial.params
            if given == params:
                return trial
        return None

    def drop_weights(self, keep: tuple[int, ...] | None) -> None:
        """Remove the kept weights of every network but ``keep`` (unless the user keeps checkpoints)."""
        if self.objective.execution.keep_checkpoints:
            return
        root = checkpoint_root(self.study, self.objective.execution.runs_dir)
        for factors, trial in self.trials.items():
            if factors != keep:
                shutil.rmtree(root / f"trial-{original_trial_number(trial)}", ignore_errors=True)


def _names(factors: tuple[int, ...]) -> str:
    return ",".join(map(str, factors))


def greedy_summary(study: optuna.Study, result: GreedyResult, trial_numbers: dict[tuple[int, ...], int],
                   threshold: float) -> GreedySummary:
    """What the procedure chose and what it saves against the baseline (the study's ``greedy_result``)."""
    trials = study.get_trials(deepcopy=False)
    baseline_trial, chosen_trial = trial_numbers[(1,) * len(result.factors)], trial_numbers[result.factors]
    before = count_config(TrialRecord.from_trial(trials[baseline_trial]).config)
    after = count_config(TrialRecord.from_trial(trials[chosen_trial]).config)
    return GreedySummary(
        factors=result.factors, threshold_points=threshold, baseline_accuracy=result.baseline_accuracy,
        accuracy=result.accuracy, drop_points=result.drop_points, trial=chosen_trial, baseline_trial=baseline_trial,
        evaluated=len(result.steps) + 1,
        **{f"{name}_baseline": getattr(before, name) for name in _COSTS},
        **{name: getattr(after, name) for name in _COSTS},
    )


_COSTS = ("params", "macs", "activation_bytes", "sequential_activation_bytes")
