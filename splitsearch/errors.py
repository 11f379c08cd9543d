"""The root of the errors a user can fix.

A :class:`SplitsearchError` says that something the user gave cannot work: a name, a value, a
file, a dataset, a storage.  The command line prints its message in one line and exits with
status 2; any other exception that escapes a command is a bug in splitsearch and is shown as one,
with its traceback.  Each module raises its own subclass (``ConfigError``, ``StudyError``,
``DataError``, ...), most of them also ``ValueError`` for callers that catch that.
:class:`StorageUnavailableError` (a database gone for longer than a worker waits) is printed the
same way, though it is no ``Exception`` (see there why).
"""

from __future__ import annotations


class SplitsearchError(Exception):
    """Something the user gave cannot work; the message says what and how to fix it."""


class TrainingError(SplitsearchError, ValueError):
    """A training cannot run as asked (a device that is not there, a checkpoint of another run)."""


class StorageUnavailableError(BaseException):
    """The database stayed unreachable for longer than a command waits for it; exit status 2.

    Not an ``Exception``, on purpose, like ``KeyboardInterrupt``: the code that records a failing
    candidate catches ``Exception`` (the objective, Optuna's ``catch``, Optuna's bookkeeping of a
    failed trial, which needs the database itself), and a lost database is no candidate's fault.
    Raised through all of them, it stops the worker and leaves its trial to be retried from the
    checkpoint.  The command line prints its message in one line, as for a
    :class:`SplitsearchError`.
    """
