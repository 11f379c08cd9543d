"""Ranks kept across trials (``splitsearch.train.pool``), with real gloo processes.

A worker with ``--nproc-per-trial N`` starts its ranks once and sends every trial to the same
processes; a rank that fails or dies makes the pool start new ones, and none outlives the pool.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import torch
import torch.distributed as dist

from splitsearch.search.execution import ExecutionOptions
from splitsearch.search.greedy import run_greedy_blocks
from splitsearch.search.run import run_study
from splitsearch.search.study import load_study_spec
from splitsearch.store import Store
from splitsearch.train.launch import RankFailedError
from splitsearch.train.pool import RankPool

from conftest import run_cli
from test_disk_faults import sqlite_url, trained_epochs
from test_greedy import greedy_study
from test_parallel import _alive, _children
from test_workers import assert_retry_continued, finish, start_worker, study_file, wait_until  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")


@pytest.fixture(autouse=True)
def one_thread_per_process(monkeypatch):
    """One thread in every process: the thread count changes floating-point sums, and the studies
    below are compared with one process's exactly."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def rank_and_sum() -> tuple[int, int, int, float]:
    """(pid, rank, world size, the sum over the ranks of rank + 1): run by every rank of a call."""
    value = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(value)
    return os.getpid(), dist.get_rank(), dist.get_world_size(), value.item()


def raise_in(rank: int) -> None:
    """Rank ``rank`` raises; the others wait for it at a collective."""
    if dist.get_rank() == rank:
        raise RuntimeError(f"simulated failure in rank {rank}")
    dist.barrier()


def assert_all_gone(pids: list[int]) -> None:
    """Every rank of ``pids`` (seen alive before) has ended; an empty list is refused, as a check of
    nothing would pass when no rank ever ran."""
    assert pids, "no rank was seen running: nothing to check"
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)], "a rank outlived its pool"


def test_a_pool_runs_every_call_on_the_same_ranks_and_leaves_none_behind():
    with RankPool(2, "cpu") as pool:
        first = pool.run(2, rank_and_sum)
        pids = pool.pids
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        assert first == (pids[0], 0, 2, 3.0)
        assert pool.run(1, rank_and_sum) == (pids[0], 0, 1, 1.0)  # a smaller group of the same processes
        assert pool.run(2, rank_and_sum) == (pids[0], 0, 2, 3.0)
        assert pool.run(2, rank_and_sum, new_group=True) == (pids[0], 0, 2, 3.0)
        assert pool.pids == pids
    assert pool.pids == []
    assert_all_gone(pids)


def test_a_rank_that_raises_fails_the_call_with_its_error_and_the_next_call_starts_new_ranks():
    with RankPool(2, "cpu") as pool:
        pool.run(2, rank_and_sum)
        first = pool.pids
        with pytest.raises(RankFailedError) as failed:
            pool.run(2, raise_in, 1)
        assert failed.value.reason == "rank 1: RuntimeError: simulated failure in rank 1"
        assert_all_gone(first)  # rank 0 was stuck at the barrier: stopped with the failed rank
        assert pool.run(2, rank_and_sum)[1:] == (0, 2, 3.0)
        second = pool.pids
        assert len(second) == 2 and not set(second) & set(first)
    assert_all_gone(second)


def wait_until_reapable(pid: int) -> None:
    """Wait until a killed process has ended whole: a zombie whose threads have all exited (before
    that, its parent cannot collect it yet, and it has not died as far as its parent can tell)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if len(os.listdir(f"/proc/{pid}/task")) <= 1 and not _alive(pid):
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running 10 s after SIGKILL")


SPACE = """\
name: pool-space
params:
  S: {type: categorical, choices: [2, 4]}
  lambda_cot: {type: float, low: 0.0, high: 1.0}
fixed: {wd_rule: exp}
"""


def study_spec(tmp_path: Path, n_trials: int):
    """Trials that all train in two processes (S = 2 or 4; the undivided baseline is out of the space)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "pool.yaml"
    path.write_text(f"name: pool\narch: resnet20\ndataset: synthetic:96\nspace: {tmp_path / 'space.yaml'}\n"
                    f"epochs: 2\nn_trials: {n_trials}\nbudget_params: 30K\npruner: none\n"
                    "base: {train: {batch_size: 32, val_fraction: 0.25}}\n")
    return load_study_spec(path)


