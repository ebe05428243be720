"""brownout.redis against a real redis-server: round trips, faults, caller errors, recovery.

Every scenario runs for the sync (``RedisAdapter``) and the async (``AsyncRedisAdapter``)
adapter through one facade (:class:`Facade`), so both are held to the same behaviour.
Destructive scenarios use a private server (``make_redis``) behind a private
:class:`ThreadedFaultProxy`, so that "no traffic while open" is measured by the proxy.
"""

from __future__ import annotations

import asyncio
import doctest
import inspect
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import brownout.redis as brownout_redis
from brownout import BreakerConfig, BreakerOpen, State
from brownout.adapter import OperationEvent
from brownout.chaos import Mode, ProxyStats, ThreadedFaultProxy
from brownout.redis import (
    REDIS_ERRORS,
    AsyncRedisAdapter,
    RedisAdapter,
    SerializationError,
)
from brownout.testing import aeventually, eventually
from brownout.testing.servers.redis import RedisServer

TIMEOUT = 0.3  # client socket timeouts in the fault scenarios
OPEN_FOR = 1.0
EVENTUALLY = 10.0  # bound for waiting on something that must happen; never asserted as speed
SECRET = "Sekr3t-Pa55-9f2c"

Adapter = RedisAdapter | AsyncRedisAdapter


# -- helpers ----------------------------------------------------------------------------


class Facade:
    """Calls a sync or an async adapter the same way: ``await f("get", key)``."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.events: list[OperationEvent] = []
        adapter.add_listener(self.events.append)

    async def __call__(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.adapter, operation)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def pipeline(self, build: Callable[[Any], object]) -> list[Any]:
        """Queue commands with ``build(p)`` and execute them as one guarded call."""
        if isinstance(self.adapter, AsyncRedisAdapter):
            async with self.adapter.pipeline() as ap:
                build(ap)
                return await ap.execute()
        with self.adapter.pipeline() as p:
            build(p)
            return p.execute()

    async def probe(self) -> Any:
        if isinstance(self.adapter, AsyncRedisAdapter):
            return await self.adapter.aprobe()
        return self.adapter.probe()

    @property
    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.events]


Factory = Callable[..., Facade]


@pytest.fixture
def adapters(flavour: str, closing: Callable[[Adapter], Adapter]) -> Factory:
    """``adapters(url, **options)`` -> a :class:`Facade` over a new adapter, closed after."""

    def make(url: str, **options: Any) -> Facade:
        options.setdefault("socket_timeout", TIMEOUT)
        options.setdefault("socket_connect_timeout", TIMEOUT)
        options.setdefault("probe_timeout", TIMEOUT)
        cls = RedisAdapter if flavour == "sync" else AsyncRedisAdapter
        return Facade(closing(cls.from_url(url, **options)))

    return make


@pytest.fixture
def private(
    make_redis: Callable[..., RedisServer], make_proxy: Callable[..., ThreadedFaultProxy]
) -> tuple[RedisServer, ThreadedFaultProxy]:
    """A private redis-server and a fault proxy in front of it."""
    server = make_redis()
    return server, make_proxy(server)


def state(f: Facade) -> State:
    """The breaker's state (a call, so type checkers do not narrow it across awaits)."""
    return f.adapter.breaker.state


def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def fault_config(**changes: Any) -> BreakerConfig:
    base = BreakerConfig(consecutive_failures=3, open_for=OPEN_FOR, half_open_calls=1)
    return base.replace(**changes)


def settled(proxy: ThreadedFaultProxy) -> ProxyStats:
    """The proxy's counters once they stop moving (in-flight bytes are accounted)."""
    seen: list[tuple[int, int, int]] = []

    def still() -> bool:
        now = proxy.stats
        seen.append((now.connections_total, now.bytes_up, now.bytes_down))
        return len(seen) > 1 and seen[-1] == seen[-2]  # unchanged over one interval

    eventually(still, timeout=EVENTUALLY, interval=0.05, what="the proxy's counters to settle")
    return proxy.stats


def connected_clients(server: RedisServer) -> int:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as direct:
        info = direct.info("clients")
    return int(info["connected_clients"]) - 1  # not counting this connection


# -- normal operation -------------------------------------------------------------------


