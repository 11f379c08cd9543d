"""The co-training loop: S networks trained as one on device-resident data, resumable.

One :class:`Trainer` trains one candidate.  Every epoch it trains on the training split (each
member sees its own augmented view of the batch, Zhao et al. 2020), measures validation
accuracy and calibration (NLL, ECE, Brier score; :mod:`splitsearch.train.calibration`) of the
ensemble and of each member, calls the callbacks (the search reports to Optuna and prunes
through them) and writes a checkpoint atomically.  A run stopped by a crash, Ctrl-C
or a callback continues from its last checkpoint bit for bit (same device, same thread count).
A write that fails (a full disk, a read-only folder) leaves the previous file whole; a checkpoint
that cannot be read is refused, naming the file, before any of it is used.
The test split is evaluated once, at the end, and never used to choose anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from splitsearch.data import DeviceData, StreamLoader, TensorLoader
from splitsearch.data.specs import class_names
from splitsearch.config import SplitConfig, compile_mode
from splitsearch.ensemble import Ensemble, FusionError, SequentialEnsemble, combine_logits
from splitsearch.errors import CheckpointReadError, OutputWriteError, TrainingError
from splitsearch.metrics import EpochMetrics, TrainResult
from splitsearch.train.augment import augment, mixup
from splitsearch.train.autotune import (MIN_MEASURED_TRIAL_STEPS, ModeCache, ModeChoice, ModeTiming, choose_mode,
                                        measure_mode)
from splitsearch.train.calibration import CalibrationMeter, Scores, ensemble_log_probs
from splitsearch.train.logits import member_logits
from splitsearch.train.losses import cot_weight
from splitsearch.train.optim import make_optimizer, make_scheduler
from splitsearch.train.parallel import SEMANTIC_MEMBERS_ONLY, MemberGroup
from splitsearch.train.semantic_stage import SemanticStage
from splitsearch.train.stage import MemberChange, PlainStage, TrainingStage
from splitsearch.train.step import CotrainStep, step_optimizer_options

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
MODEL_NAME = "model.pt"
# What a checkpoint must hold beside the stage's entries; one without them is refused as incomplete.
_CHECKPOINT_KEYS = ("config", "ensemble_kind", "ensemble", "optimizer", "scheduler", "history", "torch_rng",
                    "generator")


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the candidate diverged (a failure, not an interruption)."""


# A callback sees each epoch's metrics; returning True stops training (e.g. a pruned trial).
EpochCallback = Callable[[EpochMetrics], "bool | None"]
# Told a file of the run that could not be written, instead of the error being raised.
WriteErrorHandler = Callable[[OutputWriteError], None]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(device)


