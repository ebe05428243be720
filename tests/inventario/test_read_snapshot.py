"""The read snapshot (inventario.snapshot): with PostgreSQL down and the cache missing, a
product read is answered from the replica's own copy, with its age and this replica's
queued writes, instead of a 503 (docs/operations.md, "Running several")."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from brownout.testing import aeventually
from inventario.db import products
from inventario.runtime import Runtime
from inventario.snapshot import LAG
from tests.inventario.conftest import WIDGET, running

pytest.importorskip("asyncpg")


def runtime_of(app: FastAPI) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


async def refreshed(rt: Runtime) -> None:
    """One complete refresh of the snapshot, after the one started with the service."""
    assert rt.snapshot is not None
    await aeventually(lambda: rt.snapshot is not None and rt.snapshot.refreshes >= 1)
    before = rt.snapshot.refreshes
    await rt.snapshot.refresh()
    assert rt.snapshot.refreshes == before + 1


async def test_the_snapshot_answers_reads_while_the_database_is_down_with_queued_writes(
    make_app: Callable[..., FastAPI], fresh_database: str
) -> None:
    app = make_app(database_url=fresh_database)
    rt = runtime_of(app)
    async with running(app) as client:
        assert rt.snapshot is not None
        r = await client.post("/products", json={**WIDGET, "sku": "S-1", "stock": 10})
        assert r.status_code == 201, r.text
        r = await client.post("/products/S-1/movements", json={"kind": "in", "quantity": 2})
        assert r.status_code == 201, r.text
        await refreshed(rt)
        before = time.time()

        rt.db.breaker.force_open()  # the database down for this replica
        r = await client.get("/products/S-1")
        assert r.status_code == 200, r.text
        assert r.headers["X-Cache"] == "snapshot"
        assert r.json()["stock"] == 12 and r.json()["name"] == "Widget"
        stale = r.json()["stale"]
        assert stale["queued_writes"] == 0 and "database" in stale["reason"]
        as_of = parsedate_to_datetime(r.headers["X-Stale-As-Of"]).timestamp()
        assert before - 2 <= as_of <= time.time() and abs(stale["as_of"] - as_of) < 1
        assert int(r.headers["Age"]) >= 0

        # writes queued by this replica (202) are counted, in order, as the replay will
        for body in (
            {"kind": "out", "quantity": 5},  # 7
            {"kind": "out", "quantity": 100},  # refused by the replay: skipped
            {"kind": "in", "quantity": 1},  # 8
        ):
            r = await client.post("/products/S-1/movements", json=body)
            assert r.status_code == 202, r.text
        r = await client.patch("/products/S-1", json={"name": "Renamed", "price": "12.5"})
        assert r.status_code == 202, r.text
        r = await client.get("/products/S-1")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["stock"], body["name"], body["price"]) == (8, "Renamed", "12.50")
        assert body["stale"]["queued_writes"] == 3

        # never seen by the snapshot: still a 503 (a 404 could be false)
        r = await client.get("/products/NEVER-SEEN")
        assert r.status_code == 503 and "Retry-After" in r.headers

        # the database back: the queue applied, one refused (a dead letter)
        rt.db.breaker.reset()
        report = await rt.replayer.drain()
        assert report.applied == 3 and report.dead == 1, report
        await refreshed(rt)
        rt.db.breaker.force_open()
        r = await client.get("/products/S-1")
        assert r.status_code == 200 and r.headers["X-Cache"] == "snapshot", r.text
        assert (r.json()["stock"], r.json()["name"]) == (8, "Renamed")
        assert r.json()["stale"]["queued_writes"] == 0  # the applied ones are in the row
        assert rt.snapshot.stats()["queued_writes"] == 0  # and the dead letter is gone
        rt.db.breaker.reset()


async def test_a_refresh_reads_what_other_replicas_changed_since_the_last_one(
    make_app: Callable[..., FastAPI], fresh_database: str, tmp_path: object
) -> None:
    """Rows written by another replica (here: straight into the database) are read by
    the next refresh, including one stamped up to LAG seconds before the newest seen."""
    app = make_app(database_url=fresh_database)
    rt = runtime_of(app)
    async with running(app) as client:
        assert rt.snapshot is not None
        for sku in ("O-1", "O-2"):
            r = await client.post("/products", json={**WIDGET, "sku": sku, "stock": 10})
            assert r.status_code == 201, r.text
        await refreshed(rt)
        newest = time.time()
        async with rt.db.session() as s:  # another replica's writes, unseen by this one
            await s.execute(
                update(products).where(products.c.sku == "O-1").values(stock=40, updated_at=newest)
            )
            # committed late: stamped before the newest row, within LAG of it
            await s.execute(
                update(products)
                .where(products.c.sku == "O-2")
                .values(stock=50, updated_at=newest - LAG / 2)
            )
        rt.db.breaker.force_open()
        stocks = [(await client.get(f"/products/{s}")).json()["stock"] for s in ("O-1", "O-2")]
        assert stocks == [10, 10]  # the snapshot as of the last refresh
        rt.db.breaker.reset()
        await refreshed(rt)
        rt.db.breaker.force_open()
        stocks = [(await client.get(f"/products/{s}")).json()["stock"] for s in ("O-1", "O-2")]
        assert stocks == [40, 50]
        rt.db.breaker.reset()


async def test_maintenance_mode_does_not_serve_the_snapshot(
    make_app: Callable[..., FastAPI], fresh_database: str
) -> None:
    """A pinned EMERGENCY with the database up turns database reads off on purpose:
    503 as documented, not the snapshot."""
    from brownout.health import Level

    app = make_app(database_url=fresh_database)
    rt = runtime_of(app)
    async with running(app) as client:
        r = await client.post("/products", json={**WIDGET, "sku": "M-1"})
        assert r.status_code == 201, r.text
        await refreshed(rt)
        rt.manager.pin(Level.EMERGENCY, duration=60)
        r = await client.get("/products/M-1")
        assert r.status_code == 503, r.text
        assert "database reads are off at level EMERGENCY" in r.json()["detail"]


async def test_the_sqlite_default_has_no_snapshot(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    assert runtime_of(app).snapshot is None
