"""The library's log lines on the command line: written above the progress bars, not through them.

The library logs a few lines a user must see while a command runs, such as the storage's outage
line (:mod:`splitsearch.store.retry`).  Without a handler, Python's last-resort handler writes
them bare to stderr in the middle of a tqdm progress bar, which breaks the bar.
:func:`logs_above_progress_bars` gives the ``splitsearch`` logger a handler that writes each
line with ``tqdm.write`` (which clears the bars, writes the line and draws them again), as
``Warning: ...``, like the command's other warnings.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm

LOGGER = "splitsearch"


class TqdmHandler(logging.Handler):
    """Writes each record as one line ``Level: message`` to stderr, above any tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(f"{record.levelname.capitalize()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # a log line must never end the command
            self.handleError(record)


@contextmanager
def logs_above_progress_bars(level: int = logging.WARNING) -> Iterator[None]:
    """While the block runs, the ``splitsearch`` logger's lines of ``level`` and up go through
    :class:`TqdmHandler` only (not on to the root logger's handlers, which would write them twice)."""
    logger = logging.getLogger(LOGGER)
    handler = TqdmHandler(level)
    previous = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous
