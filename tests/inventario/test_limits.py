"""Every number accepted fits where it is stored; text and body sizes have documented limits."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from inventario.schemas import MAX_OFFSET, MAX_PRICE, MAX_QUANTITY, MAX_STOCK
from tests.inventario.conftest import WIDGET, running


def problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = r.json()
    return body


@pytest.mark.parametrize(
    "params",
    [
        {"max_price": "1e300"},
        {"min_price": "1e300"},
        {"max_price": "NaN"},
        {"min_price": "Infinity"},
        {"offset": "99999999999999999999"},
        {"offset": str(MAX_OFFSET + 1)},
        {"limit": "99999999999999999999"},
        {"q": "a\x00b"},
        {"category": "\x00"},
    ],
)
async def test_list_filters_out_of_range_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    problem(await client.get("/products", params=params), 422)


@pytest.mark.parametrize("path", ["/products/W-1/movements", "/invoices"])
async def test_every_offset_out_of_range_is_422(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.post("/products", json=WIDGET)).status_code == 201
    problem(await client.get(path, params={"offset": "99999999999999999999"}), 422)
    problem(await client.get(path, params={"offset": str(MAX_OFFSET + 1)}), 422)
    assert (await client.get(path, params={"offset": str(MAX_OFFSET)})).status_code == 200


async def test_the_largest_values_are_accepted(client: httpx.AsyncClient) -> None:
    big = {**WIDGET, "price": str(MAX_PRICE), "cost": str(MAX_PRICE), "stock": MAX_STOCK}
    assert (await client.post("/products", json=big)).status_code == 201
    r = await client.get("/products", params={"max_price": str(MAX_PRICE), "offset": MAX_OFFSET})
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def backend_app(request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]) -> FastAPI:
    if request.param == "sqlite":
        return make_app()
    dsn: str = request.getfixturevalue("fresh_database")
    return make_app(database_url=dsn.replace("postgresql://", "postgresql+asyncpg://", 1))


async def test_stock_cannot_grow_past_its_maximum(backend_app: FastAPI) -> None:
    async with running(backend_app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 0})).status_code == 201
        move = {"kind": "in", "quantity": MAX_QUANTITY}
        first = await client.post("/products/W-1/movements", json=move)
        assert first.status_code == 201 and first.json()["stock_after"] == MAX_QUANTITY
        for _ in range(3):
            r = await client.post("/products/W-1/movements", json=move)
            if MAX_QUANTITY * 2 > MAX_STOCK:
                break
        body = problem(r, 409)
        assert body["code"] == "stock_limit" and body["max_stock"] == MAX_STOCK
        assert str(MAX_STOCK) in str(body["detail"])
        assert (await client.get("/products/W-1")).json()["stock"] <= MAX_STOCK
        too_many = await client.post(
            "/products/W-1/movements", json={"kind": "in", "quantity": MAX_QUANTITY + 1}
        )
        problem(too_many, 422)


def escaped(body: object) -> dict[str, object]:
    """``body`` as JSON with ``\\uXXXX`` escapes: how a lone surrogate travels in JSON."""
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "ok\udfffok"])
async def test_nul_and_lone_surrogates_are_422_on_every_backend(
    backend_app: FastAPI, bad: str
) -> None:
    async with running(backend_app) as client:
        for body in ({**WIDGET, "name": bad}, {**WIDGET, "category": bad}):
            r = await client.post("/products", **escaped(body))  # type: ignore[arg-type]
            problem(r, 422)
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        r = await client.patch("/products/W-1", **escaped({"name": bad}))  # type: ignore[arg-type]
        problem(r, 422)
        move = {"kind": "in", "quantity": 1, "reason": bad}
        r = await client.post("/products/W-1/movements", **escaped(move))  # type: ignore[arg-type]
        problem(r, 422)
        if "\x00" in bad:  # a URL cannot carry a lone surrogate (its UTF-8 does not exist)
            problem(await client.get("/products", params={"q": bad}), 422)
            problem(await client.get("/products/a%00b"), 422)
        assert (await client.get("/products/W-1")).json()["name"] == WIDGET["name"]


async def test_bodies_over_the_limit_are_413_before_parsing(
    make_app: Callable[..., FastAPI],
) -> None:
    async with running(make_app(max_body_bytes=2000)) as client:
        r = await client.post("/products", json={**WIDGET, "name": "x" * 3000})
        body = problem(r, 413)
        assert body["code"] == "body_too_large" and body["max_bytes"] == 2000
        assert "MAX_BODY_BYTES" in str(body["detail"])

        async def chunks() -> object:  # no Content-Length: counted while reading
            yield b'{"sku": "W-2", "name": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        r = await client.post(
            "/products", content=chunks(), headers={"content-type": "application/json"}
        )
        problem(r, 413)
        assert (await client.post("/products", json=WIDGET)).status_code == 201


async def test_the_default_body_limit_is_one_mib(client: httpx.AsyncClient) -> None:
    r = await client.post("/products", json={**WIDGET, "name": "x" * (1024 * 1024)})
    assert problem(r, 413)["max_bytes"] == 1024 * 1024
    r = await client.post("/products", json={**WIDGET, "name": "x" * 500_000})
    body = problem(r, 422)
    assert len(r.content) < 2000 and "x" * 41 not in r.text
    assert body["errors"][0]["field"] == "body.name"  # type: ignore[index]
