"""Run a function on every rank of a torch.distributed process group: started here, or by torchrun.

``splitsearch train CONFIG --nproc N`` needs no extra tool: :func:`launch` starts N processes on
this machine with torch's own elastic launcher (the machinery behind ``torchrun``) and returns
rank 0's result.  On a cluster node the same command runs under ``torchrun --nproc-per-node N``:
each process finds torchrun's environment (:func:`launched_by_torchrun`) and joins the group as
its rank.  Either way a rank that raises or dies ends the others: the launcher stops every
process of the group when one fails, every collective has a timeout, and each rank started here
dies with the process that started it, so none is left running or hanging.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from splitsearch.errors import SplitsearchError, TrainingError
from splitsearch.models import registry

# The longest one rank waits for the others at a collective before the group gives up.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# How often the launcher looks at its processes: a failed rank ends the others within about this.
_MONITOR_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
# The signals torch's launcher handles (its TORCHELASTIC_SIGNALS_TO_HANDLE default) in the process that launches.
_LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# The loggers of torch's launcher, which log a failed rank's traceback and the stopping of the others.
_LAUNCHER_LOGS = ("torch.distributed.elastic", "torch.multiprocessing")


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a group torchrun (or another launcher) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def torchrun_world() -> int:
    """The number of ranks of the group torchrun started (1 outside one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def group_size(nproc: int) -> int:
    """How many processes a command's ``--nproc`` runs in: torchrun's group under torchrun, else ``nproc``."""
    return torchrun_world() if launched_by_torchrun() else nproc


def run_in_processes(nproc: int, on_rank: Callable[..., Any], in_one_process: Callable[..., Any], device: str,
                     *args: Any) -> Any:
    """The one dispatch of a command that may run on several processes.

    Under torchrun this process is one rank of torchrun's group and runs ``on_rank(*args)``; with
    ``nproc`` > 1 it launches ``nproc`` ranks of ``on_rank`` (:func:`launch`) and waits for them;
    otherwise it runs ``in_one_process(*args)`` itself.  Returns rank 0's result (None on the
    other ranks under torchrun).
    """
    if launched_by_torchrun():
        return run_as_rank(on_rank, device, *args)
    if nproc > 1:
        return launch(nproc, on_rank, device, *args)
    return in_one_process(*args)


def rank_device(device: str) -> str:
    """The device of this rank: its own GPU (``cuda:LOCAL_RANK``) where ``device`` is CUDA.

    Where the node has fewer GPUs than ranks, the ranks take them in turn (``LOCAL_RANK`` modulo
    the GPU count): on one GPU every rank runs on ``cuda:0``.
    """
    if device.startswith("cuda") and launched_by_torchrun():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(1, torch.cuda.device_count())}"
    return device


def process_group_backend(device: str) -> str:
    """nccl where every rank of the node has a GPU of its own, gloo otherwise.

    NCCL refuses two ranks on one GPU, so ranks that share a GPU talk over gloo, which runs the
    collectives the training and the branch-parallel inference use (broadcast, all-reduce) on
    CUDA tensors too; on the CPU it is gloo anyway.
    """
    if not device.startswith("cuda"):
        return "gloo"
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return "nccl" if ranks_here <= torch.cuda.device_count() else "gloo"


def launch(nproc: int, function: Callable[..., Any], device: str, *args: Any) -> Any:
    """``function(*args)`` on ``nproc`` new processes forming one group; returns rank 0's result.

    Raises:
        TrainingError: a rank failed with an error a user can fix (its message, in one line).
        RankFailedError: a rank failed otherwise (a bug, a crash); its traceback is in the message.
        KeyboardInterrupt: Ctrl-C or SIGTERM reached this process; the ranks were stopped.
    """
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"splitsearch-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=_MONITOR_SECONDS, start_method="spawn")
    logs = [logging.getLogger(name) for name in [*_LAUNCHER_LOGS, *logging.root.manager.loggerDict]
            if name.startswith(_LAUNCHER_LOGS)]
    levels = [log.level for log in logs]
    handlers = _signal_handlers()
    with tempfile.TemporaryDirectory(prefix="splitsearch-ranks-") as reports:
        # Each rank reports its own failure (below); the launcher's log would repeat it as a traceback.
        for log in logs:
            log.setLevel(logging.CRITICAL)
        try:
            results = elastic_launch(config, _rank_main)(function, device, reports, os.getpid(),
                                                         registry.available_families(), *args)
        except ChildFailedError as error:
            raise _failure(Path(reports), error) from None
        except SignalException as signalled:  # the launcher's way of saying Ctrl-C or SIGTERM; the ranks are stopped
            handler = handlers.get(signalled.sigval)
            if callable(handler):  # what this process does on the signal: a worker's SIGTERM queues its trial again
                handler(signalled.sigval, None)
            raise KeyboardInterrupt(str(signalled)) from None
        finally:
            for log, level in zip(logs, levels):
                log.setLevel(level)
            for signum, handler in handlers.items():  # the launcher replaced them and leaves its own behind
                signal.signal(signum, handler)
    return results[0]


