"""The command line's parameter types and its shared option groups, each declared once.

An option that several commands take (the storage, the budgets, the device, the data folder)
is declared here as a :class:`SharedOption` inside a group, and every command that takes it
applies the group: the option then reads the same everywhere.  ``tests/test_cli_surface.py``
holds that no other option repeats a name and help text across commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from splitsearch.blocks.semantic_groups import SPLIT_DEPTHS
from splitsearch.config import EXECUTION_MODES
from splitsearch.data.specs import DATA_PATHS, DEFAULT_DATASET, known_specs
from splitsearch.units import UnitError, parse_bytes, parse_count, parse_duration

Command = TypeVar("Command", bound=Callable[..., Any])


class CountParam(click.ParamType):
    """A count such as ``36M``, ``5.3G``, ``1.2e6`` or ``36_500_000``."""

    name = "count"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_count(value)
        except UnitError as error:
            self.fail(str(error), param, ctx)


class BytesParam(click.ParamType):
    """A memory size on the command line: ``2MB``, ``1.5MiB``, ``300000``."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_bytes(value)
        except UnitError as error:
            self.fail(str(error), param, ctx)


class DurationParam(click.ParamType):
    """A duration on the command line, with its unit: ``5ms``, ``0.2s``, ``800us``; converted to seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration(value)
        except UnitError as error:
            self.fail(str(error), param, ctx)


class FactorsParam(click.ParamType):
    """Comma-separated positive integers, e.g. ``1,2,2``."""

    name = "factors"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if not all(part.isdigit() and int(part) >= 1 for part in parts):
            self.fail(f"expected comma-separated positive integers like 1,2,2, got {value!r}", param, ctx)
        return tuple(int(part) for part in parts)


class SharedOption(click.Option):
    """An option declared once, in a group of this module, and taken by several commands."""


def _shared(*names: str, **attributes: Any) -> Callable[[Command], Command]:
    return click.option(*names, cls=SharedOption, **attributes)


def _group(*options: Callable[[Command], Command]) -> Callable[[Command], Command]:
    """One decorator applying ``options`` in the order written (click applies decorators bottom-up)."""

    def apply(command: Command) -> Command:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


candidate_options = _group(
    click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path)),
    _shared("--arch", help="Architecture, e.g. resnet20, wrn28_10, vgg16 (splitsearch archs lists them)."),
    _shared("-S", "S", type=click.IntRange(min=1), help="Number of small networks (divide and co-train)."),
    _shared("--block-factors", type=FactorsParam(), help="Split factor per block, e.g. 1,2,2."),
    _shared("-G", "--groups", type=click.IntRange(min=1),
            help="Semantic groups G (SplitNet): the top of the network cut into G branches."),
    _shared("--split-depth", type=click.Choice(SPLIT_DEPTHS),
            help="What the semantic split cuts: fc, shallow (the default), deep or hierarchical."),
    _shared("--width-mult", type=click.FloatRange(min=0, min_open=True), help="Width multiplier."),
    _shared("--dataset", help=f"Dataset spec for input size and classes [default: the config's, else "
                              f"{DEFAULT_DATASET}]."),
    _shared("--crop", type=click.IntRange(min=1), help="Square input size of imagenet / imagefolder [default: 224]."),
    _shared("--macs-convention", type=click.Choice(["pytorch", "paper"]), default="pytorch", show_default=True,
            help="pytorch: convolutions and matrix products; paper: as the divide-and-co-train authors counted "
                 "(thop's rules: adds batch norm, pooling, conv biases)."),
)
"""What describes a candidate (``count``, ``fit``): a YAML config and the fields that override it."""

budget_options = _group(
    _shared("--budget-params", type=CountParam(), help="Parameters of all S networks together, e.g. 36M."),
    _shared("--budget-macs", type=CountParam(), help="MACs of all S networks for one image, e.g. 5.3G."),
    _shared("--budget-flops", type=CountParam(), help="FLOPs (= 2 x MACs), converted to MACs."),
    _shared("--budget-activation", type=BytesParam(),
            help="Activation memory per image, split blocks run branch by branch, e.g. 2MB."),
)
"""The counted budgets (``fit``, ``run``): a candidate is fitted to them, or refused over them."""

execution_options = _group(
    _shared("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
    _shared("--mode", type=click.Choice(EXECUTION_MODES), default="auto", show_default=True,
            help="fused (the S networks packed as one), sequential, compiled-* (torch.compile), graphed-* "
                 "(CUDA graphs), or auto (the fastest, measured)."),
)
"""Where and how the S networks run (``train``, ``evaluate``, ``run``, ``confirm``)."""

data_options = _group(
    _shared("--data-dir", type=click.Path(file_okay=False, path_type=Path),
            help="Where torchvision datasets are [default: ~/.cache/splitsearch/data]."),
    _shared("--download", is_flag=True, help="Download a torchvision dataset missing from --data-dir."),
    _shared("--data-path", type=click.Choice(DATA_PATHS), default="auto", show_default=True,
            help="Image folders: in memory (resident), from disk (stream), or auto (resident up to 2 GiB)."),
    _shared("--loader-workers", type=click.IntRange(min=0),
            help="Processes decoding a streamed image folder [default: min(4, CPUs)]."),
)
"""Where the data is, and how an image folder reaches training (``train``, ``evaluate``, ``run``, ``confirm``)."""


def storage_option(command: Command) -> Command:
    """--storage: the database Optuna's study and the store share (``SPLITSEARCH_STORAGE``)."""
    from splitsearch.store.urls import DEFAULT_STORAGE, STORAGE_ENV

    return _shared("--storage", envvar=STORAGE_ENV, default=DEFAULT_STORAGE, show_default=True,
                   help=f"Database URL (env {STORAGE_ENV}); PostgreSQL for many workers.")(command)


study_option = _shared("--study", "study_name", help="Study name [default: the storage's only study].")
"""--study of the commands that read a finished study (``confirm``, ``export``, ``report``, ...)."""

runs_dir_option = _shared("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                          show_default=True, help="Where the workers keep the checkpoints of unfinished runs.")
"""--runs-dir: checkpoints of unfinished trials and confirmation runs."""

artifacts_option = _shared("--artifacts-dir", type=click.Path(file_okay=False, path_type=Path),
                           default=Path("runs") / "artifacts", show_default=True,
                           help="The artifact store (a folder) where run kept trials' weights.")
"""--artifacts-dir of the commands that read kept weights (``export``, ``dashboard``)."""

set_option = _shared("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Set any key of the YAML, e.g. --set train.lr=0.2 (repeatable).")
"""--set KEY=VALUE: any setting of the file a command reads, checked like the file itself."""

nproc_option = _shared("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
                       help="Processes the S members are shared among (one GPU each on CUDA); under torchrun, "
                            "torchrun's.")
"""--nproc: member-parallel ``train`` and ``evaluate``."""

nproc_per_trial_option = _shared(
    "--nproc-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
    help="Train each candidate's S members in up to N processes, kept from one candidate to the next.")
"""--nproc-per-trial: the process group a search's candidates (``run``) and confirmation runs (``confirm``) train in."""

dataset_override_option = _shared("--dataset", help="Dataset spec, overriding the config's.")
"""--dataset of the commands that read a trained config (``train``, ``evaluate``)."""

quiet_option = _shared("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
