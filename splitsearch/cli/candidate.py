"""Commands about one candidate before it trains: ``count``, ``fit`` and ``archs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from splitsearch.cli.options import budget_options, candidate_options
from splitsearch.config import SplitConfig
from splitsearch.units import format_bytes, format_count


@click.command()
@candidate_options
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (params, macs, flops, activation_bytes, sequential_activation_bytes, networks).")
def count(config_file: Path | None, macs_convention: str, as_json: bool, **fields: Any) -> None:
    """Count parameters, MACs, FLOPs and activation memory of a candidate.

    Counting runs on PyTorch's meta device: no memory, milliseconds.  MACs are multiply-adds
    (what the divide-and-co-train paper calls GFLOPs); FLOPs = 2 x MACs.  Activation memory is
    the peak of live feature maps in an inference of one image (float32), with every split
    block's branches at once ("all branches") and run one after another ("branchwise", as the
    block-wise split deploys them; budgets use this one).

    \b
    Examples:
      splitsearch count --arch wrn28_10 -S 4 --dataset cifar100
      splitsearch count --arch vgg16 --block-factors 8,2,2,4,4 --dataset cifar10 --json
      splitsearch count --arch efficientnet_b7 -S 2 --dataset imagenet --crop 320 --macs-convention paper
      splitsearch count best.yaml
    """
    from splitsearch.cost.counting import count_config

    config = load_config(config_file, **fields)
    cost = count_config(config, macs_convention)
    if as_json:
        _, applied = config.train.with_dataset_defaults(config.input_info())
        click.echo(json.dumps({**cost.to_dict(), "macs_convention": macs_convention, "config": config.to_dict(),
                               "dataset_defaults": applied}, indent=2))
        return
    click.echo(describe(config))
    click.echo(cost_table(cost))
    click.echo(f"MACs counted by the {macs_convention} convention; FLOPs = 2 x MACs")
    click.echo(dataset_defaults_line(config))


@click.command()
@candidate_options
@budget_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the fitted config here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (config, cost, width step).")
def fit(config_file: Path | None, macs_convention: str, budget_params: int | None, budget_macs: int | None,
        budget_flops: int | None, budget_activation: int | None, output: Path | None, as_json: bool,
        **fields: Any) -> None:
    """Scale a candidate's width to the largest that fits a budget, and print the fitted config.

    The knob is width_mult: every channel count of the divided network is multiplied by it and
    rounded to whole channels, so the fitted candidate lands just under the budget; the output says
    how much the next wider network would cost (the finest step at that size).

    \b
    Examples:
      splitsearch fit --arch wrn28_10 -S 4 --dataset cifar100 --budget-params 36M
      splitsearch fit --arch resnet110 -S 2 --budget-macs 0.2G -o fitted.yaml
    """
    from splitsearch.cost.fitting import fit_width

    budget_macs = macs_budget(budget_macs, budget_flops)
    if budget_params is None and budget_macs is None and budget_activation is None:
        raise click.UsageError("give --budget-params, --budget-macs, --budget-flops or --budget-activation")
    config = load_config(config_file, **fields)
    result = fit_width(config, budget_params=budget_params, budget_macs=budget_macs, convention=macs_convention,
                       budget_activation=budget_activation)
    if output is not None:
        output.write_text(result.config.to_yaml())
    if as_json:
        click.echo(json.dumps({"config": result.config.to_dict(), "cost": result.cost.to_dict(),
                               "budget_usage": result.usage, "width_step": result.step}, indent=2))
        return
    click.echo(result.config.to_yaml().rstrip())
    click.echo()
    click.echo(cost_table(result.cost))
    step = "n/a (widest network built)" if result.step is None else f"{result.step:.2%}"
    click.echo(f"\nuses {result.usage:.2%} of the budget; the next wider network costs {step} more")
    if output is not None:
        click.echo(f"written to {output}")


@click.command("archs")
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


def load_config(config_file: Path | None, **overrides: Any) -> SplitConfig:
    """The config from ``config_file`` (if given) with command-line overrides applied."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if config_file is not None:
        config = SplitConfig.from_yaml(config_file)
        return config.replace(**overrides) if overrides else config
    if "arch" not in overrides:
        raise click.UsageError("give a config file or --arch")
    return SplitConfig.from_dict(overrides)


def macs_budget(budget_macs: int | None, budget_flops: int | None) -> int | None:
    """The MACs budget of ``--budget-macs`` or ``--budget-flops`` (FLOPs = 2 x MACs)."""
    if budget_flops is None:
        return budget_macs
    if budget_macs is not None:
        raise click.UsageError("give --budget-macs or --budget-flops, not both")
    return budget_flops // 2


def describe(config: SplitConfig) -> str:
    """One line naming the candidate: architecture, S, block factors, groups, width, dataset."""
    factors = ",".join(str(k) for k in config.block_factors)
    semantic = f"  groups={config.groups} ({config.split_depth})" if config.groups > 1 else ""
    return (f"{config.arch}  S={config.S}  block_factors={factors}{semantic}  width_mult={config.width_mult:g}  "
            f"dataset={config.dataset}" + (f"  crop={config.crop}" if config.crop is not None else ""))


def cost_table(cost: Any) -> str:
    """Each network's cost and the total, in a table."""
    header = (f"{'network':<10}{'params':>10}{'MACs':>10}{'FLOPs':>10}{'act. all branches':>19}"
              f"{'act. branchwise':>17}")
    rows = [header, "-" * len(header)]
    for index, network in enumerate(cost.networks, start=1):
        rows.append(_cost_row(f"#{index}", network))
    rows.append(_cost_row("total", cost))
    return "\n".join(rows)


def _cost_row(label: str, cost: Any) -> str:
    branchwise = "n/a" if cost.sequential_activation_bytes is None else format_bytes(cost.sequential_activation_bytes)
    return (f"{label:<10}{format_count(cost.params):>10}{format_count(cost.macs):>10}"
            f"{format_count(cost.flops):>10}{format_bytes(cost.activation_bytes):>19}{branchwise:>17}")


def dataset_defaults_line(config: SplitConfig) -> str:
    """Which training settings came from the dataset's defaults, not the config."""
    _, applied = config.train.with_dataset_defaults(config.input_info())
    if not applied:
        return "training settings: all as the config sets them"
    values = ", ".join(f"{key}={json.dumps(value)}" for key, value in applied.items())
    return f"training defaults of {config.dataset}: {values} (set them under train: in the config to change)"
