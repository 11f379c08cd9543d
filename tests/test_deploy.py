"""The cluster job files in examples/cluster/ use only options ``splitsearch run`` accepts.

They are not run here (no cluster), but a renamed or removed option must not leave them stale.
"""

import shlex
from pathlib import Path

import click
import pytest
import yaml

from splitsearch.cli import cli

CLUSTER = Path(__file__).resolve().parents[1] / "examples" / "cluster"


def kubernetes_commands() -> list[list[str]]:
    commands = []
    for path in sorted(CLUSTER.glob("kubernetes/*.yaml")):
        for container in yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]:
            commands.append(container["command"])
    return commands


def slurm_commands() -> list[list[str]]:
    commands = []
    for path in sorted(CLUSTER.glob("slurm/*.sbatch")):
        text = path.read_text().replace("\\\n", " ")
        line = next(line for line in text.splitlines() if line.startswith("exec splitsearch"))
        commands.append(shlex.split(line.removeprefix("exec ")))
    return commands


@pytest.mark.parametrize("command", kubernetes_commands() + slurm_commands(), ids=lambda command: " ".join(command[2:]))
def test_every_deployment_command_parses(command):
    assert command[:2] == ["splitsearch", "run"]
    run = cli.get_command(click.Context(cli), "run")
    run.make_context("run", list(command[2:]))  # raises click.UsageError on an unknown option or a bad value


def test_the_job_files_are_found():
    """Presence first: the test above would pass with no command at all (as it did when the folder moved)."""
    assert len(kubernetes_commands()) == 2 and len(slurm_commands()) == 2
