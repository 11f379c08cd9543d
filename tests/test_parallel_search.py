"""Search trials trained member-parallel: ``splitsearch run --nproc-per-trial N`` with real process groups.

The worker reports each epoch to Optuna and the store for the group's rank 0, so a study whose
trials train in process groups must record exactly what a one-process study records (the
training is bit for bit the same), and a rank's failure must be an ordinary failed trial.
"""

import os
import signal
import sys
from pathlib import Path

import optuna
import pytest

from splitsearch.store import Store

from conftest import run_cli
from test_parallel import _alive, _children
from test_pool import assert_all_gone, watching_children
from test_disk_faults import rows as rows_by_trial, sqlite_url, warning_lines
from test_workers import (FINISHED, assert_retry_continued, assert_store_follows_optuna, epochs_of, finish,
                          start_worker, study_file, wait_until)


pytestmark = pytest.mark.usefixtures("one_thread_per_process")


def run_study(capsys, storage: str, tmp_path: Path, *extra: object) -> tuple[int, str, str]:
    """A small digits study, 2 epochs a trial, that trains its baselines first: S = 1, 2 and 4."""
    return run_cli(capsys, "run", "--study", "np", "--storage", storage, "--epochs", "2", "--device", "cpu",
                   "--runs-dir", tmp_path / "runs", *extra)


def rows(storage: str) -> list[tuple]:
    return [(row.trial_number, row.state, row.S, row.params, row.baseline, row.val_accuracy)
            for row in sorted(Store(storage).candidates("np"), key=lambda row: row.trial_number)]


def test_a_study_of_member_parallel_trials_records_what_a_one_process_study_records(postgres_url, tmp_path,
                                                                                    capsys):
    one_process = f"sqlite:///{tmp_path / 'one.db'}"
    assert run_study(capsys, one_process, tmp_path / "one", "--n-trials", "3")[0] == 0
    with watching_children() as ranks:
        code, out, err = run_study(capsys, postgres_url, tmp_path / "group", "--n-trials", "3",
                                   "--nproc-per-trial", "2")
    assert code == 0, err
    assert "3 complete" in out
    assert rows(postgres_url) == rows(one_process)
    assert [row[2] for row in rows(postgres_url)] == [1, 2, 4]  # 1 process, 2 processes, 2 x 2 members
    assert len(ranks) == 2  # the ranks existed (seen alive: one kept pair for S=2 and S=4) ...
    assert_all_gone(list(ranks))  # ... and are gone
    assert not ranks_left()


def ranks_left() -> list[bytes]:
    """The command lines of this process's live children, but multiprocessing's resource tracker
    (started with the first spawned process, it lives as long as this one and is not a rank)."""
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _children(os.getpid()) if _alive(pid)]
    return [command for command in commands if b"resource_tracker" not in command]


def build_failing_in_rank_1(args, depth):
    """resnet20, except that in a process group rank 1's S=2 member raises in the second epoch."""
    import torch.distributed as dist
    from torch import nn

    from splitsearch.models.resnet import cifar_resnet_basic

    class FailsInRankOneEpochTwo(nn.Module):
        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network, self.evaluated = network, False

        def forward(self, x):
            if not self.training:
                self.evaluated = True  # validation ends an epoch: the next training step is in epoch 2
            elif self.evaluated and dist.is_initialized() and dist.get_rank() == 1:
                raise RuntimeError("CUDA out of memory (simulated, rank 1, epoch 2)")
            return self.network(x)

    network = cifar_resnet_basic(args, depth=20)
    return FailsInRankOneEpochTwo(network) if args.S == 2 else network


@pytest.fixture
def failing_arch(monkeypatch):
    """``failing20`` registered in this process; the ranks a worker starts learn it from the launcher."""
    from splitsearch.models import registry

    family = registry.ArchFamily(r"failing(?P<depth>\d+)", f"{__name__}:build_failing_in_rank_1",
                                 examples=("failing20",), num_blocks=3)
    monkeypatch.setattr(registry, "_FAMILIES", [*registry._FAMILIES, family])
    return "failing20"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_a_rank_that_raises_in_epoch_2_fails_the_trial_with_its_error_and_the_worker_goes_on(tmp_path, capsys,
                                                                                            failing_arch):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Two trials to finish: the baselines S=1, S=2 (fails) and S=4, in that order.
    with watching_children() as ranks:
        code, out, err = run_study(capsys, storage, tmp_path, "--arch", failing_arch, "--n-trials", "2",
                                   "--nproc-per-trial", "2")
    study = optuna.load_study(study_name="np", storage=storage)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert [trial.params["S"] for trial in failed] == [2], out + err
    assert failed[0].user_attrs["failure"] == "rank 1: RuntimeError: CUDA out of memory (simulated, rank 1, epoch 2)"
    row = next(row for row in Store(storage).candidates("np") if row.trial_number == failed[0].number)
    assert row.state == "failed" and row.error == failed[0].user_attrs["failure"]
    assert [metrics.epoch for metrics in Store(storage).epochs(row.id)] == [1]
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert code == 0 and [trial.params["S"] for trial in finished] == [1, 4]  # the worker went on after the failure
    assert "Traceback" not in out + err
    assert len(ranks) == 4  # seen alive: the pair S=2 failed in, then a new pair for S=4 ...
    assert_all_gone(list(ranks))  # ... all gone
    assert not ranks_left()


