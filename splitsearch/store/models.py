"""The store's tables: one row per trained (or skipped) candidate, one per epoch it trained, one per
confirmation run (a candidate retrained with another seed).

They live in the same database as Optuna's tables, so every name starts with ``splitsearch_``
and never collides with Optuna's (``studies``, ``trials``, ``trial_*``, ``version_info``,
``alembic_version``).  Constraint names come from one naming convention so that the hand-written
migration in ``alembic/versions`` names them identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_PREFIX = "splitsearch_"

# interrupted: stopped by Ctrl-C, SIGTERM or a dead worker (retried as another trial number);
# failed: the candidate raised (out of memory, a non-finite loss, a bug): never retried.
STATES = ("running", "complete", "pruned", "failed", "interrupted", "over_budget", "reused")
CONFIRMATION_STATES = ("running", "complete", "failed")

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    # Kept short: PostgreSQL truncates identifiers longer than 63 characters.
    "fk": "fk_%(table_name)s_%(column_0_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps the offset (``timestamptz``) but SQLite stores naive text, so values are
    converted to UTC on the way in and marked UTC on the way out; callers always compare aware
    datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"store timestamps must be timezone-aware, got naive {value!r}")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Candidate(Base):
    """One trial of a study: its config, cost, state and final result.

    ``reused_from_id`` points at the complete candidate whose result a ``reused`` row copied, so
    its epoch curve is found there rather than duplicated.  An interrupted trial is retried by
    Optuna as a new trial number: its row says ``retried_as`` that number, the retry's row says
    ``retry_of`` the interrupted one and ``resumed_from_epoch`` (the last epoch its checkpoint
    held); each row keeps the epochs its own attempt trained.  ``error`` is a failed trial's reason.
    ``warm_started_from`` is the trial whose trained weights a fine-tuned candidate started from
    (the greedy block-wise search); ``sequential_activation_bytes`` the peak live feature maps
    when its split blocks run branch by branch (:mod:`splitsearch.cost`).  Disk faults stay on
    the attempt they hit: ``resume_refused`` says which checkpoint a retry could not read (it
    trained from epoch 1 instead), ``checkpoint_error`` the first file of the attempt that could
    not be written (it trained on without, so it could not have resumed from there).
    ``latency_seconds`` and ``latency_iqr_seconds`` are the candidate's forward latency (median
    and interquartile range) measured before training by the worker that wrote the row, where
    its study measures latency (:mod:`splitsearch.cost.latency`); a latency is the worker's device's,
    so a reused row has its own, not its source's.  ``val_nll``, ``val_ece`` and ``val_brier`` are
    the ensemble's calibration on the validation split (lower is better;
    :mod:`splitsearch.train.calibration`), ``member_val_calibration`` each member's as
    ``{"nll": [...], "ece": [...], "brier": [...]}``; ``test_*`` the same on the test split, for
    studies that measure it (``record_test``).
    """

    __tablename__ = TABLE_PREFIX + "candidates"
    __table_args__ = (
        UniqueConstraint("study_name", "trial_number"),
        CheckConstraint(f"state IN ({', '.join(repr(state) for state in STATES)})", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512))
    trial_number: Mapped[int]
    config_yaml: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(16), index=True)
    dataset: Mapped[str] = mapped_column(String(1024))
    epochs: Mapped[int]
    arch: Mapped[str] = mapped_column(String(128))
    S: Mapped[int]
    width_mult: Mapped[float]
    params: Mapped[int] = mapped_column(BigInteger)
    macs: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    activation_bytes: Mapped[int] = mapped_column(BigInteger)
    sequential_activation_bytes: Mapped[int | None] = mapped_column(BigInteger)
    latency_seconds: Mapped[float | None]
    latency_iqr_seconds: Mapped[float | None]
    width_step: Mapped[float | None]
    state: Mapped[str] = mapped_column(String(16))
    val_accuracy: Mapped[float | None]
    val_standard_error: Mapped[float | None]
    val_samples: Mapped[int | None]
    test_accuracy: Mapped[float | None]
    member_val_accuracies: Mapped[list[float] | None] = mapped_column(JSON(none_as_null=True))
    val_nll: Mapped[float | None]
    val_ece: Mapped[float | None]
    val_brier: Mapped[float | None]
    member_val_calibration: Mapped[dict[str, list[float]] | None] = mapped_column(JSON(none_as_null=True))
    test_nll: Mapped[float | None]
    test_ece: Mapped[float | None]
    test_brier: Mapped[float | None]
    reused_from_id: Mapped[int | None] = mapped_column(ForeignKey(f"{TABLE_PREFIX}candidates.id"))
    retry_of: Mapped[int | None]
    retried_as: Mapped[int | None]
    resumed_from_epoch: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    warm_started_from: Mapped[int | None]
    resume_refused: Mapped[str | None] = mapped_column(Text)
    checkpoint_error: Mapped[str | None] = mapped_column(Text)
    baseline: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wall_seconds: Mapped[float | None]


class EpochMetric(Base):
    """What one epoch of a candidate's training measured (``EpochMetrics`` of the trainer)."""

    __tablename__ = TABLE_PREFIX + "epoch_metrics"
    __table_args__ = (UniqueConstraint("candidate_id", "epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey(Candidate.id, ondelete="CASCADE"))
    epoch: Mapped[int]
    train_loss: Mapped[float]
    train_cross_entropy: Mapped[float]
    train_cotraining: Mapped[float]
    lr: Mapped[float]
    lambda_cot: Mapped[float]
    val_accuracy: Mapped[float]
    member_val_accuracies: Mapped[list[float]] = mapped_column(JSON)
    seconds: Mapped[float]
    val_nll: Mapped[float | None]
    val_ece: Mapped[float | None]
    val_brier: Mapped[float | None]
    member_val_calibration: Mapped[dict[str, list[float]] | None] = mapped_column(JSON(none_as_null=True))


class Confirmation(Base):
    """One retraining of a study's candidate with another seed (``splitsearch confirm``).

    The seed changes the initialisation, the augmentation draws and the validation split, so the
    spread of a candidate's confirmations says how much of its search result was luck.  The row
    names the trial it confirms; its config is that trial's with ``train.seed`` replaced.
    """

    __tablename__ = TABLE_PREFIX + "confirmations"
    __table_args__ = (
        UniqueConstraint("study_name", "trial_number", "seed"),
        CheckConstraint(f"state IN ({', '.join(repr(state) for state in CONFIRMATION_STATES)})", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512))
    trial_number: Mapped[int]
    config_hash: Mapped[str] = mapped_column(String(16))
    baseline: Mapped[str | None] = mapped_column(String(128))
    seed: Mapped[int]
    epochs: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    val_accuracy: Mapped[float | None]
    val_standard_error: Mapped[float | None]
    val_samples: Mapped[int | None]
    member_val_accuracies: Mapped[list[float] | None] = mapped_column(JSON(none_as_null=True))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wall_seconds: Mapped[float | None]
    val_nll: Mapped[float | None]
    val_ece: Mapped[float | None]
    val_brier: Mapped[float | None]
    member_val_calibration: Mapped[dict[str, list[float]] | None] = mapped_column(JSON(none_as_null=True))


class Worker(Base):
    """A process that worked on a study (``splitsearch run`` on some machine), and its sampler seed.

    The worker that creates a study samples with the study's seed, so a single worker draws what
    it drew before; a worker that joins an existing study samples with the seed plus its row id,
    which no other worker of the store has, so concurrent workers never draw the same random
    candidates.
    """

    __tablename__ = TABLE_PREFIX + "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    sampler_seed: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ModeTimings(Base):
    """How fast each execution mode trained a shape of candidate on a kind of device (``--mode auto``).

    Measured once per shape (:mod:`splitsearch.train.autotune`): a later candidate of the same
    architecture, S, widths, input, batch and device kind chooses its mode from these timings
    without measuring.  ``timings`` is a list of ``{"mode", "step_seconds", "compile_seconds"}``.
    """

    __tablename__ = TABLE_PREFIX + "mode_timings"
    # Named here: the naming convention's name of six columns passes PostgreSQL's 63 characters.
    __table_args__ = (UniqueConstraint("arch", "S", "widths", "input", "batch_size", "device_kind",
                                       name="uq_splitsearch_mode_timings_shape"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    arch: Mapped[str] = mapped_column(String(64))
    S: Mapped[int]
    widths: Mapped[str] = mapped_column(String(255))
    input: Mapped[str] = mapped_column(String(512))
    batch_size: Mapped[int]
    device_kind: Mapped[str] = mapped_column(String(255))
    timings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
