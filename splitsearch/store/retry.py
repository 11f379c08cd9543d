"""Waiting out a database that goes away for a while: a lost connection, a restart, a fail-over.

A database on a cluster restarts, fails over or drops off the network now and then.  A worker
must neither die of it at once nor take a lost connection for a failed candidate.  Every call
to the storage, Optuna's (:class:`PatientRDBStorage`) and the store's
(:class:`~splitsearch.store.Store`), goes through one :class:`StoragePatience`, which on a
*transient* error (:func:`is_transient`: the connection failed, not the request) logs one line
per outage, waits with exponential backoff (:data:`FIRST_WAIT` doubling to :data:`MAX_WAIT`
seconds) and calls again, until the outage has lasted ``seconds``.  Then it gives up with
:class:`~splitsearch.errors.StorageUnavailableError` (one line naming the storage, password
masked; exit status 2), and every later call of the dying process fails at once instead of
waiting again.  Any other error is raised at once: a bug, a constraint violation or a wrong
password must surface, not be waited on.

Retrying a whole call is safe because each call is one transaction, which the database either
committed or rolled back, except when the connection was lost after the server committed and
before its answer arrived: the call then runs twice.  The store's writes are upserts, and so
are Optuna's attribute and intermediate-value writes, so that is harmless there.  Finishing a
trial and creating one are not: those are tried again only after checking that the lost try did
not commit (:mod:`splitsearch.store.idempotent`).  A trial taken from the queue by a lost try is
the one case left: no worker runs it, it never beats, and it is found stale one grace period
later (below).

Opening the storage goes through the same patience when the caller gives one (a worker):
:func:`splitsearch.store.storage.open_storage`.

Heartbeats are the exception: a beat that cannot reach the storage is skipped, not retried (the
next beat tries again), so the heartbeat thread never blocks the end of a trial and never gives
up for the worker; the main thread decides when the outage has lasted too long.  While the
database is away, the trial in progress keeps training until its next storage write (the end of
its epoch), which then waits: the epoch's report reaches the storage when the database is back.
Right after an outage every running trial's heartbeat looks old, so for one heartbeat grace
period a worker fails no trial as stale (:meth:`PatientRDBStorage._get_stale_trial_ids`); and a
trial whose worker gave up before its first heartbeat is found stale too, which Optuna alone
would leave running for ever.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence, TypeVar

import optuna
from optuna.storages._rdb import models  # private: see OPTUNA_INTERNALS
from optuna.storages._rdb.storage import _create_scoped_session  # private: see OPTUNA_INTERNALS
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exists, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError

from splitsearch.errors import StorageUnavailableError
from splitsearch.store.idempotent import (
    CREATION_TOKEN,
    call_again_unless_committed,
    creation_token,
    finished_as_asked,
    with_creation_token,
    without_creation_token,
)
from splitsearch.store.urls import mask_password, mask_url

# How long a worker waits for its storage by default (``--storage-retry-seconds``), in seconds.
RETRY_SECONDS = 180.0
# Backoff between tries: the first wait, doubled after each failed try up to the last.
FIRST_WAIT = 1.0
MAX_WAIT = 15.0

# libpq's connect timeout: a server that does not answer at all (a network partition) fails a try
# after this many seconds rather than the operating system's minutes, so the retries keep their pace.
CONNECT_TIMEOUT_SECONDS = 10

# PostgreSQL's error codes that say the connection or the server failed, not the request:
# connection exceptions (class 08, less 08P01, a protocol violation), an administrator's or a
# crash's shutdown, a server starting up, and no connection slot free.
_TRANSIENT_SQLSTATES = frozenset({"08000", "08001", "08003", "08004", "08006", "57P01", "57P02", "57P03", "53300"})
# What libpq says, before the server could answer with a code, when it cannot be reached or is not ready.
_UNREACHABLE_MESSAGES = ("connection refused", "could not connect", "server closed the connection",
                         "connection reset", "timeout expired", "no such file or directory",
                         "the database system is starting up", "the database system is shutting down",
                         "the database system is in recovery mode", "the database system is not yet accepting")

# What libpq says when the server answered and said no: waiting would not help.  Checked first,
# since libpq joins the messages of every address it tried ("localhost" is ::1, then 127.0.0.1),
# so one message may also hold a refused connection to another address.
_REFUSED_BY_SERVER_MESSAGES = ("authentication failed", "does not exist", "no pg_hba.conf entry",
                               "permission denied", "password is required")

_log = logging.getLogger(__name__)
_optuna_log = optuna.logging.get_logger("optuna.storages._rdb.storage")
Result = TypeVar("Result")


def is_transient(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the connection to the database failed.

    Optuna wraps a database error in ``StorageInternalError``, so the whole chain of causes is
    read.  Transient: a connection SQLAlchemy found broken (``connection_invalidated``), a
    disconnection, and the database driver's errors with a code of :data:`_TRANSIENT_SQLSTATES`
    or, from before the server could answer, a message of :data:`_UNREACHABLE_MESSAGES`.
    """
    for cause in _causes(error):
        if isinstance(cause, DisconnectionError):
            return True
        if isinstance(cause, DBAPIError) and (cause.connection_invalidated or _driver_says_unreachable(cause)):
            return True
    return False


