"""The SQL store against real databases: SQLite always, PostgreSQL when
``SPLITSEARCH_TEST_POSTGRES_URL`` names a server (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test).

Each PostgreSQL case gets a database of its own, created on that server and dropped afterwards:
the migration tests need an empty one, and ``find_reusable`` searches across studies, so rows
left by another test (or another run) would change its answer.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Callable, Iterator

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

import splitsearch
from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.figures import CandidateCost, Latency
from splitsearch.metrics import EpochMetrics
from splitsearch.store import VERSION_TABLE, Store, current_revision, upgrade
from splitsearch.store.migrations import alembic_config, is_store_object, script_location
from splitsearch.store.models import Base
from splitsearch.store.records import epoch_calibration

from conftest import postgres_database

STORE_TABLES = {"splitsearch_candidates", "splitsearch_epoch_metrics", "splitsearch_confirmations",
                "splitsearch_workers", "splitsearch_mode_timings", VERSION_TABLE}
CONFIG = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits", train=TrainConfig(epochs=3))

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- databases ------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'splitsearch.db'}"
    else:
        with postgres_database(request.getfixturevalue("postgres_server")) as url:
            yield url


@pytest.fixture
def store(empty_url: str) -> Iterator[Store]:
    upgrade(empty_url)
    store = Store(empty_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def cost() -> CandidateCost:
    return count_config(CONFIG)


def table_names(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@contextmanager
def optuna_storage(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """Optuna's storage of the database, its connections closed on exit."""
    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def epoch(number: int, accuracy: float = 0.5) -> EpochMetrics:
    return EpochMetrics(epoch=number, train_loss=2.0 / number, train_cross_entropy=1.5 / number,
                        train_cotraining=0.5 / number, lr=0.1 / number, lambda_cot=0.5, val_accuracy=accuracy,
                        val_member_accuracies=[accuracy - 0.05, accuracy - 0.1], seconds=1.25)


# -- migrations -----------------------------------------------------------------------------------

def test_upgrade_creates_tables_and_own_version_table(empty_url: str) -> None:
    assert current_revision(empty_url) is None

    upgrade(empty_url)

    assert table_names(empty_url) == STORE_TABLES
    assert current_revision(empty_url) == head_revision(empty_url)


def test_upgrade_is_idempotent_and_keeps_rows(empty_url: str, cost: CandidateCost) -> None:
    upgrade(empty_url)
    store = Store(empty_url)
    store.start_candidate("study", 0, CONFIG, cost)

    upgrade(empty_url)

    assert current_revision(empty_url) == head_revision(empty_url)
    assert [record.trial_number for record in store.candidates("study")] == [0]
    store.close()


def test_migration_builds_what_the_models_describe(empty_url: str) -> None:
    upgrade(empty_url)
    engine = create_engine(empty_url, poolclass=NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "version_table": VERSION_TABLE, "include_name": is_store_object, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("store_first", [True, False], ids=["store-first", "optuna-first"])
def test_coexists_with_optuna_storage(empty_url: str, cost: CandidateCost, store_first: bool) -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1)

    if store_first:
        upgrade(empty_url)
    with optuna_storage(empty_url) as storage:
        optuna.create_study(storage=storage, study_name="shared").optimize(objective, n_trials=2)
    upgrade(empty_url)
    store = Store(empty_url)
    store.start_candidate("shared", 0, CONFIG, cost)

    with optuna_storage(empty_url) as storage:
        study = optuna.load_study(storage=storage, study_name="shared")
        study.optimize(objective, n_trials=1)
        assert len(study.trials) == 3
        assert storage.get_current_version() == storage.get_head_version()
    assert current_revision(empty_url) == head_revision(empty_url)
    assert {"alembic_version", "studies", "trials"} | STORE_TABLES <= table_names(empty_url)
    assert len(store.candidates("shared")) == 1
    store.close()


def test_downgrade_removes_only_the_store(empty_url: str) -> None:
    with optuna_storage(empty_url) as storage:
        optuna.create_study(storage=storage, study_name="kept")
    upgrade(empty_url)

    command.downgrade(alembic_config(empty_url), "base")

    assert not table_names(empty_url) & {"splitsearch_candidates", "splitsearch_epoch_metrics"}
    assert current_revision(empty_url) is None
    with optuna_storage(empty_url) as storage:
        assert optuna.load_study(storage=storage, study_name="kept")


