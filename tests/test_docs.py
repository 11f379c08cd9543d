"""The documentation follows the code: the CLI reference covers every command, names stay citable.

The site itself is built by ``mkdocs build --strict`` in ``.ci/run``; these tests check what a
build would not: that no command of ``splitsearch`` is left out of the command-line reference,
and that the README and the site stay one page and free of names users cannot look up.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import pytest

from splitsearch.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
DIRECTIVE = re.compile(r"^::: mkdocs-click\n((?:[ \t]+:\w+:.*\n?)+)", re.MULTILINE)


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    """Every command of the tree under ``command``, by its path of names below the root."""
    found = {path: command}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.update(command_paths(sub, (*path, name)))
    return found


def directives() -> list[dict[str, str]]:
    """The options of every ``::: mkdocs-click`` block on the CLI reference page."""
    blocks = DIRECTIVE.findall(CLI_PAGE.read_text())
    return [dict(re.findall(r":(\w+):\s*(.*)", block)) for block in blocks]


def documented_paths() -> set[tuple[str, ...]]:
    """The command paths the page's directives render (mkdocs-click renders a group's subcommands too)."""
    tree = {id(command): path for path, command in command_paths(cli).items()}
    covered: set[tuple[str, ...]] = set()
    for options in directives():
        command = getattr(importlib.import_module(options["module"]), options["command"])
        root = tree.get(id(command))
        assert root is not None, f"{options['module']}:{options['command']} is not a command of splitsearch"
        covered.update((*root, *below) for below in command_paths(command))
    return covered


def test_every_command_is_on_the_cli_reference_page():
    missing = sorted(set(command_paths(cli)) - documented_paths())
    assert not missing, ("commands missing from docs/reference/cli.md (add a mkdocs-click directive): "
                         + ", ".join("splitsearch " + " ".join(path) for path in missing))


def test_the_cli_reference_renders_every_command_and_option():
    docs = pytest.importorskip("mkdocs_click._docs", reason="the docs extra (pip install -e '.[docs]') is not installed")
    rendered = []
    for options in directives():
        command = getattr(importlib.import_module(options["module"]), options["command"])
        rendered += docs.make_command_docs(options.get("prog_name", options["command"]), command,
                                           depth=int(options.get("depth", 0)), style=options.get("style", "plain"))
    text = "\n".join(rendered)
    for path, command in command_paths(cli).items():
        assert " ".join(("splitsearch", *path)) in text, f"splitsearch {' '.join(path)} is not rendered"
        for parameter in command.params:
            if isinstance(parameter, click.Option) and not parameter.hidden:
                assert any(name in text for name in parameter.opts), (
                    f"option {parameter.opts[0]} of splitsearch {' '.join(path)} is not rendered")


def test_the_readme_is_one_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_users_read_citations_not_internal_document_names():
    pattern = re.compile(r"seed 00[0-4]|METHODS\.md")
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "docs").rglob("*.py"),
             *(ROOT / "splitsearch").rglob("*.py")]
    found = [f"{path.relative_to(ROOT)}:{number}" for path in files
             for number, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not found, "name the paper (authors, title, year) or describe the method instead: " + ", ".join(found)
