"""Commands about a trained candidate: ``train``, ``evaluate`` and ``deploy``."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path
from typing import Any

import click
from tqdm.auto import tqdm

from splitsearch.cli.candidate import dataset_defaults_line
from splitsearch.cli.options import (
    data_options,
    dataset_override_option,
    execution_options,
    nproc_option,
    quiet_option,
    set_option,
)
from splitsearch.config import SplitConfig, with_settings
from splitsearch.units import format_count


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@dataset_override_option
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs, overriding the config's.")
@click.option("--seed", type=int, help="Training seed, overriding the config's.")
@click.option("--final", is_flag=True,
              help="Train on train + validation, then report test accuracy once (for the chosen config).")
@set_option
@execution_options
@nproc_option
@click.option("--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Of the --nproc processes, D train the same members on shards of every batch (DDP).")
@click.option("--sync-bn", is_flag=True, help="With --data-parallel: BatchNorm over the whole batch (CUDA only).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for checkpoint.pt, metrics.json and model.pt [default: runs/ARCH-S<S>-HASH].")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--init-from", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Fine-tune from these trained weights (export --weights, or a training's model.pt).")
@data_options
@quiet_option
def train(config_file: Path, settings: tuple[str, ...], nproc: int, data_parallel: int, sync_bn: bool, quiet: bool,
          data_dir: Path | None, **request: Any) -> None:
    """Train the S networks of a config with co-training.

    A validation split (train.val_fraction of the training images) is carved out and its
    accuracy reported every epoch; the test split is not looked at.  --final trains on every
    training image and reports test accuracy once, at the end: use it for the configuration you
    have chosen, not to choose one.  A checkpoint is written atomically after every epoch; after
    a crash or Ctrl-C the same command with --resume continues where the run stopped.

    \b
    Examples:
      splitsearch train best.yaml --epochs 30 --out runs/best
      splitsearch train best.yaml --final
      splitsearch train best.yaml --init-from best.pt --epochs 5 --set train.lr=0.01
      splitsearch train cfg.yaml --nproc 2            # S=2: one member per process
      torchrun --nproc-per-node 4 -m splitsearch.cli train cfg.yaml --device cuda
    """
    from splitsearch.cost.counting import count_config
    from splitsearch.data import DEFAULT_DATA_DIR
    from splitsearch.errors import CheckpointReadError
    from splitsearch.train.launch import group_size, run_in_processes
    from splitsearch.train.loop import resolve_device
    from splitsearch.train.parallel import check_data_parallel
    from splitsearch.train.plan import TrainingInterrupted, TrainRequest, run_training, run_training_rank
    from splitsearch.train.semantic_stage import CLASS_GROUPS_NAME, class_group_text

    request = TrainRequest(**{**request, "config": with_settings(SplitConfig.from_yaml(config_file), settings),
                              "device": str(resolve_device(request["device"])), "data_dir": data_dir or DEFAULT_DATA_DIR,
                              "data_parallel": data_parallel, "sync_bn": sync_bn})
    processes = group_size(nproc)
    # S must divide among the member ranks, the batch among the data ranks: say so now.
    check_data_parallel(processes, data_parallel, request.resolved_config(), request.device, sync_bn)
    reporter = TrainLines(quiet)
    try:
        outcome = run_in_processes(nproc, run_training_rank, run_training, request.device, request, reporter)
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
    where = f", {joined} processes{grid}" if joined > 1 else ""
    click.echo(f"\n{config.arch} S={config.S} on {config.dataset}, {outcome.ensemble_kind}{where}, "
               f"{result.wall_seconds:.1f}s")
    if final:
        click.echo(f"{'':<12}{'test acc':>10}{CALIBRATION_HEADER}   (the final report: {outcome.test_samples:,} "
                   f"test images, +-{100 * result.test_standard_error:.1f} points standard error)")
        rows = [result.test_accuracy, *result.test_member_accuracies]
        calibration = [astuple(figures) for figures in (result.test_calibration, *result.test_member_calibration)]
    else:
        click.echo(f"{'':<12}{'val acc':>10}{CALIBRATION_HEADER}   ({outcome.val_samples:,} validation images, "
                   f"+-{100 * result.val_standard_error:.1f} points standard error; test not evaluated: "
                   "use --final for the chosen config)")
        last = result.history[-1]
        rows = [result.val_accuracy, *last.val_member_accuracies]
        calibration = [(last.val_nll, last.val_ece, last.val_brier),
                       *zip(last.val_member_nll, last.val_member_ece, last.val_member_brier)]
    echo_accuracies(rows, calibration)
    if result.semantic is not None:
        click.echo(f"semantic split G={config.groups} ({config.split_depth}), cut after epoch "
                   f"{result.semantic['grouping_epochs']}; class groups (also in {out_dir / CLASS_GROUPS_NAME}):")
        for member, groups in enumerate(class_group_text(result.semantic), start=1):
            click.echo(f"  member {member}: {groups}")
    click.echo(f"params {format_count(cost.params)}  MACs {format_count(cost.macs)}  output {out_dir}")


# NLL, ECE and Brier score beside each accuracy (splitsearch.train.calibration; lower is better).
CALIBRATION_HEADER = f"{'NLL':>8}{'ECE':>8}{'Brier':>8}"


def echo_accuracies(accuracies: list[float], calibration: list[tuple[float | None, ...]] = ()) -> None:
    """The ensemble's accuracy, then each member's, one per line, each with its (NLL, ECE, Brier) where
    measured (an epoch of an older checkpoint has none)."""
    for index, accuracy in enumerate(accuracies):
        figures = calibration[index] if index < len(calibration) else ()
        text = "".join(f"{value:>8.3f}" for value in figures if value is not None)
        click.echo(f"{'ensemble' if index == 0 else 'member ' + str(index):<12}{accuracy:>10.2%}{text}")


class TrainLines:
    """What ``train`` prints while it trains: the data plan, then a line per epoch unless ``quiet``.

    A plain class at module level, so that a member-parallel rank can receive it (rank 0 prints).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = not quiet

    def data_plan(self, plan: Any) -> None:
        echo_data_plan(plan.config, plan.data)

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


