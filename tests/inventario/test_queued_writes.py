"""Every write is queued (202) while the database is down, and /writes/{key} tells the truth.

Price changes and invoice applies go through the outbox like product creates and
stock movements (issue 9: "whenever the database is the thing that is down and
the outbox has room, writes are queued, whatever else is configured"), and are
applied exactly once when it returns. ``GET /writes/{key}`` is public: it says
why a write was refused in the service's own words (a reason class), never the
raw error (SQL, driver names, paths), which only the admin token shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from brownout.testing import aeventually
from inventario import store
from inventario.invoice_store import InvoiceApplied, apply_invoice
from tests.inventario.conftest import WIDGET, running

TOKEN = "writes-admin-token"
INTERNALS = ("sqlite", "sqlalchemy", "asyncpg", "psycopg", "select ", "insert ", "/tmp", "[sql")


def backend(request: pytest.FixtureRequest, database: str) -> dict[str, Any]:
    if database == "sqlite":
        return {}
    dsn: str = request.getfixturevalue("fresh_database")
    return {"database_url": dsn.replace("postgresql://", "postgresql+asyncpg://")}


def database_down(app: FastAPI) -> Any:
    rt = app.state.runtime
    rt.db.breaker.force_open()
    rt.manager.evaluate(immediate=True)
    return rt


async def stock(app: FastAPI, sku: str) -> int:
    async with app.state.runtime.db.session() as s:  # the level is held (recovery dwell)
        return int((await store.get_product(s, sku))["stock"])


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_price_change_is_queued_while_the_database_is_down(
    make_app: Callable[..., FastAPI], request: pytest.FixtureRequest, database: str
) -> None:
    app = make_app(**backend(request, database))
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = database_down(app)
        r = await client.patch(
            "/products/W-1", json={"price": "12.50"}, headers={"Idempotency-Key": "price-1"}
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status_url"] == "/writes/price-1" and body["operation"] == "product.update"
        assert body["detail"].startswith("the database is unavailable"), body["detail"]
        assert (await client.get("/writes/price-1")).json()["status"] == "pending"
        rt.db.breaker.reset()
        assert (await rt.replayer.drain()).applied == 1
        assert (await rt.replayer.drain()).applied == 0
        assert (await client.get("/writes/price-1")).json()["status"] == "applied"
        async with rt.db.session() as s:
            assert str((await store.get_product(s, "W-1"))["price"]) == "12.50"


async def test_a_price_change_with_the_database_up_is_refused_while_prices_are_off(
    make_app: Callable[..., FastAPI],
) -> None:
    """The database is healthy and the level is MINIMAL (others are down): price changes
    are off at that level; a 503 that says so, not a 202 blaming the database."""
    from brownout.health import Level

    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        app.state.runtime.manager.pin(Level.MINIMAL, duration=60)
        r = await client.patch("/products/W-1", json={"price": "12.50"})
        assert r.status_code == 503, r.text
        assert "price changes are off at level MINIMAL" in r.json()["detail"]


async def invoice_with_lines(client: httpx.AsyncClient, quantity: int = 5) -> str:
    """An invoice whose lines were entered by hand (no AI configured): ready to apply."""
    r = await client.post(
        "/invoices", files={"file": ("invoice.txt", b"W-1 Widget 5 x 2.50\n", "text/plain")}
    )
    assert r.status_code == 201, r.text
    invoice_id: str = r.json()["id"]
    lines = {"lines": [{"sku": "W-1", "quantity": quantity, "unit_cost": "2.50"}]}
    r = await client.put(f"/invoices/{invoice_id}/lines", json=lines)
    assert r.status_code == 200, r.text
    return invoice_id


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_an_invoice_apply_is_queued_while_the_database_is_down_and_applied_once(
    make_app: Callable[..., FastAPI], request: pytest.FixtureRequest, database: str
) -> None:
    app = make_app(**backend(request, database))
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        invoice_id = await invoice_with_lines(client)
        rt = database_down(app)
        r = await client.post(
            f"/invoices/{invoice_id}/apply", headers={"Idempotency-Key": "inv-apply-1"}
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status_url"] == "/writes/inv-apply-1"
        assert body["operation"] == "invoice.apply"
        assert body["detail"].startswith("the database is unavailable"), body["detail"]
        # the client repeats it (a lost answer): the same write, not a second one
        again = await client.post(
            f"/invoices/{invoice_id}/apply", headers={"Idempotency-Key": "inv-apply-1"}
        )
        assert again.status_code == 202, again.text
        assert (await client.get("/writes/inv-apply-1")).json()["status"] == "pending"
        rt.db.breaker.reset()
        assert (await rt.replayer.drain()).applied == 1
        assert (await rt.replayer.drain()).applied == 0
        assert (await client.get("/writes/inv-apply-1")).json()["status"] == "applied"
        assert await stock(app, "W-1") == 15
        async with rt.db.session() as s:
            history = await store.movement_history(s, "W-1", limit=10, offset=0)
        assert [(m["delta"], m["reason"]) for m in history] == [(5, f"invoice {invoice_id}")]
        # applied: applying it again is refused, and moves nothing
        with pytest.raises(InvoiceApplied):
            async with rt.db.write_session() as s:
                await apply_invoice(s, invoice_id)
        assert await stock(app, "W-1") == 15


async def test_an_invoice_apply_replays_its_answer_for_the_same_key(
    make_app: Callable[..., FastAPI],
) -> None:
    """Directly applied with an Idempotency-Key, a repeat gets the same answer (200)."""
    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        invoice_id = await invoice_with_lines(client)
        headers = {"Idempotency-Key": "inv-direct-1"}
        first = await client.post(f"/invoices/{invoice_id}/apply", headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["invoice"]["state"] == "applied"
        again = await client.post(f"/invoices/{invoice_id}/apply", headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert await stock(app, "W-1") == 15


async def test_a_queued_apply_of_an_invoice_applied_meanwhile_is_refused_with_its_reason(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        invoice_id = await invoice_with_lines(client)
        rt = database_down(app)
        for key in ("inv-a", "inv-b"):  # two clients, two keys: one invoice
            r = await client.post(f"/invoices/{invoice_id}/apply", headers={"Idempotency-Key": key})
            assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        await rt.replayer.drain()
        assert await stock(app, "W-1") == 15
        assert (await client.get("/writes/inv-a")).json()["status"] == "applied"
        dead = (await client.get("/writes/inv-b")).json()
        assert dead["status"] == "dead"
        assert dead["last_error"].startswith("refused (invoice_applied): "), dead
        assert f"invoice {invoice_id} is already applied" in dead["last_error"]


# ------------------------------------------------------------------ /writes/{key}


async def test_a_dead_letter_shows_its_reason_class_and_the_raw_reason_only_to_the_admin(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 1})).status_code == 201
        rt = database_down(app)
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 5},
            headers={"Idempotency-Key": "too-many"},
        )
        assert r.status_code == 202
        rt.db.breaker.reset()
        await rt.replayer.drain()
        public = (await client.get("/writes/too-many")).json()
        assert public["status"] == "dead"
        assert public["last_error"] == (
            "refused (insufficient_stock): only 1 of W-1 in stock, cannot take out 5"
        )
        assert "reason" not in public or public["reason"] is None
        admin = await client.get("/writes/too-many", headers={"Authorization": f"Bearer {TOKEN}"})
        assert admin.status_code == 200
        assert admin.json()["reason"].startswith("InsufficientStock: only 1 of W-1")
        wrong = await client.get("/writes/too-many", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert wrong.headers["content-type"].startswith("application/problem+json")


async def test_an_unexpected_error_is_never_shown_to_the_public(
    make_app: Callable[..., FastAPI],
) -> None:
    """A dead letter whose reason is a database error (its first line names the driver,
    the SQL, a path): the public answer is a reason class; the admin sees the error."""
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        rt = app.state.runtime
        raw = (
            "OperationalError: (sqlite3.OperationalError) disk I/O error at "
            "/tmp/var/inventario.db [SQL: INSERT INTO movements (sku) VALUES (?)]"
        )
        intent = rt.outbox.submit(
            "stock.move", {"data": {}, "key": "odd-1"}, stream="W-1", idempotency_key="odd-1"
        )
        assert rt.outbox.mark_failed(intent, raw, final=True)
        public = (await client.get("/writes/odd-1")).json()
        assert public["status"] == "dead"
        text = public["last_error"].lower()
        assert text.startswith("failed: "), text
        assert "operator" in text
        for word in INTERNALS:
            assert word not in text, (word, text)
        assert public.get("reason") is None
        admin = (
            await client.get("/writes/odd-1", headers={"Authorization": f"Bearer {TOKEN}"})
        ).json()
        assert admin["reason"] == raw
        # discarded by the operator: the same reason class, the same privacy
        assert rt.outbox.discard_dead("odd-1") == 1
        gone = (await client.get("/writes/odd-1")).json()
        assert gone["status"] == "discarded"
        assert gone["last_error"].startswith("failed: ")
        for word in INTERNALS:
            assert word not in gone["last_error"].lower()


async def test_a_replayed_invoice_apply_drops_the_cache_entries_of_its_products(
    make_app: Callable[..., FastAPI], redis_server: object
) -> None:
    """The apply's stream is its invoice, not a product: the replay's commit drops the
    cache entries of the products it moved (the old stock was cached meanwhile)."""
    import json

    import redis

    from inventario.cache import product_key

    app = make_app(redis_url=redis_server.url)  # type: ignore[attr-defined]
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        invoice_id = await invoice_with_lines(client)
        old = (await client.get("/products/W-1")).json()
        rt = database_down(app)
        r = await client.post(f"/invoices/{invoice_id}/apply")
        assert r.status_code == 202, r.text
        raw = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        raw.set(product_key("W-1"), json.dumps(old))  # cached again before the replay
        rt.db.breaker.reset()
        assert (await rt.replayer.drain()).applied == 1
        # the invalidation runs as a task right after the commit
        await aeventually(lambda: not raw.exists(product_key("W-1")), what="the invalidation")
        raw.close()


async def test_the_status_page_and_about_show_no_dead_letter_reason_without_the_token(
    make_app: Callable[..., FastAPI],
) -> None:
    """``/status/data`` and ``/about`` are public too: without the admin token nothing of
    a dead letter's recorded error shows (the token shows it, as to an operator)."""
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        rt = app.state.runtime
        raw = (
            "ProgrammingError: (psycopg.errors.UndefinedColumn) column x does not exist "
            "[SQL: SELECT x FROM products WHERE sku = %(sku)s]"
        )
        intent = rt.outbox.submit(
            "stock.move", {"data": {}, "key": "odd-2"}, stream="W-1", idempotency_key="odd-2"
        )
        assert rt.outbox.mark_failed(intent, raw, final=True)
        for path in ("/status/data", "/about"):
            text = (await client.get(path)).text.lower()
            for word in ("psycopg", "column x", "programmingerror", "[sql"):
                assert word not in text, (path, word)
        admin = await client.get("/status/data", headers={"Authorization": f"Bearer {TOKEN}"})
        assert "column x does not exist" in admin.text


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_queued_writes_replay_in_one_transaction_with_a_bad_one_isolated(
    make_app: Callable[..., FastAPI], request: pytest.FixtureRequest, database: str
) -> None:
    """Issue 11 item 5: the outbox replays many writes per database transaction. One
    that the data refuses (more out than in stock) is dead-lettered alone; the writes
    before and after it, of its product and of others, are applied in order, once."""
    app = make_app(**backend(request, database))
    async with running(app) as client:
        for sku in ("W-1", "W-2"):
            r = await client.post("/products", json={**WIDGET, "sku": sku, "stock": 10})
            assert r.status_code == 201, r.text
        rt = database_down(app)
        moves = [  # (key, sku, kind, quantity); W-1: 10 +5 -12 (=3) then -20 refused, +1
            ("m1", "W-1", "in", 5),
            ("m2", "W-2", "out", 4),
            ("m3", "W-1", "out", 12),
            ("m4", "W-1", "out", 20),
            ("m5", "W-2", "in", 1),
            ("m6", "W-1", "in", 1),
        ]
        for key, sku, kind, quantity in moves:
            r = await client.post(
                f"/products/{sku}/movements",
                json={"kind": kind, "quantity": quantity},
                headers={"Idempotency-Key": key},
            )
            assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        report = await rt.replayer.drain()
        # m4 is dead after max_attempts (a StoreError is permanent: at once); m6 waits
        # behind it only in its batch (FIFO per stream), then goes in the next drain
        applied = report.applied + (await rt.replayer.drain()).applied
        assert (applied, report.dead) == (5, 1), report
        statuses = {k: (await client.get(f"/writes/{k}")).json()["status"] for k, *_ in moves}
        assert statuses == {
            "m1": "applied",
            "m2": "applied",
            "m3": "applied",
            "m4": "dead",
            "m5": "applied",
            "m6": "applied",
        }, statuses
        assert await stock(app, "W-1") == 4 and await stock(app, "W-2") == 7
        async with rt.db.session() as s:
            history = await store.movement_history(s, "W-1", limit=10, offset=0)
        assert sorted(m["delta"] for m in history) == [-12, 1, 5]
        assert (await rt.replayer.drain()).applied == 0  # exactly once
        assert await stock(app, "W-1") == 4


