"""Evaluate trained weights: accuracy and per-image predictions, in one process or in a process group.

``splitsearch evaluate`` answers "how good are these weights on this split" without training,
for the weights ``train`` writes (``model.pt``) or ``export --weights`` keeps, a semantic split's
cut members included.  With ``--nproc`` the S members run in as many processes, each on its own
device (Zhao et al. measure the latency of exactly this, Fig. 6): every rank sees the same batch,
runs its own members, and the members' logits are all-gathered and combined, so the figures
equal one process's (``tests/test_evaluate.py`` checks it).  With ``--data-parallel D`` the
processes form a grid as in training: the D ranks that hold the same members share the batches
out, and rank 0 puts their logits back in the split's order.  The ranks are started and
supervised by :mod:`splitsearch.train.launch`, as a member-parallel training's are.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from splitsearch.config import SplitConfig
from splitsearch.ensemble import combine_logits, make_ensemble
from splitsearch.errors import TrainingError
from splitsearch.metrics import Calibration
from splitsearch.train.calibration import CalibrationMeter, ensemble_log_probs
from splitsearch.train.launch import rank_device
from splitsearch.train.logits import member_logits
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.plan import TrainRequest, load_weights, plan_training, read_weights

SPLITS = ("test", "val")


@dataclass(frozen=True)
class Evaluation:
    """What rank 0 measured: the ensemble's and each member's accuracy and calibration, and every image's prediction.

    ``labels``, ``predictions`` (the combined logits' argmax) and ``member_predictions``
    (``[S, N]``) follow the split's order, so a row of the predictions file is an image of it.
    ``processes``: the ranks that joined the evaluation's group (1 in one process).
    """

    config: SplitConfig
    split: str
    accuracy: float
    member_accuracies: list[float]
    labels: torch.Tensor
    predictions: torch.Tensor
    member_predictions: torch.Tensor
    seconds: float
    calibration: Calibration
    member_calibration: list[Calibration]
    processes: int = 1

    @property
    def samples(self) -> int:
        return len(self.labels)

    def write_predictions(self, path: Path) -> None:
        """One CSV row per image: its index in the split, its label, the ensemble's and each member's prediction."""
        members = [f"member_{index}" for index in range(1, self.config.S + 1)]
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["index", "label", "prediction", *members])
            for index, row in enumerate(zip(self.labels.tolist(), self.predictions.tolist(),
                                            *self.member_predictions.tolist())):
                writer.writerow([index, *row])


def evaluate_weights(request: TrainRequest, split: str, device: str | None = None,
                     members_parallel: bool = False) -> Evaluation | None:
    """Evaluate ``request.init_from``'s weights on ``split`` of the request's dataset.

    The validation split is the one the config's training carved (same seed and fraction);
    ``test`` is the dataset's own test split.  In a process group (``members_parallel``) this
    rank runs its share of the members on its share of the batches (``request.data_parallel``
    data ranks per member rank); rank 0 returns the evaluation, the others None.

    Raises:
        TrainingError: no weights, an unknown split, or a split without images.
        WeightsMismatchError: the weights do not fit the config.
    """
    if request.init_from is None:
        raise TrainingError("evaluate needs the weights to evaluate (--weights)")
    if split not in SPLITS:
        raise TrainingError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    plan = plan_training(request, device)
    config = plan.config
    loader = plan.data.test if split == "test" else plan.data.val
    if loader.num_samples == 0:
        raise TrainingError(f"the {split} split of {config.dataset} has no images "
                            f"(train.val_fraction is {config.train.val_fraction})")
    group = (MemberGroup.from_process_group(config.S, request.data_parallel) if members_parallel
             else MemberGroup.single(config.S))
    # A semantic split's members are its cut networks, which run one after another, as they trained.
    mode = "sequential" if group.world > 1 or config.groups > 1 else request.mode
    running_on = torch.device(device or request.device)
    ensemble = make_ensemble(config, mode, running_on, members=group.own)
    load_weights(ensemble, read_weights(request.init_from, config.S)[group.own], request.init_from)
    started = time.perf_counter()
    batches = [(logits.cpu(), labels.cpu()) for logits, labels in
               member_logits(ensemble, loader, plan.data, group, running_on.type == "cuda", shared=True)]
    seconds = time.perf_counter() - started
    shares = group.gather_over_data(batches)
    if not group.is_main:
        return None
    # Data rank d evaluated batches d, d + D, d + 2D, ...: interleaved back into the split's order.
    ordered = [shares[index % len(shares)][index // len(shares)] for index in range(sum(map(len, shares)))]
    member_logits_all, labels = torch.cat([logits for logits, _ in ordered], dim=1), torch.cat([y for _, y in ordered])
    combined = combine_logits(member_logits_all, config.train.combine)
    predictions, member_predictions = combined.argmax(-1), member_logits_all.argmax(-1)
    meter = CalibrationMeter(1 + config.S, member_logits_all.shape[-1], member_logits_all.device)
    meter.update(ensemble_log_probs(member_logits_all, combined), labels)
    calibration, *member_calibration = meter.compute()
    return Evaluation(config, split, (predictions == labels).float().mean().item(),
                      (member_predictions == labels).float().mean(-1).tolist(), labels, predictions,
                      member_predictions, seconds, calibration, member_calibration, group.processes)


def evaluate_rank(request: TrainRequest, split: str) -> Evaluation | None:
    """This process's rank of a member-parallel evaluation (started by :func:`~splitsearch.train.launch.launch`
    or by torchrun): its share of the members, on its own GPU where the request asks for CUDA."""
    return evaluate_weights(request, split, rank_device(request.device), members_parallel=True)