@dataclass(frozen=True)
class Revision:
    """A revision of the store after the first: what it adds, and a use of it on a row written before it."""

    revision: str
    added: frozenset[tuple[str, str]]  # (table, column)
    use: Callable[[Store, Any, CandidateCost], None]

    @property
    def previous(self) -> str:
        return f"{int(self.revision) - 1:04d}"


def _use_checkpoint_faults(store: Store, row: Any, cost: CandidateCost) -> None:
    assert (row.resume_refused, row.checkpoint_error) == (None, None)
    store.record_checkpoint_error(row.id, "cannot write runs/x/checkpoint.pt: [Errno 28] No space left on device")
    store.record_checkpoint_error(row.id, "cannot write runs/x/model.pt: [Errno 28] No space left on device")
    store.record_resume_refused(row.id, "the checkpoint runs/x/checkpoint.pt cannot be read (EOFError)")
    [row] = store.candidates("old")
    assert row.checkpoint_error.startswith("cannot write runs/x/checkpoint.pt")  # the first fault is kept
    assert row.resume_refused == "the checkpoint runs/x/checkpoint.pt cannot be read (EOFError)"


def _use_latency(store: Store, row: Any, cost: CandidateCost) -> None:
    assert (row.latency_seconds, row.latency_iqr_seconds) == (None, None)
    latency = Latency(seconds=0.0125, iqr_seconds=0.0005, batch_size=1, runs=40, execution="sequential on cpu")
    store.record_over_budget("new", 0, CONFIG, cost, latency=latency)
    [new] = store.candidates("new")
    assert (new.state, new.latency_seconds, new.latency_iqr_seconds) == ("over_budget", 0.0125, 0.0005)


def _use_calibration(store: Store, row: Any, cost: CandidateCost) -> None:
    assert (row.val_nll, row.val_ece, row.val_brier, row.member_val_calibration) == (None, None, None, None)
    candidate = store.start_candidate("new", 0, CONFIG, cost)
    calibrated = dataclasses.replace(epoch(1), val_nll=0.9, val_ece=0.05, val_brier=0.4, val_member_nll=[1.0, 1.1],
                                     val_member_ece=[0.06, 0.07], val_member_brier=[0.45, 0.5])
    store.record_epoch(candidate, calibrated)
    store.finish_candidate(candidate, "complete", val_accuracy=0.5, test_accuracy=0.45, test_nll=1.2, test_ece=0.08,
                           test_brier=0.6, **epoch_calibration(calibrated))
    [new] = store.candidates("new")
    assert (new.val_nll, new.val_ece, new.val_brier, new.test_nll, new.test_ece, new.test_brier) == (
        0.9, 0.05, 0.4, 1.2, 0.08, 0.6)
    assert new.member_val_calibration == {"nll": [1.0, 1.1], "ece": [0.06, 0.07], "brier": [0.45, 0.5]}
    assert store.epochs(candidate) == [calibrated]
    confirmation = store.start_confirmation("new", 0, CONFIG)
    store.finish_confirmation(confirmation, "complete", val_accuracy=0.5, **epoch_calibration(calibrated))
    [confirmed] = store.confirmations("new")
    assert (confirmed.val_nll, confirmed.val_ece, confirmed.val_brier) == (0.9, 0.05, 0.4)
    with pytest.raises(TypeError, match="unknown calibration column"):
        store.finish_confirmation(confirmation, "complete", test_nll=1.0)


def _use_mode_timings(store: Store, row: Any, cost: CandidateCost) -> None:
    shape = {"arch": "resnet20", "S": 2, "widths": "width 0.25, blocks [], groups 1", "input": "digits crop None",
             "batch_size": 128, "device_kind": "cpu"}
    assert store.mode_timings(shape) is None
    first = [{"mode": "sequential", "step_seconds": 0.4, "compile_seconds": 0.0}]
    store.record_mode_timings(shape, first)
    second = first + [{"mode": "compiled-sequential", "step_seconds": 0.28, "compile_seconds": 71.0}]
    store.record_mode_timings(shape, second)  # measured again: the latest timings stay
    assert store.mode_timings(shape) == second
    assert store.mode_timings({**shape, "S": 4}) is None
    other = [{"mode": "sequential", "step_seconds": 0.9, "compile_seconds": 0.0}]
    store.record_mode_timings({**shape, "S": 4}, other)
    store.record_mode_timings({**shape, "device_kind": "NVIDIA H100"}, first)
    assert store.device_mode_timings("cpu") == [second, other]


