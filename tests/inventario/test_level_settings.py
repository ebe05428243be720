"""The level's settings act (issue 14 item 7): replay batch size, Redis and PostgreSQL
admission, PostgreSQL's statement timeout; /status shows what each level changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions as rex
from fastapi import FastAPI
from sqlalchemy import text

from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.health import DEFAULT_SETTINGS, Level
from brownout.overload import Overloaded
from brownout.testing import aeventually
from brownout.testing.servers.openai_stub import OpenAIStub
from inventario.level_settings import (
    DATABASE_ADMISSION,
    LevelScaledLimit,
    admission,
    database_timeout,
    level_table,
    replay_batch,
)
from inventario.runtime import REPLAY_BATCH
from tests.inventario.conftest import WIDGET, ai_settings, running, s3_settings
from tests.inventario.test_invoices import TEXT_INVOICE, upload


def test_replay_batch_follows_the_batch_multiplier() -> None:
    sizes = [replay_batch(REPLAY_BATCH, DEFAULT_SETTINGS[level]) for level in Level]
    assert sizes == [200, 160, 100, 50, 20]
    assert replay_batch(3, DEFAULT_SETTINGS[Level.EMERGENCY]) == 1  # never 0


def test_level_scaled_limit() -> None:
    factor = [1.0]
    limit = LevelScaledLimit(50, lambda: factor[0])
    assert limit.limit == 50
    factor[0] = 0.2
    assert limit.on_sample(0.0, 0.01, 1, False) == 10
    factor[0] = 0.001
    assert limit.limit == 1
    with pytest.raises(ValueError, match="base must be an integer >= 1"):
        LevelScaledLimit(0)


def test_level_scaled_limit_scales_an_adaptive_one() -> None:
    from brownout.overload import Gradient2

    factor = [1.0]
    gradient = Gradient2(initial_limit=50, max_limit=50, window=1.0, min_samples=1)
    limit = LevelScaledLimit(50, lambda: factor[0], adaptive=gradient)
    assert limit.limit == 50
    now = 0.0
    for _ in range(5):  # normal latency, busy: the long-term RTT is learnt
        now += 1.1
        limit.on_sample(now, 0.001, 50, False)
    for _ in range(30):  # 200x slower: the gradient falls, the limit with it
        now += 1.1
        limit.on_sample(now, 0.2, 50, False)
    assert gradient.limit < 50 and limit.limit == gradient.limit
    factor[0] = 0.5
    assert limit.limit == max(1, gradient.limit // 2)


async def test_the_replay_batch_at_minimal_is_a_quarter(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        assert rt.replayer.batch_size == 200
        rt.db.breaker.force_open()
        rt.manager.evaluate(immediate=True)
        assert rt.manager.level is Level.MINIMAL  # the database alone down
        for i in range(60):
            r = await client.post(
                "/products/W-1/movements",
                json={"kind": "in", "quantity": 1},
                headers={"Idempotency-Key": f"m-{i}"},
            )
            assert r.status_code == 202, r.text
        assert rt.replayer.batch_size == 50
        sizes: list[int] = []
        batch = rt.outbox.batch

        def spy(size: int, *args: Any, **kwargs: Any) -> Any:
            sizes.append(size)
            return batch(size, *args, **kwargs)

        monkeypatch.setattr(rt.outbox, "batch", spy)
        # the level stays MINIMAL while the database comes back (recovery dwell)
        rt.manager.pin(Level.MINIMAL, duration=60, reason="recovering")
        rt.db.breaker.reset()
        await rt.replayer.drain()
        assert (await client.get("/writes/m-59")).json()["status"] == "applied"
        assert sizes and max(sizes) == 50, sizes
        rt.manager.pin(Level.OPTIMAL, duration=60, reason="recovered")
        assert rt.replayer.batch_size == 200
        data = (await client.get("/status/data")).json()["level_settings"]
        assert data["current"] == "OPTIMAL"
        assert [row["replay_batch"] for row in data["levels"]] == [200, 160, 100, 50, 20]
        assert "replay_batch" in data["applied"]


async def test_the_redis_admission_limit_follows_the_level(
    make_app: Callable[..., FastAPI], redis_server: Any
) -> None:
    app = make_app(redis_url=redis_server.url)
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        bulkhead = rt.redis_admission
        assert bulkhead is not None and rt.cache.guards.bulkhead is bulkhead
        assert (await client.get("/products/W-1")).status_code == 200
        assert bulkhead.limit == 50
        admitted = bulkhead.snapshot().admitted
        assert admitted >= 1  # the read went through it
        rt.manager.pin(Level.DEGRADED, duration=60, reason="test")
        assert bulkhead.limit == 45  # 50 x 0.9, at once
        assert (await client.get("/products/W-1")).status_code == 200
        assert bulkhead.limit == 45  # and after a call
        data = (await client.get("/status/data")).json()["level_settings"]
        assert [row["redis_admission"] for row in data["levels"]] == [50, 45, 37, 25, 10]
        rt.manager.pin(Level.OPTIMAL, duration=60, reason="test")
        assert (await client.get("/products/W-1")).status_code == 200
        assert bulkhead.limit == 50


async def test_the_s3_admission_limit_follows_the_level(
    make_app: Callable[..., FastAPI], s3_server: Any, fresh_bucket: str
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket))
    async with running(app) as client:
        rt = app.state.runtime
        bulkhead = rt.s3_admission
        assert bulkhead is not None and rt.s3.guards.bulkhead is bulkhead
        await rt.s3.upload("k", b"x")
        assert bulkhead.limit == 10 and bulkhead.snapshot().admitted >= 1
        rt.manager.pin(Level.MINIMAL, duration=60, reason="test")
        assert bulkhead.limit == 5  # 10 x 0.5, at once (no call since)
        assert await rt.s3.download("k") == b"x"
        # with MINIMAL's 5 in flight, one more S3 call waits for a permit, then is refused
        invoice = await upload(client)
        assert invoice.status_code == 201 and invoice.json()["storage"] == "s3", invoice.text
        held = [bulkhead.try_acquire() for _ in range(5)]
        assert all(p is not None for p in held) and bulkhead.try_acquire() is None
        with pytest.raises(Overloaded):
            await rt.s3.download("k")
        # a download it refuses is a 503 the client may retry, not a missing file
        r = await client.get(f"/invoices/{invoice.json()['id']}/file")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "dependency_busy" and "Retry-After" in r.headers
        for permit in held:
            assert permit is not None
            permit.release()
        assert await rt.s3.download("k") == b"x"
        r = await client.get(f"/invoices/{invoice.json()['id']}/file")
        assert r.status_code == 200 and r.content == TEXT_INVOICE
        data = (await client.get("/status/data")).json()["level_settings"]
        assert [row["s3_admission"] for row in data["levels"]] == [10, 9, 7, 5, 2]
        assert "s3_admission" in data["applied"]
        assert "s3" not in data["not_applied"]


def test_database_figures_per_level() -> None:
    rows = [DEFAULT_SETTINGS[level] for level in Level]
    assert [admission(DATABASE_ADMISSION, s) for s in rows] == [20, 18, 15, 10, 4]
    # the level's request_timeout, at most the adapter's own statement_timeout (5 s)
    assert [database_timeout(s) for s in rows] == [2.0, 3.0, 5.0, 5.0, 5.0]


def test_a_refusal_by_a_guard_is_an_outage_for_the_replayer() -> None:
    """The outbox's replay keeps a write the database bulkhead refused (not the write's
    fault: it is tried again, never dead-lettered), as for an open breaker."""
    from brownout._outage import default_is_outage
    from brownout.overload import BulkheadFull, Throttled
    from brownout.sql import AsyncDatabase

    db = AsyncDatabase.from_url("sqlite+aiosqlite://")
    is_outage = default_is_outage(db)
    assert is_outage(BulkheadFull("database", 1.0))
    assert is_outage(Throttled("database", None))
    assert not is_outage(ValueError("the write's own"))


def _postgres_url(server: Any, dsn: str) -> str:
    return server.dsn_for(dsn.rsplit("/", 1)[1]).replace("postgresql://", "postgresql+asyncpg://")


async def _statement_timeout(rt: Any) -> str:
    async with rt.db.session() as s:
        return str((await s.execute(text("SHOW statement_timeout"))).scalar())


async def test_postgres_statement_timeout_and_admission_follow_the_level(
    make_app: Callable[..., FastAPI], postgres_server: Any, fresh_database: str
) -> None:
    app = make_app(database_url=_postgres_url(postgres_server, fresh_database))
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        bulkhead = rt.db_admission
        assert bulkhead is not None and rt.db.guards.bulkhead is bulkhead
        assert bulkhead.limit == 20
        # what the server has in force in the service's own transactions
        assert await _statement_timeout(rt) == "2s"
        for level, timeout, limit in (
            (Level.DEGRADED, "3s", 18),
            (Level.LIMITED, "5s", 15),
            (Level.MINIMAL, "5s", 10),  # 10 s, cut to the adapter's 5 s
            (Level.OPTIMAL, "2s", 20),
        ):
            rt.manager.pin(level, duration=60, reason="test")
            assert await _statement_timeout(rt) == timeout, level
            assert bulkhead.limit == limit, level  # read again after that call
        # a statement the OPTIMAL timeout cancels is let finish at DEGRADED
        slow = text("SELECT pg_sleep(2.3)")
        with pytest.raises(Exception, match="statement timeout"):
            async with rt.db.session() as s:
                await s.execute(slow)
        rt.manager.pin(Level.DEGRADED, duration=60, reason="test")
        async with rt.db.session() as s:
            await s.execute(slow)
        data = (await client.get("/status/data")).json()["level_settings"]
        assert [row["database_admission"] for row in data["levels"]] == [20, 18, 15, 10, 4]
        assert [row["database_timeout_s"] for row in data["levels"]] == [2, 3, 5, 5, 5]
        assert {"database_admission", "database_timeout_s"} <= set(data["applied"])


async def test_postgres_admission_admits_exactly_the_levels_number(
    make_app: Callable[..., FastAPI], postgres_server: Any, fresh_database: str
) -> None:
    app = make_app(database_url=_postgres_url(postgres_server, fresh_database))
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        bulkhead = rt.db_admission
        rt.manager.pin(Level.MINIMAL, duration=60, reason="test")
        assert bulkhead.limit == 10  # at once
        inside = 0
        release = asyncio.Event()

        async def hold() -> None:
            nonlocal inside
            async with rt.db.session() as s:
                await s.execute(text("SELECT 1"))
                inside += 1
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(12)]
        await aeventually(
            lambda: inside == 10 and bulkhead.waiting == 2, what="10 inside, 2 waiting"
        )
        assert (inside, bulkhead.in_use, bulkhead.waiting) == (10, 10, 2)
        active = postgres_server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'idle in transaction'",
            dbname=fresh_database.rsplit("/", 1)[1],
        )
        assert int(active.strip()) == 10  # the server sees 10 transactions, not 12
        release.set()  # the two queued get their turn
        await asyncio.gather(*tasks)
        assert inside == 12
        # all 10 held again: a request waits for a permit (2 s), then is told to come
        # back; a product read is answered from the replica's snapshot instead, stale
        release.clear()
        inside = 0
        tasks = [asyncio.create_task(hold()) for _ in range(10)]
        await aeventually(lambda: inside == 10, what="10 inside again")
        listed, read = await asyncio.gather(client.get("/products"), client.get("/products/W-1"))
        release.set()
        await asyncio.gather(*tasks)
        assert listed.status_code == 503, listed.text
        body = listed.json()
        assert body["code"] == "dependency_busy" and body["dependency"] == "database"
        assert "MINIMAL" in body["detail"] and int(listed.headers["retry-after"]) >= 1
        assert read.status_code == 200 and read.headers["x-cache"] == "snapshot", read.text
        assert "as many calls in flight" in read.json()["stale"]["reason"]


# the SDK waits Retry-After before a retry: 10 ms keeps the tests fast
QUICK_RETRY = {"retry-after-ms": "10"}
HELLO = [{"role": "user", "content": "hi"}]


async def test_openai_timeout_and_retries_follow_the_level(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        rt = app.state.runtime

        def options() -> tuple[int, float, float]:
            c = rt.ai.client
            return c.max_retries, c.timeout.read, c.timeout.connect

        assert options() == (3, 30.0, 3.0)
        for level, expected in (
            (Level.DEGRADED, (2, 45.0, 3.0)),
            (Level.LIMITED, (1, 75.0, 3.0)),
            (Level.MINIMAL, (0, 150.0, 3.0)),
            (Level.EMERGENCY, (0, 150.0, 3.0)),  # at most 5x (MINIMAL's factor)
            (Level.OPTIMAL, (3, 30.0, 3.0)),
        ):
            rt.manager.pin(level, duration=60, reason="test")
            assert options() == expected, level
        # what the SDK does: a failing API is asked twice at LIMITED, 4 times at OPTIMAL
        for level, attempts in ((Level.LIMITED, 2), (Level.OPTIMAL, 4)):
            rt.manager.pin(level, duration=60, reason="test")
            openai_stub.reset()
            openai_stub.script(500, headers=QUICK_RETRY, times=None, path="/chat/completions")
            with pytest.raises(Exception, match="500"):
                await rt.ai.chat(HELLO)
            chats = [r for r in openai_stub.requests if r.path.endswith("/chat/completions")]
            assert len(chats) == attempts, level
        openai_stub.reset()
        data = (await client.get("/status/data")).json()["level_settings"]
        rows = data["levels"]
        assert [row["openai_timeout_s"] for row in rows] == [30, 45, 75, 150, 150]
        assert [row["openai_max_retries"] for row in rows] == [3, 2, 1, 0, 0]
        assert {"openai_timeout_s", "openai_max_retries"} <= set(data["applied"])
        assert data["not_applied"]["max_retries"].startswith("applied to OpenAI only")
        assert "redis_timeout_s" not in data["applied"]  # no Redis here
        assert all(row["redis_timeout_s"] is None for row in rows)


async def test_redis_socket_timeout_follows_the_level(
    make_app: Callable[..., FastAPI],
    redis_server: Any,
    make_proxy: Callable[..., ThreadedFaultProxy],
) -> None:
    proxy = make_proxy(redis_server)
    app = make_app(redis_url=redis_server.url_for(port=proxy.port))
    async with running(app) as client:
        rt = app.state.runtime
        pool = rt.cache.client.connection_pool
        assert await rt.cache.set("levels:k", "v") is True
        assert pool.connection_kwargs["socket_timeout"] == 0.5
        for level, timeout in (
            (Level.DEGRADED, 0.75),
            (Level.LIMITED, 1.25),
            (Level.MINIMAL, 2.5),
            (Level.EMERGENCY, 2.5),
            (Level.OPTIMAL, 0.5),
        ):
            rt.manager.pin(level, duration=60, reason="test")
            assert pool.connection_kwargs["socket_timeout"] == timeout, level
            assert {c.socket_timeout for c in pool._available_connections} == {timeout}
        # a Redis 0.6 s late: a timeout at OPTIMAL (0.5 s), an answer at DEGRADED (0.75 s)
        proxy.set_mode(Mode.LATENCY, downstream_delay=0.6)
        try:
            with pytest.raises((rex.TimeoutError, TimeoutError)):
                await rt.cache.get("levels:k")
            rt.manager.pin(Level.DEGRADED, duration=60, reason="test")
            assert await rt.cache.get("levels:k") == b"v"
        finally:
            proxy.set_mode(Mode.PASS)
        data = (await client.get("/status/data")).json()["level_settings"]
        assert [row["redis_timeout_s"] for row in data["levels"]] == [0.5, 0.75, 1.25, 2.5, 2.5]
        assert "redis_timeout_s" in data["applied"]
        assert data["not_applied"]["max_retries"].startswith("the database and Redis")


class _Bulkheads:
    """Stands in for the bulkheads: counts the refreshes the listener asks for."""

    def __init__(self) -> None:
        self.refreshed = 0

    def refresh_limit(self) -> int:
        self.refreshed += 1
        return 1


def _manager(clock: Any) -> Any:
    from brownout.health import Component, DegradationManager

    return DegradationManager([Component("database")], clock=clock)


def test_a_level_change_sets_the_bulkheads_limit_at_once() -> None:
    """The manager listener reads the limits again on a change of level only (nothing
    per call, nothing on an evaluation of the same level); the next permit has the new
    limit without a call through the bulkhead first."""
    from brownout.testing import FakeClock
    from inventario.level_settings import refresh_admission, s3_admission

    clock = FakeClock()
    manager = _manager(clock)
    bulkhead = s3_admission(lambda: manager.settings.pool_multiplier)
    fake = _Bulkheads()
    manager.add_listener(refresh_admission(manager, [bulkhead, fake]))  # type: ignore[list-item]
    assert fake.refreshed == 1  # the level in force when it is made
    held = [bulkhead.try_acquire() for _ in range(10)]
    assert all(p is not None for p in held) and bulkhead.in_use == 10
    manager.pin(Level.MINIMAL, duration=60, reason="test")
    assert bulkhead.limit == 5 and fake.refreshed == 2  # at once, 10 still held
    manager.pin(Level.MINIMAL, duration=30, reason="again")
    manager.evaluate(immediate=True)
    assert fake.refreshed == 2  # the same level: nothing read
    for permit in held:
        assert permit is not None
        permit.release()
    held = [bulkhead.try_acquire() for _ in range(6)]
    assert held[-1] is None and bulkhead.in_use == 5  # MINIMAL's 5, no call before
    manager.pin(Level.LIMITED, duration=60, reason="test")
    assert bulkhead.limit == 7 and fake.refreshed == 3
    assert bulkhead.try_acquire() is not None  # the 6th, let in by LIMITED's 7


async def test_a_level_change_lets_queued_callers_in_when_the_limit_grows() -> None:
    """Callers waiting for a permit at MINIMAL are admitted as soon as the level
    recovers, without waiting for a permit to be given back."""
    from brownout.testing import FakeClock
    from inventario.level_settings import refresh_admission, s3_admission

    manager = _manager(FakeClock())
    manager.pin(Level.MINIMAL, duration=60, reason="test")
    bulkhead = s3_admission(lambda: manager.settings.pool_multiplier)
    manager.add_listener(refresh_admission(manager, [bulkhead]))
    held = [bulkhead.try_acquire() for _ in range(5)]
    assert all(p is not None for p in held) and bulkhead.limit == 5
    inside = asyncio.Event()

    async def wait_for_a_permit() -> None:
        async with bulkhead.acquire(timeout=60):
            inside.set()
            await asyncio.sleep(0)

    waiter = asyncio.create_task(wait_for_a_permit())
    await aeventually(lambda: bulkhead.waiting == 1, what="queued")
    manager.pin(Level.OPTIMAL, duration=60, reason="recovered")
    await inside.wait()  # admitted with the 5 still held
    assert bulkhead.in_use == 6 and bulkhead.limit == 10
    await waiter
    for permit in held:
        assert permit is not None
        permit.release()


def _pools(client: Any) -> int:
    """The connection pools an aiobotocore client has open (0 once closed)."""
    return len(client._endpoint.http_session._sessions or ())


async def test_s3_timeout_and_retries_follow_the_level(
    make_app: Callable[..., FastAPI],
    s3_server: Any,
    fresh_bucket: str,
    make_proxy: Callable[..., ThreadedFaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3's read timeout and botocore's retries per level (one client per setting, all
    closed with the service): a read 1 s late times out at OPTIMAL and is answered at
    MINIMAL; a failing S3 is asked 4 times a call at OPTIMAL, twice at LIMITED, once at
    MINIMAL, every retry counted by S3's retry budget. S3's own 5 s read timeout is
    scaled down to 0.5 s here to keep the test short."""
    from botocore.exceptions import BotoCoreError, ReadTimeoutError

    from inventario import level_settings

    monkeypatch.setattr(level_settings, "S3_TIMEOUT", 0.5)
    proxy = make_proxy(s3_server)
    app = make_app(**s3_settings(s3_server, fresh_bucket, proxy))
    clients: dict[int, Any] = {}
    async with running(app) as client:
        rt = app.state.runtime
        budget = rt.s3.guards.retry_budget
        assert budget is not None and budget.name == "s3"

        def options() -> tuple[float, int, float]:
            o = rt.s3.client_options
            return o["read_timeout"], o["max_retries"], o["connect_timeout"]

        assert options() == (0.5, 3, 1.0)
        for level, expected in (
            (Level.DEGRADED, (0.75, 2, 1.0)),
            (Level.LIMITED, (1.25, 1, 1.0)),
            (Level.MINIMAL, (2.5, 0, 1.0)),
            (Level.EMERGENCY, (2.5, 0, 1.0)),  # at most 5x (MINIMAL's factor)
            (Level.OPTIMAL, (0.5, 3, 1.0)),
        ):
            rt.manager.pin(level, duration=60, reason="test")
            assert options() == expected, level
        rt.manager.pin(Level.MINIMAL, duration=60, reason="test")
        await rt.s3.upload("k", b"v")  # MINIMAL's 2.5 s: a healthy moto answers in time
        proxy.set_mode(Mode.LATENCY, downstream_delay=1.0)
        try:
            assert await rt.s3.download("k") == b"v"
            clients[id(rt.s3.client)] = rt.s3.client
            rt.manager.pin(Level.OPTIMAL, duration=60, reason="test")
            before = budget.snapshot().allowed
            with pytest.raises(ReadTimeoutError):
                await rt.s3.download("k")  # 4 attempts of 0.5 s
            assert budget.snapshot().allowed - before == 3
            clients[id(rt.s3.client)] = rt.s3.client
        finally:
            proxy.set_mode(Mode.PASS)
        # a failing S3: each level's retries, counted by the budget (and seen by the proxy)
        proxy.set_mode(Mode.RESET)
        try:
            for level, retries in ((Level.OPTIMAL, 3), (Level.LIMITED, 1), (Level.MINIMAL, 0)):
                rt.manager.pin(level, duration=60, reason="test")
                rt.s3.breaker.reset()  # the failures so far must not open it
                before = budget.snapshot()
                proxy.reset_stats()
                with pytest.raises(BotoCoreError):
                    await rt.s3.download("k")
                after = budget.snapshot()
                assert (after.requests - before.requests, after.allowed - before.allowed) == (
                    1,
                    retries,
                ), level
                assert after.denied == before.denied
                # aiohttp may connect twice for one attempt (a reset on a reused connection)
                assert retries + 1 <= proxy.stats.connections_total <= 2 * (retries + 1), level
                clients[id(rt.s3.client)] = rt.s3.client
        finally:
            proxy.set_mode(Mode.PASS)
        assert len(clients) == 3  # OPTIMAL's, LIMITED's, MINIMAL's
        assert all(_pools(c) > 0 for c in clients.values())
        data = (await client.get("/status/data")).json()["level_settings"]
        rows = data["levels"]
        assert [row["s3_timeout_s"] for row in rows] == [0.5, 0.75, 1.25, 2.5, 2.5]
        assert [row["s3_max_retries"] for row in rows] == [3, 2, 1, 0, 0]
        assert {"s3_timeout_s", "s3_max_retries"} <= set(data["applied"])
        assert "s3" not in data["not_applied"]
        assert data["not_applied"]["max_retries"].startswith("applied to S3 only")
    assert [_pools(c) for c in clients.values()] == [0, 0, 0]  # closed with the service


# the browser (module-scoped) keeps an event loop running: async tests come before it
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_status_page_shows_what_each_level_changes(
    make_app: Callable[..., FastAPI],
    redis_server: Any,
    openai_stub: OpenAIStub,
    s3_server: Any,
    fresh_bucket: str,
    chromium: Any,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """Redis, S3 and OpenAI configured: their columns, and the database's on PostgreSQL only;
    the settings that act on nothing are named, with the reason; the level in force
    marked; on a phone the page does not scroll sideways (the headers wrap)."""
    from playwright.sync_api import expect

    from tests.inventario.live_server import serving

    settings: dict[str, Any] = {
        "redis_url": redis_server.url,
        **ai_settings(openai_stub),
        **s3_settings(s3_server, fresh_bucket),
    }
    if backend == "postgresql":
        dsn = request.getfixturevalue("fresh_database")
        settings["database_url"] = _postgres_url(request.getfixturevalue("postgres_server"), dsn)
    app = make_app(**settings)
    with serving(app) as base:
        page = chromium.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/status")
        table = page.get_by_test_id("level-settings")
        for header in (
            "Redis timeout (s)",
            "S3 calls in flight",
            "S3 timeout (s)",
            "S3 retries",
            "OpenAI timeout (s)",
            "OpenAI retries",
        ):
            expect(table.locator("th", has_text=header)).to_have_count(1)
        expect(table.locator("th", has_text="shown only")).to_have_count(0)
        limited = page.get_by_test_id("level-settings-LIMITED")
        if backend == "sqlite":
            expect(table.locator("th", has_text="database")).to_have_count(0)
            # TTL 900, batch 100, Redis 37 calls / 1.25 s, S3 7 calls / 12.5 s / 1 retry,
            # OpenAI 75 s / 1 retry
            expect(limited.locator("td")).to_have_text(
                ["LIMITED", "900", "100", "37", "1.25", "7", "12.5", "1", "75", "1"]
            )
        else:  # and the database: 15 transactions, a 5 s statement timeout
            expect(table.locator("th", has_text="database")).to_have_count(2)
            expect(limited.locator("td")).to_have_text(
                ["LIMITED", "900", "100", "37", "1.25", "15", "5", "7", "12.5", "1", "75", "1"]
            )
        expect(page.get_by_test_id("level-settings-OPTIMAL")).to_have_attribute(
            "data-current", "true"
        )
        note = page.get_by_test_id("level-settings-not-applied")
        expect(note).to_contain_text("retry_strategy")
        expect(note).to_contain_text("max_retries (applied to OpenAI and S3 only")
        expect(note).not_to_contain_text("s3 (")  # S3's timeouts and retries are applied
        app.state.runtime.manager.pin(Level.LIMITED, duration=60, reason="test")
        expect(limited).to_have_attribute("data-current", "true")
        assert errors == []
        phone = chromium.new_context(viewport={"width": 390, "height": 844}).new_page()
        phone.goto(f"{base}/status")
        expect(phone.get_by_test_id("level-settings-LIMITED")).to_be_attached()
        width = phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, f"horizontal scroll at phone width: scrollWidth {width}"


class _Recorder:
    """Stands in for the Redis, OpenAI and S3 adapters: records what the listener sets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def set_socket_timeout(self, seconds: float) -> None:
        self.calls.append(("redis", seconds))

    def use_options(self, *, max_retries: int, **timeouts: Any) -> None:
        if "timeout" in timeouts:
            timeout = timeouts["timeout"]
            self.calls.append(("openai", (timeout.read, timeout.connect, max_retries)))
        else:
            read, connect = timeouts["read_timeout"], timeouts["connect_timeout"]
            self.calls.append(("s3", (read, connect, max_retries)))


def test_client_options_follow_custom_settings_and_change_only_with_the_level() -> None:
    from brownout.health import Component, DegradationManager, LevelSettings
    from brownout.testing import FakeClock
    from inventario.level_settings import apply_client_options, timeout_factor

    settings = {
        level: LevelSettings(1.0, 60, 1.0, timeout, retries, "none")
        for level, timeout, retries in zip(
            Level, (1.0, 4.0, 8.0, 20.0, 100.0), (5, 4, 3, 2, 1), strict=True
        )
    }
    manager = DegradationManager([Component("database")], settings=settings, clock=FakeClock())
    from brownout.openai import DEFAULT_TIMEOUT
    from inventario.level_settings import OPENAI_CONNECT_TIMEOUT, OPENAI_TIMEOUT

    # the figures inventario scales are the adapter's own
    assert (
        DEFAULT_TIMEOUT.read,
        DEFAULT_TIMEOUT.connect,
    ) == (OPENAI_TIMEOUT, OPENAI_CONNECT_TIMEOUT)
    optimal = settings[Level.OPTIMAL]
    assert [timeout_factor(settings[lv], optimal) for lv in Level] == [1, 4, 5, 5, 5]
    from brownout.s3 import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    from inventario.level_settings import S3_CONNECT_TIMEOUT, S3_TIMEOUT

    assert (DEFAULT_READ_TIMEOUT, DEFAULT_CONNECT_TIMEOUT) == (S3_TIMEOUT, S3_CONNECT_TIMEOUT)
    cache, ai, s3 = _Recorder(), _Recorder(), _Recorder()
    listener = apply_client_options(manager, cache=cache, ai=ai, s3=s3)  # type: ignore[arg-type]
    assert cache.calls == [("redis", 0.5)] and ai.calls == [("openai", (30.0, 3.0, 5))]
    assert s3.calls == [("s3", (5.0, 1.0, 5))]
    manager.add_listener(listener)
    manager.pin(Level.DEGRADED, duration=60, reason="test")
    manager.pin(Level.DEGRADED, duration=30, reason="again")  # the same level: nothing set
    manager.pin(Level.EMERGENCY, duration=60, reason="test")
    assert cache.calls[1:] == [("redis", 2.0), ("redis", 2.5)]
    assert ai.calls[1:] == [("openai", (120.0, 3.0, 4)), ("openai", (150.0, 3.0, 1))]
    assert s3.calls[1:] == [("s3", (20.0, 1.0, 4)), ("s3", (25.0, 1.0, 1))]
    data = level_table(manager, replay_base=REPLAY_BATCH, redis_timeouts=True, openai=True, s3=True)
    assert [row["openai_max_retries"] for row in data["levels"]] == [5, 4, 3, 2, 1]
    assert [row["redis_timeout_s"] for row in data["levels"]] == [0.5, 2.0, 2.5, 2.5, 2.5]
    assert [row["s3_timeout_s"] for row in data["levels"]] == [5.0, 20.0, 25.0, 25.0, 25.0]
    assert [row["s3_max_retries"] for row in data["levels"]] == [5, 4, 3, 2, 1]
    assert {"s3_timeout_s", "s3_max_retries"} <= set(data["applied"])
    assert data["not_applied"]["max_retries"].startswith("applied to OpenAI and S3 only")
    assert data["current"] == "EMERGENCY"
