"""The report's HTML page: a summary, then every figure of :mod:`.draw` or the note that stands in for it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from splitsearch.report.data import NothingToDraw, summary_lines
from splitsearch.report.draw import figure_functions
from splitsearch.search.confirm import ConfirmedCandidate

Section = tuple[str, go.Figure | str]
"""A report section: its title and either its figure or the note that says why it is missing."""


def build_figures(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate] = ()) -> list[tuple[str, go.Figure]]:
    """The report's figures as ``(title, figure)``, leaving out those the study cannot show yet.

    For a notebook or a dashboard; :func:`write_report` also says why a figure is missing.
    ``confirmed``: the study's confirmation summaries (:func:`splitsearch.search.confirm.summarize`).
    """
    return [(title, content) for title, content in sections(study, confirmed) if isinstance(content, go.Figure)]


def write_report(study: optuna.Study, path: str | Path, confirmed: Sequence[ConfirmedCandidate] = ()) -> Path:
    """Write the study's report to ``path`` as one HTML file that opens offline, and return the path.

    plotly.js is embedded once, in the page's head, and only when there is a figure to draw: the
    file can be mailed or archived beside the database without a network or a CDN.
    """
    path = Path(path)
    parts = sections(study, confirmed)
    has_figure = any(isinstance(content, go.Figure) for _, content in parts)
    plotlyjs = f'<script type="text/javascript">{get_plotlyjs()}</script>' if has_figure else ""
    name = html.escape(study.study_name)
    body = "\n".join(_section_html(title, content) for title, content in parts)
    summary = "<ul>\n" + "\n".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(study, confirmed))
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>splitsearch report: {name}</title>\n{plotlyjs}\n</head>\n"
        '<body style="font-family: sans-serif; max-width: 1100px; margin: auto;">\n'
        f"<h1>splitsearch report: {name}</h1>\n{summary}\n</ul>\n{body}\n</body>\n</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def sections(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> list[Section]:
    """Every section of the report in order, each drawn once and titled."""
    found: list[Section] = []
    for title, draw in figure_functions(study, confirmed):
        try:
            figure = draw(study)
        except NothingToDraw as nothing:
            found.append((title, str(nothing)))
        else:
            found.append((title, figure.update_layout(title=title)))
    return found


def _section_html(title: str, content: go.Figure | str) -> str:
    """One section: its title over its figure (plotly.js comes from the page's head) or its note."""
    if isinstance(content, str):
        return f"<h2>{html.escape(title)}</h2>\n<p><em>{html.escape(content)}</em></p>"
    figure = content.to_html(full_html=False, include_plotlyjs=False, default_height="500px")
    return f"<h2>{html.escape(title)}</h2>\n{figure}"
