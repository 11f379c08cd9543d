"""The report's figures drawn with plotly, each from its data function (:mod:`.data`) or by Optuna.

A drawing function takes the study and returns a figure; where the study has nothing to show,
its data function raises :class:`~.data.NothingToDraw` and the page prints the reason instead.
"""

from __future__ import annotations

import functools
import html
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go

from splitsearch.report import data
from splitsearch.report.data import ACCURACY, NothingToDraw
from splitsearch.search.confirm import ConfirmedCandidate
from splitsearch.search.record import StudyRecord, TrialRecord
from splitsearch.units import format_count

_HOVER = "%{hovertext}<br>" + ACCURACY + " %{y:.4f}<extra></extra>"
# How each kind of series is drawn; baselines take black markers of their own shape, one each.
_MARKERS = {"searched": {"symbol": "circle", "size": 8}, "pareto": {"symbol": "star", "size": 13},
            "pruned": {"symbol": "x", "size": 8, "color": "grey"}}
_BASELINE_SYMBOLS = ("diamond", "square", "cross", "triangle-up", "x", "pentagon", "hexagon", "triangle-down")

Draw = Callable[[optuna.Study], go.Figure]


def figure_functions(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> list[tuple[str, Draw]]:
    """The figures this study calls for, titled: a Pareto front only when there are two objectives to trade."""
    functions: list[tuple[str, Draw]] = [
        ("Optimisation history", optimisation_history),
        ("Validation accuracy vs parameters", accuracy_vs_params),
    ]
    if data.is_multi_objective(study):
        functions.append((f"Pareto front: validation accuracy vs {data.cost_label(study)}", pareto_front))
    functions += [
        ("Confirmed validation accuracy (mean and sd over seeds)", functools.partial(confirmed_accuracy,
                                                                                    confirmed=confirmed)),
        ("Validation accuracy vs calibration error (ensemble and members)", calibration),
        ("Parameter importances", param_importances),
        ("Validation accuracy by S", functools.partial(accuracy_by, param="S")),
        ("Validation accuracy by wd_rule", functools.partial(accuracy_by, param="wd_rule")),
    ]
    if any(TrialRecord.from_trial(trial).class_groups for trial in study.get_trials(deepcopy=False)):
        functions += [
            ("Validation accuracy by semantic groups G", functools.partial(accuracy_by, param="groups")),
            ("Learned class groups (semantic split)", class_groups),
        ]
    functions.append(("Intermediate values (pruning)", intermediate_values))
    return functions


def optimisation_history(study: optuna.Study) -> go.Figure:
    """Accuracy trial after trial: whether the sampler still finds better splits or has settled."""
    data.completed(study)
    if data.is_multi_objective(study):
        return optuna.visualization.plot_optimization_history(study, target=data.accuracy, target_name=ACCURACY)
    objectives = StudyRecord.from_study(study).objectives or ("accuracy",)
    return optuna.visualization.plot_optimization_history(
        study, target_name="validation NLL" if objectives == ("nll",) else ACCURACY)


# How the verdict table colours each outcome.
_OUTCOME_COLOURS = {"better": "#1a7f37", "worse": "#cf222e", "not distinguishable": "#9a6700"}


def verdict_table_html(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`.data.verdict_rows` as a self-contained HTML table (a paragraph saying how to get one when empty)."""
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


def calibration(study: optuna.Study) -> go.Figure:
    """:func:`.data.calibration_points`: accuracy (y) against ECE (x), each trial's ensemble as a large marker,
    its members as small ones joined to it by a line."""
    points = data.calibration_points(study)
    figure = go.Figure()
    for point in points:
        for ece, member_accuracy in zip(point["member_eces"], point["member_accuracies"]):
            figure.add_trace(go.Scatter(x=[ece, point["ece"]], y=[member_accuracy, point["accuracy"]], mode="lines",
                                        line={"color": "lightgray", "width": 1}, hoverinfo="skip", showlegend=False))
    members = [(point, index) for point in points for index in range(len(point["member_eces"]))]
    figure.add_trace(go.Scatter(
        x=[point["member_eces"][index] for point, index in members],
        y=[point["member_accuracies"][index] for point, index in members], mode="markers", name="members",
        marker={"size": 6, "color": "gray"}, hovertext=[f"{point['label']}, member {index + 1}" for point, index in members]))
    figure.add_trace(go.Scatter(
        x=[point["ece"] for point in points], y=[point["accuracy"] for point in points], mode="markers",
        name="ensemble", marker={"size": 11},
        hovertext=[f"{point['label']}: NLL {point['nll']:.3f}" for point in points]))
    return figure.update_layout(xaxis_title="validation ECE (15 bins; lower is better)", yaxis_title=ACCURACY)


def accuracy_vs_params(study: optuna.Study) -> go.Figure:
    """:func:`.data.accuracy_vs_params`, on a log axis, with the budget as a dashed line."""
    content = data.accuracy_vs_params(study)
    figure = go.Figure([_scatter(series, index) for index, series in
                        enumerate(s for s in content.series if s.kind != "baseline")])
    _add_baselines(figure, [series for series in content.series if series.kind == "baseline"])
    if content.budget:
        figure.add_vline(x=content.budget, line_dash="dash", line_color="red", showlegend=True,
                         name=f"params budget ({format_count(content.budget)})")
    figure.update_xaxes(type="log", title_text="parameters")
    return figure.update_yaxes(title_text=ACCURACY)


def _scatter(series: data.Series, index: int = 0, marker: dict[str, object] | None = None) -> go.Scatter:
    """A series' points with their standard-error bars: two points whose bars overlap are not told apart."""
    return go.Scatter(
        x=[point.x for point in series.points], y=[point.y for point in series.points],
        error_y={"type": "data", "array": [point.error for point in series.points], "visible": True, "thickness": 1},
        mode="markers", name=series.name, marker=marker or _MARKERS.get(series.kind, {}),
        hovertext=[_hover(point.hover) for point in series.points], hovertemplate=_HOVER,
    )


def _add_baselines(figure: go.Figure, baselines: Sequence[data.Series]) -> None:
    """Each baseline as its own legend entry and marker shape, black: the yardstick, never a label on top of another."""
    for index, series in enumerate(baselines):
        symbol = _BASELINE_SYMBOLS[index % len(_BASELINE_SYMBOLS)]
        figure.add_trace(_scatter(series, marker={"symbol": symbol, "size": 12, "color": "black"}))


def _hover(lines: Sequence[str]) -> str:
    return "<br>".join(html.escape(line) for line in lines)


def pareto_front(study: optuna.Study) -> go.Figure:
    """The best accuracy for each cost (the study's second objective), with the baselines and the hypervolume.

    Trials the Pareto pruner stopped are a trace apart, at their accuracy when stopped (:func:`.data.pareto_pruned`).

    Drawn with the cost on a log x axis, so it reads like the accuracy-vs-parameters figure.
    """
    figure = optuna.visualization.plot_pareto_front(
        study, target_names=[data.cost_label(study), ACCURACY],
        targets=lambda trial: (trial.values[1], trial.values[0]))
    _add_baselines(figure, data.pareto_baselines(study))
    if (pruned := data.pareto_pruned(study)).points:
        figure.add_trace(_scatter(pruned))
    figure.add_annotation(text=data.hypervolume(study).text, xref="paper", yref="paper", x=0, y=1.06,
                          showarrow=False, xanchor="left")
    return figure.update_xaxes(type="log")


def confirmed_accuracy(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> go.Figure:
    """:func:`.data.confirmed_accuracy`: confirmed means (bar: sd) beside the search's figures (bar: SE)."""
    content = data.confirmed_accuracy(study, confirmed)
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=list(content.labels), y=list(content.means), mode="markers", name="confirmed mean",
        marker={"symbol": "diamond", "size": 12, "color": "black"},
        error_y={"type": "data", "array": list(content.sds), "visible": True},
        hovertext=list(content.runs), hovertemplate="%{hovertext}<br>mean %{y:.4f}<extra></extra>",
    ))
    figure.add_trace(go.Scatter(
        x=[label for label, _, _ in content.search], y=[value for _, value, _ in content.search], mode="markers",
        name="in the search", marker={"symbol": "circle-open", "size": 10},
        error_y={"type": "data", "visible": True, "thickness": 1, "array": [error for _, _, error in content.search]},
    ))
    figure.update_xaxes(type="category", title_text="candidate (best confirmed mean first)")
    return figure.update_yaxes(title_text=ACCURACY)


def _epoch_curves(study: optuna.Study) -> go.Figure:
    """:func:`.data.epoch_curves`: a multi-objective study's curves, a pruned trial's dashed."""
    figure = go.Figure()
    for curve in data.epoch_curves(study):
        figure.add_trace(go.Scatter(x=list(curve.epochs), y=list(curve.accuracies), mode="lines+markers",
                                    name=f"trial #{curve.trial}" + (" (pruned)" if curve.pruned else ""),
                                    line={"dash": "dash" if curve.pruned else "solid"}))
    figure.update_xaxes(title_text="epoch")
    return figure.update_yaxes(title_text=ACCURACY)


def param_importances(study: optuna.Study) -> go.Figure:
    """Which choices (S, block factors, wd_rule, lambda_cot, training settings) drive accuracy.

    Optuna's default evaluator, PED-ANOVA, cannot rank anything from fewer than two distinct
    completed trials; it then warns and returns equal importances, which would mislead, so such a
    study gets a note.  PED-ANOVA also counts a low target as good and warns whenever a target is
    given: the multi-objective target is the negated accuracy, and that warning is silenced.
    """
    completed = data.completed(study)
    if len(completed) < 2:
        raise NothingToDraw("Parameter importances need at least two completed trials.")
    if len({frozenset(trial.params.items()) for trial in completed}) < 2:
        raise NothingToDraw("All completed trials share one parameter set: there is nothing to compare.")
    target = (lambda trial: -data.accuracy(trial)) if data.is_multi_objective(study) else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*computes the importances of params to achieve low")
        warnings.filterwarnings("error", message=".*importances will be equal")
        try:
            return optuna.visualization.plot_param_importances(study, target=target, target_name=ACCURACY)
        except (ValueError, RuntimeError, UserWarning) as error:
            raise NothingToDraw(f"Optuna could not compute parameter importances: {error}") from error


def accuracy_by(study: optuna.Study, param: str) -> go.Figure:
    """:func:`.data.accuracy_by` as a strip over a box."""
    content = data.accuracy_by(study, param)
    figure = go.Figure(go.Box(
        x=[category for category, _, _ in content.points], y=[value for _, value, _ in content.points],
        name=ACCURACY, boxpoints="all", jitter=0.4, pointpos=0, hoveron="points",
        hovertext=[_hover(lines) for _, _, lines in content.points], hovertemplate=_HOVER,
    ))
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=list(content.categories),
                        title_text=param)
    return figure.update_yaxes(title_text=ACCURACY)


def class_groups(study: optuna.Study) -> go.Figure:
    """:func:`.data.class_groups` as a table."""
    content = data.class_groups(study)
    table = go.Table(header={"values": list(content.header), "align": "left"},
                     cells={"values": [list(column) for column in zip(*content.rows)], "align": "left"},
                     columnwidth=[50, 90, 200, 60, 500])
    return go.Figure(table).update_layout(height=min(160 + 30 * len(content.rows), 900))


def intermediate_values(study: optuna.Study) -> go.Figure:
    """Validation accuracy per epoch of every trial: what the pruner saw when it stopped a trial."""
    if data.is_multi_objective(study):
        return _epoch_curves(study)
    if not any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
        raise NothingToDraw("No trial reported a per-epoch validation accuracy yet.")
    figure = optuna.visualization.plot_intermediate_values(study)
    figure.update_xaxes(title_text="epoch")
    return figure.update_yaxes(title_text=ACCURACY)
