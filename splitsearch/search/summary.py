"""What a finished search and its confirmation come to, as lines of text the command line prints.

The facts are worked out here, next to the study records they come from, so that the command
line only prints them and the Python API can show the same summary.
"""

from __future__ import annotations

from typing import Callable

import optuna

from splitsearch.search.confirm import ConfirmedCandidate
from splitsearch.search.record import (
    StudyRecord,
    TrialRecord,
    count_trials,
    format_cost,
    front_hypervolume,
    hypervolume_text,
    pareto_front,
    trial_accuracy,
)
from splitsearch.search.run import no_new_candidates
from splitsearch.units import format_bytes, format_count, format_duration


def study_summary(study: optuna.Study) -> list[str]:
    """The end of ``splitsearch run``: trial counts, failures, refusals, the best trial or the front, what next."""
    counts = count_trials(study)
    lines = []
    if no_new_candidates(counts):
        lines.append(f"stopped: the space has no new candidates (the sampler's last {counts.repeats_in_a_row} "
                     "proposals repeated finished ones)")
    lines.append(f"{counts.complete} complete, {counts.pruned} pruned, {counts.failed + counts.interrupted} fail "
                 f"trials; {counts.repeats} repeat proposal{'' if counts.repeats == 1 else 's'} (answered from the "
                 "study's results, not counted)")
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state == optuna.trial.TrialState.FAIL and (failure := TrialRecord.from_trial(trial).failure):
            lines.append(f"trial {trial.number} failed: {failure}")
    refused = [(trial.number, record.over_budget_reason) for trial in trials
               if (record := TrialRecord.from_trial(trial)).over_budget and record.over_budget_reason]
    if refused:
        number, reason = refused[-1]
        lines.append(f"{len(refused)} over budget, refused untrained; the last, trial {number}: {reason}")
    if counts.complete and len(study.directions) == 1:
        best = study.best_trial
        record = TrialRecord.from_trial(best)
        latency = "" if record.latency_seconds is None else f", latency {format_duration(record.latency_seconds)}"
        nll = "" if record.val_nll is None else f", validation NLL {record.val_nll:.3f}"
        lines.append(f"best: trial {best.number}, validation accuracy {trial_accuracy(best):.2%}{nll}, "
                     f"{format_count(record.params or 0)} params, {format_count(record.macs or 0)} MACs{latency}, "
                     f"{best.params}")
    elif counts.complete:
        lines.append(front_line(study))
    lines.append(f"next: splitsearch confirm --study {study.study_name}; splitsearch export --study "
                 f"{study.study_name} -o best.yaml; splitsearch report --study {study.study_name} -o report.html")
    return lines


def front_line(study: optuna.Study) -> str:
    """``Pareto front: 4 trials, hypervolume 0.812 (...); the Pareto pruner stopped 5 trials``: what the search found
    and what pruning it cost (a pruned candidate might have joined the front)."""
    value, reference = front_hypervolume(study)
    cost = (StudyRecord.from_study(study).objectives or ("accuracy", "cost"))[1]
    stopped = sum(TrialRecord.from_trial(trial).pruned_at_epoch is not None
                  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    return (f"Pareto front: {len(pareto_front(study))} trials, "
            f"{hypervolume_text(value, f'{cost} {format_cost(cost, reference)}')}; the Pareto pruner "
            f"stopped {stopped} trial{'' if stopped == 1 else 's'}")


def greedy_summary(study: optuna.Study) -> list[str]:
    """The end of a greedy block-wise study: the factors chosen and what they changed against the baseline."""
    result = StudyRecord.from_study(study).greedy_result

    def change(before: int | None, after: int | None, unit: Callable[[int], str] = format_count) -> str:
        if before is None or after is None:
            return "not measurable for this family"
        return f"{unit(before)} -> {unit(after)} ({after / before - 1:+.1%})"

    activation = change(result.sequential_activation_bytes_baseline, result.sequential_activation_bytes, format_bytes)
    return [
        f"chosen factors {','.join(map(str, result.factors))} (trial {result.trial}): validation accuracy "
        f"{result.accuracy:.2%} vs baseline {result.baseline_accuracy:.2%} (drop {result.drop_points:+.2f} points, "
        f"threshold {result.threshold_points}), {result.evaluated} networks trained",
        f"params {change(result.params_baseline, result.params)}; MACs {change(result.macs_baseline, result.macs)}; "
        f"activation memory with the split blocks run branch by branch {activation}",
        f"next: splitsearch export --study {study.study_name} -o best.yaml (picks trial {result.trial}); "
        f"splitsearch report --study {study.study_name} -o report.html",
    ]


def confirmation_table(summaries: list[ConfirmedCandidate]) -> list[str]:
    """Confirmed candidates, best mean first: the search's figure beside the confirmed one."""
    header = f"{'trial':>6}  {'candidate':<24}{'search val':>11}{'confirmed mean':>16}{'sd':>7}{'runs':>6}"
    rows = [header, "-" * len(header)]
    for summary in summaries:
        search = "-" if summary.search_accuracy is None else f"{summary.search_accuracy:.2%}"
        sd = "-" if summary.sd is None else f"{100 * summary.sd:.2f}"
        rows.append(f"{summary.trial_number:>6}  {summary.baseline or 'searched':<24}{search:>11}"
                    f"{summary.mean:>16.2%}{sd:>7}{len(summary.accuracies):>6}")
    if not summaries:
        rows.append("no confirmation run has completed")
    return rows
