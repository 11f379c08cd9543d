"""The ``splitsearch`` command: thin click wrappers around the library.

Every command parses its options, calls one library function and prints.  Errors a user can fix
(bad names, budgets, files: :class:`~splitsearch.errors.SplitsearchError`), a database gone for
longer than a command waits for it (:class:`~splitsearch.errors.StorageUnavailableError`) and
failing files or disks (``OSError``) come out as one line, ``Error: ...``, with exit status 2,
never as a traceback: :func:`main` turns them into that.  Any other exception is a bug and shows as one.
Commands import torch and the rest of the library only when they run, so ``--help`` is quick.

=======================  =====================================================================
:mod:`.options`          the parameter types and the option groups several commands share
:mod:`.candidate`        ``count``, ``fit``, ``archs``: a candidate before it trains
:mod:`.training`         ``train``, ``evaluate``, ``deploy``: a candidate trained
:mod:`.study`            ``run``, ``confirm``, ``export``, ``report``, ``dashboard``: a study
:mod:`.database`         ``db upgrade``, ``db check``: the store's tables
:mod:`.logs`             the library's log lines, written above the progress bars
=======================  =====================================================================
"""

from __future__ import annotations

import sys

import click

from splitsearch import __version__
from splitsearch.cli.candidate import archs, count, fit
from splitsearch.cli.database import db
from splitsearch.cli.logs import logs_above_progress_bars
from splitsearch.cli.study import confirm, dashboard, export, report, run
from splitsearch.cli.training import deploy, evaluate, train
from splitsearch.errors import SplitsearchError, StorageUnavailableError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="splitsearch")
def cli() -> None:
    """Search how to split deep networks under a parameter / MACs budget."""


for command in (count, fit, train, evaluate, run, confirm, export, deploy, report, dashboard, db, archs):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command; report user errors in one line and exit 2."""
    try:
        # Outside standalone mode click returns the code of an ``Exit`` instead of raising it.
        with logs_above_progress_bars():
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
        click.echo(f"Error: {one_line(error)}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def one_line(error: BaseException) -> str:
    """An error's message on one line (a database driver's message spans several)."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())
