"""``splitsearch db``: the store's own tables beside Optuna's, created, upgraded and checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from splitsearch.cli.options import runs_dir_option, storage_option


@click.group()
def db() -> None:
    """The store's own tables (beside Optuna's, in the same database): upgrade them, check them against Optuna's."""


@db.command("upgrade")
@storage_option
def db_upgrade(storage: str) -> None:
    """Create or migrate the store's tables (Alembic, own version table)."""
    from splitsearch.search.run import open_store
    from splitsearch.store.storage import open_storage
    from splitsearch.store.urls import mask_url

    open_store(open_storage(storage))  # opening checks the URL and creates Optuna's tables too
    click.echo(f"store tables of {mask_url(storage)} are up to date")


@db.command("check")
@click.option("--study", "study_name", help="Check this study only [default: every study of the storage].")
@storage_option
@runs_dir_option
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
    from splitsearch.search.consistency import check_storage, repair as mend

    findings = check_storage(storage, study_name, runs_dir)
    repairs = mend(findings) if repair else []
    remaining = check_storage(storage, study_name, runs_dir) if repair else findings
    if as_json:
        click.echo(json.dumps({"findings": [finding.to_dict() for finding in findings],
                               "repairs": [done.to_dict() for done in repairs],
                               "remaining": [finding.to_dict() for finding in remaining]}, indent=2))
    else:
        click.echo("\n".join(check_lines(findings, repairs, remaining)))
    raise click.exceptions.Exit(1 if remaining else 0)


def check_lines(findings: list[Any], repairs: list[Any], remaining: list[Any]) -> list[str]:
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