async def test_every_operation_round_trips(redis_server: RedisServer, adapters: Factory) -> None:
    f = adapters(redis_server.url)
    k, n, lst, h, s, j = key(), key(), key(), key(), key(), key()
    assert f.adapter.extra_figures()["hit_ratio"] is None

    assert await f("ping") is True
    assert await f("set", k, "v1", ex=60) is True
    assert await f("get", k) == b"v1"
    assert 0 < await f("ttl", k) <= 60
    assert await f("set", k, "v2", nx=True) is False
    assert await f("set", k, "v3", xx=True, px=60_000) is True
    assert await f("get", k) == b"v3"
    assert await f("get", key()) is None
    assert await f("exists", k, key()) == 1
    assert await f("expire", k, 100) is True
    assert await f("incr", n) == 1
    assert await f("incrby", n, 10) == 11
    assert await f("decr", n) == 10
    assert await f("decr", n, 5) == 5
    assert await f("mset", {f"{k}:a": b"A", f"{k}:b": 2}) is True
    assert await f("mget", [f"{k}:a", f"{k}:missing", f"{k}:b"]) == [b"A", None, b"2"]

    assert await f("rpush", lst, "b", "c") == 2
    assert await f("lpush", lst, "a") == 3
    assert await f("llen", lst) == 3
    assert await f("lrange", lst) == [b"a", b"b", b"c"]
    assert await f("lrange", lst, 1, 1) == [b"b"]
    assert await f("lpop", lst) == b"a"
    assert await f("rpop", lst) == b"c"

    assert await f("hset", h, "name", "ada") == 1
    assert await f("hset", h, mapping={"lang": "en", "age": 36}) == 2
    assert await f("hget", h, "name") == b"ada"
    assert await f("hget", h, "nothing") is None
    assert await f("hgetall", h) == {b"name": b"ada", b"lang": b"en", b"age": b"36"}
    assert await f("hdel", h, "lang", "nothing") == 1

    assert await f("sadd", s, "x", "y", "z") == 3
    assert await f("srem", s, "y") == 1
    assert await f("smembers", s) == {b"x", b"z"}

    doc = {"sku": "A-1", "qty": 3, "tags": ["new"], "price": 9.5, "note": "café"}
    assert await f("set_json", j, doc, ex=60) is True
    assert await f("get_json", j) == doc
    assert await f("get_json", key(), default={}) == {}

    assert await f("delete", k, n, lst, h, s, j) == 6

    # every operation was accounted for, and lookups counted hits and misses
    ops = f.adapter.health()["operations"]
    for name in (
        "get", "set", "delete", "exists", "expire", "ttl", "incr", "incrby", "decr",
        "mget", "mset", "lpush", "rpush", "lpop", "rpop", "llen", "lrange", "hset",
        "hget", "hgetall", "hdel", "sadd", "srem", "smembers", "ping", "get_json", "set_json",
    ):  # fmt: skip
        assert ops[name].get("success", 0) >= 1, name
    totals = f.adapter.health()["totals"]
    # hits: get 2, mget 2, hget 1, get_json 1; misses: get 1, mget 1, hget 1, get_json 1
    assert (totals["cache_hits"], totals["cache_misses"]) == (6, 4)
    figures = f.adapter.extra_figures()
    assert figures["hit_ratio"] == pytest.approx(6 / 10)
    assert figures["pool_size"] == 50
    assert figures["pool_in_use"] == 0 and figures["pool_idle"] == 1
    assert {e.outcome for e in f.events} == {"success"}
    assert state(f) is State.CLOSED


async def test_decode_responses_is_passed_to_redis(
    redis_server: RedisServer, adapters: Factory
) -> None:
    f = adapters(redis_server.url, decode_responses=True)
    k = key()
    await f("set", k, "text")
    assert await f("get", k) == "text"
    await f("set_json", k, [1, "two"])
    assert await f("get_json", k) == [1, "two"]


async def test_pipeline_is_one_guarded_call(redis_server: RedisServer, adapters: Factory) -> None:
    f = adapters(redis_server.url)
    k = key()

    def build(p: Any) -> None:
        assert p.set(k, 1).incr(k) is p  # chained commands stay on the guarded wrapper
        p.get(k)
        assert len(p) == 3

    assert await f.pipeline(build) == [True, 2, b"2"]
    assert [(e.operation, e.outcome) for e in f.events] == [("pipeline", "success")]

    f.adapter.breaker.force_open()
    with pytest.raises(BreakerOpen):
        await f.pipeline(lambda p: p.set(k, 99))
    f.adapter.breaker.reset()
    assert await f("get", k) == b"2"  # the rejected batch was dropped, not sent later
    assert f.adapter.extra_figures()["pool_in_use"] == 0


