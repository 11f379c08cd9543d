"""Study definitions (YAML in ``studies/``) and the Optuna study they open.

A study definition says what is searched (base network, dataset, search space), under which
budget, with which sampler and pruner, and for how long.  Every field can be overridden from
the command line.  Everything a definition implies is checked before the storage is touched,
so a bad definition never leaves a half-made study behind.

Resuming: running the same study name again loads it.  The definition's settings are
fingerprinted into the study's user attributes; a resumed study whose settings changed is an
error unless forced, so one study never silently mixes two searches.  Workers starting at the
same instant on a new database all succeed: one creates the study, queues the baselines and
writes the fingerprint last; the others load it and wait for the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna

from splitsearch.config import ConfigError, SplitConfig, apply_settings, read_yaml
from splitsearch.data.specs import DEFAULT_DATASET
from splitsearch.errors import SplitsearchError
from splitsearch.search.record import StudyRecord
from splitsearch.search.execution import worker_settings
from splitsearch.search.pruning import REDUCTION_FACTOR, ParetoHalvingPruner, prunable
from splitsearch.search.space import SearchSpace, config_value, load_space, space_fingerprint
from splitsearch.search.strategies import GreedySettings
from splitsearch.units import parse_bytes, parse_count, parse_duration

# accuracy, nll and ece are the ensemble's on the validation split (nll and ece:
# splitsearch.train.calibration); the others are the candidate's cost.
# The single objective when a study names none: the validation NLL, which ranked the digits tables'
# configurations closer to their final test accuracy than validation accuracy did, and gave a TPE +
# Hyperband search lower regret (benchmarks/objective_noise.py; docs' benchmarks, "Which objective").
DEFAULT_OBJECTIVES = ("nll",)
OBJECTIVES = (("accuracy",), ("nll",), ("accuracy", "params"), ("accuracy", "macs"), ("accuracy", "activation"),
              ("accuracy", "latency"), ("accuracy", "ece"))
# What optuna-dashboard calls each objective (instead of "Objective 0", "Objective 1").
METRIC_NAMES = {"accuracy": "validation accuracy", "nll": "validation NLL", "ece": "validation ECE",
                "params": "parameters", "macs": "MACs", "activation": "activation bytes", "latency": "latency (ms)"}
# Accuracy is maximised; a loss, a calibration error and a cost are minimised.
MAXIMIZED = ("accuracy",)
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("hyperband", "median", "pareto", "none")
# hyperband and median prune single-objective studies, pareto those of accuracy and a cost
# (default_pruner, pruner_refusal); none fits every study.
SINGLE_OBJECTIVE_PRUNERS = ("hyperband", "median")
BUDGET_MODES = ("fit", "reject")
# NSGA-II's population is sized to the trial budget (nsga2_population_size): Optuna's default of 50
# keeps any study under about 50 trials in its random first generation.
NSGA2_GENERATIONS = 4
NSGA2_POPULATION_RANGE = (4, 50)


class StudyError(SplitsearchError, ValueError):
    """A study definition, override or storage is invalid; the message says which and why."""


@dataclass(frozen=True)
class StudySpec:
    """One study: what is searched, under which budget, how, and for how long.

    ``base`` holds the config fields every candidate starts from (``arch`` and ``dataset``
    included); the search space then changes some of them per trial.
    ``dataset_train_dropped`` holds the study file's ``dataset_train`` settings when ``dataset``
    was overridden with another dataset (they were written for the file's own; the new one's
    defaults apply instead), so the caller can say so.
    ``worker`` holds the :class:`~splitsearch.search.execution.ExecutionOptions` fields the file
    sets for the worker that reads it (:data:`~splitsearch.search.execution.WORKER_SETTINGS`),
    ``greedy`` how ``--strategy greedy-blocks`` runs; neither is part of what the study searches.
    ``budget_latency`` (seconds) is a limit on the measured latency of one forward pass of
    ``latency_batch_size`` images (:mod:`splitsearch.cost.latency`): it is checked, never fitted, so
    a candidate over it is refused untrained in either ``budget_mode``.
    ``record_test``: a completed candidate is also measured on the test split and the figures are
    recorded (store and trial attributes) but never read by the search: for studies of how well a
    search-time signal predicts test accuracy (``benchmarks/split_table.py``).
    """

    name: str
    base: SplitConfig
    space: SearchSpace
    budget_params: int | None = None
    budget_macs: int | None = None
    budget_activation: int | None = None
    budget_latency: float | None = None
    latency_batch_size: int = 1
    budget_mode: str = "fit"
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    sampler: str = "tpe"
    pruner: str | None = None  # None: the default for the objectives (default_pruner)
    n_trials: int | None = 20
    timeout: float | None = None
    seed: int = 0
    baselines: bool = True
    source: str = "command line"
    dataset_train_dropped: Mapping[str, Any] = field(default_factory=dict)
    record_test: bool = False
    worker: Mapping[str, Any] = field(default_factory=dict)
    greedy: GreedySettings = GreedySettings()

    def __post_init__(self) -> None:
        where = self.source
        if self.objectives not in OBJECTIVES:
            raise StudyError(f"{where}: objectives must be one of "
                             f"{', '.join(','.join(o) for o in OBJECTIVES)}, got {','.join(self.objectives)}")
        if self.sampler not in SAMPLERS:
            raise StudyError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner is None:
            object.__setattr__(self, "pruner", default_pruner(self.objectives))
        if self.pruner not in PRUNERS:
            raise StudyError(f"{where}: pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if (refusal := pruner_refusal(self.pruner, self.objectives)) is not None:
            raise StudyError(f"{where}: {refusal}")
        if self.budget_mode not in BUDGET_MODES:
            raise StudyError(f"{where}: budget_mode must be fit or reject, got {self.budget_mode!r}")
        if self.budget_mode == "fit" and not self.has_budget:
            object.__setattr__(self, "budget_mode", "reject")  # nothing to fit to: plain search
        if isinstance(self.latency_batch_size, bool) or not isinstance(self.latency_batch_size, int) \
                or self.latency_batch_size < 1:
            raise StudyError(f"{where}: latency_batch_size must be a whole number of at least 1, "
                             f"got {self.latency_batch_size!r}")
        if self.n_trials is not None and self.n_trials < 1:
            raise StudyError(f"{where}: n_trials must be at least 1")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        """Optuna's direction of each objective: ``maximize`` for accuracy, ``minimize`` for the others."""
        return ["maximize" if objective in MAXIMIZED else "minimize" for objective in self.objectives]

    @property
    def has_budget(self) -> bool:
        """Whether a counted budget (params, MACs, activation memory) is set: what ``fit`` mode fits widths to."""
        return any(budget is not None for budget in (self.budget_params, self.budget_macs, self.budget_activation))

    @property
    def measures_latency(self) -> bool:
        """Whether each candidate's latency is measured before training: a latency budget or objective."""
        return self.budget_latency is not None or "latency" in self.objectives

    def settings(self) -> dict[str, Any]:
        """What defines the search (not how long it runs): compared when a study is resumed."""
        return {
            "base": self.base.to_dict(),
            "space": space_fingerprint(self.space),
            "budget_params": self.budget_params,
            "budget_macs": self.budget_macs,
            **({"budget_activation": self.budget_activation} if self.budget_activation is not None else {}),
            # Left out where latency is not measured, so older studies keep their fingerprint.
            **({"budget_latency": self.budget_latency, "latency_batch_size": self.latency_batch_size}
               if self.measures_latency else {}),
            "budget_mode": self.budget_mode,
            "objectives": list(self.objectives),
        }

    def fingerprint(self) -> str:
        canonical = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def max_epochs(self) -> int:
        """The most epochs a candidate trains: the space's fixed or largest ``train.epochs``, else the base's."""
        if "train.epochs" in self.space.fixed:
            return int(self.space.fixed["train.epochs"])
        for param in self.space.params:
            if param.key == "train.epochs":
                return int(max(param.choices) if param.kind == "categorical" else param.high)
        return int(config_value(self.base, "train.epochs"))


