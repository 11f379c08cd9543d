"""A careful practitioner's co-training loop: the yardstick ``splitsearch train`` is measured against.

It shares nothing with splitsearch's training code but the networks (``build_networks``, so both
sides train the very same architectures), and it is written the plain way on purpose, with the
recipe a careful PyTorch user would give a short CIFAR run:

* the images straight from the ``.npz`` file, normalised per channel with the training images'
  mean and standard deviation, held on the training device;
* every epoch a fresh shuffle, the short last batch dropped;
* per member and image its own view: a random crop of the normalised image padded by 4 pixels
  (so the padding is the mean colour) and a horizontal flip with probability 1/2;
* ``torch.optim.SGD`` (momentum 0.9, Nesterov) with weight decay 5e-4 * exp(1/S - 1) on
  convolution and linear weights only (no decay on BatchNorm parameters and biases);
* ``torch.optim.lr_scheduler.OneCycleLR``: max lr 0.1, 15 % warm-up from lr/25, cosine
  annealing, stepped every iteration; momentum fixed at 0.9 (``cycle_momentum=False``), because
  OneCycleLR's default cycling between 0.85 and 0.95 cost S=2 about 2 points on the CIFAR-10
  subset (result file ablation, benchmarks/results/).  ``cycle_momentum=True`` is the loop exactly as the trainer
  issue first described it, kept as a second reference (``reference-cycled`` in
  ``trainer_vs_reference.py``);
* the loss: the sum of the members' cross-entropies plus 0.5 x the Jensen-Shannon divergence of
  their softmax outputs, from the first step on;
* bf16 autocast on CUDA (float32 on the CPU); evaluation by the mean of the members' logits.

If splitsearch's trainer falls behind this loop on the same data, the trainer is what to fix.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig


@dataclass(frozen=True)
class ReferenceResult:
    test_accuracy: float
    member_accuracies: list[float]
    seconds: float


def load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test`` as uint8 NCHW and int64 tensors."""
    with np.load(path) as arrays:
        x_train, y_train, x_test, y_test = (arrays[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    if x_train.shape[-1] in (1, 3):  # NHWC -> NCHW
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    return (torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train).long(),
            torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test).long())


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop (zero padding of normalised images) and flip per image, by advanced indexing."""
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(images.device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(images.device)
    flip = (torch.rand(count, generator=generator) < 0.5).to(images.device)
    rows = (top[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    columns = torch.arange(width, device=images.device).expand(count, width)
    columns = torch.where(flip[:, None], width - 1 - columns, columns)
    columns = (left[:, None] + columns)[:, None, None, :]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    batch = torch.arange(count, device=images.device)[:, None, None, None]
    return padded[batch, channels, rows, columns].contiguous()


def js_divergence(logits: list[torch.Tensor]) -> torch.Tensor:
    """H(mean of the members' softmax) - mean of their entropies, averaged over the batch."""
    probabilities = torch.stack([member.float().softmax(-1) for member in logits])
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1)  # noqa: E731
    return (entropy(probabilities.mean(0)) - entropy(probabilities).mean(0)).mean()


def decayed_and_not(networks: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Convolution and linear weights (decayed) and every other parameter (not decayed)."""
    decayed = [module.weight for network in networks for module in network.modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))]
    ids = {id(parameter) for parameter in decayed}
    others = [parameter for network in networks for parameter in network.parameters() if id(parameter) not in ids]
    return decayed, others


def train_reference(config: SplitConfig, npz: Path, epochs: int, seed: int, device: str = "cpu",
                    batch_size: int = 128, lr: float = 0.1, weight_decay: float = 5e-4, padding: int = 4,
                    lambda_cot: float = 0.5, warmup_fraction: float = 0.15,
                    cycle_momentum: bool = False) -> ReferenceResult:
    """Train ``config``'s S networks on the whole training split of ``npz``; test accuracy of the ensemble."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_npz(npz)
    pixels = x_train.double() / 255
    mean = pixels.mean((0, 2, 3)).float().view(1, -1, 1, 1)
    std = pixels.std((0, 2, 3)).float().view(1, -1, 1, 1)
    normalise = lambda x: ((x.float() / 255 - mean) / std).to(device)  # noqa: E731
    train_images, test_images = normalise(x_train), normalise(x_test)
    train_labels, test_labels = y_train.to(device), y_test.to(device)

    networks = [network.to(device) for network in build_networks(config)]
    S = len(networks)
    decayed, others = decayed_and_not(networks)
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": weight_decay * math.exp(1 / S - 1)},
                                 {"params": others, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train_labels) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=warmup_fraction, cycle_momentum=cycle_momentum)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=torch.device(device).type == "cuda")

    for _ in range(epochs):
        for network in networks:
            network.train()
        order = torch.randperm(len(train_labels), generator=generator).to(device)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            images, labels = train_images[index], train_labels[index]
            with autocast:
                logits = [network(random_crop_flip(images, padding, generator)) for network in networks]
            loss = sum(F.cross_entropy(member.float(), labels) for member in logits)
            if S > 1:
                loss = loss + lambda_cot * js_divergence(logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

    for network in networks:
        network.eval()
    with torch.no_grad(), autocast:
        logits = torch.stack([torch.cat([network(batch).float() for batch in test_images.split(256)])
                              for network in networks])
    accuracy = (logits.mean(0).argmax(-1) == test_labels).float().mean().item()
    members = (logits.argmax(-1) == test_labels).float().mean(-1).tolist()
    return ReferenceResult(accuracy, members, time.perf_counter() - started)
