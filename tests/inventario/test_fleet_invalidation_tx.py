"""The shared invalidation row (``cache_invalidations``) is written in the write's own
transaction (PostgreSQL with Redis): a replica dying between the commit and its ``DEL``
no longer leaves a stale cache entry that no replica knows of (docs/operations.md,
"Cache coherence across replicas")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from brownout.testing import aeventually
from inventario.cache import ProductCache, product_key
from inventario.fleet_cache import cache_invalidations
from inventario.runtime import Runtime
from tests.inventario.conftest import WIDGET, running
from tests.servers.plugin import RedisServer

pytest.importorskip("redis")
pytest.importorskip("asyncpg")


async def shared_rows(rt: Runtime) -> list[str]:
    async with rt.db.session() as s:
        result = await s.execute(
            select(cache_invalidations.c.key).order_by(cache_invalidations.c.id)
        )
        return [key for (key,) in result.all()]


def die_before_del(cache: ProductCache) -> list[str]:
    """The process "dies" between the write's commit and its DEL: ``invalidate`` sends
    nothing, records nothing. The skus it was called for."""
    calls: list[str] = []

    async def nothing(sku: str, marked: int | None = None, **_: Any) -> None:
        calls.append(sku)

    cache.invalidate = nothing  # type: ignore[method-assign]
    return calls


async def cached_stock(client: Any, sku: str) -> int:
    async def hit() -> int:
        r = await client.get(f"/products/{sku}")
        assert r.status_code == 200 and r.headers.get("X-Cache") == "hit", r.text
        return int(r.json()["stock"])

    return await aeventually(hit, what=f"a cached read of {sku}")


@pytest.fixture
def fleet_app(
    make_app: Callable[..., FastAPI], redis_server: RedisServer, fresh_database: str
) -> FastAPI:
    # a DEL answered later than CACHE_INVALIDATE_WAIT counts as not sent (its row stays for
    # a flush): on a loaded machine the default 20 ms is not always enough
    app = make_app(
        database_url=fresh_database, redis_url=redis_server.url, cache_invalidate_wait=10.0
    )
    assert app.state.runtime.shared_invalidations is not None
    return app


async def test_a_crash_between_commit_and_del_leaves_the_key_recorded(fleet_app: FastAPI) -> None:
    rt: Runtime = fleet_app.state.runtime
    assert rt.shared_invalidations is not None and rt.cache is not None
    async with running(fleet_app) as client:
        r = await client.post("/products", json={**WIDGET, "sku": "TX-1", "stock": 10})
        assert r.status_code == 201, r.text
        assert await cached_stock(client, "TX-1") == 10
        await aeventually(lambda: _empty(rt), what="the create's row settled")

        calls = die_before_del(fleet_app.state.product_cache)
        r = await client.post("/products/TX-1/movements", json={"kind": "in", "quantity": 1})
        assert r.status_code == 201, r.text
        assert calls == ["TX-1"]
        # committed with the write, before any DEL was tried
        assert await shared_rows(rt) == [product_key("TX-1")]
        assert await rt.cache.get_json(product_key("TX-1")) is not None  # stale in Redis

        # a write refused by the data rolls back its row with it
        r = await client.post("/products/TX-1/movements", json={"kind": "out", "quantity": 99})
        assert r.status_code == 409, r.text
        assert await shared_rows(rt) == [product_key("TX-1")]

        # what any replica's heartbeat does: the key deleted in Redis, the row removed
        assert await rt.shared_invalidations.flush() == 1
        assert await rt.cache.get_json(product_key("TX-1")) is None
        assert await shared_rows(rt) == []
        r = await client.get("/products/TX-1")
        assert r.json()["stock"] == 11, r.text


async def _empty(rt: Runtime) -> None:
    assert await shared_rows(rt) == []


async def test_the_row_of_a_write_whose_del_was_sent_is_deleted(fleet_app: FastAPI) -> None:
    rt: Runtime = fleet_app.state.runtime
    assert rt.shared_invalidations is not None
    async with running(fleet_app) as client:
        r = await client.post("/products", json={**WIDGET, "sku": "TX-2", "stock": 10})
        assert r.status_code == 201, r.text
        for _ in range(3):
            r = await client.post("/products/TX-2/movements", json={"kind": "in", "quantity": 1})
            assert r.status_code == 201, r.text
        await aeventually(lambda: _empty(rt), what="every settled row deleted")
        assert rt.shared_invalidations.stats()["settled_rows_deleted"] == 4
        assert rt.shared_invalidations.synced


async def test_a_replayed_write_records_its_key_in_the_replay_transaction(
    fleet_app: FastAPI,
) -> None:
    rt: Runtime = fleet_app.state.runtime
    async with running(fleet_app) as client:
        r = await client.post("/products", json={**WIDGET, "sku": "TX-3", "stock": 10})
        assert r.status_code == 201, r.text
        await aeventually(lambda: _empty(rt), what="the create's row settled")
        rt.db.breaker.force_open()
        r = await client.post("/products/TX-3/movements", json={"kind": "in", "quantity": 2})
        assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        die_before_del(fleet_app.state.product_cache)  # dies once the replay committed
        report = await rt.replayer.drain()
        assert report.applied == 1, report
        assert await shared_rows(rt) == [product_key("TX-3")]


async def test_a_del_not_sent_for_a_queued_write_stops_no_cached_reads(
    fleet_app: FastAPI,
) -> None:
    """A write only queued (202) changed nothing in the database yet: its DEL not sent
    is not shared (the replay's transaction records the key) and the replica stays
    synced; a direct write's DEL not sent keeps its row and unsyncs it."""
    rt: Runtime = fleet_app.state.runtime
    shared, coherence = rt.shared_invalidations, rt.coherence
    assert shared is not None and coherence is not None
    async with running(fleet_app) as client:
        r = await client.post("/products", json={**WIDGET, "sku": "TX-4", "stock": 10})
        assert r.status_code == 201, r.text
        assert await cached_stock(client, "TX-4") == 10  # synced
        await aeventually(lambda: _empty(rt), what="the create's row settled")

        async def not_sent(*keys: str) -> bool:
            return False  # Redis did not take the DEL in time

        coherence.ainvalidate = not_sent  # type: ignore[method-assign]
        r = await client.post("/products/TX-4/movements", json={"kind": "in", "quantity": 1})
        assert r.status_code == 201, r.text
        assert not shared.synced and shared.recorded == 1
        assert await shared_rows(rt) == [product_key("TX-4")]
        await shared.flush()  # what the next read or heartbeat starts
        assert shared.synced and await shared_rows(rt) == []

        rt.db.breaker.force_open()
        r = await client.post("/products/TX-4/movements", json={"kind": "in", "quantity": 1})
        assert r.status_code == 202, r.text
        assert shared.synced and shared.recorded == 1  # nothing more recorded
        rt.db.breaker.reset()
        assert await shared_rows(rt) == []
