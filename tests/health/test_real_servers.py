"""The degradation scenarios once more, end to end: real adapters, real servers, real faults.

A :class:`DegradationManager` watches the four real adapters (Redis, PostgreSQL through
asyncpg, moto S3, the OpenAI stub), each reached through a fault proxy. Faults are real:
a SIGSTOPped or killed redis-server, a stopped PostgreSQL, a proxy that resets or
refuses, an API answering 500. Levels change because breakers really open; recovery
happens because the manager's probes really succeed and the breaker's half-open trial
call really goes through.

Breakers open after 2 failures and stay open for a minute, so every recovery here is the
manager's doing (a successful probe ends the break early), never the break running out.
Recovery needs ``DWELL`` seconds per level and enough good traffic to wash out the
failures from the recent success rate: the tests drive a small workload meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import openai
import pytest
from tools.stack import service_settings

from brownout import BreakerConfig, Registry, State, StateChange
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.health import Component, DegradationManager, Level
from brownout.openai import AsyncOpenAIAdapter
from brownout.redis import AsyncRedisAdapter
from brownout.s3 import AsyncS3Adapter
from brownout.sql import AsyncDatabase
from brownout.testing import aeventually
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.postgres import PostgresServer
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server

#: Trip fast, and never half-open by the clock within a test: only a probe ends a break.
CONFIG = BreakerConfig(consecutive_failures=2, open_for=60.0, half_open_calls=1)
DWELL = 0.3
TIMEOUT = 0.5  # Redis socket timeouts (a paused Redis costs this per call)
HTTP_TIMEOUT = 2.0  # S3 and OpenAI: moto and the stub share this process's GIL
#: p95 latency targets above the timeouts: first connections on a busy CI machine are slow,
#: and the scores asserted here are about failures, not speed
LATENCY_TARGET = 3.0
EVENTUALLY = 20.0
MESSAGES = [{"role": "user", "content": "ping"}]
BREAKER_OF = {"database": "database", "cache": "redis", "openai": "openai", "s3": "s3"}


@dataclass
class Stack:
    """The four adapters, the manager over them, and everything that happened."""

    db: AsyncDatabase
    cache: AsyncRedisAdapter
    s3: AsyncS3Adapter
    ai: AsyncOpenAIAdapter
    registry: Registry
    manager: DegradationManager
    changes: list[StateChange] = field(default_factory=list)

    def level(self) -> Level:
        """The manager's level (a call: type checkers must not narrow it across awaits)."""
        return self.manager.level

    def breaker_state(self, component: str) -> State:
        return self.registry.get(BREAKER_OF[component]).state

    def transitions_of(self, component: str) -> list[tuple[State, State, str]]:
        name = BREAKER_OF[component]
        return [(c.from_state, c.to_state, c.trigger) for c in self.changes if c.breaker == name]

    async def call(self, component: str) -> bool:
        """One real operation on ``component``; True if it succeeded."""
        op: Callable[[], Awaitable[object]] = {
            "database": lambda: self.db.scalar("SELECT 1"),
            "cache": lambda: self.cache.get("brownout:health-e2e"),
            "s3": lambda: self.s3.head("marker.txt"),
            "openai": lambda: self.ai.chat(MESSAGES),
        }[component]
        try:
            await op()
        except Exception:
            return False
        return True

    async def traffic(self) -> None:
        """One call to every dependency (failures are expected while something is down)."""
        await asyncio.gather(*(self.call(name) for name in BREAKER_OF))

    async def trip(self, *components: str) -> None:
        """Call the failing components until their breakers open (real failures)."""

        async def one(component: str) -> None:
            for _ in range(10):
                if self.breaker_state(component) is State.OPEN:
                    return
                await self.call(component)
            assert self.breaker_state(component) is State.OPEN, f"{component} did not trip"

        await asyncio.gather(*(one(c) for c in components))

    async def run_until(
        self,
        done: Callable[[], bool],
        what: str,
        *,
        tick: bool = True,
        traffic: bool = True,
        limit: float = EVENTUALLY,
    ) -> None:
        """Drive traffic (unless told not to) and the manager's heartbeat (unless it runs
        by itself) until done."""

        async def step() -> None:
            if not done():
                if traffic:
                    await self.traffic()
                if tick:
                    await self.manager.tick()
            assert done(), (
                f"level {self.manager.level.name}, explain: {self.manager.explain()['decision']}"
            )

        await aeventually(step, timeout=limit, what=what)

    def levels(self) -> list[tuple[Level, Level]]:
        return [(t.from_level, t.to_level) for t in self.manager.history]


@pytest.fixture
def dwell() -> float:
    """How long a level must hold before recovering (a test may parametrize it)."""
    return DWELL


@pytest.fixture
async def stack(
    dwell: float,
    redis_server: RedisServer,
    redis_proxy: ThreadedFaultProxy,
    postgres_server: PostgresServer,
    postgres_proxy: ThreadedFaultProxy,
    s3_server: S3Server,
    s3_proxy: ThreadedFaultProxy,
    fresh_bucket: str,
    openai_stub: OpenAIStub,
    openai_proxy: ThreadedFaultProxy,
) -> AsyncIterator[Stack]:
    registry = Registry()
    # how each server is reached through its fault proxy: the stack builder's settings,
    # as inventario, the demo and the service benchmarks get them
    reach = service_settings(
        redis=(redis_server, redis_proxy),
        database=(postgres_server, postgres_proxy, "postgres"),
        s3=(s3_server, s3_proxy, fresh_bucket),
        openai=(openai_stub, openai_proxy, "sk-health-e2e"),
    )
    db = AsyncDatabase.from_url(
        reach["database_url"],
        connect_timeout=1.0,
        command_timeout=1.0,
        statement_timeout=1.0,
        pool_timeout=1.0,
        config=CONFIG,
        registry=registry,
        probe_timeout=1.0,
    )
    cache = AsyncRedisAdapter.from_url(
        reach["redis_url"],
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        probe_timeout=TIMEOUT,
        config=CONFIG,
        registry=registry,
    )
    s3 = AsyncS3Adapter.create(
        reach["s3_bucket"],
        endpoint_url=reach["s3_endpoint_url"],
        region_name=reach["s3_region"],
        aws_access_key_id=reach["s3_access_key_id"],
        aws_secret_access_key=reach["s3_secret_access_key"],
        connect_timeout=HTTP_TIMEOUT,
        read_timeout=HTTP_TIMEOUT,
        config=CONFIG,
        registry=registry,
        probe_timeout=HTTP_TIMEOUT,
    )
    ai = AsyncOpenAIAdapter(
        api_key=reach["openai_api_key"],
        base_url=reach["openai_base_url"],
        timeout=openai.Timeout(HTTP_TIMEOUT, connect=HTTP_TIMEOUT),
        config=CONFIG,
        registry=registry,
        probe_timeout=HTTP_TIMEOUT,
    )
    manager = DegradationManager(
        [
            Component.of(db, "database", latency_target=LATENCY_TARGET),
            Component.of(cache, "cache", latency_target=LATENCY_TARGET),
            Component.of(ai, "openai", latency_target=LATENCY_TARGET),
            Component.of(s3, "s3", latency_target=LATENCY_TARGET),
        ],
        dwell=dwell,
        heartbeat=0.1,
        probe_timeout=2.5,
        probe_backoff=(0.05, 0.3),
    )
    built = Stack(db, cache, s3, ai, registry, manager)
    registry.add_listener(on_state_change=built.changes.append)
    try:
        await s3.upload("marker.txt", b"here")
        await built.traffic()
        await manager.tick()
        assert built.level() is Level.OPTIMAL, manager.explain()
        yield built
    finally:
        await manager.aclose()
        await cache.aclose()
        await ai.aclose()
        await s3.aclose()
        await db.aclose()


# -- faults ---------------------------------------------------------------------------


@dataclass
class Fault:
    component: str
    inject: Callable[[], object]
    remove: Callable[[], object]


def fault(
    name: str,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    s3_proxy: ThreadedFaultProxy,
    openai_stub: OpenAIStub,
) -> Fault:
    if name == "redis paused":
        return Fault("cache", redis_server.pause, redis_server.resume)
    if name == "postgres stopped":
        return Fault("database", postgres_server.stop, postgres_server.start)
    if name == "s3 refused":
        return Fault(
            "s3", lambda: s3_proxy.set_mode(Mode.REFUSE), lambda: s3_proxy.set_mode(Mode.PASS)
        )
    assert name == "openai 500s"
    return Fault("openai", lambda: openai_stub.script(500, times=None), openai_stub.reset)


ALONE = [
    # fault, expected level, system score (weights 0.4/0.2/0.2/0.1), dependency rule applied
    ("redis paused", Level.DEGRADED, 77.78, "cache down alone => at least DEGRADED"),
    ("openai 500s", Level.LIMITED, 77.78, "openai down => at least LIMITED"),
    ("postgres stopped", Level.MINIMAL, 55.56, "database down => at least MINIMAL"),
    ("s3 refused", Level.DEGRADED, 88.89, None),
]


