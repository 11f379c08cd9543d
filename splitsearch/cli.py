"""The ``splitsearch`` command: thin click wrappers around the library.

Every command parses its options, calls one library function and prints.  Errors a user can fix
(bad names, budgets, files: :class:`~splitsearch.errors.SplitsearchError`), a database gone for
longer than a command waits for it (:class:`~splitsearch.errors.StorageUnavailableError`) and
failing files or disks (``OSError``) come out as one line, ``Error: ...``, with exit status 2,
never as a traceback: :func:`main` turns them into that.  Any other exception is a bug and shows as one.
Commands import torch and the rest of the library only when they run, so ``--help`` is quick.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click
from tqdm.auto import tqdm

from splitsearch import __version__
from splitsearch.blocks.semantic_groups import SPLIT_DEPTHS
from splitsearch.config import SplitConfig
from splitsearch.data.specs import DEFAULT_DATASET, known_specs
from splitsearch.errors import SplitsearchError, StorageUnavailableError
from splitsearch.units import (UnitError, format_bytes, format_count, format_duration, parse_bytes, parse_count,
                               parse_duration)


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


def _config_options(command: Any) -> Any:
    """Options that describe a candidate, shared by ``count`` and ``fit``; they override a YAML."""
    options = [
        click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path)),
        click.option("--arch", help="Architecture, e.g. resnet20, wrn28_10, resnext29_8x64d, vgg16."),
        click.option("-S", "S", type=click.IntRange(min=1), help="Number of small networks (divide and co-train)."),
        click.option("--block-factors", type=FactorsParam(), help="Split factor per block, e.g. 1,2,2."),
        click.option("-G", "--groups", type=click.IntRange(min=1),
                     help="Semantic groups G (SplitNet): the top of the network cut into G branches."),
        click.option("--split-depth", type=click.Choice(SPLIT_DEPTHS),
                     help="What the semantic split cuts: fc (classifier), shallow (+ last stage, the default), "
                          "deep (+ last two), hierarchical (G/2 supergroups, then G)."),
        click.option("--width-mult", type=click.FloatRange(min=0, min_open=True), help="Width multiplier."),
        click.option("--dataset", help=f"Dataset spec for input size and classes ({known_specs()}). "
                                       f"Default: the config's, else {DEFAULT_DATASET}."),
        click.option("--crop", type=click.IntRange(min=1),
                     help="Square input size for imagenet / imagefolder (default 224), e.g. 320 for EfficientNet-B7."),
        click.option("--macs-convention", type=click.Choice(["pytorch", "paper"]), default="pytorch",
                     show_default=True,
                     help="pytorch: convolutions and matrix products (torch.utils.flop_counter); paper: every "
                          "module by thop's rules, as the divide-and-co-train authors counted (adds batch norm, "
                          "average pooling and conv biases)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _load_config(config_file: Path | None, **overrides: Any) -> SplitConfig:
    """The config from ``config_file`` (if given) with command-line overrides applied."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if config_file is not None:
        config = SplitConfig.from_yaml(config_file)
        return config.replace(**overrides) if overrides else config
    if "arch" not in overrides:
        raise click.UsageError("give a config file or --arch")
    return SplitConfig.from_dict(overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="splitsearch")
def cli() -> None:
    """Search how to split deep networks under a parameter / MACs budget."""


@cli.command()
@_config_options
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (params, macs, flops, activation_bytes, sequential_activation_bytes, networks).")
def count(config_file: Path | None, arch: str | None, S: int | None, block_factors: tuple[int, ...] | None,
          groups: int | None, split_depth: str | None, width_mult: float | None, dataset: str | None,
          crop: int | None, macs_convention: str, as_json: bool) -> None:
    """Count parameters, MACs, FLOPs and activation memory of a candidate.

    Counting runs on PyTorch's meta device: no memory, milliseconds.  MACs are multiply-adds
    (what the divide-and-co-train paper calls GFLOPs); FLOPs = 2 x MACs.  Activation memory is the
    peak of live feature maps in an inference of one image (float32): "all branches" with every
    split block's K branches at once (grouped convolutions, as training runs them), "branchwise"
    with the branches run one after another, as seed 002 deploys them (budgets use this one).

    \b
    Examples:
      splitsearch count --arch wrn28_10 -S 4 --dataset cifar100
      splitsearch count --arch vgg16 --block-factors 8,2,2,4,4 --dataset cifar10 --json
      splitsearch count --arch wrn16_8 -G 2 --split-depth deep --dataset cifar100
      splitsearch count --arch efficientnet_b7 -S 2 --dataset imagenet --crop 320 --macs-convention paper
      splitsearch count best.yaml
    """
    from splitsearch.cost import count_config

    config = _load_config(config_file, arch=arch, S=S, block_factors=block_factors, groups=groups,
                          split_depth=split_depth, width_mult=width_mult,
                          dataset=dataset, crop=crop)
    cost = count_config(config, macs_convention)
    if as_json:
        _, applied = config.train.with_dataset_defaults(config.input_info())
        click.echo(json.dumps({**cost.to_dict(), "macs_convention": macs_convention, "config": config.to_dict(),
                               "dataset_defaults": applied}, indent=2))
        return
    click.echo(_describe(config))
    click.echo(_cost_table(cost))
    click.echo(f"MACs counted by the {macs_convention} convention; FLOPs = 2 x MACs")
    click.echo(_dataset_defaults_line(config))


@cli.command()
@_config_options
@click.option("--budget-params", type=CountParam(), help="Parameter budget for all S networks, e.g. 36M.")
@click.option("--budget-macs", type=CountParam(), help="MACs budget for all S networks, e.g. 5.3G.")
@click.option("--budget-flops", type=CountParam(), help="FLOPs budget (= 2 x MACs); converted to MACs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the fitted config here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (config, cost, width step).")
def fit(config_file: Path | None, arch: str | None, S: int | None, block_factors: tuple[int, ...] | None,
        groups: int | None, split_depth: str | None, width_mult: float | None, dataset: str | None,
        crop: int | None, macs_convention: str, budget_params: int | None,
        budget_macs: int | None,
        budget_flops: int | None, output: Path | None, as_json: bool) -> None:
    """Scale a candidate's width to the largest that fits a budget, and print the fitted config.

    The knob is width_mult: every channel count of the divided network is multiplied by it and
    rounded to whole channels, so the fitted candidate lands just under the budget; the output says
    how much the next wider network would cost (the finest step at that size).

    \b
    Examples:
      splitsearch fit --arch wrn28_10 -S 4 --dataset cifar100 --budget-params 36M
      splitsearch fit --arch resnet110 -S 2 --budget-macs 0.2G -o fitted.yaml
    """
    from splitsearch.cost import fit_width

    budget_macs = _macs_budget(budget_macs, budget_flops)
    if budget_params is None and budget_macs is None:
        raise click.UsageError("give --budget-params, --budget-macs or --budget-flops")
    config = _load_config(config_file, arch=arch, S=S, block_factors=block_factors, groups=groups,
                          split_depth=split_depth, width_mult=width_mult,
                          dataset=dataset, crop=crop)
    result = fit_width(config, budget_params=budget_params, budget_macs=budget_macs, convention=macs_convention)
    if output is not None:
        output.write_text(result.config.to_yaml())
    if as_json:
        click.echo(json.dumps({"config": result.config.to_dict(), "cost": result.cost.to_dict(),
                               "budget_usage": result.usage, "width_step": result.step}, indent=2))
        return
    click.echo(result.config.to_yaml().rstrip())
    click.echo()
    click.echo(_cost_table(result.cost))
    step = "n/a (widest network built)" if result.step is None else f"{result.step:.2%}"
    click.echo(f"\nuses {result.usage:.2%} of the budget; the next wider network costs {step} more")
    if output is not None:
        click.echo(f"written to {output}")


