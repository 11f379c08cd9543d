"""The SQL store: every candidate a study trains, its epochs and its confirmations, beside Optuna's tables.

Call :func:`upgrade` once per database (every worker may), then write through a :class:`Store`.
"""

from splitsearch.store.migrations import VERSION_TABLE, current_revision, upgrade
from splitsearch.store.records import CandidateRecord, ConfirmationRecord, FinishState, Store, WorkerRecord

__all__ = [
    "VERSION_TABLE", "CandidateRecord", "ConfirmationRecord", "FinishState", "Store", "WorkerRecord",
    "current_revision", "upgrade",
]
