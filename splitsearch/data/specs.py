"""The ``--dataset`` spec string, and what a model and its augmentation need to know before loading.

One spec string names a dataset everywhere (config files, every command):

``digits``            scikit-learn's bundled 8x8 digits (the embedded default: no download)
``cifar10``           CIFAR-10 through torchvision
``cifar100``          CIFAR-100 through torchvision
``svhn``              SVHN through torchvision
``imagenet``          ImageNet-sized inputs (224x224 unless cropped, 1000 classes), for counting only
``imagenet:PATH``     ImageNet in its own layout: ``PATH/train/<wnid>/*.JPEG``, ``PATH/val/<wnid>/*.JPEG``
``npz:PATH``          arrays ``x_train, y_train, x_test, y_test`` in an ``.npz`` file
``imagefolder:PATH``  one sub-folder per class (torchvision ImageFolder), trained at 224x224
                      unless cropped
``synthetic:N``       N random 3x32x32 images of 10 classes, for tests

A *crop* (``SplitConfig.crop``, ``--crop N``) sets the square input size of the datasets whose
images are resized anyway, ``imagenet`` and ``imagefolder:PATH`` (224 by default); the others hold
images of one fixed size and refuse any other crop.

Model building and cost counting need only the input shape and the number of classes; this
module answers that without loading the data (an ``npz`` file is opened, not decoded).  It also
says which training settings suit the dataset (:class:`TrainingDefaults`): CIFAR's 4-pixel
padding and mirror images would wreck 8x8 digits, where a mirrored 2 is not a 2, and CIFAR's
batch of 128 leaves the 1,437 digits ten optimiser steps an epoch.

ImageNet-like datasets (inputs of :data:`IMAGENET_LIKE_SIZE` pixels or more: ``imagenet:PATH``
and image folders at their default 224) take the ImageNet recipe of Zhao et al. (divide and co-train) instead: batch 256
and label smoothing 0.1; their images stream from disk with random-resized crops
(:mod:`splitsearch.data.stream`) when they do not fit in memory.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from splitsearch.errors import SplitsearchError

DEFAULT_DATASET = "digits"


class DataError(SplitsearchError, ValueError):
    """A dataset cannot be named, found or read as given; the message names it and says why."""


# How an image folder's images reach training: ``auto`` picks by size, or ``resident`` / ``stream``
# (splitsearch.data.loading).
DATA_PATHS = ("auto", "resident", "stream")

# Datasets without a test split of their own hold out this fraction as test images.
HOLDOUT_FRACTION = 0.2
# The default batch is the largest of these that still gives this many optimiser steps an epoch.
_BATCH_SIZES = (128, 64, 32, 16)
_MIN_STEPS_PER_EPOCH = 30
# Inputs this large are trained with the ImageNet recipe (batch 256, label smoothing 0.1).
IMAGENET_LIKE_SIZE = 128
_IMAGENET_BATCH = 256
_IMAGENET_LABEL_SMOOTHING = 0.1
# The input size of image folders without a crop, ImageNet's.
DEFAULT_FOLDER_SIZE = 224


@dataclass(frozen=True)
class TrainingDefaults:
    """Training settings that suit a dataset, used where a config leaves the setting unset.

    ``crop_padding``: zero padding before the random crop, 1/8 of the image side (CIFAR's 4
    pixels at 32x32).  ``hflip``: horizontal flips, off where mirroring changes the class
    (digits, house numbers).  ``batch_size``: 128 (the papers' CIFAR batch) unless the training
    split is too small for 30 optimiser steps an epoch, then 64, 32 or 16; ImageNet-like
    datasets start the same ladder at 256.  ``label_smoothing``: 0.1 on ImageNet-like datasets
    (Zhao et al.'s ImageNet recipe), None elsewhere (no smoothing; not reported as a default, as it changes nothing).
    """

    crop_padding: int
    hflip: bool
    batch_size: int
    label_smoothing: float | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Shape facts of a dataset: what a network needs to be built for it, and its training defaults.

    ``train_images`` is the size of the dataset's training split before a validation split is
    carved from it (None where it is unknown without loading).
    """

    spec: str
    in_channels: int
    image_size: int
    num_classes: int
    train_images: int | None = None
    mirror_safe: bool = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def imagenet_like(self) -> bool:
        """Large inputs, trained with the ImageNet recipe (see the module docstring)."""
        return self.image_size >= IMAGENET_LIKE_SIZE

    @property
    def training_defaults(self) -> TrainingDefaults:
        sizes = (_IMAGENET_BATCH, *_BATCH_SIZES) if self.imagenet_like else _BATCH_SIZES
        images = self.train_images or 0
        batch_size = next((size for size in sizes if images >= _MIN_STEPS_PER_EPOCH * size), sizes[-1])
        if self.train_images is None:
            batch_size = sizes[0]
        return TrainingDefaults(crop_padding=max(1, self.image_size // 8), hflip=self.mirror_safe,
                                batch_size=batch_size,
                                label_smoothing=_IMAGENET_LABEL_SMOOTHING if self.imagenet_like else None)


def held_out_train_size(count: int) -> int:
    """Training images left when a dataset of ``count`` images holds out its test split."""
    return count - min(round(HOLDOUT_FRACTION * count), count - 1)


# kind -> (channels, image size, classes, training images, mirror-safe)
_BUILTIN = {
    "digits": (1, 8, 10, held_out_train_size(1797), False),
    "cifar10": (3, 32, 10, 50_000, True),
    "cifar100": (3, 32, 100, 50_000, True),
    "svhn": (3, 32, 10, 73_257, False),
    "imagenet": (3, 224, 1000, 1_281_167, True),
}
_WITH_ARGUMENT = ("npz", "imagefolder", "imagenet", "synthetic")


_CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "digits": tuple(str(digit) for digit in range(10)),
    "svhn": tuple(str(digit) for digit in range(10)),
}


def class_names(info: DatasetInfo) -> tuple[str, ...] | None:
    """The classes' names where the spec fixes them (the built-in datasets), else None (use indices)."""
    return _CLASS_NAMES.get(split_spec(info.spec)[0])


def known_specs() -> str:
    """The accepted spec forms, for error messages and ``--help``."""
    return ", ".join([*_BUILTIN, *(f"{kind}:..." for kind in _WITH_ARGUMENT)])


def split_spec(spec: str) -> tuple[str, str]:
    """``'npz:/data/x.npz' -> ('npz', '/data/x.npz')``; ``'cifar10' -> ('cifar10', '')``."""
    kind, _, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _BUILTIN and not argument:
        return kind, ""
    if kind in _WITH_ARGUMENT and argument:
        return kind, argument.strip()
    raise DataError(f"unknown dataset {spec!r}; use one of: {known_specs()}")


# Kinds whose images are resized to the input size, so a crop can choose it.
CROPPABLE = ("imagenet", "imagefolder")


def dataset_info(spec: str, crop: int | None = None) -> DatasetInfo:
    """Input shape, class count and augmentation defaults of the dataset named by ``spec``.

    ``crop`` replaces the input size of a dataset that resizes its images (:data:`CROPPABLE`);
    for the others it must equal their image size.

    Raises:
        ValueError: unknown spec, a file that does not hold what the spec says, or a crop the
            dataset cannot take.
    """
    info = _native_info(spec)
    if crop is None or crop == info.image_size:
        return info
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise DataError(f"crop must be a positive image size in pixels, got {crop!r}")
    if split_spec(spec)[0] not in CROPPABLE:
        raise DataError(f"crop {crop}: {spec} has fixed {info.image_size}x{info.image_size} images; only "
                        f"{' and '.join(CROPPABLE)} take another input size")
    return replace(info, image_size=crop)


def _native_info(spec: str) -> DatasetInfo:
    kind, argument = split_spec(spec)
    if kind in _BUILTIN and not argument:
        return DatasetInfo(spec, *_BUILTIN[kind])
    if kind == "imagenet":
        return _imagenet_info(spec, Path(argument))
    if kind == "synthetic":
        if not argument.isdigit() or int(argument) < 1:
            raise DataError(f"synthetic:N needs a positive sample count N, got {spec!r}")
        return DatasetInfo(spec, 3, 32, 10, held_out_train_size(int(argument)))
    if kind == "npz":
        return _npz_info(spec, Path(argument))
    return _imagefolder_info(spec, argument)


def _npz_info(spec: str, path: Path) -> DatasetInfo:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        with np.load(path) as arrays:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
            if missing:
                raise DataError(f"{path} lacks the arrays {sorted(missing)} (needs x_train, y_train, x_test, y_test)")
            x_shape = arrays["x_test"].shape
            train_images = len(arrays["y_train"])
            num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable .npz file: {error}") from None
    if len(x_shape) != 4:
        raise DataError(f"{path}: x_test must be 4-d (NCHW or NHWC), got shape {x_shape}")
    # NCHW when the channel axis is small; NHWC otherwise (e.g. 32x32x3).
    channels, height, width = x_shape[1:] if x_shape[1] <= 4 else (x_shape[3], x_shape[1], x_shape[2])
    if height != width:
        raise DataError(f"{path}: images must be square, got {height}x{width}")
    return DatasetInfo(spec, int(channels), int(height), num_classes, train_images)


# Image files by name (torchvision.datasets.folder.IMG_EXTENSIONS, less what torchvision.io could not
# decode; decoded by TorchCodec, splitsearch.data.stream.decode); other files in a class folder are
# skipped, as torchvision skips them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")


def _imagefolder_info(spec: str, argument: str) -> DatasetInfo:
    root = Path(argument)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = [entry for entry in root.iterdir() if entry.is_dir()]
    if not classes:
        raise DataError(f"{root} has no class sub-folders")
    files = sum(1 for folder in classes for entry in folder.iterdir()
                if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS))
    return DatasetInfo(spec, 3, DEFAULT_FOLDER_SIZE, len(classes), held_out_train_size(files))


def _imagenet_info(spec: str, root: Path) -> DatasetInfo:
    """ImageNet's own layout; the class count is read from ``train/``, the image count is ImageNet's
    (listing 1.28M files on every config check would cost seconds)."""
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataError(f"{root} is not in ImageNet's layout: {root / part} is missing "
                            "(expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG)")
    classes = sum(1 for entry in (root / "train").iterdir() if entry.is_dir())
    if not classes:
        raise DataError(f"{root / 'train'} has no class sub-folders")
    return DatasetInfo(spec, 3, DEFAULT_FOLDER_SIZE, classes, _BUILTIN["imagenet"][3] if classes == 1000 else None)
