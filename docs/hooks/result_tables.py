"""Benchmark tables generated from result files (``benchmarks/results/<date>-<machine>/<name>.json``).

The files are written by ``benchmarks/resultfiles.py``: each holds the command that produced
it, the date, the machine, the environment, the columns and the rows.  A table here prints the
rows as they are and, under them, the command and the environment, so every figure on the site
says where it came from.  ``benchmarks/tables/*.json`` (tables of trainings for the sampler
replays) are read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tables import log, markdown_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _find(name: str, machine: str | None) -> Path | None:
    """The newest result file ``name`` (of ``machine`` if given): folders sort by their date."""
    found = sorted(RESULTS.glob(f"*-{machine}/{name}.json" if machine else f"*/{name}.json"),
                   key=lambda path: path.parent.name)
    return found[-1] if found else None


def _environment_text(environment: dict[str, Any]) -> str:
    parts = []
    if environment.get("gpu"):
        parts.append(environment["gpu"])
    if environment.get("cpus"):
        parts.append(f"{environment['cpus']} CPUs" + (f" ({environment['processor']})" if environment.get("processor")
                                                      else ""))
    parts += [f"{module} {environment[module]}" for module in ("torch", "optuna", "onnxruntime")
              if environment.get(module)]
    if environment.get("load_average_1min") is not None:
        parts.append(f"load average {environment['load_average_1min']}")
    return ", ".join(parts)


def provenance(document: dict[str, Any], path: Path) -> str:
    """The lines under a table: command, date and machine, environment, file, and the file's notes."""
    line = (f"*Command:* `{document['command']}` &middot; *run* {document['date']} on `{document['machine']}`"
            + (f" ({_environment_text(document.get('environment') or {})})" if document.get("environment") else "")
            + f" &middot; *file:* `{path.relative_to(ROOT)}`")
    notes = document.get("notes")
    return line + ("\n\n??? note \"Notes of this result file\"\n    " + notes if notes else "")


def result(name: str, where: str, machine: str | None = None, columns: str | None = None,
           select: str | None = None, optional: str | None = None, command: str | None = None) -> str:
    """The table of result file ``name``.

    Options (``KEY=VALUE`` in the marker): ``machine`` picks the machine's newest file;
    ``columns`` (comma-separated) prints those columns only; ``select=COLUMN=VALUE`` keeps the
    rows whose COLUMN equals VALUE; ``optional=yes`` prints a note instead of warning when there
    is no such file yet, naming ``command`` as the way to make it.
    """
    path = _find(name, machine)
    if path is None:
        if optional:
            return (f'!!! note "No result file yet"\n    There is no `{name}` result file yet'
                    + (f": `{command}` writes it." if command else "."))
        log.warning(f"{where}: no result file {name!r}" + (f" of machine {machine!r}" if machine else "")
                    + f" under {RESULTS.relative_to(ROOT)}")
        return ""
    document = json.loads(path.read_text())
    rows = document["rows"]
    if select:
        column, value = select.split("=", 1)
        rows = [row for row in rows if str(row.get(column)) == value]
        if not rows:
            log.warning(f"{where}: result file {path.relative_to(ROOT)} has no row with {column} = {value!r}")
    shown = columns.split(",") if columns else [column for column in document["columns"]
                                                 if not select or column != select.split("=", 1)[0]]
    missing = [column for column in shown if column not in document["columns"]]
    if missing:
        log.warning(f"{where}: result file {path.relative_to(ROOT)} has no column {missing[0]!r}")
    table = markdown_table(shown, ([row.get(column) for column in shown] for row in rows))
    return table + "\n\n" + provenance(document, path)


def split_table(relative: str, where: str) -> str:
    """A table of trainings written by ``benchmarks/split_table.py``: per configuration, params and accuracy."""
    path = ROOT / relative
    if not path.is_file():
        log.warning(f"{where}: no split table {relative}")
        return ""
    document = json.loads(path.read_text())
    rows = sorted(document["rows"], key=lambda row: -row["mean"])
    table = markdown_table(
        ("S", "wd_rule", "lambda_cot", "params", "MACs", "validation accuracy, mean (%)", "sd (points)", "seeds"),
        ((row["S"], row.get("wd_rule"), row.get("lambda_cot"), row["params"], row["macs"], 100 * row["mean"],
          100 * row["sd"], len(row["runs"])) for row in rows))
    study = document.get("study", {})
    return (table + f"\n\n*Command:* `{document['command'].strip()}` &middot; *made* {document.get('made')} on "
            f"{document.get('machine')} (torch {document.get('torch')}) &middot; *file:* `{relative}` &middot; "
            f"{study.get('arch')} on {study.get('dataset')} fitted to {study.get('budget_params')} parameters, "
            f"{document.get('epochs')} epochs, seeds {', '.join(str(seed) for seed in document.get('seeds', []))}.")


def results_index(where: str) -> str:
    """Every result file: its folder, name and command."""
    paths = sorted(RESULTS.glob("*/*.json"), key=lambda path: (path.parent.name, path.name))
    if not paths:
        log.warning(f"{where}: no result files under {RESULTS.relative_to(ROOT)}")
    return markdown_table(("folder", "result", "command"),
                          ((f"`{path.parent.name}`", path.stem, f"`{json.loads(path.read_text())['command']}`")
                           for path in paths))
