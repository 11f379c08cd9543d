"""The fault proxy itself: real psycopg connections through it to the test PostgreSQL server.

Each test first checks that the fault happened (the proxy's counters, the client's error) and
only then what the client sees after it, so a proxy that silently forwarded everything fails.
"""

from __future__ import annotations

import time
from typing import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fault_proxy import FaultProxy, wait_for


def libpq(url: str) -> str:
    """The libpq connection string of a SQLAlchemy URL."""
    parsed = make_url(url)
    return (f"host={parsed.host} port={parsed.port} dbname={parsed.database} user={parsed.username} "
            f"sslmode=disable connect_timeout=5" + (f" password={parsed.password}" if parsed.password else ""))


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[tuple[FaultProxy, str]]:
    with FaultProxy.in_front_of(postgres_url) as proxy:
        yield proxy, libpq(proxy.url(postgres_url))


def test_a_connection_through_the_proxy_works(proxy):
    proxy, dsn = proxy
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 40 + 2").fetchone() == (42,)
    assert proxy.accepted == 1 and proxy.cuts == 0


def test_after_a_cut_the_next_query_fails(proxy):
    proxy, dsn = proxy
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("SELECT 1")
        assert proxy.cut() == 1 and proxy.cuts == 1
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")


def test_new_connections_are_refused_for_the_window_then_work(proxy):
    proxy, dsn = proxy
    started = time.monotonic()
    proxy.refuse(2)
    assert proxy.is_refusing()
    with pytest.raises(psycopg.OperationalError, match="(?i)refused"):
        psycopg.connect(dsn)
    wait_for(lambda: not proxy.is_refusing(), timeout=10, what="the refusal window to end")
    assert time.monotonic() - started >= 2
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_cut_after_commit_commits_but_the_client_never_hears(proxy):
    proxy, dsn = proxy
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int)")
    connection = psycopg.connect(dsn)
    proxy.cut_after_commit(containing=b"INSERT INTO t ")
    connection.execute("SELECT count(*) FROM t")
    connection.commit()  # a transaction without the insert: let through
    assert proxy.commit_cuts == 0
    connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(psycopg.OperationalError):
        connection.commit()
    assert proxy.commit_cuts == 1
    with psycopg.connect(dsn) as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (1,)  # the server did commit


def test_the_next_new_connections_are_cut_during_their_start_up(proxy):
    proxy, dsn = proxy
    proxy.cut_new(2, after_bytes=40)  # within libpq's startup message: before authentication ends
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn)
    assert proxy.cuts == 2
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_seeded_cuts_happen_on_schedule(proxy):
    proxy, dsn = proxy
    proxy.cut_randomly(seed=3, every=(0.2, 0.4))
    connection = psycopg.connect(dsn, autocommit=True)
    wait_for(lambda: proxy.cuts >= 1, timeout=5, what="a scheduled cut")
    with pytest.raises(psycopg.OperationalError):
        connection.execute("SELECT 1")


def test_seeded_commit_cuts_cut_only_matching_transactions(proxy):
    proxy, dsn = proxy
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int)")
    proxy.cut_commits_randomly(seed=0, chance=1.0, containing=b"INSERT INTO t ")
    connection = psycopg.connect(dsn)
    connection.execute("SELECT 1")
    connection.commit()
    assert proxy.commit_cuts == 0
    connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(psycopg.OperationalError):
        connection.commit()
    assert proxy.commit_cuts == 1


def test_a_delay_makes_each_round_trip_slower_by_it(proxy):
    proxy, dsn = proxy
    with psycopg.connect(dsn, autocommit=True) as connection:
        started = time.monotonic()
        for _ in range(5):
            connection.execute("SELECT 1")
        fast = time.monotonic() - started
        proxy.delay(0.2)
        before = proxy.delayed
        started = time.monotonic()
        for _ in range(5):
            assert connection.execute("SELECT 1").fetchone() == (1,)
        slow = time.monotonic() - started
    assert proxy.delayed - before >= 5  # every query was held
    assert slow >= 5 * 0.2 > fast, (fast, slow)
    assert proxy.cuts == 0
