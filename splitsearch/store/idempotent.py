"""Calling a state change again after an *ambiguous* commit: one whose answer was lost with its connection.

A connection lost after the server committed a transaction and before its answer came back
leaves the client not knowing whether its change is in the database.  Calling it again as if
nothing had been committed (what :meth:`~splitsearch.store.retry.StoragePatience.call` does) is
wrong for three of Optuna's writes:

* finishing a trial (``set_trial_state_values``): the second call finds the trial finished by
  the first and raises ``UpdateFinishedTrialError``, which killed the worker in its tell step;
* creating a trial (``create_new_trial``, also how a trial is queued): the second call creates a
  second trial;
* creating a study (``create_new_study``): the second call finds the study made by the first and
  raises ``DuplicatedStudyError``, so the worker that created it took it for another worker's
  and waited for a set-up nobody would do.

So before it calls again, :func:`call_again_unless_committed` asks whether the first call's
change is already there (:func:`finished_as_asked` for a state change; for a creation, the
unique token of :func:`with_creation_token`, which :class:`~splitsearch.store.retry.PatientRDBStorage`
looks for inside the creating transaction, so Optuna's own retry of a creation is covered too;
for a study, a token written as a study system attribute in the creating transaction).  The
tokens stay in the tables; the storage keeps them out of what it returns
(:func:`without_creation_token`).

The other writes are safe to repeat as they are: trial attributes and intermediate values are
upserts, and a parameter written twice hits its unique key, which Optuna ignores.  Marking a
queued trial RUNNING (taking it from the queue) is left ambiguous: a worker whose first call
committed is told the trial was taken and moves on, and the trial, which never beats, is found
stale one heartbeat grace period later.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Callable, Sequence, TypeVar

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

# The system attribute that tags a trial with the token of the call that created it.
CREATION_TOKEN = "splitsearch:creation_token"

Result = TypeVar("Result")


def call_again_unless_committed(patient_call: Callable[[Callable[[], Result]], Result], change: Callable[[], Result],
                                committed: Callable[[], bool], result: Result) -> Result:
    """``change()`` through ``patient_call`` (a :meth:`~splitsearch.store.retry.StoragePatience.call`,
    which tries again while the database is unreachable); but every try after the first first
    asks ``committed()`` and returns ``result`` when an earlier try's change is there.

    A later try that raises ``UpdateFinishedTrialError`` is asked ``committed()`` once more: the
    lost commit may have become visible between the question and the try.  Anything else, or a
    change not committed after all, is raised as it is.
    """
    tries = 0

    def try_once() -> Result:
        nonlocal tries
        tries += 1
        if tries > 1 and committed():
            return result
        try:
            return change()
        except UpdateFinishedTrialError:
            if tries > 1 and committed():
                return result
            raise

    return patient_call(try_once)


def finished_as_asked(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> bool:
    """Whether ``trial`` already ended in ``state`` with ``values`` (a RUNNING state is never
    taken as done: another worker may have taken the trial from the queue)."""
    if not state.is_finished() or trial.state != state:
        return False
    return values is None or trial.values == [float(value) for value in values]


def with_creation_token(template: FrozenTrial | None) -> tuple[FrozenTrial, str]:
    """A copy of ``template`` (Optuna's new RUNNING trial when None) tagged with a new unique token."""
    token = uuid.uuid4().hex
    if template is None:
        tagged = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                             datetime_complete=None, params={}, distributions={}, user_attrs={},
                             system_attrs={}, intermediate_values={}, trial_id=-1)
    else:
        tagged = copy.deepcopy(template)
    tagged.system_attrs[CREATION_TOKEN] = token
    return tagged, token


def creation_token(template: FrozenTrial | None) -> str | None:
    return None if template is None else template.system_attrs.get(CREATION_TOKEN)


def without_creation_token(read: Result) -> Result:
    """``read`` (a trial or a study, a list of them, or their system attributes) without the
    creation token: the token is this storage's bookkeeping, written with the trial or study and
    needed only while its creation is tried again; a reader sees what Optuna's own storage would
    show.  What Optuna's storage returns is built for each call, so it is changed in place."""
    for item in read if isinstance(read, list) else [read]:
        attrs = item if isinstance(item, dict) else getattr(item, "system_attrs", None)
        if isinstance(attrs, dict):
            attrs.pop(CREATION_TOKEN, None)
    return read
