"""Replaying the outbox into a real database (SQLite file via aiosqlite): once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from brownout import BreakerConfig, CircuitBreaker
from brownout.outbox import Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase
from brownout.testing import FakeClock, aeventually


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    database = AsyncDatabase.from_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with database.session() as s:
        await s.execute(
            text("CREATE TABLE moves (id INTEGER PRIMARY KEY, sku TEXT, n INTEGER, ikey TEXT)")
        )
    yield database
    await database.aclose()


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
    clock = FakeClock(1_000.0)
    box = Outbox(tmp_path / "o.db", max_attempts=2, clock=clock)
    applier = make_applier(db)
    await applier.ensure_schema()
    box.submit("move", {"sku": "A", "n": 1, "bad": True}, stream="A")
    box.submit("move", {"sku": "A", "n": 2}, stream="A")
    box.submit("move", {"sku": "B", "n": 1}, stream="B")
    box.submit("nope", {}, stream="C")

    replayer = Replayer(box, applier, backoff=(1.0, 1.0))
    dead = failed = 0
    for _ in range(5):
        report = await replayer.drain()
        dead, failed = dead + report.dead, failed + report.failed
        clock.advance(1.0)  # the retry backoff is over
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
    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    breaker = CircuitBreaker("database", BreakerConfig())
    replayer = Replayer(box, applier, heartbeat=3600)
    replayer.watch(breaker)
    await replayer.start()
    await aeventually(lambda: replayer.last_report is not None, what="the first drain")
    box.submit("move", {"sku": "A", "n": 7}, stream="A")
    breaker.force_open()
    breaker.reset()  # -> CLOSED: wakes the replayer (the heartbeat is an hour away)
    await aeventually(lambda: box.pending_count() == 0, what="the drain after the breaker closed")
    await replayer.stop()
    assert await rows(db) == [("A", 7)]
    box.close()


async def test_a_missing_table_waits_and_is_never_dead_lettered(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    """The database came before its schema (created after the service started): the
    intents wait, with the reason, and are applied once the tables exist."""
    box = Outbox(tmp_path / "o.db", max_attempts=1)
    applier = make_applier(db)  # brownout_applied not created yet
    intent = box.submit("move", {"sku": "A", "n": 1}, stream="A")
    replayer = Replayer(box, applier, backoff=(0.001, 0.001))
    for _ in range(3):
        report = await replayer.drain()
        assert report.applied == report.dead == 0
        assert report.stopped is not None and "no such table" in report.stopped
    assert box.status(intent.key) == "pending" and not box.dead_letters()
    (waiting,) = box.pending()
    assert waiting.attempts == 0 and "no such table" in (waiting.last_error or "")
    await applier.ensure_schema()
    assert (await replayer.drain()).applied == 1
    assert await rows(db) == [("A", 1)]
    box.close()


async def test_an_outage_is_never_dead_lettered_whatever_the_applier(tmp_path: Path) -> None:
    """One classifier (brownout._outage): a connection error from an applier without an
    error table waits; a caller error does not."""
    box = Outbox(tmp_path / "o.db", max_attempts=1)
    errors: list[BaseException] = [ConnectionRefusedError("refused"), TimeoutError("slow")]

    async def apply(intent: object) -> None:
        if errors:
            raise errors.pop(0)
        raise LookupError("no such product")

    intent = box.submit("move", {"sku": "A"}, stream="A")
    replayer = Replayer(box, apply, backoff=(0.001, 0.001))
    assert (await replayer.drain()).stopped is not None
    assert (await replayer.drain()).stopped is not None
    assert box.status(intent.key) == "pending"
    report = await replayer.drain()
    assert report.dead == 1 and box.status(intent.key) == "dead"
    assert box.dead_letters()[0].reason == "LookupError: no such product"
    box.close()


async def test_the_replayer_backs_off_while_the_dependency_stays_down(tmp_path: Path) -> None:
    from brownout.outbox._replay import outage_wait

    assert [outage_wait(n, heartbeat=1.0, cap=60.0) for n in range(8)] == [
        1.0,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
    ]
    assert outage_wait(3, heartbeat=5.0, cap=2.0) == 5.0  # never below the heartbeat


async def test_prepare_runs_until_it_succeeds_once_and_the_drain_waits_for_it(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    """``prepare`` (e.g. creating the schema) runs before the drain, on the replayer's
    heartbeat and backoff, until it succeeds once; meanwhile nothing is tried or lost."""
    box = Outbox(tmp_path / "o.db", max_attempts=1)
    applier = make_applier(db)
    calls: list[str] = []

    async def prepare() -> None:
        calls.append("prepare")
        if len(calls) < 3:
            raise ConnectionRefusedError("the database is not there yet")
        await applier.ensure_schema()

    replayer = Replayer(box, applier, prepare=prepare)
    assert not replayer.prepared
    box.submit("move", {"sku": "A", "n": 1}, stream="A")
    assert not await replayer.ensure_prepared()
    report = await replayer.drain()
    assert report.stopped is not None and "not there yet" in report.stopped
    assert box.pending_count() == 1 and box.pending()[0].attempts == 0
    assert (await replayer.drain()).applied == 1
    assert replayer.prepared and len(calls) == 3
    assert (await replayer.drain()).stopped is None and len(calls) == 3  # once is enough
    replayer.prepare_again()  # the tables were lost: prepare before the next drain
    assert not replayer.prepared
    await replayer.drain()
    assert replayer.prepared and len(calls) == 4
    box.close()


async def test_an_open_breaker_paces_the_retries_other_outages_back_off(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    from brownout.outbox._replay import stopped_in_a_row

    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    box.submit("move", {"sku": "A", "n": 1}, stream="A")
    db.breaker.force_open()
    rejected = await Replayer(box, applier).drain()
    assert rejected.stopped is not None and rejected.rejected
    assert stopped_in_a_row(rejected, 4) == 0  # next drain on the heartbeat
    db.breaker.reset()

    async def refused(intent: object) -> None:
        raise ConnectionRefusedError("refused")

    failing = await Replayer(box, refused).drain()
    assert failing.stopped is not None and not failing.rejected
    assert stopped_in_a_row(failing, 4) == 5  # backs off further
    assert stopped_in_a_row(await Replayer(box, applier).drain(), 5) == 0
    box.close()