def echo_data_plan(config: SplitConfig, data: Any) -> None:
    """Say how the data is split and which augmentation settings came from the dataset."""
    carved = f"{data.val.num_samples:,} validation (train.val_fraction {config.train.val_fraction:g}, for selection)"
    if data.val.num_samples == 0:
        carved = "no validation split (every training image is trained on)"
    click.echo(f"{config.dataset}: {data.train.num_samples:,} training images, {carved}, "
               f"{data.test.num_samples:,} test")
    if data.streamed:
        click.echo(f"images streamed from disk at {data.info.image_size}x{data.info.image_size}: random-resized "
                   "crops per member for training, centre crops for evaluation")
    click.echo(dataset_defaults_line(config))


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The trained members: a training's model.pt or export --weights' file.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test: the dataset's test split; val: the validation split the config's training carved.")
@dataset_override_option
@execution_options
@nproc_option
@click.option("--data-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Of the --nproc processes, D hold the same members and share out the batches.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one CSV row per image: index, label, the ensemble's and each member's prediction.")
@data_options
def evaluate(config_file: Path, weights: Path, split: str, nproc: int, predictions: Path | None,
             data_dir: Path | None, **request: Any) -> None:
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
    from splitsearch.train.launch import group_size, run_in_processes
    from splitsearch.train.loop import resolve_device
    from splitsearch.train.parallel import check_grid
    from splitsearch.train.plan import TrainRequest

    request = TrainRequest(**{**request, "config": SplitConfig.from_yaml(config_file), "init_from": weights,
                              "device": str(resolve_device(request["device"])), "data_dir": data_dir or DEFAULT_DATA_DIR})
    # S must divide among the member ranks: say so now.
    check_grid(group_size(nproc), request.data_parallel, request.config.S)
    result = run_in_processes(nproc, evaluate_rank, evaluate_weights, request.device, request, split)
    if result is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    error = accuracy_standard_error(result.accuracy, result.samples)
    where = f", {result.processes} processes" if result.processes > 1 else ""  # the ranks that joined
    click.echo(f"{result.config.arch} S={result.config.S} on {result.config.dataset} {split} split "
               f"({result.samples:,} images, +-{100 * error:.1f} points standard error{where}, "
               f"{result.seconds:.1f}s)")
    click.echo(f"{'':<12}{'accuracy':>10}{CALIBRATION_HEADER}")
    echo_accuracies([result.accuracy, *result.member_accuracies],
                    [astuple(figures) for figures in (result.calibration, *result.member_calibration)])
    if predictions is not None:
        result.write_predictions(predictions)
        click.echo(f"predictions: {predictions}")


@click.command()
@click.argument("config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The trained weights: export --weights' best.pt, or a training's model.pt.")
@click.option("--format", "format_", type=click.Choice(["torchscript", "onnx"]), default="onnx", show_default=True,
              help="onnx: for onnxruntime and other ONNX runtimes (needs the deploy extra); torchscript: for "
                   "torch.jit.load, in Python or C++ (LibTorch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write [default: CONFIG_FILE with .onnx, or .torchscript.pt].")
@click.option("--branchwise", is_flag=True,
              help="Run each split block branch by branch (1/K of its feature maps alive at a time), same weights "
                   "and logits.")
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


