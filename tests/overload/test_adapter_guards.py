"""Every adapter (redis, s3, sql, openai; sync and async) takes bulkhead= / throttle=,
against real servers: a full bulkhead refuses with BulkheadFull (retry_after), the
refusal is recorded, the bulkhead's saturation feeds the manager, registry presets
set the guards, and an adapter without guards keeps the class's lean methods."""

from __future__ import annotations

import inspect
import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from brownout import BreakerConfig, BrownoutError, Registry
from brownout.adapter import Adapter
from brownout.health import Component
from brownout.openai import AsyncOpenAIAdapter, OpenAIAdapter
from brownout.overload import (
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFull,
    Gradient2,
    GuardPreset,
    Guards,
    RetryBudget,
    Throttled,
)
from brownout.redis import AsyncRedisAdapter, RedisAdapter
from brownout.s3 import AsyncS3Adapter, S3Adapter
from brownout.sql import AsyncDatabase, Database
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server

KINDS = ["redis", "s3", "sql", "openai"]
Op = Callable[[], Any]


async def run(op: Op) -> Any:
    result = op()
    if inspect.isawaitable(result):
        result = await result
    return result


@pytest.fixture
async def build(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str, str], tuple[Adapter, Op]]]:
    """``build(kind, flavour, **options)`` -> (adapter, one operation), closed after."""
    made: list[Adapter] = []

    def make(kind: str, flavour: str, **options: Any) -> tuple[Adapter, Op]:
        sync = flavour == "sync"
        adapter: Any
        if kind == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            cls = RedisAdapter if sync else AsyncRedisAdapter
            adapter = cls.from_url(server.url, socket_timeout=2.0, **options)
            key = f"guards-{uuid.uuid4().hex}"
            made.append(adapter)
            return adapter, lambda: adapter.get(key)
        if kind == "s3":
            s3: S3Server = request.getfixturevalue("s3_server")
            bucket = request.getfixturevalue("fresh_bucket")
            s3_cls = S3Adapter if sync else AsyncS3Adapter
            adapter = s3_cls.create(
                bucket,
                endpoint_url=s3.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="AKIABROWNOUTTEST",
                aws_secret_access_key="brownout-test-secret",
                **options,
            )
            made.append(adapter)
            return adapter, lambda: adapter.delete("missing-object")
        if kind == "sql":
            if sync:
                db = Database.from_url(f"sqlite:///{tmp_path / 'g.db'}", **options)
                made.append(db)
                return db, lambda: db.scalar("SELECT 1")
            adb = AsyncDatabase.from_url(f"sqlite+aiosqlite:///{tmp_path / 'ga.db'}", **options)
            made.append(adb)
            return adb, lambda: adb.scalar("SELECT 1")
        stub: OpenAIStub = request.getfixturevalue("openai_stub")
        ai_cls = OpenAIAdapter if sync else AsyncOpenAIAdapter
        adapter = ai_cls(base_url=stub.base_url, api_key="sk-test", timeout=5.0, **options)
        made.append(adapter)
        return adapter, lambda: adapter.chat([{"role": "user", "content": "hi"}])

    yield make
    for adapter in made:
        close = getattr(adapter, "aclose", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()
        else:
            adapter.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_bulkhead_refuses_the_call_and_its_saturation_feeds_the_manager(
    build: Callable[..., tuple[Adapter, Op]], kind: str, flavour: str
) -> None:
    bulkhead = Bulkhead(kind, limit=1)
    adapter, op = build(kind, flavour, bulkhead=bulkhead)
    assert adapter.guards.bulkhead is bulkhead
    await run(op)  # a permit taken and given back
    assert bulkhead.snapshot().admitted == 1
    component = Component.of(adapter)
    assert component.saturation is not None
    assert component.saturation() == 0.0
    held = bulkhead.try_acquire()
    assert held is not None
    assert component.saturation() == 1.0
    with pytest.raises(BulkheadFull) as info:
        await run(op)
    assert isinstance(info.value, BrownoutError)
    assert info.value.retry_after is not None and info.value.retry_after >= 0
    outcomes = [o for ops in adapter.stats.operations.values() for o in ops.items()]
    assert ("rejected", 1) in outcomes
    held.release()
    await run(op)
    snap = bulkhead.snapshot()
    assert (snap.in_use, snap.admitted, snap.rejected) == (0, 3, 1)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_throttle_sheds_calls_and_counts_answers_as_accepted(
    build: Callable[..., tuple[Adapter, Op]], kind: str, flavour: str
) -> None:
    draw = [0.99]  # what the throttle's random source answers
    throttle = AdaptiveThrottle(kind, k=2.0, random=lambda: draw[0])
    adapter, op = build(kind, flavour, throttle=throttle)
    await run(op)
    snap = throttle.snapshot()
    assert (snap.requests, snap.accepts) == (1, 1)  # an answer is an accept
    for _ in range(4):  # four calls the dependency refused
        throttle.admit()
        throttle.refused()
    # requests 5 > k * accepts 2: the next call is shed with p = 3 / 6
    draw[0] = 0.49
    with pytest.raises(Throttled) as info:
        await run(op)
    assert isinstance(info.value, BrownoutError)
    outcomes = [o for ops in adapter.stats.operations.values() for o in ops.items()]
    assert ("rejected", 1) in outcomes
    assert throttle.snapshot().total_rejected == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_registry_presets_set_the_guards_shared_by_name(
    build: Callable[..., tuple[Adapter, Op]], kind: str
) -> None:
    registry = Registry.with_defaults(
        guards={kind: GuardPreset(bulkhead=Gradient2, max_wait=0.05, retry_budget=True)}
    )
    a, _ = build(kind, "sync", registry=registry, name=f"{kind}-main")
    b, _ = build(kind, "async", registry=registry, name=f"{kind}-main")
    assert a.guards.bulkhead is not None
    assert a.guards.bulkhead.policy is not None  # adaptive, from the factory
    assert a.guards.bulkhead is b.guards.bulkhead
    assert a.guards.retry_budget is b.guards.retry_budget is not None
    assert a.guards.throttle is None
    # a guard passed to the adapter wins over the preset and is registered for metrics
    own = Bulkhead("own", limit=3)
    c, _ = build(kind, "sync", registry=registry, name=f"{kind}-other", bulkhead=own)
    assert c.guards.bulkhead is own
    assert registry.all_guards()[f"{kind}-other"].bulkhead is own


async def test_an_adapter_without_guards_keeps_the_lean_methods(
    build: Callable[..., tuple[Adapter, Op]],
) -> None:
    plain, _ = build("redis", "sync")
    assert plain.guards == Guards()
    assert "_command" not in vars(plain)
    assert Component.of(plain).saturation is None
    budget_only, _ = build("redis", "sync", retry_budget=RetryBudget("redis"))
    assert "_command" not in vars(budget_only)
    guarded, _ = build("redis", "sync", bulkhead=Bulkhead("r", limit=2))
    assert "_command" in vars(guarded)


def test_a_guard_of_the_wrong_type_is_named() -> None:
    with pytest.raises(TypeError, match=r"bulkhead must be a brownout\.overload\.Bulkhead"):
        RedisAdapter.from_url("redis://127.0.0.1:1", bulkhead=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="GuardPreset"):
        Registry(guards={"redis": {"bulkhead": 3}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"GuardPreset\.bulkhead"):
        GuardPreset(bulkhead=0)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_the_throttle_sheds_the_share_of_calls_openai_answers_429(
    build: Callable[..., tuple[Adapter, Op]], openai_stub: OpenAIStub, flavour: str
) -> None:
    throttle = AdaptiveThrottle("openai", k=2.0, random=random.Random(7).random)
    # a breaker that does not open on its own: the throttle alone is under test
    config = BreakerConfig(consecutive_failures=10_000, failure_rate=None)
    _, op = build("openai", flavour, throttle=throttle, config=config)
    openai_stub.script(429, times=None)
    refused = shed = 0
    for _ in range(60):
        try:
            await run(op)
        except openai.RateLimitError:
            refused += 1
        except Throttled:
            shed += 1
    snap = throttle.snapshot()
    assert refused == len(openai_stub.requests) == snap.total_refused
    assert shed == snap.total_rejected
    assert shed > refused  # most 429s are never sent: p -> (n - 0) / (n + 1)
    assert snap.probability > 0.9
    # the API recovers: calls the throttle lets through are answered and accepted,
    # and the probability falls as accepts come in
    openai_stub.reset()
    answered = 0
    for _ in range(400):
        try:
            await run(op)
        except Throttled:
            continue
        answered += 1
    assert answered > 0
    assert throttle.snapshot().accepts == answered
    assert throttle.probability < snap.probability
