"""One co-training step as one function: the members' forwards, the co-training loss, backward, SGD.

The :class:`~splitsearch.train.loop.Trainer` draws the batch's views (augmentation, mixup) and
the step does the rest, the process-group concerns of a step included (this rank's members and
data shard, the gather of the other ranks' logits, the loss weighting of unequal shards), so that
one callable is what ``torch.compile`` captures, whatever else the loop does (validation,
checkpoints, callbacks).  Eager and compiled steps are one class: ``compile_mode`` None runs the
same function eagerly.

What is compiled: in one process, the members' forwards and the loss together (AOTAutograd
compiles their backward with them); in a process group, each rank's members' forward only, since
gathering the other ranks' logits is a collective the compiler would break the graph at.  The
optimiser step is not compiled: the learning rate changes every step and would be a recompile
trigger; a compiled step uses the fused SGD kernel (foreach where fused is not supported) instead.

Shapes stay fixed within a trial: the training loader drops a short last batch
(:func:`splitsearch.data.prepare_data`), and the step's scalars (the co-training weight, mixup's
lambda) enter a compiled step as tensors, so a new value does not recompile.  A compile that
fails falls back to eager with one warning line naming the reason.

Across trials, Dynamo keeps the compiled versions of the step in one cache per function, guarded
by the parameters' shapes, so a later candidate of a shape compiled before in this process pays
nothing.  That cache holds at most 8 versions (``torch._dynamo.config.recompile_limit``) and
beyond them Dynamo runs the step eagerly, silently: a search compiles a new shape per candidate,
so after 8 candidates every step would have been eager while the trial said compiled.  The step
therefore counts the shapes compiled in this process and empties Dynamo's cache
(``torch.compiler.reset``) before it would fill; inductor's on-disk caches still serve a shape
compiled before.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from splitsearch.errors import TrainingError
from splitsearch.train.losses import cotraining_loss
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.stage import TrainingStage

# What a step's loss is made of, besides its inputs: fixed for a trial.
LossParts = tuple[Tensor, Tensor, Tensor]

# Shapes compiled in this process since Dynamo's cache was last emptied.  One shape can take two
# of the cache's 8 entries (with and without mixup's targets), so it is emptied at half of them.
MAX_COMPILED_SHAPES = 4
_compiled_shapes: set[tuple[Any, ...]] = set()


def _make_room_for(shape: tuple[Any, ...]) -> None:
    """Empty Dynamo's cache if compiling ``shape`` could push a step past its recompile limit (eager, silently)."""
    if shape in _compiled_shapes:
        return
    if len(_compiled_shapes) >= MAX_COMPILED_SHAPES:
        torch.compiler.reset()
        _compiled_shapes.clear()
    _compiled_shapes.add(shape)


