"""Load a dataset named by its spec as uint8 tensors: the first step of the data path.

``spec -> load -> split -> device``: :mod:`splitsearch.data.specs` parses the spec, this module
reads the images (scikit-learn, an ``.npz`` file, torchvision), :mod:`splitsearch.data.splits`
carves the validation split and :mod:`splitsearch.data.device` puts everything on the training
device.  :func:`splitsearch.data.prepare_data` runs all four.

Each dataset arrives with its own train and test splits.  Datasets without a test split of their
own (``digits``, ``imagefolder:``, ``synthetic:``) hold out a fixed 20% of their images, chosen
by a permutation with the fixed seed 0, so the test set is the same whatever the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splitsearch.data.specs import DataError, DatasetInfo, dataset_info, held_out_train_size, split_spec

DEFAULT_DATA_DIR = Path.home() / ".cache" / "splitsearch" / "data"

# Datasets without a test split of their own hold out a fixed share (specs.HOLDOUT_FRACTION),
# chosen with this seed.
_HOLDOUT_SEED = 0


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

    def carve(self, count: int, seed: int) -> tuple[ImageSplit, ImageSplit]:
        """``(rest, held)``: ``count`` images picked by a permutation seeded with ``seed``, and the others."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[count:]), self.subset(order[:count])


@dataclass(frozen=True)
class ImageDataset:
    """A dataset as loaded: its shape facts and its own train and test splits."""

    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit


def _hold_out(images: Tensor, labels: Tensor) -> tuple[ImageSplit, ImageSplit]:
    """Fixed train/test split for datasets that come as one set (see the module docstring)."""
    whole = ImageSplit(images, labels)
    return whole.carve(len(whole) - held_out_train_size(len(whole)), _HOLDOUT_SEED)


def load_dataset(spec: str, data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False,
                 crop: int | None = None) -> ImageDataset:
    """Load the dataset named by ``spec`` (see :mod:`splitsearch.data.specs`) as uint8 tensors.

    ``data_dir`` is where torchvision datasets (cifar10, cifar100, svhn) live or are downloaded
    to with ``download=True``; the other kinds ignore it.  ``crop`` is the image size an
    ``imagefolder`` is resized to (:func:`~splitsearch.data.specs.dataset_info`).

    Raises:
        ValueError: unknown spec, missing or malformed files, or a torchvision dataset that is
            absent from ``data_dir`` or cannot be downloaded (the message names the directory).
    """
    kind, argument = split_spec(spec)
    info = dataset_info(spec, crop)
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
        raise DataError(f"dataset {spec!r} can be counted but not loaded; use imagefolder:PATH for image files")
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
        raise DataError(f"{path}: images must be uint8 (0..255), got {x.dtype}")
    if x.shape[1:] == (height, width, channels):
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[1:] != info.input_shape:
        raise DataError(f"{path}: x_train and x_test differ in image shape: {x.shape[1:]} vs {info.input_shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: labels must be a vector, one per image; got shape {y.shape} for {len(x)} images")
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))


def _load_imagefolder(root: Path, size: int) -> tuple[ImageSplit, ImageSplit]:
    """One sub-folder per class; every image converted to RGB and resized to ``size`` x ``size``."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    try:
        folder = ImageFolder(root, transform=v2.Compose([v2.Resize((size, size)), v2.PILToTensor()]))
    except FileNotFoundError as error:
        raise DataError(f"cannot read image folder {root}: {error}") from None
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
        raise DataError(f"{problem}, or --data-dir DIR to use a directory that already holds it") from None
