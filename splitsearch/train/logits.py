"""Every member's logits over a split, batch by batch, gathered from the ranks that hold the members.

Validation during training (:meth:`~splitsearch.train.loop.Trainer.evaluate`) and ``splitsearch
evaluate`` (:mod:`splitsearch.train.evaluate`) read a split the same way: in evaluation mode,
every member seeing the same normalised images, the members' logits all-gathered across member
ranks and, where data ranks hold the same members, the batches shared out among them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from splitsearch.data import DeviceData, StreamLoader, TensorLoader
from splitsearch.train.parallel import MemberGroup


@torch.no_grad()
def member_logits(ensemble: nn.Module, loader: TensorLoader | StreamLoader, data: DeviceData, group: MemberGroup,
                  mixed_precision: bool, shared: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every member's logits ``[S, B, K]`` (in float32, gathered from all ranks) and the labels, batch by batch.

    ``ensemble`` runs this rank's members (``group.own``) on ``data``'s normalisation of each
    batch; ``mixed_precision``: under bf16 autocast (CUDA).  ``shared``: the data ranks share the
    batches out (data rank d takes every D-th from the d-th); otherwise every rank sees every
    batch.  Either way with data rank 0's BatchNorm statistics.
    """
    ensemble.eval()
    group.share_buffers(ensemble)
    device = next(ensemble.parameters()).device
    for index, (images, labels) in enumerate(loader):
        if shared and not group.owns_batch(index):
            continue
        views = data.normalization(images).unsqueeze(0).expand(group.per_rank, *images.shape)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision):
            yield group.gather(ensemble(views.contiguous()).float()), labels
