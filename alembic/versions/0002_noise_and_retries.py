"""Noise-aware picks and a trial's life on a cluster.

Candidates get the standard error of their validation accuracy, a failure reason, the links of
a retried trial (``retry_of``, ``retried_as``, ``resumed_from_epoch``) and the state
``interrupted``; new tables hold confirmation runs and the workers of each study.

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


_OLD_STATES = "state IN ('running', 'complete', 'pruned', 'failed', 'over_budget', 'reused')"
_NEW_STATES = "state IN ('running', 'complete', 'pruned', 'failed', 'interrupted', 'over_budget', 'reused')"
_NEW_COLUMNS = (
    ("val_standard_error", sa.Double()),
    ("val_samples", sa.Integer()),
    ("retry_of", sa.Integer()),
    ("retried_as", sa.Integer()),
    ("resumed_from_epoch", sa.Integer()),
    ("error", sa.Text()),
)


def upgrade() -> None:
    # SQLite cannot change a CHECK constraint in place: batch mode copies the table.
    with op.batch_alter_table("splitsearch_candidates", recreate="auto") as table:
        for name, kind in _NEW_COLUMNS:
            table.add_column(sa.Column(name, kind, nullable=True))
        table.drop_constraint("ck_splitsearch_candidates_state", type_="check")
        table.create_check_constraint("ck_splitsearch_candidates_state", _NEW_STATES)
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
    op.create_table(
        "splitsearch_workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("sampler_seed", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_splitsearch_workers"),
    )
    op.create_index("ix_splitsearch_workers_study_name", "splitsearch_workers", ["study_name"])


def downgrade() -> None:
    op.drop_index("ix_splitsearch_workers_study_name", table_name="splitsearch_workers")
    op.drop_table("splitsearch_workers")
    op.drop_table("splitsearch_confirmations")
    with op.batch_alter_table("splitsearch_candidates", recreate="auto") as table:
        table.drop_constraint("ck_splitsearch_candidates_state", type_="check")
        table.create_check_constraint("ck_splitsearch_candidates_state", _OLD_STATES)
        for name, _ in reversed(_NEW_COLUMNS):
            table.drop_column(name)
