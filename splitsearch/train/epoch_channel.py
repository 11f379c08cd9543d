"""Rank 0 of a process group asks the process that started it what to do after each epoch.

A search trial trained in a process group (``splitsearch run --nproc-per-trial N``) runs its
ranks in new processes, while the Optuna trial, the store and the pruner live in the worker.
After every epoch rank 0 sends the epoch's metrics over a local socket and waits for the answer
(stop or go on); the worker answers by calling its own per-epoch callback, the same one a trial
trained in the worker itself uses, so reporting and pruning follow one path either way.  A
checkpoint rank 0 cannot write goes the same way, to the worker's write-error handler.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from types import TracebackType
from typing import Any, Callable

from splitsearch.errors import OutputWriteError
from splitsearch.metrics import EpochMetrics


@dataclass
class EpochClient:
    """Rank 0's end, a :class:`~splitsearch.train.plan.TrainReporter` that asks the worker whether to stop.

    Picklable until first used, so it travels to the rank with the training request.
    """

    address: tuple[str, int]
    authkey: bytes
    progress: bool = False
    _connection: Connection | None = field(default=None, repr=False)

    def data_plan(self, plan: Any) -> None:
        """Nothing to say: the worker has described the trial already."""

    def epoch(self, plan: Any, metrics: EpochMetrics) -> bool:
        """Send the epoch's metrics; True when the worker says stop (a pruned trial)."""
        return bool(self._ask(metrics))

    def write_error(self, error: OutputWriteError) -> None:
        """Tell the worker a file could not be written; training goes on (the worker decides what it costs)."""
        self._ask(error)

    def _ask(self, message: EpochMetrics | OutputWriteError) -> Any:
        if self._connection is None:
            self._connection = Client(self.address, authkey=self.authkey)
        self._connection.send(message)
        return self._connection.recv()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_connection": None}


class EpochServer:
    """The worker's end: answers rank 0 with ``callback(metrics)`` on a thread while the group trains.

    An exception in the callback (the database went away, say) stops the training and is raised
    again by :meth:`raise_failure` once the group has ended, so it is handled where a trial
    trained in the worker would handle it.
    """

    def __init__(self, callback: Callable[[EpochMetrics], bool],
                 on_write_error: Callable[[OutputWriteError], None]) -> None:
        self._callback = callback
        self._on_write_error = on_write_error
        self._authkey = secrets.token_bytes(32)
        self._listener = Listener(("127.0.0.1", 0), authkey=self._authkey)
        self._thread = threading.Thread(target=self._serve, name="epoch-server", daemon=True)
        self._failure: BaseException | None = None

    def client(self) -> EpochClient:
        return EpochClient(self._listener.address, self._authkey)

    def __enter__(self) -> EpochServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._listener.close()  # ends a thread still waiting for rank 0 to connect
        self._thread.join(timeout=5)

    def raise_failure(self) -> None:
        """Raise what the callback raised, if it did."""
        if self._failure is not None:
            raise self._failure

    def _serve(self) -> None:
        try:
            connection = self._listener.accept()
        except OSError:  # closed before rank 0 connected: the group ended early
            return
        with connection:
            while True:
                try:
                    message = connection.recv()
                except (EOFError, OSError):  # rank 0 finished or died
                    return
                connection.send(self._answer(message))

    def _answer(self, message: EpochMetrics | OutputWriteError) -> bool | None:
        """The callback's answer to an epoch (True: stop), the handler's to a write error; stop on a failure."""
        try:
            if isinstance(message, OutputWriteError):
                return self._on_write_error(message)
            return self._callback(message)
        except BaseException as error:  # noqa: BLE001 - raised again in the worker's thread
            self._failure = error
            return True
