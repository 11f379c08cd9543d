"""Disk faults recorded with the attempt they hit.

Candidates get ``resume_refused`` (the checkpoint a retry could not read, and why: it trained
from epoch 1 instead) and ``checkpoint_error`` (the first checkpoint or model file the attempt
could not write, and why: it trained on without it).

Written by hand and self-contained, like 0001 to 0003; the tests check that the migrations
build exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.add_column(sa.Column("resume_refused", sa.Text(), nullable=True))
        table.add_column(sa.Column("checkpoint_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.drop_column("checkpoint_error")
        table.drop_column("resume_refused")
