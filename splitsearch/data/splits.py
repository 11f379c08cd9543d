"""Carve the validation split out of the training split: the second step of the data path.

The search selects on ``val`` only; ``test`` is for the final report of an exported config and
must never drive a choice (DESIGN.md, "Validation vs test").  A final training
(``splitsearch train --final``) sets the validation fraction to 0 and so trains on every
training image.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitsearch.data.loading import ImageDataset, ImageSplit
from splitsearch.data.specs import DatasetInfo


@dataclass(frozen=True)
class DataSplits:
    """Train, validation (carved from train, for selection) and test (final report only)."""

    info: DatasetInfo
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit


def split_validation(dataset: ImageDataset, fraction: float, seed: int = 0) -> DataSplits:
    """Carve a validation split from the training split: ``round(fraction * N)`` images, seeded.

    The test split is passed through untouched.  A positive fraction keeps at least one image on
    each side; a fraction of 0 leaves the validation split empty.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    size = len(dataset.train)
    count = round(fraction * size)
    if fraction > 0:
        count = min(max(count, 1), size - 1)
    train, val = dataset.train.carve(count, seed)
    return DataSplits(dataset.info, train, val, dataset.test)
