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
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
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
from brownout.testing import eventually
from tests.servers.plugin import PostgresServer

FAST = BreakerConfig(consecutive_failures=3, open_for=0.5, half_open_calls=1)
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
def sync_dbs(closing: Callable[[Database], Database]) -> Callable[..., Database]:
    """``make(url, **options)`` -> a Database from_url, closed (engine disposed) after the test."""

    def make(url: str, **options: Any) -> Database:
        return closing(Database.from_url(url, **{**SHORT, "config": FAST, **options}))

    return make


@pytest.fixture
def async_dbs(closing: Callable[[AsyncDatabase], AsyncDatabase]) -> Callable[..., AsyncDatabase]:
    """The same for :class:`AsyncDatabase` (closed with ``aclose()``)."""

    def make(url: str, **options: Any) -> AsyncDatabase:
        return closing(AsyncDatabase.from_url(url, **{**SHORT, "config": FAST, **options}))

    return make


@pytest.fixture
def events() -> list[OperationEvent]:
    return []


@pytest.fixture
def private_pg(
    make_postgres: Callable[..., PostgresServer], make_proxy: Callable[..., ThreadedFaultProxy]
) -> Iterator[tuple[PostgresServer, ThreadedFaultProxy, str]]:
    """A private PostgreSQL (safe to kill or pause), a proxy in front of it and a database."""
    server = make_postgres()
    dsn = server.create_database()
    yield server, make_proxy(server), dbname_of(dsn)
    server.resume()


