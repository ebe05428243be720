"""inventario's HTTP API on the embedded defaults (SQLite, no Redis/S3/OpenAI)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from brownout.testing import aeventually
from inventario import store
from tests.inventario.conftest import WIDGET, running


async def create(client: httpx.AsyncClient, **overrides: object) -> httpx.Response:
    return await client.post("/products", json={**WIDGET, **overrides})


# ------------------------------------------------------------------ products


async def test_create_read_update_and_list(client: httpx.AsyncClient) -> None:
    r = await create(client)
    assert r.status_code == 201, r.text
    assert r.json()["price"] == "9.99" and r.json()["low_stock"] is False
    assert r.headers["X-Degradation-Level"] == "OPTIMAL"

    r = await client.get("/products/W-1")
    assert r.status_code == 200 and r.json()["name"] == "Widget"

    r = await client.patch("/products/W-1", json={"price": "12.50", "min_stock": 20})
    assert r.status_code == 200, r.text
    assert r.json()["price"] == "12.50" and r.json()["low_stock"] is True

    await create(client, sku="G-1", name="Gadget", category="toys", price="100.00")
    r = await client.get("/products", params={"category": "tools"})
    assert [p["sku"] for p in r.json()["items"]] == ["W-1"]
    r = await client.get("/products", params={"q": "gad"})
    assert [p["sku"] for p in r.json()["items"]] == ["G-1"]
    r = await client.get("/products", params={"min_price": "50"})
    assert [p["sku"] for p in r.json()["items"]] == ["G-1"]
    r = await client.get("/products", params={"limit": 1, "offset": 1})
    page = r.json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["sku"] == "W-1"


async def test_duplicate_sku_is_409(client: httpx.AsyncClient) -> None:
    await create(client)
    r = await create(client)
    assert r.status_code == 409
    assert "already exists" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**WIDGET, "price": "-1"}, "price"),
        ({**WIDGET, "sku": "../etc"}, "sku"),
        ({**WIDGET, "stock": -5}, "stock"),
        ({**WIDGET, "unknown": 1}, "unknown"),
        ({k: v for k, v in WIDGET.items() if k != "name"}, "name"),
        ({**WIDGET, "price": "1.999"}, "price"),
    ],
)
async def test_bad_product_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    r = await client.post("/products", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "validation_error"
    assert any(err["field"] == f"body.{field}" for err in r.json()["errors"]), r.json()
    assert (await client.get("/products")).json()["total"] == 0  # nothing half written


async def test_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/products", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "json" in r.text.lower()


async def test_unknown_sku_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/products/NOPE")).status_code == 404
    r = await client.post("/products/NOPE/movements", json={"kind": "in", "quantity": 1})
    assert r.status_code == 404 and "NOPE" in r.json()["detail"]
    assert (await client.patch("/products/NOPE", json={"name": "x"})).status_code == 404
    assert (await client.get("/products/NOPE/movements")).status_code == 404


# ------------------------------------------------------------------ stock


async def test_movements_and_history(client: httpx.AsyncClient) -> None:
    await create(client)
    r = await client.post(
        "/products/W-1/movements", json={"kind": "in", "quantity": 5, "reason": "delivery"}
    )
    assert r.status_code == 201 and r.json()["stock_after"] == 15
    r = await client.post("/products/W-1/movements", json={"kind": "out", "quantity": 14})
    assert r.json()["stock_after"] == 1 and r.json()["delta"] == -14
    r = await client.post(
        "/products/W-1/movements", json={"kind": "adjust", "quantity": 7, "reason": "count"}
    )
    assert r.json()["stock_after"] == 7 and r.json()["delta"] == 6
    history = (await client.get("/products/W-1/movements")).json()
    assert [m["kind"] for m in history] == ["adjust", "out", "in"]
    assert (await client.get("/products/W-1")).json()["stock"] == 7


async def test_stock_never_goes_negative(client: httpx.AsyncClient) -> None:
    await create(client, stock=2)
    r = await client.post("/products/W-1/movements", json={"kind": "out", "quantity": 3})
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "insufficient_stock" and body["stock"] == 2 and body["requested"] == 3
    assert (await client.get("/products/W-1")).json()["stock"] == 2
    assert (await client.get("/products/W-1/movements")).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "in", "quantity": -1},
        {"kind": "in", "quantity": 0},
        {"kind": "sideways", "quantity": 1},
        {"kind": "out"},
    ],
)
async def test_bad_movements_are_rejected(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    await create(client)
    r = await client.post("/products/W-1/movements", json=body)
    assert r.status_code in (400, 422), r.text
    assert (await client.get("/products/W-1")).json()["stock"] == 10


async def test_low_stock_report(client: httpx.AsyncClient) -> None:
    await create(client, stock=2, min_stock=5)
    await create(client, sku="OK-1", stock=50, min_stock=5)
    r = await client.get("/reports/low-stock")
    assert [p["sku"] for p in r.json()] == ["W-1"]


# ------------------------------------------------------------------ idempotency


async def test_idempotency_key_makes_retries_safe(client: httpx.AsyncClient) -> None:
    await create(client)
    headers = {"Idempotency-Key": "move-42"}
    body = {"kind": "out", "quantity": 4}
    first = await client.post("/products/W-1/movements", json=body, headers=headers)
    again = await client.post("/products/W-1/movements", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert (await client.get("/products/W-1")).json()["stock"] == 6


async def test_idempotency_key_reused_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    await create(client)
    headers = {"Idempotency-Key": "move-43"}
    await client.post(
        "/products/W-1/movements", json={"kind": "in", "quantity": 1}, headers=headers
    )
    r = await client.post(
        "/products/W-1/movements", json={"kind": "in", "quantity": 2}, headers=headers
    )
    assert r.status_code == 422 and "different request" in r.json()["detail"]
    assert (await client.get("/products/W-1")).json()["stock"] == 11


# ------------------------------------------------------------------ degraded writes


async def test_writes_are_queued_while_the_database_is_down_and_applied_after(
    make_app: Callable[..., FastAPI], redis_server: object
) -> None:
    # with a cache beside it, losing the database is MINIMAL (the database rule), and
    # writes are accepted into the outbox; with the database alone it would be EMERGENCY
    app = make_app(redis_url=redis_server.url)  # type: ignore[attr-defined]
    async with running(app) as client:
        await create(client)
        rt = app.state.runtime
        rt.db.breaker.force_open()
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 3},
            headers={"Idempotency-Key": "q-1"},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["status_url"] == "/writes/q-1"
        assert r.headers["X-Degradation-Level"] == "MINIMAL"
        assert (await client.get("/writes/q-1")).json()["status"] == "pending"
        # the same request again is the same write; another body under the key is refused
        again = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 3},
            headers={"Idempotency-Key": "q-1"},
        )
        assert again.status_code == 202
        clash = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 9},
            headers={"Idempotency-Key": "q-1"},
        )
        assert clash.status_code == 422
        r = await client.get("/products/W-1")
        assert r.status_code == 503 and "Retry-After" in r.headers
        rt.db.breaker.reset()
        report = await rt.replayer.drain()
        assert report.applied == 1
        assert (await client.get("/writes/q-1")).json()["status"] == "applied"
        assert (await client.get("/products/W-1")).json()["stock"] == 7
        history = (await client.get("/products/W-1/movements")).json()
        assert [(m["delta"], m["source"]) for m in history] == [(-3, "outbox")]


async def test_cached_reads_are_served_while_the_database_is_down(
    make_app: Callable[..., FastAPI], redis_server: object
) -> None:
    """MINIMAL is "reads only": the reads left with the database down are the cached ones."""
    app = make_app(redis_url=redis_server.url)  # type: ignore[attr-defined]
    async with running(app) as client:
        await create(client, sku="MIN-1")
        await create(client, sku="MIN-2")
        assert (await client.get("/products/MIN-1")).status_code == 200  # now cached
        rt = app.state.runtime
        rt.db.breaker.force_open()
        r = await client.get("/products/MIN-1")
        assert r.status_code == 200, r.text
        assert r.json()["sku"] == "MIN-1"
        assert r.headers["X-Degradation-Level"] == "MINIMAL"
        missed = await client.get("/products/MIN-2")  # never read: not cached
        assert missed.status_code == 503 and "Retry-After" in missed.headers


async def test_a_replayed_write_drops_a_cache_entry_refilled_meanwhile(
    make_app: Callable[..., FastAPI], redis_server: object
) -> None:
    """Between the database's return and the replay, a read can cache the old row; the
    replay's commit invalidates it, so the next read shows the replayed write."""
    import json

    import redis

    from inventario.cache import product_key

    app = make_app(redis_url=redis_server.url)  # type: ignore[attr-defined]
    async with running(app) as client:
        await create(client, sku="RPL-1")
        old = (await client.get("/products/RPL-1")).json()
        rt = app.state.runtime
        rt.db.breaker.force_open()
        r = await client.patch("/products/RPL-1", json={"name": "Renamed"})
        assert r.status_code == 202, r.text
        # a read in the window after the database returned, before the replay, cached
        # the old row again
        raw = redis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
        raw.set(product_key("RPL-1"), json.dumps(old))
        rt.db.breaker.reset()
        report = await rt.replayer.drain()
        assert report.applied == 1
        # the invalidation runs as a task right after the commit
        await aeventually(lambda: not raw.exists(product_key("RPL-1")), what="the invalidation")
        raw.close()
        assert (await client.get("/products/RPL-1")).json()["name"] == "Renamed"


