"""Datasets, from the ``--dataset`` spec to batches on the training device, in four steps.

=======================  =====================================================================
:mod:`.specs`            the spec string: input shape, classes, training defaults
:mod:`.loading`          the images as uint8 tensors, with the dataset's own train/test splits
:mod:`.splits`           the validation split carved from the training split
:mod:`.device`           everything on the training device, with batch loaders
=======================  =====================================================================

:func:`prepare_data` runs all four.  Augmentation, which happens per batch during training,
lives in :mod:`splitsearch.train.augment`.
"""

from splitsearch.data.device import (
    DataCache,
    DeviceData,
    Normalization,
    TensorLoader,
    prepare_data,
    split_to_device,
    to_device,
)
from splitsearch.data.loading import DEFAULT_DATA_DIR, ImageDataset, ImageSplit, load_dataset
from splitsearch.data.specs import DEFAULT_DATASET, DatasetInfo, TrainingDefaults, dataset_info, known_specs
from splitsearch.data.splits import DataSplits, split_validation

__all__ = [
    "DataCache", "DEFAULT_DATASET", "DEFAULT_DATA_DIR", "DataSplits", "DatasetInfo", "DeviceData",
    "ImageDataset", "ImageSplit", "Normalization", "TensorLoader", "TrainingDefaults", "dataset_info", "known_specs",
    "load_dataset", "prepare_data", "split_to_device", "split_validation", "to_device",
]
