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

from pathlib import Path


class SplitsearchError(Exception):
    """Something the user gave cannot work; the message says what and how to fix it."""


class TrainingError(SplitsearchError, ValueError):
    """A training cannot run as asked (a device that is not there, a checkpoint of another run)."""


class OutputWriteError(SplitsearchError):
    """A file of a run (checkpoint, model, metrics) could not be written: a full disk, a read-only
    or missing folder.  The file that was there before is left as it was (writes are atomic).

    ``reason`` is the operating system's word for it without the file name (``[Errno 28] No space
    left on device``), so that the same fault on many files can be told once.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)  # the arguments, so that the error pickles (member-parallel ranks)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


class CheckpointReadError(TrainingError):
    """A checkpoint to resume from cannot be read: truncated, corrupt, or not a checkpoint at all.

    Raised before anything of it is applied, so the trainer that raised it is as it was built.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"the checkpoint {self.path} cannot be read ({self.reason}): it is truncated or corrupt"


class StorageUnavailableError(BaseException):
    """The database stayed unreachable for longer than a command waits for it; exit status 2.

    Not an ``Exception``, on purpose, like ``KeyboardInterrupt``: the code that records a failing
    candidate catches ``Exception`` (the objective, Optuna's ``catch``, Optuna's bookkeeping of a
    failed trial, which needs the database itself), and a lost database is no candidate's fault.
    Raised through all of them, it stops the worker and leaves its trial to be retried from the
    checkpoint.  The command line prints its message in one line, as for a
    :class:`SplitsearchError`.
    """
