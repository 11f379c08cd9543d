"""Do Optuna's trials and the store's rows agree?  What ``splitsearch db check`` finds and ``--repair`` mends.

A study is recorded twice in one database (:mod:`splitsearch.search.record`): Optuna's trial is
the record of the search, the store's row the record of training.  Workers keep the two together
as they go, but a worker killed at the wrong moment, a row deleted by hand or a restore of one
table without the other can leave them apart, and the checkpoints on disk with them.  This module
lists every such disagreement as a :class:`Finding` of one kind (named in parentheses; the
``kind`` of ``db check --json``) and mends, where it can, by the rule that Optuna's trial
decides how a trial ended:

* a row that says ``running`` while its trial has ended (``running-row``): the row takes the
  trial's state;
* a trial ``RUNNING`` whose worker on this machine is gone (``dead-worker``): it fails and is
  queued again, as a worker starting here would do (a worker on another machine is Optuna's
  heartbeat's to judge);
* a row in another final state than its trial, failed vs COMPLETE, ... (``state``): the row
  takes the trial's;
* a COMPLETE or PRUNED trial without a row (``missing-row``): the row is written again from the
  trial's attributes (config, cost, result; the per-epoch metrics are gone with it).  A failed
  or interrupted trial may have no row by design: it stopped before training (an invalid
  candidate, a kill at start);
* a row without a trial (``row-without-trial``), the rows of a study Optuna does not have
  (``unknown-study``): reported, not mended (nothing says what they should be);
* ``retry_of`` / ``retried_as`` naming a trial without a row (``retry-link``): the link is cleared;
* a checkpoint folder no attempt will resume (``checkpoint``): removed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from splitsearch.cost.counting import count_config
from splitsearch.search.record import StudyRecord, TrialRecord, trial_accuracy
from splitsearch.search.run import load_existing_study, open_existing_storage
from splitsearch.search.study import StudyError
from splitsearch.search.worker import (
    MAX_RETRIES,
    checkpoint_root,
    dead_local_trials,
    original_trial_number,
    recover_trial,
    retried_trial,
    retry_history,
)
from splitsearch.store import CandidateRecord, Store, upgrade

# The row states that agree with each of Optuna's final trial states.
AGREEING_STATES = {
    TrialState.COMPLETE: ("complete", "reused"),
    TrialState.PRUNED: ("pruned", "over_budget"),
    TrialState.FAIL: ("failed", "interrupted"),
}
_CHECKPOINT_FOLDER = re.compile(r"trial-(\d+)")


@dataclass(frozen=True)
class Finding:
    """One disagreement: where (study, trial), what kind, a readable line, and how to mend it if it can be.

    ``mend`` does the repair and returns what it did, in words; None when nothing can mend it.
    """

    study: str
    trial: int | None
    kind: str
    message: str
    mend: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        where = self.study if self.trial is None else f"{self.study}, trial {self.trial}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "trial": self.trial, "kind": self.kind, "message": self.message,
                "mendable": self.mend is not None}


@dataclass(frozen=True)
class Repair:
    """What ``--repair`` did about one finding (``done``), or why it could not (``failed``)."""

    finding: Finding
    done: str | None = None
    failed: str | None = None

    def line(self) -> str:
        if self.done is not None:
            return f"repaired: {self.finding.line()}: {self.done}"
        return f"not repaired: {self.finding.line()}: {self.failed}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "done": self.done, "failed": self.failed}


def check_storage(storage_url: str, study_name: str | None, runs_dir: Path) -> list[Finding]:
    """Every disagreement in study ``study_name`` of the storage, or in all its studies when None.

    ``runs_dir`` is the ``--runs-dir`` the workers used, where the studies' checkpoints are.
    All studies: also the store's rows of studies Optuna does not have.

    Studies splitsearch did not make (plain Optuna studies sharing the database) have no rows to
    agree with and are left out.

    Raises:
        StudyError: the storage cannot be opened, or holds no study ``study_name`` of splitsearch's.
    """
    if study_name is not None:
        studies = [load_existing_study(study_name, storage_url)]
        if not _made_by_splitsearch(studies[0]):
            raise StudyError(f"study {study_name!r} was not made by splitsearch: it has no rows to check")
    else:
        storage = open_existing_storage(storage_url)
        studies = [optuna.load_study(study_name=name, storage=storage) for name in optuna.get_all_study_names(storage)]
    upgrade(storage_url)
    store = Store(storage_url)
    try:
        findings = [finding for study in studies if _made_by_splitsearch(study)
                    for finding in check_study(study, store, runs_dir)]
        if study_name is None:
            findings += _rows_of_unknown_studies(store, {study.study_name for study in studies})
        return findings
    finally:
        store.close()


def check_study(study: optuna.Study, store: Store, runs_dir: Path) -> list[Finding]:
    """Every disagreement between ``study``'s trials, its rows in ``store`` and its checkpoints under ``runs_dir``.

    In the order :func:`repair` must mend them: trial states first, then rows, links, folders.
    """
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    rows = {row.trial_number: row for row in store.candidates(study.study_name)}
    return [
        *_dead_workers(study, store),
        *(finding for row in rows.values() if (finding := _row_state(study, store, trials, row)) is not None),
        *_missing_rows(study, store, trials, rows),
        *_dangling_links(study.study_name, store, rows),
        *_leftover_checkpoints(study, trials, runs_dir),
    ]


def repair(findings: list[Finding]) -> list[Repair]:
    """Mend every finding that can be, in order; a finding nothing can mend is reported as such.

    Check again afterwards to see what disagrees still (:func:`check_storage`).
    """
    repairs = []
    for finding in findings:
        if finding.mend is None:
            repairs.append(Repair(finding, failed="nothing says what it should be"))
            continue
        try:
            repairs.append(Repair(finding, done=finding.mend()))
        except (OSError, LookupError, ValueError) as error:
            repairs.append(Repair(finding, failed=f"{type(error).__name__}: {' '.join(str(error).split())}"))
    return repairs


# -- the kinds of disagreement ---------------------------------------------------------------------

def _dead_workers(study: optuna.Study, store: Store) -> list[Finding]:
    """RUNNING trials whose worker on this machine is gone: nothing will ever end them but a restart."""
    findings = []
    for trial in dead_local_trials(study):
        worker = TrialRecord.from_trial(trial).worker or {}

        def mend(trial: FrozenTrial = trial) -> str:
            if not recover_trial(study, store, trial):
                return "a worker starting meanwhile recovered it"
            return "failed in Optuna and queued again (the retry resumes from its checkpoint); row interrupted"

        findings.append(Finding(study.study_name, trial.number, "dead-worker",
                                f"RUNNING in Optuna, but its worker (pid {worker.get('pid')} on "
                                f"{worker.get('host')}, this machine) is gone", mend))
    return findings


def _row_state(study: optuna.Study, store: Store, trials: dict[int, FrozenTrial],
               row: CandidateRecord) -> Finding | None:
    """A row whose state disagrees with its trial's, or whose trial does not exist."""
    trial = trials.get(row.trial_number)
    if trial is None:
        return Finding(study.study_name, row.trial_number, "row-without-trial",
                       f"the store has a row ({row.state}), Optuna has no such trial")
    agreeing = AGREEING_STATES.get(trial.state)
    if agreeing is None or row.state in agreeing:
        return None  # RUNNING or WAITING: a worker is on it, its row may say anything yet
    target = row_state_of(trial)
    record = TrialRecord.from_trial(trial)
    accuracy = trial_accuracy(trial)

    def mend() -> str:
        store.settle_candidate(study.study_name, trial.number, target, val_accuracy=accuracy, error=record.failure)
        return f"row marked {target}"

    kind = "running-row" if row.state == "running" else "state"
    return Finding(study.study_name, trial.number, kind,
                   f"the row says {row.state}, Optuna says {trial.state.name}", mend)


