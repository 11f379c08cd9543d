"""What one trial does: sample a candidate, hold it to the budget, train it, record it.

The objective is the validation accuracy of the ensemble (the test split is never looked at
during a search), its validation negative log-likelihood (``nll``, minimised), or (accuracy,
cost) for a Pareto search, the cost being params, MACs, activation memory, the measured latency
in milliseconds or the expected calibration error (``ece``).  Whatever the objective, a trial
records the ensemble's and members' accuracy and calibration
(:mod:`splitsearch.train.calibration`).  Where the study measures latency (a latency budget or
objective), it is measured before training (:mod:`splitsearch.cost.latency`),
on this worker's device and in the way the trial runs the members; a candidate over a latency
budget is refused untrained, in either budget mode (a latency is checked, not fitted).  Every trial
leaves a row in the store and user attributes that optuna-dashboard and the report show.  A
candidate the store holds a result for is answered without training: a *repeat* when this study
finished it already (not counted toward ``n_trials``), *reused* when another study did.  How a
trial ends when something goes wrong (failed or interrupted) is described in
:mod:`splitsearch.search.worker`.  Disk faults do not end a trial: a checkpoint that cannot be
written is told in one line and the trial trains on without it, and a retry whose checkpoint
cannot be read is told in one line and trains from epoch 1 (both recorded in its row).
"""

from __future__ import annotations

import shutil
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import optuna
import torch

from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.figures import CandidateCost, Latency
from splitsearch.cost.fitting import fit_width
from splitsearch.cost.latency import measure_latency
from splitsearch.data import DataCache
from splitsearch.errors import CheckpointReadError, OutputWriteError
from splitsearch.metrics import EpochMetrics, TrainResult
from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.pruning import ParetoHalvingPruner
from splitsearch.search.record import TrialRecord
from splitsearch.search.space import KEY_TYPES, config_value, parameter_names, suggest_config
from splitsearch.search.study import StudySpec
from splitsearch.search.worker import checkpoint_root, original_trial_number, retried_trial, settle_store, this_worker
from splitsearch.store import CandidateRecord, Store
from splitsearch.store.records import epoch_calibration
from splitsearch.train.epoch_channel import EpochServer
from splitsearch.train.launch import RankFailedError
from splitsearch.train.loop import CHECKPOINT_NAME, METRICS_NAME, MODEL_NAME, Trainer, read_checkpoint
from splitsearch.train.plan import train_on
from splitsearch.train.pool import RankPool
from splitsearch.train.semantic_stage import class_group_text
from splitsearch.units import format_bytes, format_count, format_duration

# The baselines every study starts with, so it shows whether the search beat them: the
# undivided network and the paper's defaults (lambda_cot = 0.5, exponential weight-decay rule).
BASELINES: tuple[tuple[str, dict], ...] = (
    ("undivided", {"S": 1}),
    ("paper S=2", {"S": 2, "lambda_cot": 0.5, "wd_rule": "exp"}),
    ("paper S=4", {"S": 4, "lambda_cot": 0.5, "wd_rule": "exp"}),
)


# The label of a baseline trained again with the best searched trial's training settings.
TUNED_SUFFIX = " (tuned)"


class SearchWarning(UserWarning):
    """A fault a worker rode out (a checkpoint it could not write or read): the search went on."""


def warn(line: str) -> None:
    """Where a :class:`SearchObjective` tells a fault by default: a Python warning (the CLI prints a line)."""
    warnings.warn(line, SearchWarning, stacklevel=2)


