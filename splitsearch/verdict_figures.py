"""The report's verdict table and calibration figure: a data function and a drawing function each.

The verdict table goes above the report's figures: before anyone reads a scatter plot, the page
says whether the confirmed pick beats the undivided network and the paper's baselines, with the
paired interval (:mod:`splitsearch.search.verdict`).  The calibration figure shows accuracy
against the expected calibration error for every completed trial: its ensemble and each of its
members, joined by a line, so a split whose ensemble is better calibrated than its members (or
than the undivided network) shows at a glance.  Data functions return plain rows; drawing
functions turn rows into HTML or a plotly figure, and know nothing of Optuna.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from splitsearch.search.confirm import load_verdicts
from splitsearch.search.record import TrialRecord, trial_accuracy

_OUTCOME_COLOURS = {"better": "#1a7f37", "worse": "#cf222e", "not distinguishable": "#9a6700"}


def verdict_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per verdict ``confirm`` recorded: baseline, metric, outcome, difference, interval, seeds, sentence."""
    return [{"pick": verdict.pick_trial, "baseline": verdict.baseline, "metric": verdict.metric,
             "outcome": verdict.outcome, "difference": verdict.mean, "low": verdict.low, "high": verdict.high,
             "seeds": len(verdict.seeds), "seeds_to_resolve": verdict.seeds_needed, "sentence": verdict.sentence()}
            for verdict in load_verdicts(study)]


def verdict_table_html(rows: Sequence[dict[str, Any]]) -> str:
    """The verdict rows as a self-contained HTML table (a paragraph saying how to get one when there are none)."""
    if not rows:
        return ("<p><b>Verdict:</b> none yet. Run <code>splitsearch confirm</code> to retrain the pick and the "
                "baselines with further seeds and compare them seed by seed.</p>")
    header = "".join(f"<th>{name}</th>" for name in ("baseline", "metric", "verdict", "paired seeds",
                                                       "seeds to resolve 1 point"))
    lines = []
    for row in rows:
        colour = _OUTCOME_COLOURS.get(row["outcome"], "inherit")
        resolve = "-" if row["seeds_to_resolve"] is None else str(row["seeds_to_resolve"])
        lines.append(f"<tr><td>{html.escape(row['baseline'])}</td><td>{html.escape(row['metric'])}</td>"
                     f'<td style="color: {colour}">{html.escape(row["sentence"])}</td>'
                     f"<td>{row['seeds']}</td><td>{resolve}</td></tr>")
    return (f"<h2>Verdict of the confirmed pick (trial {rows[0]['pick']})</h2>\n"
            "<p>Pick minus baseline, paired by seed; 95 % intervals from the t-distribution.</p>\n"
            f'<table style="border-collapse: collapse" border="1" cellpadding="4"><tr>{header}</tr>'
            + "".join(lines) + "</table>")


def calibration_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Per completed trial that measured its calibration: the ensemble's and the members' accuracy and ECE."""
    points = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.from_trial(trial)
        if record.val_ece is None or record.is_repeat:
            continue
        points.append({"trial": trial.number, "label": record.baseline or f"trial {trial.number}",
                       "accuracy": trial_accuracy(trial), "ece": record.val_ece, "nll": record.val_nll,
                       "member_accuracies": list(record.member_val_accuracies or ()),
                       "member_eces": list((record.member_val_calibration or {}).get("ece", ()))})
    return points


def calibration_figure(points: Sequence[dict[str, Any]]) -> go.Figure:
    """Accuracy (y) against ECE (x): each trial's ensemble as a large marker, its members as small ones."""
    figure = go.Figure()
    for point in points:
        members = list(zip(point["member_eces"], point["member_accuracies"]))
        for ece, accuracy in members:  # a line from each member to its ensemble
            figure.add_trace(go.Scatter(x=[ece, point["ece"]], y=[accuracy, point["accuracy"]], mode="lines",
                                        line={"color": "lightgray", "width": 1}, hoverinfo="skip", showlegend=False))
    figure.add_trace(go.Scatter(
        x=[ece for point in points for ece in point["member_eces"]],
        y=[accuracy for point in points for accuracy in point["member_accuracies"][:len(point["member_eces"])]],
        mode="markers", name="members", marker={"size": 6, "color": "gray"},
        hovertext=[f"{point['label']}, member {index + 1}" for point in points
                   for index in range(len(point["member_eces"]))]))
    figure.add_trace(go.Scatter(
        x=[point["ece"] for point in points], y=[point["accuracy"] for point in points], mode="markers",
        name="ensemble", marker={"size": 11}, hovertext=[f"{point['label']}: NLL {point['nll']:.3f}" for point in points]))
    return figure.update_layout(xaxis_title="validation ECE (15 bins; lower is better)",
                                yaxis_title="validation accuracy")
