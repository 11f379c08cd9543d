"""Put the splits on the training device as uint8 tensors with batch loaders: the last step of the data path.

Small datasets fit in device memory, so instead of a DataLoader with per-image CPU transforms a
split is kept on the device as uint8, batches are cut from it with index tensors, and
:mod:`splitsearch.train.augment` draws the S members' views there.  :func:`prepare_data` runs
the whole path: spec -> load -> split -> device.

Image folders too large for memory stream from disk instead (:mod:`splitsearch.data.stream`):
:func:`to_device` gives them :class:`~splitsearch.data.stream.StreamLoader` objects with the same
interface, so the trainer cannot tell the two apart except by the shape of a training batch.

Normalisation uses the per-channel mean and std of the training split (after the validation
split is carved out), so nothing about ``val`` or ``test`` leaks into training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from splitsearch.data.folder import FileSplit
from splitsearch.data.loading import DEFAULT_DATA_DIR, ImageDataset, ImageSplit, load_dataset
from splitsearch.data.specs import DatasetInfo
from splitsearch.data.splits import DataSplits, split_validation
from splitsearch.data.stream import StreamLoader, sample_images



class LoaderSettings(Protocol):
    """The training settings the data path reads (a :class:`~splitsearch.config.TrainConfig` has them).

    A protocol rather than the config class itself: the config imports this package for its
    dataset facts, so the data path must not import the config back.
    """

    batch_size: int | None
    val_fraction: float
    seed: int
    hflip: Any

    def with_dataset_defaults(self, info: DatasetInfo) -> tuple[LoaderSettings, Any]: ...

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

    def mean_pixel(self, device: torch.device | str = "cpu") -> Tensor:
        """The mean colour as uint8 values per channel (what normalises to about 0)."""
        return (torch.tensor(self.mean, device=device) * 255).round().to(torch.uint8)

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
        # Views per image are drawn later, on the device (splitsearch.train.augment); the
        # streaming loader, which cuts them itself, reads this.
        self.members = 1

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
    train: TensorLoader | StreamLoader
    val: TensorLoader | StreamLoader
    test: TensorLoader | StreamLoader

    @property
    def streamed(self) -> bool:
        """Whether the batches are decoded from disk while training (else held on the device)."""
        return isinstance(self.train, StreamLoader)


def to_device(splits: DataSplits, config: LoaderSettings, device: torch.device | str = "cpu",
              workers: int | None = None) -> DeviceData:
    """Put the splits on ``device`` with loaders of ``config.batch_size``.

    The training loader shuffles (seeded by ``config.seed``) and drops a short last batch (a
    batch of one breaks BatchNorm in training) unless that would leave no batch at all.  Splits
    of files stream through ``workers`` decoding processes (None: min(4, CPUs)).
    """
    if isinstance(splits.train, FileSplit):
        return _streaming(splits, config, device, workers)
    train = TensorLoader(splits.train, config.batch_size, device=device, shuffle=True,
                         drop_last=len(splits.train) >= config.batch_size, seed=config.seed)
    return DeviceData(
        info=splits.info,
        normalization=Normalization.of(splits.train.images),
        train=train,
        val=TensorLoader(splits.val, config.batch_size, device=device),
        test=TensorLoader(splits.test, config.batch_size, device=device),
    )


def _streaming(splits: DataSplits, config: LoaderSettings, device: torch.device | str, workers: int | None
               ) -> DeviceData:
    """Streaming loaders for splits of files; the normalisation measured on a sample of the training images."""
    size = splits.info.image_size

    def loader(files: FileSplit, train: bool = False) -> StreamLoader:
        return StreamLoader(files, size, config.batch_size, device=device, train=train, hflip=bool(config.hflip),
                            drop_last=train and len(files) >= config.batch_size, seed=config.seed, workers=workers)

    return DeviceData(
        info=splits.info,
        normalization=Normalization.of(sample_images(splits.train, size, seed=config.seed)),
        train=loader(splits.train, train=True),
        val=loader(splits.val),
        test=loader(splits.test),
    )


def split_to_device(dataset: ImageDataset, config: LoaderSettings, device: torch.device | str = "cpu",
                    workers: int | None = None) -> DeviceData:
    """Carve ``dataset``'s validation split (``config.val_fraction``, ``config.seed``) and put all on ``device``.

    A batch size the config leaves unset is the dataset's default (:class:`TrainingDefaults`).
    """
    config, _ = config.with_dataset_defaults(dataset.info)
    return to_device(split_validation(dataset, config.val_fraction, config.seed), config, device, workers)


def prepare_data(spec: str, config: LoaderSettings, device: torch.device | str = "cpu",
                 data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = False, crop: int | None = None,
                 data_path: str = "auto", workers: int | None = None) -> DeviceData:
    """The whole data path: load ``spec`` (at ``crop``), carve the validation split, put everything on ``device``.

    ``data_path`` and ``workers``: see :func:`~splitsearch.data.loading.load_dataset` and :func:`to_device`.
    """
    return split_to_device(load_dataset(spec, data_dir, download, crop, data_path), config, device, workers)


class DataCache:
    """Datasets loaded once and put on the device once per split, shared by every run of a search.

    Trials of a study share one validation split (one seed); confirmation runs use other seeds,
    so other splits of the same loaded images.
    """

    def __init__(self, device: torch.device | str = "cpu", data_dir: str | Path = DEFAULT_DATA_DIR,
                 download: bool = False, data_path: str = "auto", workers: int | None = None) -> None:
        self.device = torch.device(device)
        self.data_dir = data_dir
        self.download = download
        self.data_path = data_path
        self.workers = workers
        self._datasets: dict[tuple[str, int | None], ImageDataset] = {}
        self._on_device: dict[tuple, DeviceData] = {}

    def get(self, spec: str, config: LoaderSettings, crop: int | None = None) -> DeviceData:
        """The dataset ``spec`` at ``crop`` split and batched as ``config`` says (loading it the first time)."""
        loaded = (spec, crop)
        if loaded not in self._datasets:
            self._datasets[loaded] = load_dataset(spec, self.data_dir, self.download, crop, self.data_path)
        key = (spec, crop, config.batch_size, config.val_fraction, config.seed, config.hflip)
        if key not in self._on_device:
            self._on_device[key] = split_to_device(self._datasets[loaded], config, self.device, self.workers)
        return self._on_device[key]
