"""Optimiser, weight-decay dividing rules and the learning-rate schedule.

Weight decay applies to convolution and linear weights only, chosen by module type (the
authors' parameter-name filter misses BN layers named ``bn*``); BN parameters and biases are not
decayed.  The small networks' decay follows a dividing rule (Zhao et al. 2020, Eq. 6 and 16).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Mapping

import torch
from torch import nn

from splitsearch.config import MOMENTUM_CYCLE, TrainConfig


def divided_weight_decay(weight_decay: float, rule: str, S: int) -> float:
    """Weight decay of each of S small networks: ``none`` wd, ``linear`` wd/S, ``exp`` wd*exp(1/S - 1)."""
    if rule == "none":
        return weight_decay
    if rule == "linear":
        return weight_decay / S
    if rule == "exp":
        return weight_decay * math.exp(1 / S - 1)
    raise ValueError(f"unknown weight-decay rule {rule!r}: use none, linear or exp")


def _decays(module: nn.Module) -> bool:
    """Convolutions and linear layers (also packed ones, which say so with ``decay_weight``)."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or getattr(module, "decay_weight", False)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups: conv/linear weights with ``weight_decay``, everything else without."""
    decayed = {id(module.weight) for module in model.modules() if _decays(module) and module.weight is not None}
    with_decay, without_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (with_decay if id(parameter) in decayed else without_decay).append(parameter)
    return [
        {"params": with_decay, "weight_decay": weight_decay},
        {"params": without_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, train: TrainConfig, wd_rule: str, S: int,
                   implementation: Mapping[str, bool] | None = None) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum and the divided weight decay on conv/linear weights.

    ``implementation``: ``{"fused": True}`` or ``{"foreach": True}`` (a compiled step's,
    :func:`~splitsearch.train.step.step_optimizer_options`); torch's default otherwise.
    """
    weight_decay = divided_weight_decay(train.weight_decay, wd_rule, S)
    return torch.optim.SGD(
        parameter_groups(model, weight_decay),
        lr=train.lr,
        momentum=train.momentum,
        nesterov=train.nesterov and train.momentum > 0,
        **(implementation or {}),
    )


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, train: TrainConfig,
                   first_step: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-iteration schedule of ``train.lr_schedule`` (call ``step()`` after every optimiser step).

    ``warmup_cosine``: linear warm-up over ``lr_warmup_fraction`` of the steps, then cosine
    decay to 0 (the authors' schedule).  ``onecycle``: torch's ``OneCycleLR`` with
    ``pct_start = lr_warmup_fraction``: cosine warm-up from lr/25, cosine annealing to lr/25e4,
    and with ``cycle_momentum`` the momentum swung between ``momentum`` -+ 0.05 against it.
    ``first_step`` continues a run's schedule with a new optimiser (the semantic split's members
    change at the cut, the schedule does not).
    """
    if train.lr_schedule == "onecycle":
        return _one_cycle(optimizer, total_steps, train, first_step)
    warmup_steps = int(round(train.lr_warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(first_step + step, total_steps, warmup_steps)
    )


def _one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, train: TrainConfig,
               first_step: int) -> torch.optim.lr_scheduler.OneCycleLR:
    momentum = {"base_momentum": train.momentum - MOMENTUM_CYCLE, "max_momentum": train.momentum + MOMENTUM_CYCLE}
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=max(total_steps, 2),
        # OneCycleLR needs some warm-up and some annealing; a fraction of 0 or 1 means "as little as it allows".
        pct_start=min(max(train.lr_warmup_fraction, 1e-6), 1 - 1e-6),
        cycle_momentum=train.cycle_momentum, **(momentum if train.cycle_momentum else {}))
    with warnings.catch_warnings():
        # Advancing a fresh schedule to ``first_step`` before any optimiser step is what we mean.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        for _ in range(first_step):
            scheduler.step()
    return scheduler
