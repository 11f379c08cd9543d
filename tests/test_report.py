"""The study report, on real Optuna studies filled the way the search fills them (ask / report / tell)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from splitsearch.report import build_figures, data, write_report

BUDGET_PARAMS = 1_500_000
PLOTLYJS_BANNER = re.compile(r"plotly\.js v\d")
RESULT_TITLES = [
    "Optimisation history",
    "Validation accuracy vs parameters",
    "Parameter importances",
    "Validation accuracy by S",
    "Validation accuracy by wd_rule",
]


def _trial(
    study: optuna.Study,
    split: dict[str, Any],
    /,
    *,
    values: float | list[float] | None = None,
    state: TrialState = TrialState.COMPLETE,
    reports: tuple[float, ...] = (),
    **attrs: Any,
) -> None:
    """One trial with the given split, user attrs and per-epoch reports, told with ``values`` or ``state``.

    The split is enqueued and then suggested, as the search suggests it; ``split`` is positional-only so
    that ``params`` can be a user attr.
    """
    study.enqueue_trial(split)
    trial = study.ask()
    trial.suggest_int("S", 1, 4)
    for block in range(3):
        trial.suggest_categorical(f"block_factors.{block}", [1, 2, 4])
    trial.suggest_categorical("wd_rule", ["none", "linear", "sqrt"])
    trial.suggest_float("lambda_cot", 0.0, 1.0)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for epoch, accuracy in enumerate(reports):
        trial.report(accuracy, epoch)
    if state == TrialState.COMPLETE:
        study.tell(trial, values)
    else:
        study.tell(trial, state=state)


def _split(S: int, factors: tuple[int, int, int], wd_rule: str, lambda_cot: float) -> dict[str, Any]:
    return {"S": S, **{f"block_factors.{i}": k for i, k in enumerate(factors)}, "wd_rule": wd_rule,
            "lambda_cot": lambda_cot}


def _costs(params: int) -> dict[str, Any]:
    return {"params": params, "macs": params * 40, "flops": params * 80, "activation_bytes": params * 3,
            "config_hash": f"h{params}", "wall_seconds": 12.5}


@pytest.fixture
def single_objective_study() -> optuna.Study:
    """Searched trials, two baselines, pruned trials with reports, an over-budget and a failed trial."""
    study = optuna.create_study(study_name="resnet20-digits", direction="maximize")
    study.set_user_attr("objectives", ["accuracy"])
    study.set_user_attr("budget_params", BUDGET_PARAMS)
    study.set_user_attr("budget_mode", "reject")
    _trial(study, _split(1, (1, 1, 1), "none", 0.0), values=0.90, reports=(0.6, 0.8, 0.9),
           baseline="undivided", member_val_accuracies=[0.90], width_step=None, **_costs(1_200_000))
    _trial(study, _split(2, (1, 1, 1), "linear", 0.5), values=0.92, reports=(0.6, 0.85, 0.92),
           baseline="paper S=2", member_val_accuracies=[0.89, 0.90], width_step=None, **_costs(1_250_000))
    for i, (S, factors, wd_rule, accuracy) in enumerate([
        (2, (1, 2, 2), "sqrt", 0.93), (4, (1, 2, 4), "linear", 0.91), (2, (2, 2, 2), "none", 0.88),
        (4, (1, 1, 2), "sqrt", 0.94),
    ]):
        _trial(study, _split(S, factors, wd_rule, 0.25 * i), values=accuracy, reports=(0.5, 0.8, accuracy),
               member_val_accuracies=[accuracy - 0.02] * S, width_step=0.125, **_costs(1_000_000 + 100_000 * i))
    _trial(study, _split(4, (2, 2, 2), "none", 0.1), state=TrialState.PRUNED, reports=(0.3, 0.4), **_costs(900_000))
    _trial(study, _split(1, (4, 4, 4), "linear", 0.9), state=TrialState.PRUNED, over_budget=True,
           **_costs(9_000_000))
    _trial(study, _split(2, (1, 1, 4), "sqrt", 0.3), state=TrialState.FAIL)
    _trial(study, _split(2, (1, 2, 1), "none", 0.7), values=0.86)  # completed without any user attrs
    return study


def _html(study: optuna.Study, tmp_path: Path) -> str:
    """Write the report in an empty folder, check it is the only file written, and read it."""
    path = write_report(study, tmp_path / "report.html")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    return path.read_text(encoding="utf-8")


def test_single_objective_report(single_objective_study: optuna.Study, tmp_path: Path) -> None:
    page = _html(single_objective_study, tmp_path)
    figures = build_figures(single_objective_study)
    titles = [title for title, _ in figures]

    assert titles == [*RESULT_TITLES, "Intermediate values (pruning)"]
    assert len(PLOTLYJS_BANNER.findall(page)) == 1
    assert page.count("Plotly.newPlot(") == len(figures)
    for title in titles:
        assert f"<h2>{title}</h2>" in page
    assert "splitsearch report: resnet20-digits" in page
    assert "Trials: 10: 7 complete, 2 pruned (1 over budget), 1 failed" in page
    assert "Best trial #5: validation accuracy 0.9400, 1.3M parameters, 52M MACs, S=4" in page
    assert "Budget: 1.5M parameters (over-budget candidates pruned before training)" in page
    assert "paper S=2" in page and "undivided" in page


def test_accuracy_vs_params_marks_baselines_and_budget(single_objective_study: optuna.Study) -> None:
    figure = dict(build_figures(single_objective_study))["Validation accuracy vs parameters"]
    traces = {trace.name: trace for trace in figure.data}

    # Each baseline is a legend entry of its own, with its own marker: no labels printed over each other.
    assert set(traces) == {"searched trials", "undivided", "paper S=2"}
    assert all(trace.text is None for trace in figure.data)
    symbols = [traces[name].marker.symbol for name in ("searched trials", "undivided", "paper S=2")]
    assert len(set(symbols)) == 3
    assert len(traces["searched trials"].x) == 4  # the completed trial without a params attr is left out
    assert figure.layout.xaxis.type == "log"
    (budget_line,) = figure.layout.shapes
    assert (budget_line.x0, budget_line.x1, budget_line.line.dash) == (BUDGET_PARAMS, BUDGET_PARAMS, "dash")
    assert f'"x0":{BUDGET_PARAMS}' in figure.to_json()
    assert "trial #2" in traces["searched trials"].hovertext[0]
    assert "S=2, block factors 1,2,2, wd_rule=sqrt, λ_cot=0" in traces["searched trials"].hovertext[0]


def test_multi_objective_report(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = optuna.create_study(study_name="wrn-pareto", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "params"])
    for i, (accuracy, params) in enumerate([(0.90, 1_000_000), (0.93, 2_000_000), (0.89, 3_000_000),
                                             (0.95, 4_000_000)]):
        _trial(study, _split(1 + i % 2, (1, 2, 2), ["none", "linear"][i // 2], 0.1 * i),
               values=[accuracy, params], **_costs(params))
    _trial(study, _split(1, (1, 1, 1), "none", 0.0), values=[0.88, 500_000], baseline="undivided",
           **_costs(500_000))
    _trial(study, _split(2, (1, 1, 1), "none", 0.0), state=TrialState.FAIL)
    _trial(study, _split(2, (1, 2, 2), "none", 0.1), values=[0.93, 2_000_000], repeat_of=1, **_costs(2_000_000))

    (tmp_path / "out").mkdir()
    page = _html(study, tmp_path / "out")
    figures = dict(build_figures(study))

    assert list(figures) == [RESULT_TITLES[0], RESULT_TITLES[1], "Pareto front: validation accuracy vs parameters",
                             *RESULT_TITLES[2:]]
    assert "Pareto front: 4 trials (#0, #1, #3, #4)" in page
    assert "Budget: none" in page
    assert "No trial recorded its validation accuracy by epoch yet." in page
    assert len(PLOTLYJS_BANNER.findall(page)) == 1
    assert page.count("Plotly.newPlot(") == len(figures)
    front = next(trace for trace in figures[RESULT_TITLES[1]].data if trace.name == "Pareto front")
    assert sorted(front.x) == [1_000_000, 2_000_000, 4_000_000]
    # The repeat of trial 1 (#6) is left out of the front; the hypervolume is the mean best accuracy over
    # budgets up to 4.4M: (0.5 x 0.88 + 1 x 0.90 + 2 x 0.93 + 0.4 x 0.95) / 4.4 = 0.8136.
    hypervolume = "hypervolume 0.814 (reference point: accuracy 0, 4.4M parameters, 1.1 x the largest)"
    assert f"Pareto front: 4 trials (#0, #1, #3, #4); {hypervolume}" in page
    assert "Trials: 7: 5 complete, 1 failed; 1 repeat (proposals of a candidate the study had finished" in page
    pareto = figures["Pareto front: validation accuracy vs parameters"]
    baselines = next(trace for trace in pareto.data if trace.name == "undivided")
    assert (list(baselines.x), list(baselines.y)) == ([500_000], [0.88])
    assert [annotation.text for annotation in pareto.layout.annotations] == [hypervolume]


def test_trial_counts_name_the_repeats_even_when_there_are_none(single_objective_study: optuna.Study,
                                                                tmp_path: Path) -> None:
    page = _html(single_objective_study, tmp_path)
    assert "Trials: 10: 7 complete, 2 pruned (1 over budget), 1 failed; 0 repeats (proposals of a candidate" in page


def test_empty_study_gives_a_report_of_notes(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty", direction="maximize")

    page = _html(study, tmp_path)

    assert build_figures(study) == []
    assert "<h1>splitsearch report: empty</h1>" in page and page.rstrip().endswith("</html>")
    assert "Trials: none yet" in page and "Best trial: none completed yet" in page
    # The result figures and the calibration figure (drawn only where trials recorded their calibration).
    assert page.count("No completed trial yet.") == len(RESULT_TITLES) + 1
    assert "<b>Verdict:</b> none yet" in page
    assert "No trial reported a per-epoch validation accuracy yet." in page
    assert not PLOTLYJS_BANNER.search(page) and "Plotly.newPlot(" not in page


def test_notes_for_figures_a_young_study_cannot_draw(tmp_path: Path) -> None:
    """One completed trial that searched only wd_rule: no importances, no grouping by S, still a report."""
    study = optuna.create_study(study_name="young", direction="maximize")
    trial = study.ask()
    trial.suggest_categorical("wd_rule", ["none", "linear"])
    trial.set_user_attr("params", 1_000_000)
    study.tell(trial, 0.8)
    pruned = study.ask()
    pruned.suggest_categorical("wd_rule", ["none", "linear"])
    pruned.report(0.4, 0)
    study.tell(pruned, state=TrialState.PRUNED)

    page = _html(study, tmp_path)
    titles = [title for title, _ in build_figures(study)]

    assert "Parameter importances need at least two completed trials." in page
    assert "No completed trial has the parameter S." in page
    assert titles == ["Optimisation history", "Validation accuracy vs parameters", "Validation accuracy by wd_rule",
                      "Intermediate values (pruning)"]
    assert len(PLOTLYJS_BANNER.findall(page)) == 1


def test_importances_note_when_all_trials_share_one_split(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    for accuracy in (0.8, 0.9):
        _trial(study, _split(2, (1, 2, 2), "linear", 0.5), values=accuracy)

    assert "All completed trials share one parameter set" in _html(study, tmp_path)


# -- the figures' data, without plotly --------------------------------------------------------------

def test_the_figure_data_needs_no_plotly():
    """What a figure shows is computed without the drawing library (as Optuna's _get_*_info functions)."""
    check = ("import sys; import splitsearch.report.data; "
             "assert 'plotly' not in sys.modules, 'plotly imported'")
    subprocess.run([sys.executable, "-c", check], check=True)


def test_accuracy_vs_params_data(single_objective_study: optuna.Study) -> None:
    content = data.accuracy_vs_params(single_objective_study)
    by_name = {series.name: series for series in content.series}
    assert [(s.name, s.kind) for s in content.series] == [("searched trials", "searched"),
                                                          ("undivided", "baseline"), ("paper S=2", "baseline")]
    assert [(point.trial, point.x, point.y) for point in by_name["undivided"].points] == [(0, 1_200_000, 0.90)]
    assert len(by_name["searched trials"].points) == 4 and content.budget == BUDGET_PARAMS
    assert by_name["searched trials"].points[0].hover[:2] == ("trial #2", "S=2, block factors 1,2,2, "
                                                                           "wd_rule=sqrt, λ_cot=0")


def test_a_young_study_has_no_data_to_draw() -> None:
    study = optuna.create_study(direction="maximize")
    with pytest.raises(data.NothingToDraw, match="No completed trial yet"):
        data.accuracy_vs_params(study)
    with pytest.raises(data.NothingToDraw, match="No confirmation runs yet"):
        data.confirmed_accuracy(study, [])


def test_accuracy_by_s_data_orders_numbers_as_numbers(single_objective_study: optuna.Study) -> None:
    content = data.accuracy_by(single_objective_study, "S")
    assert content.categories == ("1", "2", "4")
    assert [value for category, value, _ in content.points if category == "1"] == [0.90]