def _macs_budget(budget_macs: int | None, budget_flops: int | None) -> int | None:
    """The MACs budget of ``--budget-macs`` or ``--budget-flops`` (FLOPs = 2 x MACs)."""
    if budget_flops is None:
        return budget_macs
    if budget_macs is not None:
        raise click.UsageError("give --budget-macs or --budget-flops, not both")
    return budget_flops // 2


def _execution(device: str, mode: str, runs_dir: Path, data_dir: Path | None, download: bool,
               **worker: Any) -> Any:
    """The :class:`~splitsearch.search.execution.ExecutionOptions` of the command's options."""
    from splitsearch.data import DEFAULT_DATA_DIR
    from splitsearch.search.execution import ExecutionOptions
    from splitsearch.train.loop import resolve_device

    return ExecutionOptions(device=str(resolve_device(device)), mode=mode, runs_dir=runs_dir,
                            data_dir=data_dir or DEFAULT_DATA_DIR, download=download, **worker)


def _execution_options(command: Any) -> Any:
    """--device and --mode: where the S networks train and how they run together."""
    command = click.option(
        "--mode", type=click.Choice(["auto", "fused", "sequential"]), default="auto", show_default=True,
        help="fused: the S networks as one packed module; sequential: one after another (the authors' way); "
             "auto: fused on a GPU where the family allows it, sequential on the CPU.")(command)
    return click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")(command)


def _trial_process_options(command: Any) -> Any:
    """--nproc-per-trial and --data-parallel: the process group each candidate of a study trains in."""
    command = click.option(
        "--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
        help="Data-parallel trials (as train --data-parallel): of the --nproc-per-trial processes, D train the "
             "same members on shards of each batch, so N/D member ranks share S (N=4, D=2: S=2 and S=4 in 2 x 2, "
             "S=1 in 1 x 2). BatchNorm statistics are per rank.")(command)
    return click.option(
        "--nproc-per-trial", type=click.IntRange(min=1), default=1, show_default=True,
        help="Member-parallel trials: train each candidate's S members in up to N processes (as train --nproc: "
             "gloo on the CPU, one GPU each on CUDA), the most that share S equally (N=4: S=4 in 4, S=2 in 2, "
             "S=1 in 1); this process reports and prunes for them.  The processes start with the first such "
             "candidate and are kept for the next ones.  --strategy greedy-blocks trains undivided networks "
             "(S=1), so there the N processes are data ranks; the semantic split trains member-parallel only.")(command)


def _data_dir_options(command: Any) -> Any:
    """--data-dir and --download: where torchvision datasets (cifar10, cifar100, svhn) are found;
    --data-path and --loader-workers: whether an image folder is held in memory or streamed from disk."""
    from splitsearch.data.specs import DATA_PATHS

    command = click.option("--loader-workers", type=click.IntRange(min=0),
                           help="Processes that decode a streamed image folder (0: in the training process) "
                                "[default: min(4, CPUs)].")(command)
    command = click.option("--data-path", type=click.Choice(DATA_PATHS), default="auto", show_default=True,
                           help="How an image folder (imagefolder:PATH, imagenet:PATH) reaches training: "
                                "resident (decoded once into memory), stream (decoded from disk every batch "
                                "by --loader-workers processes) or auto (resident up to 2 GiB of decoded "
                                "images, else stream). Other datasets are always resident.")(command)
    command = click.option("--download", is_flag=True,
                           help="Download a torchvision dataset that is not in --data-dir (needs internet).")(command)
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="Where torchvision datasets are (or are downloaded to) "
                             "[default: ~/.cache/splitsearch/data].")(command)


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", help=f"Dataset spec, overriding the config's ({known_specs()}).")
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs, overriding the config's.")
@click.option("--seed", type=int, help="Training seed, overriding the config's.")
@click.option("--final", is_flag=True,
              help="Final training: no validation split (train on train + validation), then report test "
                   "accuracy once. Without it, training reports validation accuracy and never looks at test.")
@_execution_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for checkpoint.pt, metrics.json and model.pt [default: runs/ARCH-S<S>-HASH].")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--init-from", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Start from these trained weights (export --weights, or a training's model.pt) and fine-tune; "
                   "they must fit the config exactly. A checkpoint found with --resume wins over them.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Member-parallel: train the S members in this many processes (a torch.distributed group, "
                   "gloo on the CPU, one GPU each on CUDA, or sharing the GPUs over gloo where there are fewer), "
                   "S/nproc members each; the same result as one process. Under torchrun the group is torchrun's "
                   "and --nproc is not needed.")
@click.option("--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel ranks per member rank: the processes form a grid of (processes / D) member "
                   "ranks x D data ranks; the D ranks that hold the same members each train on a 1/D shard "
                   "of every batch (DistributedDataParallel; the batch size stays the config's, the global "
                   "batch). D must divide the processes and the member ranks must divide S. Each rank's "
                   "BatchNorm sees its shard only, so results differ slightly from one process; see --sync-bn.")
@click.option("--sync-bn", is_flag=True,
              help="With --data-parallel: BatchNorm normalises with the statistics of the whole batch over the "
                   "data ranks (SyncBatchNorm; CUDA only, refused on the CPU).")
