"""A worker's ranks kept across trials: the process group starts once, and each trial is a message.

``splitsearch run --nproc-per-trial N`` trains many candidates in process groups.  Launching a
group for every trial (:func:`~splitsearch.train.launch.launch`) starts N Python processes that
import torch, join a group and load the dataset, which takes longer than a short trial trains.
A :class:`RankPool` starts its N ranks with the first trial that needs them and keeps them: every
later trial is a message to the ranks it needs (a function and its arguments), and rank 0's
return value comes back the same way.  What the ranks have loaded stays loaded: torch, the
process group (joined again only when a trial needs another number of ranks, or asks for a fresh
group), the datasets (:class:`~splitsearch.train.plan.TrainRequest`'s ``keep_data``) and
whatever torch compiled.  Ray Tune's ``reuse_actors`` does the same for its trials.

Faults follow :func:`~splitsearch.train.launch.launch`'s rules.  A rank that raises fails the
call with its error (one line for an error a user can fix, its traceback otherwise).  The other
ranks may be waiting for it at a collective, so the pool stops every rank and the next call
starts new ones; a rank that died, during a call or between calls, does the same (between calls
``on_restart`` is told).  The ranks run in a session of their own and ignore Ctrl-C and SIGTERM:
the worker decides, and stops them when it is interrupted.  The kernel kills them when the worker
dies (Linux's ``PR_SET_PDEATHSIG``), so no rank outlives it.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any, Callable

import torch.distributed as dist

from splitsearch.models import registry
from splitsearch.train.launch import (
    COLLECTIVE_TIMEOUT,
    died_without_report,
    die_with,
    failure_of,
    join_group,
    rank_report,
)

# The rendezvous of a pool's groups: its ranks all run on this machine.
_HOST = "127.0.0.1"
# How often a call looks at its ranks' processes: a rank that died is found within about this.
_MONITOR_SECONDS = 0.5
# After the first rank fails, how long the others have to report too (an error a user can fix
# often fails every rank at once, and the lowest rank's is the one to tell).
_GRACE_SECONDS = 2.0
# How long a rank has to end once the pool closes its connection, before it is killed.
_CLOSE_SECONDS = 10.0
# A rank's command line: the worker's import path first, then its main function.
_RANK_MAIN = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from splitsearch.train.pool import serve_rank; serve_rank()"


@dataclass(frozen=True)
class _Hello:
    """What a rank needs before its first task: the store its groups meet at, and the device."""

    store_port: int
    device: str


@dataclass(frozen=True)
class _Task:
    """A call, as a rank of group ``generation`` of ``world`` ranks: ``call`` pickles
    ``(function, args, the architectures to register)``."""

    generation: int
    world: int
    call: bytes


@dataclass(frozen=True)
class _Leave:
    """Leave the current group: the next trial needs fewer ranks, and this one is not among them."""


@dataclass(frozen=True)
class _Reply:
    """A task's outcome on one rank: its return value, or the report of what it raised."""

    result: Any = None
    report: dict[str, Any] | None = None