def default_pruner(objectives: Sequence[str]) -> str:
    """``hyperband`` for one objective, ``pareto`` for accuracy and a cost, ``none`` for accuracy and ECE.

    The ECE, like the accuracy, is learned epoch by epoch, so no candidate's point on that front
    is known at a rung: the Pareto pruner needs every objective but accuracy known before training.
    """
    if len(objectives) == 1:
        return "hyperband"
    return "pareto" if prunable(objectives) else "none"


def pruner_refusal(pruner: str, objectives: Sequence[str]) -> str | None:
    """Why ``pruner`` cannot prune a study of ``objectives``, naming what can; None where it can."""
    names = ",".join(objectives)
    if len(objectives) == 1 and pruner == "pareto":
        return (f"pruner pareto prunes multi-objective studies; objectives {names} is one objective: "
                "use hyperband, median or none")
    if len(objectives) > 1 and pruner in SINGLE_OBJECTIVE_PRUNERS:
        other = "pareto or none" if prunable(objectives) else "none"
        return f"pruner {pruner} prunes single-objective studies; for objectives {names} use {other}"
    if pruner == "pareto" and not prunable(objectives):
        return (f"pruner pareto needs every objective but accuracy known before training; the ECE of "
                f"objectives {names} is learned with the accuracy: use none")
    return None