_CALIBRATION_COLUMNS = ("val_nll", "val_ece", "val_brier", "member_val_calibration")

REVISIONS = [
    Revision("0004", frozenset({("splitsearch_candidates", "resume_refused"),
                                ("splitsearch_candidates", "checkpoint_error")}), _use_checkpoint_faults),
    Revision("0005", frozenset({("splitsearch_candidates", "latency_seconds"),
                                ("splitsearch_candidates", "latency_iqr_seconds")}), _use_latency),
    Revision("0006", frozenset({(table, column) for table in ("splitsearch_candidates", "splitsearch_epoch_metrics",
                                                                "splitsearch_confirmations")
                                for column in _CALIBRATION_COLUMNS}
                               | {("splitsearch_candidates", column) for column in ("test_nll", "test_ece",
                                                                                     "test_brier")}),
             _use_calibration),
    Revision("0007", frozenset({("splitsearch_mode_timings", column) for column in (
        "id", "arch", "S", "widths", "input", "batch_size", "device_kind", "timings", "measured_at")}),
             _use_mode_timings),
]


def store_columns(url: str) -> set[tuple[str, str]]:
    """Every (table, column) of the store's tables."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        inspector = inspect(engine)
        return {(table, column["name"]) for table in inspector.get_table_names()
                if table.startswith("splitsearch_") and table != VERSION_TABLE
                for column in inspector.get_columns(table)}
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda revision: revision.revision)
def test_a_revision_keeps_old_rows_adds_its_columns_and_goes_back(revision: Revision, empty_url: str,
                                                                 cost: CandidateCost) -> None:
    command.upgrade(alembic_config(empty_url), revision.previous)
    before = store_columns(empty_url)
    assert not revision.added & before
    engine = create_engine(empty_url, poolclass=NullPool)
    with engine.begin() as connection:  # a row as a worker of the previous revision wrote it
        connection.execute(text(
            "INSERT INTO splitsearch_candidates (study_name, trial_number, config_yaml, config_hash, dataset, "
            "epochs, arch, \"S\", width_mult, params, macs, flops, activation_bytes, state, started_at) VALUES "
            "('old', 0, :yaml, 'h', 'digits', 3, 'resnet20', 2, 0.25, 1, 2, 4, 8, 'complete', CURRENT_TIMESTAMP)"),
            {"yaml": CONFIG.to_yaml()})
    engine.dispose()

    upgrade(empty_url)
    assert revision.added <= store_columns(empty_url)
    store = Store(empty_url)
    [row] = store.candidates("old")
    assert row.state == "complete"
    revision.use(store, row, cost)
    store.close()

    command.downgrade(alembic_config(empty_url), revision.previous)
    assert store_columns(empty_url) == before


def test_every_revision_after_the_first_three_is_tested_above(empty_url: str) -> None:
    """A new migration needs a row in REVISIONS (the first three are covered by the tests before)."""
    assert [revision.revision for revision in REVISIONS] == [f"{number:04d}" for number in
                                                             range(4, int(head_revision(empty_url)) + 1)]


def test_workers_upgrading_together(postgres_url: str) -> None:
    # Processes, as real workers are: Alembic's migration context is global to a process.
    processes = multiprocessing.get_context("fork")
    workers = [processes.Process(target=upgrade, args=(postgres_url,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    assert current_revision(postgres_url) == head_revision(postgres_url)


def test_missing_migrations_say_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    installed = tmp_path / "site-packages" / "splitsearch" / "__init__.py"
    monkeypatch.setattr(splitsearch, "__file__", str(installed))
    with pytest.raises(RuntimeError, match="pip install -e"):
        script_location()


# -- writing and reading --------------------------------------------------------------------------

def test_round_trip_of_a_trained_candidate(store: Store, cost: CandidateCost) -> None:
    candidate_id = store.start_candidate("study", 7, CONFIG, cost, width_step=0.02, baseline="paper S=2")
    store.record_epoch(candidate_id, epoch(1, 0.3))
    store.record_epoch(candidate_id, epoch(2, 0.4))
    store.record_epoch(candidate_id, epoch(2, 0.45))  # re-reported after a resume: replaces
    running = store.candidates("study")[0]
    store.finish_candidate(candidate_id, "complete", val_accuracy=0.45, test_accuracy=0.44,
                           member_val_accuracies=[0.4, 0.35])

    [record] = store.candidates("study")
    assert running.state == "running" and running.finished_at is None
    assert (record.id, record.study_name, record.trial_number) == (candidate_id, "study", 7)
    assert record.state == "complete"
    assert record.config == CONFIG and record.config_hash == CONFIG.config_hash()
    assert (record.dataset, record.epochs, record.arch) == ("digits", 3, "resnet20")
    assert (record.S, record.width_mult) == (2, 0.25)
    assert (record.params, record.macs, record.flops, record.activation_bytes) == (
        cost.params, cost.macs, cost.flops, cost.activation_bytes)
    assert (record.width_step, record.baseline, record.reused_from_id) == (0.02, "paper S=2", None)
    assert (record.val_accuracy, record.test_accuracy) == (0.45, 0.44)
    assert record.member_val_accuracies == (0.4, 0.35)
    assert record.started_at.tzinfo is timezone.utc and record.started_at == running.started_at
    assert record.finished_at >= record.started_at
    assert record.wall_seconds == pytest.approx((record.finished_at - record.started_at).total_seconds())
    assert store.epochs(candidate_id) == [epoch(1, 0.3), epoch(2, 0.45)]


def test_finish_records_given_wall_seconds_and_rejects_mistakes(store: Store, cost: CandidateCost) -> None:
    candidate_id = store.start_candidate("study", 0, CONFIG, cost)
    store.finish_candidate(candidate_id, "pruned", val_accuracy=0.2, wall_seconds=12.5)

    [record] = store.candidates("study")
    assert (record.state, record.val_accuracy, record.member_val_accuracies, record.wall_seconds) == (
        "pruned", 0.2, None, 12.5)
    with pytest.raises(ValueError, match="complete, pruned, failed"):
        store.finish_candidate(candidate_id, "reused")
    with pytest.raises(LookupError, match="no candidate"):
        store.finish_candidate(candidate_id + 100, "failed")


def test_retried_trial_resets_its_row(store: Store, cost: CandidateCost) -> None:
    first = store.start_candidate("study", 3, CONFIG, cost, width_step=0.1)
    store.record_epoch(first, epoch(1))
    store.finish_candidate(first, "failed", val_accuracy=0.1, member_val_accuracies=[0.1, 0.1])

    retried = store.start_candidate("study", 3, CONFIG, cost)

    [record] = store.candidates("study")
    assert retried == first == record.id
    assert (record.state, record.val_accuracy, record.member_val_accuracies) == ("running", None, None)
    assert (record.finished_at, record.wall_seconds, record.width_step) == (None, None, None)
    assert store.epochs(retried) == []


def test_standard_error_is_kept_with_the_result(store: Store, cost: CandidateCost) -> None:
    candidate_id = store.start_candidate("study", 0, CONFIG, cost)
    store.finish_candidate(candidate_id, "complete", val_accuracy=0.5, val_standard_error=0.0222, val_samples=508)
    [record] = store.candidates("study")
    assert (record.val_standard_error, record.val_samples) == (0.0222, 508)


def test_confirmations_one_row_per_trial_and_seed(store: Store) -> None:
    first = store.start_confirmation("study", 4, CONFIG.replace(train=TrainConfig(epochs=3, seed=1)), "paper S=2")
    second = store.start_confirmation("study", 4, CONFIG.replace(train=TrainConfig(epochs=3, seed=2)), "paper S=2")
    store.start_confirmation("other", 4, CONFIG.replace(train=TrainConfig(epochs=3, seed=1)))
    store.finish_confirmation(first, "complete", val_accuracy=0.6, val_standard_error=0.02, val_samples=500,
                              member_val_accuracies=[0.55, 0.58], wall_seconds=3.5)
    store.finish_confirmation(second, "failed")

    rows = store.confirmations("study")
    assert [(row.trial_number, row.seed, row.state) for row in rows] == [(4, 1, "complete"), (4, 2, "failed")]
    done = rows[0]
    assert (done.val_accuracy, done.val_standard_error, done.val_samples, done.wall_seconds) == (0.6, 0.02, 500, 3.5)
    assert done.member_val_accuracies == (0.55, 0.58) and done.baseline == "paper S=2" and done.epochs == 3
    assert done.config_hash == CONFIG.replace(train=TrainConfig(epochs=3, seed=1)).config_hash()
    assert done.finished_at >= done.started_at

    # Started again (after a crash): the same row, reset to running.
    again = store.start_confirmation("study", 4, CONFIG.replace(train=TrainConfig(epochs=3, seed=2)))
    assert again == second
    assert [(row.seed, row.state, row.finished_at) for row in store.confirmations("study")][1] == (2, "running", None)
    with pytest.raises(ValueError, match="complete or failed"):
        store.finish_confirmation(first, "pruned")
    with pytest.raises(LookupError, match="no confirmation"):
        store.finish_confirmation(first + 100, "failed")


def test_candidates_of_a_study_in_trial_order(store: Store, cost: CandidateCost) -> None:
    for number in (2, 0, 1):
        store.start_candidate("mine", number, CONFIG, cost)
    store.start_candidate("other", 5, CONFIG, cost)

    assert [record.trial_number for record in store.candidates("mine")] == [0, 1, 2]
    assert store.candidates("missing") == []


def test_find_reusable_only_complete_with_same_hash_dataset_epochs(store: Store, cost: CandidateCost) -> None:
    def finished(trial_number: int, state: str, config: SplitConfig = CONFIG) -> int:
        candidate_id = store.start_candidate("earlier", trial_number, config, cost)
        store.finish_candidate(candidate_id, state, val_accuracy=0.5)
        return candidate_id

    finished(0, "pruned")
    finished(1, "failed")
    store.start_candidate("earlier", 2, CONFIG, cost)  # still running
    finished(3, "complete", CONFIG.replace(width_mult=0.5))
    complete = finished(4, "complete")
    finished(5, "complete")  # a later duplicate: the oldest answer is kept

    found = store.find_reusable(CONFIG.config_hash(), "digits", 3)
    assert found is not None
    assert (found.id, found.study_name, found.state) == (complete, "earlier", "complete")
    assert store.find_reusable(CONFIG.config_hash(), "cifar10", 3) is None
    assert store.find_reusable(CONFIG.config_hash(), "digits", 300) is None
    assert store.find_reusable(CONFIG.replace(S=4).config_hash(), "digits", 3) is None


def test_record_reused_copies_the_result(store: Store, cost: CandidateCost) -> None:
    source_id = store.start_candidate("earlier", 0, CONFIG, cost, width_step=0.05)
    store.record_epoch(source_id, epoch(1, 0.6))
    store.finish_candidate(source_id, "complete", val_accuracy=0.6, test_accuracy=0.58,
                           member_val_accuracies=[0.55, 0.5], wall_seconds=30.0)
    source = store.find_reusable(CONFIG.config_hash(), "digits", 3)

    reused_id = store.record_reused("later", 4, source, baseline="undivided")

    [record] = store.candidates("later")
    assert (record.id, record.state, record.reused_from_id) == (reused_id, "reused", source_id)
    assert record.baseline == "undivided"
    assert (record.val_accuracy, record.test_accuracy) == (0.6, 0.58)
    assert record.member_val_accuracies == (0.55, 0.5)
    assert (record.config, record.params, record.width_step) == (CONFIG, cost.params, 0.05)
    assert record.wall_seconds == 0.0
    assert record.finished_at == record.started_at
    assert store.epochs(reused_id) == []
    assert store.find_reusable(CONFIG.config_hash(), "digits", 3).id == source_id
    with pytest.raises(ValueError, match="only a complete candidate"):
        store.record_reused("later", 5, record)


def test_find_finished_in_study_gives_the_first_trial_of_that_study_and_its_complete_result(
        store: Store, cost: CandidateCost) -> None:
    """A repeat is answered as the study's first trial of the candidate was: trained there, or reused."""
    key = (CONFIG.config_hash(), "digits", 3)
    trained = store.start_candidate("other", 0, CONFIG, cost)
    store.finish_candidate(trained, "complete", val_accuracy=0.6)
    pruned = store.start_candidate("mine", 0, CONFIG, cost)
    store.finish_candidate(pruned, "pruned", val_accuracy=0.2)
    assert store.find_finished_in_study("mine", *key) is None  # only another study (or a pruned row) has it

    store.record_reused("mine", 1, store.find_reusable(*key))
    store.record_reused("mine", 2, store.find_reusable(*key))
    found, trial_number = store.find_finished_in_study("mine", *key)
    assert (trial_number, found.id, found.state, found.val_accuracy) == (1, trained, "complete", 0.6)

    own = store.start_candidate("self-trained", 3, CONFIG, cost)
    store.finish_candidate(own, "complete", val_accuracy=0.7)
    found, trial_number = store.find_finished_in_study("self-trained", *key)
    assert (trial_number, found.id) == (3, own)
    assert store.find_finished_in_study("self-trained", CONFIG.config_hash(), "digits", 30) is None


