"""Datasets as uint8 tensors, held on the training device and augmented there in batches.

Divide-and-co-train gives each of the S small networks its own random augmentation of the
same batch ("different views", METHODS.md section 1).  Small datasets fit in device memory, so
instead of a DataLoader with per-image CPU transforms a split is kept on the device as uint8
and :func:`augment` draws S independent crops, flips and erasures for a whole batch with a few
tensor operations.

Splits:

* ``train``/``test`` come from the dataset itself.  Datasets without a test split of their own
  (``digits``, ``imagefolder:``, ``synthetic:``) hold out a fixed 20% of their images, chosen
  by a permutation with the fixed seed 0, so the test set is the same whatever the run's seed.
* ``val`` is carved from ``train`` by :func:`split_validation` (seeded, ``val_fraction``).
  The search selects on ``val`` only; ``test`` is for the final report of an exported config
  and must never drive a choice (DESIGN.md, "Validation vs test").

Normalisation uses the per-channel mean and std of the training split (after the validation
split is carved out), so nothing about ``val`` or ``test`` leaks into training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splitsearch.config import TrainConfig
from splitsearch.datasets import DatasetInfo, dataset_info, split_spec

DEFAULT_DATA_DIR = Path.home() / ".cache" / "splitsearch" / "data"

# Datasets without a test split of their own hold out this fraction, chosen with this seed.
_HOLDOUT_FRACTION = 0.2
_HOLDOUT_SEED = 0

# torchvision.transforms.RandomErasing defaults: erased area fraction, aspect ratio, tries.
_ERASE_SCALE = (0.02, 0.33)
_ERASE_RATIO = (0.3, 3.3)
_ERASE_TRIES = 10


# -- splits and datasets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSplit:
    """Images ``[N, C, H, W]`` uint8 and labels ``[N]`` int64; indexable like a TensorDataset."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 [{len(self.images)}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def subset(self, indices: Tensor) -> ImageSplit:
        return ImageSplit(self.images[indices].contiguous(), self.labels[indices])


@dataclass(frozen=True)
class ImageDataset:
    """A dataset as loaded: its shape facts and its own train and test splits."""

    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit


@dataclass(frozen=True)
class DataSplits:
    """Train, validation (carved from train, for selection) and test (final report only)."""

    info: DatasetInfo
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit


def _carve(split: ImageSplit, count: int, seed: int) -> tuple[ImageSplit, ImageSplit]:
    """``(rest, held)``: ``count`` images picked by a seeded permutation, and the others."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.subset(order[count:]), split.subset(order[:count])


def _hold_out(images: Tensor, labels: Tensor) -> tuple[ImageSplit, ImageSplit]:
    """Fixed train/test split for datasets that come as one set (see the module docstring)."""
    whole = ImageSplit(images, labels)
    count = min(round(_HOLDOUT_FRACTION * len(whole)), len(whole) - 1)
    return _carve(whole, count, _HOLDOUT_SEED)


def split_validation(dataset: ImageDataset, fraction: float = TrainConfig.val_fraction, seed: int = 0) -> DataSplits:
    """Carve a validation split from the training split: ``round(fraction * N)`` images, seeded.

    The search optimises validation accuracy; the test split is passed through untouched and is
    only for the final report.  A positive fraction keeps at least one image on each side.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    size = len(dataset.train)
    count = round(fraction * size)
    if fraction > 0:
        count = min(max(count, 1), size - 1)
    train, val = _carve(dataset.train, count, seed)
    return DataSplits(dataset.info, train, val, dataset.test)


# -- loading ---------------------------------------------------------------------------------------


def load_dataset(spec: str, data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False) -> ImageDataset:
    """Load the dataset named by ``spec`` (see :mod:`splitsearch.datasets`) as uint8 tensors.

    ``data_dir`` is where torchvision datasets (cifar10, cifar100, svhn) live or are downloaded
    to with ``download=True``; the other kinds ignore it.

    Raises:
        ValueError: unknown spec, missing or malformed files, or a torchvision dataset that is
            absent from ``data_dir`` or cannot be downloaded (the message names the directory).
    """
    kind, argument = split_spec(spec)
    info = dataset_info(spec)
    if kind == "digits":
        train, test = _load_digits()
    elif kind == "synthetic":
        train, test = _load_synthetic(int(argument))
    elif kind == "npz":
        train, test = _load_npz(Path(argument), info)
    elif kind == "imagefolder":
        train, test = _load_imagefolder(Path(argument), info.image_size)
    elif kind in ("cifar10", "cifar100", "svhn"):
        train, test = _load_torchvision(kind, Path(data_dir).expanduser(), download)
    else:
        raise ValueError(f"dataset {spec!r} can be counted but not loaded; use imagefolder:PATH for image files")
    return ImageDataset(info, train, test)


