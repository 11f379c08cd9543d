"""Result files: every figure a benchmark measures, with the command and the environment that gave it.

A benchmark calls :func:`save` once with its rows; the file lands in
``benchmarks/results/<date>-<machine>/<name>.json``.  The documentation's tables are generated
from these files (``docs/hooks/result_tables.py``), so no figure is typed by hand into the README or the
site.  A file holds::

    {"name": ..., "command": "python benchmarks/x.py --flag", "date": "2026-12-07",
     "machine": "cpu2", "environment": {...}, "columns": [...], "rows": [{...}, ...], "notes": "..."}

``machine`` is ``cpu<N>`` (N logical CPUs) without a GPU and the GPU's short name with one
(``h100``, ``h200``); ``SPLITSEARCH_MACHINE`` overrides it.  ``SPLITSEARCH_RESULTS`` names another
folder for the files (the GPU suite keeps them in its output folder).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable

# SPLITSEARCH_RESULTS moves the results elsewhere (benchmarks/gpu_suite.sh: into its --out folder; a test run).
RESULTS = Path(os.environ.get("SPLITSEARCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine_name() -> str:
    """A short name for this machine's kind: ``cpu2``, ``h100``, ... (``SPLITSEARCH_MACHINE`` wins)."""
    if name := os.environ.get("SPLITSEARCH_MACHINE"):
        return name
    gpu = _gpu_name()
    if gpu:
        found = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", gpu)
        return (found.group(1) if found else gpu.split()[-1]).lower()
    return f"cpu{os.cpu_count()}"


def _gpu_name() -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def environment() -> dict[str, Any]:
    """What the figures depend on: Python, the libraries that are imported, the processor and GPU."""
    found: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                             "cpus": os.cpu_count(), "processor": _processor(), "gpu": _gpu_name()}
    for module in ("torch", "torchvision", "optuna", "numpy", "torchmetrics", "sqlalchemy"):
        if module in sys.modules:
            found[module] = getattr(sys.modules[module], "__version__", None)
    try:
        found["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return found


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def command_line() -> str:
    """The command that ran this benchmark, as a user would type it from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def save(name: str, rows: Iterable[dict[str, Any]], *, notes: str = "", directory: Path | None = None,
         date: str | None = None) -> Path:
    """Write ``rows`` (one dict per table row, same keys) as result file ``name``; returns its path."""
    rows = list(rows)
    date = date or datetime.date.today().isoformat()
    machine = machine_name()
    folder = directory or RESULTS / f"{date}-{machine}"
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    document = {"name": name, "command": command_line(), "date": date, "machine": machine,
                "environment": environment(), "columns": columns, "rows": rows, "notes": notes}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document, indent=1, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a result file")


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def latest(name: str, root: Path = RESULTS) -> dict[str, Any] | None:
    """The newest result file called ``name`` (by its folder's date), or None."""
    found = sorted(root.glob(f"*/{name}.json"), key=lambda path: path.parent.name)
    return load(found[-1]) if found else None
