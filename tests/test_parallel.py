"""Member-parallel co-training with real processes (a torch.distributed group, gloo on the CPU).

Each rank trains its share of the S members; the joint loss is computed on all-gathered logits,
so the training must be the one-process training: same weights, same checkpoints, resumable on
any number of processes.  The longer cases (S=4, killed and resumed runs) are marked slow:
``python -m pytest -m slow tests/test_parallel.py``.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.train.loop import CHECKPOINT_NAME, MODEL_NAME
from splitsearch.train.semantic_stage import CLASS_GROUPS_NAME

from conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_thread_per_process")


def write_config(tmp_path: Path, S: int, epochs: int) -> Path:
    """A tiny co-training run with everything that ties the members: lambda_cot from the first step, mixup."""
    config = SplitConfig(arch="resnet20", S=S, width_mult=0.25, lambda_cot=0.5, dataset="synthetic:96",
                         train=TrainConfig(epochs=epochs, batch_size=16, val_fraction=0.25, mixup_alpha=0.2,
                                           cot_warmup_fraction=0.0, random_erasing=0.5))
    path = tmp_path / f"S{S}-{epochs}.yaml"
    path.write_text(config.to_yaml())
    return path


def members(out_dir: Path) -> list[dict[str, torch.Tensor]]:
    return torch.load(out_dir / MODEL_NAME, weights_only=True)["members"]


def assert_same_members(one: Path, other: Path) -> None:
    for first, second in zip(members(one), members(other), strict=True):
        for name, value in first.items():
            torch.testing.assert_close(second[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("S", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_two_processes_train_the_members_exactly_as_one_process(tmp_path, capsys, S):
    config = write_config(tmp_path, S, epochs=2)
    assert run_cli(capsys, "train", config, "--device", "cpu", "--quiet", "--out", tmp_path / "one")[0] == 0
    code, out, err = run_cli(capsys, "train", config, "--device", "cpu", "--quiet", "--nproc", "2",
                             "--out", tmp_path / "two")
    assert code == 0, err
    assert "2 processes" in out and f"member {S}" in out
    assert_same_members(tmp_path / "one", tmp_path / "two")
    initial = torch.load(tmp_path / "two" / CHECKPOINT_NAME, weights_only=True)
    assert len(initial["history"]) == 2 and initial["ensemble_kind"] == "SequentialEnsemble"


def write_semantic_config(tmp_path: Path, epochs: int) -> Path:
    """A tiny semantic split, S=2 and G=2, that learns its groups for the first half of its epochs, then cuts."""
    config = SplitConfig(arch="resnet20", S=2, groups=2, split_depth="deep", width_mult=0.25, dataset="synthetic:96",
                         lambda_cot=0.5, train=TrainConfig(epochs=epochs, batch_size=16, val_fraction=0.25,
                                                           grouping_fraction=0.5, cot_warmup_fraction=0.0))
    path = tmp_path / f"semantic-{epochs}.yaml"
    path.write_text(config.to_yaml())
    return path


def test_a_semantic_split_trains_member_parallel_exactly_as_one_process(tmp_path, capsys):
    """Each rank learns and cuts its own member's groups; the checkpoint, model and groups are the one process's."""
    path = write_semantic_config(tmp_path, epochs=2)
    for nproc in ("1", "2"):
        code, out, err = run_cli(capsys, "train", path, "--device", "cpu", "--quiet", "--nproc", nproc,
                                 "--out", tmp_path / nproc)
        assert code == 0, err
        assert ("2 processes" in out) == (nproc == "2") and "class groups" in out
    assert_same_members(tmp_path / "1", tmp_path / "2")
    assert (tmp_path / "2" / CLASS_GROUPS_NAME).read_text() == (tmp_path / "1" / CLASS_GROUPS_NAME).read_text()
    one, two = (torch.load(tmp_path / nproc / CHECKPOINT_NAME, weights_only=True) for nproc in ("1", "2"))
    assert two["semantic"]["class_groups"] == one["semantic"]["class_groups"]
    for key, value in one["semantic"]["groupings"].items():
        torch.testing.assert_close(two["semantic"]["groupings"][key], value, rtol=0, atol=1e-6, msg=key)
    assert [metrics["train_loss"] for metrics in two["history"]] == pytest.approx(
        [metrics["train_loss"] for metrics in one["history"]], abs=1e-6)


@pytest.mark.slow  # three trainings, two in process groups
@pytest.mark.parametrize("stop_epoch", [1, 3], ids=["before-the-cut", "after-the-cut"])
def test_a_semantic_split_stopped_in_one_process_resumes_in_two(tmp_path, capsys, stop_epoch):
    from splitsearch.data import prepare_data
    from splitsearch.train.loop import Trainer

    path = write_semantic_config(tmp_path, epochs=4)  # cut after epoch 2
    assert run_cli(capsys, "train", path, "--device", "cpu", "--quiet", "--out", tmp_path / "straight")[0] == 0
    config = SplitConfig.from_yaml(path)
    stopped = Trainer(config, prepare_data(config.dataset, config.train), out_dir=tmp_path / "resumed", progress=False,
                      callbacks=[lambda metrics: metrics.epoch == stop_epoch])
    assert len(stopped.fit().history) == stop_epoch
    code, _, err = run_cli(capsys, "train", path, "--device", "cpu", "--quiet", "--nproc", "2", "--resume",
                           "--out", tmp_path / "resumed")
    assert code == 0, err
    assert_same_members(tmp_path / "straight", tmp_path / "resumed")
    assert (tmp_path / "resumed" / CLASS_GROUPS_NAME).read_text() == (tmp_path / "straight" / CLASS_GROUPS_NAME).read_text()


def test_a_semantic_split_refuses_data_ranks_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", write_semantic_config(tmp_path, epochs=2), "--device", "cpu",
                             "--nproc", "2", "--data-parallel", "2")
    assert code == 2 and out == ""
    assert err == ("Error: the semantic split trains member-parallel only (each rank learns and cuts its own members' "
                   "groups): leave out --data-parallel\n")


def test_processes_that_cannot_share_the_members_are_refused_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", write_config(tmp_path, 2, epochs=1), "--nproc", "4", "--device", "cpu")
    assert code == 2 and out == ""
    assert err.strip() == "Error: 4 processes cannot share 2 members equally: use a number of processes that divides S=2"


def test_an_error_in_the_ranks_is_one_line_and_stops_them_all(tmp_path, capsys):
    """Resuming another config's checkpoint fails in every rank; the user sees rank 0's reason once."""
    out_dir = tmp_path / "run"
    assert run_cli(capsys, "train", write_config(tmp_path, 2, epochs=1), "--quiet", "--device", "cpu",
                   "--out", out_dir)[0] == 0
    code, _, err = run_cli(capsys, "train", write_config(tmp_path, 2, epochs=2), "--resume", "--quiet", "--nproc", "2",
                           "--device", "cpu", "--out", out_dir)
    assert code == 2
    assert err.startswith("Error: rank 0: the checkpoint in") and "different config" in err
    assert err.count("\n") == 1


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _live_ranks(pid: int) -> set[int]:
    """The live ranks that torch's launcher in process ``pid`` started (seen alive: they existed).

    They are its children that multiprocessing spawned, but the resource tracker (no rank); any
    other child (a tool a library runs for a moment) is not one.
    """
    found = set()
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if _alive(child) and b"spawn_main" in command and b"resource_tracker" not in command:
            found.add(child)
    return found


def _kill_after_first_checkpoint(command: list[str], out_dir: Path) -> set[int]:
    """Start ``command``, SIGKILL it once a checkpoint holds a finished epoch; its ranks seen alive."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    ranks: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        ranks |= _live_ranks(process.pid)
        if (out_dir / CHECKPOINT_NAME).exists():
            break
        time.sleep(0.05)
    assert process.poll() is None, f"finished or failed before the kill: {process.stderr.read()}"
    ranks |= _live_ranks(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return ranks


def _run_watching_ranks(command: list[str]) -> tuple[int, str, set[int]]:
    """Run ``command`` to its end: (exit status, stderr, the ranks seen alive while it ran)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ranks: set[int] = set()
    while process.poll() is None:
        ranks |= _live_ranks(process.pid)
        time.sleep(0.05)
    return process.returncode, process.stderr.read(), ranks


def _assert_gone(pids: set[int]) -> None:
    """Every process of ``pids`` (seen alive before) has ended; an empty set is refused, as a check
    of nothing would pass when no rank ever ran."""
    assert pids, "no process of the group was seen running: nothing to check"
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "a process of the group outlived its run"


@pytest.mark.slow  # about a minute: three trainings, two of them process groups
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
@pytest.mark.parametrize(("first", "then"), [("2", "1"), ("1", "2")])
def test_a_killed_run_resumes_on_another_number_of_processes_and_leaves_no_process_behind(tmp_path, capsys,
                                                                                         first, then):
    config = write_config(tmp_path, 2, epochs=20)
    assert run_cli(capsys, "train", config, "--quiet", "--device", "cpu", "--out", tmp_path / "straight")[0] == 0

    out_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "splitsearch.cli", "train", str(config), "--quiet", "--device", "cpu",
               "--out", str(out_dir)]
    # One process starts no rank (asserted: no spawned child seen); the killed process itself is
    # reaped by wait(), so "no process left" is checked on the side that ran in two processes.
    ranks = _kill_after_first_checkpoint([*command, "--nproc", first], out_dir)
    assert len(ranks) == {"1": 0, "2": 2}[first]
    if first == "2":
        _assert_gone(ranks)
    finished = len(torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)["history"])
    assert 1 <= finished < 20

    code, err, ranks = _run_watching_ranks([*command, "--nproc", then, "--resume"])
    assert code == 0, err
    assert len(ranks) == {"1": 0, "2": 2}[then]
    if then == "2":
        _assert_gone(ranks)
    assert_same_members(tmp_path / "straight", out_dir)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ranks")
def test_ctrl_c_stops_every_rank_with_one_line_and_the_run_resumes(tmp_path):
    config, out_dir = write_config(tmp_path, 2, epochs=200), tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "splitsearch.cli", "train", str(config), "--quiet", "--device",
                                "cpu", "--nproc", "2", "--out", str(out_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out_dir / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    ranks = _live_ranks(process.pid)
    assert len(ranks) == 2  # the two ranks, alive
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip() == (f"Error: interrupted; the last epoch is checkpointed in {out_dir}: continue with the same "
                           f"command and --resume --out {out_dir}")
    _assert_gone(ranks)
    assert len(torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)["history"]) >= 1
