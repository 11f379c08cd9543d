"""What ``splitsearch train`` trains: a config file's candidate with the command's overrides.

A user retrains an exported configuration on another dataset, for more epochs, with another
seed, or as the final run of a chosen candidate (every training image, test accuracy once).
:func:`plan_training` applies those overrides, loads the data, and names the output folder, so
the command line only parses and prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from splitsearch.config import SplitConfig
from splitsearch.data import DEFAULT_DATA_DIR, DeviceData, prepare_data


@dataclass(frozen=True)
class TrainingPlan:
    """A training about to start.

    Attributes:
        config: the candidate with every override applied.
        data: its dataset on the training device.
        out_dir: where checkpoints, metrics and the model go.
        final: a final training (no validation split: test accuracy is reported once, at the end).
    """

    config: SplitConfig
    data: DeviceData
    out_dir: Path
    final: bool


def plan_training(config: SplitConfig, device: torch.device | str = "cpu", *, dataset: str | None = None,
                  epochs: int | None = None, seed: int | None = None, final: bool = False,
                  out_dir: Path | None = None, data_dir: str | Path = DEFAULT_DATA_DIR,
                  download: bool = False) -> TrainingPlan:
    """``config`` with the overrides given (None: keep the config's), its data, output folder and mode.

    ``final`` trains on every training image (``train.val_fraction`` 0); a run whose dataset
    leaves no validation image is final too, as there is nothing to select on.  The output
    folder defaults to ``runs/<arch>-S<S>-<config hash>``, so the same config resumes there.
    """
    if dataset is not None:
        config = config.replace(dataset=dataset)
    settings = {"epochs": epochs, "seed": seed, "val_fraction": 0.0 if final else None}
    settings = {key: value for key, value in settings.items() if value is not None}
    if settings:
        config = config.replace(train=dataclasses.replace(config.train, **settings))
    data = prepare_data(config.dataset, config.train, device, data_dir, download)
    out_dir = out_dir or Path("runs") / f"{config.arch}-S{config.S}-{config.config_hash()[:8]}"
    return TrainingPlan(config, data, out_dir, final or data.val.num_samples == 0)