def shipped_studies_dir() -> Path:
    import splitsearch

    return Path(splitsearch.__file__).resolve().parents[1] / "studies"


def resolve_study_file(name_or_path: str) -> Path:
    """A path, or the name of a shipped study (``quickstart`` -> ``studies/quickstart.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise StudyError(f"study file not found: {path}")
        return path
    shipped = shipped_studies_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in shipped_studies_dir().glob("*.yaml"))
    raise StudyError(f"unknown study {name_or_path!r}: give a YAML path or one of {', '.join(known) or 'none'}")


# Every key a study file may hold, with its meaning: the loader refuses any other, and the
# documentation's table of study keys is generated from this mapping.
STUDY_KEYS: dict[str, str] = {
    "name": "the study's name in the storage; running the same name again resumes it "
            "(default: ARCH-SPACE)",
    "arch": "the base network every candidate starts from (shortcut for base.arch)",
    "dataset": "the dataset spec (shortcut for base.dataset)",
    "space": "the search space: a YAML path or a shipped name (divide, blocks, full, semantic); default divide",
    "base": "config fields every candidate starts from (arch, dataset, train, ...); the space changes some per trial",
    "dataset_train": "train settings that belong to the file's own dataset; dropped, with a message, when the "
                     "dataset is overridden with another one, whose defaults then apply",
    "budget_params": "parameter budget of a candidate, all S networks together (a count such as 36M)",
    "budget_macs": "MACs budget of a candidate for one image (a count such as 5.3G)",
    "budget_activation": "activation-memory budget per image, split blocks run branch by branch "
                         "(bytes such as 2MB or 2MiB)",
    "budget_latency": "latency budget: the median forward time of latency_batch_size images on the "
                      "worker's device (a duration such as 5ms); checked, never fitted",
    "latency_batch_size": "images per timed forward pass for the latency budget and objective (default 1)",
    "budget_mode": "fit (scale each candidate's width to use the budget) or reject (prune over-budget "
                   "candidates untrained); default fit",
    "objectives": "nll (default: the validation negative log-likelihood, minimised; it ranks candidates "
                  "more faithfully than accuracy on a small validation split); accuracy; or accuracy "
                  "with one cost for a Pareto search: accuracy,params, accuracy,macs, accuracy,activation, "
                  "accuracy,latency or accuracy,ece (the expected calibration error)",
    "sampler": "tpe (default), random or nsga2",
    "pruner": "one objective: hyperband (default), median or none; accuracy and a cost: pareto (default: "
              "successive halving by Pareto rank on accuracy so far and the known cost) or none; "
              "accuracy,ece: none",
    "n_trials": "distinct candidates to finish (repeats not counted); default 20",
    "timeout": "stop starting trials after this many seconds",
    "seed": "the sampler's seed (default 0)",
    "baselines": "queue the undivided network and the divide-and-co-train paper's S=2 and S=4 first "
                 "(default true)",
    "epochs": "training epochs per candidate (shortcut for base.train.epochs)",
    "worker": "settings of the worker that reads the file, not of what the study searches (a section; "
              "its keys are listed below)",
    "greedy": "how --strategy greedy-blocks runs (a section; its keys are listed below)",
    "record_test": "also measure every completed candidate on the test split, recorded beside its result and "
                   "never searched on: for studies of how well the search's signal predicts test accuracy "
                   "(default false)",
}
_FIELDS = set(STUDY_KEYS)
# ``--set train.lr=0.2`` is short for ``--set base.train.lr=0.2``.
_SETTING_ALIASES = {"train": "base.train"}


def load_study_spec(path: str | Path | None, overrides: Mapping[str, Any] | None = None,
                    settings: Sequence[str] = ()) -> StudySpec:
    """Read a study YAML (or start from nothing), apply ``--set KEY=VALUE`` ``settings``, then ``overrides``.

    The keys a file may hold, and what each means, are :data:`STUDY_KEYS`; the ``worker``
    section's are :data:`~splitsearch.search.execution.WORKER_SETTINGS`, the ``greedy``
    section's :class:`~splitsearch.search.strategies.GreedySettings`.  A setting's key is dotted
    (``sampler``, ``base.width_mult``, ``train.lr`` for ``base.train.lr``, ``worker.keep_best``)
    and checked like a key of the file.  ``overrides`` (the command line's own options) win.
    """
    source = "command line"
    data: dict[str, Any] = {}
    if path is not None:
        source = str(path)
        loaded = read_yaml(path, StudyError)
        if not isinstance(loaded, dict):
            raise StudyError(f"{path}: expected a mapping of study settings")
        data.update(loaded)
    written_for = _dataset_of(data, source)
    if settings:
        data = apply_settings(_without_dataset_train_of(data, settings), settings, StudyError, _SETTING_ALIASES)
        source = f"{source} with --set" if path is not None else "--set"
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise StudyError(f"{source}: unknown key {unknown[0]} (known keys: {', '.join(sorted(_FIELDS))})")
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return _spec_from_mapping(data, source, written_for)


def _without_dataset_train_of(data: dict[str, Any], settings: Sequence[str]) -> dict[str, Any]:
    """``data`` without the ``dataset_train`` keys that ``settings`` set for training: a setting wins over the file."""
    keys = {key.split(".", 1)[1] if key.startswith("train.") else key.removeprefix("base.train.")
            for key in (setting.partition("=")[0].strip() for setting in settings)
            if key.startswith(("train.", "base.train."))}
    dataset_train = data.get("dataset_train")
    if not keys or not isinstance(dataset_train, Mapping):
        return data
    return {**data, "dataset_train": {key: value for key, value in dataset_train.items() if key not in keys}}


def _dataset_of(data: Mapping[str, Any], source: str) -> str:
    """The dataset a study file was written for: its ``dataset``, else its base's, else the default."""
    base = data.get("base") or {}
    if not isinstance(base, Mapping):
        raise StudyError(f"{source}: base must be a mapping of config fields")
    return str(data.get("dataset") or base.get("dataset") or DEFAULT_DATASET)


def _spec_from_mapping(data: dict[str, Any], source: str, written_for: str) -> StudySpec:
    base_fields = dict(data.get("base") or {})
    for key in ("arch", "dataset"):
        if key in data:
            base_fields[key] = data[key]
    if "arch" not in base_fields:
        raise StudyError(f"{source}: the study needs an arch (the base network), e.g. arch: wrn28_10")
    train_fields = dict(base_fields.get("train") or {})
    dataset_train = data.get("dataset_train") or {}
    if not isinstance(dataset_train, Mapping):
        raise StudyError(f"{source}: dataset_train must be a mapping of train settings, "
                         "e.g. dataset_train: {lr: 0.05}")
    if twice := sorted(set(dataset_train) & set(train_fields)):
        raise StudyError(f"{source}: train.{twice[0]} is set in both base.train and dataset_train; keep one")
    same_dataset = str(base_fields.get("dataset", DEFAULT_DATASET)) == written_for
    if same_dataset:
        train_fields.update(dataset_train)
    if "epochs" in data:
        train_fields["epochs"] = data["epochs"]
    if train_fields:
        base_fields["train"] = train_fields
    try:
        base = SplitConfig.from_dict(base_fields)
        space = load_space(data.get("space", "divide"))
        budgets = {key: None if data.get(key) is None else parse_count(data[key])
                   for key in ("budget_params", "budget_macs")}
        budgets["budget_activation"] = (None if data.get("budget_activation") is None
                                        else parse_bytes(data["budget_activation"]))
        budgets["budget_latency"] = (None if data.get("budget_latency") is None
                                     else parse_duration(data["budget_latency"]))
        worker = worker_settings(_section(data, "worker"))
        greedy = GreedySettings.from_mapping(_section(data, "greedy"))
    except (ConfigError, ValueError) as error:
        raise StudyError(f"{source}: {error}") from None
    objectives = data.get("objectives", DEFAULT_OBJECTIVES)
    if isinstance(objectives, str):
        objectives = [part.strip() for part in objectives.split(",")]
    return StudySpec(
        name=str(data.get("name") or f"{base.arch}-{space.name}"),
        base=base,
        space=space,
        budget_mode=data.get("budget_mode", "fit"),
        objectives=tuple(objectives),
        sampler=data.get("sampler", "tpe"),
        pruner=data.get("pruner"),
        n_trials=data.get("n_trials", 20),
        timeout=data.get("timeout"),
        seed=int(data.get("seed", 0)),
        baselines=bool(data.get("baselines", True)),
        record_test=bool(data.get("record_test", False)),
        latency_batch_size=data.get("latency_batch_size", 1),
        source=source,
        dataset_train_dropped={} if same_dataset else dict(dataset_train),
        worker=worker,
        greedy=greedy,
        **budgets,
    )


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = data.get(key) or {}
    if not isinstance(section, Mapping):
        raise StudyError(f"{key} must be a section of keys, e.g. {key}: {{...}}")
    return section


# -- opening the Optuna study ---------------------------------------------------------------------

def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default: the study's seed).

    TPE is the default for one objective and for two (Optuna's multi-objective TPE, which models
    the good and bad trials by non-domination rank): on tens of trials it learns from the first
    completed ones, where NSGA-II needs whole generations.  TPE uses ``constant_liar``: a trial
    another worker is still training counts as a poor result, so concurrent workers do not all
    draw next to the same promising point.  NSGA-II's population follows
    :func:`nsga2_population_size`.  In ``reject`` mode the objective sets each trial's ``budget``
    constraint, which TPE and NSGA-II read from the trial.
    """
    seed = spec.seed if seed is None else seed
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population_size(spec.n_trials))
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def nsga2_population_size(n_trials: int | None) -> int:
    """NSGA-II's population for a budget of ``n_trials``: a quarter of it, between 4 and 50.

    A quarter gives the study :data:`NSGA2_GENERATIONS` generations, so it leaves the random
    first one; at least 4 so a generation can breed (two parents) and still vary, at most
    Optuna's default of 50.  A study without ``n_trials`` (timeout only) gets 50.
    """
    low, high = NSGA2_POPULATION_RANGE
    return high if n_trials is None else max(low, min(high, n_trials // NSGA2_GENERATIONS))


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner; a multi-objective study's is asked by the objective itself (Optuna's
    ``should_prune`` refuses such trials: :mod:`splitsearch.search.pruning`)."""
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "pareto":
        return ParetoHalvingPruner(spec.objectives, spec.max_epochs)
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.max_epochs,
                                          reduction_factor=REDUCTION_FACTOR)


