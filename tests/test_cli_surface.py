"""The command line's surface: options declared once, a short ``run --help``, ``--set`` for the rest."""

from __future__ import annotations

import click
import pytest
import torch
import yaml

from splitsearch.cli import cli
from splitsearch.cli.options import SharedOption

from conftest import run_cli


def commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command of the tree by its full name (``db check``)."""
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def options_by_name_and_help(group: click.Group) -> dict[tuple[str, str], list[tuple[str, click.Option]]]:
    """Each (option name, help text) of the tree with the commands that take it."""
    seen: dict[tuple[str, str], list[tuple[str, click.Option]]] = {}
    for name, command in commands(group).items():
        for parameter in command.params:
            if isinstance(parameter, click.Option):
                seen.setdefault((parameter.opts[-1], parameter.help or ""), []).append((name, parameter))
    return seen


def declared_twice_by_hand(group: click.Group) -> list[str]:
    """Options with the same name and help in two commands that do not come from a shared group."""
    return sorted(f"{option} in {', '.join(name for name, _ in uses)}"
                  for (option, _), uses in options_by_name_and_help(group).items()
                  if len(uses) > 1 and not all(isinstance(parameter, SharedOption) for _, parameter in uses))


def test_no_option_is_declared_twice_by_hand():
    """An option with the same name and help in two commands belongs in a shared group (cli/options.py)."""
    assert declared_twice_by_hand(cli) == []
    shared = [uses for uses in options_by_name_and_help(cli).values()
              if len(uses) > 1 and isinstance(uses[0][1], SharedOption)]
    assert len(shared) >= 10, "the shared groups are used by several commands"


def test_the_check_finds_an_option_declared_twice():
    """The check above can fail: two hand-written options with one name and help are found."""
    twice = click.Group(commands={
        "a": click.Command("a", params=[click.Option(["--x"], help="same")]),
        "b": click.Command("b", params=[click.Option(["--x"], help="same")]),
    })
    assert declared_twice_by_hand(twice) == ["--x in a, b"]


def test_run_help_fits_a_screen(capsys):
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and len(out.splitlines()) <= 80


def test_run_sets_any_key_of_the_study_file(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--dry-run", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--device",
                             "cpu", "--set", "train.lr=0.2", "--set", "n_trials=3", "--set", "worker.keep_best=1")
    assert code == 0, err
    assert "lr 0.2 " in out and ", 3 trials" in out


@pytest.mark.parametrize("setting, message", [
    ("train.lrr=0.2", "unknown key train.lrr"),
    ("samplr=random", "unknown key samplr"),
    ("worker.keep_best=-1", "worker.keep_best must be a whole number of at least 0"),
    ("sampler", "expected KEY=VALUE"),
])
def test_a_bad_setting_is_one_line_and_stores_nothing(setting, message, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--set", setting)
    assert code == 2 and err.startswith("Error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "x.db").exists()


def test_train_takes_settings_too(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"arch": "resnet20", "dataset": "synthetic:64", "width_mult": 0.25,
                                      "train": {"epochs": 1, "batch_size": 32}}))
    code, out, err = run_cli(capsys, "train", config, "--device", "cpu", "--quiet", "--out", tmp_path / "run",
                             "--set", "S=2", "--set", "train.lr=0.05")
    assert code == 0, err
    assert "resnet20 S=2" in out
    trained = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["config"]
    assert (trained["S"], trained["train"]["lr"]) == (2, 0.05)
    code, _, err = run_cli(capsys, "train", config, "--set", "train.epochz=2")
    assert code == 2 and "--set: unknown key train.epochz" in err