@_data_dir_options
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
def train(config_file: Path, dataset: str | None, epochs: int | None, seed: int | None, final: bool, device: str,
          mode: str, out_dir: Path | None, resume: bool, init_from: Path | None, nproc: int, data_parallel: int,
          sync_bn: bool, data_dir: Path | None, download: bool, data_path: str, loader_workers: int | None,
          quiet: bool) -> None:
    """Train the S networks of a config with co-training.

    By default a validation split (train.val_fraction of the training images) is carved out and
    its accuracy reported every epoch; the test split is not looked at.  --final trains on every
    training image and reports test accuracy once, at the end: use it for the configuration you
    have chosen, not to choose one.  A checkpoint is written atomically after every epoch; after
    a crash or Ctrl-C the same command with --resume continues where the run stopped.

    \b
    Examples:
      splitsearch train best.yaml --epochs 30 --out runs/best
      splitsearch train best.yaml --final
      splitsearch train best.yaml --init-from best.pt --epochs 5   # fine-tune export --weights' weights
      splitsearch train cfg.yaml --dataset npz:../shared/data/cifar10-subset.npz --device cpu
      splitsearch train cfg.yaml --nproc 2            # S=2: one member per process
      torchrun --nproc-per-node 4 -m splitsearch.cli train cfg.yaml --device cuda   # one GPU per rank
      splitsearch train cfg.yaml --nproc 4 --data-parallel 2   # S=2: 2 member ranks x 2 data ranks
    """
    from splitsearch.cost import count_config
    from splitsearch.data import DEFAULT_DATA_DIR
    from splitsearch.errors import CheckpointReadError
    from splitsearch.train.launch import launch, launched_by_torchrun, run_as_rank, torchrun_world
    from splitsearch.train.loop import resolve_device
    from splitsearch.train.parallel import check_data_parallel
    from splitsearch.train.plan import TrainingInterrupted, TrainRequest, run_training, run_training_rank
    from splitsearch.train.semantic_stage import CLASS_GROUPS_NAME, class_group_text

    request = TrainRequest(SplitConfig.from_yaml(config_file), str(resolve_device(device)), mode, dataset, epochs,
                           seed, final, out_dir, data_dir or DEFAULT_DATA_DIR, download, resume, init_from,
                           data_path, loader_workers, data_parallel, sync_bn)
    processes = torchrun_world() if launched_by_torchrun() else nproc
    # S must divide among the member ranks, the batch among the data ranks: say so now.
    check_data_parallel(processes, data_parallel, request.resolved_config(), request.device, sync_bn)
    reporter = _TrainLines(quiet)
    try:
        if launched_by_torchrun():
            outcome = run_as_rank(run_training_rank, request.device, request, reporter)
        elif nproc > 1:
            outcome = launch(nproc, run_training_rank, request.device, request, reporter)
        else:
            outcome = run_training(request, reporter)
    except KeyboardInterrupt as stop:  # TrainingInterrupted in one process, the launcher's signal with --nproc
        done = f"{stop.epochs} finished epoch(s) are" if isinstance(stop, TrainingInterrupted) else "the last epoch is"
        raise click.ClickException(
            f"interrupted; {done} checkpointed in {request.resolved_out_dir()}: "
            f"continue with the same command and --resume --out {request.resolved_out_dir()}"
        ) from None
    except CheckpointReadError as error:
        raise click.ClickException(f"{error}; train without --resume to start again from epoch 1") from None
    if outcome is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    config, result, out_dir, final = outcome.plan_config, outcome.result, outcome.out_dir, outcome.final
    cost = count_config(config)
    joined, data_ranks = outcome.processes, outcome.data_ranks  # the ranks that joined the group
    grid = f" ({joined // data_ranks} member ranks x {data_ranks} data ranks)" if data_ranks > 1 else ""
    processes = f", {joined} processes{grid}" if joined > 1 else ""
    click.echo(f"\n{config.arch} S={config.S} on {config.dataset}, {outcome.ensemble_kind}{processes}, "
               f"{result.wall_seconds:.1f}s")
    if final:
        click.echo(f"{'':<12}{'test acc':>10}   (the final report: {outcome.test_samples:,} test images, "
                   f"+-{100 * result.test_standard_error:.1f} points standard error)")
        rows = [result.test_accuracy, *result.test_member_accuracies]
    else:
        click.echo(f"{'':<12}{'val acc':>10}   ({outcome.val_samples:,} validation images, "
                   f"+-{100 * result.val_standard_error:.1f} points standard error; test not evaluated: "
                   "use --final for the chosen config)")
        rows = [result.val_accuracy, *result.history[-1].val_member_accuracies]
    for index, accuracy in enumerate(rows):
        click.echo(f"{'ensemble' if index == 0 else 'member ' + str(index):<12}{accuracy:>10.2%}")
    if result.semantic is not None:
        click.echo(f"semantic split G={config.groups} ({config.split_depth}), cut after epoch "
                   f"{result.semantic['grouping_epochs']}; class groups (also in {out_dir / CLASS_GROUPS_NAME}):")
        for member, groups in enumerate(class_group_text(result.semantic), start=1):
            click.echo(f"  member {member}: {groups}")
    click.echo(f"params {format_count(cost.params)}  MACs {format_count(cost.macs)}  output {out_dir}")


class _TrainLines:
    """What ``train`` prints while it trains: the data plan, then a line per epoch unless ``quiet``.

    A plain class at module level, so that a member-parallel rank can receive it (rank 0 prints).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = not quiet

    def data_plan(self, plan: Any) -> None:
        _echo_data_plan(plan.config, plan.data)

    def epoch(self, plan: Any, metrics: Any) -> None:
        if self.quiet:
            return
        line = f"epoch {metrics.epoch}/{plan.config.train.epochs}  loss {metrics.train_loss:.3f}  "
        if metrics.train_regularisers:
            line += f"(group regularisers {metrics.train_regularisers:.3f})  "
        if not plan.final:
            members = ", ".join(f"{accuracy:.1%}" for accuracy in metrics.val_member_accuracies)
            line += f"val {metrics.val_accuracy:.2%} (members {members})  "
        tqdm.write(line + f"lr {metrics.lr:.4f}  {metrics.seconds:.1f}s")

    def write_error(self, error: Exception) -> None:
        """``train``'s output is its files: one that cannot be written stops it (one Error line)."""
        raise error


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The trained members: a training's model.pt or export --weights' file.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test: the dataset's test split; val: the validation split the config's training carved.")
@click.option("--dataset", help=f"Dataset spec, overriding the config's ({known_specs()}).")
@_execution_options
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the S members in this many processes (one GPU each with --device cuda); the member ranks "
                   "(processes / --data-parallel) must divide S.")
@click.option("--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data ranks per member rank, as train --data-parallel: the D ranks that hold the same members "
                   "share the batches out. The figures equal one process's.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one CSV row per image: index, label, the ensemble's and each member's prediction.")
@_data_dir_options
def evaluate(config_file: Path, weights: Path, split: str, dataset: str | None, device: str, mode: str, nproc: int,
             data_parallel: int, predictions: Path | None, data_dir: Path | None, download: bool, data_path: str,
             loader_workers: int | None) -> None:
    """Evaluate trained weights on a split: the ensemble's and each member's accuracy, without training.

    \b
    Examples:
      splitsearch evaluate best.yaml --weights best.pt
      splitsearch evaluate best.yaml --weights best.pt --nproc 2 --predictions test.csv   # a member a process
      splitsearch evaluate best.yaml --weights best.pt --nproc 4 --data-parallel 2        # S=2: 2 x 2 ranks
      torchrun --nproc-per-node 4 -m splitsearch.cli evaluate cfg.yaml --weights model.pt --device cuda
    """
    from splitsearch.data import DEFAULT_DATA_DIR
    from splitsearch.stats import accuracy_standard_error
    from splitsearch.train.evaluate import evaluate_rank, evaluate_weights
    from splitsearch.train.plan import TrainRequest
    from splitsearch.train.launch import launch, launched_by_torchrun, run_as_rank, torchrun_world
    from splitsearch.train.loop import resolve_device
    from splitsearch.train.parallel import check_grid

    request = TrainRequest(SplitConfig.from_yaml(config_file), str(resolve_device(device)), mode, dataset,
                           data_dir=data_dir or DEFAULT_DATA_DIR, download=download, init_from=weights,
                           data_path=data_path, loader_workers=loader_workers, data_parallel=data_parallel)
    # S must divide among the member ranks: say so now.
    check_grid(torchrun_world() if launched_by_torchrun() else nproc, data_parallel, request.config.S)
    if launched_by_torchrun():
        result = run_as_rank(evaluate_rank, request.device, request, split)
    elif nproc > 1:
        result = launch(nproc, evaluate_rank, request.device, request, split)
    else:
        result = evaluate_weights(request, split)
    if result is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    error = accuracy_standard_error(result.accuracy, result.samples)
    processes = f", {result.processes} processes" if result.processes > 1 else ""  # the ranks that joined
    click.echo(f"{result.config.arch} S={result.config.S} on {result.config.dataset} {split} split "
               f"({result.samples:,} images, +-{100 * error:.1f} points standard error{processes}, "
               f"{result.seconds:.1f}s)")
    for index, accuracy in enumerate([result.accuracy, *result.member_accuracies]):
        click.echo(f"{'ensemble' if index == 0 else 'member ' + str(index):<12}{accuracy:>10.2%}")
    if predictions is not None:
        result.write_predictions(predictions)
        click.echo(f"predictions: {predictions}")


