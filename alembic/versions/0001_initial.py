"""The store's first tables: candidates and their per-epoch metrics.

Written by hand and self-contained (it does not import the models, which will change later);
the tests check that it builds exactly what :mod:`splitsearch.store.models` describes.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "splitsearch_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("config_yaml", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(16), nullable=False),
        sa.Column("dataset", sa.String(1024), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("arch", sa.String(128), nullable=False),
        sa.Column("S", sa.Integer(), nullable=False),
        sa.Column("width_mult", sa.Double(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("macs", sa.BigInteger(), nullable=False),
        sa.Column("flops", sa.BigInteger(), nullable=False),
        sa.Column("activation_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width_step", sa.Double(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("val_accuracy", sa.Double(), nullable=True),
        sa.Column("test_accuracy", sa.Double(), nullable=True),
        sa.Column("member_val_accuracies", sa.JSON(), nullable=True),
        sa.Column("reused_from_id", sa.Integer(), nullable=True),
        sa.Column("baseline", sa.String(128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wall_seconds", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_splitsearch_candidates"),
        sa.UniqueConstraint(
            "study_name", "trial_number", name="uq_splitsearch_candidates_study_name_trial_number"
        ),
        sa.CheckConstraint(
            "state IN ('running', 'complete', 'pruned', 'failed', 'over_budget', 'reused')",
            name="ck_splitsearch_candidates_state",
        ),
        sa.ForeignKeyConstraint(
            ["reused_from_id"], ["splitsearch_candidates.id"], name="fk_splitsearch_candidates_reused_from_id"
        ),
    )
    op.create_index("ix_splitsearch_candidates_config_hash", "splitsearch_candidates", ["config_hash"])
    op.create_table(
        "splitsearch_epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Double(), nullable=False),
        sa.Column("train_cross_entropy", sa.Double(), nullable=False),
        sa.Column("train_cotraining", sa.Double(), nullable=False),
        sa.Column("lr", sa.Double(), nullable=False),
        sa.Column("lambda_cot", sa.Double(), nullable=False),
        sa.Column("val_accuracy", sa.Double(), nullable=False),
        sa.Column("member_val_accuracies", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_splitsearch_epoch_metrics"),
        sa.UniqueConstraint("candidate_id", "epoch", name="uq_splitsearch_epoch_metrics_candidate_id_epoch"),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["splitsearch_candidates.id"], name="fk_splitsearch_epoch_metrics_candidate_id",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("splitsearch_epoch_metrics")
    op.drop_index("ix_splitsearch_candidates_config_hash", table_name="splitsearch_candidates")
    op.drop_table("splitsearch_candidates")
