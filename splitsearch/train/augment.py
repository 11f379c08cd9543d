"""The S members' views of a batch, drawn on the training device: crop, flip, AutoAugment, erasing, mixup.

Divide-and-co-train gives each of the S small networks its own random augmentation of the same
batch ("different views", Zhao et al. 2020).  :func:`augment` draws S independent crops,
flips and erasures for a whole uint8 batch with a few tensor operations, on the device that holds
the data, in torchvision's usual order.  Which padding and flips suit a dataset comes from
:class:`splitsearch.data.specs.TrainingDefaults` unless the config sets them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splitsearch.config import TrainConfig
from splitsearch.data.device import Normalization

# torchvision.transforms.RandomErasing defaults: erased area fraction, aspect ratio, tries.
_ERASE_SCALE = (0.02, 0.33)
_ERASE_RATIO = (0.3, 3.3)
_ERASE_TRIES = 10


def _uniform(size: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, used on ``device``."""
    return torch.rand(size, generator=generator, device=generator.device).to(device)


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int,
              source: Tensor | None = None, fill: Tensor | None = None) -> Tensor:
    """Crop and mirror a whole batch with tensor gathers, no loop over images.

    Output ``n`` is the ``H`` x ``W`` window at ``(top[n], left[n])`` of ``images[source[n]]``
    padded by ``padding`` on every side, mirrored left-right where ``flip[n]``.  The padding
    holds zeros, or ``fill`` (one value per channel).  ``source`` defaults to one output per
    input; with it, S views of a batch are cut from one padding.
    """
    _, channels, height, width = images.shape
    device = images.device
    padded = _pad(images, padding, fill)
    if source is not None:
        padded = padded[source]
    rows = top[:, None] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = torch.where(flip[:, None], width - 1 - columns, columns) + left[:, None]
    # Two gathers (rows, then columns) are several times faster on CPU than one 4-d fancy index.
    padded = padded.gather(2, rows[:, None, :, None].expand(-1, channels, -1, padded.shape[3]))
    return padded.gather(3, columns[:, None, None, :].expand(-1, channels, height, -1))


def _pad(images: Tensor, padding: int, fill: Tensor | None) -> Tensor:
    if not padding:
        return images
    if fill is None:
        return F.pad(images, (padding,) * 4)
    count, channels, height, width = images.shape
    padded = fill.to(images.dtype).view(1, channels, 1, 1).repeat(count, 1, height + 2 * padding, width + 2 * padding)
    padded[:, :, padding:padding + height, padding:padding + width] = images
    return padded


def random_erase(images: Tensor, p: float, generator: torch.Generator, value: float = 0.0) -> Tensor:
    """torchvision's RandomErasing, vectorised: with probability ``p`` fill one random rectangle per image.

    Like torchvision, a rectangle covers 2-33% of the image with aspect ratio 0.3-3.3 (log-uniform),
    is retried up to 10 times until it fits, and the image is left alone if none fits.  Applied
    after normalisation, the fill ``value`` 0 is the dataset's mean colour.
    """
    count, _, height, width = images.shape
    device = images.device
    shape = (count, _ERASE_TRIES)
    area = height * width * (_ERASE_SCALE[0] + (_ERASE_SCALE[1] - _ERASE_SCALE[0]) * _uniform(shape, generator, device))
    log_low, log_high = math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * _uniform(shape, generator, device))
    box_height = torch.sqrt(area * aspect).round().long()
    box_width = torch.sqrt(area / aspect).round().long()
    fits = (box_height < height) & (box_width < width)
    first = fits.long().argmax(1, keepdim=True)
    box_height, box_width = box_height.gather(1, first)[:, 0], box_width.gather(1, first)[:, 0]
    apply = (_uniform((count,), generator, device) < p) & fits.any(1)
    top = (_uniform((count,), generator, device) * (height - box_height + 1)).long()
    left = (_uniform((count,), generator, device) * (width - box_width + 1)).long()
    rows = torch.arange(height, device=device)[None, :, None]
    columns = torch.arange(width, device=device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_height)[:, None, None])
              & (columns >= left[:, None, None]) & (columns < (left + box_width)[:, None, None]))
    return images.masked_fill((inside & apply[:, None, None])[:, None], value)


