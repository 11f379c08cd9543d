"""``SplitConfig``: one candidate of the search, as a frozen dataclass with YAML in and out.

A config says how a network is split (``arch``, ``S``, ``block_factors``, ``groups``,
``width_mult``), how its parts are trained together (``wd_rule``, ``lambda_cot`` and the
``train`` section) and on which ``dataset``.  It is what the search samples, what ``export``
writes and what ``splitsearch train`` reads, so every value is checked here, once, with an
error that names the key and says what is allowed.

Example YAML::

    arch: wrn28_10
    S: 4
    block_factors: [1, 1, 1]
    wd_rule: exp
    lambda_cot: 0.5
    dataset: cifar100
    train:
      epochs: 300
      batch_size: 128
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from splitsearch.blocks.factors import check_block_factors
from splitsearch.blocks.semantic_groups import DEFAULT_SPLIT_DEPTH, Parametrisation, SplitDepth, stage_groups
from splitsearch.data.specs import DEFAULT_DATASET, DatasetInfo, dataset_info
from splitsearch.models.registry import SEMANTIC_SPLIT_FAMILIES, ArchFamily, resolve_arch
from splitsearch.errors import SplitsearchError

WdRule = Literal["none", "linear", "exp"]
Combine = Literal["mean_logits", "max_logits", "mean_softmax"]
LrSchedule = Literal["warmup_cosine", "onecycle"]
CropFill = Literal["zero", "mean"]
# With ``cycle_momentum`` the momentum swings this far either side of ``train.momentum`` (torch's
# OneCycleLR defaults, 0.85 and 0.95, around the usual 0.9).
MOMENTUM_CYCLE = 0.05


class ConfigError(SplitsearchError, ValueError):
    """A configuration value or file is invalid; the message says which and why."""


# How a training step runs (``--mode``): how the members are held, eager or compiled with
# ``torch.compile`` (``compiled-*``), or compiled and replayed as CUDA graphs (``graphed-*``, CUDA
# only).  ``auto`` chooses by measurement (:mod:`splitsearch.train.autotune`).  Plain strings, so
# that the CLI lists them without importing torch.
EXECUTION_MODES = ("auto", "sequential", "fused", "compiled-sequential", "compiled-fused", "graphed-sequential",
                   "graphed-fused")
# The torch.compile mode of each prefix: CUDA graphs are what ``reduce-overhead`` adds.
COMPILE_MODES = {"compiled": "default", "graphed": "reduce-overhead"}


def ensemble_mode(mode: str) -> str:
    """How ``mode`` (one of :data:`EXECUTION_MODES`) holds the members: ``compiled-fused`` -> ``fused``."""
    if mode not in EXECUTION_MODES:
        raise ValueError(f"mode must be one of {', '.join(EXECUTION_MODES)}, got {mode!r}")
    return mode.split("-", 1)[-1]


def compile_mode(mode: str) -> str | None:
    """The ``torch.compile`` mode ``mode`` asks for (None: eager)."""
    ensemble_mode(mode)
    prefix, _, rest = mode.partition("-")
    return COMPILE_MODES[prefix] if rest else None


@dataclass(frozen=True)
class TrainConfig:
    """How the S networks of a candidate are trained (defaults: the divide-and-co-train recipe for CIFAR).

    The defaults follow Zhao et al., "Towards Better Accuracy-efficiency Trade-offs: Divide and
    Co-training" (2020), except two.  Warm-ups are fractions of the run so that a 10-epoch test
    run scales a 300-epoch schedule: lambda_cot warms up over 40 of 300 epochs (0.1333, the
    authors'); the learning rate over the first 15 % (the authors': about 2 %, 6 of 300 epochs).
    Random crops are padded with the training images' mean colour (the authors pad black, as
    torchvision's ``RandomCrop`` on raw images).  Measured side by side on the CIFAR-10 subset
    (``benchmarks/trainer_vs_reference.py``), black padding cost S=2 and S=4 about 2 points and
    S=1 nothing, which made a search wrongly prefer the undivided network; set
    ``lr_warmup_fraction: 0.02, crop_fill: zero`` for the authors' recipe.

    Settings left unset (``None``) take the dataset's defaults
    (:class:`splitsearch.data.specs.TrainingDefaults`); :meth:`with_dataset_defaults` fills them in.

    Attributes:
        epochs: training epochs of a candidate (a semantic split's two stages share them).
        batch_size: images per optimiser step, all members together; unset: the dataset's
            default, the largest of 128/64/32/16 that still gives 30 steps an epoch (128 on
            CIFAR, 32 on digits; 256 on ImageNet-like datasets).
        lr: peak learning rate of SGD.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: weight decay of the undivided network, on convolution and linear weights
            only (not BatchNorm parameters or biases); the small networks' share follows
            ``wd_rule``.
        lr_warmup_fraction: share of the run over which the learning rate warms up linearly.
        lr_schedule: ``warmup_cosine`` (linear warm-up, then cosine decay per step) or
            ``onecycle`` (torch's ``OneCycleLR``).
        cycle_momentum: with ``onecycle``, swing the momentum against the learning rate
            (0.05 either side of ``momentum``).
        cot_warmup_fraction: share of the run over which lambda_cot warms up linearly.
        val_fraction: share of the training images held out as the validation split the search
            optimises (seeded by ``seed``); 0 trains on every image and reports test accuracy.
        seed: seed of the initial weights, the augmentation draws and the validation split.
        crop_padding: pixels of padding around random crops; unset: 1/8 of the image side (4 on
            CIFAR, 1 on 8x8 digits).
        crop_fill: what the crop padding is filled with: ``mean`` (the training images' mean
            colour) or ``zero`` (black, the authors').
        hflip: random horizontal flips; unset: on, except on digits and SVHN (a mirrored digit
            is another digit).
        autoaugment: apply AutoAugment (CIFAR policy), per member.
        random_erasing: probability of random erasing per image and member; 0 is off.
        mixup_alpha: mixup's Beta(alpha, alpha) parameter; 0 is off.
        label_smoothing: label smoothing of each member's cross-entropy (not of the co-training
            term); unset: 0.1 on ImageNet-like datasets, none elsewhere.
        combine: how the ensemble combines its members at evaluation: ``mean_logits`` (the
            mean of the logits, the default), ``max_logits`` or ``mean_softmax``.
        grouping_fraction: semantic split only: share of the epochs that learn the class and
            feature groups before the network is cut; the rest fine-tune the cut network.
        gamma_disjoint: semantic split only: weight of the disjointness regulariser (the
            authors': 1).
        gamma_group_weight: semantic split only: weight of the group-weight regulariser, which
            pushes weights between groups to zero (the authors': 1).
        gamma_balance: semantic split only: weight of the balance regulariser, which keeps the
            groups of equal size (the authors': 10).
        assignment: semantic split only: how the group assignments are parametrised:
            ``softmax`` over free variables, or ``reduced_gradient`` (the reduced-gradient
            method on the simplex of the SplitNet paper's supplement).
        assignment_lr_mult: semantic split only: the assignments' learning rate as a multiple
            of ``lr`` (at 1 they barely move in a short run).
    """

    epochs: int = 300
    batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_warmup_fraction: float = 0.15
    lr_schedule: LrSchedule = "warmup_cosine"
    cycle_momentum: bool = False
    cot_warmup_fraction: float = 0.1333
    val_fraction: float = 0.1
    seed: int = 0
    crop_padding: int | None = None
    crop_fill: CropFill = "mean"
    hflip: bool | None = None
    autoaugment: bool = False
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    label_smoothing: float | None = None
    combine: Combine = "mean_logits"
    grouping_fraction: float = 0.5
    gamma_disjoint: float = 1.0
    gamma_group_weight: float = 1.0
    gamma_balance: float = 10.0
    assignment: Parametrisation = "softmax"
    assignment_lr_mult: float = 100.0

    def __post_init__(self) -> None:
        _check_types(self, "train.")
        _require(self.epochs >= 1, "train.epochs", "must be at least 1")
        _require(self.batch_size is None or self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _require(self.lr > 0, "train.lr", "must be positive")
        _require(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        for name in ("lr_warmup_fraction", "cot_warmup_fraction", "random_erasing"):
            _require(0 <= getattr(self, name) <= 1, f"train.{name}", "must be in [0, 1]")
        _require(0 <= self.val_fraction < 1, "train.val_fraction", "must be in [0, 1)")
        _require(self.crop_padding is None or self.crop_padding >= 0, "train.crop_padding", "must be >= 0")
        _require(self.mixup_alpha >= 0, "train.mixup_alpha", "must be >= 0")
        _require(self.label_smoothing is None or 0 <= self.label_smoothing < 1, "train.label_smoothing",
                 "must be in [0, 1)")
        _require(0 < self.grouping_fraction <= 1, "train.grouping_fraction",
                 "must be in (0, 1]: the share of the epochs that learn the groups before the cut")
        _require(not self.cycle_momentum or self.lr_schedule == "onecycle", "train.cycle_momentum",
                 "needs train.lr_schedule: onecycle (momentum cycles against the one-cycle learning rate)")
        _require(not self.cycle_momentum or MOMENTUM_CYCLE <= self.momentum < 1 - MOMENTUM_CYCLE,
                 "train.momentum",
                 f"must be in [{MOMENTUM_CYCLE}, {1 - MOMENTUM_CYCLE}) to cycle by +-{MOMENTUM_CYCLE}")
        _require(self.assignment_lr_mult > 0, "train.assignment_lr_mult", "must be positive")
        for name in ("gamma_disjoint", "gamma_group_weight", "gamma_balance"):
            _require(getattr(self, name) >= 0, f"train.{name}", "must be >= 0")

    def grouping_epochs(self) -> int:
        """Epochs of the semantic split's first stage; the cut follows the last of them (at least one)."""
        return min(self.epochs, max(1, round(self.grouping_fraction * self.epochs)))

    def with_dataset_defaults(self, info: DatasetInfo) -> tuple[TrainConfig, dict[str, Any]]:
        """This config with every unset setting taken from the dataset, and the ones taken.

        Returns:
            (the complete config, ``{setting: value}`` for each setting the dataset supplied).
        """
        defaults = dataclasses.asdict(info.training_defaults)
        # A default of None (no label smoothing outside ImageNet-like datasets) leaves the setting unset.
        applied = {key: value for key, value in defaults.items() if getattr(self, key) is None and value is not None}
        return dataclasses.replace(self, **applied), applied


@dataclass(frozen=True)
class SplitConfig:
    """One split candidate.

    Attributes:
        arch: architecture name (``splitsearch.models.available_archs()``; ``wrn{d}_{k}`` etc.).
        S: number of small networks (divide and co-train); 1 is the undivided network.
        block_factors: split factor K_b per block (the block-wise split with fusion); empty means all ones.
        groups: semantic groups G (SplitNet, Kim et al. 2017); 1 means no semantic split.
        split_depth: what the semantic split cuts: ``fc`` (the classifier), ``shallow`` (+ the
            last stage; the default), ``deep`` (+ the last two) or ``hierarchical`` (G/2
            supergroups in the second-to-last stage, G subgroups above).  None when groups is 1
            (a value given with groups 1 is dropped, as it changes nothing).
        width_mult: multiplies every channel count after division by S (the budget-fitting knob).
        wd_rule: weight-decay dividing rule for the small networks: none, linear (wd/S) or exp.
        lambda_cot: weight of the co-training (Jensen-Shannon) loss; ignored when S = 1.
        dataset: dataset spec (see :mod:`splitsearch.data.specs`), fixes input shape and classes.
        crop: square input size in pixels, for the datasets whose images are resized to it
            (``imagenet``, ``imagefolder:PATH``; 224 when None).  Counting and training both use
            it; the paper counts EfficientNet-B7 at 320 and SE-ResNeXt-101 at 416.  None keeps the
            dataset's size and is left out of the config's dict (and hash).
        train: training settings.
    """

    arch: str
    S: int = 1
    block_factors: tuple[int, ...] = ()
    groups: int = 1
    split_depth: SplitDepth | None = None
    width_mult: float = 1.0
    wd_rule: WdRule = "exp"
    lambda_cot: float = 0.5
    dataset: str = DEFAULT_DATASET
    crop: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.block_factors, list):
            object.__setattr__(self, "block_factors", tuple(self.block_factors))
        if isinstance(self.train, Mapping):
            object.__setattr__(self, "train", _from_mapping(TrainConfig, self.train, "train."))
        _require(isinstance(self.train, TrainConfig), "train", "must be a mapping of training settings")
        _check_types(self, "")
        try:
            family, _ = resolve_arch(self.arch)
            factors = check_block_factors(self.block_factors, family.num_blocks, self.arch)
            info = dataset_info(self.dataset, self.crop)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "block_factors", factors)
        _require(self.S >= 1, "S", "must be a positive integer")
        _require(self.groups >= 1, "groups", "must be a positive integer")
        _require(self.groups <= info.num_classes, "groups",
                 f"cannot exceed the {info.num_classes} classes of {self.dataset}")
        self._check_semantic_split(family)
        _require(self.width_mult > 0, "width_mult", "must be positive")
        _require(self.lambda_cot >= 0, "lambda_cot", "must be >= 0")
        if info.image_size < family.min_input_size:
            raise ConfigError(
                f"dataset {self.dataset} at {info.image_size}x{info.image_size} is too small for {self.arch}, "
                f"which needs at least {family.min_input_size}x{family.min_input_size} inputs"
            )

    def _check_semantic_split(self, family: ArchFamily) -> None:
        """Canonical ``split_depth`` (None without groups) and a one-line error for what cannot be cut."""
        if self.groups == 1:
            object.__setattr__(self, "split_depth", None)
            return
        if self.split_depth is None:
            object.__setattr__(self, "split_depth", DEFAULT_SPLIT_DEPTH)
        _require(family.supports_semantic_split, "groups",
                 f"> 1 is not available for {self.arch}: {SEMANTIC_SPLIT_FAMILIES}")
        try:
            per_stage = stage_groups(family.num_blocks, self.groups, self.split_depth)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        both = [index + 1 for index, (g, k) in enumerate(zip(per_stage, self.block_factors)) if g > 1 and k > 1]
        _require(not both, "block_factors",
                 f"and groups: block {', '.join(map(str, both))} would be both block-split and semantically split "
                 f"({self.split_depth}); a stage takes one of the two: set its factor to 1 or use a shallower "
                 "split_depth")

    # -- conversions ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), ready for YAML or JSON.

        ``train.label_smoothing`` left unset is not written: configs from before the key keep
        their hash, so their stored trials answer repeats and their checkpoints still resume.
        """
        data = dataclasses.asdict(self)
        data["block_factors"] = list(self.block_factors)
        if self.crop is None:
            del data["crop"]  # configs written before crops existed keep their hash
        if data["train"]["label_smoothing"] is None:
            del data["train"]["label_smoothing"]
        return data

    def input_info(self) -> DatasetInfo:
        """The dataset's shape facts at this config's input size (its crop, if any)."""
        return dataset_info(self.dataset, self.crop)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> SplitConfig:
        """Build from a mapping; unknown keys and wrong types raise :class:`ConfigError`.

        ``source`` (a file name) prefixes error messages.
        """
        try:
            return _from_mapping(cls, data, "")
        except ConfigError as error:
            if source is None:
                raise
            raise ConfigError(f"{source}: {error}") from None

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    @classmethod
    def from_yaml(cls, path: str | Path) -> SplitConfig:
        """Read a YAML file.  Extra top-level sections such as ``provenance`` are kept out."""
        path = Path(path)
        data = read_yaml(path, ConfigError)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        data = {key: value for key, value in data.items() if key not in _IGNORED_SECTIONS}
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> SplitConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def config_hash(self) -> str:
        """Stable short hash of everything that defines the candidate and its training."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _FlowListDumper(yaml.SafeDumper):
    """Writes lists inline (``block_factors: [1, 2, 2]``) and mappings as blocks."""


_FlowListDumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def read_yaml(path: str | Path, error: type[ValueError]) -> Any:
    """The data of a YAML file; an unreadable file or bad YAML raises ``error`` in one line."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text of plain data, keys in their given order, short lists inline."""
    return yaml.dump(dict(data), Dumper=_FlowListDumper, sort_keys=False)


def apply_settings(data: Mapping[str, Any], settings: Sequence[str], error: type[ValueError] = ConfigError,
                   aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``data`` with each ``KEY=VALUE`` of ``settings`` set (the command line's ``--set``).

    KEY is dotted into nested mappings (``train.lr``), ``aliases`` maps a first part to another
    (``{"train": "base.train"}``); VALUE is read as YAML (``0.2`` a number, ``[2, 4]`` a list,
    ``none`` a string, ``null`` nothing).  Whether the key exists is for the reader of the result
    to check, as it checks a file.  A malformed setting raises ``error`` in one line.
    """
    result = copy.deepcopy(dict(data))
    for setting in settings:
        key, equals, text = setting.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not equals or not all(path):
            raise error(f"--set {setting!r}: expected KEY=VALUE, e.g. train.lr=0.2")
        if aliases and path[0] in aliases:
            path = aliases[path[0]].split(".") + path[1:]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise error(f"--set {setting!r}: the value is not valid YAML") from None
        target = result
        for depth, part in enumerate(path[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise error(f"--set {setting!r}: {'.'.join(path[:depth + 1])} is not a section of keys")
        target[path[-1]] = value
    return result


def with_settings(config: SplitConfig, settings: Sequence[str]) -> SplitConfig:
    """``config`` with the ``--set KEY=VALUE`` settings applied (``train.lr=0.2``, ``S=4``), checked as a file is."""
    if not settings:
        return config
    return SplitConfig.from_dict(apply_settings(config.to_dict(), settings), source="--set")


# Sections a YAML may carry beside the config itself (written by ``export``).
_IGNORED_SECTIONS = ("provenance", "cost")


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key} {message}")


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known keys: {', '.join(sorted(known))})")
    return cls(**data)


def _check_types(instance: Any, prefix: str) -> None:
    """Check every field against its annotation; convert YAML's ints to floats where floats belong."""
    hints = typing.get_type_hints(type(instance))
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        expected = hints[item.name]
        key = prefix + item.name
        origin = typing.get_origin(expected)
        if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(expected):
            if value is None:
                continue
            (expected,) = [arg for arg in typing.get_args(expected) if arg is not type(None)]
            origin = typing.get_origin(expected)
        if origin is Literal:
            allowed = typing.get_args(expected)
            _require(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")
        elif origin is tuple:
            _require(isinstance(value, tuple) and all(is_int(v) for v in value), key,
                     f"must be a list of integers, got {value!r}")
        elif expected is float:
            number = as_float(value)
            _require(number is not None, key, f"must be a number, got {value!r}")
            object.__setattr__(instance, item.name, number)
        elif expected is int:
            _require(is_int(value), key, f"must be an integer, got {value!r}")
        elif expected is bool:
            _require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        elif expected is str:
            _require(isinstance(value, str), key, f"must be a string, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_float(value: Any) -> float | None:
    """The float a YAML value means; ``5e-4`` arrives as a string (YAML 1.1 wants ``5.0e-4``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