def _load_digits() -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's 8x8 digits, values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    pixels, targets = load_digits(return_X_y=True)
    images = torch.from_numpy(np.rint(pixels * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8))
    return _hold_out(images, torch.from_numpy(targets.astype(np.int64)))


def _load_synthetic(count: int) -> tuple[ImageSplit, ImageSplit]:
    """``count`` seeded 3x32x32 images of 10 classes.

    Each image is its class's fixed random pattern blended with noise, so a smoke test of
    training can see accuracy rise above chance.
    """
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randint(0, 256, (10, 3, 32, 32), generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    noise = torch.randint(0, 256, (count, 3, 32, 32), generator=generator)
    images = ((patterns[labels] + noise) // 2).to(torch.uint8)
    return _hold_out(images, labels)


def _load_npz(path: Path, info: DatasetInfo) -> tuple[ImageSplit, ImageSplit]:
    """``x_train, y_train, x_test, y_test``; images uint8 in NCHW or NHWC (made NCHW, contiguous)."""
    with np.load(path) as arrays:
        train = _npz_split(path, arrays["x_train"], arrays["y_train"], info)
        test = _npz_split(path, arrays["x_test"], arrays["y_test"], info)
    return train, test


def _npz_split(path: Path, x: np.ndarray, y: np.ndarray, info: DatasetInfo) -> ImageSplit:
    channels, height, width = info.input_shape
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: images must be uint8 (0..255), got {x.dtype}")
    if x.shape[1:] == (height, width, channels):
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[1:] != info.input_shape:
        raise ValueError(f"{path}: x_train and x_test differ in image shape: {x.shape[1:]} vs {info.input_shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: labels must be a vector, one per image; got shape {y.shape} for {len(x)} images")
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def _load_imagefolder(root: Path, size: int) -> tuple[ImageSplit, ImageSplit]:
    """One sub-folder per class; every image converted to RGB and resized to ``size`` x ``size``."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    try:
        folder = ImageFolder(root, transform=v2.Compose([v2.Resize((size, size)), v2.PILToTensor()]))
    except FileNotFoundError as error:
        raise ValueError(f"cannot read image folder {root}: {error}") from None
    images = torch.stack([image for image, _ in folder])
    return _hold_out(images, torch.tensor(folder.targets, dtype=torch.int64))


def _load_torchvision(kind: str, root: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    """CIFAR-10/100 (NHWC arrays, ``targets``) and SVHN (NCHW arrays, ``labels``) via torchvision."""
    from torchvision import datasets

    def part(train: bool) -> ImageSplit:
        if kind == "svhn":
            data = datasets.SVHN(root, split="train" if train else "test", download=download)
            return ImageSplit(torch.from_numpy(data.data), torch.from_numpy(data.labels.astype(np.int64)))
        dataset_class = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
        data = dataset_class(root, train=train, download=download)
        images = np.ascontiguousarray(data.data.transpose(0, 3, 1, 2))
        return ImageSplit(torch.from_numpy(images), torch.tensor(data.targets, dtype=torch.int64))

    try:
        return part(train=True), part(train=False)
    except (RuntimeError, OSError) as error:
        if download:
            problem = f"could not download {kind} into {root} ({error}); check the internet connection"
        else:
            problem = f"{kind} was not found in {root}; pass --download to fetch it there (needs internet)"
        raise ValueError(f"{problem}, or --data-dir DIR to use a directory that already holds it") from None


# -- normalisation and device-resident batches -----------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std in [0, 1] pixel units; calling it maps uint8 images to floats."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: Tensor, chunk: int = 4096) -> Normalization:
        """Statistics of uint8 ``images`` ``[N, C, H, W]``, summed in float64 chunks to bound memory."""
        total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
        squares = torch.zeros_like(total)
        for start in range(0, len(images), chunk):
            pixels = images[start:start + chunk].double() / 255
            total += pixels.sum((0, 2, 3))
            squares += pixels.square().sum((0, 2, 3))
        count = images.numel() / images.shape[1]
        mean = total / count
        # A constant channel would divide by zero; its normalised value is 0 whatever std is.
        std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def __call__(self, images: Tensor) -> Tensor:
        """``(images / 255 - mean) / std`` as contiguous float32 ``[..., C, H, W]``."""
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return ((images.float() / 255 - mean) / std).contiguous()


class TensorLoader:
    """Batches of one split held on the training device as uint8 ``(images, labels)``.

    The shuffle order of epoch ``e`` depends only on ``(seed, e)`` and is drawn on the CPU, so
    runs are reproducible, identical across devices, and a resumed run sets ``epoch`` and gets
    the same batches it would have had.  Each iteration consumes one epoch.
    """

    def __init__(self, split: ImageSplit, batch_size: int, *, device: torch.device | str = "cpu",
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images = split.images.to(device).contiguous()
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._order(self.epoch)
        self.epoch += 1
        return self._batches(order)

    def _order(self, epoch: int) -> Tensor | None:
        if not self.shuffle:
            return None
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed)).to(self.labels.device)

    def _batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                yield self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                yield self.images[index], self.labels[index]


@dataclass(frozen=True)
class DeviceData:
    """Everything training needs from a dataset: loaders on the device and the normalisation."""

    info: DatasetInfo
    normalization: Normalization
    train: TensorLoader
    val: TensorLoader
    test: TensorLoader


def to_device(splits: DataSplits, config: TrainConfig, device: torch.device | str = "cpu") -> DeviceData:
    """Put the splits on ``device`` with loaders of ``config.batch_size``.

    The training loader shuffles (seeded by ``config.seed``) and drops a short last batch (a
    batch of one breaks BatchNorm in training) unless that would leave no batch at all.
    """
    train = TensorLoader(splits.train, config.batch_size, device=device, shuffle=True,
                         drop_last=len(splits.train) >= config.batch_size, seed=config.seed)
    return DeviceData(
        info=splits.info,
        normalization=Normalization.of(splits.train.images),
        train=train,
        val=TensorLoader(splits.val, config.batch_size, device=device),
        test=TensorLoader(splits.test, config.batch_size, device=device),
    )


def prepare_data(spec: str, config: TrainConfig, device: torch.device | str = "cpu",
                 data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False) -> DeviceData:
    """Load ``spec``, carve the validation split (``config.val_fraction``, ``config.seed``), put all on ``device``."""
    splits = split_validation(load_dataset(spec, data_dir, download), config.val_fraction, config.seed)
    return to_device(splits, config, device)


# -- augmentation ----------------------------------------------------------------------------------


def _uniform(size: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, used on ``device``."""
    return torch.rand(size, generator=generator, device=generator.device).to(device)


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int,
              source: Tensor | None = None) -> Tensor:
    """Crop and mirror a whole batch with tensor gathers, no loop over images.

    Output ``n`` is the ``H`` x ``W`` window at ``(top[n], left[n])`` of ``images[source[n]]``
    zero-padded by ``padding`` on every side, mirrored left-right where ``flip[n]``.  ``source``
    defaults to one output per input; with it, S views of a batch are cut from one padding.
    """
    _, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4) if padding else images
    if source is not None:
        padded = padded[source]
    rows = top[:, None] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = torch.where(flip[:, None], width - 1 - columns, columns) + left[:, None]
    # Two gathers (rows, then columns) are several times faster on CPU than one 4-d fancy index.
    padded = padded.gather(2, rows[:, None, :, None].expand(-1, channels, -1, padded.shape[3]))
    return padded.gather(3, columns[:, None, None, :].expand(-1, channels, height, -1))


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

    Per view and image, in torchvision's usual order: random crop with zero padding
    (``config.crop_padding``), horizontal flip with probability 1/2 (``config.hflip``),
    AutoAugment (``config.autoaugment``, per image, the slow step), normalisation, then random
    erasing with probability ``config.random_erasing``.  Random draws are made with
    ``generator`` (on its own device), so one seed gives the same views.

    Returns:
        float32 ``[S, B, C, H, W]``, contiguous NCHW (channels-last strides crashed CPU conv
        backward on these machines, DESIGN.md).
    """
    batch, channels, height, width = images.shape
    device = images.device
    count = members * batch
    span = 2 * config.crop_padding + 1
    top = (_uniform((count,), generator, device) * span).long()
    left = (_uniform((count,), generator, device) * span).long()
    flip = _uniform((count,), generator, device) < (0.5 if config.hflip else 0.0)
    source = torch.arange(batch, device=device).repeat(members)
    views = crop_flip(images, top, left, flip, config.crop_padding, source)
    if config.autoaugment:
        views = auto_augment(views, generator)
    views = normalization(views)
    if config.random_erasing > 0:
        views = random_erase(views, config.random_erasing, generator)
    return views.view(members, batch, channels, height, width).contiguous()


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
