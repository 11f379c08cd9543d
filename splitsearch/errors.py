"""The root of the errors a user can fix.

A :class:`SplitsearchError` says that something the user gave cannot work: a name, a value, a
file, a dataset, a storage.  The command line prints its message in one line and exits with
status 2; any other exception that escapes a command is a bug in splitsearch and is shown as one,
with its traceback.  Each module raises its own subclass (``ConfigError``, ``StudyError``,
``DataError``, ...), most of them also ``ValueError`` for callers that catch that.
"""

from __future__ import annotations


class SplitsearchError(Exception):
    """Something the user gave cannot work; the message says what and how to fix it."""


class TrainingError(SplitsearchError, ValueError):
    """A training cannot run as asked (a device that is not there, a checkpoint of another run)."""
