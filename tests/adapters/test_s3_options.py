"""S3 timeouts and retries that change (``use_options``): one botocore client per setting,
against moto behind the fault proxy, sync and async (issue 14 item 7)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ReadTimeoutError

from brownout import BreakerConfig
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.overload import RetryBudget
from brownout.s3 import AsyncS3Adapter, S3Adapter
from brownout.testing import aeventually
from brownout.testing.servers.s3 import S3Server
from tests.adapters.test_s3 import async_adapter, sync_adapter

# the breaker stays closed: the client's timeouts and retries are under test
PATIENT = BreakerConfig(consecutive_failures=10_000, failure_rate=None)

# a healthy moto answers well within SHORT on a loaded machine; the proxy's delay is
# well above it and well below LONG
SHORT, DELAY, LONG = 1.0, 2.5, 5.0


async def call(fn: Callable[[], Any]) -> Any:
    result = fn()
    return await result if inspect.isawaitable(result) else result


def make(flavour: str, url: str, bucket: str, **options: Any) -> Any:
    options.setdefault("config", PATIENT)
    build = sync_adapter if flavour == "sync" else async_adapter
    return build(url, bucket, **options)


def pools(client: Any) -> int:
    """The connection pools a botocore (urllib3) or aiobotocore (aiohttp) client has open."""
    http = client._endpoint.http_session
    manager = getattr(http, "_manager", None)
    if manager is not None:
        return len(manager.pools)
    return len(http._sessions or ())


async def close(adapter: Any) -> None:
    await call(adapter.aclose if isinstance(adapter, AsyncS3Adapter) else adapter.close)


async def test_a_slow_answer_times_out_at_one_setting_and_is_answered_at_a_longer_one(
    flavour: str, s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    s3 = make(flavour, url, fresh_bucket, read_timeout=SHORT)
    try:
        await call(lambda: s3.upload("k", b"v"))
        short = s3.client
        assert s3.client_options == {
            "connect_timeout": 1.0,
            "read_timeout": SHORT,
            "max_retries": 0,
        }
        s3_proxy.set_mode(Mode.LATENCY, downstream_delay=DELAY)
        with pytest.raises(ReadTimeoutError):
            await call(lambda: s3.download("k"))
        s3.use_options(read_timeout=LONG)
        assert s3.client_options["read_timeout"] == LONG
        assert await call(lambda: s3.download("k")) == b"v"
        long = s3.client
        assert long is not short and long.meta.config.read_timeout == LONG
        # back to the first setting: its client again, no new one
        s3.use_options(read_timeout=SHORT)
        with pytest.raises(ReadTimeoutError):
            await call(lambda: s3.download("k"))
        assert s3.client is short
        s3.use_options()  # the client as built
        assert s3.client is short
        s3.use_options(read_timeout=LONG)
        assert s3.client is long
    finally:
        s3_proxy.set_mode(Mode.PASS)
        await close(s3)


async def test_retries_follow_the_setting_and_ask_the_budget(
    flavour: str, s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    """botocore's retries of every client the adapter builds are counted by (and ask)
    the adapter's retry budget: a failing S3 is asked 3 times per call with 2 retries,
    once with none."""
    budget = RetryBudget("s3", ratio=1.0, floor=100.0)
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    s3 = make(flavour, url, fresh_bucket, retry_budget=budget)
    try:
        await call(lambda: s3.upload("k", b"v"))
        s3_proxy.set_mode(Mode.RESET)
        attempts = []
        for retries in (2, 0, 1):
            s3.use_options(max_retries=retries)
            s3_proxy.reset_stats()
            before = budget.snapshot()
            for _ in range(2):
                with pytest.raises(BotoCoreError):
                    await call(lambda: s3.download("k"))
            assert s3.client.meta.config.retries["total_max_attempts"] == retries + 1
            after = budget.snapshot()
            assert after.requests - before.requests == 2, retries
            assert (after.allowed - before.allowed, after.denied) == (2 * retries, 0), retries
            attempts.append(s3_proxy.stats.connections_total)
        if flavour == "sync":
            assert attempts == [6, 2, 4]
        else:  # aiohttp itself may connect twice for one attempt (a reset on a reused one)
            assert all(n <= a <= 2 * n for n, a in zip((6, 2, 4), attempts, strict=True))
    finally:
        s3_proxy.set_mode(Mode.PASS)
        await close(s3)


async def test_every_client_is_closed_with_the_adapter(
    flavour: str, s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    s3 = make(flavour, url, fresh_bucket)
    await call(lambda: s3.upload("k", b"v"))
    clients: dict[int, Any] = {}
    for timeout in (1.0, 2.0, 3.0, 2.0, 1.0):
        s3.use_options(read_timeout=timeout)
        assert await call(lambda: s3.download("k")) == b"v"
        clients[id(s3.client)] = s3.client
    assert len(clients) == 3  # one per distinct setting
    assert all(pools(c) > 0 for c in clients.values())  # each has talked to S3
    assert s3.extra_figures()["pool_in_use"] == 0
    await close(s3)
    assert [pools(c) for c in clients.values()] == [0, 0, 0]  # every pool closed
    await aeventually(lambda: s3_proxy.stats.active == 0, what="every client's socket closed")
    connections = s3_proxy.stats.connections_total
    s3.use_options(read_timeout=5.0)  # after close: builds (opens) nothing
    if flavour == "async":
        assert s3.client is None
        with pytest.raises(RuntimeError, match="closed"):
            await s3.download("k")
    assert s3_proxy.stats.connections_total == connections


async def test_a_call_in_flight_finishes_on_the_client_it_started_on(
    s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    s3 = make("async", url, fresh_bucket, read_timeout=LONG)
    try:
        await s3.upload("k", b"v")
        s3_proxy.set_mode(Mode.LATENCY, downstream_delay=DELAY)
        slow = asyncio.create_task(s3.download("k"))
        await aeventually(lambda: s3.extra_figures()["pool_in_use"] == 1, what="in flight")
        s3.use_options(read_timeout=SHORT)  # the level changes while it waits for S3
        assert await slow == b"v"  # not cut at SHORT: it keeps its client's LONG
        with pytest.raises(ReadTimeoutError):
            await s3.download("k")  # a call started now has SHORT
    finally:
        s3_proxy.set_mode(Mode.PASS)
        await s3.aclose()


async def test_the_probe_keeps_the_client_as_built(
    flavour: str, s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    """The probe asks once (no retries of the setting's) and is not counted by the
    budget: it tells the health of S3, not of a retry loop."""
    budget = RetryBudget("s3", ratio=1.0, floor=100.0)
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    s3 = make(flavour, url, fresh_bucket, retry_budget=budget)
    try:
        await call(lambda: s3.upload("k", b"v"))
        s3.use_options(max_retries=3)
        s3_proxy.set_mode(Mode.RESET)
        s3_proxy.reset_stats()
        result = await call(s3.probe if flavour == "sync" else s3.aprobe)
        assert not result.ok
        assert budget.snapshot().allowed == 0
        assert s3_proxy.stats.connections_total <= 2  # one attempt (aiohttp: one reconnect)
    finally:
        s3_proxy.set_mode(Mode.PASS)
        await close(s3)


@pytest.mark.parametrize("cls", [S3Adapter, AsyncS3Adapter])
def test_use_options_rejects_bad_values_naming_them(cls: Any) -> None:
    s3 = cls.create("b", endpoint_url="http://127.0.0.1:9", aws_access_key_id="a")
    try:
        for kwargs, error, words in (
            ({"read_timeout": 0}, ValueError, "read_timeout must be > 0 seconds"),
            ({"connect_timeout": float("inf")}, ValueError, "connect_timeout must be > 0"),
            ({"read_timeout": "5"}, TypeError, "read_timeout must be a number"),
            ({"max_retries": -1}, ValueError, "max_retries must be an integer >= 0"),
            ({"max_retries": True}, ValueError, "max_retries must be an integer >= 0"),
        ):
            with pytest.raises(error, match=words):
                s3.use_options(**kwargs)
        assert s3.client_options["read_timeout"] == 5.0  # unchanged
    finally:
        if cls is S3Adapter:
            s3.close()


def test_use_options_needs_an_adapter_made_by_create(
    s3_server: S3Server, fresh_bucket: str
) -> None:
    client = s3_server.client()
    try:
        s3 = S3Adapter(client, fresh_bucket)
        assert s3.client_options is None
        with pytest.raises(TypeError, match="made by create"):
            s3.use_options(read_timeout=2.0)
    finally:
        client.close()


def test_a_setting_keeps_the_rest_of_the_adapters_config() -> None:
    """Only the timeouts and the number of attempts change: the retry mode, the pool and
    the addressing style stay those the adapter was built with (no network here)."""
    from botocore.config import Config

    s3 = S3Adapter.create(
        "b",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="a",
        aws_secret_access_key="s",
        max_pool_connections=3,
        botocore_config=Config(retries={"mode": "adaptive", "max_attempts": 5}),
    )
    try:
        assert s3.client_options == {"connect_timeout": 1.0, "read_timeout": 5.0, "max_retries": 5}
        built = s3.client
        s3.use_options(read_timeout=9.0, max_retries=1)
        config = s3.client.meta.config
        assert s3.client is not built
        assert (config.connect_timeout, config.read_timeout) == (1.0, 9.0)
        assert config.retries == {"mode": "adaptive", "total_max_attempts": 2}
        assert config.max_pool_connections == 3 and config.s3 == {"addressing_style": "path"}
        s3.use_options(read_timeout=5.0, max_retries=5)  # the setting as built
        assert s3.client is built
    finally:
        s3.close()
