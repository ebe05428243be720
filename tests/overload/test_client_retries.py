"""A retry budget on the clients' own retries, against real servers: with the client's
retries turned on, the retries beyond the budget are not made (the server sees fewer
attempts than without a budget) and the budget counts them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import botocore.config
import botocore.exceptions
import openai
import pytest
import redis.asyncio.retry
import redis.backoff
import redis.exceptions
import redis.retry

from brownout import BreakerConfig
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.openai import AsyncOpenAIAdapter, OpenAIAdapter
from brownout.overload import RetryBudget
from brownout.redis import AsyncRedisAdapter, RedisAdapter
from brownout.s3 import AsyncS3Adapter, S3Adapter
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.s3 import S3Server

# the breaker stays closed: the client's retries are under test
PATIENT = BreakerConfig(consecutive_failures=10_000, failure_rate=None)


def one_retry_budget(name: str) -> RetryBudget:
    """No retries earned by requests; a floor of one retry per 10 s window."""
    return RetryBudget(name, ratio=0.0, floor=0.1, window=10.0)


async def call(fn: Callable[[], Any]) -> Any:
    result = fn()
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_redis_retries_beyond_the_budget_are_not_made(
    redis_proxy: ThreadedFaultProxy, flavour: str
) -> None:
    url = f"redis://{redis_proxy.host}:{redis_proxy.port}"

    async def attempts(budget: RetryBudget | None) -> int:
        sync = flavour == "sync"
        retry_cls = redis.retry.Retry if sync else redis.asyncio.retry.Retry
        cls = RedisAdapter if sync else AsyncRedisAdapter
        adapter: Any = cls.from_url(
            url,
            retry=retry_cls(redis.backoff.NoBackoff(), 3),
            retry_budget=budget,
            config=PATIENT,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )
        try:
            await call(lambda: adapter.ping())  # connected while the proxy passes
            redis_proxy.set_mode(Mode.RESET)
            redis_proxy.reset_stats()
            for _ in range(3):
                with pytest.raises(redis.exceptions.ConnectionError):
                    await call(lambda: adapter.get("k"))
            return redis_proxy.stats.connections_total
        finally:
            redis_proxy.set_mode(Mode.PASS)
            close = getattr(adapter, "aclose", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()
            else:
                adapter.close()

    unbudgeted = await attempts(None)
    budget = one_retry_budget("redis")
    budgeted = await attempts(budget)
    snap = budget.snapshot()
    assert snap.allowed == 1  # the one retry the floor allows
    assert snap.denied >= 3  # every later failure's retry was refused
    assert budgeted < unbudgeted
    assert snap.requests >= 3  # first attempts: three calls (and their reconnects)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_openai_sdk_retries_beyond_the_budget_are_not_made(
    openai_stub: OpenAIStub, flavour: str
) -> None:
    budget = one_retry_budget("openai")
    cls = OpenAIAdapter if flavour == "sync" else AsyncOpenAIAdapter
    adapter: Any = cls(
        base_url=openai_stub.base_url,
        api_key="sk-test",
        timeout=5.0,
        max_retries=3,
        retry_budget=budget,
        config=PATIENT,
    )
    try:
        # 429 with a 10 ms Retry-After: the SDK would retry each call 3 times
        openai_stub.script(429, headers={"retry-after-ms": "10"}, times=None)
        for _ in range(3):
            with pytest.raises(openai.RateLimitError):
                await call(lambda: adapter.chat([{"role": "user", "content": "hi"}]))
        # 3 first attempts + the 1 retry the budget allowed (not 3 x 4 = 12)
        assert len(openai_stub.requests) == 4
        snap = budget.snapshot()
        assert (snap.requests, snap.allowed, snap.denied) == (3, 1, 3)
        # the SDK's retries still work within the budget: a 429 then a 200
        openai_stub.reset()
        budget_ok = RetryBudget("openai-ok", ratio=1.0)
        ok: Any = cls(
            base_url=openai_stub.base_url,
            api_key="sk-test",
            timeout=5.0,
            max_retries=3,
            retry_budget=budget_ok,
            config=PATIENT,
        )
        openai_stub.script(429, headers={"retry-after-ms": "10"}, times=1)
        await call(lambda: ok.chat([{"role": "user", "content": "hi"}]))
        assert len(openai_stub.requests) == 2
        assert budget_ok.snapshot().allowed == 1
        await call(ok.aclose if flavour == "async" else ok.close)
    finally:
        await call(adapter.aclose if flavour == "async" else adapter.close)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_botocore_retries_beyond_the_budget_are_not_made(
    s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str, flavour: str
) -> None:
    budget = one_retry_budget("s3")
    cls = S3Adapter if flavour == "sync" else AsyncS3Adapter
    adapter: Any = cls.create(
        fresh_bucket,
        endpoint_url=f"http://{s3_proxy.host}:{s3_proxy.port}",
        region_name="us-east-1",
        aws_access_key_id="AKIABROWNOUTTEST",
        aws_secret_access_key="brownout-test-secret",
        connect_timeout=2.0,
        read_timeout=2.0,
        # botocore's own retries on: 4 attempts per call
        botocore_config=botocore.config.Config(
            retries={"total_max_attempts": 4, "mode": "standard"}
        ),
        retry_budget=budget,
        config=PATIENT,
    )
    try:
        await call(lambda: adapter.upload("k", b"v"))  # through the proxy while it passes
        s3_proxy.set_mode(Mode.RESET)
        s3_proxy.reset_stats()
        for _ in range(3):
            with pytest.raises(botocore.exceptions.BotoCoreError):
                await call(lambda: adapter.download("k"))
        attempts = s3_proxy.stats.connections_total
    finally:
        s3_proxy.set_mode(Mode.PASS)
        await call(adapter.aclose if flavour == "async" else adapter.close)
    snap = budget.snapshot()
    assert snap.requests == 4  # the upload and the three downloads
    # one retry made; then each failed attempt's retry refused (the first call's second
    # attempt, and the other two calls' first)
    assert (snap.allowed, snap.denied) == (1, 3)
    if flavour == "sync":
        assert attempts == 3 + 1  # not 3 x 4
    else:  # aiohttp itself reconnects once when a pooled connection turns out dead
        assert 3 + 1 <= attempts <= 3 + 1 + 3 < 3 * 4
