"""Load a dataset named by its spec as uint8 tensors: the first step of the data path.

``spec -> load -> split -> device``: :mod:`splitsearch.data.specs` parses the spec, this module
reads the images (scikit-learn, an ``.npz`` file, torchvision), :mod:`splitsearch.data.splits`
carves the validation split and :mod:`splitsearch.data.device` puts everything on the training
device.  :func:`splitsearch.data.prepare_data` runs all four.

Image folders (``imagefolder:PATH``, ``imagenet:PATH``) are indexed first
(:mod:`splitsearch.data.folder`); a folder whose decoded images fit under
:data:`RESIDENT_LIMIT_BYTES` is decoded into memory like the other datasets, a larger one stays
a list of files and streams from disk (:mod:`splitsearch.data.stream`).  ``data_path`` forces
either.

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

from splitsearch.data.folder import FileSplit, index_folder
from splitsearch.data.specs import (DATA_PATHS, DataError, DatasetInfo, dataset_info,
                                   held_out_train_size, split_spec)

DEFAULT_DATA_DIR = Path.home() / ".cache" / "splitsearch" / "data"

# Decoded images up to this many bytes are held in memory (``auto``): 2 GiB is 14,000 images at
# 224x224 or 170,000 at 64x64, a fixed cap rather than a share of RAM so that the same study
# takes the same path on every worker of a cluster, and small enough for any GPU next to a model.
RESIDENT_LIMIT_BYTES = 2 * 1024**3

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
    """A dataset as loaded: its shape facts and its own train and test splits.

    The splits are decoded images (:class:`ImageSplit`), or, for a streamed folder, files
    (:class:`~splitsearch.data.folder.FileSplit`) carved the same way.
    """

    info: DatasetInfo
    train: ImageSplit | FileSplit
    test: ImageSplit | FileSplit

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, FileSplit)


def _hold_out(images: Tensor, labels: Tensor) -> tuple[ImageSplit, ImageSplit]:
    """Fixed train/test split for datasets that come as one set (see the module docstring)."""
    whole = ImageSplit(images, labels)
    return whole.carve(len(whole) - held_out_train_size(len(whole)), _HOLDOUT_SEED)


def load_dataset(spec: str, data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False,
                 crop: int | None = None, data_path: str = "auto") -> ImageDataset:
    """Load the dataset named by ``spec`` (see :mod:`splitsearch.data.specs`) as uint8 tensors.

    ``data_dir`` is where torchvision datasets (cifar10, cifar100, svhn) live or are downloaded
    to with ``download=True``; the other kinds ignore it.  ``crop`` is the image size an image
    folder is trained at (:func:`~splitsearch.data.specs.dataset_info`).  ``data_path`` says
    whether an image folder is decoded into memory (``resident``), left on disk to stream
    (``stream``) or chosen by its size (``auto``, see :data:`RESIDENT_LIMIT_BYTES`); the other
    kinds are always resident.

    Raises:
        ValueError: unknown spec, missing or malformed files, or a torchvision dataset that is
            absent from ``data_dir`` or cannot be downloaded (the message names the directory).
    """
    if data_path not in DATA_PATHS:
        raise DataError(f"unknown data path {data_path!r}: use {', '.join(DATA_PATHS)}")
    kind, argument = split_spec(spec)
    info = dataset_info(spec, crop)
    if kind in ("imagefolder", "imagenet") and argument:
        return _load_folder(kind, argument, info, data_path)
    if data_path == "stream":
        raise DataError(f"{spec} cannot stream from disk: only image folders do (imagefolder:PATH, imagenet:PATH)")
    if kind == "digits":
        train, test = _load_digits()
    elif kind == "synthetic":
        train, test = _load_synthetic(int(argument))
    elif kind == "npz":
        train, test = _load_npz(Path(argument), info)
    elif kind in ("cifar10", "cifar100", "svhn"):
        train, test = _load_torchvision(kind, Path(data_dir).expanduser(), download)
    else:
        raise DataError(f"dataset {spec!r} can be counted but not loaded; use imagenet:PATH (ImageNet's folders) "
                        "or imagefolder:PATH for image files")
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


def _load_folder(kind: str, argument: str, info: DatasetInfo, data_path: str) -> ImageDataset:
    """An image folder indexed, its test split held out (imagefolder) or read from ``val/`` (imagenet),
    then decoded into memory or left as files to stream (see the module docstring)."""
    if kind == "imagenet":
        root = Path(argument)
        train = index_folder(root / "train")
        if not any(entry.is_dir() for entry in (root / "val").iterdir()):
            raise DataError(f"{root / 'val'} holds no class folders: sort the validation images into "
                            "val/<wnid>/ folders (as torchvision's ImageNet class does) to use them as the test split")
        train_files, test_files = train.files, index_folder(root / "val", train.classes).files
    else:
        whole = index_folder(Path(argument)).files
        train_files, test_files = whole.carve(len(whole) - held_out_train_size(len(whole)), _HOLDOUT_SEED)
    count = len(train_files) + len(test_files)
    stream = data_path == "stream" or (
        data_path == "auto" and count * 3 * info.image_size**2 > RESIDENT_LIMIT_BYTES)
    if stream:
        return ImageDataset(info, train_files, test_files)
    return ImageDataset(info, _decode_all(train_files, info.image_size), _decode_all(test_files, info.image_size))


def _decode_all(files: FileSplit, size: int) -> ImageSplit:
    """Every image of ``files`` decoded as RGB and resized to ``size`` x ``size``: the resident path."""
    from torchvision.transforms import v2

    from splitsearch.data.stream import decode

    if not len(files):
        return ImageSplit(torch.empty(0, 3, size, size, dtype=torch.uint8), files.labels)
    images = torch.stack([v2.functional.resize(decode(path), [size, size], antialias=True) for path in files.paths])
    return ImageSplit(images, files.labels)


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