async def test_a_queued_write_that_cannot_apply_is_dead_with_its_reason(
    make_app: Callable[..., FastAPI], redis_server: object
) -> None:
    app = make_app(redis_url=redis_server.url)  # type: ignore[attr-defined]
    async with running(app) as client:
        await create(client, stock=1)
        rt = app.state.runtime
        rt.db.breaker.force_open()
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 5},
            headers={"Idempotency-Key": "too-many"},
        )
        assert r.status_code == 202
        rt.db.breaker.reset()
        await rt.replayer.drain()
        status = (await client.get("/writes/too-many")).json()
        assert status["status"] == "dead"
        assert "only 1 of W-1 in stock" in status["last_error"]


async def test_emergency_refuses_writes_with_503_and_retry_after(
    make_app: Callable[..., FastAPI],
) -> None:
    from brownout.health import Level

    app = make_app()
    async with running(app) as client:
        await create(client)
        app.state.runtime.manager.pin(Level.EMERGENCY, duration=60)
        r = await client.post("/products/W-1/movements", json={"kind": "in", "quantity": 1})
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["feature"] == "inventory_write"
        assert r.headers["X-Degradation-Level"] == "EMERGENCY"
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 503
        # maintenance mode: database reads are off too, with the reason
        read = await client.get("/products/W-1")
        assert read.status_code == 503 and "Retry-After" in read.headers
        assert "database reads are off at level EMERGENCY" in read.json()["detail"]
        assert (await client.get("/status/data")).status_code == 200