def _echo_data_plan(config: SplitConfig, data: Any) -> None:
    """Say how the data is split and which augmentation settings came from the dataset."""
    carved = f"{data.val.num_samples:,} validation (train.val_fraction {config.train.val_fraction:g}, for selection)"
    if data.val.num_samples == 0:
        carved = "no validation split (every training image is trained on)"
    click.echo(f"{config.dataset}: {data.train.num_samples:,} training images, {carved}, "
               f"{data.test.num_samples:,} test")
    if data.streamed:
        click.echo(f"images streamed from disk at {data.info.image_size}x{data.info.image_size}: random-resized "
                   "crops per member for training, centre crops for evaluation")
    click.echo(_dataset_defaults_line(config))


def _echo_training_plan(spec: Any) -> None:
    """The training settings every candidate starts from, and where the dataset-specific ones came from."""
    train, applied = spec.base.train.with_dataset_defaults(spec.base.input_info())
    click.echo(f"training: {train.epochs} epoch{'s' * (train.epochs != 1)}, batch {train.batch_size}, lr {train.lr:g} "
               f"({train.lr_schedule}, "
               f"{train.lr_warmup_fraction:.0%} warm-up), weight decay {train.weight_decay:g}, crop padding "
               f"{train.crop_padding} ({train.crop_fill} fill), flips {'on' if train.hflip else 'off'} "
               f"(the space may change some per candidate)")
    if spec.dataset_train_dropped:
        dropped = ", ".join(f"{key}={json.dumps(value)}" for key, value in spec.dataset_train_dropped.items())
        click.echo(f"not used: {spec.source}'s dataset_train ({dropped}), written for another dataset than "
                   f"{spec.base.dataset}")
    if applied:
        click.echo(_dataset_defaults_line(spec.base))


def _echo_run_plan(spec: Any, execution: Any, data: Any) -> None:
    """The fitted base candidate, the measured step time and the estimated study time; a warning if the budget
    is far beyond what the dataset supports."""
    from splitsearch.search.plan_estimate import plan_run

    plan = plan_run(spec, execution, data)
    for line in plan.lines():
        click.echo(line)
    if (warning := plan.warning()) is not None:
        click.echo(f"Warning: {warning}", err=True)


def _dataset_defaults_line(config: SplitConfig) -> str:
    _, applied = config.train.with_dataset_defaults(config.input_info())
    if not applied:
        return "training settings: all as the config sets them"
    values = ", ".join(f"{key}={json.dumps(value)}" for key, value in applied.items())
    return f"training defaults of {config.dataset}: {values} (set them under train: in the config to change)"


def _storage_option(command: Any) -> Any:
    from splitsearch.urls import DEFAULT_STORAGE, STORAGE_ENV

    return click.option("--storage", envvar=STORAGE_ENV, default=DEFAULT_STORAGE, show_default=True,
                        help=f"Database URL shared by Optuna and the store (env {STORAGE_ENV}); "
                             "postgresql+psycopg://... for many workers.")(command)


def _study_option(command: Any) -> Any:
    return click.option("--study", "study_name", help="Study name (default: the storage's only study).")(command)


@cli.command()
@click.argument("study_file", required=False)
@click.option("--study", "study_name", help="Study name (default: the definition's name); the same name resumes.")
@_storage_option
@click.option("--n-trials", type=click.IntRange(min=1),
              help="Distinct candidates the study should reach in total (trained, or reused from another study); "
                   "a repeat of a candidate the study has finished is answered from its result and not counted.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop starting trials after SECONDS.")
@click.option("--budget-params", type=CountParam(), help="Parameter budget of a candidate (all S networks), e.g. 36M.")
@click.option("--budget-macs", type=CountParam(), help="MACs budget, e.g. 5.3G.")
@click.option("--budget-flops", type=CountParam(), help="FLOPs budget (= 2 x MACs); converted to MACs.")
@click.option("--budget-activation", type=BytesParam(),
              help="Activation memory per image with split blocks run branch by branch, e.g. 2MB or 1.5MiB.")
@click.option("--budget-latency", type=DurationParam(),
              help="Latency budget, e.g. 5ms or 0.2s: the median time of one forward pass of "
                   "--latency-batch-size images, measured before training on this worker's --device after "
                   "warm-up, in evaluation mode under torch.inference_mode, the members run as --mode runs them "
                   "(with --nproc-per-trial, one process's share, the gather not timed).  Checked, never fitted: "
                   "a candidate over it is refused untrained in either --budget-mode.")
@click.option("--latency-batch-size", type=click.IntRange(min=1),
              help="Images per timed forward pass for --budget-latency and the latency objective [default: 1].")
@click.option("--budget-mode", type=click.Choice(["fit", "reject"]),
              help="fit: scale each candidate's width to use the params/MACs/activation budget; reject: prune "
                   "over-budget candidates untrained (the sampler learns the feasible region).  A latency budget "
                   "is only checked, in both modes.")
@click.option("--space", help="Search space: a YAML path or a shipped name (divide, blocks, full, semantic).")
@click.option("--arch", help="Base network.")
@click.option("--dataset", help=f"Dataset spec ({known_specs()}).")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs per candidate.")
@click.option("--objectives",
              type=click.Choice(["accuracy", "accuracy,params", "accuracy,macs", "accuracy,activation",
                                 "accuracy,latency"]),
              help="accuracy: TPE + Hyperband pruning. accuracy,params / accuracy,macs / accuracy,activation "
                   "(memory per image, split blocks run branch by branch) / accuracy,latency (milliseconds, "
                   "measured as --budget-latency says; run a latency study's workers on one kind of device): "
                   "Pareto search, multi-objective TPE unless --sampler nsga2; Optuna cannot prune "
                   "multi-objective studies, so every candidate trains to the end.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "nsga2"]),
              help="Optuna sampler [default: tpe, multi-objective TPE for two objectives]. nsga2: NSGA-II with a "
                   "population of a quarter of --n-trials, between 4 and 50 (50 without --n-trials), so a study "
                   "lives about four generations.")
@click.option("--pruner", type=click.Choice(["hyperband", "median", "none"]),
              help="Optuna pruner of single-objective studies, on per-epoch validation accuracy "
                   "[default: hyperband].")
@click.option("--seed", type=int, help="Sampler seed [default: the study's, else 0].")
@click.option("--strategy", type=click.Choice(["sampler", "greedy-blocks"]), default="sampler", show_default=True,
              help="sampler: Optuna's --sampler draws candidates from --space.  greedy-blocks: seed 002's "
                   "procedure; per block in order, the largest split factor before the first whose accuracy "
                   "drop exceeds --threshold, each candidate fine-tuned from the network chosen so far.")
