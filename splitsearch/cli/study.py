"""Commands about a study: ``run`` searches, ``confirm`` retrains the best, ``export``, ``report`` and
``dashboard`` read the result."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from tqdm.auto import tqdm

from splitsearch.cli.options import (
    DurationParam,
    artifacts_option,
    budget_options,
    data_options,
    execution_options,
    nproc_per_trial_option,
    quiet_option,
    runs_dir_option,
    set_option,
    storage_option,
    study_option,
)


@click.command()
@click.argument("study_file", required=False)
@click.option("--study", "study_name", help="Study name [default: the study file's]; the same name resumes it.")
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), help="Candidates to train in all (repeats do not count).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop starting trials after SECONDS.")
@budget_options
@click.option("--budget-latency", type=DurationParam(),
              help="Forward latency of a candidate, measured before it trains, e.g. 5ms (checked, never fitted).")
@click.option("--arch", help="Base network of the search, e.g. resnet20, wrn28_10.")
@click.option("--dataset", help="Dataset spec, e.g. digits, cifar100, imagefolder:PATH.")
@click.option("--space", help="Search space: divide, blocks, full, semantic, or a YAML file.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs per candidate.")
@click.option("--objectives", help="nll (default, minimised) or accuracy; a Pareto front: accuracy,COST with COST params, "
                                   "macs, activation, latency or ece.")
@click.option("--strategy", type=click.Choice(["sampler", "greedy-blocks"]), default="sampler", show_default=True,
              help="sampler: Optuna samples the space; greedy-blocks: the block-wise split's greedy procedure.")
@execution_options
@nproc_per_trial_option
@data_options
@runs_dir_option
@set_option
@click.option("--force", is_flag=True, help="Continue a study even though its settings changed.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the estimated time, then exit; store nothing.")
@click.option("-v", "--verbose", count=True, help="-v: a line per epoch; -vv: Optuna's own log too.")
def run(study_file: str | None, study_name: str | None, storage: str, strategy: str, settings: tuple[str, ...],
        force: bool, dry_run: bool, verbose: int, device: str, mode: str, nproc_per_trial: int, runs_dir: Path,
        data_dir: Path | None, download: bool, data_path: str, loader_workers: int | None,
        budget_macs: int | None, budget_flops: int | None, **overrides: Any) -> None:
    """Search how to split a network: an Optuna study over split configurations under a budget.

    STUDY_FILE is a study YAML or a shipped study [default: quickstart].  Options and --set
    override the file (--set sampler=random, --set worker.keep_best=5).  The same --study
    resumes; workers on many machines share a study through one --storage.

    \b
    Examples:
      splitsearch run                                   # the quick-start study on digits
      splitsearch run cifar100-wrn28-10-36M --budget-params 36M --storage postgresql+psycopg://host/db
      splitsearch run --arch resnet20 --space full --objectives accuracy,params --n-trials 40
    """
    from splitsearch.cli.candidate import macs_budget

    if dry_run and strategy != "sampler":
        raise click.UsageError("--dry-run plans --strategy sampler studies only")
    import optuna

    from splitsearch.search.execution import ExecutionOptions
    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec, resolve_study_file
    from splitsearch.search.summary import greedy_summary, study_summary
    from splitsearch.search.worker import Terminated
    from splitsearch.store.urls import mask_url
    from splitsearch.train.loop import resolve_device

    overrides = {"name": study_name, "budget_macs": macs_budget(budget_macs, budget_flops), **overrides}
    spec = load_study_spec(resolve_study_file(study_file or "quickstart"), overrides, settings)
    execution = ExecutionOptions(**{
        **spec.worker, "device": str(resolve_device(device)), "mode": mode, "nproc_per_trial": nproc_per_trial,
        "runs_dir": runs_dir, "download": download, "data_path": data_path, "loader_workers": loader_workers,
        **({"data_dir": data_dir} if data_dir is not None else {})})
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
            # No count of ranks here: none has started yet; each trial's line says how many joined.
            click.echo(f"study {spec.name!r} in {mask_url(storage)}: {spec.base.arch} on {spec.base.dataset}, "
                       f"greedy block-wise split, factors {','.join(map(str, spec.greedy.factors))}, threshold "
                       f"{spec.greedy.threshold} points")
            echo_training_plan(spec)
            study, _ = run_greedy_blocks(spec, storage, execution, force, on_step=tqdm.write, on_epoch=on_epoch,
                                         on_warning=warning_line)
            click.echo("\n".join(greedy_summary(study)))
            return
        click.echo(f"study {spec.name!r} in {mask_url(storage)}: {spec.base.arch} on {spec.base.dataset}, space "
                   f"{spec.space.name}, {','.join(spec.objectives)}, {spec.n_trials} trials")
        echo_training_plan(spec)
        data = execution.data_cache()  # loaded once, for the plan and the study
        plan = echo_run_plan(spec, execution, data)
        if dry_run:
            return
        started = time.perf_counter()
        study = run_study(spec, storage, execution, force, on_epoch=on_epoch, on_warning=warning_line, data=data)
    except Terminated:
        click.echo(f"terminated; the trial in progress is queued again and continues from its checkpoint "
                   f"(study {spec.name!r} in {mask_url(storage)})", err=True)
        raise click.exceptions.Exit(143) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; finished trials are stored in {mask_url(storage)}: run the same command again to "
            f"continue study {spec.name!r}"
        ) from None
    click.echo("\n".join(study_summary(study)))
    if (closing := plan.closing_line(time.perf_counter() - started)) is not None:
        click.echo(closing)


def warning_line(line: str) -> None:
    """A fault the worker rode out (a checkpoint it could not write or read), in one line on stderr."""
    tqdm.write(f"Warning: {line}", file=sys.stderr)


def echo_training_plan(spec: Any) -> None:
    """The training settings every candidate starts from, and where the dataset-specific ones came from."""
    from splitsearch.cli.candidate import dataset_defaults_line

    train, applied = spec.base.train.with_dataset_defaults(spec.base.input_info())
    click.echo(f"training: {train.epochs} epoch{'s' * (train.epochs != 1)}, batch {train.batch_size}, lr {train.lr:g} "
               f"({train.lr_schedule}, {train.lr_warmup_fraction:.0%} warm-up), weight decay {train.weight_decay:g}, "
               f"crop padding {train.crop_padding} ({train.crop_fill} fill), flips {'on' if train.hflip else 'off'} "
               f"(the space may change some per candidate)")
    if spec.dataset_train_dropped:
        dropped = ", ".join(f"{key}={json.dumps(value)}" for key, value in spec.dataset_train_dropped.items())
        click.echo(f"not used: {spec.source}'s dataset_train ({dropped}), written for another dataset than "
                   f"{spec.base.dataset}")
    if applied:
        click.echo(dataset_defaults_line(spec.base))


def echo_run_plan(spec: Any, execution: Any, data: Any) -> Any:
    """The fitted base candidate, the measured step times and the estimated study time; a warning if the budget
    is far beyond what the dataset supports.  Returns the plan (:class:`~splitsearch.search.plan_estimate.RunPlan`)."""
    from splitsearch.search.plan_estimate import plan_run

    plan = plan_run(spec, execution, data)
    for line in plan.lines():
        click.echo(line)
    if (warning := plan.warning()) is not None:
        click.echo(f"Warning: {warning}", err=True)
    return plan


@click.command()
@study_option
@storage_option
@click.option("--top", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many of the best distinct candidates to confirm (the baselines are always confirmed).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Retrainings per candidate, with seeds the search did not use (its seed + 1, + 2, ...).")
@execution_options
@nproc_per_trial_option
@runs_dir_option
@data_options
@quiet_option
def confirm(study_name: str | None, storage: str, top: int, seeds: int, device: str, quiet: bool,
            data_dir: Path | None, **execution: Any) -> None:
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
    from splitsearch.search.confirm import confirm_study, load_verdicts
    from splitsearch.search.execution import ExecutionOptions
    from splitsearch.search.objective import failure_reason
    from splitsearch.search.record import TrialRecord
    from splitsearch.search.run import open_for_reading
    from splitsearch.search.summary import confirmation_table
    from splitsearch.search.verdict import verdict_lines
    from splitsearch.train.loop import resolve_device

    study, store = open_for_reading(study_name, storage)
    options = ExecutionOptions(device=str(resolve_device(device)), **execution,
                               **({"data_dir": data_dir} if data_dir is not None else {}))

    def line(trial: Any, seed: int, outcome: Any) -> None:
        label = TrialRecord.from_trial(trial).baseline or f"trial {trial.number}"
        if isinstance(outcome, Exception):
            tqdm.write(f"{label} (trial {trial.number}), seed {seed}: FAILED: {failure_reason(outcome)}")
        else:
            tqdm.write(f"{label} (trial {trial.number}), seed {seed}: validation accuracy {outcome.val_accuracy:.2%} "
                       f"+-{100 * outcome.val_standard_error:.1f}  ({outcome.wall_seconds:.0f}s)")

    try:
        summaries = confirm_study(study, store, top, seeds, options, progress=not quiet, on_run=line)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; finished runs are stored: run the same command to continue") from None
    click.echo("\n".join(confirmation_table(summaries)))
    verdicts = load_verdicts(study)
    if verdicts:
        click.echo(f"\nverdict of the pick (trial {verdicts[0].pick_trial}), paired by seed, 95 % t-intervals:")
        click.echo("\n".join(f"  {line}" for line in verdict_lines(verdicts)))
    if summaries:
        click.echo(f"next: splitsearch export --study {study.study_name} -o best.yaml  (picks by confirmed mean)")


def read_confirmed(study_name: str | None, storage: str) -> tuple[Any, list[Any]]:
    """A finished study and its confirmed candidates, best mean first (what ``export`` and ``report`` read)."""
    from splitsearch.search.confirm import summarize
    from splitsearch.search.run import open_for_reading

    study, store = open_for_reading(study_name, storage)
    return study, summarize(study, store.confirmations(study.study_name))


@click.command()
@study_option
@storage_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("best.yaml"),
              show_default=True, help="The YAML to write (with --weights, the weights beside it as .pt).")
@click.option("--pick", type=click.Choice(["max-accuracy", "min-cost", "knee"]), default="max-accuracy",
              show_default=True, help="Which Pareto-optimal trial a multi-objective study exports.")
@click.option("--weights", is_flag=True,
              help="Also write the pick's trained weights beside the YAML (best.yaml -> best.pt), from the artifact "
                   "store; exit status 2 if the search did not keep them.")
@artifacts_option
def export(study_name: str | None, storage: str, output: Path, pick: str, weights: bool, artifacts_dir: Path) -> None:
    """Write the best configuration as YAML that `splitsearch train` retrains.

    A single-objective study exports the candidate with the best confirmed mean accuracy once
    `splitsearch confirm` has run, and the best trial of the search before.  The YAML records its
    provenance (study, trial, validation accuracy, confirmation) and its cost.  With --weights the
    trained weights come too: `splitsearch train best.yaml --init-from best.pt` fine-tunes them.
    """
    from splitsearch.search.export import export_best, verdicts_of
    from splitsearch.search.record import trial_accuracy
    from splitsearch.search.verdict import verdict_lines

    study, confirmed = read_confirmed(study_name, storage)
    trial = export_best(study, output, pick, confirmed)
    summary = next((summary for summary in confirmed if summary.trial_number == trial.number), None)
    if summary is not None and len(study.directions) == 1:
        spread = "" if summary.sd is None else f" +- {100 * summary.sd:.2f}"
        how = f"confirmed mean validation accuracy {summary.mean:.2%}{spread} over {len(summary.accuracies)} seeds"
    else:
        value = trial_accuracy(trial)
        how = f"validation accuracy {float('nan') if value is None else value:.2%} in the search, not confirmed"
    click.echo(f"trial {trial.number} of {study.study_name} ({how}) written to {output}")
    verdicts = verdicts_of(study, trial)
    if verdicts:
        click.echo("verdict:\n" + "\n".join(f"  {line}" for line in verdict_lines(verdicts)))
    else:
        click.echo("verdict: none, the pick was not compared with the baselines over seeds (splitsearch confirm)")
    if weights:
        from splitsearch.search.artifacts import download_weights, file_store

        download_weights(study, trial, file_store(artifacts_dir), output.with_suffix(".pt"), output)
        click.echo(f"its trained weights written to {output.with_suffix('.pt')}")


@click.command()
@study_option
@storage_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML file to write.")
def report(study_name: str | None, storage: str, output: Path) -> None:
    """Write a self-contained HTML report of a study (plotly figures)."""
    from splitsearch.report import write_report

    study, confirmed = read_confirmed(study_name, storage)
    click.echo(f"report of {study.study_name} written to {write_report(study, output, confirmed)}")


@click.command()
@study_option
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (local only by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@artifacts_option
def dashboard(study_name: str | None, storage: str, host: str, port: int, artifacts_dir: Path) -> None:
    """Serve optuna-dashboard on the study's storage (trial user attributes show each candidate's cost).

    The trained weights a search kept (--artifacts-dir) are listed beside their trials, for download.

    While the database is away, a page waits for it 10 s, then answers 503 with the reason; the
    dashboard serves again as soon as the database is back.
    """
    from splitsearch.dashboard import RETRY_SECONDS, serve_dashboard
    from splitsearch.search.run import load_existing_study, open_existing_storage
    from splitsearch.store.retry import StoragePatience

    # A server goes on after an outage outlasted the wait: that request fails, the next one tries again.
    opened = open_existing_storage(storage, StoragePatience(storage, RETRY_SECONDS, final=False))
    study = load_existing_study(study_name, opened)
    click.echo(f"optuna-dashboard for {study.study_name}: http://{host}:{port}/dashboard  (Ctrl-C stops)")
    from splitsearch.search.artifacts import file_store

    serve_dashboard(opened, host, port, file_store(artifacts_dir))