def test_rank_0_stops_the_whole_group_when_the_worker_says_stop(tmp_path):
    """The pruning path: the worker's answer after epoch 1 reaches rank 0, and every rank stops there."""
    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.train.epoch_channel import EpochServer
    from splitsearch.train.launch import launch
    from splitsearch.train.plan import TrainRequest, run_training_rank

    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="synthetic:64",
                         train=TrainConfig(epochs=3, batch_size=16, val_fraction=0.25))
    seen = []

    def prune_after_first_epoch(metrics) -> bool:
        seen.append(metrics.epoch)
        return True

    with EpochServer(prune_after_first_epoch, on_write_error=pytest.fail) as server:
        outcome = launch(2, run_training_rank, "cpu", TrainRequest(config=config, out_dir=tmp_path / "run"), server.client())
    server.raise_failure()
    assert seen == [1]
    assert outcome.result.stopped_early and [metrics.epoch for metrics in outcome.result.history] == [1]


def test_an_error_in_the_workers_callback_stops_the_group_and_is_raised_in_the_worker(tmp_path):
    """The database going away while rank 0 waits for an answer: training stops, the worker sees the error."""
    from splitsearch.config import SplitConfig, TrainConfig
    from splitsearch.train.epoch_channel import EpochServer
    from splitsearch.train.launch import launch
    from splitsearch.train.plan import TrainRequest, run_training_rank

    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="synthetic:64",
                         train=TrainConfig(epochs=3, batch_size=16, val_fraction=0.25))

    def storage_gone(metrics) -> bool:
        raise ConnectionError("the database went away")

    with EpochServer(storage_gone, on_write_error=pytest.fail) as server:
        outcome = launch(2, run_training_rank, "cpu", TrainRequest(config=config, out_dir=tmp_path / "run"), server.client())
    assert outcome.result.stopped_early
    with pytest.raises(ConnectionError, match="went away"):
        server.raise_failure()


@pytest.mark.slow  # about a minute and a half: two workers' runs, process groups for S=2 and S=4
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_sigterm_stops_every_rank_keeps_the_checkpoint_and_the_retry_continues(postgres_url, study_file, tmp_path):
    path = study_file(n_trials=3, epochs=4, images=960)
    store = Store(postgres_url)
    worker = start_worker(path, postgres_url, tmp_path / "runs", "--nproc-per-trial", "2")
    children: set[int] = set()

    def trial_1_trained_two_epochs() -> bool:  # trial 1 is the paper's S=2 baseline: two processes
        children.update(_children(worker.pid))
        return len(epochs_of(store, 1)) >= 2

    wait_until(trial_1_trained_two_epochs, what="trial 1 to finish two epochs")
    children.update(_children(worker.pid))
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143 and "queued again" in err and "Traceback" not in err, err[-3000:]
    assert len(children) >= 2 and not [pid for pid in children if _alive(pid)]
    assert list((tmp_path / "runs").rglob("trial-1/checkpoint.pt")), "the interrupted trial keeps its checkpoint"

    finish(start_worker(path, postgres_url, tmp_path / "runs", "--nproc-per-trial", "2"))
    study = assert_store_follows_optuna(postgres_url)
    assert len(study.get_trials(states=FINISHED)) == 3
    assert_retry_continued(postgres_url, 1)


@pytest.mark.slow  # about 15 s; the one-process path is tested by default in tests/test_disk_faults.py
def test_a_checkpoint_rank_0_cannot_write_costs_the_trial_only_its_resumability(study_file, tmp_path):
    """As in one process (tests/test_disk_faults.py): one warning, the trials train on, the rows say why."""
    (tmp_path / "file").write_text("a regular file where the runs folder should be")
    url = sqlite_url(tmp_path)
    err = finish(start_worker(study_file(n_trials=2, epochs=2), url, tmp_path / "file" / "runs",
                              "--nproc-per-trial", "2"))
    [warning] = warning_lines(err)
    assert "Not a directory" in warning and "trials go on without checkpoints" in warning
    trained = {row.S: row for row in rows_by_trial(url).values() if row.state == "complete"}
    assert sorted(trained) == [1, 2]  # the undivided network in the worker, S=2 in two processes
    assert all("Not a directory" in row.checkpoint_error for row in trained.values())
