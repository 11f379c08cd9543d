"""Markdown tables and numbers as the generated parts of the site print them."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Sequence

# A warning on a logger under "mkdocs" fails `mkdocs build --strict`.
log = logging.getLogger("mkdocs.plugins.splitsearch")


def cell(value: Any) -> str:
    """One table cell: counts as 11.01M or 5.249G, other whole numbers with separators, others at most 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer():
        for scale, suffix in ((1e9, "G"), (1e6, "M")):  # counts such as params and MACs, as the papers print them
            if abs(value) >= scale:
                return f"{value / scale:.4g}{suffix}"
        return f"{int(value):,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value:g}"
        if abs(value) < 1e-3:
            return f"{value:.2g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")  # as the benchmark rounded it, at most 4 decimals
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
