"""A textbook PyTorch co-training loop: the yardstick ``splitsearch train`` is measured against.

It shares nothing with splitsearch's training code but the networks (``build_networks``, so
both sides train the very same architectures): the images come straight from the ``.npz`` file,
each member's view is cut image by image with torchvision's ``transforms.v2`` (random crop with
zero padding, horizontal flip), the optimiser is ``torch.optim.SGD`` with weight decay on every
parameter, the learning rate follows one cosine cycle per iteration from ``lr`` to 0
(``schedule="cosine"``) or torch's ``OneCycleLR`` (``schedule="onecycle"``: 30 % warm-up from
lr/25, cosine annealing, momentum cycled between 0.85 and 0.95), and the loss is the sum of
the members' cross-entropies plus ``lambda_cot`` times the Jensen-Shannon divergence of their
softmax outputs from the first step on.  Evaluation averages the members' logits.  Everything
is written the plain way on purpose: if splitsearch's trainer falls behind this loop on the same
data, the trainer is wrong.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig


@dataclass(frozen=True)
class PlainResult:
    test_accuracy: float
    member_accuracies: list[float]
    seconds: float


def _load(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    with np.load(path) as arrays:
        x_train, y_train, x_test, y_test = (arrays[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    if x_train.shape[-1] == 3:  # NHWC -> NCHW
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array))  # noqa: E731
    return as_tensor(x_train), as_tensor(y_train).long(), as_tensor(x_test), as_tensor(y_test).long()


def _js_divergence(logits: list[torch.Tensor]) -> torch.Tensor:
    probabilities = torch.stack([member.softmax(-1) for member in logits])
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1)  # noqa: E731
    return (entropy(probabilities.mean(0)) - entropy(probabilities).mean(0)).mean()


def train_plain(config: SplitConfig, npz: Path, epochs: int, seed: int, batch_size: int = 128,
                lr: float = 0.1, weight_decay: float = 5e-4, padding: int = 4, schedule: str = "cosine"
                ) -> PlainResult:
    """Train ``config``'s S networks on the whole training split of ``npz``; test accuracy of the ensemble."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = _load(npz)
    pixels = x_train.double() / 255
    mean, std = pixels.mean((0, 2, 3)).tolist(), pixels.std((0, 2, 3)).tolist()
    size = x_train.shape[-1]
    augment = v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip(),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    to_input = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    networks = build_networks(config)
    S = len(networks)
    parameters = [parameter for network in networks for parameter in network.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay * math.exp(1 / S - 1))
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))

    for _ in range(epochs):
        for network in networks:
            network.train()
        for images, labels in loader:
            logits = [network(torch.stack([augment(image) for image in images])) for network in networks]
            loss = sum(F.cross_entropy(member, labels) for member in logits)
            if S > 1:
                loss = loss + config.lambda_cot * _js_divergence(logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()

    for network in networks:
        network.eval()
    with torch.no_grad():
        inputs = to_input(x_test)
        logits = torch.stack([torch.cat([network(batch) for batch in inputs.split(256)]) for network in networks])
    accuracy = (logits.mean(0).argmax(-1) == y_test).float().mean().item()
    members = (logits.argmax(-1) == y_test).float().mean(-1).tolist()
    return PlainResult(accuracy, members, time.perf_counter() - started)
