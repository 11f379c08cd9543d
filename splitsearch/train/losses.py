"""Co-training objective of divide-and-co-train (Zhao et al. 2020, Sec. 3.2).

loss = sum_i CE(p_i, y) + lambda_cot * L_cot,   L_cot = H(mean_i p_i) - mean_i H(p_i)

L_cot is the (generalised) Jensen-Shannon divergence of the S members' softmax outputs: zero
when they agree, positive otherwise.  No temperature; gradients flow through every term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The authors floor the warmed-up weight at this value so the co-training term is never off.
_MIN_WARMUP_WEIGHT = 0.005


def entropy(probabilities: Tensor) -> Tensor:
    """Shannon entropy over the last axis (0 log 0 = 0)."""
    return -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(-1)


def js_divergence(logits: Tensor) -> Tensor:
    """H(mean_i p_i) - mean_i H(p_i) for logits [S, B, K], averaged over the batch."""
    probabilities = logits.float().softmax(-1)
    return (entropy(probabilities.mean(0)) - entropy(probabilities).mean(0)).mean()


@dataclass(frozen=True)
class CotrainLoss:
    """The parts of one step's loss, kept apart so they can be logged."""

    total: Tensor
    cross_entropy: Tensor
    cotraining: Tensor


def cotraining_loss(
    logits: Tensor,
    targets: Tensor,
    lambda_cot: float | Tensor,
    mixed_targets: Tensor | None = None,
    mix_weight: float | Tensor = 1.0,
    label_smoothing: float = 0.0,
) -> CotrainLoss:
    """Sum of the members' cross-entropies plus ``lambda_cot`` x JS divergence.

    Args:
        logits: [S, B, K].
        targets: [B] class indices.
        lambda_cot: weight of the co-training term for this step (already warmed up); a tensor
            (a compiled step's, which must not branch on its value) always turns the term on.
        mixed_targets: with mixup, the partner images' labels; the cross-entropy becomes
            ``mix_weight * CE(targets) + (1 - mix_weight) * CE(mixed_targets)``.
        mix_weight: mixup's lambda.
        label_smoothing: each member's cross-entropy against targets smoothed this much
            (torch's ``label_smoothing``; 0.1 in the ImageNet recipe).  The co-training term
            compares the members' predictions with each other and is not smoothed.
    """
    members = logits.shape[0]
    flat = logits.float().flatten(0, 1)

    def member_ce(labels: Tensor) -> Tensor:
        # Mean over the batch, summed over members: each member's CE has the usual scale.
        return F.cross_entropy(flat, labels.repeat(members), label_smoothing=label_smoothing) * members

    cross_entropy = member_ce(targets)
    if mixed_targets is not None:
        cross_entropy = mix_weight * cross_entropy + (1 - mix_weight) * member_ce(mixed_targets)
    # A tensor weight (a compiled step's) is on: the step passes 0.0 when the term is off.
    if members > 1 and (isinstance(lambda_cot, Tensor) or lambda_cot > 0):
        cotraining = js_divergence(logits)
    else:
        cotraining = torch.zeros((), device=logits.device)
    return CotrainLoss(cross_entropy + lambda_cot * cotraining, cross_entropy, cotraining)


def cot_weight(lambda_cot: float, progress: float, warmup_fraction: float) -> float:
    """lambda_cot warmed up linearly over the first ``warmup_fraction`` of training.

    ``progress`` is the fraction of training done (0..1).  As in the authors' code the warmed-up
    value is floored at 0.005 (unless lambda_cot itself is smaller).
    """
    if warmup_fraction <= 0 or progress >= warmup_fraction:
        return lambda_cot
    return max(lambda_cot * progress / warmup_fraction, min(_MIN_WARMUP_WEIGHT, lambda_cot))
