"""Image folders streamed from disk: decoded and cropped in DataLoader worker processes.

The device-resident path (:mod:`splitsearch.data.device`) holds a whole dataset as uint8 on the
training device; ImageNet's 1.28M images at 224x224 would need 190 GB.  Here a split stays a list
of files (:class:`~splitsearch.data.folder.FileSplit`), and a ``torch.utils.data.DataLoader``
with worker processes decodes each batch when it is needed (``torchcodec.decoders.decode_image``,
grey and CMYK made RGB).  Host memory is bounded by the batches in flight, ``prefetch`` per
worker, whatever the dataset's size.

Training batches are uint8 ``[B, S, C, H, W]``: the workers cut each of the S members its own
random-resized crop (bicubic, torchvision's scale 0.08-1 and ratio 3/4-4/3) and flip of each
image, the ImageNet recipe, since a crop of the full-size image cannot be taken on the device
after the image was shrunk.  Normalisation, AutoAugment, erasing and mixup are left to
:func:`splitsearch.train.augment.augment`, on the device, as for resident data.  Evaluation
batches are ``[B, C, H, W]``: resized to size/0.875 (256 for 224) and centre-cropped.

Every random draw of an image depends only on ``(seed, epoch, index)``, not on which worker
decodes it or how many there are, so a run is reproducible and a resumed run sees the crops it
would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from splitsearch.data.folder import FileSplit
from splitsearch.data.specs import DataError

# Batches each worker prepares ahead: enough to hide decoding jitter, few enough to bound memory.
PREFETCH = 2
# The evaluation resize: the crop is this fraction of the resized image (224 of 256).
CENTRE_CROP_FRACTION = 0.875
# torchvision's RandomResizedCrop defaults.
_CROP_SCALE = (0.08, 1.0)
_CROP_RATIO = (3 / 4, 4 / 3)


def default_workers() -> int:
    """min(4, CPU count): torchvision's ImageNet examples' usual order of magnitude per GPU; not tuned
    here (no GPU was measured), so ``--loader-workers`` sets it."""
    return min(4, os.cpu_count() or 1)


def decode(path: str) -> Tensor:
    """The image at ``path`` as uint8 RGB ``[3, H, W]`` (the first frame of an animated GIF or WebP).

    TorchCodec decodes it: torchvision 0.29 deprecates its own image decoders for TorchCodec's,
    which decode JPEG, PNG, WebP and GIF to the same pixels without FFmpeg (images have their own
    libraries in the wheel; FFmpeg is only for video and audio).

    Raises:
        DataError: naming the file, when it cannot be decoded (a corrupt or truncated file).
    """
    from torchcodec.decoders import decode_image

    try:
        image = decode_image(path, mode="RGB")
    except (RuntimeError, ValueError, OSError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DataError(f"cannot decode the image {path} ({reason}): remove or replace the file") from None
    return image[0] if image.dim() == 4 else image


def centre_crop(image: Tensor, size: int) -> Tensor:
    """Resize the shorter side to ``size / 0.875``, then cut the centre ``size`` x ``size`` (evaluation)."""
    from torchvision.transforms import v2

    resized = v2.functional.resize(image, [round(size / CENTRE_CROP_FRACTION)],
                                   interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    return v2.functional.center_crop(resized, [size, size])


def random_views(image: Tensor, size: int, members: int, hflip: bool, seed: int) -> Tensor:
    """``members`` random-resized crops (bicubic) of ``image``, each flipped with probability 1/2 if ``hflip``.

    Drawn from torch's generator seeded with ``seed`` inside a forked random state, so that the
    caller's state is untouched (in a worker process, or in the main one without workers).

    Returns:
        uint8 ``[members, C, size, size]``.
    """
    from torchvision import transforms
    from torchvision.transforms import v2

    views = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(members):
            top, left, height, width = transforms.RandomResizedCrop.get_params(image, _CROP_SCALE, _CROP_RATIO)
            view = v2.functional.resized_crop(image, top, left, height, width, [size, size],
                                              interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
            if hflip and torch.rand(()) < 0.5:
                view = v2.functional.horizontal_flip(view)
            views.append(view)
    return torch.stack(views)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's random views in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class FolderImages(Dataset):
    """The images of a :class:`FileSplit`, decoded when read.

    Keys are ``(index, epoch, members)``: with ``members`` 0 an image is centre-cropped for
    evaluation (``[C, H, W]``); otherwise it becomes ``members`` random views (``[S, C, H, W]``)
    drawn for that epoch.  The key carries the epoch and S because persistent workers hold
    their own copy of this object and would not see them change.
    """

    def __init__(self, files: FileSplit, size: int, hflip: bool, seed: int) -> None:
        self.files = files
        self.size = size
        self.hflip = hflip
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        index, epoch, members = key
        image = decode(self.files.paths[index])
        if members == 0:
            view = centre_crop(image, self.size)
        else:
            view = random_views(image, self.size, members, self.hflip, sample_seed(self.seed, epoch, index))
        return view, self.files.labels[index]


class _EpochSampler(Sampler):
    """Keys ``(index, epoch, members)`` in the epoch's order: shuffled like :class:`TensorLoader`'s."""

    def __init__(self, count: int, shuffle: bool, seed: int) -> None:
        self.count = count
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.members = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order = range(self.count)
        if self.shuffle:
            seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            order = torch.randperm(self.count, generator=torch.Generator().manual_seed(seed)).tolist()
        epoch, members = self.epoch, self.members
        return ((index, epoch, members) for index in order)


class StreamLoader:
    """Batches of an image folder's split, decoded by worker processes and moved to ``device``.

    The same interface as :class:`~splitsearch.data.device.TensorLoader` (``epoch``,
    ``num_samples``, ``len``, one epoch per iteration), plus ``members``: with ``train`` the
    batches are S views per image, ``[B, S, C, H, W]`` uint8, for S = ``members`` (the trainer
    sets it to its config's S); otherwise ``[B, C, H, W]`` centre crops.

    Args:
        workers: decoding processes (0: decode in this process), each holding at most
            ``PREFETCH`` batches; a training loader's persist from epoch to epoch.
    """

    def __init__(self, files: FileSplit, size: int, batch_size: int, *, device: torch.device | str = "cpu",
                 train: bool = False, hflip: bool = True, drop_last: bool = False, seed: int = 0,
                 workers: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.files = files
        self.device = torch.device(device)
        self.train = train
        self.batch_size = batch_size
        self.members = 1
        self.epoch = 0
        self._sampler = _EpochSampler(len(files), shuffle=train, seed=seed)
        self._batches = BatchSampler(self._sampler, batch_size, drop_last)
        workers = default_workers() if workers is None else workers
        # The training loader's workers persist from epoch to epoch; evaluation loaders start theirs
        # per pass, so that the loaders a search caches per seed do not hold idle processes.
        options: dict[str, Any] = {"persistent_workers": train, "prefetch_factor": PREFETCH} if workers else {}
        self._loader = DataLoader(FolderImages(files, size, hflip, seed), batch_sampler=self._batches,
                                  num_workers=workers, pin_memory=self.device.type == "cuda", **options)

    @property
    def num_samples(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> Tensor:
        return self.files.labels

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._sampler.epoch = self.epoch
        self._sampler.members = self.members if self.train else 0
        self.epoch += 1
        return self._moved()

    def _moved(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches = iter(self._loader)
        while True:
            try:
                images, labels = next(batches)
            except StopIteration:
                return
            except DataError as error:  # re-raised by the DataLoader with the worker's traceback in its text
                raise DataError(_worker_message(str(error))) from None
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def _worker_message(text: str) -> str:
    """The message a worker's DataError was raised with, out of the DataLoader's re-raise text."""
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    marker = "DataError: "
    return last.split(marker, 1)[1] if marker in last else last


def sample_images(files: FileSplit, size: int, count: int = 512, seed: int = 0) -> Tensor:
    """Up to ``count`` centre-cropped training images, chosen by ``seed``: what the normalisation is measured on.

    A sample and not the whole split, which would cost an epoch of decoding: on the CIFAR-10
    subset, 512 images' per-channel mean and std were within 3 % of the 5,085 images' (three
    draws); an error of that size shifts the inputs a little, and the first BatchNorm absorbs it.
    """
    chosen = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return torch.stack([centre_crop(decode(files.paths[index]), size) for index in chosen])
