"""Disk faults: checkpoints that cannot be written, and a checkpoint that cannot be read.

Real files and file systems, no mocks: a tmpfs mounted full or read-only where the tests may
mount one (root; skipped with the reason elsewhere), a runs path under a regular file anywhere,
and a checkpoint truncated on disk.  The search cases run ``splitsearch run`` workers, SIGKILL
one in the middle of a trial, and read what the store and Optuna recorded.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from splitsearch.errors import CheckpointReadError
from splitsearch.store import Store
from splitsearch.train.loop import CHECKPOINT_NAME, read_checkpoint

from conftest import run_cli
from test_train_loop import stop_after, tiny_config, trainer
from test_workers import FINISHED, finish, start_worker, study_file, wait_until  # noqa: F401 - study_file: a fixture

TINY_YAML = ("arch: resnet20\nS: 2\nwidth_mult: 0.25\ndataset: synthetic:64\n"
             "train: {epochs: 2, batch_size: 32, val_fraction: 0.25}\n")


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` with ``options`` (``size=...``, ``ro``); the test is skipped where mounting fails."""
    path.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def rows(url: str) -> dict:
    """The ``cluster`` study's rows by trial number; none before a worker has made the tables."""
    try:
        return {row.trial_number: row for row in Store(url).candidates("cluster")}
    except sqlalchemy.exc.OperationalError:  # SQLite: no such table yet
        return {}


def trained_epochs(url: str, trial_number: int) -> list[int]:
    row = rows(url).get(trial_number)
    return [] if row is None else [metrics.epoch for metrics in Store(url).epochs(row.id)]


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Warning:")]


# -- the trainer ----------------------------------------------------------------------------------

def test_a_write_that_fails_on_a_full_disk_leaves_the_previous_checkpoint_whole(tmp_path):
    config = tiny_config(epochs=3)
    first_epoch = trainer(config, tmp_path / "probe", callbacks=[stop_after(1)])
    first_epoch.fit()
    size = (tmp_path / "probe" / CHECKPOINT_NAME).stat().st_size
    # Room for one checkpoint and a half: epoch 1's is written, epoch 2's temporary file fills the disk.
    with tmpfs(tmp_path / "disk", f"size={size * 3 // 2}") as disk:
        faults = []
        run = trainer(config, disk / "run", on_write_error=faults.append)
        result = run.fit()

        assert [metrics.epoch for metrics in result.history] == [1, 2, 3]  # trained on
        assert [fault.path.name for fault in faults][:2] == [CHECKPOINT_NAME, CHECKPOINT_NAME]  # epochs 2 and 3
        assert all(fault.reason == "[Errno 28] No space left on device" for fault in faults)
        kept = read_checkpoint(disk / "run" / CHECKPOINT_NAME)
        assert len(kept["history"]) == 1
        for name, tensor in first_epoch.state()["ensemble"].items():
            assert torch.equal(kept["ensemble"][name], tensor), name
        assert not list((disk / "run").glob("*.tmp")), "a failed write leaves no temporary file to fill the disk"


def test_a_write_that_fails_leaves_the_previous_checkpoint_loadable(tmp_path):
    """The same without a tmpfs: the temporary file's name is taken by a folder, so opening it fails."""
    config = tiny_config(epochs=3)
    trainer(config, tmp_path, callbacks=[stop_after(1)]).fit()
    (tmp_path / (CHECKPOINT_NAME + ".tmp")).mkdir()
    faults = []
    result = trainer(config, tmp_path, on_write_error=faults.append).fit(resume=True)

    assert [metrics.epoch for metrics in result.history] == [1, 2, 3]
    assert [fault.path.name for fault in faults] == [CHECKPOINT_NAME, CHECKPOINT_NAME]
    assert "Is a directory" in faults[0].reason
    assert len(read_checkpoint(tmp_path / CHECKPOINT_NAME)["history"]) == 1


