"""The study report: plotly figures of a split search, gathered in one self-contained HTML page.

A search over split configurations answers a few questions, one figure each: did the search
settle (optimisation history); what accuracy a parameter count buys and how the paper's
baselines compare (accuracy vs parameters, with each trial's standard-error bar, and the Pareto
front of a multi-objective study with the baselines on it and its hypervolume); whether the
winner stays ahead when retrained with other seeds (confirmed accuracy); which choices matter
(parameter importances, accuracy by S and by weight-decay rule); and what the pruner stopped
(intermediate values).  Optuna's own plots draw a figure wherever they cover it.  A figure that
cannot be drawn for a study (no completed trial yet, nothing reported) becomes a one-line note in
the page instead of an error, so a report can be written at any moment of a search, from any
worker.
"""

from __future__ import annotations

import functools
import html
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from splitsearch.search.confirm import ConfirmedCandidate
from splitsearch.search.record import StudyRecord, TrialRecord, count_trials, pareto_front, trial_accuracy
from splitsearch.units import format_bytes, format_count, format_duration
from splitsearch.verdict_figures import calibration_figure, calibration_points, verdict_rows, verdict_table_html

ACCURACY = "validation accuracy"
_COST_LABELS = {"params": "parameters", "macs": "MACs", "activation": "activation bytes per image",
                "latency": "latency (ms)"}
# The costs a trial's hover text and the best-trial line show (TrialRecord fields).
_TRIAL_COSTS = {"params": "parameters", "macs": "MACs"}
_HOVER = "%{hovertext}<br>" + ACCURACY + " %{y:.4f}<extra></extra>"
# The hypervolume's reference point: accuracy 0 and this many times the largest cost of a completed
# trial, so the costliest point of the front still dominates a strip of the box.
_REFERENCE_COST_FACTOR = 1.1

Section = tuple[str, go.Figure | str]
"""A report section: its title and either its figure or the note that says why it is missing."""


class _Skipped(Exception):
    """Raised by a figure function that has nothing to draw for this study.

    Its message, a short note for the reader, takes the figure's place in the report.
    """


def build_figures(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate] = ()) -> list[tuple[str, go.Figure]]:
    """The report's figures as ``(title, figure)``, leaving out those the study cannot show yet.

    For a notebook or a dashboard; :func:`write_report` also says why a figure is missing.
    ``confirmed``: the study's confirmation summaries (:func:`splitsearch.search.confirm.summarize`).
    """
    return [(title, content) for title, content in _sections(study, confirmed) if isinstance(content, go.Figure)]


def write_report(study: optuna.Study, path: str | Path, confirmed: Sequence[ConfirmedCandidate] = ()) -> Path:
    """Write the study's report to ``path`` as one HTML file that opens offline, and return the path.

    plotly.js is embedded once, in the page's head, and only when there is a figure to draw: the
    file can be mailed or archived beside the database without a network or a CDN.
    """
    path = Path(path)
    sections = _sections(study, confirmed)
    has_figure = any(isinstance(content, go.Figure) for _, content in sections)
    plotlyjs = f'<script type="text/javascript">{get_plotlyjs()}</script>' if has_figure else ""
    name = html.escape(study.study_name)
    body = "\n".join(_section_html(title, content) for title, content in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>splitsearch report: {name}</title>\n{plotlyjs}\n</head>\n"
        '<body style="font-family: sans-serif; max-width: 1100px; margin: auto;">\n'
        f"<h1>splitsearch report: {name}</h1>\n{_summary_html(study, confirmed)}\n"
        f"{verdict_table_html(verdict_rows(study))}\n{body}\n</body>\n</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _sections(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> list[Section]:
    """Every section of the report in order, each drawn once and titled."""
    sections: list[Section] = []
    for title, draw in _figure_functions(study, confirmed):
        try:
            figure = draw(study)
        except _Skipped as skipped:
            sections.append((title, str(skipped)))
        else:
            sections.append((title, figure.update_layout(title=title)))
    return sections


def _figure_functions(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]
                      ) -> list[tuple[str, Callable[[optuna.Study], go.Figure]]]:
    """The figures this study calls for: a Pareto front only when there are two objectives to trade."""
    functions: list[tuple[str, Callable[[optuna.Study], go.Figure]]] = [
        ("Optimisation history", _optimisation_history),
        ("Validation accuracy vs parameters", _accuracy_vs_params),
    ]
    if _is_multi_objective(study):
        functions.append((f"Pareto front: validation accuracy vs {_cost_label(study)}", _pareto_front))
    functions += [
        ("Confirmed validation accuracy (mean and sd over seeds)", functools.partial(_confirmed, confirmed=confirmed)),
        ("Validation accuracy vs calibration error (ensemble and members)", _calibration),
        ("Parameter importances", _param_importances),
        ("Validation accuracy by S", functools.partial(_accuracy_by, param="S")),
        ("Validation accuracy by wd_rule", functools.partial(_accuracy_by, param="wd_rule")),
    ]
    if any(TrialRecord.from_trial(trial).class_groups for trial in study.get_trials(deepcopy=False)):
        functions += [
            ("Validation accuracy by semantic groups G", functools.partial(_accuracy_by, param="groups")),
            ("Learned class groups (semantic split)", _class_groups),
        ]
    functions.append(("Intermediate values (pruning)", _intermediate_values))
    return functions


