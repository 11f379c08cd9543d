"""Execution modes chosen by measurement: the timings of each shape of candidate, measured once.

``splitsearch_mode_timings`` holds, per (architecture, S, widths, input, batch size, device
kind), each execution mode's measured step time and compile cost (``--mode auto``,
:mod:`splitsearch.train.autotune`), so a later candidate of the same shape chooses its mode
without measuring.  A new table: rows written before are untouched.

Written by hand and self-contained, like 0001 to 0006; the tests check that the migrations
build exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "splitsearch_mode_timings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arch", sa.String(64), nullable=False),
        sa.Column("S", sa.Integer(), nullable=False),
        sa.Column("widths", sa.String(255), nullable=False),
        sa.Column("input", sa.String(512), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("device_kind", sa.String(255), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_splitsearch_mode_timings"),
        sa.UniqueConstraint("arch", "S", "widths", "input", "batch_size", "device_kind",
                            name="uq_splitsearch_mode_timings_shape"),
    )


def downgrade() -> None:
    op.drop_table("splitsearch_mode_timings")
