"""Noise-aware picks: the standard error of each candidate's validation accuracy, and confirmations.

Written by hand and self-contained, like 0001; the tests check that 0001 + 0002 build exactly
what :mod:`splitsearch.store.models` describes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.add_column(sa.Column("val_standard_error", sa.Double(), nullable=True))
        table.add_column(sa.Column("val_samples", sa.Integer(), nullable=True))
    op.create_table(
        "splitsearch_confirmations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(16), nullable=False),
        sa.Column("baseline", sa.String(128), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("val_standard_error", sa.Double(), nullable=True),
        sa.Column("val_samples", sa.Integer(), nullable=True),
        sa.Column("member_val_accuracies", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wall_seconds", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_splitsearch_confirmations"),
        sa.UniqueConstraint(
            "study_name", "trial_number", "seed", name="uq_splitsearch_confirmations_study_name_trial_number_seed"
        ),
        sa.CheckConstraint("state IN ('running', 'complete', 'failed')", name="ck_splitsearch_confirmations_state"),
    )


def downgrade() -> None:
    op.drop_table("splitsearch_confirmations")
    with op.batch_alter_table("splitsearch_candidates") as table:
        table.drop_column("val_samples")
        table.drop_column("val_standard_error")