@pytest.mark.parametrize("pinned", [False, True], ids=["database-alone", "and-emergency"])
async def test_with_the_database_alone_an_outage_queues_writes(
    make_app: Callable[..., FastAPI], pinned: bool
) -> None:
    """The embedded SQLite default, nothing else configured: the database down scored 0
    (EMERGENCY, writes refused); it is MINIMAL (the database-down rule), and the outbox
    takes the writes, even with the level pinned at EMERGENCY (it exists for this)."""
    from brownout.health import Level

    app = make_app()
    async with running(app) as client:
        await create(client)
        rt = app.state.runtime
        rt.db.breaker.force_open()
        if pinned:  # down and in maintenance: the write is kept all the same
            rt.manager.pin(Level.EMERGENCY, duration=60)
        rt.manager.evaluate(immediate=True)
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "in", "quantity": 2},
            headers={"Idempotency-Key": "alone-1"},
        )
        assert r.status_code == 202, r.text
        assert r.headers["X-Degradation-Level"] == ("EMERGENCY" if pinned else "MINIMAL")
        detail = r.json()["detail"]
        assert detail.startswith("the database is unavailable (circuit breaker forced_open)")
        rt.db.breaker.reset()
        assert (await rt.replayer.drain()).applied == 1
        async with rt.db.session() as s:  # the level is held (recovery dwell): not via HTTP
            assert (await store.get_product(s, "W-1"))["stock"] == 12


async def test_a_write_queued_with_the_database_up_says_why_truthfully(
    make_app: Callable[..., FastAPI],
) -> None:
    """MINIMAL with the database healthy (Redis, S3 and OpenAI down): direct writes are
    off at that level, and the 202 says so, not that the database is unavailable."""
    from brownout.health import Level

    app = make_app()
    async with running(app) as client:
        await create(client)
        rt = app.state.runtime
        rt.manager.pin(Level.MINIMAL, duration=60)
        r = await client.post("/products/W-1/movements", json={"kind": "in", "quantity": 1})
        assert r.status_code == 202, r.text
        detail = r.json()["detail"]
        assert "database is unavailable" not in detail
        assert detail.startswith("direct writes are off at level MINIMAL"), detail


# ------------------------------------------------------------------ pricing, misc


async def test_price_suggestion_falls_back_to_the_rule_without_ai(
    client: httpx.AsyncClient,
) -> None:
    await create(client, cost="10.00")
    r = await client.get("/products/W-1/price-suggestion")
    body = r.json()
    assert body["source"] == "rule" and body["suggested_price"] == "13.50"
    assert "markup" in body["rationale"]


def test_rule_price_grows_with_monthly_inflation() -> None:
    from decimal import Decimal

    from inventario.services.pricing import rule_price

    assert rule_price(Decimal("10"), 0.35, 0.02, 0) == Decimal("13.50")
    assert rule_price(Decimal("10"), 0.35, 0.02, 30 * 86400) == Decimal("13.77")


async def test_health_metrics_and_about_never_show_secrets(
    make_app: Callable[..., FastAPI],
) -> None:
    secret = "adm1n-t0ken-SECRET"
    app = make_app(admin_token=secret)
    async with running(app) as client:
        for path in ("/health", "/metrics", "/about", "/health/ready"):
            r = await client.get(path)
            assert r.status_code == 200, path
            assert secret not in r.text
        assert "brownout_breaker_state" in (await client.get("/metrics")).text
        about = await client.get("/about", headers={"Authorization": f"Bearer {secret}"})
        assert about.json()["configuration"]["admin_token"] == "***" and secret not in about.text


def test_bad_configuration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from inventario.config import ConfigError, load_settings

    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    monkeypatch.setenv("INVOICE_MAX_BYTES", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DATABASE_URL" in str(info.value) and "INVOICE_MAX_BYTES" in str(info.value)