def rows(storage: str) -> list[tuple]:
    return [(row.trial_number, row.state, row.S, row.params, row.baseline, row.val_accuracy)
            for row in sorted(Store(storage).candidates("pool"), key=lambda row: row.trial_number)]


def values(storage: str) -> list[tuple]:
    study = optuna.load_study(study_name="pool", storage=storage)
    return [(trial.number, trial.state, trial.params, trial.values) for trial in study.get_trials()]


def live_children() -> set[int]:
    """This process's live children but multiprocessing's resource tracker (not a rank)."""
    return {pid for pid in _children(os.getpid())
            if _alive(pid) and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


@contextmanager
def watching_children() -> Iterator[set[int]]:
    """The children this process starts while the block runs (seen alive), sampled every 20 ms."""
    before, seen, done = live_children(), set(), threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            seen.update(live_children() - before)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


@pytest.fixture(scope="module")
def one_process_study(tmp_path_factory) -> Path:
    """The database of the 4-trial study trained in one process: the reference the pool must match."""
    folder = tmp_path_factory.mktemp("one-process")
    run_study(study_spec(folder, n_trials=4), f"sqlite:///{folder / 'one.db'}",
              ExecutionOptions(runs_dir=folder / "runs"), progress=False)
    return folder / "one.db"


def test_a_study_trains_every_trial_on_one_pool_and_records_what_one_process_records(tmp_path, one_process_study):
    spec = study_spec(tmp_path, n_trials=4)
    one = f"sqlite:///{one_process_study}"
    before = live_children()
    ranks_by_trial: dict[int, set[int]] = {}

    def note_ranks(trial: int, metrics) -> None:  # the worker's answer to rank 0 after each epoch
        ranks_by_trial.setdefault(trial, set()).update(live_children() - before)

    pooled = f"sqlite:///{tmp_path / 'pool.db'}"
    run_study(spec, pooled, ExecutionOptions(runs_dir=tmp_path / "pool", nproc_per_trial=2), progress=False,
              on_epoch=note_ranks)
    assert sorted(ranks_by_trial) == [0, 1, 2, 3]
    [ranks] = {frozenset(pids) for pids in ranks_by_trial.values()}  # the same two processes for every trial
    assert len(ranks) == 2
    assert rows(pooled) == rows(one) and [row[1] for row in rows(one)] == ["complete"] * 4
    assert values(pooled) == values(one)
    assert_all_gone(list(ranks))


def test_a_rank_killed_between_trials_makes_the_next_trial_start_new_ranks(tmp_path, monkeypatch):
    before = live_children()
    killed: list[int] = []
    start_candidate = Store.start_candidate

    def kill_rank_1_before_trial_2(self, study_name, trial_number, *args, **kwargs):
        if trial_number == 2:  # trials 0 and 1 have trained on the pool; its ranks wait for the next
            ranks = sorted(live_children() - before)
            assert len(ranks) == 2, ranks
            os.kill(ranks[1], signal.SIGKILL)
            wait_until_reapable(ranks[1])  # dead before the trial starts: between trials
            killed.extend(ranks)
        return start_candidate(self, study_name, trial_number, *args, **kwargs)

    monkeypatch.setattr(Store, "start_candidate", kill_rank_1_before_trial_2)
    ranks_by_trial: dict[int, set[int]] = {}

    def note_ranks(trial: int, metrics) -> None:
        ranks_by_trial.setdefault(trial, set()).update(live_children() - before)

    warnings: list[str] = []
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run_study(study_spec(tmp_path, n_trials=4), storage,
              ExecutionOptions(runs_dir=tmp_path / "runs", nproc_per_trial=2), progress=False, on_epoch=note_ranks,
              on_warning=warnings.append)
    assert len(killed) == 2
    assert ranks_by_trial[0] == ranks_by_trial[1] == set(killed)
    assert ranks_by_trial[2] == ranks_by_trial[3] and len(ranks_by_trial[2]) == 2
    assert not ranks_by_trial[2] & set(killed)
    assert warnings == ["rank 1 (exit code -9) of the kept process group died between trials; starting 2 new ranks"]
    assert [row[1] for row in rows(storage)] == ["complete"] * 4
    assert_all_gone(killed + sorted(ranks_by_trial[2]))


def confirmations(storage: str) -> list[tuple]:
    return sorted((row.trial_number, row.seed, row.state, row.val_accuracy, row.member_val_accuracies)
                  for row in Store(storage).confirmations("pool"))


def test_confirm_trains_its_runs_on_one_pool_and_records_what_one_process_records(tmp_path, one_process_study,
                                                                                  capsys):
    urls = {}
    for way in ("one", "pool"):
        shutil.copy(one_process_study, tmp_path / f"{way}.db")
        urls[way] = f"sqlite:///{tmp_path / way}.db"
    command = ("confirm", "--study", "pool", "--top", "1", "--seeds", "2", "--device", "cpu", "--quiet")
    code, _, err = run_cli(capsys, *command, "--storage", urls["one"], "--runs-dir", tmp_path / "one")
    assert code == 0, err
    with watching_children() as ranks:
        code, out, err = run_cli(capsys, *command, "--storage", urls["pool"], "--runs-dir", tmp_path / "pool",
                                 "--nproc-per-trial", "2")
    assert code == 0, err
    runs = confirmations(urls["pool"])
    assert len(runs) >= 4 and all(run[2] == "complete" for run in runs)  # the best and two baselines, 2 seeds
    assert runs == confirmations(urls["one"])
    assert len(ranks) == 2  # every run on the same two processes
    assert_all_gone(list(ranks))


def test_greedy_blocks_trains_its_networks_on_one_pool_of_data_ranks(tmp_path):
    """The undivided networks of the procedure take the processes as data ranks; fine-tuned ones warm-start there."""
    warm_started = {}
    for way, processes in (("one", 1), ("pool", 2)):
        lines: list[str] = []
        with watching_children() as ranks:
            study, result = run_greedy_blocks(greedy_study(), f"sqlite:///{tmp_path / way}.db",
                                              ExecutionOptions(runs_dir=tmp_path / way, nproc_per_trial=processes),
                                              on_step=lines.append)
        trials = study.get_trials(deepcopy=False)
        assert result.factors == (2, 2, 2) and all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
        warm_started[way] = [trial.user_attrs.get("warm_started_tensors") for trial in trials]
        assert len(ranks) == {"one": 0, "pool": 2}[way]
        # Each trained network's line counts the ranks its group had (recorded by its rank 0), none in one process.
        assert lines and all((", 2 data ranks" in line) == (way == "pool") for line in lines), lines
        assert [trial.user_attrs.get("data_ranks") for trial in trials] == [{"one": None, "pool": 2}[way]] * len(trials)
    assert warm_started["pool"] == warm_started["one"] and all(count > 0 for count in warm_started["one"][1:])
    assert_all_gone(list(ranks))


@pytest.mark.slow  # two workers' runs, about a minute and a half on a busy 2-core machine
def test_ctrl_c_stops_the_worker_and_its_kept_ranks_in_one_line_and_the_retry_continues(study_file, tmp_path):
    url = sqlite_url(tmp_path)
    path = study_file(n_trials=3, epochs=4, images=960)  # trial 0: S=1 in the worker; trial 1: S=2 on the pool
    worker = subprocess.Popen([sys.executable, "-m", "splitsearch.cli", "run", str(path), "--storage", url,
                               "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--nproc-per-trial", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_until(lambda: len(trained_epochs(url, 1)) >= 1, what="trial 1 to train an epoch on the pool")
    ranks = {pid for pid in _children(worker.pid)
             if _alive(pid) and b"serve_rank" in Path(f"/proc/{pid}/cmdline").read_bytes()}
    assert len(ranks) == 2
    os.killpg(worker.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("Error: interrupted; finished trials are stored")
    assert_all_gone(list(ranks))

    finish(start_worker(path, url, tmp_path / "runs", "--nproc-per-trial", "2"))
    assert_retry_continued(url, 1)
