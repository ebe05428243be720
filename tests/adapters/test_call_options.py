"""Settings that change after an adapter is built (inventario: on each change of
degradation level): the OpenAI SDK's timeout and retries (``use_options``) against the
OpenAI stub, Redis's socket timeout (``set_socket_timeout``) against a real Redis behind
the fault proxy."""

from __future__ import annotations

import openai
import pytest
import redis.exceptions as rex

from brownout import BreakerConfig, Registry
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.openai import AsyncOpenAIAdapter
from brownout.overload import RetryBudget
from brownout.redis import AsyncRedisAdapter
from brownout.testing.servers.openai_stub import OpenAIStub
from tests.servers.plugin import RedisServer

LENIENT = BreakerConfig(consecutive_failures=100, open_for=1.0, half_open_calls=1)
HELLO = [{"role": "user", "content": "hi"}]
# the SDK waits Retry-After before a retry: 10 ms keeps the test fast
QUICK_RETRY = {"retry-after-ms": "10"}


def _ai(stub: OpenAIStub, **kw: object) -> AsyncOpenAIAdapter:
    return AsyncOpenAIAdapter(
        api_key="sk-test-options",
        base_url=stub.base_url,
        registry=Registry(),
        config=LENIENT,
        **kw,  # type: ignore[arg-type]
    )


def _chat_requests(stub: OpenAIStub) -> int:
    return sum(1 for r in stub.requests if r.path.endswith("/chat/completions"))


async def test_openai_timeout_and_retries_change_what_the_sdk_does(
    openai_stub: OpenAIStub,
) -> None:
    ai = _ai(openai_stub, timeout=5.0)
    try:
        built = ai.client
        assert built.max_retries == 0
        # a 0.2 s timeout gives up on a 0.6 s answer; 2 s waits for it
        ai.use_options(timeout=0.2, max_retries=0)
        openai_stub.hang(0.6, path="/chat/completions")
        with pytest.raises(openai.APITimeoutError):
            await ai.chat(HELLO)
        ai.use_options(timeout=2.0, max_retries=0)
        openai_stub.hang(0.6, path="/chat/completions")
        assert (await ai.chat(HELLO)).choices
        # retries: 2 means three attempts at a failing API, 0 means one
        for retries, attempts in ((2, 3), (0, 1), (1, 2)):
            openai_stub.reset()
            openai_stub.script(500, headers=QUICK_RETRY, times=None, path="/chat/completions")
            ai.use_options(timeout=2.0, max_retries=retries)
            with pytest.raises(openai.InternalServerError):
                await ai.chat(HELLO)
            assert _chat_requests(openai_stub) == attempts, retries
        # one copy per setting: back to an earlier one is the same client
        first = ai.client
        ai.use_options(timeout=0.2, max_retries=0)
        ai.use_options(timeout=2.0, max_retries=1)
        assert ai.client is first
        ai.use_options()  # as built
        assert ai.client is built
        with pytest.raises(ValueError, match="max_retries must be an integer >= 0, got -1"):
            ai.use_options(max_retries=-1)
        with pytest.raises(ValueError, match="timeout must be > 0 seconds, got 0"):
            ai.use_options(timeout=0)
    finally:
        await ai.aclose()


async def test_openai_retries_set_later_still_ask_the_retry_budget(
    openai_stub: OpenAIStub,
) -> None:
    # no share of requests, 0.1 retries a second: one retry in the 10 s window, no more
    budget = RetryBudget("openai", ratio=0.0, floor=0.1)
    ai = _ai(openai_stub, retry_budget=budget)
    try:
        ai.use_options(max_retries=3)
        openai_stub.script(500, headers=QUICK_RETRY, times=None, path="/chat/completions")
        with pytest.raises(openai.InternalServerError):
            await ai.chat(HELLO)
        assert _chat_requests(openai_stub) == 2  # the first attempt and the one retry allowed
    finally:
        await ai.aclose()


async def test_redis_socket_timeout_changes_for_open_and_new_connections(
    redis_server: RedisServer, redis_proxy: ThreadedFaultProxy
) -> None:
    cache = AsyncRedisAdapter.from_url(
        redis_server.url_for(port=redis_proxy.port), registry=Registry(), config=LENIENT
    )
    try:
        assert await cache.set("levels:k", "v") is True  # a pooled connection, 0.5 s
        redis_proxy.set_mode(Mode.LATENCY, downstream_delay=0.7)
        with pytest.raises((rex.TimeoutError, TimeoutError)):
            await cache.get("levels:k")
        cache.set_socket_timeout(2.0)
        pool = cache.client.connection_pool
        assert pool.connection_kwargs["socket_timeout"] == 2.0
        assert all(c.socket_timeout == 2.0 for c in pool._available_connections)
        assert await cache.get("levels:k") == b"v"  # 0.7 s late, within 2 s
        cache.set_socket_timeout(0.3)
        with pytest.raises((rex.TimeoutError, TimeoutError)):
            await cache.get("levels:k")
        with pytest.raises(ValueError, match="seconds must be > 0, got 0"):
            cache.set_socket_timeout(0)
    finally:
        redis_proxy.set_mode(Mode.PASS)
        await cache.aclose()