@contextmanager
def statements(rt: Any) -> Iterator[list[str]]:
    """The SQL statements the service's engines run inside the block (and its commits,
    as ``"COMMIT"``)."""
    seen: list[str] = []

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    def committed(conn: Any) -> None:
        seen.append("COMMIT")

    engines = [e.sync_engine for e in (rt.db.writer, rt.db.engine) if e is not None]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", executed)
        event.listen(engine, "commit", committed)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", executed)
            event.remove(engine, "commit", committed)


async def test_a_backlog_of_writes_is_replayed_in_one_transaction_with_one_key_lookup(
    make_app: Callable[..., FastAPI],
) -> None:
    """The replay's batch handler: twenty queued movements are one transaction with one
    lookup of their idempotency records and one insert of them, not one of each per
    write (the movements themselves still run one by one, in order)."""
    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = database_down(app)
        for n in range(20):
            r = await client.post(
                "/products/W-1/movements",
                json={"kind": "in" if n % 2 else "out", "quantity": 1},
                headers={"Idempotency-Key": f"b{n}"},
            )
            assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        with statements(rt) as seen:
            assert (await rt.replayer.drain()).applied == 20
        lookups = [
            q for q in seen if q.lstrip().upper().startswith("SELECT") and "idempotency" in q
        ]
        records = [q for q in seen if q.lstrip().startswith("INSERT INTO idempotency")]
        assert (len(lookups), len(records), seen.count("COMMIT")) == (1, 1, 1), seen
        assert await stock(app, "W-1") == 10
