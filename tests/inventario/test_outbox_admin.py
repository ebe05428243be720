"""Dead letters for operators: listed with their reason, retried, discarded (behind the token)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from inventario import store
from tests.inventario.conftest import WIDGET, running

TOKEN = "outbox-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _dead_letter(client: httpx.AsyncClient, app: FastAPI, key: str, quantity: int) -> None:
    """A movement queued while the database is down that cannot apply (not enough stock)."""
    rt = app.state.runtime
    rt.db.breaker.force_open()
    r = await client.post(
        "/products/W-1/movements",
        json={"kind": "out", "quantity": quantity},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 202, r.text
    rt.db.breaker.reset()
    await rt.replayer.drain()
    assert (await client.get(f"/writes/{key}")).json()["status"] == "dead"


async def test_dead_letters_are_listed_retried_and_discarded(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 1})).status_code == 201
        await _dead_letter(client, app, "too-many", 5)
        await _dead_letter(client, app, "way-too-many", 50)

        listed = await client.get("/admin/outbox", headers=AUTH)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert [d["key"] for d in body["dead_letters"]] == ["too-many", "way-too-many"]
        first = body["dead_letters"][0]
        assert first["operation"] == "stock.move" and first["payload"]["data"]["quantity"] == 5
        assert "only 1 of W-1 in stock" in first["reason"]
        assert body["stats"]["dead_letters"] == 2 and body["pending"] == []

        # the operator books stock in, then retries the first: it applies
        async with app.state.runtime.db.session() as s:
            await store.move_stock(s, sku="W-1", kind="in", quantity=10, reason="found")
        r = await client.post(
            "/admin/outbox/retry", json={"keys": ["too-many", "nope"]}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"done": 1, "not_dead": ["nope"], "dead_letters": 1}
        await app.state.runtime.replayer.drain()
        assert (await client.get("/writes/too-many")).json()["status"] == "applied"
        async with app.state.runtime.db.session() as s:
            assert (await store.get_product(s, "W-1"))["stock"] == 6

        # and gives up on the second: its key is known as discarded, with the reason
        r = await client.post("/admin/outbox/discard", json={"all": True}, headers=AUTH)
        assert r.json() == {"done": 1, "not_dead": [], "dead_letters": 0}
        status = (await client.get("/writes/way-too-many")).json()
        assert status["status"] == "discarded" and "in stock" in status["last_error"]
        about = (await client.get("/about")).json()["outbox"]
        assert about["retried_total"] == 1 and about["discarded_total"] == 1

        metrics = (await client.get("/metrics")).text
        assert 'brownout_outbox_dead_letters_retried_total{operation="stock.move"' in metrics
        assert 'brownout_outbox_dead_letters_discarded_total{operation="stock.move"' in metrics


async def test_the_outbox_admin_needs_the_token_and_a_clear_selection(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        r = await client.get("/admin/outbox")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert "WWW-Authenticate" in r.headers
        r = await client.get("/admin/outbox", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403
        assert TOKEN not in r.text
        for bad in ({}, {"keys": [], "all": False}, {"keys": ["a"], "all": True}, {"x": 1}):
            r = await client.post("/admin/outbox/retry", json=bad, headers=AUTH)
            assert r.status_code == 422, (bad, r.text)
        r = await client.post("/admin/outbox/discard", json={"keys": ["no spaces"]}, headers=AUTH)
        assert r.status_code == 422


async def test_without_a_token_there_are_no_outbox_admin_endpoints(
    make_app: Callable[..., FastAPI],
) -> None:
    async with running(make_app()) as client:
        assert (await client.get("/admin/outbox")).status_code == 404


async def test_a_pending_write_says_it_waits_without_internals(
    make_app: Callable[..., FastAPI],
) -> None:
    """/writes/{key} is public: why a write waits, in words; the error is the admin's."""
    app = make_app(admin_token=TOKEN)
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        rt.db.breaker.force_open()
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "in", "quantity": 1},
            headers={"Idempotency-Key": "waits"},
        )
        assert r.status_code == 202
        await rt.replayer.drain()  # rejected by the open breaker: it waits
        status = (await client.get("/writes/waits")).json()
        assert status == {
            "idempotency_key": "waits",
            "status": "pending",
            "operation": "stock.move",
            "attempts": 0,
            "last_error": "waiting: the database could not take it yet",
            "reason": None,  # the error as recorded: only with the admin token
        }
        listed = (await client.get("/admin/outbox", headers=AUTH)).json()
        (pending,) = listed["pending"]
        assert pending["key"] == "waits" and "BreakerOpen" in pending["waiting_because"]
