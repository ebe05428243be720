"""Issue 14 item 4 at the documented defaults, against a real server: an API that refuses
every request (the OpenAI stub answering 429 to all), 60 calls through an adapter whose
SDK would retry each one 3 times: with the default budget's ratio (20 % of the requests
over 10 s; the floor set to 0 here so the ratio is what is seen) the stub receives at most
the 60 first attempts plus 20 % of them, not 240 requests, and Prometheus counts the
retries made and refused. The budget's clock is fake: all of it happens within its window."""

from __future__ import annotations

import openai
import pytest

from brownout import BreakerConfig
from brownout.openai import AsyncOpenAIAdapter
from brownout.overload import RetryBudget
from brownout.prometheus import PrometheusMetrics
from brownout.testing import FakeClock
from brownout.testing.servers.openai_stub import OpenAIStub

CALLS = 60
RATIO = 0.2  # RetryBudget's default


async def test_an_outage_never_turns_into_a_retry_storm(openai_stub: OpenAIStub) -> None:
    budget = RetryBudget("openai", ratio=RATIO, floor=0.0, clock=FakeClock())
    assert budget.window == 10.0  # the default window the figures are for
    adapter = AsyncOpenAIAdapter(
        base_url=openai_stub.base_url,
        api_key="sk-test-storm",
        timeout=5.0,
        max_retries=3,
        retry_budget=budget,
        # the breaker stays closed: the retries, not the breaker, are under test
        config=BreakerConfig(consecutive_failures=10_000, failure_rate=None),
    )
    metrics = PrometheusMetrics()
    metrics.attach(budget)
    openai_stub.script(429, headers={"retry-after-ms": "1"}, times=None)
    try:
        for _ in range(CALLS):
            with pytest.raises(openai.RateLimitError):
                await adapter.chat([{"role": "user", "content": "hi"}])
    finally:
        await adapter.aclose()
    sent = len(openai_stub.requests)
    made = sent - CALLS
    # at most 20 % more load than the callers asked for (the SDK alone: 4 x 60 = 240)
    assert CALLS < sent <= CALLS * (1 + RATIO), sent
    snap = budget.snapshot()
    assert snap.requests == CALLS and snap.allowed == made
    # calls one after another: each retry is allowed once 20 % of the requests so far pay
    # for it, so the 60 calls earn exactly 12; every other failure's retry was refused
    assert made == round(CALLS * RATIO)
    assert 0 < snap.denied <= CALLS
    value = metrics.registry.get_sample_value
    retries = "brownout_retry_budget_retries_total"
    assert value("brownout_retry_budget_requests_total", {"name": "openai"}) == CALLS
    assert value(retries, {"name": "openai", "outcome": "made"}) == made
    assert value(retries, {"name": "openai", "outcome": "refused"}) == snap.denied > 0
