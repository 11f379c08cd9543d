"""Optimiser, weight-decay dividing rules and the learning-rate schedule.

Weight decay applies to convolution and linear weights only, chosen by module type (the
authors' parameter-name filter misses BN layers named ``bn*``); BN parameters and biases are not
decayed.  The small networks' decay follows a dividing rule (METHODS.md section 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitsearch.config import TrainConfig


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


def make_optimizer(model: nn.Module, train: TrainConfig, wd_rule: str, S: int) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum and the divided weight decay on conv/linear weights."""
    weight_decay = divided_weight_decay(train.weight_decay, wd_rule, S)
    return torch.optim.SGD(
        parameter_groups(model, weight_decay),
        lr=train.lr,
        momentum=train.momentum,
        nesterov=train.nesterov and train.momentum > 0,
    )


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float,
                   first_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration warm-up + cosine schedule (call ``step()`` after every optimiser step).

    ``first_step`` continues a run's schedule with a new optimiser (the semantic split's members
    change at the cut, the schedule does not).
    """
    warmup_steps = int(round(warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(first_step + step, total_steps, warmup_steps)
    )
