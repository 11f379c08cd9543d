"""Writing and reading candidates and their epochs: the :class:`Store`.

Many workers of one study write to the same database.  Each write is one short transaction, so
a crash never leaves half a candidate, and rows are written with ``INSERT ... ON CONFLICT DO
UPDATE`` keyed on the tables' unique constraints, so two workers never collide on a row and a
retried trial or a re-reported epoch replaces what was there.  Being one transaction, each
public method is also called again while the database is unreachable, for a bounded time
(:mod:`splitsearch.store.retry`).  Every write transaction starts
with a write: on SQLite that takes the write lock at once (waiting up to the connection
timeout), where reading first and then writing can fail at once with "database is locked".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, get_args

import yaml
from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import aliased, sessionmaker

from splitsearch.config import SplitConfig
from splitsearch.cost.figures import CandidateCost
from splitsearch.errors import SplitsearchError
from splitsearch.metrics import EpochMetrics
from splitsearch.store.models import STATES, Candidate, Confirmation, EpochMetric, ModeTimings, Worker
from splitsearch.store.retry import CONNECT_TIMEOUT_SECONDS, StoragePatience, patient

if TYPE_CHECKING:
    from splitsearch.cost.figures import Latency

FinishState = Literal["complete", "pruned", "failed", "interrupted"]

# Dialect-specific INSERT constructs that offer on_conflict_do_update with the same signature.
_INSERTS: dict[str, Callable[..., Any]] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}

# Epoch columns named as in EpochMetrics (whose member accuracies are ``val_member_accuracies``).
_EPOCH_FIELDS = ("epoch", "train_loss", "train_cross_entropy", "train_cotraining", "lr", "lambda_cot",
                 "val_accuracy", "seconds", "val_nll", "val_ece", "val_brier")
# The calibration figures, as columns of a row and as EpochMetrics' member lists (``val_member_<name>``).
CALIBRATION_NAMES = ("nll", "ece", "brier")

# The connections a store holds on a database server.
STORE_CONNECTIONS = 1

# A failure reason is one line of an exception message; a runaway message is cut here.
_ERROR_LENGTH = 2000

# Columns that say what a candidate is, as opposed to how its trial went.
_DESCRIPTION_COLUMNS = ("config_yaml", "config_hash", "dataset", "epochs", "arch", "S", "width_mult",
                        "params", "macs", "flops", "activation_bytes", "sequential_activation_bytes")

# Every column a retried trial overwrites: all but the key.
_REPLACED_COLUMNS = tuple(
    column.key for column in Candidate.__table__.columns
    if column.key not in ("id", "study_name", "trial_number")
)


@dataclass(frozen=True)
class CandidateRecord:
    """A snapshot of one candidate row, detached from any session, plus its parsed ``config``."""

    id: int
    study_name: str
    trial_number: int
    config_yaml: str
    config_hash: str
    dataset: str
    epochs: int
    arch: str
    S: int
    width_mult: float
    params: int
    macs: int
    flops: int
    activation_bytes: int
    sequential_activation_bytes: int | None
    latency_seconds: float | None
    latency_iqr_seconds: float | None
    width_step: float | None
    state: str
    val_accuracy: float | None
    val_standard_error: float | None
    val_samples: int | None
    test_accuracy: float | None
    member_val_accuracies: tuple[float, ...] | None
    val_nll: float | None
    val_ece: float | None
    val_brier: float | None
    member_val_calibration: dict[str, list[float]] | None
    test_nll: float | None
    test_ece: float | None
    test_brier: float | None
    reused_from_id: int | None
    retry_of: int | None
    retried_as: int | None
    resumed_from_epoch: int | None
    error: str | None
    warm_started_from: int | None
    resume_refused: str | None
    checkpoint_error: str | None
    baseline: str | None
    started_at: datetime
    finished_at: datetime | None
    wall_seconds: float | None
    config: SplitConfig

    @classmethod
    def from_row(cls, row: Candidate) -> CandidateRecord:
        """Copy a row while its session is open, so the record outlives the session."""
        columns = {column.key: getattr(row, column.key) for column in Candidate.__table__.columns}
        members = columns.pop("member_val_accuracies")
        return cls(
            **columns,
            member_val_accuracies=None if members is None else tuple(members),
            config=SplitConfig.from_dict(yaml.safe_load(row.config_yaml)),
        )


@dataclass(frozen=True)
class ConfirmationRecord:
    """A snapshot of one confirmation row: a candidate of a study retrained with another seed."""

    id: int
    study_name: str
    trial_number: int
    config_hash: str
    baseline: str | None
    seed: int
    epochs: int
    state: str
    val_accuracy: float | None
    val_standard_error: float | None
    val_samples: int | None
    member_val_accuracies: tuple[float, ...] | None
    started_at: datetime
    finished_at: datetime | None
    wall_seconds: float | None
    val_nll: float | None
    val_ece: float | None
    val_brier: float | None
    member_val_calibration: dict[str, list[float]] | None

    @classmethod
    def from_row(cls, row: Confirmation) -> ConfirmationRecord:
        columns = {column.key: getattr(row, column.key) for column in Confirmation.__table__.columns}
        members = columns.pop("member_val_accuracies")
        return cls(**columns, member_val_accuracies=None if members is None else tuple(members))


@dataclass(frozen=True)
class WorkerRecord:
    """A worker that joined a study: where it ran and the sampler seed it used."""

    id: int
    study_name: str
    host: str
    pid: int
    sampler_seed: int
    started_at: datetime


class StoreError(SplitsearchError, ValueError):
    """The store cannot use the database as given (another kind than SQLite or PostgreSQL)."""


class Store:
    """The store of one database (SQLite or PostgreSQL), whose tables :func:`upgrade` created."""

    def __init__(self, url: str, patience: StoragePatience | None = None) -> None:
        """Connect lazily to ``url``, e.g. ``sqlite:///splitsearch.db`` or ``postgresql+psycopg://...``.

        ``patience``: how long a call waits for an unreachable database; pass the one of Optuna's
        storage of the same database (:func:`splitsearch.store.storage.open_storage`), so an
        outage is announced and timed once.  By default, a patience of its own.

        Raises:
            StoreError: another database than SQLite or PostgreSQL (the upserts are written for
                those two, the backends Optuna's storage is used with here).
        """
        backend = make_url(url).get_backend_name()
        if backend not in _INSERTS:
            raise StoreError(f"the splitsearch store supports SQLite and PostgreSQL URLs, not {backend}")
        self._insert = _INSERTS[backend]
        self.patience = patience or StoragePatience(url)
        # pool_pre_ping: a long training epoch outlives idle connections that servers and
        # firewalls drop.  The SQLite timeout lets a worker wait for another's write.  On a
        # server, one connection: the store is used by one thread, one transaction at a time.
        pool = {"connect_args": {"timeout": 30}} if backend == "sqlite" else {
            "pool_size": STORE_CONNECTIONS, "max_overflow": 0,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
        self._engine: Engine = create_engine(url, pool_pre_ping=True, **pool)
        if backend == "sqlite":
            event.listen(self._engine, "connect", _enable_sqlite_foreign_keys)
        self._sessions = sessionmaker(self._engine)

    def close(self) -> None:
        """Close the pooled connections (the store can still be used; it reconnects)."""
        self._engine.dispose()

    # -- writing ---------------------------------------------------------------------------------

    @patient
    def start_candidate(self, study_name: str, trial_number: int, config: SplitConfig, cost: CandidateCost,
                        width_step: float | None = None, baseline: str | None = None,
                        retry_of: int | None = None, warm_started_from: int | None = None,
                        latency: Latency | None = None) -> int:
        """Record that a trial starts training ``config``; returns the candidate id.

        ``latency``: what the worker measured before training, where the study measures it.

        ``retry_of``: the trial this one retries (Optuna gives a retry a new number).  That
        trial's row is marked ``interrupted`` if it still says ``running`` (its worker died
        without a word) and points at this one through ``retried_as``.  A trial number written
        again gets its row back, reset to ``running``, without the earlier attempt's epochs.
        """
        candidate_id = self._write_candidate(
            study_name, trial_number, **_describe(config, cost), **_latency_columns(latency),
            width_step=width_step, baseline=baseline, retry_of=retry_of, warm_started_from=warm_started_from,
            state="running", started_at=_now(),
        )
        if retry_of is not None:
            self.mark_interrupted(study_name, retry_of, retried_as=trial_number)
        return candidate_id

    @patient
    def record_resumed(self, candidate_id: int, epoch: int) -> None:
        """Record that the candidate continued a checkpoint holding ``epoch`` finished epochs."""
        self._update_candidate(candidate_id, resumed_from_epoch=epoch)

    @patient
    def record_resume_refused(self, candidate_id: int, reason: str) -> None:
        """Record that the attempt could not read the checkpoint it should resume (``reason`` names it).

        It trains from epoch 1 instead, so its ``resumed_from_epoch`` stays empty.
        """
        self._update_candidate(candidate_id, resume_refused=reason[:_ERROR_LENGTH])

    @patient
    def record_checkpoint_error(self, candidate_id: int, reason: str) -> None:
        """Record a file the attempt could not write; the first one is kept (the rest are the same fault)."""
        statement = (update(Candidate).where(Candidate.id == candidate_id, Candidate.checkpoint_error.is_(None))
                     .values(checkpoint_error=reason[:_ERROR_LENGTH]))
        with self._sessions.begin() as session:
            session.execute(statement)

    def _update_candidate(self, candidate_id: int, **values: Any) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Candidate).where(Candidate.id == candidate_id).values(**values))

    @patient
    def mark_interrupted(self, study_name: str, trial_number: int, retried_as: int | None = None) -> None:
        """End a trial's row that still says ``running`` as ``interrupted`` (and link its retry).

        A row that has already ended keeps its state; only the link to the retry is added.
        """
        row = select(Candidate).where(Candidate.study_name == study_name, Candidate.trial_number == trial_number)
        with self._sessions.begin() as session:
            candidate = session.scalars(row).first()
            if candidate is None:
                return
            if candidate.state == "running":
                candidate.state = "interrupted"
                candidate.finished_at = _now()
                candidate.wall_seconds = (candidate.finished_at - candidate.started_at).total_seconds()
            if retried_as is not None:
                candidate.retried_as = retried_as

    @patient
    def settle_candidate(self, study_name: str, trial_number: int, state: str, val_accuracy: float | None = None,
                         error: str | None = None) -> None:
        """Put a trial's row in the final ``state`` its Optuna trial ended in (``splitsearch db check --repair``).

        A row that was left running gets its end time; ``val_accuracy`` and ``error`` fill what
        the row lacks (a result or a failure Optuna holds).

        Raises:
            ValueError: ``state`` is not one of the store's states.
            LookupError: the trial has no row.
        """
        if state not in STATES:
            raise ValueError(f"a candidate's state is one of {', '.join(STATES)}, not {state!r}")
        row = select(Candidate).where(Candidate.study_name == study_name, Candidate.trial_number == trial_number)
        with self._sessions.begin() as session:
            candidate = session.scalars(row).first()
            if candidate is None:
                raise LookupError(f"no row of trial {trial_number} in study {study_name!r}")
            candidate.state = state
            if candidate.finished_at is None:
                candidate.finished_at = _now()
                candidate.wall_seconds = (candidate.finished_at - candidate.started_at).total_seconds()
            if candidate.val_accuracy is None:
                candidate.val_accuracy = val_accuracy
            if error is not None:
                candidate.error = error[:_ERROR_LENGTH]

    @patient
    def restore_candidate(self, study_name: str, trial_number: int, config: SplitConfig, cost: CandidateCost,
                          state: str, **columns: Any) -> int:
        """Write the row of a finished trial that lost it, from what Optuna's trial holds; returns its id.

        ``columns`` are any other columns of the row (its result, links, times).  The epochs the
        trial trained are gone with the row and are not rebuilt.
        """
        return self._write_candidate(study_name, trial_number, **_describe(config, cost), state=state, **columns)

    @patient
    def clear_retry_link(self, study_name: str, trial_number: int, link: Literal["retry_of", "retried_as"]) -> bool:
        """Clear a row's ``retry_of`` or ``retried_as`` when the row it names does not exist; whether it did."""
        rows = select(Candidate.trial_number).where(Candidate.study_name == study_name)
        statement = (update(Candidate)
                     .where(Candidate.study_name == study_name, Candidate.trial_number == trial_number,
                            getattr(Candidate, link).is_not(None), getattr(Candidate, link).not_in(rows))
                     .values({link: None}).returning(Candidate.id))
        with self._sessions.begin() as session:
            return session.execute(statement).first() is not None

    @patient
    def record_epoch(self, candidate_id: int, metrics: EpochMetrics) -> None:
        """Record one epoch; an epoch reported again (after a resume) replaces the earlier row."""
        values = {name: getattr(metrics, name) for name in _EPOCH_FIELDS}
        values["member_val_accuracies"] = list(metrics.val_member_accuracies)
        values["member_val_calibration"] = epoch_calibration(metrics)["member_val_calibration"]
        statement = self._insert(EpochMetric).values(candidate_id=candidate_id, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[EpochMetric.candidate_id, EpochMetric.epoch],
            set_={name: statement.excluded[name] for name in values if name != "epoch"},
        )
        with self._sessions.begin() as session:
            session.execute(statement)

    @patient
    def finish_candidate(self, candidate_id: int, state: FinishState, val_accuracy: float | None = None,
                         test_accuracy: float | None = None,
                         member_val_accuracies: Sequence[float] | None = None,
                         wall_seconds: float | None = None, val_standard_error: float | None = None,
                         val_samples: int | None = None, error: str | None = None,
                         **calibration: Any) -> None:
        """Record how a started candidate ended.

        Without ``wall_seconds`` the time since :meth:`start_candidate` is recorded, so a failed
        trial still says how long it ran.  ``val_standard_error`` is the binomial standard error
        of ``val_accuracy`` on ``val_samples`` images (:mod:`splitsearch.stats`); ``error`` is why
        a failed candidate failed.  ``calibration``: the calibration columns
        (:func:`epoch_calibration` of its last epoch; ``test_nll``, ``test_ece``, ``test_brier``).

        Raises:
            ValueError: ``state`` is not complete, pruned or failed.
            LookupError: there is no candidate ``candidate_id``.
        """
        if state not in get_args(FinishState):
            raise ValueError(f"a candidate finishes as {', '.join(get_args(FinishState))}, not {state!r}")
        _check_calibration_columns(calibration, _CANDIDATE_CALIBRATION)
        if error is not None:
            error = error[:_ERROR_LENGTH]
        finished_at = _now()
        members = None if member_val_accuracies is None else list(member_val_accuracies)
        with self._sessions.begin() as session:
            started_at = session.execute(
                update(Candidate).where(Candidate.id == candidate_id).values(
                    state=state, val_accuracy=val_accuracy, val_standard_error=val_standard_error,
                    val_samples=val_samples, test_accuracy=test_accuracy, member_val_accuracies=members,
                    finished_at=finished_at, wall_seconds=wall_seconds, error=error,
                    **dict.fromkeys(_CANDIDATE_CALIBRATION) | calibration,
                ).returning(Candidate.started_at)
            ).scalar_one_or_none()
            if started_at is None:
                raise LookupError(f"no candidate with id {candidate_id}")
            if wall_seconds is None:
                session.execute(update(Candidate).where(Candidate.id == candidate_id).values(
                    wall_seconds=(finished_at - started_at).total_seconds()))

    @patient
    def record_over_budget(self, study_name: str, trial_number: int, config: SplitConfig, cost: CandidateCost,
                           baseline: str | None = None, latency: Latency | None = None) -> int:
        """Record a trial pruned before training because ``cost`` or ``latency`` exceeds the budget; returns its id.

        Keeping these rows shows which parts of the search space the budget cut off.
        """
        now = _now()
        return self._write_candidate(
            study_name, trial_number, **_describe(config, cost), **_latency_columns(latency),
            baseline=baseline, state="over_budget", started_at=now, finished_at=now, wall_seconds=0.0,
        )

    @patient
    def record_reused(self, study_name: str, trial_number: int, source: CandidateRecord,
                      baseline: str | None = None, latency: Latency | None = None) -> int:
        """Record a trial answered with the result of an identical complete candidate; returns its id.

        The row copies the source's config, cost and accuracies and points at it through
        ``reused_from_id`` (its epochs stay with the source).  ``wall_seconds`` is 0: this trial
        trained nothing.  ``latency`` is this worker's measurement, not the source's.

        Raises:
            ValueError: ``source`` is not a complete candidate.
        """
        if source.state != "complete":
            raise ValueError(
                f"only a complete candidate can be reused; candidate {source.id} is {source.state}")
        now = _now()
        members = source.member_val_accuracies
        return self._write_candidate(
            study_name, trial_number,
            **{name: getattr(source, name) for name in _DESCRIPTION_COLUMNS}, **_latency_columns(latency),
            width_step=source.width_step, baseline=baseline, state="reused",
            val_accuracy=source.val_accuracy, val_standard_error=source.val_standard_error,
            val_samples=source.val_samples, test_accuracy=source.test_accuracy,
            member_val_accuracies=None if members is None else list(members),
            **{name: getattr(source, name) for name in _CANDIDATE_CALIBRATION},
            reused_from_id=source.id, started_at=now, finished_at=now, wall_seconds=0.0,
        )

    def _write_candidate(self, study_name: str, trial_number: int, **columns: Any) -> int:
        """Insert a trial's row, or overwrite every column of an earlier attempt's row and drop its epochs."""
        row = dict.fromkeys(_REPLACED_COLUMNS) | columns
        statement = self._insert(Candidate).values(study_name=study_name, trial_number=trial_number, **row)
        statement = statement.on_conflict_do_update(
            index_elements=[Candidate.study_name, Candidate.trial_number],
            set_={name: statement.excluded[name] for name in row},
        ).returning(Candidate.id)
        with self._sessions.begin() as session:
            candidate_id = session.execute(statement).scalar_one()
            session.execute(delete(EpochMetric).where(EpochMetric.candidate_id == candidate_id))
        return candidate_id

    @patient
    def start_confirmation(self, study_name: str, trial_number: int, config: SplitConfig,
                           baseline: str | None = None) -> int:
        """Record that trial ``trial_number``'s candidate is retrained as ``config`` (its seed); returns the id.

        A confirmation started again after a crash gets its row back, reset to ``running``.
        """
        row = dict.fromkeys(("val_accuracy", "val_standard_error", "val_samples", "member_val_accuracies",
                             "finished_at", "wall_seconds", *_CONFIRMATION_CALIBRATION))
        row |= {"config_hash": config.config_hash(), "baseline": baseline, "epochs": config.train.epochs,
                "state": "running", "started_at": _now()}
        statement = self._insert(Confirmation).values(
            study_name=study_name, trial_number=trial_number, seed=config.train.seed, **row)
        statement = statement.on_conflict_do_update(
            index_elements=[Confirmation.study_name, Confirmation.trial_number, Confirmation.seed],
            set_={name: statement.excluded[name] for name in row},
        ).returning(Confirmation.id)
        with self._sessions.begin() as session:
            return session.execute(statement).scalar_one()

    @patient
    def finish_confirmation(self, confirmation_id: int, state: Literal["complete", "failed"],
                            val_accuracy: float | None = None, val_standard_error: float | None = None,
                            val_samples: int | None = None, member_val_accuracies: Sequence[float] | None = None,
                            wall_seconds: float | None = None, **calibration: Any) -> None:
        """Record how a confirmation ended; ``calibration``: :func:`epoch_calibration` of its last epoch.

        Raises:
            ValueError: ``state`` is not complete or failed.
            LookupError: there is no confirmation ``confirmation_id``.
        """
        if state not in ("complete", "failed"):
            raise ValueError(f"a confirmation finishes as complete or failed, not {state!r}")
        _check_calibration_columns(calibration, _CONFIRMATION_CALIBRATION)
        members = None if member_val_accuracies is None else list(member_val_accuracies)
        with self._sessions.begin() as session:
            found = session.execute(
                update(Confirmation).where(Confirmation.id == confirmation_id).values(
                    state=state, val_accuracy=val_accuracy, val_standard_error=val_standard_error,
                    val_samples=val_samples, member_val_accuracies=members, finished_at=_now(),
                    wall_seconds=wall_seconds, **dict.fromkeys(_CONFIRMATION_CALIBRATION) | calibration,
                ).returning(Confirmation.id)
            ).scalar_one_or_none()
            if found is None:
                raise LookupError(f"no confirmation with id {confirmation_id}")

    @patient
    def register_worker(self, study_name: str, host: str, pid: int, study_seed: int, creator: bool) -> int:
        """Record a worker joining ``study_name``; returns the sampler seed it must use.

        The study's creator samples with ``study_seed``; any other worker with ``study_seed`` plus
        its row id, which is unique in the store (see :class:`splitsearch.store.models.Worker`).
        """
        with self._sessions.begin() as session:
            worker = Worker(study_name=study_name, host=host, pid=pid, sampler_seed=study_seed, started_at=_now())
            session.add(worker)
            session.flush()
            if not creator:
                worker.sampler_seed = study_seed + worker.id
            return worker.sampler_seed

    @patient
    def running_trial_numbers(self, study_name: str) -> list[int]:
        """Trials whose row still says ``running``."""
        query = select(Candidate.trial_number).where(Candidate.study_name == study_name,
                                                      Candidate.state == "running")
        with self._sessions() as session:
            return list(session.scalars(query))

    @patient
    def record_mode_timings(self, shape: dict[str, Any], timings: list[dict[str, Any]]) -> None:
        """Keep the execution modes' timings of a shape of candidate (:mod:`splitsearch.train.autotune`).

        ``shape``: ``arch``, ``S``, ``widths``, ``input``, ``batch_size`` and ``device_kind``.  A
        shape measured again (by two workers at once, or with its compiled modes added) keeps the
        latest timings.
        """
        values = {**shape, "timings": timings, "measured_at": _now()}
        statement = self._insert(ModeTimings).values(**values).on_conflict_do_update(
            index_elements=list(shape), set_={"timings": timings, "measured_at": values["measured_at"]})
        with self._sessions.begin() as session:
            session.execute(statement)

    # -- reading ---------------------------------------------------------------------------------

    @patient
    def mode_timings(self, shape: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The timings kept for ``shape`` (as :meth:`record_mode_timings` took it), None if none."""
        query = select(ModeTimings.timings).filter_by(**shape)
        with self._sessions() as session:
            return session.scalars(query).first()

    @patient
    def device_mode_timings(self, device_kind: str) -> list[list[dict[str, Any]]]:
        """Every shape's timings kept for ``device_kind``, oldest first: what compiling gave on that kind of device."""
        query = select(ModeTimings.timings).filter_by(device_kind=device_kind).order_by(ModeTimings.id)
        with self._sessions() as session:
            return list(session.scalars(query))


    @patient
    def find_reusable(self, config_hash: str, dataset: str, epochs: int) -> CandidateRecord | None:
        """A complete candidate, of any study, that trained the same config for as many epochs.

        Lets a study skip training a candidate that an earlier one already trained; the oldest
        such candidate is returned, so repeated look-ups agree.
        """
        query = (
            select(Candidate)
            .where(Candidate.config_hash == config_hash, Candidate.dataset == dataset,
                   Candidate.epochs == epochs, Candidate.state == "complete",
                   Candidate.warm_started_from.is_(None))  # a fine-tuned result depends on its start
            .order_by(Candidate.id)
            .limit(1)
        )
        with self._sessions() as session:
            row = session.scalars(query).first()
            return None if row is None else CandidateRecord.from_row(row)

    @patient
    def find_finished_in_study(self, study_name: str, config_hash: str, dataset: str,
                               epochs: int) -> tuple[CandidateRecord, int] | None:
        """The complete candidate held by the first trial of ``study_name`` that finished this one, and that trial.

        What :meth:`find_reusable` matches, restricted to one study: a row that trained the
        candidate (``complete``; returned itself) or reused another study's result (``reused``;
        the row it copied is returned), so a later trial of the study proposing the same
        candidate is answered exactly as the first one was.  ``None`` when the study has none.
        """
        first = aliased(Candidate)
        query = (
            select(Candidate, first.trial_number)
            .join(first, Candidate.id == func.coalesce(first.reused_from_id, first.id))
            .where(first.study_name == study_name, first.config_hash == config_hash, first.dataset == dataset,
                   first.epochs == epochs, first.state.in_(("complete", "reused")),
                   first.warm_started_from.is_(None))
            .order_by(first.trial_number)
            .limit(1)
        )
        with self._sessions() as session:
            found = session.execute(query).first()
            return None if found is None else (CandidateRecord.from_row(found[0]), found[1])

    @patient
    def study_names(self) -> list[str]:
        """The studies the store holds rows of, by name."""
        query = select(Candidate.study_name).distinct().order_by(Candidate.study_name)
        with self._sessions() as session:
            return list(session.scalars(query))

    @patient
    def candidates(self, study_name: str) -> list[CandidateRecord]:
        """Every candidate of a study, in trial order."""
        query = select(Candidate).where(Candidate.study_name == study_name).order_by(Candidate.trial_number)
        with self._sessions() as session:
            return [CandidateRecord.from_row(row) for row in session.scalars(query)]

    @patient
    def epochs(self, candidate_id: int) -> list[EpochMetrics]:
        """The recorded epochs of a candidate, in order, as the trainer reported them."""
        query = (select(EpochMetric).where(EpochMetric.candidate_id == candidate_id)
                 .order_by(EpochMetric.epoch))
        with self._sessions() as session:
            return [
                EpochMetrics(**{name: getattr(row, name) for name in _EPOCH_FIELDS},
                             val_member_accuracies=list(row.member_val_accuracies),
                             **{f"val_member_{name}": list(members) for name, members
                                in (row.member_val_calibration or {}).items()})
                for row in session.scalars(query)
            ]

    @patient
    def workers(self, study_name: str) -> list[WorkerRecord]:
        """The workers that joined a study, in the order they joined."""
        query = select(Worker).where(Worker.study_name == study_name).order_by(Worker.id)
        with self._sessions() as session:
            return [WorkerRecord(**{column.key: getattr(row, column.key) for column in Worker.__table__.columns})
                    for row in session.scalars(query)]

    @patient
    def confirmations(self, study_name: str) -> list[ConfirmationRecord]:
        """Every confirmation of a study, by trial number and seed."""
        query = (select(Confirmation).where(Confirmation.study_name == study_name)
                 .order_by(Confirmation.trial_number, Confirmation.seed))
        with self._sessions() as session:
            return [ConfirmationRecord.from_row(row) for row in session.scalars(query)]


_CONFIRMATION_CALIBRATION = ("val_nll", "val_ece", "val_brier", "member_val_calibration")
_CANDIDATE_CALIBRATION = _CONFIRMATION_CALIBRATION + ("test_nll", "test_ece", "test_brier")


def epoch_calibration(metrics: EpochMetrics) -> dict[str, Any]:
    """The calibration columns of a row from an epoch's metrics: the ensemble's figures and the members'.

    An epoch that measured none (a checkpoint of an older release) gives empty columns.
    """
    members = {name: list(getattr(metrics, f"val_member_{name}")) for name in CALIBRATION_NAMES}
    return {"val_nll": metrics.val_nll, "val_ece": metrics.val_ece, "val_brier": metrics.val_brier,
            "member_val_calibration": members if any(members.values()) else None}


def _check_calibration_columns(given: dict[str, Any], known: tuple[str, ...]) -> None:
    if unknown := sorted(set(given) - set(known)):
        raise TypeError(f"unknown calibration column {unknown[0]} (known: {', '.join(known)})")


def _describe(config: SplitConfig, cost: CandidateCost) -> dict[str, Any]:
    return {
        "config_yaml": config.to_yaml(),
        "config_hash": config.config_hash(),
        "dataset": config.dataset,
        "epochs": config.train.epochs,
        "arch": config.arch,
        "S": config.S,
        "width_mult": config.width_mult,
        "params": cost.params,
        "macs": cost.macs,
        "flops": cost.flops,
        "activation_bytes": cost.activation_bytes,
        "sequential_activation_bytes": cost.sequential_activation_bytes,
    }


def _latency_columns(latency: Latency | None) -> dict[str, float | None]:
    return {"latency_seconds": None if latency is None else latency.seconds,
            "latency_iqr_seconds": None if latency is None else latency.iqr_seconds}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _enable_sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite ignores foreign keys (and so ON DELETE CASCADE) unless each connection asks for them."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()