def _driver_says_unreachable(error: DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _TRANSIENT_SQLSTATES
    message = str(error.orig).lower()
    if any(text in message for text in _REFUSED_BY_SERVER_MESSAGES):
        return False
    return isinstance(error, OperationalError) and any(text in message for text in _UNREACHABLE_MESSAGES)


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


class StoragePatience:
    """How long one process waits for its storage, and the outage in progress, shared by its threads.

    One instance serves Optuna's storage and the store of the same database, so an outage is
    announced once and timed once, whichever call met it first, and a call waiting between two
    tries goes on as soon as another thread (a heartbeat, say) has reached the database.
    """

    def __init__(self, url: str, seconds: float = RETRY_SECONDS, final: bool = True,
                 announce: Callable[[str], None] = _log.warning) -> None:
        """``final``: whether giving up is final, so that every later call fails at once (a worker
        or a command on its way out); a server (the dashboard) passes False and goes on: each
        later call tries once more, and fails at once while the outage lasts."""
        self.url = url
        self.seconds = seconds
        self.final = final
        self._announce = announce
        self._lock = threading.Lock()
        self._reachable = threading.Event()
        self._reachable.set()
        self._outage_since: float | None = None
        self._outage_ended: float | None = None
        self._given_up: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process keeps (a pickled storage: Optuna's contract): the
        settings and whether this one gave up; not the lock, the event or the outage in progress,
        whose monotonic times mean nothing in another process."""
        return {"url": self.url, "seconds": self.seconds, "final": self.final, "announce": self._announce,
                "given_up": self._given_up}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["seconds"], state["final"], state["announce"])
        self._given_up = state["given_up"]

    def call(self, function: Callable[..., Result], /, *args: Any, **kwargs: Any) -> Result:
        """``function(*args, **kwargs)``, called again while the storage is unreachable, for a bounded time.

        Raises:
            StorageUnavailableError: the outage lasted ``seconds`` (now or in an earlier call).
        """
        wait = FIRST_WAIT
        while True:
            self._raise_if_given_up()
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    raise
                self._reachable.wait(self._time_left(error, wait))
                wait = min(2 * wait, MAX_WAIT)
            else:
                self._connected()
                return result

    def beat(self, function: Callable[..., object], /, *args: Any) -> None:
        """One try of a heartbeat: a transient error is noted (an outage begins) and the beat skipped."""
        if self._given_up is not None:
            return
        try:
            function(*args)
        except Exception as error:
            if not is_transient(error):
                raise
            self._begin_outage(error)
        else:
            self._connected()

    def seconds_since_outage(self) -> float:
        """Seconds since the last outage this process saw ended: 0 during one, infinity if none."""
        with self._lock:
            if self._outage_since is not None:
                return 0.0
            return math.inf if self._outage_ended is None else time.monotonic() - self._outage_ended

    def _time_left(self, error: Exception, wait: float) -> float:
        """How long to wait before the next try; gives up once the outage has lasted ``seconds``."""
        since = self._begin_outage(error)
        left = since + self.seconds - time.monotonic()
        if left <= 0:
            message = (f"storage {mask_url(self.url)} unreachable for {self.seconds:g} s ({self._reason(error)}); "
                       "giving up: run again when the database is back (interrupted trials continue from their "
                       "checkpoints)")
            if self.final:
                with self._lock:
                    self._given_up = message
            raise StorageUnavailableError(message)
        return min(wait, left)

    def _begin_outage(self, error: Exception) -> float:
        """When the outage in progress began; the first error of an outage is announced in one line."""
        with self._lock:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                self._reachable.clear()
                if self.seconds > 0:  # a process that does not wait says so once, when it gives up
                    self._announce(f"storage {mask_url(self.url)} unreachable ({self._reason(error)}); "
                                   f"retrying for up to {self.seconds:g} s")
            return self._outage_since

    def _connected(self) -> None:
        if self._outage_since is not None:
            with self._lock:
                self._outage_since = None
                self._outage_ended = time.monotonic()
                self._reachable.set()

    def _raise_if_given_up(self) -> None:
        if self._given_up is not None:
            raise StorageUnavailableError(self._given_up)

    def _reason(self, error: Exception) -> str:
        """The database driver's first line about ``error``, password masked."""
        driver = next((cause.orig for cause in _causes(error) if isinstance(cause, DBAPIError)), None)
        lines = str(driver or error).strip().splitlines() or [type(error).__name__]
        return mask_password(" ".join(lines[0].split()), self.url)


def patient(method: Callable[..., Result]) -> Callable[..., Result]:
    """Decorates a method of an object with a ``patience`` attribute: each call waits out an outage."""
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Result:
        return self.patience.call(method, self, *args, **kwargs)

    return call


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose database calls wait out an outage through ``patience``.

    Only the entry points (:data:`_OPTUNA_ENTRY_POINTS`, each one transaction of its own) are
    retried, never the helpers they call inside an open transaction.  Finishing and creating a
    trial are retried only after checking that the lost try did not commit
    (:mod:`splitsearch.store.idempotent`).  Heartbeats are tried once (:meth:`StoragePatience.beat`).

    It subclasses Optuna's storage, not wraps it: Optuna's trial cache, which every study puts
    in front of an RDB storage, calls private methods of the storage behind it, so a wrapper
    would have to provide them all the same.  What it relies on is listed in
    :data:`OPTUNA_INTERNALS` and checked for the versions in :data:`VERIFIED_OPTUNA`.
    """

    def __init__(self, url: str, patience: StoragePatience, **kwargs: Any) -> None:
        self.patience = patience
        self._creations_tried: set[str] = set()  # the tokens of the creations in progress already tried
        super().__init__(url, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        self.patience.beat(super().record_heartbeat, trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Optuna's, called again after a lost connection only if the trial did not end so already."""
        def committed() -> bool:
            return finished_as_asked(optuna.storages.RDBStorage.get_trial(self, trial_id), state, values)

        def change() -> bool:
            return optuna.storages.RDBStorage.set_trial_state_values(self, trial_id, state, values)

        return call_again_unless_committed(self.patience.call, change, committed, True)

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        """Optuna's, the study tagged with a token of its own in the creating transaction, so that
        a try after a lost commit finds the study it made (and returns it) instead of raising
        ``DuplicatedStudyError`` as if another worker had made it."""
        token = uuid.uuid4().hex
        tries = 0

        def try_once() -> int:
            nonlocal tries
            tries += 1
            made = self._study_made_by(token) if tries > 1 else None
            if made is not None:
                return made
            try:
                return self._create_tagged_study(directions, study_name, token)
            except optuna.exceptions.DuplicatedStudyError:
                made = self._study_made_by(token) if tries > 1 else None
                if made is None:
                    raise
                return made

        return self.patience.call(try_once)

    def _create_tagged_study(self, directions: Sequence[StudyDirection], study_name: str | None, token: str) -> int:
        """Optuna 5.0's (and 5.1's) ``create_new_study``, with the token written in the same transaction."""
        try:
            with _create_scoped_session(self.scoped_session) as session:
                if study_name is None:
                    study_name = self._create_unique_study_name(session)
                study = models.StudyModel(study_name=study_name, directions=[
                    models.StudyDirectionModel(objective=objective, direction=direction)
                    for objective, direction in enumerate(list(directions))])
                session.add(study)
                session.add(models.StudySystemAttributeModel(study=study, key=CREATION_TOKEN,
                                                             value_json=json.dumps(token)))
        except IntegrityError:
            raise optuna.exceptions.DuplicatedStudyError from None
        _optuna_log.info(f"A new study created in RDB with name: {study_name}")  # Optuna's own line
        return optuna.storages.RDBStorage.get_study_id_from_name(self, study_name)

    def _study_made_by(self, token: str) -> int | None:
        """The id of the study whose creation carried ``token``, if that creation committed."""
        attrs = models.StudySystemAttributeModel
        with self.scoped_session() as session:
            return session.scalars(select(attrs.study_id).where(
                attrs.key == CREATION_TOKEN, attrs.value_json == json.dumps(token))).first()

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Optuna's, the trial tagged with a token of its own, so that a try after a lost commit
        (ours, or Optuna's own retry of a creation) finds the trial made instead of making another."""
        tagged, token = with_creation_token(template_trial)
        try:
            return without_creation_token(self.patience.call(super()._create_new_trial, study_id, tagged))
        finally:
            self._creations_tried.discard(token)

    def _get_prepared_new_trial(self, study_id: int, template_trial: FrozenTrial | None, session: Any) -> Any:
        """The trial an earlier try of this creation committed (same token), else Optuna's new one.

        Looked for inside the creating transaction, which holds the study's row locked, so no
        other creation can come between the look and the insert; and only when this creation was
        tried before, so that the common case costs no query.
        """
        token = creation_token(template_trial)
        if token in self._creations_tried:
            attrs = models.TrialSystemAttributeModel
            made = session.scalars(select(models.TrialModel).join(attrs, attrs.trial_id == models.TrialModel.trial_id)
                                   .where(models.TrialModel.study_id == study_id, attrs.key == CREATION_TOKEN,
                                          attrs.value_json == json.dumps(token))).first()
            if made is not None:
                return made
        if token is not None:
            self._creations_tried.add(token)
        return super()._get_prepared_new_trial(study_id, template_trial, session)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """The running trials whose heartbeat is too old, or that never beat; none right after an outage.

        While the database was away no worker could beat, so right after it comes back every
        running trial looks stale; failing them would retry trials their workers are still
        training.  So for one grace period after an outage no trial is stale: a worker that
        really died is found one grace period later.
        """
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self.patience.seconds_since_outage() < grace:
            return []
        return self.patience.call(self._stale_or_never_beaten, study_id, grace)

    def _stale_or_never_beaten(self, study_id: int, grace: float) -> list[int]:
        """Optuna's stale trials, and the running trials started over ``grace`` seconds ago that never beat.

        Optuna leaves a trial without any heartbeat alone, but with heartbeats on, every trial
        beats as it starts: one that never did lost its worker before the first beat, typically
        a worker that gave up on an outage right after it took the trial.  Its start is the
        clock of the worker that took it, so the machines' clocks must agree within ``grace``.
        """
        trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
        started_before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=grace)  # naive UTC
        never_beaten = select(trials.c.trial_id).where(
            trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING,
            trials.c.datetime_start < started_before, ~exists().where(beats.c.trial_id == trials.c.trial_id))
        with self.scoped_session() as session:
            orphans = list(session.scalars(never_beaten))
        return super()._get_stale_trial_ids(study_id) + orphans


# The methods of Optuna's RDBStorage that open, use and close a session of their own and are
# called again as they are after a lost connection: the public ones, and the private ones
# Optuna's trial cache calls.  Finishing and creating a trial, and creating a study, are not
# among them (above).
_OPTUNA_ENTRY_POINTS = (
    "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
    "set_trial_param", "_set_trial_param", "get_trial_param",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials", "get_best_trial",
    "_get_best_trial_id",
)
# The entry points that return trials or studies or their system attributes: the creation token, a
# bookkeeping attribute of this storage, is kept out of what they return, so a reader sees the
# trial Optuna's own storage would show (Optuna's storage contract, tests/test_storage_contract.py).
_TRIAL_READERS = ("get_trial", "get_all_trials", "_get_trials", "get_best_trial", "get_trial_system_attrs",
                  "get_all_studies", "get_study_system_attrs")


def _hiding_creation_token(method: Callable[..., Result]) -> Callable[..., Result]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Result:
        return without_creation_token(method(self, *args, **kwargs))

    return call


for _name in _OPTUNA_ENTRY_POINTS:
    _method = patient(getattr(optuna.storages.RDBStorage, _name))
    setattr(PatientRDBStorage, _name, _hiding_creation_token(_method) if _name in _TRIAL_READERS else _method)

# The Optuna releases whose internals below were read and tested (tests/test_storage_faults.py
# checks that they still exist); setup.cfg pins optuna to these.
VERIFIED_OPTUNA = ("5.0", "5.1")
# What of Optuna's private API this module relies on, and why.
OPTUNA_INTERNALS = {
    "RDBStorage._create_new_trial": "the trial cache creates and queues trials through it: overridden to tag "
                                    "the trial with a creation token and retry",
    "RDBStorage._get_prepared_new_trial": "the step inside the creating transaction: overridden to find the "
                                          "trial an earlier try of the same creation committed",
    "RDBStorage._set_trial_param": "called by the trial cache: retried",
    "RDBStorage._get_trials": "called by the trial cache: retried",
    "RDBStorage._get_best_trial_id": "called by the trial cache: retried",
    "RDBStorage._get_stale_trial_ids": "called by the trial cache: overridden to find no stale trial right "
                                       "after an outage, and to find trials that never beat",
    "RDBStorage.scoped_session": "the session factory the queries above run in",
    "RDBStorage._create_unique_study_name": "a study created without a name: create_new_study is rewritten "
                                            "to write its creation token in the creating transaction",
    "optuna.storages._rdb.storage._create_scoped_session": "the committing session create_new_study runs in",
    "optuna.storages._rdb.models": "TrialModel, TrialHeartbeatModel, TrialSystemAttributeModel, StudyModel, "
                                   "StudyDirectionModel, StudySystemAttributeModel: the tables the queries "
                                   "above read and write",
}