class SearchObjective:
    """Callable for ``study.optimize``: one trial -> one trained (or rejected, or reused) candidate.

    Args:
        spec: the study definition.
        store: where candidates and per-epoch metrics are recorded.
        execution: device, mode and folders; per-trial checkpoints go to
            ``execution.runs_dir/<study>-<key>/trial-<n>``
            (:func:`~splitsearch.search.worker.checkpoint_root`; a retry continues from the
            checkpoint of the trial it retries) and are removed when the trial ends, unless
            ``execution.keep_checkpoints``; a completed trial's weights go to the artifact store
            first (:meth:`ExecutionOptions.artifact_keeper`).
        data: the worker's dataset cache (one is made from ``execution`` if not given).
        on_epoch: optional per-epoch hook (the CLI prints a line per epoch with ``-v``).
        on_warning: told, in one line, each fault the worker rides out: a checkpoint it cannot
            read (once per trial) or write (once per kind of fault: a full disk fails them all),
            a rank of the kept process group that died between trials.

    Trials that train in a process group (``execution.nproc_per_trial``) run on the ranks of one
    :class:`~splitsearch.train.pool.RankPool`, started with the first of them and kept until
    :meth:`close`.
    """

    def __init__(self, spec: StudySpec, store: Store, execution: ExecutionOptions, data: DataCache | None = None,
                 on_epoch: Callable[[int, EpochMetrics], None] | None = None,
                 on_warning: Callable[[str], None] = warn) -> None:
        self.spec = spec
        self.store = store
        self.execution = execution
        self.on_epoch = on_epoch
        self.on_warning = on_warning
        self.data = data or execution.data_cache()
        self.pool = RankPool(execution.nproc_per_trial, execution.device, on_restart=on_warning)
        self._write_faults_told: set[str] = set()

    def close(self) -> None:
        """End the ranks of the kept process group, if any started."""
        self.pool.close()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            return self._evaluate(trial)
        except Exception as error:
            # Also a candidate that fails before it trains (an invalid sampled combination).
            if not isinstance(error, optuna.TrialPruned) and TrialRecord.from_trial(trial).failure is None:
                TrialRecord(failure=failure_reason(error)).write_to(trial)
            raise

    def _evaluate(self, trial: optuna.Trial) -> float | tuple[float, float]:
        spec = self.spec
        TrialRecord(worker=this_worker()).write_to(trial)
        settle_store(trial.study, self.store)  # rows a dead worker left running end as interrupted
        record = TrialRecord.from_trial(trial)  # what the trial was enqueued with, or inherited as a retry
        config = suggest_config(spec.space, trial, spec.base)
        config, width_step = self._apply_budget(config)
        cost = count_config(config)
        latency = self._latency(trial, record, config) if spec.measures_latency else None
        self._describe(trial, config, cost, width_step, latency)

        if (checked := self._budget_excess(cost, latency)) is not None:
            excess, reason = checked
            trial.set_constraint("budget", excess)  # <= 0 is feasible: the sampler learns the feasible region
            TrialRecord(budget_excess=excess, over_budget=True if excess > 0 else None,
                        over_budget_reason=reason if excess > 0 else None).write_to(trial)
            if excess > 0:
                self.store.record_over_budget(spec.name, trial.number, config, cost, baseline=record.baseline,
                                              latency=latency)
                raise optuna.TrialPruned(f"over budget by {excess:.1%}: {reason}")

        # A fine-tuned candidate's result depends on the weights it started from, and a candidate
        # whose weights the next one starts from must train them: neither is reused.
        if record.warm_start_from is None and not record.keep_weights:
            stored, repeat_of = self._stored_result(config)
            if stored is not None:
                self.store.record_reused(spec.name, trial.number, stored, baseline=record.baseline, latency=latency)
                results = {name: getattr(stored, name) for name in _RESULT_COLUMNS}
                TrialRecord(reused_from=f"{stored.study_name}#{stored.trial_number}", repeat_of=repeat_of,
                            member_val_accuracies=_as_tuple(stored.member_val_accuracies),
                            val_standard_error=stored.val_standard_error, val_accuracy=stored.val_accuracy,
                            val_samples=stored.val_samples, **results).write_to(trial)
                return self._values(stored.val_accuracy, stored.val_nll, stored.val_ece, cost, latency)

        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        candidate = self.store.start_candidate(spec.name, trial.number, config, cost, width_step, record.baseline,
                                               retry_of=retried_trial(frozen), warm_started_from=record.warm_start_from,
                                               latency=latency)
        TrialRecord(interrupted=False).write_to(trial)  # a retried trial inherits its original's attributes
        out_dir = checkpoint_root(trial.study, self.execution.runs_dir) / f"trial-{original_trial_number(frozen)}"
        try:
            result = self._train(trial, record, config, candidate, out_dir)
        except optuna.TrialPruned:
            self._remove(out_dir)
            raise
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the checkpoint stays, and a retry continues from it.
            self.store.finish_candidate(candidate, "interrupted")
            TrialRecord(interrupted=True).write_to(trial)
            raise
        except Exception as error:
            # The candidate itself failed (out of memory, a diverged loss, a bug): never retried.
            reason = failure_reason(error)
            self.store.finish_candidate(candidate, "failed", error=reason)
            TrialRecord(failure=reason).write_to(trial)
            self._remove(out_dir)
            raise
        last = result.history[-1]
        values = self._values(result.val_accuracy, last.val_nll, last.val_ece, cost, latency)
        self._keep_weights(trial, out_dir / MODEL_NAME, values)
        if not record.keep_weights:  # the greedy search fine-tunes the next candidate from it
            self._remove(out_dir)
        results = {**epoch_calibration(last), **_test_columns(result)}
        # The standard error is the noise of the objective: a difference within a couple of them
        # is not a finding.  The class groups say which classes each semantic branch got.
        TrialRecord(member_val_accuracies=tuple(last.val_member_accuracies),
                    wall_seconds=result.wall_seconds, val_standard_error=result.val_standard_error,
                    val_samples=result.val_samples, val_accuracy=result.val_accuracy,
                    class_groups=None if result.semantic is None else tuple(class_group_text(result.semantic)),
                    **results).write_to(trial)
        self.store.finish_candidate(candidate, "complete", val_accuracy=result.val_accuracy,
                                    member_val_accuracies=last.val_member_accuracies,
                                    wall_seconds=result.wall_seconds, val_standard_error=result.val_standard_error,
                                    val_samples=result.val_samples, **results)
        return values

    # -- parts -------------------------------------------------------------------------------------

    def _apply_budget(self, config: SplitConfig) -> tuple[SplitConfig, float | None]:
        """In ``fit`` mode, the widest width under the budget; otherwise the config as sampled."""
        spec = self.spec
        if spec.budget_mode != "fit" or not spec.has_budget:
            return config, None
        fitted = fit_width(config, budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                           budget_activation=spec.budget_activation)
        return fitted.config, fitted.step

    def _stored_result(self, config: SplitConfig) -> tuple[CandidateRecord | None, int | None]:
        """The stored result that answers ``config`` without training, and the trial of this study it repeats.

        A candidate this study has already finished (same config, dataset and epochs) is a
        *repeat*: the sampler proposed a known point, so it gets the first such trial's result
        and that trial's number, and does not count toward ``n_trials``.  One that only another
        study of the store finished is *reused*: answered the same way, but it is a new
        candidate for this study and counts.  ``(None, None)``: it must be trained.
        """
        key = (config.config_hash(), config.dataset, config.train.epochs)
        if (repeated := self.store.find_finished_in_study(self.spec.name, *key)) is not None:
            return repeated
        reusable = self.store.find_reusable(*key)
        # A result from before calibration was recorded cannot answer a study that searches on it.
        needs_calibration = bool({"nll", "ece"} & set(self.spec.objectives))
        if reusable is None or reusable.val_accuracy is None or (needs_calibration and reusable.val_nll is None):
            return None, None
        return reusable, None

    def _latency(self, trial: optuna.Trial, record: TrialRecord, config: SplitConfig) -> Latency:
        """The candidate's forward latency on this worker's device, its members run as the trial will run them.

        A repeat of a candidate this study has finished (:meth:`_stored_result`) takes that
        trial's measurement instead of timing it again: the same candidate must answer the same
        values, or a lucky second timing would put a repeat on the Pareto front.
        """
        if record.warm_start_from is None and not record.keep_weights:
            key = (config.config_hash(), config.dataset, config.train.epochs)
            if (found := self.store.find_finished_in_study(self.spec.name, *key)) is not None:
                earlier = TrialRecord.from_trial(trial.study.get_trials(deepcopy=False)[found[1]])
                if earlier.latency_seconds is not None:
                    return Latency(seconds=earlier.latency_seconds, iqr_seconds=earlier.latency_iqr_seconds or 0.0,
                                   batch_size=self.spec.latency_batch_size, runs=earlier.latency_runs or 0,
                                   execution=earlier.latency_execution or "")
        processes = self.execution.trial_member_ranks(config)
        return measure_latency(config, self.execution.device, self.execution.mode, self.spec.latency_batch_size,
                               processes)

    def _budget_excess(self, cost: CandidateCost, latency: Latency | None) -> tuple[float, str] | None:
        """The largest relative excess over the budgets checked here, and a line naming those broken.

        ``reject`` mode checks every budget; ``fit`` mode has fitted the width to the counted
        ones and checks only the latency.  None: no budget to check.
        """
        spec = self.spec
        checks: list[tuple[str, float, float, Callable[[float], str]]] = []
        if spec.budget_mode == "reject":
            checks += [(label, value, budget, unit) for label, value, budget, unit in (
                ("params", cost.params, spec.budget_params, format_count),
                ("MACs", cost.macs, spec.budget_macs, format_count),
                ("activation memory", cost.deployed_activation_bytes, spec.budget_activation, format_bytes),
            ) if budget is not None]
        if spec.budget_latency is not None and latency is not None:
            checks.append((f"latency (batch {latency.batch_size}, {latency.execution})", latency.seconds,
                           spec.budget_latency, format_duration))
        if not checks:
            return None
        excess = max(value / budget - 1 for _, value, budget, _ in checks)
        broken = [f"{label} {unit(value)} over the budget of {unit(budget)}"
                  for label, value, budget, unit in checks if value > budget]
        return excess, "; ".join(broken)

    def _describe(self, trial: optuna.Trial, config: SplitConfig, cost: CandidateCost,
                  width_step: float | None, latency: Latency | None) -> None:
        """User attributes shown by optuna-dashboard and read by the report and ``export``."""
        TrialRecord(params=cost.params, macs=cost.macs, flops=cost.flops, activation_bytes=cost.activation_bytes,
                    sequential_activation_bytes=cost.sequential_activation_bytes, config_hash=config.config_hash(),
                    width_mult=config.width_mult, width_step=width_step, config=config,
                    latency_seconds=None if latency is None else latency.seconds,
                    latency_iqr_seconds=None if latency is None else latency.iqr_seconds,
                    latency_runs=None if latency is None else latency.runs,
                    latency_execution=None if latency is None else latency.execution).write_to(trial)

    def _train(self, trial: optuna.Trial, record: TrialRecord, config: SplitConfig, candidate: int,
               out_dir: Path) -> TrainResult:
        # Baselines are the yardstick the search exists to beat: they report but are never pruned.
        can_prune = not record.is_baseline
        # A retry inherits the epochs its first attempt reported; trained again from epoch 1
        # (its checkpoint unreadable), they are not reported twice (Optuna would warn and ignore them).
        reported = set(trial.study.get_trials(deepcopy=False)[trial.number].intermediate_values)
        accuracies = dict(record.epoch_val_accuracies or {})  # a multi-objective trial's, inherited by a retry

        def after_epoch(metrics: EpochMetrics) -> bool:
            self.store.record_epoch(candidate, metrics)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, metrics)
            if self.spec.multi_objective:
                # A retry training again from epoch 1 drops the later epochs its first attempt reported:
                # the pruner judges the latest epoch recorded.
                for later in [key for key in accuracies if int(key) > metrics.epoch]:
                    del accuracies[later]
                accuracies[str(metrics.epoch)] = metrics.val_accuracy
                TrialRecord(epoch_val_accuracies=accuracies).write_to(trial)
                return can_prune and self._pareto_prunes(trial, metrics.epoch)
            if metrics.epoch not in reported:
                trial.report(metrics.val_nll if self.spec.objectives == ("nll",) else metrics.val_accuracy,
                             metrics.epoch)
            return can_prune and trial.should_prune()

        fit = partial(self._fit, trial, record, config, candidate, out_dir, after_epoch)
        try:
            result = fit(resume=True)
        except CheckpointReadError as error:
            self.store.record_resume_refused(candidate, str(error))
            self.on_warning(f"trial {trial.number}: {error}; it trains again from epoch 1")
            result = fit(resume=False)
        if result.resumed_from_epoch:
            # The retried attempt's row holds the epochs before this one; this row, those after.
            self.store.record_resumed(candidate, result.resumed_from_epoch)
        if result.stopped_early:
            self.store.finish_candidate(candidate, "pruned", val_accuracy=result.val_accuracy,
                                        member_val_accuracies=result.history[-1].val_member_accuracies,
                                        wall_seconds=result.wall_seconds, **epoch_calibration(result.history[-1]))
            raise optuna.TrialPruned(f"pruned after epoch {result.history[-1].epoch}")
        return result

    def _pareto_prunes(self, trial: optuna.Trial, epoch: int) -> bool:
        """Whether the study's pruner stops this multi-objective trial after ``epoch``; recorded with its reason.

        Optuna's ``report`` and ``should_prune`` refuse multi-objective trials, so the epoch's
        accuracy is in the trial's record (written just before) and the worker asks the study's
        pruner itself, on the trial as the storage now holds it.  Only a
        :class:`~splitsearch.search.pruning.ParetoHalvingPruner` prunes such a study (``pruner:
        none`` opens it with Optuna's NopPruner); its decision's reason is kept beside the trial.
        """
        pruner = trial.study.pruner
        if not isinstance(pruner, ParetoHalvingPruner):
            return False
        decision = pruner.decision(trial.study, trial.study.get_trials(deepcopy=False)[trial.number])
        if decision is None or not decision.pruned:
            return False
        TrialRecord(pruned_at_epoch=epoch, pruned_reason=decision.reason).write_to(trial)
        return True

    def _fit(self, trial: optuna.Trial, record: TrialRecord, config: SplitConfig, candidate: int, out_dir: Path,
             after_epoch: Callable[[EpochMetrics], bool], resume: bool) -> TrainResult:
        """Train the candidate here, or in a process group (``--nproc-per-trial``).

        Raises:
            CheckpointReadError: ``resume`` and the checkpoint in ``out_dir`` cannot be read.
        """
        processes = self.execution.trial_processes(config)
        if processes > 1:
            return self._train_in_group(trial, record, processes, config, candidate, out_dir, after_epoch, resume)
        trainer = self._trainer(trial, record, config, candidate, out_dir, after_epoch)
        return trainer.fit(resume=resume, test=self.spec.record_test)

    def _train_in_group(self, trial: optuna.Trial, record: TrialRecord, processes: int, config: SplitConfig,
                        candidate: int, out_dir: Path, after_epoch: Callable[[EpochMetrics], bool],
                        resume: bool) -> TrainResult:
        """Train ``config`` on ``processes`` ranks of the kept pool; this worker answers rank 0's epochs.

        The ranks keep the dataset from trial to trial and continue the trial's checkpoint
        (written in the one-process format, so a retry may run on any number of processes); the
        worker reads it first, so a damaged one is refused here as it would be in one process.
        A fine-tuned candidate's ranks warm-start from the weights file of the trial it starts
        from.  A file rank 0 cannot write is handled here too (:meth:`_not_written`).  A rank's
        failure comes back as :class:`~splitsearch.errors.TrainingError` or
        :class:`~splitsearch.train.launch.RankFailedError`, Ctrl-C or SIGTERM as KeyboardInterrupt.
        """
        if resume and (out_dir / CHECKPOINT_NAME).is_file():
            read_checkpoint(out_dir / CHECKPOINT_NAME)
        warm_start = None if record.warm_start_from is None else self._weights_file(trial, record.warm_start_from)
        request = self.execution.train_request(config, out_dir, resume, warm_start_from=warm_start)
        with EpochServer(after_epoch, lambda error: self._not_written(candidate, error)) as server:
            outcome = train_on(self.pool, processes, request, server.client())
        server.raise_failure()
        # The group rank 0 saw, not the option's figure: what greedy-blocks' lines print.
        TrialRecord(processes=outcome.processes, data_ranks=outcome.data_ranks).write_to(trial)
        if outcome.warm_started_tensors is not None:
            TrialRecord(warm_started_tensors=outcome.warm_started_tensors).write_to(trial)
        return outcome.result

    def _trainer(self, trial: optuna.Trial, record: TrialRecord, config: SplitConfig, candidate: int, out_dir: Path,
                 after_epoch: Callable[[EpochMetrics], bool]) -> Trainer:
        """A fresh trainer of the candidate (warm-started where the record says so) that writes into ``out_dir``."""
        trainer = Trainer(config, self.data.get(config.dataset, config.train, config.crop), self.execution.device, out_dir,
                          self.execution.mode, callbacks=[after_epoch], progress=False,
                          on_write_error=lambda error: self._not_written(candidate, error), mode_cache=self.store)
        if trainer.mode_choice is not None:
            TrialRecord(execution_mode=trainer.mode_choice.mode, mode_choice=trainer.mode_choice.to_dict()).write_to(trial)
        if record.warm_start_from is not None:
            taken = trainer.warm_start(self._trained_members(trial, record.warm_start_from))
            TrialRecord(warm_started_tensors=len(taken)).write_to(trial)
        return trainer

    def _not_written(self, candidate: int, error: OutputWriteError) -> None:
        """A checkpoint or model file could not be written: recorded with the attempt, which trains on.

        The trial's result goes to the database, not to that file; the file only lets an
        interrupted trial resume.  Failing the trial would throw its training away, record the
        candidate as failed (never retried) for a fault of the disk, and on a full disk fail
        every later trial the same way, so the study would end in failures.  One line per kind
        of fault tells the user; each attempt it hits records it (``checkpoint_error``).
        """
        self.store.record_checkpoint_error(candidate, str(error))
        if error.reason not in self._write_faults_told:
            self._write_faults_told.add(error.reason)
            self.on_warning(f"{error}; trials go on without checkpoints until writes succeed again (an interrupted "
                            "one resumes from its last checkpoint written, or from epoch 1; a completed one whose "
                            "model.pt was not written keeps no weights)")

    def _trained_members(self, trial: optuna.Trial, number: int) -> list[dict[str, torch.Tensor]]:
        """The trained members of trial ``number`` of this study (:meth:`_weights_file`)."""
        return torch.load(self._weights_file(trial, number), map_location=self.execution.device,
                          weights_only=True)["members"]

    def _weights_file(self, trial: optuna.Trial, number: int) -> Path:
        """The weights file of trial ``number`` of this study, kept by its ``keep_weights`` attribute."""
        source = trial.study.get_trials(deepcopy=False)[number]
        path = (checkpoint_root(trial.study, self.execution.runs_dir) / f"trial-{original_trial_number(source)}"
                / MODEL_NAME)
        if not path.is_file():
            raise FileNotFoundError(f"the weights of trial {number} to fine-tune from are gone ({path})")
        return path

    def _keep_weights(self, trial: optuna.Trial, model_file: Path, values: float | tuple[float, float]) -> None:
        """Upload the completed trial's weights to the artifact store.

        Like a checkpoint, the weights are a convenience beside the result, which the database
        holds: a model file that was not written (a write fault, told already) or a store that
        cannot take it (told once per worker) leaves the trial complete without kept weights
        (``export --weights`` then says so).
        """
        if not model_file.is_file():  # a write fault, told once already (_not_written)
            return
        try:
            metrics_file = model_file.with_name(METRICS_NAME)
            self.execution.artifact_keeper().keep(trial, model_file, values if isinstance(values, tuple) else (values,),
                                                  metrics_file if metrics_file.is_file() else None)
        except OSError as error:
            if "artifact store" not in self._write_faults_told:
                self._write_faults_told.add("artifact store")
                self.on_warning(f"trial {trial.number}: its weights cannot be kept in the artifact store ({error}); "
                                "trials go on without kept weights until it takes them again")

    def _remove(self, out_dir: Path) -> None:
        """A finished trial's checkpoint is never needed again (unless the user keeps it)."""
        if not self.execution.keep_checkpoints:
            shutil.rmtree(out_dir, ignore_errors=True)

    def _values(self, accuracy: float, nll: float | None, ece: float | None, cost: CandidateCost,
                latency: Latency | None) -> float | tuple[float, float]:
        """The trial's objective values, in the study's order."""
        figures = {"accuracy": accuracy, "nll": nll, "ece": ece, "params": cost.params, "macs": cost.macs,
                   "activation": cost.deployed_activation_bytes,
                   # measured: the study measures latency (spec.measures_latency)
                   "latency": None if latency is None else latency.milliseconds}
        values = tuple(float(figures[objective]) for objective in self.spec.objectives)
        return values if len(values) > 1 else values[0]