def _calibration(study: optuna.Study) -> go.Figure:
    """Accuracy against ECE, each ensemble beside its members (:mod:`splitsearch.verdict_figures`)."""
    points = calibration_points(study)
    if not points:
        raise _Skipped("No completed trial recorded its calibration (recorded since splitsearch measures ECE).")
    return calibration_figure(points)


def _optimisation_history(study: optuna.Study) -> go.Figure:
    """Accuracy trial after trial: whether the sampler still finds better splits or has settled."""
    _completed(study)
    if _is_multi_objective(study):
        return optuna.visualization.plot_optimization_history(study, target=_accuracy, target_name=ACCURACY)
    objectives = StudyRecord.from_study(study).objectives or ("accuracy",)
    return optuna.visualization.plot_optimization_history(
        study, target_name="validation NLL" if objectives == ("nll",) else ACCURACY)


def _accuracy_vs_params(study: optuna.Study) -> go.Figure:
    """What accuracy each parameter count buys, against the budget and the paper's baselines.

    The point of splitting is a better accuracy for the same (or a smaller) size, so the
    baselines (undivided network, the paper's S=2 and S=4) are drawn apart and labelled, and a
    multi-objective study's Pareto front is highlighted.
    """
    trials = [trial for trial in _completed(study) if _count(trial, "params") is not None]
    if not trials:
        raise _Skipped("No completed trial recorded its parameter count (user attr 'params').")
    pareto = {trial.number for trial in pareto_front(study)} if _is_multi_objective(study) else set()
    searched = [trial for trial in trials if not TrialRecord.from_trial(trial).is_baseline]
    groups = [
        ("searched trials", [t for t in searched if t.number not in pareto], {"symbol": "circle", "size": 8}),
        ("Pareto front", [t for t in searched if t.number in pareto], {"symbol": "star", "size": 13}),
    ]
    params = functools.partial(_count, key="params")
    figure = go.Figure()
    for name, group, marker in groups:
        if group:
            figure.add_trace(_scatter(group, name, marker, params))
    baselines = [trial for trial in trials if TrialRecord.from_trial(trial).is_baseline]
    if baselines:
        figure.add_trace(_baselines_scatter(baselines, params))
    budget = StudyRecord.from_study(study).budget_params
    if budget:
        figure.add_vline(
            x=budget, line_dash="dash", line_color="red", name=f"params budget ({format_count(budget)})",
            showlegend=True,
        )
    figure.update_xaxes(type="log", title_text="parameters")
    return figure.update_yaxes(title_text=ACCURACY)


def _scatter(trials: list[FrozenTrial], name: str, marker: dict[str, object],
             cost: Callable[[FrozenTrial], float | None]) -> go.Scatter:
    """Completed trials at (``cost``, accuracy), each point's hover naming its trial and split.

    The vertical bar is the accuracy's binomial standard error on the validation split: two
    points whose bars overlap are not told apart by this search.
    """
    return go.Scatter(
        x=[cost(trial) for trial in trials],
        y=[_accuracy(trial) for trial in trials],
        error_y={"type": "data", "array": [_standard_error(trial) for trial in trials],
                 "visible": True, "thickness": 1},
        mode="markers",
        name=name,
        marker=marker,
        hovertext=[_describe(trial) for trial in trials],
        hovertemplate=_HOVER,
    )