def test_train_stops_in_one_line_when_it_cannot_write(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    (tmp_path / "file").write_text("a regular file where a folder should be")
    out_dir = tmp_path / "file" / "out"

    code, out, err = run_cli(capsys, "train", tmp_path / "tiny.yaml", "--out", out_dir, "--quiet")

    assert code == 2
    assert err.splitlines() == [f"Error: cannot write {out_dir / CHECKPOINT_NAME}: [Errno 20] Not a directory"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-checkpoint"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, capsys, damage):
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    out_dir = tmp_path / "out"
    code, _, _ = run_cli(capsys, "train", tmp_path / "tiny.yaml", "--out", out_dir, "--epochs", "1", "--quiet")
    assert code == 0
    checkpoint = out_dir / CHECKPOINT_NAME
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif damage == "garbage":
        checkpoint.write_bytes(bytes(range(256)) * 64)
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)

    with pytest.raises(CheckpointReadError, match=str(checkpoint)):
        read_checkpoint(checkpoint)
    code, _, err = run_cli(capsys, "train", tmp_path / "tiny.yaml", "--out", out_dir, "--resume", "--quiet")
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(f"Error: the checkpoint {checkpoint} cannot be read (")
    assert line.endswith("it is truncated or corrupt; train without --resume to start again from epoch 1")


# -- the search -----------------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_refused_and_the_retry_trains_from_epoch_1(study_file, tmp_path):
    url, runs = sqlite_url(tmp_path), tmp_path / "runs"
    path = study_file(n_trials=3, epochs=4, images=480)  # the retry of trial 0 is queued after the baselines 1 and 2
    worker = start_worker(path, url, runs)
    wait_until(lambda: len(trained_epochs(url, 0)) >= 2, what="trial 0 to finish two epochs")
    worker.kill()
    _, killed_err = worker.communicate()
    [checkpoint] = runs.rglob(f"trial-0/{CHECKPOINT_NAME}")
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])

    err = finish(start_worker(path, url, runs))

    assert "Traceback" not in killed_err
    [warning] = warning_lines(err)
    assert f"the checkpoint {checkpoint} cannot be read" in warning and "trains again from epoch 1" in warning
    study = optuna.load_study(study_name="cluster", storage=url)
    assert len(study.get_trials(states=FINISHED)) == 3
    store_rows = rows(url)
    first = store_rows[0]
    assert first.state == "interrupted" and first.retried_as is not None
    retry = store_rows[first.retried_as]
    assert retry.retry_of == 0 and retry.state == "complete" and retry.resumed_from_epoch is None
    assert str(checkpoint) in retry.resume_refused
    assert trained_epochs(url, retry.trial_number) == [1, 2, 3, 4]
    assert study.trials[retry.trial_number].state == TrialState.COMPLETE


@contextmanager
def unwritable_runs_dir(fault: str, tmp_path: Path) -> Iterator[Path]:
    """A runs directory whose checkpoints cannot be written, for each kind of fault."""
    if fault == "not-a-directory":
        (tmp_path / "file").write_text("a regular file where a folder should be")
        yield tmp_path / "file" / "runs"
        return
    with tmpfs(tmp_path / "disk", "size=16k" if fault == "full" else "ro,size=1m") as disk:
        yield disk


REASONS = {"full": "No space left on device", "read-only": "Read-only file system",
           "not-a-directory": "Not a directory"}


# The full disk and the runs path under a regular file run by default: mounting the tmpfs needs
# root and is skipped without it, so "not-a-directory" (no privilege needed) is the case that runs
# everywhere.  The read-only tmpfs takes the same path as the full one (about 8 s), so it is slow.
@pytest.mark.parametrize("fault", ["full", "not-a-directory", pytest.param("read-only", marks=pytest.mark.slow)])
def test_a_runs_directory_that_cannot_be_written_costs_only_resumability(study_file, tmp_path, fault):
    url = sqlite_url(tmp_path)
    with unwritable_runs_dir(fault, tmp_path) as runs:
        err = finish(start_worker(study_file(n_trials=3, epochs=2), url, runs))

    [warning] = warning_lines(err)
    assert REASONS[fault] in warning and "trials go on without checkpoints" in warning
    study = optuna.load_study(study_name="cluster", storage=url)
    assert len(study.get_trials(states=FINISHED)) == 3
    trained = [row for row in rows(url).values() if row.state in ("complete", "pruned")]
    assert len(trained) == 3
    assert all(REASONS[fault] in row.checkpoint_error and CHECKPOINT_NAME in row.checkpoint_error
               for row in trained)