@pytest.mark.parametrize(("fault_name", "expected", "score", "rule"), ALONE)
async def test_each_dependency_failing_alone_and_recovering_through_probes(
    stack: Stack,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    s3_proxy: ThreadedFaultProxy,
    openai_stub: OpenAIStub,
    fault_name: str,
    expected: Level,
    score: float,
    rule: str | None,
) -> None:
    f = fault(fault_name, redis_server, postgres_server, s3_proxy, openai_stub)
    others = [name for name in BREAKER_OF if name != f.component]
    # start from a healthy stack: the previous case's dependency may still be recovering
    await stack.run_until(
        lambda: all(c["score"] == 100 for c in stack.manager.explain()["components"]),
        "every component healthy before the fault",
    )
    f.inject()
    try:
        await stack.trip(f.component)
        # a breaker opening degrades at once, to exactly the level the defaults give
        assert stack.level() is expected
        explained = stack.manager.explain()
        assert explained["score"] == pytest.approx(score, abs=0.01), explained["components"]
        assert explained["rule"] == rule
        assert explained["down"] == [f.component]
        views = {v["name"]: v for v in explained["components"]}
        assert views[f.component]["score"] == 0.0
        # the others are still working, and still healthy: nothing is marked down by proxy
        for name in others:
            assert await stack.call(name), name
            assert views[name]["score"] == 100.0 and not views[name]["down"], views[name]
        # probes keep failing while it is down: the breaker stays open, the level holds
        await stack.run_until(
            lambda: stack.manager.probe_state(f.component)["failures"] >= 2,
            "two failed probes",
            traffic=False,
        )
        assert stack.breaker_state(f.component) is State.OPEN
        assert stack.level() is expected
        assert stack.manager.probe_state(f.component)["ok"] is False
    finally:
        f.remove()

    await stack.run_until(lambda: stack.level() is Level.OPTIMAL, "recovery to OPTIMAL")
    # the break ended early because a health probe succeeded, then a real call closed it
    assert stack.transitions_of(f.component) == [
        (State.CLOSED, State.OPEN, "consecutive_failures"),
        (State.OPEN, State.HALF_OPEN, "probe"),
        (State.HALF_OPEN, State.CLOSED, "probes_succeeded"),
    ]
    # down at once, back one level at a time, each level held for the dwell time
    levels = stack.levels()
    assert levels[0] == (Level.OPTIMAL, expected)
    assert all(to == frm - 1 for frm, to in levels[1:]), levels
    assert levels[-1][1] is Level.OPTIMAL
    history = stack.manager.history
    for before, after in itertools.pairwise(history):
        assert after.monotonic - before.monotonic >= DWELL
    assert stack.manager.component_outages(f.component)  # the outage was measured


# -- cascades ---------------------------------------------------------------------------


async def test_cache_then_database_names_the_cache_as_root_cause(
    stack: Stack,
    redis_proxy: ThreadedFaultProxy,
    postgres_proxy: ThreadedFaultProxy,
) -> None:
    redis_proxy.set_mode(Mode.RESET)
    try:
        await stack.trip("cache")
        assert stack.level() is Level.DEGRADED
        await asyncio.sleep(0.2)  # well inside the 10 s cascade window
        postgres_proxy.set_mode(Mode.REFUSE)
        await stack.trip("database")
        assert stack.level() is Level.EMERGENCY
        explained = stack.manager.explain()
        # with the default impact matrix the database depends on the cache (cache down =>
        # +30 % load on the database): the cache is the root cause, the database a cascade
        assert explained["root_causes"] == [{"component": "database", "cascade_of": "cache"}]
        assert explained["patterns"][-1]["order"] == ["cache", "database"]
        assert explained["rule"] == "database and 1 more down => at least EMERGENCY"
        loads = {(c["source"], c["target"]): c["expected_extra_load"] for c in explained["cascade"]}
        assert loads[("cache", "database")] == 0.3
        assert stack.manager.history[-1].root_causes == ("cache",)
        views = {v["name"]: v for v in explained["components"]}
        assert views["database"]["cascade_of"] == "cache"
        assert views["cache"]["cascade_of"] is None
    finally:
        redis_proxy.set_mode(Mode.PASS)
        postgres_proxy.set_mode(Mode.PASS)