def _baselines_scatter(baselines: list[FrozenTrial], cost: Callable[[FrozenTrial], float | None]) -> go.Scatter:
    """The baselines at (``cost``, accuracy) as black diamonds labelled with their names: the yardstick."""
    trace = _scatter(baselines, "baselines", {"symbol": "diamond", "size": 13, "color": "black"}, cost)
    return trace.update(mode="markers+text", text=[TrialRecord.from_trial(t).baseline for t in baselines],
                        textposition="top center")


def _confirmed(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> go.Figure:
    """Each confirmed candidate's mean accuracy over new seeds (bar: sd) beside its search result (bar: SE).

    The search's figure is the best of many noisy draws; the confirmed mean is what the
    candidate is worth.  The export picks by the confirmed mean.
    """
    if not confirmed:
        raise _Skipped(f"No confirmation runs yet: splitsearch confirm --study {study.study_name} retrains the best "
                       "candidates and the baselines with other seeds.")
    trials = study.get_trials(deepcopy=False)
    labels = [f"#{summary.trial_number} {summary.baseline or _split(trials[summary.trial_number])}"
              for summary in confirmed]
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=labels, y=[summary.mean for summary in confirmed], mode="markers", name="confirmed mean",
        marker={"symbol": "diamond", "size": 12, "color": "black"},
        error_y={"type": "data", "array": [summary.sd or 0.0 for summary in confirmed], "visible": True},
        hovertext=[f"{len(summary.accuracies)} runs, seeds {', '.join(map(str, summary.seeds))}: "
                   + ", ".join(f"{value:.4f}" for value in summary.accuracies) for summary in confirmed],
        hovertemplate="%{hovertext}<br>mean %{y:.4f}<extra></extra>",
    ))
    searched = [(label, summary) for label, summary in zip(labels, confirmed) if summary.search_accuracy is not None]
    figure.add_trace(go.Scatter(
        x=[label for label, _ in searched],
        y=[summary.search_accuracy for _, summary in searched], mode="markers", name="in the search",
        marker={"symbol": "circle-open", "size": 10},
        error_y={"type": "data", "visible": True, "thickness": 1,
                 "array": [_standard_error(trials[summary.trial_number]) for _, summary in searched]},
    ))
    figure.update_xaxes(type="category", title_text="candidate (best confirmed mean first)")
    return figure.update_yaxes(title_text=ACCURACY)


def _pareto_front(study: optuna.Study) -> go.Figure:
    """The best accuracy for each cost (parameters or MACs, the study's second objective), with the baselines.

    The baselines are labelled on it, as in the accuracy-vs-parameters figure, so it shows which
    splits beat the undivided network and the paper's defaults at their cost; the front's
    hypervolume (:func:`_hypervolume_text`) sums it up in one figure.  Drawn with the cost on a
    log x axis, so the two figures read alike.
    """
    baselines = [trial for trial in _completed(study) if TrialRecord.from_trial(trial).is_baseline]
    figure = optuna.visualization.plot_pareto_front(
        study, target_names=[_cost_label(study), ACCURACY], targets=lambda trial: (trial.values[1], trial.values[0])
    )
    if baselines:
        figure.add_trace(_baselines_scatter(baselines, lambda trial: trial.values[1]))
    figure.add_annotation(text=_hypervolume_text(study), xref="paper", yref="paper", x=0, y=1.06,
                          showarrow=False, xanchor="left")
    return figure.update_xaxes(type="log")


def _hypervolume_text(study: optuna.Study) -> str:
    """``hypervolume 0.814 (reference point: accuracy 0, 4.4M parameters, 1.1 x the largest)``: the front in one figure.

    Two objectives, so computed here in a few lines (Optuna's hypervolume module is private):
    the area the front dominates up to the reference point, accuracy 0 and
    :data:`_REFERENCE_COST_FACTOR` x the largest cost of a completed trial, divided by the area of
    the box from cost 0 and accuracy 0 to cost ``reference`` and accuracy 1.  That is the mean,
    over every cost budget from 0 to the reference, of the best accuracy the front offers
    within it (1 would be perfect accuracy at no cost).  The reference follows the costliest
    trial, so two studies' hypervolumes compare only where that is the same.
    """
    reference = _REFERENCE_COST_FACTOR * max(trial.values[1] for trial in _completed(study))
    points = sorted((trial.values[1], _accuracy(trial)) for trial in pareto_front(study))
    area, best = 0.0, 0.0
    for (cost, accuracy), next_cost in zip(points, [cost for cost, _ in points[1:]] + [reference]):
        best = max(best, accuracy)
        area += (next_cost - cost) * best
    objectives = StudyRecord.from_study(study).objectives or ()
    cost_text = (format_bytes(int(reference)) if objectives[1:] == ("activation",)
                 else f"{reference:.3g}" if objectives[1:] == ("latency",) else format_count(int(reference)))
    return (f"hypervolume {area / reference:.3f} (reference point: accuracy 0, {cost_text} {_cost_label(study)}, "
            f"{_REFERENCE_COST_FACTOR:g} x the largest)")