@click.option("--threshold", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="greedy-blocks: the validation-accuracy drop against the unsplit baseline, in points, a kept "
                   "factor must stay under.")
@click.option("--factors", type=FactorsParam(), default="2,4,6,8", show_default=True,
              help="greedy-blocks: the split factors tried for every block, increasing.")
@click.option("--finetune-epochs", type=click.IntRange(min=1),
              help="greedy-blocks: epochs each split candidate is fine-tuned [default: a third of --epochs].")
@_execution_options
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Per-trial checkpoints (a retried trial continues from its checkpoint). A checkpoint that "
                   "cannot be written (full disk, read-only) is told in one line and the trial trains on without "
                   "it; one that cannot be read is told in one line and the retry trains from epoch 1.")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep each trial's checkpoint after it ends (by default only interrupted trials keep theirs).")
@click.option("--artifacts-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Optuna artifact store (a folder) where a completed trial's trained weights (model.pt) are "
                   "kept for export --weights and the dashboard [default: RUNS_DIR/artifacts].")
@click.option("--keep-best", type=click.IntRange(min=0), default=3, show_default=True,
              help="Keep the weights of the K best searched trials (a two-objective study: its Pareto front) and "
                   "of the baselines; the others' are removed from the artifact store as better ones complete.")
@_data_dir_options
@click.option("--heartbeat", "heartbeat_seconds", type=click.IntRange(min=1), default=60, show_default=True,
              help="Seconds between a running trial's heartbeats; a trial silent for three beats belongs to a "
                   "dead worker and is queued again.")
@_trial_process_options
@click.option("--storage-retry-seconds", type=click.FloatRange(min=0), default=180, show_default=True,
              help="How long a worker waits for a database it has lost (a restart, a fail-over, the network) "
                   "before it stops with exit status 2; see Outages above.")
@click.option("--force", is_flag=True, help="Continue a study even though its settings changed.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (the fitted base candidate, the measured time of a few training steps, the "
                   "estimated time of an epoch and of the study) and exit without creating or storing anything.")
@click.option("-v", "--verbose", count=True, help="-v: a line per epoch; -vv: Optuna's own log too.")
def run(study_file: str | None, study_name: str | None, storage: str, n_trials: int | None, timeout: float | None,
        budget_params: int | None, budget_macs: int | None, budget_flops: int | None,
        budget_activation: int | None, budget_latency: float | None, latency_batch_size: int | None,
        budget_mode: str | None, space: str | None, arch: str | None, dataset: str | None, epochs: int | None, objectives: str | None,
        sampler: str | None, pruner: str | None, seed: int | None, strategy: str, threshold: float,
        factors: tuple[int, ...], finetune_epochs: int | None, device: str, mode: str, runs_dir: Path,
        keep_checkpoints: bool, artifacts_dir: Path | None, keep_best: int, data_dir: Path | None, download: bool,
        data_path: str, loader_workers: int | None, heartbeat_seconds: int, nproc_per_trial: int, data_parallel: int,
        storage_retry_seconds: float, force: bool, dry_run: bool, verbose: int) -> None:
    """Search how to split a network: an Optuna study over split configurations under a budget.

    STUDY_FILE is a study YAML or a shipped study name (default: quickstart, which runs in a few
    minutes on a CPU).  Every option overrides the file.  Running the same --study again resumes
    it; completed trials are never lost or run twice, and a trial cut off by Ctrl-C, SIGTERM or a
    crash is queued again and continues from its checkpoint.  A candidate that raises (out of
    memory, a diverged loss) is recorded as failed with its reason, and the search goes on.

    Workers: run the same command with the same --storage (PostgreSQL) on as many machines as
    you like; they share the study.  A worker starts a trial only while the study has fewer
    finished + running trials than --n-trials, so workers starting at the same instant can
    overshoot it by at most (workers - 1) trials; a worker with nothing to start waits for the
    last trials and takes over any whose worker dies.

    Repeats: a proposal of a candidate the study has finished (same config, dataset and epochs)
    is answered from that trial's result without training and does not count toward
    --n-trials.  After 20 repeats in a row the study stops: the space has no new candidates.

    Outages: a worker that loses its database says so in one line and tries again with backoff
    (1 s doubling to 15 s); its trial trains on to the end of the epoch, whose report waits for
    the database.  After --storage-retry-seconds it stops with one line and exit status 2, and a
    worker started later continues its trial from the checkpoint.  A worker holds at most 3
    connections to the database.

    --strategy greedy-blocks runs seed 002's greedy block-wise split instead of sampling: every
    network it trains is an ordinary trial of the study (store, dashboard, report), and running
    the command again continues it.  --n-trials, --space and --pruner do not apply to it.

    \b
    Examples:
      splitsearch run                                   # the quick-start study on digits
      splitsearch run cifar100-wrn28-10-36M --budget-params 36M --storage postgresql+psycopg://host/db
      splitsearch run --arch resnet20 --space full --objectives accuracy,params --n-trials 40
      splitsearch run --arch resnet20 --objectives accuracy,latency --budget-latency 5ms --device cuda
      splitsearch run --strategy greedy-blocks --arch vgg16 --dataset cifar10 --study vgg16-greedy --threshold 0.5
    """
    if dry_run and strategy != "sampler":
        raise click.UsageError("--dry-run plans --strategy sampler studies only")
    import optuna

    # Checked before the search's own imports, so a grid that cannot be is refused alone on its line.
    execution = _execution(device, mode, runs_dir, data_dir, download, data_path=data_path,
                           loader_workers=loader_workers, keep_checkpoints=keep_checkpoints,
                           heartbeat_seconds=heartbeat_seconds, nproc_per_trial=nproc_per_trial,
                           data_parallel=data_parallel, storage_retry_seconds=storage_retry_seconds,
                           artifacts_dir=artifacts_dir, keep_best=keep_best)
    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec, resolve_study_file
    from splitsearch.search.worker import Terminated
    from splitsearch.urls import mask_url

    overrides = {"name": study_name, "n_trials": n_trials, "timeout": timeout, "budget_params": budget_params,
                 "budget_macs": _macs_budget(budget_macs, budget_flops), "budget_activation": budget_activation,
                 "budget_latency": budget_latency, "latency_batch_size": latency_batch_size,
                 "budget_mode": budget_mode, "space": space, "arch": arch,
                 "dataset": dataset, "epochs": epochs, "objectives": objectives, "sampler": sampler,
                 "pruner": pruner, "seed": seed}
    spec = load_study_spec(resolve_study_file(study_file or "quickstart"), overrides)
    # Optuna logs a failed trial with its traceback; the search prints one line per failure instead.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose >= 2 else optuna.logging.ERROR)

    def epoch_line(trial_number: int, metrics: Any) -> None:
        tqdm.write(f"trial {trial_number} epoch {metrics.epoch}: loss {metrics.train_loss:.3f}  "
                   f"val {metrics.val_accuracy:.2%}  {metrics.seconds:.1f}s")

    on_epoch = epoch_line if verbose else None
    try:
        if strategy == "greedy-blocks":
            from splitsearch.search.greedy import greedy_execution, run_greedy_blocks

            execution = greedy_execution(execution)
            ranks = f", {execution.data_parallel} data ranks" if execution.data_parallel > 1 else ""
            click.echo(f"study {spec.name!r} in {mask_url(storage)}: {spec.base.arch} on {spec.base.dataset}, "
                       f"greedy block-wise split, factors {','.join(map(str, factors))}, threshold {threshold} "
                       f"points{ranks}")
            _echo_training_plan(spec)
            study, _ = run_greedy_blocks(spec, storage, execution, threshold, factors, finetune_epochs, force,
                                         on_step=tqdm.write, on_epoch=on_epoch, on_warning=_warning_line)
            _print_greedy_summary(study)
            return
        click.echo(f"study {spec.name!r} in {mask_url(storage)}: {spec.base.arch} on {spec.base.dataset}, space "
                   f"{spec.space.name}, {','.join(spec.objectives)}, {spec.n_trials} trials")
        _echo_training_plan(spec)
        data = execution.data_cache()  # loaded once, for the plan and the study
        _echo_run_plan(spec, execution, data)
        if dry_run:
            return
        study = run_study(spec, storage, execution, force, on_epoch=on_epoch, on_warning=_warning_line, data=data)
    except Terminated:
        click.echo(f"terminated; the trial in progress is queued again and continues from its checkpoint "
                   f"(study {spec.name!r} in {mask_url(storage)})", err=True)
        raise click.exceptions.Exit(143) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; finished trials are stored in {mask_url(storage)}: run the same command again to "
            f"continue study {spec.name!r}"
        ) from None
    _print_study_summary(study)


