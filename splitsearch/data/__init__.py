"""Datasets, from the ``--dataset`` spec to batches on the training device, in four steps.

=======================  =====================================================================
:mod:`.specs`            the spec string: input shape, classes, training defaults
:mod:`.loading`          the images as uint8 tensors, with the dataset's own train/test splits
:mod:`.folder`           an image folder's files and labels, checked (for folders that stream)
:mod:`.splits`           the validation split carved from the training split
:mod:`.device`           everything on the training device, with batch loaders
:mod:`.stream`           or, for folders too large for memory, batches decoded from disk
=======================  =====================================================================

:func:`prepare_data` runs all four.  Augmentation, which happens per batch during training,
lives in :mod:`splitsearch.train.augment`.
"""

from __future__ import annotations

from splitsearch.data.specs import DATA_PATHS, DEFAULT_DATASET, DatasetInfo, TrainingDefaults, dataset_info, known_specs
from splitsearch.lazy import lazy_names

# The steps that need torch, each name imported from its module on first use: the specs (all the
# config needs) load without torch.
_TORCH_STEPS = {
    "DataCache": "device", "DeviceData": "device", "Normalization": "device", "TensorLoader": "device",
    "prepare_data": "device", "split_to_device": "device", "to_device": "device",
    "DEFAULT_DATA_DIR": "loading", "ImageDataset": "loading", "ImageSplit": "loading", "load_dataset": "loading",
    "DataSplits": "splits", "split_validation": "splits",
    "FileSplit": "folder", "StreamLoader": "stream",
}

__all__ = [
    "DATA_PATHS", "DataCache", "DEFAULT_DATASET", "FileSplit", "StreamLoader", "DEFAULT_DATA_DIR", "DataSplits", "DatasetInfo", "DeviceData",
    "ImageDataset", "ImageSplit", "Normalization", "TensorLoader", "TrainingDefaults", "dataset_info", "known_specs",
    "load_dataset", "prepare_data", "split_to_device", "split_validation", "to_device",
]

__getattr__ = lazy_names(__name__, _TORCH_STEPS)