def _param_importances(study: optuna.Study) -> go.Figure:
    """Which choices (S, block factors, wd_rule, lambda_cot, training settings) drive accuracy.

    Optuna's default evaluator, PED-ANOVA, cannot rank anything from fewer than two distinct
    completed trials; it then warns and returns equal importances, which would mislead, so such a
    study gets a note.  PED-ANOVA also counts a low target as good and warns whenever a target is
    given: the multi-objective target is the negated accuracy, and that warning is silenced.
    """
    completed = _completed(study)
    if len(completed) < 2:
        raise _Skipped("Parameter importances need at least two completed trials.")
    if len({frozenset(trial.params.items()) for trial in completed}) < 2:
        raise _Skipped("All completed trials share one parameter set: there is nothing to compare.")
    target = (lambda trial: -_accuracy(trial)) if _is_multi_objective(study) else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*computes the importances of params to achieve low")
        warnings.filterwarnings("error", message=".*importances will be equal")
        try:
            return optuna.visualization.plot_param_importances(study, target=target, target_name=ACCURACY)
        except (ValueError, RuntimeError, UserWarning) as error:
            raise _Skipped(f"Optuna could not compute parameter importances: {error}") from error


def _accuracy_by(study: optuna.Study, param: str) -> go.Figure:
    """The spread of accuracy for each value of one choice (S or the weight-decay rule).

    A strip over a box shows every trial, so a value tried once is not mistaken for a trend.
    """
    trials = [trial for trial in _completed(study) if param in trial.params]
    if not trials:
        raise _Skipped(f"No completed trial has the parameter {param}.")
    categories = [str(value) for value in sorted({trial.params[param] for trial in trials}, key=_sort_key)]
    figure = go.Figure(go.Box(
        x=[str(trial.params[param]) for trial in trials],
        y=[_accuracy(trial) for trial in trials],
        name=ACCURACY,
        boxpoints="all",
        jitter=0.4,
        pointpos=0,
        hoveron="points",
        hovertext=[_describe(trial) for trial in trials],
        hovertemplate=_HOVER,
    ))
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=categories, title_text=param)
    return figure.update_yaxes(title_text=ACCURACY)


def _class_groups(study: optuna.Study) -> go.Figure:
    """Which classes each branch of a semantic split learned to take, best trials first."""
    trials = sorted((trial for trial in _completed(study) if TrialRecord.from_trial(trial).class_groups),
                    key=_accuracy, reverse=True)
    if not trials:
        raise _Skipped("No completed trial with a semantic split (groups > 1) yet.")
    rows = [(trial, member, groups) for trial in trials
            for member, groups in enumerate(TrialRecord.from_trial(trial).class_groups, start=1)]
    columns = [
        [f"#{trial.number}" for trial, _, _ in rows],
        [f"{_accuracy(trial):.4f}" for trial, _, _ in rows],
        [_split(trial) for trial, _, _ in rows],
        [str(member) for _, member, _ in rows],
        [groups for _, _, groups in rows],
    ]
    table = go.Table(header={"values": ["trial", ACCURACY, "split", "member", "class groups (branch | branch ...)"],
                             "align": "left"},
                     cells={"values": columns, "align": "left"}, columnwidth=[50, 90, 200, 60, 500])
    return go.Figure(table).update_layout(height=min(160 + 30 * len(rows), 900))


def _intermediate_values(study: optuna.Study) -> go.Figure:
    """Validation accuracy per epoch of every trial: what the pruner saw when it stopped a trial."""
    if _is_multi_objective(study):
        raise _Skipped("Multi-objective studies report no intermediate values: Optuna cannot prune them.")
    if not any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
        raise _Skipped("No trial reported a per-epoch validation accuracy yet.")
    figure = optuna.visualization.plot_intermediate_values(study)
    figure.update_xaxes(title_text="epoch")
    return figure.update_yaxes(title_text=ACCURACY)