class _RankProcess:
    """One rank of the pool: its process and the connection to it."""

    def __init__(self, index: int, hello: _Hello) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _RANK_MAIN, json.dumps(sys.path), str(theirs.fileno()), str(index),
                 str(os.getpid())],
                # A session of its own: a terminal's Ctrl-C reaches the worker alone, which stops the ranks.
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True)
        self.connection = Connection(ours.detach())
        self.send(pickle.dumps(hello))

    def send(self, message: bytes) -> None:
        """Send a pickled message; a rank that died meanwhile is found by the call that waits for it."""
        try:
            self.connection.send_bytes(message)
        except OSError:
            pass

    def exit_code(self) -> int:
        """The exit code of a rank whose connection closed (it is ending: wait a moment for it)."""
        try:
            return self.process.wait(timeout=_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:  # it closed its end and lives on: stopped here
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """End the rank: it leaves its group and exits when its connection closes; killed if it does not."""
        self.connection.close()
        try:
            self.process.wait(timeout=_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()


class RankPool:
    """Up to ``size`` ranks on this machine, started once and kept for every :meth:`run` until :meth:`close`.

    Nothing starts before the first :meth:`run`.  Use it as a context manager, or call :meth:`close`.

    Args:
        size: the most ranks a call may use.
        device: ``cpu`` or ``cuda[:N]``: the ranks' devices and the group's backend, as
            :func:`~splitsearch.train.launch.launch` chooses them.
        on_restart: told, in one line, that a rank died between calls and new ranks are starting.
    """

    def __init__(self, size: int, device: str, on_restart: Callable[[str], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one rank, got {size}")
        self.size = size
        self.device = device
        self.on_restart = on_restart
        self._ranks: list[_RankProcess] = []
        self._store: dist.TCPStore | None = None
        self._generation = 0
        self._group_size = 0  # the ranks in the current group (0: none)

    @property
    def pids(self) -> list[int]:
        """The process ids of the running ranks, rank 0 first (empty before the first call and after close)."""
        return [rank.process.pid for rank in self._ranks]

    def run(self, processes: int, function: Callable[..., Any], *args: Any, new_group: bool = False) -> Any:
        """``function(*args)`` on ranks ``0 .. processes - 1`` as one process group; rank 0's result.

        ``function`` and ``args`` must pickle (a module-level function); the ranks run it with
        the architectures this process has registered.  ``new_group``: the ranks join a new group
        first, for a function that creates subgroups, which a kept group would otherwise gather.

        Raises:
            TrainingError: a rank failed with an error a user can fix (its message, in one line).
            RankFailedError: a rank failed otherwise, or died; its traceback or exit code is in the message.
            KeyboardInterrupt: Ctrl-C or SIGTERM reached this process; the ranks were stopped.
        """
        if not 1 <= processes <= self.size:
            raise ValueError(f"a pool of {self.size} ranks cannot run {processes}")
        # A call that cannot be sent fails here, before any rank is touched.
        call = pickle.dumps((function, args, registry.available_families()))
        try:
            self._ensure_running()
            if new_group or processes != self._group_size:
                self._generation += 1
                for rank in self._ranks[processes:self._group_size]:
                    rank.send(pickle.dumps(_Leave()))
                self._group_size = processes
            message = pickle.dumps(_Task(self._generation, processes, call))
            for rank in self._ranks[:processes]:
                rank.send(message)
            replies, exit_codes = self._collect(processes)
        except BaseException:  # Ctrl-C or SIGTERM while the ranks train: they stop with this process's call
            self._stop()
            raise
        reports = {index: reply.report for index, reply in replies.items() if reply.report is not None}
        if reports or exit_codes:
            self._stop()
            user_errors = {index: report for index, report in reports.items() if report["user"]}
            # A rank that died is the cause of its peers' failures ("connection closed by peer").
            failure = failure_of(user_errors) or (died_without_report(exit_codes) if exit_codes
                                                  else failure_of(reports))
            raise failure
        return replies[0].result

    def close(self) -> None:
        """End every rank (each leaves its group and exits); the next :meth:`run` would start new ones."""
        for rank in self._ranks:
            rank.close()
        self._ranks = []
        self._group_size = 0
        self._store = None

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- parts -------------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        """Start the ranks, or start them again where one died since the last call."""
        dead = {index: rank.process.returncode for index, rank in enumerate(self._ranks)
                if rank.process.poll() is not None}
        if self._ranks and not dead:
            return
        if dead:
            self._stop()
            if self.on_restart is not None:
                ranks = ", ".join(f"rank {index} (exit code {code})" for index, code in sorted(dead.items()))
                self.on_restart(f"{ranks} of the kept process group died between trials; starting "
                                f"{self.size} new ranks")
        if self._store is None:
            self._store = dist.TCPStore(_HOST, 0, is_master=True, wait_for_workers=False, timeout=COLLECTIVE_TIMEOUT)
        hello = _Hello(self._store.port, self.device)
        for index in range(self.size):  # one by one: a Ctrl-C meanwhile stops those started (run's except)
            self._ranks.append(_RankProcess(index, hello))

    def _collect(self, processes: int) -> tuple[dict[int, _Reply], dict[int, int]]:
        """Every rank's reply to the task, and the exit codes of ranks that died instead.

        After the first failure the others get :data:`_GRACE_SECONDS` to report: those still
        waiting then are stuck at a collective with the failed rank and are stopped.
        """
        pending = dict(enumerate(self._ranks[:processes]))
        replies: dict[int, _Reply] = {}
        exit_codes: dict[int, int] = {}
        deadline = None
        while pending and (deadline is None or time.monotonic() < deadline):
            ready = wait([rank.connection for rank in pending.values()], timeout=_MONITOR_SECONDS)
            for index, rank in list(pending.items()):
                if rank.connection in ready:
                    try:
                        replies[index] = rank.connection.recv()
                    except (EOFError, OSError):
                        exit_codes[index] = rank.exit_code()
                elif rank.process.poll() is not None:
                    exit_codes[index] = rank.process.returncode
                else:
                    continue
                del pending[index]
            failed = exit_codes or any(reply.report is not None for reply in replies.values())
            if failed and deadline is None:
                deadline = time.monotonic() + _GRACE_SECONDS
        return replies, exit_codes

    def _stop(self) -> None:
        """Kill every rank now (a failure or an interruption: some may be training or stuck at a collective)."""
        for rank in self._ranks:
            rank.kill()
        self._ranks = []
        self._group_size = 0


# -- the rank's side -------------------------------------------------------------------------------


class _Rank:
    """A kept rank's state between tasks: which group it is in."""

    def __init__(self, index: int, hello: _Hello) -> None:
        self.index = index
        self.device = hello.device
        self.store = dist.TCPStore(_HOST, hello.store_port, is_master=False, timeout=COLLECTIVE_TIMEOUT)
        self.generation: int | None = None

    def handle(self, message: bytes) -> bytes | None:
        """Run one task (the pickled reply), or leave the group (no reply)."""
        try:
            task = pickle.loads(message)
            if isinstance(task, _Leave):
                self.leave()
                return None
            self.join(task.generation, task.world)
            function, args, families = pickle.loads(task.call)
            for family in families:
                registry.register_family(family)
            return pickle.dumps(_Reply(result=function(*args)))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the worker, which decides
            return pickle.dumps(_Reply(report=rank_report(error)))

    def join(self, generation: int, world: int) -> None:
        """Be rank ``index`` of group ``generation`` (of ``world`` ranks), leaving any other group first."""
        if generation == self.generation:
            return
        self.leave()
        # What torchrun sets, and what rank_device and process_group_backend read: one node, one rank per index.
        os.environ.update(RANK=str(self.index), LOCAL_RANK=str(self.index), WORLD_SIZE=str(world),
                          LOCAL_WORLD_SIZE=str(world))
        join_group(self.device, store=dist.PrefixStore(f"group-{generation}", self.store), rank=self.index,
                   world_size=world)
        self.generation = generation

    def leave(self) -> None:
        if self.generation is not None:
            dist.destroy_process_group()
            self.generation = None


def serve_rank() -> None:
    """A kept rank's main function; its command line holds the worker's import path, the connection's
    file descriptor, the rank's index and the worker's process id."""
    descriptor, index, parent = (int(value) for value in sys.argv[2:5])
    for signum in (signal.SIGINT, signal.SIGTERM):  # the worker's to act on: it stops the ranks
        signal.signal(signum, signal.SIG_IGN)
    die_with(parent)
    connection = Connection(descriptor)
    rank = _Rank(index, connection.recv())
    while True:
        try:
            message = connection.recv_bytes()
        except (EOFError, OSError):  # the pool closed: the worker is done with its ranks
            break
        if (reply := rank.handle(message)) is not None:
            connection.send_bytes(reply)
    rank.leave()