def _missing_rows(study: optuna.Study, store: Store, trials: dict[int, FrozenTrial],
                  rows: dict[int, CandidateRecord]) -> list[Finding]:
    """COMPLETE and PRUNED trials without a row (a trial that failed or was cut off early may have none)."""
    findings = []
    for trial in trials.values():
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or trial.number in rows:
            continue
        config = TrialRecord.from_trial(trial).config
        mend = None if config is None else (lambda trial=trial: _restore_row(study, store, trial))
        findings.append(Finding(study.study_name, trial.number, "missing-row",
                                f"{trial.state.name} in Optuna, but the store has no row of it"
                                + ("" if config else " (and its config is not recorded)"), mend))
    return findings


def _dangling_links(study_name: str, store: Store, rows: dict[int, CandidateRecord]) -> list[Finding]:
    """``retry_of`` / ``retried_as`` naming a trial that has no row."""
    findings = []
    for row in rows.values():
        for link in ("retry_of", "retried_as"):
            target = getattr(row, link)
            if target is None or target in rows:
                continue

            def mend(row: CandidateRecord = row, link: str = link, target: int = target) -> str:
                if store.clear_retry_link(study_name, row.trial_number, link):
                    return f"{link} cleared"
                return f"trial {target}'s row is back: the link stays"

            findings.append(Finding(study_name, row.trial_number, "retry-link",
                                    f"{link} {target} points to no row", mend))
    return findings


