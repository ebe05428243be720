"""Cache coherence against a real, private redis-server behind a fault proxy.

The hazard: a value is cached; Redis goes away; the source of truth changes and
the DEL cannot be sent; Redis comes back with the OLD value in it. With
:class:`CacheCoherence` the first read after recovery returns the NEW value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brownout import BreakerConfig, State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.coherence import CacheCoherence
from brownout.testing import FakeClock
from tests.servers.plugin import RedisServer

redis_py = pytest.importorskip("redis")

from brownout.redis import AsyncRedisAdapter, RedisAdapter  # noqa: E402

CONFIG = BreakerConfig(consecutive_failures=2, open_for=20.0, half_open_calls=1)
KEY = "product:W-1"


@pytest.fixture
def server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    return make_redis(appendonly=True)


@pytest.fixture
def proxy(server: RedisServer, make_proxy: Callable[..., ThreadedFaultProxy]) -> ThreadedFaultProxy:
    return make_proxy(server)


@pytest.fixture
def direct(server: RedisServer) -> Iterator[Any]:
    """A plain client straight to the server: what Redis really holds."""
    client = redis_py.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


class ReadThrough:
    """A read-through cache over a dict "database", as an application writes one."""

    def __init__(self, cache: RedisAdapter, coherence: CacheCoherence | None) -> None:
        self.cache = cache
        self.coherence = coherence
        self.db: dict[str, str] = {}
        self.served_from: list[str] = []

    def _allowed(self) -> bool:
        return self.coherence is None or self.coherence.reads_allowed()

    def read(self, key: str) -> str:
        if self._allowed():
            with contextlib.suppress(Exception):  # a cache failure is a miss
                value = self.cache.get(key)
                if value is not None:
                    self.served_from.append("cache")
                    return str(value)
        value = self.db[key]
        self.served_from.append("db")
        if self._allowed():
            with contextlib.suppress(Exception):
                self.cache.set(key, value, ex=3600)
        return value

    def write(self, key: str, value: str) -> bool | None:
        self.db[key] = value
        if self.coherence is not None:
            return self.coherence.invalidate(key)
        with contextlib.suppress(Exception):  # the naive way: a failed DEL is forgotten
            self.cache.delete(key)
        return None


def _adapter(url: str, clock: FakeClock) -> RedisAdapter:
    return RedisAdapter.from_url(url, config=CONFIG, clock=clock, decode_responses=True)


def test_first_read_after_recovery_is_the_new_value(
    server: RedisServer, proxy: ThreadedFaultProxy, direct: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    cache = _adapter(server.url_for(port=proxy.port), clock)
    coherence = CacheCoherence(cache, tmp_path / "coherence.db")
    coherence.watch(cache.breaker)
    app = ReadThrough(cache, coherence)
    try:
        app.db[KEY] = "old"
        assert app.read(KEY) == "old"
        assert app.read(KEY) == "old"
        assert app.served_from == ["db", "cache"]
        assert direct.get(KEY) == "old"

        proxy.set_mode(Mode.REFUSE)  # Redis goes away
        assert app.write(KEY, "new") is False  # recorded, not deleted
        assert coherence.pending_keys() == [KEY.encode()]
        assert app.read(KEY) == "new"  # straight from the database
        assert app.write("product:other", "x") is False
        assert cache.breaker.state is State.OPEN
        assert direct.get(KEY) == "old"  # the stale value is still in Redis

        proxy.set_mode(Mode.PASS)  # Redis is back, with the old value
        assert direct.get(KEY) == "old"
        clock.advance(CONFIG.open_for)  # the break is over: half-open starts the reconcile
        assert cache.breaker.state is State.HALF_OPEN
        coherence.wait_reconciled_sync(timeout=30)
        assert coherence.reads_allowed()
        assert direct.get(KEY) is None  # deleted before any cached read
        assert cache.breaker.state is State.CLOSED  # its DEL was the trial call

        app.served_from.clear()
        assert app.read(KEY) == "new"  # the first read after recovery
        assert app.read(KEY) == "new"
        assert app.served_from == ["db", "cache"]  # and the cache is in use again
    finally:
        coherence.close()
        cache.close()


def test_without_coherence_the_old_value_comes_back(
    server: RedisServer, proxy: ThreadedFaultProxy, direct: Any
) -> None:
    """The control: the same story with a naive invalidation serves the stale value."""
    clock = FakeClock()
    cache = _adapter(server.url_for(port=proxy.port), clock)
    app = ReadThrough(cache, None)
    try:
        app.db[KEY] = "old"
        app.read(KEY)
        proxy.set_mode(Mode.REFUSE)
        app.write(KEY, "new")  # the DEL fails and is forgotten
        proxy.set_mode(Mode.PASS)
        clock.advance(CONFIG.open_for)
        assert app.read(KEY) == "old"  # stale: what CacheCoherence prevents
    finally:
        cache.close()


def test_redis_restarted_from_its_aof_with_the_old_value(
    server: RedisServer, direct: Any, tmp_path: Path
) -> None:
    """Redis crashes and restarts from its append-only file, old value included."""
    clock = FakeClock()
    cache = _adapter(server.url, clock)
    journal = tmp_path / "coherence.db"
    coherence = CacheCoherence(cache, journal)
    app = ReadThrough(cache, coherence)
    try:
        app.db[KEY] = "old"
        app.read(KEY)
        assert direct.get(KEY) == "old"
        server.kill()
        assert app.write(KEY, "new") is False
        coherence.close()  # our process restarts too: only the journal remembers
        server.start()
        assert direct.get(KEY) == "old"  # reloaded from the AOF
        coherence = CacheCoherence(cache, journal)
        app.coherence = coherence
        assert not coherence.reads_allowed()
        assert app.read(KEY) == "new"  # reads go to the database until reconciled
        cache.breaker.reset()
        coherence.watch(cache.breaker)  # keys pending, breaker closed: reconciles now
        coherence.wait_reconciled_sync(timeout=30)
        assert direct.get(KEY) is None
        app.served_from.clear()
        assert [app.read(KEY), app.read(KEY)] == ["new", "new"]
        assert app.served_from == ["db", "cache"]
    finally:
        coherence.close()
        cache.close()


async def test_async_adapter_reset_connections(
    server: RedisServer, proxy: ThreadedFaultProxy, direct: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    cache = AsyncRedisAdapter.from_url(
        server.url_for(port=proxy.port), config=CONFIG, clock=clock, decode_responses=True
    )
    coherence = CacheCoherence(cache, tmp_path / "coherence.db", batch_size=2)
    coherence.watch(cache.breaker)
    db = {f"p:{i}": "old" for i in range(5)}
    try:
        for key, value in db.items():
            await cache.set(key, value)
        proxy.set_mode(Mode.RESET)  # every connection is reset
        for key in db:
            db[key] = "new"
            assert await coherence.ainvalidate(key) is False
        assert cache.breaker.state is State.OPEN
        proxy.set_mode(Mode.PASS)
        assert direct.mget(list(db)) == ["old"] * 5
        clock.advance(CONFIG.open_for)
        assert cache.breaker.state is State.HALF_OPEN
        await coherence.wait_reconciled()
        assert coherence.reads_allowed()
        assert direct.mget(list(db)) == [None] * 5  # three DELs in batches of 2
        assert coherence.stats()["reconciled_total"] == 5
    finally:
        await coherence.aclose()
        await cache.aclose()