def _warning_line(line: str) -> None:
    """A fault the worker rode out (a checkpoint it could not write or read), in one line on stderr."""
    tqdm.write(f"Warning: {line}", file=sys.stderr)


def _print_greedy_summary(study: Any) -> None:
    from splitsearch.search.record import StudyRecord

    result = StudyRecord.from_study(study).greedy_result

    def change(before: int | None, after: int | None, unit: Callable[[int], str] = format_count) -> str:
        if before is None or after is None:
            return "not measurable for this family"
        return f"{unit(before)} -> {unit(after)} ({after / before - 1:+.1%})"

    click.echo(f"chosen factors {','.join(map(str, result.factors))} (trial {result.trial}): validation "
               f"accuracy {result.accuracy:.2%} vs baseline {result.baseline_accuracy:.2%} "
               f"(drop {result.drop_points:+.2f} points, threshold {result.threshold_points}), "
               f"{result.evaluated} networks trained")
    activation = change(result.sequential_activation_bytes_baseline, result.sequential_activation_bytes, format_bytes)
    click.echo(f"params {change(result.params_baseline, result.params)}; MACs "
               f"{change(result.macs_baseline, result.macs)}; activation memory with the split blocks run "
               f"branch by branch {activation}")
    click.echo(f"next: splitsearch export --study {study.study_name} -o best.yaml (picks trial {result.trial}); "
               f"splitsearch report --study {study.study_name} -o report.html")


def _print_study_summary(study: Any) -> None:
    import optuna

    from splitsearch.search.record import TrialRecord, count_trials, pareto_front
    from splitsearch.search.run import no_new_candidates

    counts = count_trials(study)
    if no_new_candidates(counts):
        click.echo(f"stopped: the space has no new candidates (the sampler's last {counts.repeats_in_a_row} "
                   "proposals repeated finished ones)")
    click.echo(f"{counts.complete} complete, {counts.pruned} pruned, {counts.failed + counts.interrupted} fail trials; "
               f"{counts.repeats} repeat proposal{'' if counts.repeats == 1 else 's'} (answered from the study's "
               "results, not counted)")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if failure := TrialRecord.from_trial(trial).failure:
            click.echo(f"trial {trial.number} failed: {failure}")
    refused = [(trial.number, record.over_budget_reason) for trial in study.get_trials(deepcopy=False)
               if (record := TrialRecord.from_trial(trial)).over_budget and record.over_budget_reason]
    if refused:
        number, reason = refused[-1]
        click.echo(f"{len(refused)} over budget, refused untrained; the last, trial {number}: {reason}")
    if counts.complete and len(study.directions) == 1:
        best = study.best_trial
        record = TrialRecord.from_trial(best)
        latency = "" if record.latency_seconds is None else f", latency {format_duration(record.latency_seconds)}"
        click.echo(f"best: trial {best.number}, validation accuracy {best.value:.2%}, "
                   f"{format_count(record.params or 0)} params, {format_count(record.macs or 0)} MACs{latency}, "
                   f"{best.params}")
    elif counts.complete:
        click.echo(f"Pareto front: {len(pareto_front(study))} trials")
    click.echo(f"next: splitsearch confirm --study {study.study_name}; splitsearch export --study "
               f"{study.study_name} -o best.yaml; splitsearch report --study {study.study_name} -o report.html")


@cli.command()
@_study_option
@_storage_option
@click.option("--top", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many of the best distinct candidates to confirm (the baselines are always confirmed).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Retrainings per candidate, with seeds the search did not use (its seed + 1, + 2, ...).")
@_execution_options
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Checkpoints of unfinished confirmation runs (removed when a run completes).")
@_trial_process_options
@_data_dir_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
def confirm(study_name: str | None, storage: str, top: int, seeds: int, device: str, mode: str, runs_dir: Path,
            nproc_per_trial: int, data_parallel: int, data_dir: Path | None, download: bool, data_path: str,
            loader_workers: int | None, quiet: bool) -> None:
    """Retrain the best candidates and the baselines with more seeds: is the winner really better?

    Validation accuracy on a few hundred images moves by 2-2.5 points between runs, so the best
    of many trials is partly luck.  Each of the top candidates (distinct configs) and each
    baseline is trained again with --seeds other seeds (another initialisation, augmentation
    and validation split); every run is recorded in the store, and `splitsearch export` then
    picks by the confirmed mean.  Finished runs are kept: run it again to continue, or with a
    larger --seeds to add runs.

    \b
    Examples:
      splitsearch confirm --study quickstart
      splitsearch confirm --study cifar100-wrn28-10-36M --top 2 --seeds 5 --device cuda
      splitsearch confirm --study quickstart --nproc-per-trial 2   # S=2 and S=4 runs in two processes
    """
    from splitsearch.search.confirm import confirm_study
    from splitsearch.search.objective import failure_reason
    from splitsearch.search.record import TrialRecord
    from splitsearch.search.run import open_for_reading

    execution = _execution(device, mode, runs_dir, data_dir, download, data_path=data_path,
                           loader_workers=loader_workers, nproc_per_trial=nproc_per_trial,
                           data_parallel=data_parallel)
    study, store = open_for_reading(study_name, storage)

    def line(trial: Any, seed: int, outcome: Any) -> None:
        label = TrialRecord.from_trial(trial).baseline or f"trial {trial.number}"
        if isinstance(outcome, Exception):
            tqdm.write(f"{label} (trial {trial.number}), seed {seed}: FAILED: {failure_reason(outcome)}")
        else:
            tqdm.write(f"{label} (trial {trial.number}), seed {seed}: validation accuracy {outcome.val_accuracy:.2%} "
                       f"+-{100 * outcome.val_standard_error:.1f}  ({outcome.wall_seconds:.0f}s)")

    try:
        summaries = confirm_study(study, store, top, seeds, execution, progress=not quiet, on_run=line)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; finished runs are stored: run the same command to continue") from None
    click.echo(_confirmation_table(summaries))
    if summaries:
        click.echo(f"next: splitsearch export --study {study.study_name} -o best.yaml  (picks by confirmed mean)")


def _confirmation_table(summaries: list[Any]) -> str:
    """Confirmed candidates, best mean first: the search's figure beside the confirmed one."""
    header = f"{'trial':>6}  {'candidate':<24}{'search val':>11}{'confirmed mean':>16}{'sd':>7}{'runs':>6}"
    rows = [header, "-" * len(header)]
    for summary in summaries:
        search = "-" if summary.search_accuracy is None else f"{summary.search_accuracy:.2%}"
        sd = "-" if summary.sd is None else f"{100 * summary.sd:.2f}"
        rows.append(f"{summary.trial_number:>6}  {summary.baseline or 'searched':<24}{search:>11}"
                    f"{summary.mean:>16.2%}{sd:>7}{len(summary.accuracies):>6}")
    if not summaries:
        rows.append("no confirmation run has completed")
    return "\n".join(rows)


def _artifacts_option(command: Any) -> Any:
    """--artifacts-dir: the artifact store a search kept its trials' weights in."""
    return click.option("--artifacts-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=Path("runs") / "artifacts", show_default=True,
                        help="The artifact store (a folder) where `run` kept trials' weights (run's "
                             "RUNS_DIR/artifacts unless it was given --artifacts-dir).")(command)


@cli.command()
@_study_option
@_storage_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("best.yaml"),
              show_default=True)
