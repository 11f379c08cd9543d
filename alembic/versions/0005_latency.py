"""Measured latency as budget and objective.

Candidates get ``latency_seconds`` and ``latency_iqr_seconds``: the median forward latency and
its interquartile range, measured before training where the study measures latency (a latency
budget or objective; :mod:`splitsearch.cost.latency`).

Written by hand and self-contained, like 0001 to 0004; the tests check that the migrations
build exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.add_column(sa.Column("latency_seconds", sa.Double(), nullable=True))
        table.add_column(sa.Column("latency_iqr_seconds", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.drop_column("latency_iqr_seconds")
        table.drop_column("latency_seconds")
