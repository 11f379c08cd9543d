"""The study report: plotly figures of a split search, gathered in one self-contained HTML page.

A search over split configurations answers a few questions, one figure each: did the search
settle (optimisation history); what accuracy a parameter count buys and how the baselines
compare (accuracy vs parameters, with each trial's standard-error bar, and the Pareto front of a
multi-objective study with the baselines on it and its hypervolume); whether the winner stays
ahead when retrained with other seeds (confirmed accuracy); which choices matter (parameter
importances, accuracy by S and by weight-decay rule); and what the pruner stopped (intermediate
values).  Optuna's own plots draw a figure wherever they cover it.

=======================  =====================================================================
:mod:`.data`             what each figure shows, without plotly (tested on its own)
:mod:`.draw`             each figure drawn from its data, or by Optuna
:mod:`.page`             the HTML page: a summary, then the figures
=======================  =====================================================================

A figure that cannot be drawn for a study (no completed trial yet, nothing reported) becomes a
one-line note in the page instead of an error, so a report can be written at any moment of a
search, from any worker.
"""

from __future__ import annotations

from splitsearch.lazy import lazy_names

__all__ = ["build_figures", "write_report"]
# From :mod:`.page` when first asked for, so that :mod:`.data` loads without plotly.
__getattr__ = lazy_names(__name__, {"build_figures": "page", "write_report": "page"})
