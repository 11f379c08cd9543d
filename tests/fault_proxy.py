"""A TCP proxy in front of a real PostgreSQL server that breaks connections when a test says so.

Stopping a whole server (:mod:`private_postgres`) shows a restart; the faults between one worker
and its database are finer: a connection cut in the middle of a worker's start-up, a server
refusing connections for a few seconds, a connection lost right after the server committed a
transaction and before its answer came back (an *ambiguous* commit).  The proxy makes each of
them on demand, with real sockets, so the client sees exactly what libpq sees on a network::

    with FaultProxy.in_front_of(database_url) as proxy:
        url = proxy.url(database_url)
        ...
        proxy.cut()                    # every live connection is closed now
        proxy.refuse(5)                # new connections are refused for 5 s (no time: until accept_again())
        proxy.cut_after_commit()       # the next COMMIT reaches the server, its answer never comes back
        proxy.cut_after_commit(containing=b"INSERT INTO trials ")  # the same, for a transaction that did that
        proxy.cut_new(2, after_bytes=300)  # the next 2 connections drop after 300 bytes from the client
        proxy.cut_randomly(seed=1, every=(2, 6))  # cuts at seeded random intervals until stopped
        proxy.cut_commits_randomly(seed=1, chance=0.1)  # each COMMIT loses its answer with chance 0.1
        proxy.delay(0.2)               # every message from a client waits 200 ms before the server gets it

Counters (:attr:`FaultProxy.accepted`, :attr:`FaultProxy.cuts`, :attr:`FaultProxy.refused_seconds`,
:attr:`FaultProxy.commit_cuts`) let a test check that a fault really happened before it trusts an
outcome.  The proxy reads the client's side of PostgreSQL's wire protocol only to find COMMITs:
the simple query ``Q`` and the extended protocol's ``Parse`` of ``COMMIT``.  It needs the
connection unencrypted (a test server without SSL answers libpq's SSL request with ``N``).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

# The request codes of the untyped messages a client may send before its startup message.
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


@dataclass(eq=False)
class _Link:
    """One client connection and the proxy's connection to the server for it."""

    client: socket.socket
    server: socket.socket
    cut_after_bytes: int | None = None  # drop once the client has sent this many bytes
    sent: int = 0  # bytes from the client so far
    doomed: bool = False  # a COMMIT went to the server: drop before its answer comes back
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """Mark the link closed; whether this call did (not an earlier one).  Counting a cut
        before the sockets close keeps the counters ahead of what the client sees."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            return True

    def close(self) -> bool:
        """Close both sockets; whether this call closed them (not an earlier one)."""
        if not self.claim():
            return False
        self.shut()
        return True

    def shut(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class _CommitFinder:
    """Reads the client's byte stream as PostgreSQL messages and finds the transactions it commits."""

    def __init__(self) -> None:
        self._buffer = b""
        self._typed = False  # after the startup message every message starts with a type byte
        self._statements: list[bytes] = []  # the queries since the last COMMIT or ROLLBACK

    def feed(self, data: bytes) -> list[bytes]:
        """The transactions that ``data`` commits, each as its queries joined by newlines."""
        self._buffer += data
        committed: list[bytes] = []
        while True:
            if not self._typed:
                if len(self._buffer) < 8:
                    return committed
                length, code = struct.unpack("!II", self._buffer[:8])
                if len(self._buffer) < length:
                    return committed
                self._buffer = self._buffer[length:]
                self._typed = code not in (_SSL_REQUEST, _GSSENC_REQUEST)
                continue
            if len(self._buffer) < 5:
                return committed
            kind, length = self._buffer[:1], struct.unpack("!I", self._buffer[1:5])[0]
            if len(self._buffer) < 1 + length:
                return committed
            body, self._buffer = self._buffer[5:1 + length], self._buffer[1 + length:]
            query = _query(kind, body)
            if query is None:
                continue
            command = query.strip().rstrip(b";").strip().upper()
            if command in (b"COMMIT", b"END"):
                committed.append(b"\n".join(self._statements))
            if command in (b"COMMIT", b"END", b"ROLLBACK"):
                self._statements = []
            else:
                self._statements.append(query)


def _query(kind: bytes, body: bytes) -> bytes | None:
    """The query of a simple query (``Q``) or a parse (``P``: statement name, then query) message."""
    if kind == b"Q":
        return body.split(b"\0", 1)[0]
    if kind == b"P":
        parts = body.split(b"\0", 2)
        return parts[1] if len(parts) > 1 else None
    return None