# How long a worker waits for the worker creating a study to finish setting it up.
_SETUP_WAIT_SECONDS = 60.0


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage, force: bool = False) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists with the same settings.

    A created study is not ready for other workers until :func:`publish_settings` writes its
    fingerprint (after the baselines are queued); a worker loading a study waits for that.

    Returns:
        The study and whether it was created now (the caller then queues the baselines).

    Raises:
        StudyError: the study exists with other settings and ``force`` is not set, or its
            creation never finished.
    """
    directions = spec.directions
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                  pruner=make_pruner(spec))
    else:
        StudyRecord(checkpoint_key=uuid.uuid4().hex[:12]).write_to(study)
        with warnings.catch_warnings():  # experimental in Optuna 5.0, and stable in what it stores
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[objective] for objective in spec.objectives])
        _describe_study(study, spec)
        return study, True
    stored = _wait_for_fingerprint(study, force)
    if stored != spec.fingerprint() and not force:
        changed = _changed_settings(StudyRecord.from_study(study).settings or {}, spec.settings())
        raise StudyError(
            f"study {spec.name!r} exists with other settings ({changed}); use another --study name, "
            "or --force to continue it anyway"
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise StudyError(f"study {spec.name!r} exists with other objectives; use another --study name")
    if StudyRecord.from_study(study).checkpoint_key is None:  # made by splitsearch 0.1: key it by its settings
        StudyRecord(checkpoint_key=f"v1-{stored or spec.fingerprint()}"[:12]).write_to(study)
    if force:
        _describe_study(study, spec)
        publish_settings(study, spec)
    return study, False


def publish_settings(study: optuna.Study, spec: StudySpec) -> None:
    """Write the settings fingerprint: the study is set up, and other workers may join it."""
    StudyRecord(settings_fingerprint=spec.fingerprint()).write_to(study)


def _describe_study(study: optuna.Study, spec: StudySpec) -> None:
    """The user attributes the report and the dashboard read."""
    StudyRecord(settings=spec.settings(), objectives=spec.objectives, space_name=spec.space.name,
                budget_params=spec.budget_params, budget_macs=spec.budget_macs,
                budget_activation=spec.budget_activation, budget_latency=spec.budget_latency,
                latency_batch_size=spec.latency_batch_size if spec.measures_latency else None,
                budget_mode=spec.budget_mode).write_to(study)


def _wait_for_fingerprint(study: optuna.Study, force: bool) -> str | None:
    """The study's fingerprint, waiting a while if another worker is still setting the study up."""
    deadline = time.monotonic() + (0 if force else _SETUP_WAIT_SECONDS)
    while True:
        stored = StudyRecord.from_study(study).settings_fingerprint
        if stored is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.5)  # study.user_attrs reads the storage anew each time
    if stored is None and not force:
        raise StudyError(f"study {study.study_name!r} exists but its creation never finished (a worker died "
                         "while creating it?); use --force to adopt it")
    return stored


def _changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return "changed: " + ", ".join(keys) if keys else "its settings fingerprint differs"

