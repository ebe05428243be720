"""Concurrent requests answer like the same requests one after the other (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from tests.inventario.conftest import WIDGET, running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def backend_app(request: pytest.FixtureRequest, make_app: Callable[..., FastAPI]) -> FastAPI:
    if request.param == "sqlite":
        return make_app()
    dsn: str = request.getfixturevalue("fresh_database")
    return make_app(database_url=dsn.replace("postgresql://", "postgresql+asyncpg://", 1))


async def test_concurrent_creates_of_one_sku_are_one_201_and_409s(backend_app: FastAPI) -> None:
    async with running(backend_app) as client:
        answers = await asyncio.gather(
            *(client.post("/products", json={**WIDGET, "sku": "RACE-1"}) for _ in range(20))
        )
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: 1, 409: 19}, [(r.status_code, r.text[:200]) for r in answers]
        for r in answers:
            if r.status_code == 409:
                assert r.json()["code"] == "sku_taken"
        listed = (await client.get("/products")).json()
        assert listed["total"] == 1


async def test_concurrent_movements_with_one_key_apply_once_and_replay(
    backend_app: FastAPI,
) -> None:
    async with running(backend_app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 100})).status_code == 201

        async def move() -> Any:
            return await client.post(
                "/products/W-1/movements",
                json={"kind": "out", "quantity": 3},
                headers={"Idempotency-Key": "same-key"},
            )

        answers = await asyncio.gather(*(move() for _ in range(50)))
        statuses = Counter(r.status_code for r in answers)
        assert statuses[201] == 1 and statuses[200] == 49, [
            (r.status_code, r.text[:200]) for r in answers if r.status_code >= 300
        ]
        bodies = {r.json()["id"] for r in answers}
        assert len(bodies) == 1  # every answer is the one movement
        assert (await client.get("/products/W-1")).json()["stock"] == 97
        assert len((await client.get("/products/W-1/movements")).json()) == 1


async def test_concurrent_outs_never_take_stock_below_zero(backend_app: FastAPI) -> None:
    async with running(backend_app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 10})).status_code == 201
        answers = await asyncio.gather(
            *(
                client.post("/products/W-1/movements", json={"kind": "out", "quantity": 3})
                for _ in range(10)
            )
        )
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {201: 3, 409: 7}, [(r.status_code, r.text[:200]) for r in answers]
        assert (await client.get("/products/W-1")).json()["stock"] == 1


async def test_many_concurrent_movements_all_apply_in_turn(backend_app: FastAPI) -> None:
    """Many concurrent movements on a few products (ins, outs, adjusts): each is applied
    directly (201) or refused for want of stock (409), none queued (202) or failed on a
    lock; the stock is always the start plus the applied deltas and never negative, and
    each movement's ``stock_after`` follows from the one applied before it on its sku.
    On SQLite the writes take the one writer connection in turn (WAL, BEGIN IMMEDIATE)."""
    skus = ("RUN-1", "RUN-2", "RUN-3")
    async with running(backend_app) as client:
        for sku in skus:
            r = await client.post("/products", json={**WIDGET, "sku": sku, "stock": 5})
            assert r.status_code == 201, r.text
        bodies = [
            {"kind": ("out", "out", "in", "adjust")[i % 4], "quantity": 1 + i % 3}
            for i in range(90)
        ]
        answers = await asyncio.gather(
            *(
                client.post(f"/products/{skus[i % 3]}/movements", json=body)
                for i, body in enumerate(bodies)
            )
        )
        statuses = Counter(r.status_code for r in answers)
        assert set(statuses) <= {201, 409}, [(r.status_code, r.text[:200]) for r in answers]
        for r in answers:
            if r.status_code == 409:
                assert r.json()["code"] == "insufficient_stock", r.text
        for sku in skus:
            history = (await client.get(f"/products/{sku}/movements?limit=500")).json()
            applied = [r.json() for r in answers if r.status_code == 201]
            mine = sorted((m for m in applied if m["sku"] == sku), key=lambda m: m["id"])
            assert [m["id"] for m in mine] == sorted(m["id"] for m in history)
            stock = 5
            for m in mine:  # in commit order: each one saw the stock the previous one left
                assert m["stock_after"] == stock + m["delta"] >= 0, (m, stock)
                stock = m["stock_after"]
            assert (await client.get(f"/products/{sku}")).json()["stock"] == stock