async def test_an_existing_client_is_wrapped_not_owned(
    private: tuple[RedisServer, ThreadedFaultProxy], flavour: str
) -> None:
    server, _ = private
    with redis.Redis(host=server.host, port=server.port) as direct:
        direct.config_set("requirepass", SECRET)
    kwargs: dict[str, Any] = {"host": server.host, "port": server.port, "password": SECRET}
    k = key()
    if flavour == "sync":
        client = redis.Redis(**kwargs, **RedisAdapter.client_settings())
        with RedisAdapter(client, name="mine") as adapter:
            assert adapter.set(k, "v") and adapter.probe().ok
            assert SECRET not in adapter.describe(RuntimeError(f"auth {SECRET} failed"))
        assert client.get(k) == b"v"  # closing the adapter left the caller's client open
        client.close()
    else:
        aclient = redis.asyncio.Redis(**kwargs, **AsyncRedisAdapter.client_settings())
        async with AsyncRedisAdapter(aclient, name="mine") as aadapter:
            assert await aadapter.set(k, "v") and (await aadapter.aprobe()).ok
            assert SECRET not in aadapter.describe(RuntimeError(f"auth {SECRET} failed"))
        assert await aclient.get(k) == b"v"
        await aclient.aclose()


# -- caller errors ----------------------------------------------------------------------


async def test_caller_errors_never_trip(redis_server: RedisServer, adapters: Factory) -> None:
    f = adapters(redis_server.url, config=fault_config())
    lst, raw = key(), key()
    await f("rpush", lst, "x")
    await f("set", raw, b"\xff not json")
    for _ in range(10):
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await f("incr", lst)
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await f("get", lst)
        with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
            await f("incr", raw)
        with pytest.raises(redis.exceptions.DataError):
            await f("set", raw, None)
        with pytest.raises(SerializationError, match="not JSON-serialisable"):
            await f("set_json", raw, {"when": {1, 2}})
        with pytest.raises(SerializationError, match="not JSON-serialisable"):
            await f("set_json", raw, float("nan"))
        with pytest.raises(SerializationError, match="stored value is not JSON") as info:
            await f("get_json", raw)
        assert info.value.key == raw
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await f.pipeline(lambda p: p.set(raw, "ok").lpush(raw, "x"))
    assert state(f) is State.CLOSED
    snap = f.adapter.breaker.snapshot()
    assert snap.total_failures == 0
    assert set(f.outcomes) == {"caller_error", "success"}
    assert {e.error_kind for e in f.events if e.outcome == "caller_error"} == {
        "caller",
        "serialization",
    }
    assert await f("get", raw) == b"ok"  # the pipeline's SET went through before LPUSH failed


async def test_write_to_a_replica_counts_as_failover(
    make_redis: Callable[..., RedisServer], adapters: Factory
) -> None:
    primary, replica = make_redis(), make_redis()
    with redis.Redis(host=replica.host, port=replica.port) as direct:
        direct.replicaof(primary.host, primary.port)
    f = adapters(replica.url, config=fault_config())
    for _ in range(3):
        with pytest.raises(redis.exceptions.ReadOnlyError):
            await f("set", key(), "x")
    assert state(f) is State.OPEN
    assert [e.error_kind for e in f.events] == ["failover"] * 3


async def test_out_of_memory_counts(
    make_redis: Callable[..., RedisServer], adapters: Factory
) -> None:
    server = make_redis()
    with redis.Redis(host=server.host, port=server.port) as direct:
        direct.config_set("maxmemory", 1)
        direct.config_set("maxmemory-policy", "noeviction")
    f = adapters(server.url, config=fault_config())
    for _ in range(3):
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            await f("set", key(), "x")
    assert state(f) is State.OPEN