def auto_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """torchvision's AutoAugment (CIFAR-10 policy) on each uint8 image separately.

    Per image because torchvision applies one drawn policy to a whole batch.  torchvision draws
    from torch's global CPU generator, so it runs under a forked global state seeded from
    ``generator``: reproducible, and the caller's global random state is left untouched.
    """
    from torchvision.transforms import v2

    policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        # One 32x32 image is too small to share between threads: on CPU the thread pool's
        # hand-offs made each image about ten times slower than a single thread.
        torch.set_num_threads(1)
        try:
            return torch.stack([policy(image) for image in images])
        finally:
            torch.set_num_threads(threads)


def augment(images: Tensor, members: int, config: TrainConfig, generator: torch.Generator,
            normalization: Normalization) -> Tensor:
    """S = ``members`` independently augmented, normalised views of a uint8 batch ``[B, C, H, W]``.

    Per view and image, in torchvision's usual order: random crop with ``config.crop_padding``
    pixels of padding (black, or with ``crop_fill: mean`` the training images' mean colour, which
    normalises to 0), horizontal flip with probability 1/2 (``config.hflip``),
    AutoAugment (``config.autoaugment``, per image, the slow step), normalisation, then random
    erasing with probability ``config.random_erasing``.  Random draws are made with
    ``generator`` (on its own device), so one seed gives the same views.

    A batch of streamed images arrives already cut into the members' views, uint8
    ``[B, S, C, H, W]`` (random-resized crops and flips drawn by the loader's workers,
    :mod:`splitsearch.data.stream`): crop and flip are skipped, the rest is the same.

    Returns:
        float32 ``[S, B, C, H, W]``, contiguous NCHW (channels-last strides crashed CPU conv
        backward on these machines, DESIGN.md).
    """
    if images.dim() == 5:
        batch, views_per_image, channels, height, width = images.shape
        if views_per_image != members:
            raise ValueError(f"a batch of {views_per_image} views per image for {members} members")
        views = images.transpose(0, 1).reshape(members * batch, channels, height, width)
    else:
        views = _crop_flip_views(images, members, config, generator, normalization)
        batch, channels, height, width = images.shape
    if config.autoaugment:
        views = auto_augment(views, generator)
    views = normalization(views)
    if config.random_erasing > 0:
        views = random_erase(views, config.random_erasing, generator)
    return views.view(members, batch, channels, height, width).contiguous()


def _crop_flip_views(images: Tensor, members: int, config: TrainConfig, generator: torch.Generator,
                     normalization: Normalization) -> Tensor:
    """The members' padded random crops and flips of a uint8 batch, ``[S * B, C, H, W]`` member-major."""
    if config.crop_padding is None or config.hflip is None:
        raise ValueError("augment needs crop_padding and hflip set: fill them with TrainConfig.with_dataset_defaults")
    batch = images.shape[0]
    device = images.device
    count = members * batch
    span = 2 * config.crop_padding + 1
    top = (_uniform((count,), generator, device) * span).long()
    left = (_uniform((count,), generator, device) * span).long()
    flip = _uniform((count,), generator, device) < (0.5 if config.hflip else 0.0)
    source = torch.arange(batch, device=device).repeat(members)
    fill = normalization.mean_pixel(device) if config.crop_fill == "mean" else None
    return crop_flip(images, top, left, flip, config.crop_padding, source, fill)


class MixedBatch(NamedTuple):
    """Mixup result: the loss is ``lam * CE(out, y_a) + (1 - lam) * CE(out, y_b)`` for every member."""

    views: Tensor
    y_a: Tensor
    y_b: Tensor
    lam: float
    perm: Tensor


def mixup(views: Tensor, labels: Tensor, alpha: float, generator: torch.Generator) -> MixedBatch:
    """Mix the views ``[S, B, C, H, W]`` with a permutation of the batch: ``lam * x + (1 - lam) * x[perm]``.

    One ``lam ~ Beta(alpha, alpha)`` and one permutation are shared by all S members, so every
    member is trained on the same two targets and the co-training (agreement) term compares
    predictions for the same mixture; the members still differ through their augmentations.
    """
    if alpha <= 0:
        raise ValueError(f"mixup needs alpha > 0, got {alpha}")
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(views.shape[1], generator=generator, device=generator.device).to(views.device)
    mixed = (lam * views + (1 - lam) * views[:, perm]).contiguous()
    return MixedBatch(mixed, labels, labels[perm], lam, perm)
