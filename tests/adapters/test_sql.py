"""brownout.sql against real PostgreSQL (psycopg sync, asyncpg async) and SQLite files.

Every scenario of the adapter brief: round trips, faults (killed, paused, blackholed,
reset) opening the breaker after 3 failures with rejections that never reach the proxy,
caller errors that never trip it, slow calls, recovery without leaked connections, and
secrets kept out of health, errors and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import importlib
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from brownout import BreakerConfig, BreakerOpen, Registry, State
from brownout.adapter import OperationEvent
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.sql import SQL_ERRORS, AsyncDatabase, Database
from tests.servers.plugin import PostgresServer

FAST = BreakerConfig(consecutive_failures=3, open_for=1.0, half_open_calls=1)
# short client timeouts: each failing call gives up quickly (psycopg connects: 2 s minimum)
SHORT = {
    "connect_timeout": 0.5,
    "command_timeout": 0.5,
    "statement_timeout": 2.0,
    "pool_timeout": 0.5,
    "pool_size": 2,
    "max_overflow": 1,
}
PASSWORD = "Sup3r-s3cret-pw-4711"

CREATE = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, qty INTEGER)"


def pg_url(server: PostgresServer, dbname: str, driver: str, *, port: int | None = None) -> str:
    return server.dsn_for(dbname, port=port).replace("postgresql://", f"postgresql+{driver}://")


def sqlite_url(tmp_path: Path, *, is_async: bool) -> str:
    return f"sqlite{'+aiosqlite' if is_async else ''}:///{tmp_path / 'brownout.db'}"


def dbname_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


@pytest.fixture
def sync_dbs() -> Iterator[Callable[..., Database]]:
    """``make(url, **options)`` -> a Database from_url, closed (engine disposed) after the test."""
    made: list[Database] = []

    def make(url: str, **options: Any) -> Database:
        db = Database.from_url(url, **{**SHORT, "config": FAST, **options})
        made.append(db)
        return db

    yield make
    for db in made:
        db.close()


@pytest.fixture
async def async_dbs() -> AsyncIterator[Callable[..., AsyncDatabase]]:
    made: list[AsyncDatabase] = []

    def make(url: str, **options: Any) -> AsyncDatabase:
        db = AsyncDatabase.from_url(url, **{**SHORT, "config": FAST, **options})
        made.append(db)
        return db

    yield make
    for db in made:
        await db.close()


@pytest.fixture
def events() -> list[OperationEvent]:
    return []


@pytest.fixture
def private_pg(
    make_postgres: Callable[..., PostgresServer],
) -> Iterator[tuple[PostgresServer, ThreadedFaultProxy, str]]:
    """A private PostgreSQL (safe to kill or pause), a proxy in front of it and a database."""
    server = make_postgres()
    dsn = server.create_database()
    with ThreadedFaultProxy(server.host, server.port, max_lifetime=600) as proxy:
        yield server, proxy, dbname_of(dsn)
        server.resume()


@pytest.fixture(params=["postgresql", "sqlite"])
def sync_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path, is_async=False)
    dsn = request.getfixturevalue("fresh_database")
    server = request.getfixturevalue("postgres_server")
    return pg_url(server, dbname_of(dsn), "psycopg")


@pytest.fixture(params=["postgresql", "sqlite"])
def async_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path, is_async=True)
    dsn = request.getfixturevalue("fresh_database")
    server = request.getfixturevalue("postgres_server")
    return pg_url(server, dbname_of(dsn), "asyncpg")


# --------------------------------------------------------------------------- 1. round trips


def test_sync_round_trip(sync_dbs: Callable[..., Database], sync_url: str) -> None:
    db = sync_dbs(sync_url)
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    with db.session() as s:
        s.execute(text(CREATE))
        s.execute(text("INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 5)"))
    assert db.scalar("SELECT qty FROM items WHERE name = :n", {"n": "pear"}) == 5
    with db.session() as s:
        s.execute(text("UPDATE items SET qty = qty + 10 WHERE id = 1"))
        assert s.execute(text("SELECT qty FROM items WHERE id = 1")).scalar_one() == 13
    result = db.execute("UPDATE items SET qty = 0 WHERE qty > :q", {"q": 4})
    assert result.rowcount == 2
    rows = db.execute(text("SELECT name, qty FROM items ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("apple", 0), ("pear", 0)]

    # an error inside the unit rolls everything back; the caller's own error does not count
    with pytest.raises(ValueError, match="changed my mind"), db.session() as s:
        s.execute(text("INSERT INTO items VALUES (3, 'plum', 1)"))
        raise ValueError("changed my mind")
    assert db.scalar("SELECT count(*) FROM items") == 2
    assert db.breaker.state is State.CLOSED
    assert [e.outcome for e in events][-2:] == ["caller_error", "success"]
    assert {e.dependency for e in events} == {"sql"} and db.name == "database"
    assert db.extra_figures()["pool_in_use"] == 0


async def test_async_round_trip(async_dbs: Callable[..., AsyncDatabase], async_url: str) -> None:
    db = async_dbs(async_url)
    async with db.session() as s:
        await s.execute(text(CREATE))
        await s.execute(text("INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 5)"))
    assert await db.scalar("SELECT qty FROM items WHERE name = :n", {"n": "pear"}) == 5
    async with db.session() as s:
        await s.execute(text("UPDATE items SET qty = qty + 10 WHERE id = 1"))
        assert (await s.execute(text("SELECT qty FROM items WHERE id = 1"))).scalar_one() == 13
    result = await db.execute("UPDATE items SET qty = 0 WHERE qty > :q", {"q": 4})
    assert result.rowcount == 2  # type: ignore[attr-defined]
    rows = (await db.execute("SELECT name, qty FROM items ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("apple", 0), ("pear", 0)]

    with pytest.raises(ValueError, match="changed my mind"):
        async with db.session() as s:
            await s.execute(text("INSERT INTO items VALUES (3, 'plum', 1)"))
            raise ValueError("changed my mind")
    assert await db.scalar("SELECT count(*) FROM items") == 2
    assert db.breaker.state is State.CLOSED
    assert db.extra_figures()["pool_in_use"] == 0


def test_figures_show_pool_use_and_mask_the_password(
    sync_dbs: Callable[..., Database], postgres_server: PostgresServer, fresh_database: str
) -> None:
    url = make_url(pg_url(postgres_server, dbname_of(fresh_database), "psycopg"))
    db = sync_dbs(url.set(password=PASSWORD).render_as_string(hide_password=False))
    with db.session() as s:
        s.execute(text("SELECT 1"))
        inside = db.extra_figures()
    after = db.health()
    assert inside["pool_in_use"] == 1 and after["pool_in_use"] == 0
    assert after["pool_size"] == 2 and after["pool_overflow"] <= 0
    assert after["dialect"] == "postgresql" and after["driver"] == "psycopg"
    assert "***" in after["url"] and PASSWORD not in repr(after) and PASSWORD not in repr(db)


# --------------------------------------------------------------------------- 3. caller errors


def test_sync_caller_errors_never_trip(sync_dbs: Callable[..., Database], sync_url: str) -> None:
    db = sync_dbs(sync_url)
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    db.execute(CREATE)
    db.execute("INSERT INTO items VALUES (1, 'apple', 1)")
    for i in range(10):
        with pytest.raises(sa_exc.IntegrityError), db.session() as s:
            s.execute(text("INSERT INTO items VALUES (:i, 'fig', 1)"), {"i": 100 + i})
            s.execute(text("INSERT INTO items VALUES (:i, 'apple', 1)"), {"i": 200 + i})
    with pytest.raises(sa_exc.NoResultFound), db.session() as s:
        s.execute(text("SELECT id FROM items WHERE id = 999")).scalar_one()
    with pytest.raises(sa_exc.MultipleResultsFound), db.session() as s:
        s.execute(text("SELECT 1 UNION ALL SELECT 2")).scalar_one()
    with pytest.raises((sa_exc.ProgrammingError, sa_exc.OperationalError)):
        db.execute("SELEC 1")  # SQLite reports syntax errors as OperationalError
    with pytest.raises((sa_exc.ProgrammingError, sa_exc.OperationalError)):
        db.execute("SELECT * FROM no_such_table")
    assert db.breaker.state is State.CLOSED
    assert {e.outcome for e in events[2:]} == {"caller_error"} and len(events) == 16
    assert db.scalar("SELECT count(*) FROM items") == 1  # every failed unit rolled back
    assert db.health()["pool_in_use"] == 0 and db.breaker.snapshot().total_failures == 0


async def test_async_caller_errors_never_trip(
    async_dbs: Callable[..., AsyncDatabase], async_url: str
) -> None:
    db = async_dbs(async_url)
    await db.execute(CREATE)
    await db.execute("INSERT INTO items VALUES (1, 'apple', 1)")
    for i in range(10):
        with pytest.raises(sa_exc.IntegrityError):
            async with db.session() as s:
                await s.execute(text("INSERT INTO items VALUES (:i, 'fig', 1)"), {"i": 100 + i})
                await s.execute(text("INSERT INTO items VALUES (:i, 'apple', 1)"), {"i": 200 + i})
    with pytest.raises(sa_exc.NoResultFound):
        async with db.session() as s:
            (await s.execute(text("SELECT id FROM items WHERE id = 999"))).scalar_one()
    bad_statements = ["SELEC 1", "SELECT * FROM no_such_table"]
    if db.engine.dialect.name == "postgresql":
        bad_statements.append("SELECT 1/0")  # asyncpg: a plain DBAPIError with SQLSTATE 22012
    for bad in bad_statements:
        with pytest.raises(sa_exc.DBAPIError):
            await db.execute(bad)
    assert db.breaker.state is State.CLOSED
    assert db.breaker.snapshot().total_failures == 0
    assert await db.scalar("SELECT count(*) FROM items") == 1
    assert db.health()["pool_in_use"] == 0


# --------------------------------------------------------------------------- 2 + 5. faults


def fault_on(fault: str, server: PostgresServer, proxy: ThreadedFaultProxy) -> None:
    if fault == "killed":
        server.kill()
    elif fault == "paused":
        server.pause()
    else:
        proxy.set_mode(Mode(fault))


def fault_off(fault: str, server: PostgresServer, proxy: ThreadedFaultProxy) -> None:
    if fault == "killed":
        server.start()
    elif fault == "paused":
        server.resume()
    else:
        proxy.set_mode(Mode.PASS)


FAULTS = ["killed", "paused", "blackhole", "reset"]


def wait_for_half_open(db: Database | AsyncDatabase) -> None:
    deadline = time.monotonic() + 10
    while db.breaker.state is State.OPEN and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("fault", FAULTS)
def test_sync_faults_open_then_recover(
    sync_dbs: Callable[..., Database],
    private_pg: tuple[PostgresServer, ThreadedFaultProxy, str],
    fault: str,
) -> None:
    server, proxy, dbname = private_pg
    db = sync_dbs(pg_url(server, dbname, "psycopg", port=proxy.port))
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    db.execute(CREATE)
    db.execute("INSERT INTO items VALUES (1, 'apple', 1)")

    fault_on(fault, server, proxy)
    for _ in range(3):
        with pytest.raises(sa_exc.SQLAlchemyError) as info:
            db.scalar("SELECT qty FROM items WHERE id = 1")
        assert SQL_ERRORS.counts(info.value), info.value
    assert db.breaker.state is State.OPEN
    assert [e.outcome for e in events[-3:]] == ["failure"] * 3
    print("KINDS", fault, [e.error_kind for e in events[-3:]], db.health()["last_error"][:150])
    assert {e.error_kind for e in events[-3:]} <= {"connection", "timeout", "server"}

    before = proxy.stats
    for _ in range(5):
        with pytest.raises(BreakerOpen):
            db.scalar("SELECT 1")
        with pytest.raises(BreakerOpen), db.session():
            pass  # pragma: no cover - never entered
    after = proxy.stats
    assert (after.connections_total, after.bytes_up) == (before.connections_total, before.bytes_up)
    assert events[-1].outcome == "rejected"

    fault_off(fault, server, proxy)
    wait_for_half_open(db)
    assert db.scalar("SELECT qty FROM items WHERE id = 1") == 1
    assert db.breaker.state is State.CLOSED
    db.execute("UPDATE items SET qty = 2")
    assert db.scalar("SELECT qty FROM items") == 2
    assert db.health()["pool_in_use"] == 0


@pytest.mark.parametrize("fault", FAULTS)
async def test_async_faults_open_then_recover(
    async_dbs: Callable[..., AsyncDatabase],
    private_pg: tuple[PostgresServer, ThreadedFaultProxy, str],
    fault: str,
) -> None:
    server, proxy, dbname = private_pg
    db = async_dbs(pg_url(server, dbname, "asyncpg", port=proxy.port))
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    await db.execute(CREATE)
    await db.execute("INSERT INTO items VALUES (1, 'apple', 1)")

    fault_on(fault, server, proxy)
    for _ in range(3):
        with pytest.raises(Exception) as info:
            await db.scalar("SELECT qty FROM items WHERE id = 1")
        assert not isinstance(info.value, BreakerOpen)
        assert SQL_ERRORS.counts(info.value), repr(info.value)
    assert db.breaker.state is State.OPEN
    assert [e.outcome for e in events[-3:]] == ["failure"] * 3
    print("KINDS", fault, [e.error_kind for e in events[-3:]], db.health()["last_error"][:150])

    before = proxy.stats
    for _ in range(5):
        with pytest.raises(BreakerOpen):
            await db.scalar("SELECT 1")
    after = proxy.stats
    assert (after.connections_total, after.bytes_up) == (before.connections_total, before.bytes_up)

    fault_off(fault, server, proxy)
    await asyncio.to_thread(wait_for_half_open, db)
    assert await db.scalar("SELECT qty FROM items WHERE id = 1") == 1
    assert db.breaker.state is State.CLOSED
    async with db.session() as s:
        await s.execute(text("UPDATE items SET qty = 2"))
    assert await db.scalar("SELECT qty FROM items") == 2
    assert db.health()["pool_in_use"] == 0
