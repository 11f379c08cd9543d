"""How well an ensemble's and its members' probabilities are calibrated: NLL, ECE and the Brier score.

Ensembles of small networks are known for better-calibrated probabilities than one large network
(Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep
Ensembles", 2017; Laurent et al., "Packed-Ensembles for Efficient Uncertainty Estimation", 2023).
A split that brings no accuracy but halves the calibration error is worth knowing about, so every
evaluation measures, beside accuracy, for the ensemble's prediction and for each member:

- the negative log-likelihood (NLL): the mean cross-entropy of the true class, in nats;
- the expected calibration error (ECE): the images binned by confidence (the top probability) into
  :data:`ECE_BINS` equal-width bins, the gap between accuracy and mean confidence in each bin,
  weighted by the bin's share of the images.  Computed by torchmetrics'
  ``MulticlassCalibrationError`` (L1 norm), the definition of Guo et al., "On Calibration of
  Modern Neural Networks", 2017;
- the Brier score: the squared distance between the probability vector and the one-hot label,
  summed over classes and averaged over images (0 is perfect, 2 the worst; Brier, 1950).

The ensemble's probabilities are the softmax of its combined prediction (``train.combine``): the
mean of the members' logits by default.  Lower is better for all three.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from splitsearch.metrics import Calibration

# The bins of the expected calibration error, as the literature and torch-uncertainty report it.
ECE_BINS = 15


class CalibrationMeter:
    """Accumulates the calibration of several outputs (the ensemble, then each member) over batches.

    Args:
        outputs: how many predictions are measured side by side.
        classes: the number of classes.
        device: where the batches' tensors are.
    """

    def __init__(self, outputs: int, classes: int, device: torch.device | str) -> None:
        # Imported here: torchmetrics takes seconds to import, and only evaluation needs it.
        from torchmetrics.classification import MulticlassCalibrationError

        self._ece = [MulticlassCalibrationError(num_classes=classes, n_bins=ECE_BINS, norm="l1",
                                                sync_on_compute=False).to(device) for _ in range(outputs)]
        self._sums = torch.zeros(2, outputs, dtype=torch.float64, device=device)  # NLL, Brier
        self._count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, log_probs: Tensor, labels: Tensor) -> None:
        """Add a batch: ``log_probs`` ``[outputs, B, K]`` (log-softmax), ``labels`` ``[B]``."""
        log_probs = log_probs.float()
        probs = log_probs.exp()
        outputs, batch, classes = log_probs.shape
        nll = -log_probs.gather(-1, labels.expand(outputs, batch).unsqueeze(-1)).squeeze(-1)
        brier = (probs - F.one_hot(labels, classes).to(probs.dtype)).square().sum(-1)
        self._sums += torch.stack([nll.sum(-1), brier.sum(-1)]).double()
        self._count += batch
        for metric, output in zip(self._ece, probs):
            metric.update(output, labels)

    def compute(self, data_group: object | None = None) -> list[Calibration]:
        """Each output's calibration over every batch added, in order.

        ``data_group``: a process group whose ranks each added their own share of the images
        (data-parallel evaluation); their counts are summed and their ECE states gathered, so every
        rank gets the figures of the whole split.  None: this process saw every image.
        """
        sums, count = self._sums, self._count
        if data_group is not None:
            totals = torch.cat([sums.flatten(), count[None]])
            dist.all_reduce(totals, group=data_group)
            sums, count = totals[:-1].view_as(sums), totals[-1]
            for metric in self._ece:
                metric.sync(dist_sync_fn=_gather_by_sum, process_group=data_group,
                            distributed_available=lambda: True)
        ece = [metric.compute().item() for metric in self._ece]
        nll, brier = (sums / count).tolist()
        return [Calibration(*values) for values in zip(nll, ece, brier)]


def ensemble_log_probs(member_logits: Tensor, combined: Tensor) -> Tensor:
    """``[S + 1, B, K]`` log-probabilities: the ensemble's combined prediction first, then each member's."""
    return torch.cat([combined.unsqueeze(0), member_logits]).float().log_softmax(-1)


def _gather_by_sum(tensor: Tensor, group: object | None = None) -> list[Tensor]:
    """Every rank's ``tensor`` (their lengths may differ), by all-reducing a zero-filled table.

    What torchmetrics calls to gather a state; its own all-gather fails on gloo with CUDA tensors,
    where an all-reduce works (as :meth:`~splitsearch.train.parallel.MemberGroup.gather` does).
    """
    ranks, rank = dist.get_world_size(group), dist.get_rank(group)
    lengths = torch.zeros(ranks, dtype=torch.long, device=tensor.device)
    lengths[rank] = len(tensor)
    dist.all_reduce(lengths, group=group)
    table = torch.zeros((ranks, int(lengths.max()), *tensor.shape[1:]), dtype=torch.float64, device=tensor.device)
    table[rank, :len(tensor)] = tensor.double()
    dist.all_reduce(table, group=group)
    return [table[index, :length].to(tensor.dtype) for index, length in enumerate(lengths.tolist())]



@dataclass(frozen=True)
class Scores:
    """What one evaluation of a split measured: accuracy and calibration, of the ensemble and of each member."""

    accuracy: float
    member_accuracies: list[float]
    calibration: Calibration
    member_calibration: list[Calibration]

    @classmethod
    def empty(cls, members: int) -> Scores:
        """The scores of a split without images: every figure NaN."""
        nan = Calibration(float("nan"), float("nan"), float("nan"))
        return cls(float("nan"), [float("nan")] * members, nan, [nan] * members)