def _signal_handlers() -> dict[signal.Signals, Any]:
    """This process's handlers of the signals torch's launcher takes over (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in _LAUNCHER_SIGNALS}


class RankFailedError(RuntimeError):
    """A rank of a process group raised something other than an error a user can fix: a bug, a crash.

    ``str()`` holds the rank's traceback (what a developer needs); ``reason`` is one line,
    ``rank <r>: <ExceptionType>: <message>``, for a search trial's failure record.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def run_as_rank(function: Callable[..., Any], device: str, *args: Any) -> Any:
    """``function(*args)`` as this process's rank of the group its environment describes (torchrun's)."""
    join_group(device)
    try:
        return function(*args)
    finally:
        dist.destroy_process_group()


def join_group(device: str, **rendezvous: Any) -> None:
    """Join the process group as this rank, on its own GPU where ``device`` is CUDA.

    ``rendezvous``: ``init_process_group``'s store, rank and world size (default: the environment's,
    torchrun's).  The collectives time out after :data:`COLLECTIVE_TIMEOUT`.
    """
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(rank_device(device)))
    dist.init_process_group(process_group_backend(device), timeout=COLLECTIVE_TIMEOUT, **rendezvous)
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: the ranks share the cores, not fight over them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.get_world_size()))


def _rank_main(function: Callable[..., Any], device: str, reports: str, parent: int,
               families: list[registry.ArchFamily], *args: Any) -> Any:
    """One rank started by :func:`launch`: it dies with its parent, knows the parent's architectures
    (one registered in Python too), runs as its rank, and reports a failure.

    Ctrl-C is the launcher's to report (it stops every rank with SIGINT, then says so in one line),
    so a rank ends at once and quietly on it; its checkpoint is the last one written whole.
    """
    signal.signal(signal.SIGINT, _exit_quietly)
    die_with(parent)
    for family in families:
        registry.register_family(family)
    try:
        return run_as_rank(function, device, *args)
    except BaseException as error:
        report = rank_report(error)
        (Path(reports) / f"rank-{int(os.environ.get('RANK', '0')):05d}.json").write_text(json.dumps(report))
        raise


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # a process ends on SystemExit without printing a traceback


def die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), so no rank outlives a SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def rank_report(error: BaseException) -> dict[str, Any]:
    """What a rank that raised ``error`` tells the process that started it (plain data, JSON-ready).

    Call it in the ``except`` block: the traceback is the one being handled.
    """
    return {"user": isinstance(error, SplitsearchError), "message": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(), "time": time.time()}


def failure_of(reports: dict[int, dict[str, Any]]) -> Exception | None:
    """The group's failure from its ranks' reports (by rank): one line for an error a user can fix,
    the traceback otherwise; None without a report.

    An error a user can fix is never caused by another rank, so the lowest rank with one is
    reported.  Otherwise the first rank to fail, in time: when one rank raises, the others fail
    after it at their next collective ("connection closed by peer") and report that too.
    """
    for rank, report in sorted(reports.items(), key=lambda pair: (not pair[1]["user"],
                                                                  0 if pair[1]["user"] else pair[1]["time"], pair[0])):
        if report["user"]:
            return TrainingError(f"rank {rank}: {report['message'].partition(': ')[2]}")
        return RankFailedError(f"rank {rank} failed:\n{report['traceback']}", f"rank {rank}: {report['message']}")
    return None


def died_without_report(exit_codes: dict[int, int]) -> RankFailedError:
    """The failure of ranks (by rank, with their exit codes) that died before they could say why."""
    ranks = ", ".join(f"rank {rank} (exit code {code})" for rank, code in sorted(exit_codes.items()))
    message = f"{ranks} of the process group died without a report (killed?)"
    return RankFailedError(message, message)


def _failure(reports: Path, error: ChildFailedError) -> Exception:
    """The failed rank's own report (:func:`failure_of`), else which ranks died."""
    found = {int(path.stem.removeprefix("rank-")): json.loads(path.read_text()) for path in reports.glob("rank-*.json")}
    return failure_of(found) or died_without_report({rank: failure.exitcode
                                                     for rank, failure in error.failures.items()})