@click.option("--pick", type=click.Choice(["max-accuracy", "min-cost", "knee"]), default="max-accuracy",
              show_default=True, help="Which Pareto-optimal trial a multi-objective study exports.")
@click.option("--weights", is_flag=True,
              help="Also write the pick's trained weights beside the YAML (best.yaml -> best.pt), from the artifact "
                   "store; exit status 2 if the search did not keep them.")
@_artifacts_option
def export(study_name: str | None, storage: str, output: Path, pick: str, weights: bool, artifacts_dir: Path) -> None:
    """Write the best configuration as YAML that `splitsearch train` retrains.

    A single-objective study exports the candidate with the best confirmed mean accuracy once
    `splitsearch confirm` has run, and the best trial of the search before.  The YAML records its
    provenance (study, trial, validation accuracy, confirmation) and its cost.  With --weights the
    trained weights come too: `splitsearch train best.yaml --init-from best.pt` fine-tunes them.
    """
    from splitsearch.search.confirm import summarize
    from splitsearch.search.export import export_best
    from splitsearch.search.run import open_for_reading

    study, store = open_for_reading(study_name, storage)
    confirmed = summarize(study, store.confirmations(study.study_name))
    trial = export_best(study, output, pick, confirmed)
    summary = next((summary for summary in confirmed if summary.trial_number == trial.number), None)
    if summary is not None and len(study.directions) == 1:
        spread = "" if summary.sd is None else f" +- {100 * summary.sd:.2f}"
        how = f"confirmed mean validation accuracy {summary.mean:.2%}{spread} over {len(summary.accuracies)} seeds"
    else:
        value = trial.values[0] if trial.values else float("nan")
        how = f"validation accuracy {value:.2%} in the search, not confirmed (splitsearch confirm)"
    click.echo(f"trial {trial.number} of {study.study_name} ({how}) written to {output}")
    if weights:
        from splitsearch.search.artifacts import download_weights, file_store

        download_weights(study, trial, file_store(artifacts_dir), output.with_suffix(".pt"), output)
        click.echo(f"its trained weights written to {output.with_suffix('.pt')}")


@cli.command()
@click.argument("config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The trained weights: export --weights' best.pt, or a training's model.pt.")
@click.option("--format", "format_", type=click.Choice(["torchscript", "onnx"]), default="onnx", show_default=True,
              help="onnx: for onnxruntime and other ONNX runtimes (needs the deploy extra); torchscript: for "
                   "torch.jit.load, in Python or C++ (LibTorch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write [default: CONFIG_FILE with .onnx, or .torchscript.pt].")
@click.option("--branchwise", is_flag=True,
              help="Run each split block branch by branch (seed 002's memory-saving form: 1/K of the block's "
                   "feature maps alive at a time), same weights and logits.")
@click.option("--fused", is_flag=True,
              help="Pack the S members into one network (one grouped kernel per layer, for accelerators); "
                   "refused with one line for families that cannot be packed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images in the check batch (the dataset's first test images, else random pixels).")
@click.option("--opset", type=click.IntRange(min=7), help="ONNX opset [default: the exporter's].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where a torchvision dataset is, for the check images [default: ~/.cache/splitsearch/data].")
def deploy(config_file: Path, weights: Path, format_: str, output: Path | None, branchwise: bool, fused: bool,
           batch_size: int, opset: int | None, data_dir: Path | None) -> None:
    """Write a config and its trained weights as ONE deployable file, and check it.

    The file holds one module: uint8 images [B, C, H, W] (pixel values 0-255, as decoded; any
    batch size) -> the ensemble's combined logits [B, K] (float32, classes in the dataset's order).
    Inside: the input normalisation of the training (the training split's per-channel mean and
    std), the S members, and the config's combination rule (train.combine, mean_logits by
    default), as evaluation computes them.  A semantic split (G > 1) deploys as it was cut.

    Right after writing, the file is reloaded (torch.jit.load; onnxruntime for ONNX) and run on
    a batch; its logits must equal the PyTorch ensemble's within 1e-4 times the logits' scale
    (max |difference| <= 1e-4 * max(1, max |logit|)).  A file that does not is not kept (a file
    already at -o stays as it was), with exit status 2.  ONNX needs onnx, onnxscript and
    onnxruntime: pip install "splitsearch[deploy]".

    \b
    Examples:
      splitsearch deploy best.yaml --weights best.pt                     # best.onnx
      splitsearch deploy best.yaml --weights best.pt --format torchscript -o serve/model.ts.pt
      splitsearch deploy vgg.yaml --weights runs/vgg/model.pt --branchwise -o vgg.onnx
    """
    from splitsearch.data import DEFAULT_DATA_DIR
    from splitsearch.deploy import deploy as deploy_file

    config = SplitConfig.from_yaml(config_file)
    output = output or config_file.with_suffix(".onnx" if format_ == "onnx" else ".torchscript.pt")
    result = deploy_file(config, weights, output, format_, branchwise, fused, batch_size, opset,
                         data_dir or DEFAULT_DATA_DIR)
    plural = "s" if result.check_images != 1 else ""
    images = (f"test image{plural}" if result.real_images
              else f"random image{plural} (the dataset is not available here)")
    channels, height, width = result.input_shape
    click.echo(f"{result.format} written to {result.path}: uint8 [B, {channels}, {height}, {width}] -> "
               f"logits [B, {result.num_classes}]")
    click.echo(f"checked on {result.check_images} {images}: max |difference| {result.max_abs_diff:.2g} "
               f"from the PyTorch ensemble (tolerance {result.tolerance:.2g})")


@cli.command()
@_study_option
@_storage_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True)
def report(study_name: str | None, storage: str, output: Path) -> None:
    """Write a self-contained HTML report of a study (plotly figures)."""
    from splitsearch.report import write_report
    from splitsearch.search.confirm import summarize
    from splitsearch.search.run import open_for_reading

    study, store = open_for_reading(study_name, storage)
    confirmed = summarize(study, store.confirmations(study.study_name))
    click.echo(f"report of {study.study_name} written to {write_report(study, output, confirmed)}")


