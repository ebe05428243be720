"""Two replicas (two apps, each its own VAR_DIR) on one PostgreSQL and one Redis: a key
that one replica could not invalidate while Redis was away is never read stale from the
other (docs/operations.md, "Running several": cache coherence across replicas).

Each replica reaches Redis through its own fault proxy, so Redis can go away for both
(an outage) or for one only (a partition). Redis keeps its data: the old cached value is
still there when it comes back, as after a network fault or a restart from disk.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from brownout import State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing import aeventually
from inventario.app import create_app
from inventario.config import load_settings
from inventario.runtime import Runtime
from tests.inventario.conftest import WIDGET, running
from tests.servers.plugin import PostgresServer, RedisServer

pytest.importorskip("redis")
pytest.importorskip("asyncpg")


class Replica:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, proxy: ThreadedFaultProxy):
        self.app, self.client, self.proxy = app, client, proxy

    @property
    def runtime(self) -> Runtime:
        rt: Runtime = self.app.state.runtime
        return rt

    async def read(self, sku: str) -> tuple[str, int]:
        """(X-Cache, stock) of one product read."""
        r = await self.client.get(f"/products/{sku}")
        assert r.status_code == 200, r.text
        return r.headers.get("X-Cache", "miss"), int(r.json()["stock"])

    async def cached(self, sku: str, stock: int) -> None:
        """Wait until this replica answers from the cache, with ``stock``."""

        async def hit() -> None:
            assert await self.read(sku) == ("hit", stock)

        await aeventually(hit, timeout=20.0, what=f"a cached read of {sku}")


@pytest.fixture
async def pair(
    tmp_path: Path,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    fresh_database: str,
) -> AsyncIterator[Callable[..., Any]]:
    """``await pair(heartbeat_b=...)`` -> (replica A, replica B, sql(query))."""
    database = fresh_database.rsplit("/", 1)[1]
    async with AsyncExitStack() as stack:

        async def make(*, heartbeat_b: float) -> tuple[Replica, Replica, Any]:
            replicas = []
            # A's heartbeat never comes: it reconciles its own journal only on a breaker
            # transition, so what B reads is B's own doing
            for name, heartbeat in (("a", 3600.0), ("b", heartbeat_b)):
                proxy = stack.enter_context(
                    ThreadedFaultProxy(redis_server.host, redis_server.port, max_lifetime=600.0)
                )
                app = create_app(
                    load_settings(
                        var_dir=tmp_path / name,
                        database_url=postgres_server.dsn_for(database),
                        redis_url=redis_server.url_for(port=proxy.port),
                        heartbeat=heartbeat,
                    )
                )
                client = await stack.enter_async_context(running(app))
                replicas.append(Replica(app, client, proxy))

            def sql(query: str) -> str:
                return postgres_server.psql(query, dbname=database).strip()

            return replicas[0], replicas[1], sql

        yield make


async def test_an_outage_seen_by_both_replicas_then_no_stale_read_from_the_other(
    pair: Callable[..., Any],
) -> None:
    a, b, sql = await pair(heartbeat_b=3600.0)
    sku = f"FLEET-{uuid.uuid4().hex[:8].upper()}"
    r = await a.client.post("/products", json={**WIDGET, "sku": sku, "stock": 10})
    assert r.status_code == 201, r.text
    await a.cached(sku, 10)
    await b.cached(sku, 10)  # Redis holds stock 10

    a.proxy.set_mode(Mode.REFUSE)
    b.proxy.set_mode(Mode.REFUSE)
    # B's reads fail over to PostgreSQL until its Redis breaker opens: B saw the outage
    while b.runtime.cache is not None and b.runtime.cache.breaker.state is not State.OPEN:
        assert await b.read(sku) == ("miss", 10)
    r = await a.client.post(f"/products/{sku}/movements", json={"kind": "in", "quantity": 5})
    assert r.status_code == 201, r.text
    # A could not send the DEL: recorded in its journal (and in the shared table)
    assert a.runtime.coherence is not None and a.runtime.coherence.pending() == 1

    a.proxy.set_mode(Mode.PASS)
    b.proxy.set_mode(Mode.PASS)
    # Redis is back with stock 10 cached; A has not reconciled (no heartbeat, breaker
    # closed): B deletes the shared keys before its first cached read (its breaker
    # half-opens after the preset's 20 s; its trial calls are the flush's)
    reads = []

    async def fresh_hit() -> None:
        reads.append(await b.read(sku))
        assert reads[-1] == ("hit", 15)

    await aeventually(fresh_hit, timeout=40.0, what="B's cached reads to resume")
    assert all(stock == 15 for _, stock in reads), reads
    shared = b.runtime.shared_invalidations
    assert shared is not None and shared.synced and shared.flushed_keys >= 1
    assert a.runtime.shared_invalidations is not None
    # the movement's key (and any DEL Redis answered later than CACHE_INVALIDATE_WAIT on
    # a loaded machine: the create's, recorded the same way)
    assert a.runtime.shared_invalidations.recorded >= 1
    assert sql("SELECT count(*) FROM cache_invalidations") == "0"


async def test_a_replica_that_never_saw_redis_fail_flushes_on_its_heartbeat(
    pair: Callable[..., Any],
) -> None:
    a, b, sql = await pair(heartbeat_b=0.2)
    sku = f"FLEET-{uuid.uuid4().hex[:8].upper()}"
    r = await a.client.post("/products", json={**WIDGET, "sku": sku, "stock": 10})
    assert r.status_code == 201, r.text
    await b.cached(sku, 10)

    a.proxy.set_mode(Mode.REFUSE)  # only A loses Redis (a partition): B never sees it fail
    r = await a.client.post(f"/products/{sku}/movements", json={"kind": "out", "quantity": 4})
    assert r.status_code == 201, r.text
    # B serves the new stock from its cache within a heartbeat or so, while A still
    # cannot reach Redis (without the shared table: stock 10 until the entry's TTL)
    await b.cached(sku, 6)
    assert sql("SELECT count(*) FROM cache_invalidations") == "0"
    assert a.runtime.coherence is not None and a.runtime.coherence.pending() == 1


async def test_the_sqlite_default_has_no_shared_table(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(redis_url="redis://127.0.0.1:1/0")  # one process: its own journal only
    async with running(app):
        rt: Runtime = app.state.runtime
        assert rt.coherence is not None and rt.shared_invalidations is None
        assert rt.product_cache.shared is None