def test_error_table_order_and_reasons() -> None:
    e = redis.exceptions
    cases: list[tuple[BaseException, bool, str]] = [
        (e.BusyLoadingError("LOADING"), True, "loading"),  # a ConnectionError subclass
        (e.AuthenticationError("WRONGPASS"), True, "auth"),
        (e.ConnectionError("refused"), True, "connection"),
        (e.TimeoutError("read"), True, "timeout"),
        (TimeoutError(), True, "timeout"),
        (ConnectionResetError(), True, "connection"),
        (e.ReadOnlyError("READONLY"), True, "failover"),  # a ResponseError subclass
        (e.ClusterDownError("CLUSTERDOWN"), True, "unavailable"),
        (e.MasterDownError("MASTERDOWN"), True, "unavailable"),
        (e.TryAgainError("TRYAGAIN"), True, "unavailable"),
        (e.OutOfMemoryError("OOM"), True, "out_of_memory"),
        (e.ResponseError("MISCONF cannot persist"), True, "unavailable"),
        (e.ResponseError("BUSY running a script"), True, "unavailable"),
        (e.ResponseError("BUSYKEY Target key name already exists"), False, "caller"),
        (e.NoPermissionError("NOPERM"), False, "permission"),
        (e.WatchError("changed"), False, "conflict"),
        (e.ResponseError("WRONGTYPE Operation"), False, "caller"),
        (e.ExecAbortError("EXECABORT"), False, "caller"),
        (e.DataError("Invalid input"), False, "caller"),
        (SerializationError("x"), False, "serialization"),
    ]
    if hasattr(e, "MaxConnectionsError"):
        cases.append((e.MaxConnectionsError("Too many"), True, "pool_exhausted"))
    for exc, counts, kind in cases:
        rule = REDIS_ERRORS.classify(exc)
        assert (rule.counts, rule.kind) == (counts, kind), exc
    rows = REDIS_ERRORS.rows()
    assert all(why for *_, why in rows)
    assert all(len(why) <= 100 for *_, why in rows)


# -- faults -----------------------------------------------------------------------------

FAULTS = ("kill", "pause", "blackhole", "reset")


def inject(fault: str, server: RedisServer, proxy: ThreadedFaultProxy) -> Callable[[], None]:
    """Start ``fault``; returns the function that removes it."""
    if fault == "kill":
        server.kill()
        return server.start
    if fault == "pause":
        server.pause()
        return server.resume
    proxy.set_mode(Mode.BLACKHOLE if fault == "blackhole" else Mode.RESET)
    return lambda: proxy.set_mode(Mode.PASS)


@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_trips_rejects_without_traffic_and_recovers(
    fault: str,
    private: tuple[RedisServer, ThreadedFaultProxy],
    adapters: Factory,
) -> None:
    server, proxy = private
    f = adapters(server.url_for(port=proxy.port), config=fault_config())
    k = key()
    assert await f("set", k, "before") is True
    baseline = dict(f.adapter.extra_figures())
    baseline_clients = connected_clients(server)
    assert baseline["pool_in_use"] == 0

    quiet = settled(proxy)
    remove = inject(fault, server, proxy)
    try:
        errors: list[BaseException] = []
        while state(f) is State.CLOSED:
            with pytest.raises(redis.exceptions.RedisError) as info:
                await f("get", k)
            errors.append(info.value)
        assert len(errors) == 3
        assert all(REDIS_ERRORS.counts(exc) for exc in errors)
        assert state(f) is State.OPEN
        assert f.outcomes == ["success", "failure", "failure", "failure"]
        # no client retries: at most one (re)connection per failed call
        tripped = settled(proxy)
        assert tripped.connections_total - quiet.connections_total <= len(errors)

        before = settled(proxy)
        for _ in range(5):
            with pytest.raises(BreakerOpen) as rejected:
                await f("get", k)
            assert rejected.value.retry_after is not None
        with pytest.raises(BreakerOpen):
            await f("set", k, "while open")
        with pytest.raises(BreakerOpen):
            await f.pipeline(lambda p: p.get(k))
        after = settled(proxy)
        assert (after.connections_total, after.bytes_up) == (
            before.connections_total,
            before.bytes_up,
        )
        assert f.outcomes[-7:] == ["rejected"] * 7
        health = f.adapter.health()
        assert health["breaker"]["state"] == "open"
        assert health["last_error"] is not None
    finally:
        remove()

    # recovery: after open_for a half-open probe goes through and closes the breaker
    await aeventually(lambda: state(f) is State.HALF_OPEN, what="half-open")
    value = await f("get", k)
    assert value in (b"before", None)  # a killed server without persistence lost it
    assert state(f) is State.CLOSED
    assert await f("set", k, "after") is True
    assert await f("get", k) == b"after"
    figures = f.adapter.extra_figures()
    assert figures["pool_in_use"] == baseline["pool_in_use"] == 0
    assert figures["pool_idle"] == baseline["pool_idle"]
    await aeventually(
        lambda: connected_clients(server) == baseline_clients, what="no leaked connections"
    )