class CotrainStep:
    """A co-training step over ``module``'s members (all S, or this rank's share in a process group).

    Args:
        module: what runs the members: the ensemble itself, or DDP around it (data ranks).
        ensemble: the members (the stage's regularisers read them).
        group: the process-group concerns: gathering the other ranks' logits, the data shard.
        optimizer, stage: the optimiser, and the stage whose regulariser and hook the step calls.
        members: S (all members, whatever this rank trains): the loss is over all S.
        cotrain: whether the co-training term is on (``lambda_cot`` > 0 and S > 1): fixed for a
            trial, so a compiled step does not branch on the weight's value.
        label_smoothing: each member's cross-entropy's smoothing.
        autocast: bf16 autocast around the forwards (CUDA).
        compile_mode: None (eager), ``default`` or ``reduce-overhead`` (CUDA graphs): ``torch.compile``'s.
        backend: ``torch.compile``'s backend (the tests give one that fails, to see the fallback).
    """

    def __init__(self, module: nn.Module, ensemble: nn.Module, group: MemberGroup, optimizer: torch.optim.Optimizer,
                 stage: TrainingStage, *, members: int, cotrain: bool, label_smoothing: float, autocast: bool,
                 compile_mode: str | None = None, backend: str | Callable[..., Any] = "inductor") -> None:
        self.module = module
        self.ensemble = ensemble
        self.group = group
        self.optimizer = optimizer
        self.stage = stage
        self.members = members
        self.cotrain = cotrain
        self.label_smoothing = label_smoothing
        self.autocast = autocast
        self.device = next(ensemble.parameters()).device
        self.compile_mode = compile_mode
        self._compiled: Callable[..., LossParts] | None = None
        self._proven = False  # the compiled step has run forward and backward once
        if compile_mode is not None:
            options = {"mode": compile_mode, "backend": backend} if backend == "inductor" else {"backend": backend}
            if group.world == 1:
                self._compiled = torch.compile(self._forward_loss, fullgraph=False, **options)
            else:
                compiled_module = torch.compile(module, **options)
                self._compiled = lambda *args: self._forward_loss(*args, module=compiled_module)

    @property
    def compiled(self) -> bool:
        """Whether the step runs compiled (False after a compile failure fell back to eager)."""
        return self._compiled is not None

    def __call__(self, views: Tensor, labels: Tensor, mixed_targets: Tensor | None, mix_weight: float,
                 lambda_cot: float) -> Tensor:
        """One optimiser step on the batch: ``views`` ``[S, B, C, H, W]`` of all members, ``labels`` ``[B]``.

        This process trains its members (``group.own``) on its data rank's shard of the batch
        (``group.shard``).  Returns its share of the step's loss parts (total, cross-entropy,
        co-training, regularisers), detached: summed over the data ranks they are the batch's.

        Raises:
            TrainingError: the batch is too small to give every data rank an image.
        """
        batch, shard = len(labels), self.group.shard(len(labels))
        labels = labels[shard]
        if mixed_targets is not None:
            mixed_targets = mixed_targets[shard]
        if len(labels) == 0:
            raise TrainingError(f"a batch of {batch} images cannot be shared by {self.group.data_ranks} data ranks: "
                                f"use train.batch_size of at least {self.group.data_ranks}")
        views = views[self.group.own, shard].contiguous()
        # The loss is a mean over this shard; DDP averages the D ranks' gradients, so weighting
        # each by its share of the batch (1 for equal shards) gives the gradient of the batch mean.
        share = len(labels) / batch
        parts = self._step(views, labels, mixed_targets, mix_weight, lambda_cot, share * self.group.data_ranks)
        return parts * share if share != 1 else parts

    def _step(self, views: Tensor, labels: Tensor, mixed_targets: Tensor | None, mix_weight: float,
              lambda_cot: float, scale: float) -> Tensor:
        """Forward, loss, backward (the loss times ``scale``) and the optimiser step on this rank's part."""
        if self._compiled is not None and self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
        self.optimizer.zero_grad(set_to_none=True)
        if self._compiled is not None and not self._proven:
            _make_room_for(self._shape(views, mixed_targets))
            try:
                parts = self._backward(self._compiled, views, labels, mixed_targets, mix_weight, lambda_cot, scale)
                self._proven = True
            except Exception as error:  # noqa: BLE001 - any failure of the first compiled step: eager can still run
                self._fall_back(error)
                parts = self._backward(self._forward_loss, views, labels, mixed_targets, mix_weight, lambda_cot,
                                       scale)
        else:
            parts = self._backward(self._compiled or self._forward_loss, views, labels, mixed_targets, mix_weight,
                                   lambda_cot, scale)
        self.optimizer.step()
        return parts

    def _shape(self, views: Tensor, mixed_targets: Tensor | None) -> tuple[Any, ...]:
        """What Dynamo's guards on this step check: the inputs', parameters' and settings' shapes and values."""
        return (self.compile_mode, type(self.module).__qualname__, self.group.world, tuple(views.shape),
                mixed_targets is None, self.cotrain, self.label_smoothing, self.autocast,
                tuple(tuple(parameter.shape) for parameter in self.module.parameters()))

    def _backward(self, forward_loss: Callable[..., LossParts], views: Tensor, labels: Tensor,
                  mixed_targets: Tensor | None, mix_weight: float, lambda_cot: float, scale: float) -> Tensor:
        if forward_loss != self._forward_loss:  # a compiled one (bound methods are new objects: compare, not "is")
            # Scalars as tensors: a compiled step would otherwise see a new constant every step.
            mix_weight, lambda_cot = (torch.tensor(value, device=self.device) for value in (mix_weight, lambda_cot))
        total, cross_entropy, cotraining = forward_loss(views, labels, mixed_targets, mix_weight, lambda_cot)
        regularisation = self.stage.regularisation(self.ensemble)
        total = total + regularisation
        (total * scale if scale != 1 else total).backward()
        return torch.stack([total, cross_entropy, cotraining, regularisation]).detach()

    def _forward_loss(self, views: Tensor, labels: Tensor, mixed_targets: Tensor | None, mix_weight: float | Tensor,
                      lambda_cot: float | Tensor, module: nn.Module | None = None) -> LossParts:
        """The members' forwards and the co-training loss: the part a compiled step captures."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            # This process's members see their views; the others' logits arrive as constants.
            logits = self.group.gather((module or self.module)(views))
        loss = cotraining_loss(logits, labels, lambda_cot if self.cotrain else 0.0, mixed_targets, mix_weight,
                               label_smoothing=self.label_smoothing)
        return loss.total, loss.cross_entropy, loss.cotraining

    def _fall_back(self, error: Exception) -> None:
        """Train on eagerly, told in one line: the first line of the compiler's message names the reason."""
        self._compiled = None
        self.optimizer.zero_grad(set_to_none=True)
        cause = error
        while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
            cause = inner  # the compiler wraps the backend's own error
        reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), "no message")
        warnings.warn(f"compiling the co-training step failed ({type(cause).__name__}: {reason}); "
                      "training it eagerly instead", RuntimeWarning, stacklevel=3)


def step_optimizer_options(device: torch.device, compiled: bool) -> dict[str, bool]:
    """SGD's implementation for a step: fused where this torch has it for ``device``, else foreach.

    Only a compiled step changes it; an eager step keeps torch's default, so that eager training
    gives the numbers it gave before compiled steps existed.
    """
    if not compiled:
        return {}
    probe = nn.Parameter(torch.zeros(1, device=device))
    try:
        torch.optim.SGD([probe], lr=0.1, fused=True)
    except (RuntimeError, ValueError):
        return {"foreach": True}
    return {"fused": True}