@pytest.fixture
def fault_target(
    request: pytest.FixtureRequest, fault: str
) -> tuple[PostgresServer, ThreadedFaultProxy, str]:
    """Server, proxy and database for ``fault``: private when the server itself is hit."""
    if fault in ("killed", "paused"):
        target: tuple[PostgresServer, ThreadedFaultProxy, str] = request.getfixturevalue(
            "private_pg"
        )
        return target
    server: PostgresServer = request.getfixturevalue("postgres_server")
    proxy: ThreadedFaultProxy = request.getfixturevalue("postgres_proxy")
    return server, proxy, dbname_of(request.getfixturevalue("fresh_database"))


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
    assert result.rowcount == 2  # type: ignore[attr-defined]
    rows = db.execute(text("SELECT name, qty FROM items ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("apple", 0), ("pear", 0)]

    # an error inside the unit rolls everything back; the caller's own error does not count
    with pytest.raises(ValueError, match="changed my mind"), db.session() as s:
        s.execute(text("INSERT INTO items VALUES (3, 'plum', 1)"))
        raise ValueError("changed my mind")
    assert db.scalar("SELECT count(*) FROM items") == 2
    assert state_of(db) is State.CLOSED
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
    assert state_of(db) is State.CLOSED
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
    assert state_of(db) is State.CLOSED
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
    assert state_of(db) is State.CLOSED
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


def state_of(db: Database | AsyncDatabase) -> State:
    """The breaker's state (a function call, so type checkers do not narrow it)."""
    return db.breaker.state


def wait_for_half_open(db: Database | AsyncDatabase) -> None:
    eventually(lambda: state_of(db) is not State.OPEN, what="the breaker to leave OPEN")


@pytest.mark.parametrize("fault", FAULTS)
def test_sync_faults_open_then_recover(
    sync_dbs: Callable[..., Database],
    fault_target: tuple[PostgresServer, ThreadedFaultProxy, str],
    fault: str,
) -> None:
    server, proxy, dbname = fault_target
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
    assert state_of(db) is State.OPEN
    assert [e.outcome for e in events[-3:]] == ["failure"] * 3
    assert {e.error_kind for e in events[-3:]} <= {"connection", "timeout"}

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
    assert state_of(db) is State.CLOSED
    db.execute("UPDATE items SET qty = 2")
    assert db.scalar("SELECT qty FROM items") == 2
    assert db.health()["pool_in_use"] == 0


@pytest.mark.parametrize("fault", FAULTS)
async def test_async_faults_open_then_recover(
    async_dbs: Callable[..., AsyncDatabase],
    fault_target: tuple[PostgresServer, ThreadedFaultProxy, str],
    fault: str,
) -> None:
    server, proxy, dbname = fault_target
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
    assert state_of(db) is State.OPEN
    assert [e.outcome for e in events[-3:]] == ["failure"] * 3
    assert {e.error_kind for e in events[-3:]} <= {"connection", "timeout"}

    before = proxy.stats
    for _ in range(5):
        with pytest.raises(BreakerOpen):
            await db.scalar("SELECT 1")
        with pytest.raises(BreakerOpen):
            async with db.session():
                pass  # pragma: no cover - never entered
    after = proxy.stats
    assert (after.connections_total, after.bytes_up) == (before.connections_total, before.bytes_up)

    fault_off(fault, server, proxy)
    await asyncio.to_thread(wait_for_half_open, db)
    assert await db.scalar("SELECT qty FROM items WHERE id = 1") == 1
    assert state_of(db) is State.CLOSED
    async with db.session() as s:
        await s.execute(text("UPDATE items SET qty = 2"))
    assert await db.scalar("SELECT qty FROM items") == 2
    assert db.health()["pool_in_use"] == 0


# --------------------------------------------------------------------------- 4. slow calls

SLOW = BreakerConfig(
    consecutive_failures=None,
    slow_call_rate=0.5,
    # a healthy query under a loaded CI machine can take 0.1 s: the threshold sits well above
    # that and the injected latency well above the threshold
    slow_call_duration=0.25,
    minimum_calls=3,
    window_size=5,
    open_for=0.5,
)


def test_sync_latency_trips_a_slow_call_breaker(
    sync_dbs: Callable[..., Database],
    postgres_server: PostgresServer,
    fresh_database: str,
    postgres_proxy: ThreadedFaultProxy,
) -> None:
    url = pg_url(postgres_server, dbname_of(fresh_database), "psycopg", port=postgres_proxy.port)
    db = sync_dbs(url, config=SLOW, command_timeout=3.0)
    assert db.scalar("SELECT 1") == 1
    postgres_proxy.set_mode(Mode.LATENCY, upstream_delay=0.4)
    answered = 0
    for _ in range(5):  # answers, slowly, until the slow-call rate trips the breaker
        try:
            assert db.scalar("SELECT 2") == 2
        except BreakerOpen:
            break
        answered += 1
    assert answered >= 2
    assert state_of(db) is State.OPEN
    assert db.breaker.snapshot().total_slow >= 2
    before = postgres_proxy.stats
    with pytest.raises(BreakerOpen):
        db.scalar("SELECT 3")
    assert postgres_proxy.stats.bytes_up == before.bytes_up
    postgres_proxy.set_mode(Mode.PASS)
    wait_for_half_open(db)
    assert db.scalar("SELECT 4") == 4 and state_of(db) is State.CLOSED


async def test_async_latency_trips_a_slow_call_breaker(
    async_dbs: Callable[..., AsyncDatabase],
    postgres_server: PostgresServer,
    fresh_database: str,
    postgres_proxy: ThreadedFaultProxy,
) -> None:
    url = pg_url(postgres_server, dbname_of(fresh_database), "asyncpg", port=postgres_proxy.port)
    db = async_dbs(url, config=SLOW, command_timeout=3.0)
    assert await db.scalar("SELECT 1") == 1
    postgres_proxy.set_mode(Mode.LATENCY, upstream_delay=0.4)
    answered = 0
    for _ in range(5):  # answers, slowly, until the slow-call rate trips the breaker
        try:
            assert await db.scalar("SELECT 2") == 2
        except BreakerOpen:
            break
        answered += 1
    assert answered >= 2
    assert state_of(db) is State.OPEN
    before = postgres_proxy.stats
    with pytest.raises(BreakerOpen):
        await db.scalar("SELECT 3")
    assert postgres_proxy.stats.bytes_up == before.bytes_up
    postgres_proxy.set_mode(Mode.PASS)
    await asyncio.to_thread(wait_for_half_open, db)
    assert await db.scalar("SELECT 4") == 4 and state_of(db) is State.CLOSED
    assert db.health()["pool_in_use"] == 0


# --------------------------------------------------------------------------- timeouts


def test_sync_statement_timeout_counts(
    sync_dbs: Callable[..., Database], postgres_server: PostgresServer, fresh_database: str
) -> None:
    db = sync_dbs(
        pg_url(postgres_server, dbname_of(fresh_database), "psycopg"),
        statement_timeout=0.2,
        command_timeout=5.0,
    )
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    with pytest.raises(sa_exc.OperationalError, match="statement timeout"):
        db.execute("SELECT pg_sleep(3)")
    assert (events[-1].outcome, events[-1].error_kind) == ("failure", "timeout")
    assert db.scalar("SELECT 1") == 1  # the server cancelled it: the connection is fine
    assert db.health()["pool_in_use"] == 0


async def test_async_statement_and_command_timeouts_count(
    async_dbs: Callable[..., AsyncDatabase], postgres_server: PostgresServer, fresh_database: str
) -> None:
    url = pg_url(postgres_server, dbname_of(fresh_database), "asyncpg")
    db = async_dbs(url, statement_timeout=0.2, command_timeout=5.0)
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    with pytest.raises(sa_exc.DBAPIError, match="statement timeout"):
        await db.execute("SELECT pg_sleep(3)")
    assert (events[-1].outcome, events[-1].error_kind) == ("failure", "timeout")
    # the client-side limit, for a server that does not answer at all
    client = async_dbs(url, statement_timeout=None, command_timeout=0.2)
    with pytest.raises(TimeoutError):
        await client.execute("SELECT pg_sleep(3)")
    assert client.stats.view()["operations"]["session"] == {"failure": 1}
    assert await client.scalar("SELECT 1") == 1
    assert db.health()["pool_in_use"] == 0 and client.health()["pool_in_use"] == 0


def test_sync_command_timeout_drops_the_connection(
    sync_dbs: Callable[..., Database], postgres_server: PostgresServer, fresh_database: str
) -> None:
    db = sync_dbs(
        pg_url(postgres_server, dbname_of(fresh_database), "psycopg"),
        statement_timeout=None,
        command_timeout=0.2,
    )
    with pytest.raises(sa_exc.OperationalError, match="command_timeout") as info:
        db.execute("SELECT pg_sleep(3)")
    assert info.value.connection_invalidated
    assert db.scalar("SELECT 1") == 1
    assert db.health()["pool_in_use"] == 0


async def test_pool_timeout_counts(
    async_dbs: Callable[..., AsyncDatabase], postgres_server: PostgresServer, fresh_database: str
) -> None:
    db = async_dbs(
        pg_url(postgres_server, dbname_of(fresh_database), "asyncpg"),
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    async with db.session() as held:
        await held.execute(text("SELECT 1"))
        assert db.extra_figures()["pool_in_use"] == 1
        with pytest.raises(sa_exc.TimeoutError):
            await db.scalar("SELECT 2")
    assert (events[0].outcome, events[0].error_kind) == ("failure", "pool_timeout")
    assert db.health()["pool_in_use"] == 0


# --------------------------------------------------------------------------- probes


def test_sync_probe_bypasses_the_breaker(
    sync_dbs: Callable[..., Database],
    postgres_server: PostgresServer,
    fresh_database: str,
    postgres_proxy: ThreadedFaultProxy,
) -> None:
    proxy = postgres_proxy
    url = pg_url(postgres_server, dbname_of(fresh_database), "psycopg", port=proxy.port)
    db = sync_dbs(url, probe_timeout=0.3)
    db.breaker.force_open()
    assert db.probe().ok
    proxy.set_mode(Mode.RESET)
    result = db.probe()
    assert not result.ok and result.error
    assert db.health()["last_probe"]["ok"] is False
    proxy.set_mode(Mode.PASS)
    assert db.probe().ok and db.health()["pool_in_use"] == 0


async def test_async_probe_times_out_on_a_paused_server(
    async_dbs: Callable[..., AsyncDatabase],
    private_pg: tuple[PostgresServer, ThreadedFaultProxy, str],
) -> None:
    server, _proxy, dbname = private_pg
    db = async_dbs(pg_url(server, dbname, "asyncpg"), probe_timeout=0.3, command_timeout=5.0)
    assert (await db.aprobe()).ok
    server.pause()
    result = await db.aprobe()
    assert not result.ok and result.error is not None and "timed out" in result.error
    assert state_of(db) is State.CLOSED  # probes are not calls
    server.resume()
    assert (await db.aprobe()).ok
    assert db.health()["pool_in_use"] == 0


async def test_sqlite_probes(tmp_path: Path) -> None:
    with Database.from_url(sqlite_url(tmp_path, is_async=False)) as db:
        assert db.probe().ok
    async with AsyncDatabase.from_url(sqlite_url(tmp_path, is_async=True)) as adb:
        assert (await adb.aprobe()).ok
        assert adb.extra_figures()["driver"] == "aiosqlite"


# --------------------------------------------------------------------------- 7. secrets


@pytest.fixture
def leaky_role(postgres_server: PostgresServer) -> Iterator[str]:
    """A role with a known password (trust auth accepts it, which is all the test needs)."""
    role = f"leaky_{uuid.uuid4().hex[:8]}"
    postgres_server.psql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    yield role
    postgres_server.ensure_running()
    with contextlib.suppress(Exception):
        postgres_server.psql(f"DROP ROLE IF EXISTS {role}")


def leaked(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = []
    for record in caplog.records:
        text_ = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text_ += repr(record.exc_info[1]) + str(record.exc_info[1])
        texts.append(text_)
    return [t for t in texts if PASSWORD in t]


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
async def test_the_password_never_leaks(
    postgres_server: PostgresServer,
    fresh_database: str,
    leaky_role: str,
    caplog: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    with ThreadedFaultProxy(postgres_server.host, postgres_server.port, max_lifetime=600) as proxy:
        url = f"postgresql+{driver}://{leaky_role}:{PASSWORD}@{proxy.host}:{proxy.port}/"
        url += dbname_of(fresh_database)
        # a break longer than the test: the probe and the close below take a while on a
        # loaded machine, and with FAST's 0.5 s the breaker read half-open at the assert
        config = BreakerConfig(consecutive_failures=3, open_for=60.0, half_open_calls=1)
        options: dict[str, Any] = {**SHORT, "config": config, "probe_timeout": 0.5}
        errors: list[str] = []
        if driver == "psycopg":
            db: Database | AsyncDatabase = Database.from_url(url, **options)
            assert isinstance(db, Database)
            assert db.scalar("SELECT current_user") == leaky_role
            proxy.set_mode(Mode.RESET)
            for _ in range(4):
                try:
                    db.scalar("SELECT 1")
                except Exception as exc:
                    errors += [str(exc), repr(exc)]
            probe = db.probe()
            db.close()
        else:
            adb = AsyncDatabase.from_url(url, **options)
            db = adb
            assert await adb.scalar("SELECT current_user") == leaky_role
            proxy.set_mode(Mode.RESET)
            for _ in range(4):
                try:
                    await adb.scalar("SELECT 1")
                except Exception as exc:
                    errors += [str(exc), repr(exc)]
            probe = await adb.aprobe()
            await adb.aclose()
    assert state_of(db) is State.OPEN and not probe.ok
    health = db.health()
    assert health["last_error"] and health["breaker"]["last_error"]
    assert PASSWORD not in repr(health) and PASSWORD not in repr(db)
    assert PASSWORD not in " ".join(errors)
    assert not leaked(caplog)


@pytest.mark.parametrize("is_async", [False, True])
async def test_connection_failure_messages_hide_the_password(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture, is_async: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    with ThreadedFaultProxy(postgres_server.host, postgres_server.port, max_lifetime=600) as proxy:
        proxy.set_mode(Mode.REFUSE)
        url = f"postgresql://someone:{PASSWORD}@{proxy.host}:{proxy.port}/nowhere"
        options: dict[str, Any] = {**SHORT, "config": FAST}
        if is_async:
            adb = AsyncDatabase.from_url(url, **options)
            with pytest.raises(Exception) as info:
                await adb.scalar("SELECT 1")
            probe = await adb.aprobe()
            health = adb.health()
            await adb.aclose()
        else:
            db = Database.from_url(url, **options)
            with pytest.raises(Exception) as info:
                db.scalar("SELECT 1")
            probe = db.probe()
            health = db.health()
            db.close()
    assert SQL_ERRORS.classify(info.value).kind == "connection"
    assert PASSWORD not in str(info.value) + repr(info.value)
    assert not probe.ok and PASSWORD not in str(probe.error)
    assert PASSWORD not in repr(health) and "***" in health["url"]
    assert not leaked(caplog)


def test_a_missing_database_counts_as_a_configuration_problem(
    sync_dbs: Callable[..., Database], postgres_server: PostgresServer
) -> None:
    db = sync_dbs(pg_url(postgres_server, "no_such_database_x", "psycopg"))
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    with pytest.raises(sa_exc.OperationalError):
        db.scalar("SELECT 1")
    assert (events[-1].outcome, events[-1].error_kind) == ("failure", "auth")
    assert "no_such_database_x" in (db.health()["credentials_problem"] or "")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_database_created_later_clears_the_configuration_problem(
    sync_dbs: Callable[..., Database],
    async_dbs: Callable[..., AsyncDatabase],
    postgres_server: PostgresServer,
    is_async: bool,
) -> None:
    # the service started before its database was created: once the database exists, the
    # first transaction that works (or a probe that does) ends the "credentials" verdict;
    # else the health score kept the database "down" for good
    name = f"late_{uuid.uuid4().hex[:12]}"
    try:
        if is_async:
            adb = async_dbs(pg_url(postgres_server, name, "asyncpg"))
            with pytest.raises(sa_exc.DBAPIError):
                await adb.scalar("SELECT 1")
            assert name in (adb.health()["credentials_problem"] or "")
            postgres_server.create_database(name)
            assert (await adb.aprobe()).ok
            assert adb.health()["credentials_problem"] is None
            postgres_server.drop_database(name)
            with pytest.raises(sa_exc.DBAPIError):
                await adb.scalar("SELECT 1")
            assert name in (adb.health()["credentials_problem"] or "")
            postgres_server.create_database(name)
            adb.breaker.reset()
            assert await adb.scalar("SELECT 1") == 1  # a transaction clears it too
            assert adb.health()["credentials_problem"] is None
        else:
            db = sync_dbs(pg_url(postgres_server, name, "psycopg"))
            with pytest.raises(sa_exc.OperationalError):
                db.scalar("SELECT 1")
            assert name in (db.health()["credentials_problem"] or "")
            postgres_server.create_database(name)
            assert db.scalar("SELECT 1") == 1
            assert db.health()["credentials_problem"] is None
            postgres_server.drop_database(name)
            with pytest.raises(sa_exc.OperationalError):
                db.scalar("SELECT 1")
            assert name in (db.health()["credentials_problem"] or "")
            postgres_server.create_database(name)
            assert db.probe().ok
            assert db.health()["credentials_problem"] is None
    finally:
        postgres_server.drop_database(name)


# --------------------------------------------------------------------------- API details


def test_defaults_preset_registry_and_types(tmp_path: Path) -> None:
    registry = Registry()
    with Database.from_url(sqlite_url(tmp_path, is_async=False), registry=registry) as db:
        assert db.name == "database" and db.kind == "sql"
        assert registry.get("database") is db.breaker
        config = db.breaker.config
        assert (config.consecutive_failures, config.open_for, config.half_open_calls) == (
            3,
            30.0,
            1,
        )
        pool = db.engine.pool
        assert (pool.size(), pool.timeout()) == (10, 2.0)  # type: ignore[attr-defined]
        assert not db.engine.pool._pre_ping  # a file handle: nothing to ping
        with pytest.raises(TypeError, match="AsyncDatabase"):
            Database(db.engine.pool)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Database"):
            AsyncDatabase(db.engine)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool_timeout"):
        Database.from_url("sqlite://", pool_timeout=0)


def test_statement_timeout_reaches_the_server(
    sync_dbs: Callable[..., Database], postgres_server: PostgresServer, fresh_database: str
) -> None:
    # a driver-less URL gets psycopg (sync) / asyncpg (async)
    db = sync_dbs(postgres_server.dsn_for(dbname_of(fresh_database)), statement_timeout=1.5)
    assert db.engine.dialect.driver == "psycopg"
    assert db.scalar("SHOW statement_timeout") == "1500ms"


async def test_async_settings_reach_the_drivers(
    async_dbs: Callable[..., AsyncDatabase],
    postgres_server: PostgresServer,
    fresh_database: str,
    tmp_path: Path,
) -> None:
    db = async_dbs(postgres_server.dsn_for(dbname_of(fresh_database)), statement_timeout=1.5)
    assert db.engine.dialect.driver == "asyncpg"
    assert await db.scalar("SHOW statement_timeout") == "1500ms"
    lite = async_dbs(f"sqlite:///{tmp_path / 'settings.db'}", sqlite_timeout=0.25)
    assert lite.engine.dialect.driver == "aiosqlite"
    assert await lite.scalar("PRAGMA busy_timeout") == 250


@pytest.mark.parametrize("is_async", [False, True])
async def test_sqlite_lock_held_too_long_trips_then_recovers(
    tmp_path: Path,
    sync_dbs: Callable[..., Database],
    async_dbs: Callable[..., AsyncDatabase],
    is_async: bool,
) -> None:
    """SQLite's outage: another process holds the write lock past ``sqlite_timeout``."""
    path = tmp_path / "brownout.db"
    options: dict[str, Any] = {"sqlite_timeout": 0.1}
    db = (
        async_dbs(sqlite_url(tmp_path, is_async=True), **options)
        if is_async
        else sync_dbs(sqlite_url(tmp_path, is_async=False), **options)
    )

    async def run(sql: str) -> Any:
        if isinstance(db, AsyncDatabase):
            result = await db.execute(sql)
        else:
            result = db.execute(sql)
        return result.scalar() if result.returns_rows else None  # type: ignore[attr-defined]

    await run("CREATE TABLE t (v INTEGER)")
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for _ in range(3):
            with pytest.raises(sa_exc.OperationalError, match="locked"):
                await run("INSERT INTO t VALUES (1)")
        assert state_of(db) is State.OPEN
        assert {e.error_kind for e in events} == {"locked"}
        with pytest.raises(BreakerOpen):
            await run("SELECT 1")
    finally:
        holder.rollback()
        holder.close()
    await asyncio.to_thread(wait_for_half_open, db)
    await run("INSERT INTO t VALUES (2)")
    assert await run("SELECT sum(v) FROM t") == 2
    assert state_of(db) is State.CLOSED and db.health()["pool_in_use"] == 0


def test_existing_engine_is_not_disposed_by_close(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_url(tmp_path, is_async=False))
    try:
        db = Database(engine, name="users-db")
        assert db.scalar("SELECT 41 + 1") == 42
        db.close()
        assert db.scalar("SELECT 1") == 1  # still usable: the engine is the caller's
    finally:
        engine.dispose()


def test_error_table_explains_every_rule() -> None:
    rows = SQL_ERRORS.rows()
    assert all(name and why for name, _, _, why in rows)
    assert SQL_ERRORS.counts(sa_exc.TimeoutError("pool"))
    assert not SQL_ERRORS.counts(ValueError("the caller's own bug"))
    assert not SQL_ERRORS.counts(KeyError("k"))
    assert SQL_ERRORS.counts(ConnectionRefusedError())
    assert SQL_ERRORS.classify(TimeoutError()).kind == "timeout"


async def test_cancelled_unit_counts_nothing_and_leaks_nothing(
    async_dbs: Callable[..., AsyncDatabase], postgres_server: PostgresServer, fresh_database: str
) -> None:
    db = async_dbs(pg_url(postgres_server, dbname_of(fresh_database), "asyncpg"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), db.session() as s:
            await s.execute(text("SELECT pg_sleep(2)"))
    assert db.breaker.snapshot().total_failures == 0
    assert await db.scalar("SELECT 1") == 1
    assert db.health()["pool_in_use"] == 0


def test_threads_share_one_database(sync_dbs: Callable[..., Database], tmp_path: Path) -> None:
    db = sync_dbs(sqlite_url(tmp_path, is_async=False))
    db.execute("CREATE TABLE n (v INTEGER)")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(10):
                db.execute("INSERT INTO n VALUES (:v)", {"v": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and db.scalar("SELECT count(*) FROM n") == 40
    assert state_of(db) is State.CLOSED


def test_docstring_examples() -> None:
    import brownout.sql

    result = doctest.testmod(brownout.sql, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 5


def test_missing_sqlalchemy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "brownout.sql")
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ImportError, match=r"pip install 'brownout\[sql\]'"):
        importlib.import_module("brownout.sql")


def test_core_does_not_import_sqlalchemy() -> None:
    code = "import sys, brownout, brownout.adapter; print('sqlalchemy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


async def test_sqlite_writes_take_the_writer_in_turn(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """Concurrent read-then-write units on a SQLite file all commit, none failing on
    SQLite's lock: they wait for the one writer connection in-process (FIFO), not in
    SQLite's busy handler (here 50 ms: far shorter than the queue), and the counter
    they read and bump loses no update."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), sqlite_timeout=0.05, writer_wait=60)
    assert db.writer is not None
    assert await db.scalar("PRAGMA journal_mode") == "wal"
    await db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    await db.execute("INSERT INTO counter VALUES (1, 0)")
    await db.execute(CREATE)
    order: list[int] = []

    async def bump(i: int) -> None:
        async with db.write_session() as s:
            order.append(i)
            n = (await s.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one()
            await asyncio.sleep(0)  # other units run meanwhile (and queue for the writer)
            await s.execute(
                text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": f"i{i}", "q": n}
            )
            await s.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})

    await asyncio.gather(*(bump(i) for i in range(40)))
    assert await db.scalar("SELECT n FROM counter WHERE id = 1") == 40
    assert await db.scalar("SELECT COUNT(DISTINCT qty) FROM items") == 40  # no lost update
    assert order == list(range(40))  # in arrival order
    assert db.breaker.state is State.CLOSED


async def test_sqlite_writer_wait_is_bounded_and_reads_do_not_wait(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A unit holding the writer: reads go on (WAL, the pool), another write gives up
    after ``writer_wait`` with a counted ``sqlalchemy.exc.TimeoutError``."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), writer_wait=0.05)
    await db.execute("CREATE TABLE t (v INTEGER)")
    events: list[OperationEvent] = []
    db.add_listener(events.append)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with db.write_session() as s:
            await s.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await holding.wait()
        assert await db.scalar("SELECT COUNT(*) FROM t") == 0  # not committed yet
        with pytest.raises(sa_exc.TimeoutError, match="writer stayed busy"):
            async with db.write_session() as s:
                await s.execute(text("INSERT INTO t VALUES (2)"))
        assert events[-1].outcome == "failure" and events[-1].error_kind == "pool_timeout"
    finally:
        release.set()
        await holder
    assert await db.scalar("SELECT SUM(v) FROM t") == 1


async def test_write_session_is_the_pool_without_a_sqlite_file(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """In-memory SQLite (one connection already) and ``sqlite_writer=False`` have no
    writer: ``write_session`` is ``session``."""
    for db in (
        async_dbs("sqlite+aiosqlite://"),
        async_dbs(sqlite_url(tmp_path, is_async=True), sqlite_writer=False),
    ):
        assert db.writer is None
        async with db.write_session() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1


async def test_sqlite_writer_commits_units_queued_together_once(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """Units queued together share one transaction and one commit (one fsync); one that
    raises a caller error is rolled back to its savepoint alone, the others commit, and
    each unit's block is left only once its work is committed."""
    from sqlalchemy import event

    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    await db.execute("INSERT INTO items (name, qty) VALUES ('taken', 0)")
    assert db.writer is not None
    commits: list[int] = []
    event.listen(db.writer.sync_engine, "commit", lambda conn: commits.append(1))
    committed_when_left: list[int] = []

    async def insert(i: int) -> None:
        name = "taken" if i % 3 == 0 else f"n{i}"  # every third violates UNIQUE(name)
        async with db.write_session() as s:
            await s.execute(
                text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": name, "q": i}
            )
        # left: committed, so a reader on another connection sees it
        committed_when_left.append(
            await db.scalar("SELECT COUNT(*) FROM items WHERE qty = :q", {"q": i})
        )

    # unit 0, the first of the transaction (no savepoint), fails too
    results = await asyncio.gather(*(insert(i) for i in range(30)), return_exceptions=True)
    failed = [i for i, r in zip(range(30), results, strict=True) if r is not None]
    assert failed == [i for i in range(30) if i % 3 == 0]
    assert all(isinstance(r, sa_exc.IntegrityError) for r in results if r is not None)
    assert committed_when_left == [1] * 20
    assert await db.scalar("SELECT COUNT(*) FROM items") == 21
    assert 1 <= len(commits) <= 3, commits  # 30 units, not 30 commits
    assert db.breaker.state is State.CLOSED


# --------------------------------------------------------------------------- lifetime and options


def _record_dispose(pool: Any, disposed: list[str], label: str) -> None:
    """Make ``pool.dispose()`` note ``label`` in ``disposed`` (and still dispose)."""
    real = pool.dispose

    def dispose() -> None:
        disposed.append(label)
        real()

    pool.dispose = dispose


async def test_async_database_closes_with_aclose_and_close_is_deprecated(tmp_path: Path) -> None:
    disposed: list[str] = []
    for closing in ("aclose", "close", "async with"):
        db = AsyncDatabase.from_url(sqlite_url(tmp_path, is_async=True))
        assert db.writer is not None  # a SQLite file: the writer is disposed of too
        _record_dispose(db.engine.sync_engine.pool, disposed, "pool")
        _record_dispose(db.writer.sync_engine.pool, disposed, "writer")
        if closing == "aclose":
            await db.aclose()
        elif closing == "close":
            with pytest.warns(DeprecationWarning, match=r"aclose\(\)"):
                await db.close()
        else:
            async with db:
                assert await db.scalar("SELECT 1") == 1
        assert disposed == ["pool", "writer"], closing
        disposed.clear()


def test_database_closes_with_close_and_with(tmp_path: Path) -> None:
    for closing in ("close", "with"):
        db = Database.from_url(sqlite_url(tmp_path, is_async=False))
        disposed: list[str] = []
        _record_dispose(db.engine.pool, disposed, "pool")
        if closing == "close":
            db.close()
        else:
            with db:
                assert db.scalar("SELECT 1") == 1
        assert disposed == ["pool"], closing


async def test_adapter_options_reach_both_shells(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "name": "reports",
        "secrets": ["tok-123"],
        "recent_operations": 3,
        "probe_timeout": 0.25,
        "session_options": {"expire_on_commit": True},
    }
    with Database.from_url(sqlite_url(tmp_path, is_async=False), **options) as db:
        async with AsyncDatabase.from_url(sqlite_url(tmp_path, is_async=True), **options) as adb:
            for adapter in (db, adb):
                assert (adapter.name, adapter.probe_timeout) == ("reports", 0.25)
                assert adapter.stats.recent_size == 3
                assert "tok-123" in adapter._secrets
                assert adapter.breaker.config.consecutive_failures == 3  # the database preset
            assert db.sessions.kw["expire_on_commit"] is True
            assert adb.sessions.kw["expire_on_commit"] is True