# What a trial copies from a stored result it reuses, beside the accuracy.
_RESULT_COLUMNS = ("val_nll", "val_ece", "val_brier", "member_val_calibration", "test_accuracy", "test_nll",
                   "test_ece", "test_brier")


def _test_columns(result: TrainResult) -> dict[str, float | None]:
    """The test split's figures of a result that measured it (``record_test``), else nothing."""
    if result.test_calibration is None:
        return {}
    return {"test_accuracy": result.test_accuracy, "test_nll": result.test_calibration.nll,
            "test_ece": result.test_calibration.ece, "test_brier": result.test_calibration.brier}


def failure_reason(error: Exception) -> str:
    """One line saying why a candidate failed: ``RuntimeError: CUDA out of memory ...``, or for a
    member-parallel trial ``rank 1: RuntimeError: ...`` (the failed rank's error, not its traceback)."""
    text = error.reason if isinstance(error, RankFailedError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def enqueue_baselines(study: optuna.Study, spec: StudySpec) -> list[str]:
    """Put the baselines first in the queue (where the space can express them); returns their names.

    A baseline sets the searched parameters it names, every per-block split factor and
    ``groups`` to 1, and every other searched setting (``train.lr``, say) to the base config's
    value, so a baseline is the paper's network trained the study's way, not a random draw.
    One the space cannot reach (its S, or groups 1 where the space offers only G > 1) is skipped.
    """
    names = parameter_names(spec.space, spec.base)
    choices = {param.key: param.choices for param in spec.space.params if param.choices}
    enqueued = []
    for label, values in BASELINES:
        if "S" not in names and values["S"] != spec.base.S:
            continue
        params = {}
        for name in names:
            if name in values:
                params[name] = values[name]
            elif name.startswith("block_factors.") or name == "groups":
                params[name] = 1
            elif name in KEY_TYPES and (value := config_value(spec.base, name)) is not None:
                params[name] = value  # None (split_depth without groups): left to the space's condition
        if any(name in choices and value not in choices[name] for name, value in params.items()):
            continue
        study.enqueue_trial(params, user_attrs=TrialRecord(baseline=label).to_attrs(), skip_if_exists=True)
        enqueued.append(label)
    return enqueued


def enqueue_tuned_baselines(study: optuna.Study, spec: StudySpec) -> list[str]:
    """Queue each baseline again with the searched training settings of the best searched trial.

    Where the space searches training settings (``train.lr``, say), the candidates are tuned
    on them and the baselines are not, so "the search beat the undivided network" could mean
    "it found a better learning rate".  Once the search has its trials, every baseline is
    trained again (``"undivided (tuned)"``, ...) with the best non-baseline trial's values of
    those keys and the base config's everything else, so pick and baseline differ only in the
    split.  Single-objective studies only (the "best" of a Pareto front is not one trial).
    Returns the labels queued; nothing when there is nothing to tune, when the best trial's
    settings are the base's, or when they are queued already.
    """
    keys = [param.key for param in spec.space.params if param.key.startswith("train.")]
    if not keys or not spec.baselines or spec.multi_objective:
        return []
    trials = study.get_trials(deepcopy=False)
    records = {trial.number: TrialRecord.from_trial(trial) for trial in trials}
    searched = [trial for trial in trials
                if trial.state == optuna.trial.TrialState.COMPLETE and not records[trial.number].is_baseline]
    if not searched:
        return []
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    best = max(searched, key=lambda trial: (sign * trial.values[0], -trial.number))
    training = {key: best.params[key] for key in keys if key in best.params}
    labels_seen = {record.baseline for record in records.values()}
    queued = []
    for trial in trials:
        label = records[trial.number].baseline
        if not label or label.endswith(TUNED_SUFFIX) or label + TUNED_SUFFIX in labels_seen \
                or records[trial.number].over_budget or not trial.params:
            continue
        params = {**trial.params, **training}
        if params == trial.params:
            continue
        # Not skipped when a searched trial has these params: it is then a repeat of that trial,
        # answered from its result without training and not counted toward n_trials.
        study.enqueue_trial(params, user_attrs=TrialRecord(baseline=label + TUNED_SUFFIX,
                                                           tuned_from=best.number).to_attrs())
        labels_seen.add(label + TUNED_SUFFIX)
        queued.append(label + TUNED_SUFFIX)
    return queued


def tuned_baseline_trials(study: optuna.Study,
                          states: tuple[optuna.trial.TrialState, ...] | None = None) -> list[optuna.trial.FrozenTrial]:
    """The study's tuned baselines (:func:`enqueue_tuned_baselines`), in ``states`` if given."""
    return [trial for trial in study.get_trials(deepcopy=False, states=states)
            if (TrialRecord.from_trial(trial).baseline or "").endswith(TUNED_SUFFIX)]


def _as_tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)
