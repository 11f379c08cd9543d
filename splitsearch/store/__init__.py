"""Everything that talks to the database: Optuna's storage and the store's own tables beside it.

=======================  =====================================================================
:mod:`.urls`             database URLs as they may be shown (passwords masked), the default one
:mod:`.retry`            waiting out a database that goes away for a while
:mod:`.idempotent`       calling a state change again after its commit's answer was lost
:mod:`.storage`          opening Optuna's storage
:mod:`.models`           the store's tables (SQLAlchemy), beside Optuna's
:mod:`.migrations`       creating and upgrading them with Alembic, in a version table of their own
:mod:`.records`          :class:`Store`: every candidate a study trains, its epochs, its confirmations
=======================  =====================================================================

Call :func:`upgrade` once per database (every worker may), then write through a :class:`Store`.
Nothing here imports torch.  The names below load on first use, so that the command line reads
:mod:`.urls` for its option defaults without SQLAlchemy's import time.
"""

from __future__ import annotations

from splitsearch.lazy import lazy_names
_NAMES = {
    "VERSION_TABLE": "migrations", "current_revision": "migrations", "upgrade": "migrations",
    "CandidateRecord": "records", "ConfirmationRecord": "records", "FinishState": "records", "Store": "records",
    "WorkerRecord": "records",
}

__all__ = sorted(_NAMES)

__getattr__ = lazy_names(__name__, _NAMES)
