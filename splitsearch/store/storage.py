"""Opening Optuna's storage: the one database that Optuna's tables and the store's share.

Everything that talks to the database lives in :mod:`splitsearch.store`; this module opens
Optuna's side of it with the engine settings a worker on a server needs (a bounded pool, a ping
before a connection is reused, a connect timeout) and the patience of :mod:`.retry`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import optuna
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from splitsearch.errors import SplitsearchError, StorageUnavailableError
from splitsearch.store.retry import CONNECT_TIMEOUT_SECONDS, PatientRDBStorage, StoragePatience
from splitsearch.store.urls import mask_password, mask_url

StaleTrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class StorageOpenError(SplitsearchError, ValueError):
    """The storage cannot be opened: a wrong URL, password or database name, a missing driver."""


# Optuna's engine on a server: a stale connection (dropped while a long epoch trained) is found by
# a ping before use; one connection is kept for the main thread, and a second is opened only
# while the heartbeat thread beats during a query of the main thread.
OPTUNA_CONNECTIONS = 2
_POSTGRES_ENGINE = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": OPTUNA_CONNECTIONS - 1,
                    "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}


def open_storage(url: str, patience: StoragePatience | None = None, heartbeat_seconds: int | None = None,
                 stale_trial_callback: StaleTrialCallback | None = None) -> PatientRDBStorage:
    """Optuna's RDB storage at ``url``, with heartbeats where ``heartbeat_seconds`` is given.

    A running trial beats every ``heartbeat_seconds``; one silent for three beats belongs to a
    dead worker, and ``stale_trial_callback`` is called for it (the search queues it again).
    Without ``heartbeat_seconds`` (a reader: the report, the dashboard, ``db``) nothing beats.
    Once opened, the storage waits out an outage as ``patience`` says (by default for
    :data:`~splitsearch.store.retry.RETRY_SECONDS`; :mod:`splitsearch.store.retry`); its
    ``patience`` is meant for the store of the same database too.

    Given a ``patience`` (a worker, the dashboard), opening waits out an outage within it too:
    a worker started while its database restarts is the commonest fault of a cluster, and
    Optuna's constructor talks to the database (it creates the tables and checks their
    version, each a transaction of its own, safe to run again).  Only a transient error
    (:func:`~splitsearch.store.retry.is_transient`: refused, cut, starting up) is waited on: a
    wrong password or database name fails at once.  Without one (a command that reads), opening
    is tried once, so that the user hears at once of a database that is not there.  On
    PostgreSQL the storage holds at most :data:`OPTUNA_CONNECTIONS` connections.

    Raises:
        StorageOpenError: the database cannot be opened (one line, no traceback, no password).
    """
    options: dict[str, Any] = {}
    if heartbeat_seconds is not None:
        options = {"heartbeat_interval": heartbeat_seconds, "grace_period": 3 * heartbeat_seconds,
                   "heartbeat_stale_trial_callback": stale_trial_callback}
    engine_kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else dict(_POSTGRES_ENGINE)
    waits = patience is not None
    patience = patience or StoragePatience(url)

    def construct() -> PatientRDBStorage:
        return PatientRDBStorage(url, patience, engine_kwargs=engine_kwargs, **options)

    attempt = 1
    while True:
        try:
            return patience.call(construct) if waits else construct()
        except StorageUnavailableError as error:
            # Never reached: more likely a wrong host or port than an outage, so the line says both.
            raise StorageOpenError(f"cannot open storage: {error}; check the URL if the database is up") from None
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            if not _lost_creation_race(error):
                raise _cannot_open(url, error) from None
            # Workers starting together on a new PostgreSQL database race to create Optuna's
            # tables and enum types; the loser finds them made on its next try.
            if attempt == 3:
                raise StorageOpenError(f"cannot open storage {mask_url(url)}: its tables are being created by "
                                       "another worker")
            time.sleep(attempt)
            attempt += 1
        except (ImportError, ValueError) as error:
            raise _cannot_open(url, error) from None


def _sqlalchemy_error(error: Exception) -> Exception:
    """SQLAlchemy's error behind ``error`` (Optuna wraps it in ``StorageInternalError``), else ``error``."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, SQLAlchemyError):
        cause = cause.__cause__
    return cause if isinstance(cause, SQLAlchemyError) else error


def _cannot_open(url: str, error: Exception) -> StorageOpenError:
    cause = _sqlalchemy_error(error)
    reason = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(error).__name__])[0]
    return StorageOpenError(f"cannot open storage {mask_url(url)}: {mask_password(reason, url)}")


# PostgreSQL's codes for "created meanwhile by another session": unique violation (a row of the
# system catalogue), duplicate object (an enum type such as studydirection), duplicate table.
_CREATION_RACE_SQLSTATES = {"23505", "42710", "42P07"}


def _lost_creation_race(error: Exception) -> bool:
    """Whether opening the storage failed only because another worker created the schema at the same time."""
    cause = _sqlalchemy_error(error)
    sqlstate = getattr(getattr(cause, "orig", None), "sqlstate", None)
    return isinstance(cause, IntegrityError) or sqlstate in _CREATION_RACE_SQLSTATES
