"""Replaying the outbox into a real database (SQLite file via aiosqlite): once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from brownout import BreakerConfig, CircuitBreaker
from brownout.outbox import Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    database = AsyncDatabase.from_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with database.session() as s:
        await s.execute(
            text("CREATE TABLE moves (id INTEGER PRIMARY KEY, sku TEXT, n INTEGER, ikey TEXT)")
        )
    yield database
    await database.close()


def make_applier(db: AsyncDatabase) -> SqlApplier:
    applier = SqlApplier(db)

    @applier.handler("move")
    async def move(session: object, payload: dict[str, object]) -> None:
        if payload.get("bad"):
            raise ValueError("quantity must be positive")
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO moves (sku, n, ikey) VALUES (:sku, :n, :k)"),
            {"sku": payload["sku"], "n": payload["n"], "k": payload.get("k")},
        )

    return applier


async def rows(db: AsyncDatabase) -> list[tuple[str, int]]:
    async with db.session() as s:
        result = await s.execute(text("SELECT sku, n FROM moves ORDER BY id"))
        return [(r[0], r[1]) for r in result]


async def test_replay_applies_everything_once_in_stream_order(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    for n in range(5):
        for sku in ("A", "B"):
            box.submit("move", {"sku": sku, "n": n}, stream=sku)
    report = await Replayer(box, applier).drain()
    assert report.applied == 10 and report.stopped is None
    got = await rows(db)
    assert [n for sku, n in got if sku == "A"] == [0, 1, 2, 3, 4]
    assert [n for sku, n in got if sku == "B"] == [0, 1, 2, 3, 4]
    assert box.pending_count() == 0
    box.close()


async def test_an_intent_applied_before_a_crash_is_not_applied_again(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db")
    crash = {"armed": True}

    def die_after_commit(intent: object) -> None:
        if crash["armed"]:
            crash["armed"] = False
            raise KeyboardInterrupt("simulated crash between commit and journal update")

    applier = make_applier(db)
    applier._after_commit = die_after_commit
    await applier.ensure_schema()
    intent = box.submit("move", {"sku": "A", "n": 1}, stream="A")
    with pytest.raises(KeyboardInterrupt):
        await Replayer(box, applier).drain()
    assert box.status(intent.key) == "pending"  # the journal was not updated...
    assert await applier.is_applied(intent.key)  # ...but the database has it
    report = await Replayer(box, applier).drain()
    assert report.applied == 1
    assert await rows(db) == [("A", 1)]  # once
    box.close()


async def test_caller_errors_retry_then_dead_letter_without_blocking_others(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db", max_attempts=2)
    applier = make_applier(db)
    await applier.ensure_schema()
    box.submit("move", {"sku": "A", "n": 1, "bad": True}, stream="A")
    box.submit("move", {"sku": "A", "n": 2}, stream="A")
    box.submit("move", {"sku": "B", "n": 1}, stream="B")
    box.submit("nope", {}, stream="C")
    import asyncio

    replayer = Replayer(box, applier, backoff=(0.001, 0.001))
    dead = failed = 0
    for _ in range(5):
        report = await replayer.drain()
        dead, failed = dead + report.dead, failed + report.failed
        await asyncio.sleep(0.01)
    assert dead == 2 and failed == 4  # two attempts each, then the dead letters
    assert {d.operation for d in box.dead_letters()} == {"move", "nope"}
    assert "quantity must be positive" in box.dead_letters()[0].reason
    assert await rows(db) == [("B", 1), ("A", 2)]
    assert box.pending_count() == 0
    box.close()


async def test_an_outage_stops_the_drain_and_keeps_everything(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    for n in range(3):
        box.submit("move", {"sku": "A", "n": n}, stream="A")
    db.breaker.force_open()
    report = await Replayer(box, applier).drain()
    assert report.applied == 0 and report.stopped is not None and "open" in report.stopped
    assert box.pending_count() == 3
    db.breaker.reset()
    assert (await Replayer(box, applier).drain()).applied == 3
    box.close()


async def test_replayer_drains_when_the_breaker_closes(tmp_path: Path, db: AsyncDatabase) -> None:
    import asyncio

    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    breaker = CircuitBreaker("database", BreakerConfig())
    replayer = Replayer(box, applier, heartbeat=3600)
    replayer.watch(breaker)
    await replayer.start()
    await asyncio.sleep(0.05)  # the first drain ran on an empty journal
    box.submit("move", {"sku": "A", "n": 7}, stream="A")
    breaker.force_open()
    breaker.reset()  # -> CLOSED: wakes the replayer
    for _ in range(100):
        if box.pending_count() == 0:
            break
        await asyncio.sleep(0.02)
    await replayer.stop()
    assert await rows(db) == [("A", 7)]
    box.close()
