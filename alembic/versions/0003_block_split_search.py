"""The greedy block-wise search and branch-by-branch activation memory (seed 002).

Candidates get ``sequential_activation_bytes`` (the peak live feature maps when split blocks
run branch by branch, as seed 002 deploys them) and ``warm_started_from`` (the trial whose
trained weights a fine-tuned candidate started from: its result depends on them, so it is
never reused for a candidate trained from scratch).

Written by hand and self-contained, like 0001 and 0002; the tests check that the migrations
build exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.add_column(sa.Column("sequential_activation_bytes", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("warm_started_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.drop_column("warm_started_from")
        table.drop_column("sequential_activation_bytes")