def _summary_html(study: optuna.Study, confirmed: Sequence[ConfirmedCandidate]) -> str:
    """The page's head lines: objectives, trials by state, best result, confirmed pick and budget."""
    verbs = {StudyDirection.MAXIMIZE: "maximise", StudyDirection.MINIMIZE: "minimise"}
    names = [ACCURACY, *([_cost_label(study)] if _is_multi_objective(study) else [])]
    lines = [
        "Objectives: " + ", ".join(f"{verbs[direction]} {name}" for direction, name in zip(study.directions, names)),
        f"Trials: {_trial_counts(study)}",
        _best_line(study),
        *([_confirmed_line(confirmed[0])] if confirmed else []),
        f"Budget: {_budget(study)}",
    ]
    return "<ul>\n" + "\n".join(f"<li>{html.escape(line)}</li>" for line in lines) + "\n</ul>"


def _trial_counts(study: optuna.Study) -> str:
    """``12: 7 complete, 4 pruned (2 over budget), 1 failed; 2 repeats (...)``: where the search's time went.

    The repeats are always named, none included: proposals the search spent on known candidates.
    """
    counts = count_trials(study)
    if not counts.total:
        return "none yet"
    pruned = "pruned" + (f" ({counts.over_budget} over budget)" if counts.over_budget else "")
    parts = [(counts.complete, "complete"), (counts.pruned, pruned), (counts.failed + counts.interrupted, "failed"),
             (counts.running, "running"), (counts.waiting, "waiting")]
    repeats = (f"{counts.repeats} repeat{'' if counts.repeats == 1 else 's'} (proposals of a candidate the study "
               "had finished: answered from its result, not trained, not counted toward n_trials)")
    return f"{counts.total}: {', '.join(f'{count} {label}' for count, label in parts if count)}; {repeats}"


def _best_line(study: optuna.Study) -> str:
    """The best trial of a single-objective study, or the size of a multi-objective study's front."""
    if _is_multi_objective(study):
        front = sorted(trial.number for trial in pareto_front(study))
        if not front:
            return "Pareto front: 0 trials"
        return f"Pareto front: {len(front)} trials (#{', #'.join(map(str, front))}); {_hypervolume_text(study)}"
    try:
        best = study.best_trial
    except ValueError:
        return "Best trial: none completed yet"
    costs = [f"{format_count(value)} {label}" for key, label in _TRIAL_COSTS.items()
             if (value := _count(best, key)) is not None]
    costs += [latency] if (latency := _latency(best)) else []
    return ", ".join([f"Best trial #{best.number}: {ACCURACY} {_accuracy(best):.4f}", *costs, _split(best)])


def _confirmed_line(best: ConfirmedCandidate) -> str:
    """The best confirmed mean: the pick ``export`` makes, beside the search's biased maximum."""
    label = best.baseline or "searched"
    spread = f" +- {best.sd:.4f}" if best.sd is not None else ""
    return (f"Confirmed best #{best.trial_number} ({label}): {ACCURACY} {best.mean:.4f}{spread} over "
            f"{len(best.seeds)} new seed{'s' if len(best.seeds) > 1 else ''} (export picks this one)")


def _budget(study: optuna.Study) -> str:
    """The search's budget as the study recorded it, or ``none``."""
    record = StudyRecord.from_study(study)
    parts = [f"{format_count(budget)} {label}" for budget, label in
             ((record.budget_params, "parameters"), (record.budget_macs, "MACs")) if budget]
    if record.budget_activation:
        parts.append(f"{format_bytes(record.budget_activation)} of activations per image")
    if record.budget_latency:
        parts.append(f"{format_duration(record.budget_latency)} of latency per forward pass of "
                     f"{record.latency_batch_size or 1} image{'' if record.latency_batch_size in (None, 1) else 's'} "
                     "(checked before training, never fitted)")
    if not parts:
        return "none"
    modes = {"fit": "widths fitted to the budget", "reject": "over-budget candidates pruned before training"}
    mode = record.budget_mode
    return ", ".join(parts) + (f" ({modes.get(mode, mode)})" if mode else "")