def _leftover_checkpoints(study: optuna.Study, trials: dict[int, FrozenTrial], runs_dir: Path) -> list[Finding]:
    """Checkpoint folders of the study that no attempt will resume (or of no trial at all)."""
    if StudyRecord.from_study(study).checkpoint_key is None:
        return []  # not a study splitsearch created: it has no checkpoint folder
    root = checkpoint_root(study, runs_dir)
    if not root.is_dir():
        return []
    attempts: dict[int, list[FrozenTrial]] = {}
    for trial in trials.values():
        attempts.setdefault(original_trial_number(trial), []).append(trial)
    greedy_done = StudyRecord.from_study(study).greedy_result is not None
    findings = []
    for folder in sorted(root.iterdir()):
        match = _CHECKPOINT_FOLDER.fullmatch(folder.name)
        if match is None or not folder.is_dir():
            continue
        number = int(match.group(1))
        chain = attempts.get(number)
        if chain is not None and _still_needed(chain, greedy_done):
            continue
        latest = None if chain is None else max(chain, key=lambda trial: trial.number)
        why = "belongs to no trial" if latest is None else f"of a finished trial ({latest.state.name})"

        def mend(folder: Path = folder) -> str:
            shutil.rmtree(folder)
            return "removed"

        findings.append(Finding(study.study_name, number, "checkpoint",
                                f"checkpoint folder {folder} {why} is left on disk", mend))
    return findings


def _still_needed(chain: list[FrozenTrial], greedy_done: bool) -> bool:
    """Whether an attempt of this trial may still resume from (or fine-tune from) its checkpoint folder.

    An attempt runs or waits; the latest was interrupted and will be queued again (fewer
    retries than allowed); or the greedy search, not finished, keeps its weights for the next network.
    """
    latest = max(chain, key=lambda trial: trial.number)
    if any(trial.state in (TrialState.RUNNING, TrialState.WAITING) for trial in chain):
        return True
    record = TrialRecord.from_trial(latest)
    if latest.state == TrialState.FAIL and record.failure is None and len(retry_history(latest)) < MAX_RETRIES:
        return True
    return bool(record.keep_weights) and latest.state == TrialState.COMPLETE and not greedy_done


def _made_by_splitsearch(study: optuna.Study) -> bool:
    """Whether splitsearch made the study (it records its settings when it creates one)."""
    return StudyRecord.from_study(study).settings is not None


def _rows_of_unknown_studies(store: Store, known: set[str]) -> list[Finding]:
    """Rows of studies Optuna does not have (deleted, or a store copied without Optuna's tables)."""
    return [Finding(name, None, "unknown-study",
                    f"the store has {len(store.candidates(name))} row(s) of this study, Optuna has no such study")
            for name in store.study_names() if name not in known]


# -- mending ---------------------------------------------------------------------------------------

def row_state_of(trial: FrozenTrial) -> str:
    """The store state of a finished trial's row: what its worker would have written."""
    record = TrialRecord.from_trial(trial)
    if trial.state == TrialState.COMPLETE:
        return "reused" if record.reused_from is not None else "complete"
    if trial.state == TrialState.PRUNED:
        return "over_budget" if record.over_budget else "pruned"
    return "failed" if record.failure is not None else "interrupted"


def _restore_row(study: optuna.Study, store: Store, trial: FrozenTrial) -> str:
    """Write a finished trial's lost row again from its attributes (config, cost, result, links, times)."""
    record = TrialRecord.from_trial(trial)
    config = record.config
    state = row_state_of(trial)
    reused_from_id = None
    if state == "reused":
        source = store.find_reusable(config.config_hash(), config.dataset, config.train.epochs)
        if source is None:
            raise LookupError("the complete row whose result it reused is gone too")
        reused_from_id = source.id
    accuracy = record.val_accuracy
    if accuracy is None and (StudyRecord.from_study(study).objectives or ("accuracy",))[0] == "accuracy":
        # a trial recorded before accuracy was stored beside the values, or a pruned one (its last epoch)
        values = trial.values or list(trial.intermediate_values.values())[-1:]
        accuracy = values[0] if values else None
    started = trial.datetime_start or trial.datetime_complete
    store.restore_candidate(
        study.study_name, trial.number, config, count_config(config), state, width_step=record.width_step,
        baseline=record.baseline, val_accuracy=accuracy,
        val_standard_error=record.val_standard_error, val_samples=record.val_samples,
        member_val_accuracies=None if record.member_val_accuracies is None else list(record.member_val_accuracies),
        reused_from_id=reused_from_id, retry_of=retried_trial(trial), warm_started_from=record.warm_start_from,
        started_at=started.astimezone(), finished_at=trial.datetime_complete.astimezone(),
        wall_seconds=record.wall_seconds, latency_seconds=record.latency_seconds,
        latency_iqr_seconds=record.latency_iqr_seconds,
    )
    return f"row written again as {state} from the trial's attributes (its per-epoch metrics are lost)"