@pytest.mark.parametrize("fault", ["pause", "blackhole"])
async def test_probe_has_its_own_timeout_and_bypasses_the_breaker(
    fault: str,
    private: tuple[RedisServer, ThreadedFaultProxy],
    adapters: Factory,
) -> None:
    server, proxy = private
    # the pool's timeouts are long; the probe's own timeout is what ends the probe
    f = adapters(
        server.url_for(port=proxy.port),
        socket_timeout=30,
        socket_connect_timeout=30,
        probe_timeout=0.2,
    )
    f.adapter.breaker.force_open()
    ok = await f.probe()
    assert ok.ok and ok.error is None  # not through the (forced open) breaker
    remove = inject(fault, server, proxy)
    try:
        failed = await f.probe()
    finally:
        remove()
    assert not failed.ok
    assert failed.error is not None
    assert "timeout" in failed.error.lower() or "timed out" in failed.error
    assert f.adapter.health()["last_probe"]["ok"] is False
    assert (await f.probe()).ok
    assert f.outcomes == []  # probes are not operations


async def test_slow_calls_trip_the_breaker(
    redis_server: RedisServer, redis_proxy: ThreadedFaultProxy, adapters: Factory
) -> None:
    config = BreakerConfig(
        consecutive_failures=None,
        slow_call_rate=0.5,
        slow_call_duration=0.1,
        window_size=4,
        minimum_calls=4,
        open_for=OPEN_FOR,
    )
    f = adapters(redis_server.url_for(port=redis_proxy.port), config=config, socket_timeout=2.0)
    k = key()
    assert await f("set", k, "v") is True  # connect while the proxy is fast
    redis_proxy.set_mode(Mode.LATENCY, downstream_delay=0.15)
    try:
        replies = []
        while state(f) is State.CLOSED:
            replies.append(await f("get", k))
            assert len(replies) <= 4
        assert replies and set(replies) == {b"v"}  # slow, but every call succeeded
        snap = f.adapter.breaker.snapshot()
        assert snap.state is State.OPEN and snap.slow_calls >= 2
        before = settled(redis_proxy)
        with pytest.raises(BreakerOpen):
            await f("get", k)
        after = settled(redis_proxy)
        assert (after.connections_total, after.bytes_up) == (
            before.connections_total,
            before.bytes_up,
        )
    finally:
        redis_proxy.set_mode(Mode.PASS)
    await aeventually(lambda: state(f) is State.HALF_OPEN, what="half-open")
    assert await f("get", k) == b"v"
    assert state(f) is State.CLOSED


async def test_pool_exhaustion_counts(
    private: tuple[RedisServer, ThreadedFaultProxy], adapters: Factory
) -> None:
    """With the only pooled connection stuck on a paused server, the next call fails at once."""
    if not hasattr(redis.exceptions, "MaxConnectionsError"):
        pytest.skip("redis-py < 6 reports pool exhaustion as a plain ConnectionError")
    server, proxy = private
    f = adapters(
        server.url_for(port=proxy.port),
        max_connections=1,
        socket_timeout=1.0,
        config=fault_config(consecutive_failures=1),
    )
    assert await f("ping") is True
    server.pause()
    try:
        # hold the pool's only connection: a thread for the sync adapter, a task for async
        stuck = asyncio.ensure_future(
            f("get", "k")
            if isinstance(f.adapter, AsyncRedisAdapter)
            else asyncio.to_thread(f.adapter.get, "k")
        )
        await aeventually(lambda: f.adapter.extra_figures()["pool_in_use"] == 1, what="a busy pool")
        with pytest.raises(redis.exceptions.MaxConnectionsError):
            await f("get", "k")
        with pytest.raises(redis.exceptions.RedisError):
            await stuck
    finally:
        server.resume()
    assert f.adapter.breaker.snapshot().total_failures >= 1
    assert "pool_exhausted" in {e.error_kind for e in f.events}


