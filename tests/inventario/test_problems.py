"""inventario answers every error as an RFC 9457 problem, without internals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.inventario.conftest import WIDGET, running

#: What no error body may contain: driver and library names, SQL, paths.
INTERNALS = ("sqlalche", "asyncpg", "aiosqlite", "psycopg", "select ", "traceback", "/tmp/")


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:problem:{code}" and body["code"] == code, body
    assert body["status"] == status and body["title"] and body["detail"], body
    lowered = r.text.lower()
    for word in INTERNALS:
        assert word not in lowered, (word, r.text)
    return body


async def test_not_found_conflict_and_validation_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/products/NOPE"), 404, "not_found")
    assert_problem(await client.get("/no/such/route"), 404, "not_found")
    assert (await client.post("/products", json=WIDGET)).status_code == 201
    taken = assert_problem(await client.post("/products", json=WIDGET), 409, "sku_taken")
    assert "already exists" in taken["detail"]
    short = assert_problem(
        await client.post("/products/W-1/movements", json={"kind": "out", "quantity": 99}),
        409,
        "insufficient_stock",
    )
    assert short["stock"] == 10 and short["requested"] == 99 and short["sku"] == "W-1"
    invalid = assert_problem(
        await client.post("/products", json={**WIDGET, "price": "-1"}), 422, "validation_error"
    )
    assert [e["field"] for e in invalid["errors"]] == ["body.price"]
    reused = await client.post(
        "/products/W-1/movements",
        json={"kind": "in", "quantity": 1},
        headers={"Idempotency-Key": "k-1"},
    )
    assert reused.status_code == 201
    clash = await client.post(
        "/products/W-1/movements",
        json={"kind": "in", "quantity": 2},
        headers={"Idempotency-Key": "k-1"},
    )
    assert_problem(clash, 422, "idempotency_key_reused")


async def test_a_raw_nan_token_is_a_422_problem(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/products",
        content=b'{"sku": "N-1", "name": "n", "price": NaN, "cost": "1"}',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(r, 422, "validation_error")
    assert "body.price" in [e["field"] for e in body["errors"]]


async def test_a_huge_field_is_not_echoed_back(client: httpx.AsyncClient) -> None:
    r = await client.post("/products", json={**WIDGET, "name": "x" * 2_000_000})
    assert r.status_code in (413, 422), r.status_code
    assert r.headers["content-type"] == "application/problem+json"
    assert len(r.content) < 4000


async def test_an_unexpected_error_is_a_500_with_a_request_id_only(
    make_app: Callable[..., FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal state at /srv/inventario/db.sqlite")

    async with running(app) as client:
        app.state.runtime.db.session = explode
        app.state.runtime.db.run_read = explode  # GET /products/{sku} reads with it
        with caplog.at_level(logging.ERROR):
            r = await client.get("/products/W-1")
    body = assert_problem(r, 500, "internal_error")
    assert "secret internal state" not in r.text and "RuntimeError" not in r.text
    assert body["request_id"] in caplog.text and "secret internal state" in caplog.text


@pytest.mark.servers
async def test_a_missing_postgres_database_is_a_503_without_internals(
    make_app: Callable[..., FastAPI], postgres_server: Any
) -> None:
    url = postgres_server.sqlalchemy_url("inventario_does_not_exist_yet")
    app = make_app(database_url=url)
    async with running(app) as client:
        r = await client.get("/products")
        body = assert_problem(r, 503, "dependency_unavailable")
        assert int(r.headers["Retry-After"]) == body["retry_after"] >= 1
        assert "inventario_does_not_exist_yet" not in r.text
        assert "127.0.0.1" not in r.text and "postgres" not in r.text.lower()


async def test_health_shows_no_paths_users_or_hosts_without_the_admin_token(
    make_app: Callable[..., FastAPI], tmp_path: Any
) -> None:
    token = "adm1n-t0ken-for-health"
    app = make_app(admin_token=token)
    async with running(app) as client:
        public = await client.get("/health")
        assert public.status_code == 200
        assert str(tmp_path) not in public.text and "inventario.db" not in public.text
        assert {c["name"] for c in public.json()["components"]} >= {"database", "cache"}
        full = await client.get("/health", headers={"Authorization": f"Bearer {token}"})
        assert full.status_code == 200 and full.json()["details"] is True
        assert "inventario.db" in full.text  # the details are there, for the operator


async def test_about_shows_the_configuration_only_with_the_admin_token(
    make_app: Callable[..., FastAPI], tmp_path: Any
) -> None:
    token = "adm1n-t0ken-for-about"
    app = make_app(admin_token=token)
    async with running(app) as client:
        public = await client.get("/about")
        assert public.status_code == 200
        assert public.json()["service"] == "inventario" and "outbox" in public.json()
        assert "configuration" not in public.json() and str(tmp_path) not in public.text
        full = await client.get("/about", headers={"Authorization": f"Bearer {token}"})
        assert full.json()["configuration"]["admin_token"] == "***"
        assert str(tmp_path) in full.text
        wrong = await client.get("/about", headers={"Authorization": "Bearer nope"})
        assert_problem(wrong, 403, "forbidden")