class Trainer:
    """Trains the S networks of ``config`` on ``data``.

    What a kind of run adds to co-training comes through the hooks of ``stage``
    (:mod:`splitsearch.train.stage`): nothing for plain co-training, the groups, the cut and
    their state for the semantic split.

    Args:
        config: the candidate (architecture, S, co-training and training settings).
        data: the dataset on the training device (:func:`splitsearch.data.prepare_data`).
        device: where to train; mixed precision (bf16) and channels_last are used on CUDA only.
        out_dir: where checkpoints, metrics and the final model go (None: nothing is written).
        mode: ``fused`` (one packed module), ``sequential`` (the authors' loop), their compiled
            (``compiled-*``) and CUDA-graph (``graphed-*``) variants, or ``auto``
            (:data:`~splitsearch.ensemble.EXECUTION_MODES`; :mod:`splitsearch.train.step`).
        callbacks: called after every epoch with its metrics; in member-parallel training rank
            0's decide whether to stop (give the others none).
        progress: show a progress bar per epoch (rank 0 only).
        group: the members this process trains, in member-parallel training
            (:mod:`splitsearch.train.parallel`); all S by default.  Every rank writes nothing but
            rank 0, which writes checkpoints and the model in the one-process format.  With data
            ranks (``group.data_ranks`` > 1) this rank trains its members on its shard of each
            batch, wrapped in ``DistributedDataParallel`` over the ranks that hold them.
        sync_bn: with data ranks, BatchNorm normalises with the statistics of the whole batch
            (``SyncBatchNorm`` over the data ranks, CUDA only) instead of this rank's shard.
        mode_cache: where ``auto`` keeps and finds the timings of a shape (the store, in a search).
        on_write_error: told a checkpoint, model or metrics file that could not be written, and
            training goes on without it.  The search passes one: its result goes to the database,
            and a checkpoint only lets an interrupted trial resume.  Without one (``train``, whose
            output is those files) the :class:`~splitsearch.errors.OutputWriteError` is raised.
    """

    def __init__(self, config: SplitConfig, data: DeviceData, device: torch.device | str = "cpu",
                 out_dir: str | Path | None = None, mode: str = "auto",
                 callbacks: Iterable[EpochCallback] = (), progress: bool = True,
                 group: MemberGroup | None = None, on_write_error: WriteErrorHandler | None = None,
                 sync_bn: bool = False, mode_cache: ModeCache | None = None) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.callbacks = list(callbacks)
        self.on_write_error = on_write_error
        self.group = group or MemberGroup.single(config.S)
        self.progress = progress and self.group.is_main
        self.mixed_precision = self.device.type == "cuda"
        if self.group.data_ranks > 1 and config.groups > 1:
            raise TrainingError(SEMANTIC_MEMBERS_ONLY)
        self.steps_per_epoch = len(data.train)
        self.total_steps = config.train.epochs * self.steps_per_epoch
        # What ``auto`` chose and from which timings (None: the mode was asked for, or not measured).
        self.mode_choice: ModeChoice | None = None
        if self.group.world > 1:  # a rank's members in the one-process checkpoint format
            mode = "compiled-sequential" if compile_mode(mode) == "default" else "sequential"
        elif mode == "auto":
            mode = self._auto_mode(mode_cache)
        if compile_mode(mode) == "reduce-overhead" and self.device.type != "cuda":
            raise TrainingError(f"--mode {mode} replays CUDA graphs and needs a CUDA device; "
                                f"use --mode {mode.replace('graphed', 'compiled')} on {self.device.type}")
        self.mode = mode

        # Augmentation settings the config leaves unset come from the dataset (digits: 1-pixel
        # padding, no flips); ``dataset_defaults`` says which, so callers can tell the user.
        self.settings, self.dataset_defaults = config.train.with_dataset_defaults(data.info)
        torch.manual_seed(config.train.seed)
        # The semantic split (groups > 1) trains the unsplit members first, then cuts them.
        write_file = None if self.out_dir is None else self._write_file
        self.stage: TrainingStage = (
            SemanticStage(config, self.device, class_names(data.info), write_file, self.group) if config.groups > 1
            else PlainStage(config, self.device, self.group.own)
        )
        self.ensemble: Ensemble = self.stage.build_ensemble(mode)
        if sync_bn and self.group.data_ranks > 1:
            self.ensemble = self.group.sync_batch_norm(self.ensemble, self.device)
        self._start_optimization(first_step=0)
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)
        self.history: list[EpochMetrics] = []

    def _auto_mode(self, cache: ModeCache | None) -> str:
        """``auto``: the checkpoint's mode when there is one to resume, else the measured fastest (:mod:`.autotune`)."""
        if self.out_dir is not None and (self.out_dir / CHECKPOINT_NAME).is_file():
            with contextlib.suppress(CheckpointReadError):  # a damaged one is refused by the resume itself
                state = read_checkpoint(self.out_dir / CHECKPOINT_NAME)
                packed = state["ensemble_kind"] == "FusedEnsemble"  # written before the mode was recorded
                return state.get("execution_mode", "fused" if packed else "sequential")
        if self.total_steps < MIN_MEASURED_TRIAL_STEPS:
            return "auto"  # too short to measure: packed on a GPU where possible, sequential on the CPU

        def measure(mode: str) -> ModeTiming | None:
            try:
                throwaway = Trainer(self.config, self.data, self.device, mode=mode, progress=False)
            except FusionError:
                return None
            return measure_mode(throwaway.train_steps, mode)

        self.mode_choice = choose_mode(self.config, self.device, self.total_steps, measure, cache)
        return self.mode_choice.mode

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self, resume: bool = False, test: bool = True) -> TrainResult:
        """Train until ``config.train.epochs`` (continuing a checkpoint if ``resume``), then test.

        ``test=False`` skips the test split (the search selects on validation accuracy only).
        Ctrl-C stops after writing nothing new: the checkpoint of the last finished epoch stays,
        and ``resume=True`` continues from it.

        Raises:
            CheckpointReadError: ``resume`` and the checkpoint cannot be read; nothing was trained.
            OutputWriteError: a file could not be written and there is no ``on_write_error``.
        """
        start = time.perf_counter()
        if resume:
            self.load_checkpoint()
        resumed_from_epoch = len(self.history)
        stopped_early = False
        for epoch in range(len(self.history) + 1, self.config.train.epochs + 1):
            metrics = self._train_epoch(epoch)
            self.history.append(metrics)
            self.save_checkpoint()
            if self.group.agree(any(callback(metrics) for callback in self.callbacks)):
                stopped_early = True
                break
        result = TrainResult(self.history, stopped_early, wall_seconds=time.perf_counter() - start,
                             val_samples=self.data.val.num_samples,
                             test_samples=self.data.test.num_samples if test and not stopped_early else 0,
                             resumed_from_epoch=resumed_from_epoch, semantic=self.stage.summary())
        if not stopped_early:
            if test:
                scores = self.evaluate(self.data.test)
                result.test_accuracy, result.test_member_accuracies = scores.accuracy, scores.member_accuracies
                result.test_calibration, result.test_member_calibration = scores.calibration, scores.member_calibration
            self.save_model()
        self._write_metrics(result)
        return result

    def _start_optimization(self, first_step: int) -> None:
        """Optimiser and schedule for the current members, the schedule continuing at ``first_step``."""
        if self.mixed_precision:
            # channels_last on CUDA only: on CPU it crashed convolution backward here (DESIGN.md).
            self.ensemble = self.ensemble.to(memory_format=torch.channels_last)
        compiled = compile_mode(self.mode)
        self.optimizer = make_optimizer(self.ensemble, self.config.train, self.config.wd_rule, self.config.S,
                                        step_optimizer_options(self.device, compiled is not None))
        for group in self.stage.optimizer_groups(self.config.train.lr):
            self.optimizer.add_param_group(group)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, self.config.train, first_step=first_step)
        # What a training step calls: the ensemble itself, or DDP over this member rank's data ranks.
        self.train_module = self.group.data_parallel(self.ensemble, self.device)
        self.step = CotrainStep(self.train_module, self.ensemble, self.group, self.optimizer, self.stage,
                                members=self.config.S, cotrain=self.config.S > 1 and self.config.lambda_cot > 0,
                                label_smoothing=self.settings.label_smoothing or 0.0,
                                autocast=self.mixed_precision, compile_mode=compiled)

    def _change_members(self, change: MemberChange) -> None:
        """Train the stage's new members from here (the semantic split's cut, also when resuming after it)."""
        self.ensemble = SequentialEnsemble(change.members)
        self._start_optimization(first_step=change.after_epoch * self.steps_per_epoch)

    def _train_epoch(self, epoch: int) -> EpochMetrics:
        train = self.config.train
        self.ensemble.train()
        self.data.train.epoch = epoch - 1  # the shuffle order depends on the epoch only
        self.data.train.members = self.config.S  # a streaming loader cuts the S views in its workers
        totals = torch.zeros(4, device=self.device)
        started = time.perf_counter()
        batches = tqdm(self.data.train, total=self.steps_per_epoch, desc=f"epoch {epoch}/{train.epochs}",
                       leave=False, disable=not self.progress, unit="batch")
        step = (epoch - 1) * self.steps_per_epoch
        for images, labels in batches:
            weight = cot_weight(self.config.lambda_cot, step / self.total_steps, train.cot_warmup_fraction)
            totals += self._train_step(images, labels, weight)
            step += 1
        totals = (self.group.sum_over_data(totals) / self.steps_per_epoch).tolist()
        if not math.isfinite(totals[0]):
            raise NonFiniteLossError(
                f"training diverged in epoch {epoch}: the mean loss is {totals[0]}; lower train.lr or check the data")
        if (change := self.stage.end_of_epoch(epoch, self.ensemble)) is not None:
            self._change_members(change)  # validated right away: the drop a cut causes shows in this epoch
        val = self.evaluate(self.data.val)
        return EpochMetrics(
            epoch=epoch, train_loss=totals[0], train_cross_entropy=totals[1], train_cotraining=totals[2],
            lr=self.scheduler.get_last_lr()[0], lambda_cot=weight, val_accuracy=val.accuracy,
            val_member_accuracies=val.member_accuracies, seconds=time.perf_counter() - started,
            train_regularisers=totals[3], val_nll=val.calibration.nll, val_ece=val.calibration.ece,
            val_brier=val.calibration.brier, val_member_nll=[member.nll for member in val.member_calibration],
            val_member_ece=[member.ece for member in val.member_calibration],
            val_member_brier=[member.brier for member in val.member_calibration],
        )

    def train_steps(self, count: int) -> None:
        """Run ``count`` optimiser steps on the first batches of an epoch, as :meth:`fit` would.

        What ``run``'s plan times (:mod:`splitsearch.search.plan_estimate`): a few real steps
        say more about an epoch on this machine than MACs do.  It changes the weights, so a
        trainer used for it is thrown away after.
        """
        self.ensemble.train()
        self.data.train.members = self.config.S
        for _, (images, labels) in zip(range(count), self.data.train):
            self._train_step(images, labels, self.config.lambda_cot)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, lambda_cot: float) -> torch.Tensor:
        """One optimiser step; returns this rank's share of the step's loss parts (their sum over data ranks)."""
        train = self.settings
        # Every rank draws all S views of the whole batch (and mixes them), so the generator
        # advances as in one process; a data rank then keeps its shard of them.
        views = augment(images, self.config.S, train, self.generator, self.data.normalization)
        mixed_targets, mix_weight = None, 1.0
        if train.mixup_alpha > 0:
            mixed = mixup(views, labels, train.mixup_alpha, self.generator)
            views, mixed_targets, mix_weight = mixed.views, mixed.y_b, mixed.lam
        parts = self.step(views, labels, mixed_targets, mix_weight, lambda_cot)  # this rank's share
        self.stage.after_optimizer_step(self.scheduler.get_last_lr()[0])
        self.scheduler.step()
        return parts

    def evaluate(self, loader: TensorLoader | StreamLoader) -> Scores:
        """Accuracy and calibration of the ensemble (``config.train.combine``) and of each member on ``loader``."""
        if loader.num_samples == 0:
            return Scores.empty(self.config.S)
        correct_ensemble = torch.zeros((), device=self.device)
        correct_members = torch.zeros(self.config.S, device=self.device)
        meter = CalibrationMeter(1 + self.config.S, self.data.info.num_classes, self.device)
        for logits, labels in self.batch_logits(loader, shared=True):
            combined = combine_logits(logits, self.config.train.combine)
            correct_ensemble += (combined.argmax(-1) == labels).sum()
            correct_members += (logits.argmax(-1) == labels).sum(-1)
            meter.update(ensemble_log_probs(logits, combined), labels)
        correct = self.group.sum_over_data(torch.cat([correct_ensemble[None], correct_members]))
        count = loader.num_samples
        ensemble, *members = meter.compute(self.group.data_group)
        return Scores((correct[0] / count).item(), (correct[1:] / count).tolist(), ensemble, members)

    def batch_logits(self, loader: TensorLoader | StreamLoader,
                     shared: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every member's logits ``[S, B, K]`` and the labels, batch by batch (:func:`~splitsearch.train.logits.member_logits`)."""
        return member_logits(self.ensemble, loader, self.data, self.group, self.mixed_precision, shared)

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any] | None:
        """Everything needed to continue exactly: weights, optimiser, schedule, RNG, history.

        In member-parallel training every rank must call it (it gathers the members); rank 0 gets
        the state of all S members in the one-process format, the other ranks None.
        """
        members = self.group.gather_training_state(self.ensemble.state_dict(), self.optimizer.state_dict())
        entries = self.stage.checkpoint_entries()  # gathered from every rank, as the members are
        if members is None:
            return None
        ensemble, optimizer = members
        state = {
            "config": self.config.to_dict(),
            "ensemble_kind": type(self.ensemble).__name__,
            "ensemble": ensemble,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "history": [asdict(metrics) for metrics in self.history],
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "execution_mode": self.mode,
            **entries,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def warm_start(self, members: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
        """Start from another candidate's trained members wherever the tensors fit; returns their names.

        The block-wise split paper fine-tunes each split network from the one before it: blocks whose shapes did
        not change keep their weights, a newly split block and its fusion start fresh.  Call it
        before :meth:`fit`; a checkpoint that ``fit(resume=True)`` finds wins over it.

        Raises:
            ValueError: a fused ensemble (its members are packed copies) or another number of members.
        """
        if not isinstance(self.ensemble, SequentialEnsemble):
            raise ValueError("a warm start needs the sequential mode (--mode sequential)")
        if len(members) != len(self.ensemble.members):
            raise ValueError(f"a warm start from {len(members)} members into {len(self.ensemble.members)}")
        taken = []
        for network, state in zip(self.ensemble.members, members):
            own = network.state_dict()
            fitting = {name: tensor for name, tensor in state.items()
                       if name in own and own[name].shape == tensor.shape}
            network.load_state_dict(fitting, strict=False)
            taken += fitting
        return taken

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (temporary file, then rename): a crash never leaves half of one."""
        if self.out_dir is not None and (state := self.state()) is not None:
            self._write_file(CHECKPOINT_NAME, _serialized(state))

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint in ``out_dir``; False if there is none yet.

        Raises:
            CheckpointReadError: the file is truncated, corrupt or incomplete (checked before
                anything is restored, so the trainer can still train from the start).
        """
        if self.out_dir is None or not (self.out_dir / CHECKPOINT_NAME).exists():
            return False
        state = read_checkpoint(self.out_dir / CHECKPOINT_NAME, self.device)
        if state["config"] != self.config.to_dict():
            raise TrainingError(
                f"the checkpoint in {self.out_dir} was written for a different config; "
                "use another --out directory or the same config"
            )
        if state["ensemble_kind"] != type(self.ensemble).__name__:
            raise TrainingError(
                f"the checkpoint in {self.out_dir} holds a {state['ensemble_kind']}; resume in the same mode"
            )
        if (change := self.stage.resume(state)) is not None:
            self._change_members(change)
        # Written for all S members, by any number of processes: this rank takes its members' part.
        ensemble, optimizer = self.group.own_training_state(state["ensemble"], state["optimizer"])
        self.ensemble.load_state_dict(ensemble)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = [EpochMetrics(**metrics) for metrics in state["history"]]
        torch.set_rng_state(state["torch_rng"].cpu())
        self.generator.set_state(state["generator"].cpu())
        if "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        return True

    def save_model(self) -> None:
        """The S trained members as deployable state dicts, with the config that rebuilds them.

        The input normalisation (the training split's per-channel mean and std) goes with them:
        it is part of the function the members learned, and ``splitsearch deploy`` embeds it
        without having to load the dataset again.
        """
        if self.out_dir is None:
            return
        members = self.group.gather_members([member.state_dict() for member in self.ensemble.members])
        if members is not None:
            normalization = self.data.normalization
            model = {"config": self.config.to_dict(), "members": members,
                     "normalization": {"mean": list(normalization.mean), "std": list(normalization.std)}}
            self._write_file(MODEL_NAME, _serialized(model))

    def _write_metrics(self, result: TrainResult) -> None:
        if self.out_dir is not None and self.group.is_main:
            document = {"config": self.config.to_dict(), "dataset_defaults": self.dataset_defaults, **result.to_dict()}
            self._write_file(METRICS_NAME, json.dumps(document, indent=2).encode())

    def _write_file(self, name: str, data: bytes | memoryview) -> None:
        """Write ``out_dir / name`` atomically; a failure goes to ``on_write_error`` if there is one, else is raised."""
        path = self.out_dir / name
        try:
            atomic_write(path, data)
        except OSError as error:
            failure = OutputWriteError(path, _os_error_reason(error))
            if self.on_write_error is None:
                raise failure from error
            self.on_write_error(failure)


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` into a temporary file renamed over ``path``: ``path`` is the old file or the new one.

    The data is flushed and synced before the rename, so a full disk fails here, as an
    ``OSError``, and never leaves a truncated file to be found by a later resume.  The temporary
    file of a failed write is removed: on a full disk it is what fills it.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def _serialized(obj: Any) -> memoryview:
    """``obj`` as ``torch.save`` writes it, in memory.

    Written to disk by Python, a full disk fails as an ``OSError`` that says so; torch's own file
    writer reports it as a ``RuntimeError`` about stream positions.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, checked to hold what a resume needs.

    Raises:
        CheckpointReadError: naming ``path``, when it is truncated, corrupt or not a checkpoint.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a damaged file fails as RuntimeError, EOFError, UnpicklingError, ... by the damage
        raise CheckpointReadError(path, f"{type(error).__name__}: {' '.join(str(error).split())}") from error
    missing = [key for key in _CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointReadError(path, f"it lacks {', '.join(missing)}")
    return state


def _os_error_reason(error: OSError) -> str:
    """``[Errno 28] No space left on device``: the error without the file name, the same for every file it hits."""
    if error.strerror is None:
        return " ".join(str(error).split())
    return f"[Errno {error.errno}] {error.strerror}"
