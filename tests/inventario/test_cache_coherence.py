"""inventario with a private Redis behind a fault proxy: no stale product after Redis returns.

A product is cached; Redis goes away; the product is updated (the database
write succeeds, reads go straight to the database); Redis comes back with the
OLD cached value still in it. The first GET after recovery must return the
NEW value, and the cache must be in use again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from brownout import State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing import FakeClock
from inventario.cache import product_key
from inventario.config import load_settings
from inventario.runtime import Runtime
from tests.inventario.conftest import WIDGET, running
from tests.servers.plugin import RedisServer

redis_py = pytest.importorskip("redis")


@pytest.fixture
def make_app(make_app: Callable[..., FastAPI]) -> Callable[..., FastAPI]:
    """The conftest's, with reads waiting for Redis as long as it takes unless a test says
    otherwise: a read later than CACHE_READ_WAIT (through the proxy, on a loaded machine)
    is a miss, and only the test of that wants one."""

    def make(**settings: Any) -> FastAPI:
        settings.setdefault("cache_read_wait", 5.0)
        return make_app(**settings)

    return make


def _cache_component(health: dict[str, Any]) -> dict[str, Any]:
    (cache,) = [c for c in health["components"] if c["name"] == "cache"]
    return cache


async def _recover(rt: Runtime) -> None:
    """What the runtime's heartbeat does, driven by hand: probe, half-open, evaluate.

    The tests' heartbeat is an hour, so the manager's own probe is not due: the
    probe and the half-open it leads to are done here as the manager does them.
    """
    coherence = rt.coherence
    cache = rt.cache
    assert cache is not None
    if cache.breaker.state is State.OPEN:
        # the probe's pooled connection died with the outage: its first use may fail,
        # the manager then probes again (with backoff)
        probes = [await cache.aprobe() for _ in range(2)]
        assert probes[-1].ok, probes
        cache.breaker.half_open("health probe of cache succeeded")  # starts a reconcile
    await rt.manager.tick()  # its "heartbeat" evaluation starts a reconcile if one is due
    await coherence.wait_reconciled()
    assert coherence.reads_allowed(), coherence.stats()


async def test_first_get_after_redis_returns_is_the_updated_product(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    coherence = rt.coherence
    key = product_key(WIDGET["sku"])
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        # a service that has been serving for a while: reads through the cache
        for i in range(10):
            sku = f"WARM-{i}"
            body = {**WIDGET, "sku": sku}
            assert (await client.post("/products", json=body)).status_code == 201
            # a DEL slower than CACHE_INVALIDATE_WAIT (a loaded machine) turns cached reads
            # off until it lands: let it, so that the warm-up reads are cached ones
            await coherence.wait_reconciled()
            for _ in range(2):
                assert (await client.get(f"/products/{sku}")).status_code == 200
        await coherence.wait_reconciled()
        first = await client.get(f"/products/{WIDGET['sku']}")
        second = await client.get(f"/products/{WIDGET['sku']}")
        assert first.headers["X-Cache"] == "miss"
        assert second.headers["X-Cache"] == "hit"
        assert json.loads(direct.get(key))["name"] == "Widget"

        # Redis goes away
        proxy.set_mode(Mode.REFUSE)
        patched = await client.patch(
            f"/products/{WIDGET['sku']}", json={"name": "Widget v2", "price": "12.50"}
        )
        assert patched.status_code == 200, patched.text  # the database write succeeded
        assert patched.json()["name"] == "Widget v2"
        assert coherence.pending_keys() == [key.encode()]  # recorded, not deleted
        during = await client.get(f"/products/{WIDGET['sku']}")
        assert during.status_code == 200
        assert during.headers["X-Cache"] == "miss"  # straight from the database
        assert during.json()["name"] == "Widget v2"
        assert not rt.manager.enabled("cache_read")
        about = (await client.get("/about")).json()
        assert about["coherence"]["pending"] == 1
        assert about["coherence"]["reads_allowed"] is False

        # Redis comes back with the OLD value still in it
        proxy.set_mode(Mode.PASS)
        assert json.loads(direct.get(key))["name"] == "Widget"
        await _recover(rt)
        assert direct.get(key) is None  # deleted before any cached read
        assert rt.cache is not None and rt.cache.breaker.state is State.CLOSED
        assert rt.manager.enabled("cache_read"), rt.manager.feature_reason("cache_read")

        after = await client.get(f"/products/{WIDGET['sku']}")
        assert after.status_code == 200
        assert after.json()["name"] == "Widget v2"  # the first read after recovery
        assert after.json()["price"] == "12.50"
        again = await client.get(f"/products/{WIDGET['sku']}")
        assert again.headers["X-Cache"] == "hit"  # the cache is in use again
        assert again.json()["name"] == "Widget v2"

        health = (await client.get("/health")).json()
        assert _cache_component(health)["status"] == "up", _cache_component(health)
        assert health["features"]["cache_read"]["enabled"] is True, health["features"]
        about = (await client.get("/about")).json()
        assert about["coherence"]["pending"] == 0
        assert about["coherence"]["reads_allowed"] is True
        assert about["coherence"]["reconciled_total"] == 1


async def test_keys_left_by_a_stopped_instance_are_deleted_at_the_next_start(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """The service stops while Redis is away: the next instance deletes the keys first."""
    url = server.url_for(port=proxy.port)
    key = product_key(WIDGET["sku"])
    app = make_app(redis_url=url, recovery_dwell=0.0)
    async with running(app) as client:
        await client.post("/products", json=WIDGET)
        await app.state.runtime.coherence.wait_reconciled()  # a late DEL (see above) landed
        await client.get(f"/products/{WIDGET['sku']}")
        assert direct.get(key) is not None
        proxy.set_mode(Mode.REFUSE)
        patched = await client.patch(f"/products/{WIDGET['sku']}", json={"name": "Renamed"})
        assert patched.status_code == 200
    proxy.set_mode(Mode.PASS)
    assert json.loads(direct.get(key))["name"] == "Widget"  # stale, in Redis

    app = make_app(redis_url=url, recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    assert rt.coherence.reads_allowed() is False  # from the journal, at once
    async with running(app) as client:
        await _recover(rt)
        assert direct.get(key) is None
        got = await client.get(f"/products/{WIDGET['sku']}")
        assert got.json()["name"] == "Renamed"


async def test_after_the_breaker_opened_reads_are_its_trial_calls(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """A longer outage opens the Redis breaker; recovery goes through half-open.

    The reconcile's DEL is one trial call; the first GET is the next (the
    redis preset wants two): it misses, reads the database, and closes the
    breaker; the GET after it is a cache hit again.
    """
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    assert rt.cache is not None
    coherence = rt.coherence
    skus = [f"P-{i}" for i in range(6)]
    async with running(app) as client:
        for sku in skus:
            assert (await client.post("/products", json={**WIDGET, "sku": sku})).status_code == 201
            await coherence.wait_reconciled()  # a late DEL (see above) landed
            for _ in range(3):
                assert (await client.get(f"/products/{sku}")).status_code == 200
        assert all(direct.get(product_key(sku)) is not None for sku in skus)

        proxy.set_mode(Mode.REFUSE)
        for sku in skus:
            patched = await client.patch(f"/products/{sku}", json={"name": f"new {sku}"})
            assert patched.status_code == 200, patched.text
        assert rt.cache.breaker.state is State.OPEN
        assert coherence.pending() == len(skus)
        assert (await client.get(f"/products/{skus[0]}")).json()["name"] == f"new {skus[0]}"

        proxy.set_mode(Mode.PASS)
        assert all(json.loads(direct.get(product_key(s)))["name"] == "Widget" for s in skus)
        await _recover(rt)
        assert all(direct.get(product_key(sku)) is None for sku in skus)
        assert rt.cache.breaker.state is State.HALF_OPEN  # one trial call of two so far

        first = await client.get(f"/products/{skus[1]}")
        assert first.json()["name"] == f"new {skus[1]}"
        assert first.headers["X-Cache"] == "miss"
        assert rt.cache.breaker.state is State.CLOSED  # the read was the second trial
        await rt.manager.tick()
        assert rt.manager.enabled("cache_read"), rt.manager.feature_reason("cache_read")
        for sku in skus:
            got = await client.get(f"/products/{sku}")
            assert got.json()["name"] == f"new {sku}"
        again = await client.get(f"/products/{skus[1]}")
        assert again.headers["X-Cache"] == "hit"
        assert again.json()["name"] == f"new {skus[1]}"
        cache = _cache_component((await client.get("/health")).json())
        assert cache["status"] not in ("down", "recovering"), cache


async def test_a_write_does_not_wait_for_a_slow_redis_and_no_stale_read_follows(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """Redis slow but up (+0.4 s per command, under the client's 0.5 s timeout): a stock
    movement answers without waiting for its DEL (CACHE_INVALIDATE_WAIT, 20 ms), the key
    is journaled so reads go to the database meanwhile, and once the late DEL lands the
    key is dropped and cached reads resume with the new stock."""
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    assert rt.settings.cache_invalidate_wait == 0.02
    coherence = rt.coherence
    sku = WIDGET["sku"]
    key = product_key(sku)
    delay = 0.4
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "miss"
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "hit"
        stock = json.loads(direct.get(key))["stock"]

        proxy.set_mode(Mode.LATENCY, upstream_delay=delay)
        start = time.perf_counter()
        moved = await client.post(
            f"/products/{sku}/movements", json={"kind": "out", "quantity": 1, "reason": "sale"}
        )
        elapsed = time.perf_counter() - start
        assert moved.status_code == 201, moved.text
        assert elapsed < delay, f"the movement waited {elapsed:.3f} s for Redis"
        # answered before Redis did the DEL: the key is journaled, the old value still there
        assert coherence.pending_keys() == [key.encode()]
        assert json.loads(direct.get(key))["stock"] == stock
        assert not coherence.reads_allowed()
        during = await client.get(f"/products/{sku}")
        assert during.headers["X-Cache"] == "miss"  # from the database, not the stale entry
        assert during.json()["stock"] == stock - 1

        await coherence.wait_reconciled()  # the late DEL lands and drops its key
        assert direct.get(key) is None
        assert coherence.pending() == 0 and coherence.reads_allowed()
        assert rt.manager.enabled("cache_read"), rt.manager.feature_reason("cache_read")
        proxy.set_mode(Mode.PASS)
        after = await client.get(f"/products/{sku}")
        assert after.headers["X-Cache"] == "miss"
        assert after.json()["stock"] == stock - 1
        again = await client.get(f"/products/{sku}")
        assert again.headers["X-Cache"] == "hit"
        assert again.json()["stock"] == stock - 1


async def test_while_redis_is_known_slow_a_write_records_its_key_during_the_write(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """Once a DEL was late, the next writes record their key in the journal while their
    transaction runs (``record_ahead``), not after it; the key still goes once the late
    DEL sent after the commit lands, and a write refused by the data (409) leaves no key
    behind either: its DEL is sent in the background."""
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    coherence = rt.coherence
    assert coherence is not None
    sku = WIDGET["sku"]
    key = product_key(sku)
    ahead: list[object] = []
    record_ahead = coherence.record_ahead

    def spy(*keys: Any) -> Any:
        started = record_ahead(*keys)
        ahead.append(started)
        return started

    coherence.record_ahead = spy  # type: ignore[method-assign]
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        stock = (await client.get(f"/products/{sku}")).json()["stock"]
        proxy.set_mode(Mode.LATENCY, upstream_delay=0.4)
        move = {"kind": "out", "quantity": 1, "reason": "sale"}
        first = await client.post(f"/products/{sku}/movements", json=move)
        assert first.status_code == 201, first.text
        assert ahead[-1] is None  # Redis not known slow yet: the DEL was waited for 20 ms
        second = await client.post(f"/products/{sku}/movements", json=move)
        assert second.status_code == 201, second.text
        assert ahead[-1] is not None  # recorded during the write
        assert coherence.pending_keys() == [key.encode()]
        during = await client.get(f"/products/{sku}")
        assert during.headers["X-Cache"] == "miss"
        assert during.json()["stock"] == stock - 2
        refused = await client.post(f"/products/{sku}/movements", json={**move, "quantity": 10**6})
        assert refused.status_code == 409, refused.text
        assert ahead[-1] is not None
        await coherence.wait_reconciled()  # the late DELs land and drop the keys
        assert coherence.pending() == 0 and coherence.reads_allowed()
        assert direct.get(key) is None
        proxy.set_mode(Mode.PASS)
        after = await client.get(f"/products/{sku}")
        assert after.json()["stock"] == stock - 2


async def test_a_read_does_not_wait_for_a_slow_redis(
    make_app: Callable[..., FastAPI],
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """Redis slow but up (+0.4 s): a product read waits CACHE_READ_WAIT (20 ms) for it, then
    answers from the database; for a second reads skip Redis and nothing is cached, then
    the cache is used again."""
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    rt: Runtime = app.state.runtime
    cache = rt.product_cache
    clock = FakeClock(1000.0)
    cache._clock = clock
    sku = WIDGET["sku"]
    key = product_key(sku)
    delay = 0.4
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        await rt.coherence.wait_reconciled()
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "miss"
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "hit"
        direct.delete(key)  # so that a read the cache answers would show as a hit

        # the default wait (the warm-up above and the end below wait as long as it takes:
        # on a loaded machine a read through the proxy may take more than 20 ms)
        cache.read_wait = load_settings().cache_read_wait
        assert cache.read_wait == 0.02
        proxy.set_mode(Mode.LATENCY, upstream_delay=delay)
        start = time.perf_counter()
        r = await client.get(f"/products/{sku}")
        elapsed = time.perf_counter() - start
        assert r.status_code == 200 and r.headers["X-Cache"] == "miss"
        assert elapsed < delay, f"the read waited {elapsed:.3f} s for Redis"
        assert cache.slow()
        assert len(cache._late) == 1  # its GET goes on in the background
        r = await client.get(f"/products/{sku}")  # within the second: Redis skipped
        assert r.headers["X-Cache"] == "miss"
        assert len(cache._late) == 1  # no second GET was sent
        await asyncio.gather(*cache._late, return_exceptions=True)
        assert direct.get(key) is None  # nothing was put meanwhile

        proxy.set_mode(Mode.PASS)
        clock.advance(1.0)
        assert not cache.slow()
        cache.read_wait = 5.0
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "miss"
        assert direct.get(key) is not None  # put again
        assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "hit"
