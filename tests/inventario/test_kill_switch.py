"""The kill switch (``BROWNOUT_DISABLED=1`` when the service is built) takes brownout's
protection out of inventario's path, against a private Redis behind the fault proxy:
a product read waits for a slow Redis (no CACHE_READ_WAIT, no slow skip) and a write
for its DEL (no CACHE_INVALIDATE_WAIT), as a service without brownout does; without
the kill switch neither waits. What keeps the cache correct stays: a DEL that fails is
still journaled. explain(), /health and /status say what is off."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from brownout import State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.health import Level
from inventario.cache import product_key
from inventario.runtime import Runtime
from tests.inventario.conftest import WIDGET, running
from tests.servers.plugin import RedisServer

redis_py = pytest.importorskip("redis")

#: What the proxy adds to every chunk to Redis while it is "slow" (s).
DELAY = 0.3
#: The Redis client's own timeout in these tests (s): well above DELAY, so that a read
#: the service lets wait for Redis gets its answer even on a loaded machine (the client's
#: timeout is not what is tested; the service's bounded waits are).
CLIENT_TIMEOUT = 5.0


def _build(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    proxy: ThreadedFaultProxy,
    server: RedisServer,
    *,
    killed: bool,
) -> FastAPI:
    """The app, built with or without the kill switch, with the default waits on Redis
    (CACHE_READ_WAIT and CACHE_INVALIDATE_WAIT: 20 ms each)."""
    if killed:
        monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    else:
        monkeypatch.delenv("BROWNOUT_DISABLED", raising=False)
    app = make_app(redis_url=server.url_for(port=proxy.port), recovery_dwell=0.0)
    monkeypatch.delenv("BROWNOUT_DISABLED", raising=False)  # read when built: no more
    rt: Runtime = app.state.runtime
    assert rt.settings.cache_read_wait == rt.settings.cache_invalidate_wait == 0.02
    return app


async def _warm(client: Any, rt: Runtime, sku: str) -> None:
    """The product created and cached (Redis passing)."""
    assert rt.cache is not None
    rt.cache.set_socket_timeout(CLIENT_TIMEOUT)
    assert (await client.post("/products", json=WIDGET)).status_code == 201
    assert rt.coherence is not None
    await rt.coherence.wait_reconciled()
    assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "miss"
    assert (await client.get(f"/products/{sku}")).headers["X-Cache"] == "hit"


@pytest.mark.parametrize("killed", [True, False], ids=["kill-switch", "protected"])
async def test_a_read_waits_for_a_slow_redis_only_under_the_kill_switch(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    killed: bool,
) -> None:
    app = _build(make_app, monkeypatch, proxy, server, killed=killed)
    rt: Runtime = app.state.runtime
    cache = rt.product_cache
    sku = WIDGET["sku"]
    async with running(app) as client:
        await _warm(client, rt, sku)
        assert cache.read_wait == (None if killed else 0.02)
        assert cache.disabled is killed

        proxy.set_mode(Mode.LATENCY, upstream_delay=DELAY)
        start = time.perf_counter()
        r = await client.get(f"/products/{sku}")
        elapsed = time.perf_counter() - start
        assert r.status_code == 200
        if killed:
            # the service waited for Redis and served its answer (a lower bound: the
            # proxy held the GET that long)
            assert r.headers["X-Cache"] == "hit"
            assert elapsed >= DELAY
            assert not cache.slow() and not cache._late
            again = await client.get(f"/products/{sku}")  # no skip: Redis asked again
            assert again.headers["X-Cache"] == "hit"
        else:
            # past CACHE_READ_WAIT the database answered; the GET goes on in the background
            assert r.headers["X-Cache"] == "miss"
            assert cache.slow() and len(cache._late) == 1
            again = await client.get(f"/products/{sku}")  # within the second: Redis skipped
            assert again.headers["X-Cache"] == "miss" and len(cache._late) == 1
        proxy.set_mode(Mode.PASS)


@pytest.mark.parametrize("killed", [True, False], ids=["kill-switch", "protected"])
async def test_a_write_waits_for_its_del_only_under_the_kill_switch(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
    killed: bool,
) -> None:
    app = _build(make_app, monkeypatch, proxy, server, killed=killed)
    rt: Runtime = app.state.runtime
    coherence = rt.coherence
    assert coherence is not None
    sku = WIDGET["sku"]
    key = product_key(sku)
    async with running(app) as client:
        await _warm(client, rt, sku)
        assert coherence.max_wait == (None if killed else 0.02)
        stock = json.loads(direct.get(key))["stock"]

        proxy.set_mode(Mode.LATENCY, upstream_delay=DELAY)
        moved = await client.post(
            f"/products/{sku}/movements", json={"kind": "out", "quantity": 1, "reason": "sale"}
        )
        assert moved.status_code == 201, moved.text
        if killed:
            # answered once Redis had done the DEL: nothing journaled, nothing stale
            assert direct.get(key) is None
            assert coherence.pending() == 0 and coherence.reads_allowed()
        else:
            # answered before Redis did the DEL: the key is journaled meanwhile
            assert coherence.pending_keys() == [key.encode()]
            assert json.loads(direct.get(key))["stock"] == stock
        await coherence.wait_reconciled()
        assert direct.get(key) is None
        proxy.set_mode(Mode.PASS)


async def test_a_failed_del_is_still_journaled_under_the_kill_switch(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    proxy: ThreadedFaultProxy,
    direct: Any,
) -> None:
    """Correctness does not change: Redis refusing connections, the breaker disabled (no
    BreakerOpen), the DEL fails and its key is recorded; reads go to the database (with
    the new stock) until a reconcile has deleted it."""
    app = _build(make_app, monkeypatch, proxy, server, killed=True)
    rt: Runtime = app.state.runtime
    coherence = rt.coherence
    assert coherence is not None and rt.cache is not None
    assert rt.cache.breaker.state is State.DISABLED
    sku = WIDGET["sku"]
    key = product_key(sku)
    async with running(app) as client:
        await _warm(client, rt, sku)
        stock = json.loads(direct.get(key))["stock"]
        proxy.set_mode(Mode.REFUSE)
        moved = await client.post(
            f"/products/{sku}/movements", json={"kind": "out", "quantity": 1, "reason": "sale"}
        )
        assert moved.status_code == 201, moved.text
        assert coherence.pending_keys() == [key.encode()]
        assert json.loads(direct.get(key))["stock"] == stock  # stale in Redis ...
        proxy.set_mode(Mode.PASS)
        during = await client.get(f"/products/{sku}")
        assert during.headers["X-Cache"] == "miss"  # ... never served
        assert during.json()["stock"] == stock - 1
        await coherence.areconcile()
        assert direct.get(key) is None and coherence.reads_allowed()


async def test_explain_health_and_status_say_what_the_kill_switch_took_out(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    proxy: ThreadedFaultProxy,
) -> None:
    app = _build(make_app, monkeypatch, proxy, server, killed=True)
    rt: Runtime = app.state.runtime
    async with running(app) as client:
        section = rt.manager.explain()["kill_switch"]
        assert section["active"] is True
        assert {
            "breaker:database",
            "breaker:redis",
            "bulkhead:redis",
            "shedding",
            "cache_read_wait",
            "cache_invalidate_wait",
        } <= set(section["off"]), section
        assert "feature gates" in section["stays"]
        assert rt.redis_admission is not None
        assert rt.redis_admission.snapshot().disabled
        health = rt.manager.explain()  # what /health and /status/data show with the token
        assert health["shedding"]["disabled"] is True
        assert rt.coherence is not None
        stats = rt.coherence.stats()
        assert stats["disabled"] is True and stats["max_wait_s"] is None

        # the feature gates act as they do without the kill switch
        assert (await client.get("/reports/low-stock")).status_code == 200
        rt.manager.pin(Level.LIMITED, duration=60.0, reason="test")
        assert not rt.manager.enabled("complex_queries")
        assert (await client.get("/reports/low-stock")).status_code == 503
        rt.manager.unpin()

        # the public status page: the admission figures are shown, not applied
        status = (await client.get("/status/data")).json()
        table = status["level_settings"]
        assert "redis_admission" not in table["applied"]
        assert "BROWNOUT_DISABLED" in table["not_applied"]["kill_switch"]
        assert "Redis" in table["not_applied"]["kill_switch"]


async def test_without_the_kill_switch_nothing_is_off(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    server: RedisServer,
    proxy: ThreadedFaultProxy,
) -> None:
    app = _build(make_app, monkeypatch, proxy, server, killed=False)
    rt: Runtime = app.state.runtime
    async with running(app) as client:
        assert rt.manager.explain()["kill_switch"] == {"active": False, "off": [], "stays": None}
        table = (await client.get("/status/data")).json()["level_settings"]
        assert "redis_admission" in table["applied"]
        assert "kill_switch" not in table["not_applied"]