class FaultProxy:
    """Listens on a free port of 127.0.0.1 and forwards every connection to ``target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.accepted = 0  # connections forwarded
        self.cuts = 0  # connections the proxy closed on purpose
        self.commit_cuts = 0  # of those, connections closed between a COMMIT and its answer
        self.refused_seconds = 0.0  # how long the proxy has refused connections in all (ended refusals)
        self.delayed = 0  # client sends held back by :meth:`delay`
        self.latency = 0.0  # seconds each client send waits before it is forwarded
        self._refused_since = 0.0
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._commits_to_cut: list[bytes] = []  # for each COMMIT to cut, what its transaction must contain
        self._commit_draw: tuple[random.Random, float, bytes] | None = None
        self._new_to_cut: list[int] = []  # after how many client bytes each next connection drops
        self._stopping = threading.Event()
        self._schedule: threading.Thread | None = None
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    # -- what a test asks for ---------------------------------------------------------------

    @classmethod
    def in_front_of(cls, url: str) -> FaultProxy:
        """A proxy to the server of the SQLAlchemy ``url``."""
        parsed = make_url(url)
        return cls(parsed.port or 5432, parsed.host or "127.0.0.1")

    def url(self, url: str) -> str:
        """``url`` (a database on the proxied server) through the proxy, unencrypted: the proxy reads COMMITs."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)

    def cut(self) -> int:
        """Close every live connection now, as a failed network or a killed backend would; how many."""
        with self._lock:
            links = list(self._links)
        return sum(self._cut(link) for link in links)

    def refuse(self, seconds: float | None = None) -> None:
        """Cut every live connection and refuse new ones (the port is closed): a server restarting.
        For ``seconds`` in the background (returns at once), or until :meth:`accept_again`."""
        with self._lock:
            listener, self._listener = self._listener, None
        _close_listener(listener)
        self.cut()
        self._refused_since = time.monotonic()
        if seconds is not None:
            threading.Timer(seconds, self.accept_again).start()

    def accept_again(self) -> None:
        """End a refusal: the port is open again."""
        with self._lock:
            if self._listener is not None or self._stopping.is_set():
                return
            self._listener = self._listen(self.port)
            self.refused_seconds += time.monotonic() - self._refused_since
        threading.Thread(target=self._accept, daemon=True).start()

    def is_refusing(self) -> bool:
        return self._listener is None

    def cut_after_commit(self, count: int = 1, containing: bytes = b"") -> None:
        """The next ``count`` COMMITs of a transaction that sent a query containing ``containing``
        (say ``b"INSERT INTO trials "``; anything by default) reach the server, and each one's
        connection is closed before the server's answer reaches the client: the client cannot
        know whether it committed."""
        with self._lock:
            self._commits_to_cut += [containing] * count

    def delay(self, seconds: float) -> None:
        """From now on hold each send of a client ``seconds`` before forwarding it (0: no more):
        a slow network.  A client waits for the server's answer after each send of a query, so each
        round trip takes ``seconds`` longer; a send the kernel split in two waits twice."""
        self.latency = seconds

    def cut_new(self, count: int, after_bytes: int) -> None:
        """The next ``count`` connections are closed once their client has sent ``after_bytes`` bytes."""
        with self._lock:
            self._new_to_cut += [after_bytes] * count

    def cut_randomly(self, seed: int, every: tuple[float, float]) -> None:
        """Cut every live connection again and again, at intervals drawn uniformly from ``every``
        (seconds) by a generator seeded with ``seed``, until :meth:`close`."""
        draw = random.Random(seed)

        def cut_on_schedule() -> None:
            while not self._stopping.wait(draw.uniform(*every)):
                self.cut()

        self._schedule = threading.Thread(target=cut_on_schedule, daemon=True)
        self._schedule.start()

    def cut_commits_randomly(self, seed: int, chance: float, containing: bytes = b"") -> None:
        """From now on cut after each COMMIT of a transaction that sent a query containing
        ``containing``, with probability ``chance`` drawn by a generator seeded with ``seed``
        (the draws are seeded; which connection meets them depends on the clients' timing)."""
        with self._lock:
            self._commit_draw = (random.Random(seed), chance, containing)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            listener, self._listener = self._listener, None
        _close_listener(listener)
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------------

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:  # closed: refusing, or stopping
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()  # the server itself is away: the client sees its connection closed
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                if self._new_to_cut:
                    link.cut_after_bytes = self._new_to_cut.pop(0)
                self._links.add(link)
                self.accepted += 1
            threading.Thread(target=self._pump_from_client, args=(link,), daemon=True).start()
            threading.Thread(target=self._pump_from_server, args=(link,), daemon=True).start()

    def _pump_from_client(self, link: _Link) -> None:
        finder = _CommitFinder()
        try:
            while data := link.client.recv(65536):
                if link.cut_after_bytes is not None and link.sent + len(data) >= link.cut_after_bytes:
                    link.server.sendall(data[:max(link.cut_after_bytes - link.sent, 0)])
                    self._cut(link)
                    return
                link.sent += len(data)
                if self.latency > 0:
                    time.sleep(self.latency)
                    with self._lock:
                        self.delayed += 1
                for transaction in finder.feed(data):
                    link.doomed |= self._cuts_commit_of(transaction)
                link.server.sendall(data)
        except OSError:
            pass
        self._drop(link)

    def _pump_from_server(self, link: _Link) -> None:
        try:
            while data := link.server.recv(65536):
                if link.doomed:  # the server answered the COMMIT: it is done; the client never hears
                    self._cut(link, after_commit=True)
                    return
                link.client.sendall(data)
        except OSError:
            pass
        self._drop(link)

    def _cuts_commit_of(self, transaction: bytes) -> bool:
        """Whether the COMMIT of ``transaction`` (its queries) is to lose its answer."""
        with self._lock:
            if self._commits_to_cut and self._commits_to_cut[0] in transaction:
                self._commits_to_cut.pop(0)
                return True
            if self._commit_draw is not None:
                draw, chance, containing = self._commit_draw
                return containing in transaction and draw.random() < chance
        return False

    def _cut(self, link: _Link, after_commit: bool = False) -> bool:
        if not link.claim():
            return False
        with self._lock:
            self.cuts += 1
            self.commit_cuts += after_commit
            self._links.discard(link)
        link.shut()
        return True

    def _drop(self, link: _Link) -> None:
        """One side ended the connection on its own: close the other side too."""
        link.close()
        with self._lock:
            self._links.discard(link)


def _close_listener(listener: socket.socket | None) -> None:
    """Stop listening at once: a bare close leaves the port open while a thread waits in accept()."""
    if listener is None:
        return
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


def wait_for(condition, timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
