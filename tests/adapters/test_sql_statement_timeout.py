"""``statement_timeout_from``: PostgreSQL's statement_timeout set per transaction from a
value that changes (inventario: the degradation level), against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from brownout import BreakerConfig, Registry
from brownout.sql import AsyncDatabase, Database
from tests.servers.plugin import PostgresServer

# a breaker that stays closed through the cancelled statements below
LENIENT = BreakerConfig(consecutive_failures=100, open_for=1.0, half_open_calls=1)


def _url(server: PostgresServer, dsn: str, driver: str) -> str:
    return server.dsn_for(dsn.rsplit("/", 1)[1]).replace("postgresql://", f"postgresql+{driver}://")


async def test_the_timeout_is_read_when_each_transaction_begins(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    timeout: list[float | None] = [0.2]
    db = AsyncDatabase.from_url(
        _url(postgres_server, fresh_database, "asyncpg"),
        registry=Registry(),
        config=LENIENT,
        pool_size=1,
        max_overflow=0,
    )
    db.statement_timeout_from(lambda: timeout[0])
    try:
        # the server reports the value in force in the transaction
        assert await db.scalar("SHOW statement_timeout") == "200ms"
        with pytest.raises(Exception, match="statement timeout"):
            await db.scalar("SELECT pg_sleep(0.5)")
        timeout[0] = 2.0  # the same pooled connection: LOCAL did not outlive its transaction
        assert await db.scalar("SELECT pg_sleep(0.5)::text") == ""
        assert await db.scalar("SHOW statement_timeout") == "2s"
        async with db.engine.connect() as conn:  # run_read's path: a bare connection
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "2s"
        timeout[0] = None  # the connection's own (from_url's statement_timeout: 5 s)
        assert await db.scalar("SHOW statement_timeout") == "5s"
        timeout[0] = 3.0
        db.statement_timeout_from(lambda: 1.5)  # replaced, not installed twice
        assert await db.scalar("SHOW statement_timeout") == "1500ms"
    finally:
        await db.aclose()


async def test_a_value_the_server_refuses_is_a_wrapped_error_and_the_pool_goes_on(
    postgres_server: PostgresServer, fresh_database: str
) -> None:
    timeout: list[float] = [1e10]  # more milliseconds than statement_timeout takes
    db = AsyncDatabase.from_url(
        _url(postgres_server, fresh_database, "asyncpg"),
        registry=Registry(),
        pool_size=1,
        max_overflow=0,
    )
    db.statement_timeout_from(lambda: timeout[0])
    try:
        with pytest.raises(sa_exc.DBAPIError, match="statement_timeout") as info:
            await db.scalar("SELECT 1")
        assert not db.errors.counts(info.value)  # the caller's value, not the server failing
        timeout[0] = 1.0
        assert await db.scalar("SHOW statement_timeout") == "1s"
        timeout[0] = float("nan")
        with pytest.raises(ValueError, match="gave nan, not a number of seconds > 0"):
            await db.scalar("SELECT 1")
    finally:
        await db.aclose()


def test_sync_psycopg_too(postgres_server: PostgresServer, fresh_database: str) -> None:
    db = Database.from_url(_url(postgres_server, fresh_database, "psycopg"), registry=Registry())
    db.statement_timeout_from(lambda: 0.25)
    try:
        assert db.scalar("SHOW statement_timeout") == "250ms"
    finally:
        db.close()


def test_refused_on_sqlite(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'x.db'}", registry=Registry())
    try:
        with pytest.raises(ValueError, match="PostgreSQL only, this is sqlite"):
            db.statement_timeout_from(lambda: 1.0)
    finally:
        db.close()