# -- secrets ----------------------------------------------------------------------------


async def test_password_never_appears(
    private: tuple[RedisServer, ThreadedFaultProxy],
    adapters: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, proxy = private
    with redis.Redis(host=server.host, port=server.port) as direct:
        direct.config_set("requirepass", SECRET)
    url = f"redis://:{SECRET}@{proxy.host}:{proxy.port}/0"
    f = adapters(url, config=fault_config())
    texts: list[str] = [repr(f.adapter)]

    k = key()
    assert await f("set", k, "v") is True  # the password works
    assert (await f.probe()).ok

    proxy.set_mode(Mode.RESET)
    try:
        while state(f) is State.CLOSED:
            with pytest.raises(redis.exceptions.RedisError) as info:
                await f("get", k)
            texts += [str(info.value), repr(info.value)]
        with pytest.raises(BreakerOpen) as rejected:
            await f("get", k)
        texts += [str(rejected.value), repr(rejected.value)]
        texts.append(repr(await f.probe()))
    finally:
        proxy.set_mode(Mode.PASS)

    # a wrong password: counted (nothing will work), flagged, and not echoed either
    wrong = adapters(f"redis://:{SECRET}-wrong@{proxy.host}:{proxy.port}/0", config=fault_config())
    with pytest.raises(redis.exceptions.AuthenticationError) as denied:
        await wrong("get", k)
    texts += [str(denied.value), repr(denied.value), repr(await wrong.probe())]
    wrong_health = wrong.adapter.health()
    assert wrong_health["credentials_problem"] is not None
    assert wrong.events[-1].error_kind == "auth" and wrong.events[-1].outcome == "failure"

    texts += [repr(f.adapter.health()), repr(wrong_health), caplog.text, repr(f.events)]
    texts += [r.getMessage() for r in caplog.records]
    assert "breaker 'redis': closed -> open" in caplog.text  # the logs were captured
    for text in texts:
        assert SECRET not in text


# -- packaging --------------------------------------------------------------------------


def test_docstring_examples() -> None:
    result = doctest.testmod(brownout_redis, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_core_does_not_import_redis_and_the_hint_names_the_extra() -> None:
    code = (
        "import sys, brownout, brownout.adapter\n"
        "assert 'redis' not in sys.modules, 'core imported redis'\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    import brownout.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'brownout[redis]'" in out.stdout


def test_the_docs_list_every_rule() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "adapters" / "redis.md").read_text()
    for _name, counts, kind, why in REDIS_ERRORS.rows():
        assert f"| {counts} | `{kind}` | {why} |" in docs, why


def test_client_settings_disable_retries() -> None:
    settings = RedisAdapter.client_settings()
    assert settings["max_connections"] == 50
    assert settings["socket_timeout"] == settings["socket_connect_timeout"] == 0.5
    assert settings["retry"].get_retries() == 0
    assert AsyncRedisAdapter.client_settings(socket_timeout=2)["socket_timeout"] == 2
    assert isinstance(AsyncRedisAdapter.client_settings()["retry"], redis.asyncio.retry.Retry)
    assert not isinstance(RedisAdapter.client_settings()["retry"], redis.asyncio.retry.Retry)


async def test_from_url_gives_adapter_options_to_the_adapter_and_the_rest_to_redis_py(
    flavour: str,
) -> None:
    cls = RedisAdapter if flavour == "sync" else AsyncRedisAdapter
    adapter = cls.from_url(
        "redis://:pw-in-url@127.0.0.1:1/0",  # nothing listens: no connection is made
        name="sessions",
        secrets=["tok-123"],
        recent_operations=7,
        probe_timeout=0.25,
        record_keys=False,
        decode_responses=True,
    )
    kwargs = adapter.client.connection_pool.connection_kwargs
    assert kwargs["decode_responses"] is True
    assert not {"name", "secrets", "recent_operations", "probe_timeout"} & set(kwargs)
    assert (adapter.name, adapter.probe_timeout, adapter.record_keys) == ("sessions", 0.25, False)
    assert adapter.stats.recent_size == 7
    assert {"tok-123", "pw-in-url"} <= set(adapter._secrets)
    assert adapter._owns_client
    if isinstance(adapter, AsyncRedisAdapter):
        async with adapter:
            pass
    else:
        with adapter:
            pass