@cli.command()
@_study_option
@_storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (local only by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@_artifacts_option
def dashboard(study_name: str | None, storage: str, host: str, port: int, artifacts_dir: Path) -> None:
    """Serve optuna-dashboard on the study's storage (trial user attributes show each candidate's cost).

    The trained weights a search kept (--artifacts-dir) are listed beside their trials, for download.

    While the database is away, a page waits for it 10 s, then answers 503 with the reason; the
    dashboard serves again as soon as the database is back.
    """
    from splitsearch.dashboard import RETRY_SECONDS, serve_dashboard
    from splitsearch.search.run import load_existing_study, open_existing_storage
    from splitsearch.storage_retry import StoragePatience

    # A server goes on after an outage outlasted the wait: that request fails, the next one tries again.
    opened = open_existing_storage(storage, StoragePatience(storage, RETRY_SECONDS, final=False))
    study = load_existing_study(study_name, opened)
    click.echo(f"optuna-dashboard for {study.study_name}: http://{host}:{port}/dashboard  (Ctrl-C stops)")
    from splitsearch.search.artifacts import file_store

    serve_dashboard(opened, host, port, file_store(artifacts_dir))


@cli.group()
def db() -> None:
    """The store's own tables (beside Optuna's, in the same database): upgrade them, check them against Optuna's."""


@db.command("upgrade")
@_storage_option
def db_upgrade(storage: str) -> None:
    """Create or migrate the store's tables (Alembic, own version table)."""
    from splitsearch.search.run import open_store
    from splitsearch.search.study import open_storage
    from splitsearch.urls import mask_url

    open_store(open_storage(storage, heartbeat=False))  # opening checks the URL and creates Optuna's tables too
    click.echo(f"store tables of {mask_url(storage)} are up to date")


@db.command("check")
@click.option("--study", "study_name", help="Check this study only [default: every study of the storage].")
@_storage_option
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where the workers keep checkpoints (run's --runs-dir): leftover ones are looked for there.")
@click.option("--repair", is_flag=True,
              help="Mend what can be mended (Optuna's trial decides how a trial ended), then check again.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: findings, repairs and what remains.")
def db_check(study_name: str | None, storage: str, runs_dir: Path, repair: bool, as_json: bool) -> None:
    """List every disagreement between Optuna's trials, the store's rows and the checkpoints on disk.

    One line per finding: a row left running (or a RUNNING trial whose worker on this machine
    is gone), a row whose state disagrees with its trial's, a COMPLETE or PRUNED trial without
    a row, a row without a trial, a retry link (retry_of, retried_as) to no row, a checkpoint
    folder no attempt will resume.  --repair marks rows as Optuna's trials ended, fails and
    queues again a dead worker's trial, writes a lost row again from its trial, clears dangling
    links and removes leftover checkpoints; it says what it did and what it could not mend.

    Exit status, like a linter's: 0 when everything agrees (after --repair: when nothing is
    left), 1 when disagreements remain, 2 when the storage or study cannot be opened.

    \b
    Examples:
      splitsearch db check --storage sqlite:///splitsearch.db
      splitsearch db check --study quickstart --runs-dir /shared/runs --repair
    """
    from splitsearch.search.consistency import check_storage
    from splitsearch.search.consistency import repair as mend

    findings = check_storage(storage, study_name, runs_dir)
    repairs = mend(findings) if repair else []
    remaining = check_storage(storage, study_name, runs_dir) if repair else findings
    if as_json:
        click.echo(json.dumps({"findings": [finding.to_dict() for finding in findings],
                               "repairs": [done.to_dict() for done in repairs],
                               "remaining": [finding.to_dict() for finding in remaining]}, indent=2))
    else:
        click.echo("\n".join(_check_lines(findings, repairs, remaining)))
    raise click.exceptions.Exit(1 if remaining else 0)


def _check_lines(findings: list[Any], repairs: list[Any], remaining: list[Any]) -> list[str]:
    """One line per finding (or per repair, and per disagreement left after it), then a summary."""
    if not findings:
        return ["consistent: Optuna's trials, the store's rows and the checkpoints agree"]
    if not repairs:
        mendable = sum(finding.mend is not None for finding in findings)
        return [*(finding.line() for finding in findings),
                f"{len(findings)} disagreement(s); splitsearch db check --repair mends {mendable} of them"]
    summary = f"repaired {sum(done.done is not None for done in repairs)} of {len(findings)} disagreement(s); "
    return [*(done.line() for done in repairs), *(f"remains: {finding.line()}" for finding in remaining),
            summary + (f"{len(remaining)} remain" if remaining else "now consistent")]


@cli.command("archs")
def archs() -> None:
    """List the architectures (patterns such as wrn{d}_{k} accept other depths and widths).

    Each line says which splits the family takes: S (all), block factors K_b, semantic groups G;
    whether its S members can run packed as one network (fused: yes, else the ensemble runs them
    one after another); and what one step of the width knob changes.
    """
    from splitsearch.ensemble import can_fuse
    from splitsearch.models.registry import available_families

    for family in available_families():
        splits = "S" + (", K_b" if family.supports_block_split else "") + (", G" if family.supports_semantic_split
                                                                              else "")
        fused = "yes" if can_fuse(family.examples[0]) else "no"
        click.echo(f"{', '.join(family.examples):<40} blocks={family.num_blocks}  splits: {splits:<10} "
                   f"fused: {fused:<4}width: {family.width_unit}")


def _describe(config: SplitConfig) -> str:
    factors = ",".join(str(k) for k in config.block_factors)
    semantic = f"  groups={config.groups} ({config.split_depth})" if config.groups > 1 else ""
    return (f"{config.arch}  S={config.S}  block_factors={factors}{semantic}  width_mult={config.width_mult:g}  "
            f"dataset={config.dataset}" + (f"  crop={config.crop}" if config.crop is not None else ""))


def _cost_table(cost: Any) -> str:
    header = (f"{'network':<10}{'params':>10}{'MACs':>10}{'FLOPs':>10}{'act. all branches':>19}"
              f"{'act. branchwise':>17}")
    rows = [header, "-" * len(header)]
    for index, network in enumerate(cost.networks, start=1):
        rows.append(_cost_row(f"#{index}", network))
    rows.append(_cost_row("total", cost))
    return "\n".join(rows)


def _cost_row(label: str, cost: Any) -> str:
    return (f"{label:<10}{format_count(cost.params):>10}{format_count(cost.macs):>10}"
            f"{format_count(cost.flops):>10}{format_bytes(cost.activation_bytes):>19}"
            f"{_optional_bytes(cost.sequential_activation_bytes):>17}")


def _optional_bytes(value: int | None) -> str:
    return "n/a" if value is None else format_bytes(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command; report user errors in one line and exit 2."""
    try:
        # Outside standalone mode click returns the code of an ``Exit`` instead of raising it.
        code = cli.main(args=argv, prog_name="splitsearch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        return 2
    except (SplitsearchError, StorageUnavailableError, OSError) as error:
        # What the user can fix, a database gone for too long, and files or disks that fail;
        # anything else is a bug and shows as one.
        click.echo(f"Error: {_one_line(error)}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def _one_line(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
