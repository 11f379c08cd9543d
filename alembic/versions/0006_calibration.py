"""Calibration beside accuracy: NLL, expected calibration error and Brier score.

Candidates, epochs and confirmations get ``val_nll``, ``val_ece`` and ``val_brier`` (the
ensemble's, on the validation split) and ``member_val_calibration`` (each member's, as
``{"nll": [...], "ece": [...], "brier": [...]}``); candidates also ``test_nll``, ``test_ece``
and ``test_brier`` beside ``test_accuracy``, for studies that measure the test split
(:mod:`splitsearch.train.calibration` says how each is computed).  Rows written before have
them empty.

Written by hand and self-contained, like 0001 to 0005; the tests check that the migrations
build exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VALIDATION = ("val_nll", "val_ece", "val_brier")
_TEST = ("test_nll", "test_ece", "test_brier")
_TABLES = {"splitsearch_candidates": _VALIDATION + _TEST, "splitsearch_epoch_metrics": _VALIDATION,
           "splitsearch_confirmations": _VALIDATION}


def upgrade() -> None:
    for table_name, columns in _TABLES.items():
        with op.batch_alter_table(table_name) as table:
            for name in columns:
                table.add_column(sa.Column(name, sa.Double(), nullable=True))
            table.add_column(sa.Column("member_val_calibration", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table_name, columns in _TABLES.items():
        with op.batch_alter_table(table_name) as table:
            table.drop_column("member_val_calibration")
            for name in reversed(columns):
                table.drop_column(name)