def _section_html(title: str, content: go.Figure | str) -> str:
    """One section: its title over its figure (plotly.js comes from the page's head) or its note."""
    if isinstance(content, str):
        return f"<h2>{html.escape(title)}</h2>\n<p><em>{html.escape(content)}</em></p>"
    figure = content.to_html(full_html=False, include_plotlyjs=False, default_height="500px")
    return f"<h2>{html.escape(title)}</h2>\n{figure}"


def _describe(trial: FrozenTrial) -> str:
    """A trial's hover text: its number, baseline name, split, cost and members' accuracies."""
    record = TrialRecord.from_trial(trial)
    lines = [f"trial #{trial.number}"]
    if record.baseline:
        lines.append(f"baseline: {record.baseline}")
    lines.append(_split(trial))
    lines += [f"{format_count(value)} {label}" for key, label in _TRIAL_COSTS.items()
              if (value := _count(trial, key)) is not None]
    if latency := _latency(trial):
        lines.append(latency)
    if record.width_step is not None:
        lines.append(f"width step {record.width_step:g}")
    if record.member_val_accuracies:
        lines.append("members: " + ", ".join(f"{value:.3f}" for value in record.member_val_accuracies))
    lines += [f"class groups: {groups}" for groups in record.class_groups or ()]
    return "<br>".join(html.escape(line) for line in lines)


def _split(trial: FrozenTrial) -> str:
    """``S=2, block factors 1,2,2, wd_rule=linear, λ_cot=0.5``: the parts of the split that were chosen."""
    params = trial.params
    factors = sorted(
        (int(name.rpartition(".")[2]), value) for name, value in params.items()
        if name.startswith("block_factors.") and name.rpartition(".")[2].isdigit()
    )
    parts = [f"S={params['S']}"] if "S" in params else []
    if factors:
        parts.append("block factors " + ",".join(str(value) for _, value in factors))
    if "wd_rule" in params:
        parts.append(f"wd_rule={params['wd_rule']}")
    if "lambda_cot" in params:
        parts.append(f"λ_cot={params['lambda_cot']:g}")
    if params.get("groups", 1) > 1:
        parts.append(f"G={params['groups']} {params.get('split_depth', '')}".rstrip())
    return ", ".join(parts) or "split not searched"


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials, a searched candidate once: every figure of results needs at least one.

    A searched repeat (:attr:`TrialRecord.repeat_of`) is the same result drawn again and adds no
    point; a baseline that repeats a searched trial stays, as the baseline it is.  Optuna's own
    plots (history, importances, Pareto front) see every trial.
    """
    trials = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not _is_searched_repeat(TrialRecord.from_trial(trial))]
    if not trials:
        raise _Skipped("No completed trial yet.")
    return trials


def _is_searched_repeat(record: TrialRecord) -> bool:
    return record.is_repeat and not record.is_baseline


def _accuracy(trial: FrozenTrial) -> float:
    """Validation accuracy: recorded beside the objectives (an ``nll`` study's value is the NLL)."""
    return trial_accuracy(trial)


def _count(trial: FrozenTrial, key: str) -> int | None:
    """A positive cost the trial recorded (``params`` or ``macs``), or None where it did not."""
    value = getattr(TrialRecord.from_trial(trial), key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value)


def _latency(trial: FrozenTrial) -> str | None:
    """``latency 2.31 ms (IQR 0.12 ms, sequential on cpu)``: where the study measured it, else None."""
    record = TrialRecord.from_trial(trial)
    if record.latency_seconds is None:
        return None
    spread = f"IQR {format_duration(record.latency_iqr_seconds)}, " if record.latency_iqr_seconds is not None else ""
    return f"latency {format_duration(record.latency_seconds)} ({spread}{record.latency_execution or 'measured'})"


def _standard_error(trial: FrozenTrial) -> float:
    """The trial's validation standard error for an error bar, 0 where it was not recorded."""
    return TrialRecord.from_trial(trial).val_standard_error or 0.0


def _cost_label(study: optuna.Study) -> str:
    """The second objective's name for axes and notes: ``parameters`` or ``MACs``."""
    objectives = StudyRecord.from_study(study).objectives or ()
    return _COST_LABELS.get(objectives[1], objectives[1]) if len(objectives) > 1 else "cost"


def _is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study trades accuracy against a cost (two directions) rather than maximising it."""
    return len(study.directions) > 1


def _sort_key(value: object) -> tuple[int, float | str]:
    """Numbers in numeric order (S = 2 before 10), then other choices in text order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))