def test_over_budget_is_recorded_finished(store: Store, cost: CandidateCost) -> None:
    candidate_id = store.record_over_budget("study", 1, CONFIG, cost, baseline="undivided")

    [record] = store.candidates("study")
    assert (record.id, record.state, record.baseline) == (candidate_id, "over_budget", "undivided")
    assert record.val_accuracy is None
    assert (record.params, record.macs) == (cost.params, cost.macs)
    assert record.finished_at == record.started_at and record.wall_seconds == 0.0
    assert store.find_reusable(CONFIG.config_hash(), "digits", 3) is None


def test_epochs_need_an_existing_candidate(store: Store) -> None:
    with pytest.raises(IntegrityError):
        store.record_epoch(12345, epoch(1))


def test_two_workers_write_epochs_at_once(empty_url: str, cost: CandidateCost) -> None:
    upgrade(empty_url)
    setup = Store(empty_url)
    candidate_ids = [setup.start_candidate("parallel", number, CONFIG, cost) for number in range(2)]
    start = threading.Barrier(len(candidate_ids))
    errors: list[BaseException] = []

    def worker(candidate_id: int) -> None:
        store = Store(empty_url)  # each worker has its own engine, as separate processes would
        try:
            start.wait()
            for number in range(1, 26):
                store.record_epoch(candidate_id, epoch(number))
            store.finish_candidate(candidate_id, "complete", val_accuracy=0.5)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(candidate_id,)) for candidate_id in candidate_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for candidate_id in candidate_ids:
        assert [metrics.epoch for metrics in setup.epochs(candidate_id)] == list(range(1, 26))
    assert {record.state for record in setup.candidates("parallel")} == {"complete"}
    setup.close()


def test_only_sqlite_and_postgresql() -> None:
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        Store("mysql+pymysql://user@localhost/db")


def test_a_complete_row_of_a_trial_optuna_failed_ends_interrupted(empty_url: str, cost: CandidateCost) -> None:
    """The worker lost the database (or died) after the store took the result and before Optuna did: Optuna
    fails the trial as stale and retries it, so the row follows it and answers no later proposal as a repeat."""
    from splitsearch.search.worker import settle_store

    upgrade(empty_url)
    store = Store(empty_url)
    with optuna_storage(empty_url) as storage:
        study = optuna.create_study(storage=storage, study_name="study")
        failed, completed = study.ask(), study.ask()
        for trial in (failed, completed):
            row = store.start_candidate("study", trial.number, CONFIG, cost)
            store.finish_candidate(row, "complete", val_accuracy=0.5, wall_seconds=1.0)
        study.tell(failed, state=optuna.trial.TrialState.FAIL)
        study.tell(completed, 0.5)
        settle_store(study, store)
    states = {row.trial_number: row.state for row in store.candidates("study")}
    assert states == {failed.number: "interrupted", completed.number: "complete"}
    assert store.find_finished_in_study("study", CONFIG.config_hash(), "digits", 3)[1] == completed.number
    store.close()