async def test_database_and_cache_together_is_emergency_and_the_heartbeat_recovers_it(
    stack: Stack,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
) -> None:
    redis_server.kill()
    postgres_server.stop()
    try:
        await stack.trip("database", "cache")
        manager = stack.manager
        assert stack.level() is Level.EMERGENCY
        assert not manager.enabled("inventory_write")
        assert not manager.enabled("read_only_database")
        assert manager.enabled("health_status")
        assert manager.settings.pool_multiplier == 0.2
        assert sorted(manager.explain()["down"]) == ["cache", "database"]
        # one breaker opens a moment before the other: straight down, maybe via DEGRADED
        degrade = stack.levels()
        assert degrade[-1][1] is Level.EMERGENCY
        assert all(to > frm for frm, to in degrade), degrade
    finally:
        redis_server.start()
        postgres_server.start()
    # from here on the manager's own task probes and evaluates
    await stack.manager.start()
    await stack.run_until(lambda: stack.level() is Level.OPTIMAL, "recovery to OPTIMAL", tick=False)
    assert stack.levels()[len(degrade) :] == [
        (Level.EMERGENCY, Level.MINIMAL),
        (Level.MINIMAL, Level.LIMITED),
        (Level.LIMITED, Level.DEGRADED),
        (Level.DEGRADED, Level.OPTIMAL),
    ]
    for component in ("database", "cache"):
        assert (State.OPEN, State.HALF_OPEN, "probe") in stack.transitions_of(component)
        assert stack.breaker_state(component) is State.CLOSED
    assert stack.manager.explain()["recent_transitions"][-1]["to"] == "OPTIMAL"


# -- flapping ---------------------------------------------------------------------------


# a dwell longer than the flapping period: the level must sit the flapping out
@pytest.mark.parametrize("dwell", [1.5])
async def test_a_flapping_dependency_does_not_make_the_level_flap(
    stack: Stack, redis_proxy: ThreadedFaultProxy
) -> None:
    key = f"flap:{uuid.uuid4().hex[:8]}"
    for _ in range(4):
        redis_proxy.set_mode(Mode.RESET)
        await stack.trip("cache")
        redis_proxy.set_mode(Mode.PASS)
        # the probe half-opens the breaker, a real call closes it again
        await stack.run_until(
            lambda: stack.breaker_state("cache") is State.CLOSED, "the cache back", limit=5
        )
        assert await stack.cache.set(key, "v")
        assert stack.level() is Level.DEGRADED
    opened = [t for t in stack.transitions_of("cache") if t[1] is State.OPEN]
    assert len(opened) == 4  # the dependency really flapped ...
    assert stack.levels() == [(Level.OPTIMAL, Level.DEGRADED)]  # ... the level did not
    await stack.run_until(lambda: stack.level() is Level.OPTIMAL, "recovery to OPTIMAL")
    assert stack.levels() == [(Level.OPTIMAL, Level.DEGRADED), (Level.DEGRADED, Level.OPTIMAL)]


# -- without traffic ----------------------------------------------------------------------


async def test_probes_are_the_trial_calls_of_a_half_open_breaker_nobody_calls() -> None:
    """A half-open component's features are off, so an application may never call it;
    the probes then decide: enough good ones close the breaker, a bad one reopens it.
    (Found end to end: inventario stayed DEGRADED for good after an OpenAI outage.)"""
    from brownout import CircuitBreaker
    from brownout.testing import FakeClock

    clock = FakeClock()
    config = BreakerConfig(consecutive_failures=1, open_for=60.0, half_open_calls=2)
    cb = CircuitBreaker("openai", config, clock=clock)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    answers = [True, False, True, True, True]

    async def probe() -> bool:
        return answers.pop(0)

    m = DegradationManager(
        [Component("database"), Component("openai", breaker=cb, probe=probe)],
        clock=clock,
        dwell=0,
        recovery="direct",
    )

    def state() -> State:
        return cb.state

    def level() -> Level:
        return m.level

    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    assert level() is Level.LIMITED and not m.enabled("ai_pricing")
    await m.tick()  # good probe: half-open early, features still off
    assert state() is State.HALF_OPEN and not m.enabled("ai_pricing")
    clock.advance(m.next_probe_in())
    await m.tick()  # bad probe, as the trial call: open again
    assert state() is State.OPEN
    assert level() is Level.LIMITED
    for expected in (State.HALF_OPEN, State.HALF_OPEN, State.CLOSED):
        clock.advance(m.next_probe_in())
        await m.tick()
        assert state() is expected
    assert [(c.from_state, c.to_state) for c in changes] == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),  # the failed probe, recorded as a failure
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),  # two good trial probes (half_open_calls=2)
    ]
    assert cb.snapshot().total_failures == 2
    clock.advance(1)
    await m.tick()
    assert level() is Level.OPTIMAL and m.enabled("ai_pricing")
