"""Writes accepted while PostgreSQL is down are applied after it restarts: all, once, in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from brownout import BreakerConfig, BreakerOpen, State
from brownout.outbox import Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase
from brownout.testing import aeventually

pytestmark = pytest.mark.servers


async def test_writes_during_an_outage_are_applied_after_restart(
    make_postgres: Callable[..., object], tmp_path: Path
) -> None:
    pg = make_postgres()
    db = AsyncDatabase.from_url(
        pg.sqlalchemy_url(),  # type: ignore[attr-defined]
        config=BreakerConfig(consecutive_failures=2, open_for=0.2, half_open_calls=1),
        connect_timeout=0.5,
    )
    async with db.session() as s:
        await s.execute(
            text("CREATE TABLE moves (id BIGSERIAL PRIMARY KEY, sku TEXT, n INT, ikey TEXT)")
        )
    box = Outbox(tmp_path / "outbox.db")
    applier = SqlApplier(db)

    @applier.handler("move")
    async def move(session: object, payload: dict[str, object]) -> None:
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO moves (sku, n, ikey) VALUES (:sku, :n, :k)"), payload
        )

    await applier.ensure_schema()

    async def write(sku: str, n: int) -> str:
        """What the service does: try the database; if it is failing, queue the write."""
        key = f"{sku}-{n}"
        payload = {"sku": sku, "n": n, "k": key}
        try:
            async with db.session() as s:
                await move(s, payload)
            return "applied"
        except BreakerOpen:
            pass
        except Exception as exc:
            if not db.errors.counts(exc):
                raise
        box.submit("move", payload, stream=sku, idempotency_key=key)
        return "queued"

    assert await write("A", 0) == "applied"
    pg.stop()  # type: ignore[attr-defined]
    outcomes = [await write(sku, n) for n in range(1, 11) for sku in ("A", "B")]
    assert set(outcomes) == {"queued"}
    assert db.breaker.state is State.OPEN
    assert box.pending_count() == 20

    replayer = Replayer(box, applier)
    report = await replayer.drain()
    assert report.applied == 0 and report.stopped  # still down: nothing lost, nothing applied
    assert box.pending_count() == 20

    pg.start()  # type: ignore[attr-defined]

    async def drained() -> bool:  # the break passes, the half-open probe closes the breaker
        await replayer.drain()
        return box.pending_count() == 0

    await aeventually(drained, timeout=10, interval=0.1, what="the replay after the restart")
    async with db.session() as s:
        rows = (await s.execute(text("SELECT sku, n, ikey FROM moves ORDER BY id"))).all()
    keys = [r[2] for r in rows]
    assert len(keys) == len(set(keys)) == 21  # once each, the first write included
    for sku in ("A", "B"):
        assert [r[1] for r in rows if r[0] == sku] == list(range(0 if sku == "A" else 1, 11))
    box.close()
    await db.aclose()
