"""A direct write is one transaction run whole on the writer (SQLite) or a pooled
session (PostgreSQL): a failure anywhere in it leaves nothing half written."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI

from inventario import writes
from tests.inventario.conftest import WIDGET, running
from tests.inventario.test_races import backend_app

__all__ = ["backend_app"]  # a fixture, imported to be used here


async def test_a_write_failing_after_its_stock_update_leaves_nothing(
    backend_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idempotency record fails after the stock was updated and the movement
    inserted: the answer is a 500, and neither the stock change nor the movement nor
    the key stays; the same request afterwards applies once."""
    real = writes._record
    failing = {"on": False}

    def record(key: str, operation: str, wanted: str, result: Mapping[str, Any]) -> Any:
        if failing["on"]:
            raise RuntimeError("crash between the movement and its idempotency record")
        return real(key, operation, wanted, result)

    monkeypatch.setattr(writes, "_record", record)
    async with running(backend_app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 50})).status_code == 201
        failing["on"] = True
        move = {"json": {"kind": "out", "quantity": 7}, "headers": {"Idempotency-Key": "k-1"}}
        r = await client.post("/products/W-1/movements", **move)
        assert r.status_code == 500, r.text
        assert (await client.get("/products/W-1")).json()["stock"] == 50
        assert (await client.get("/products/W-1/movements")).json() == []
        assert (await client.get("/writes/k-1")).json()["status"] == "unknown"  # not queued
        failing["on"] = False
        r = await client.post("/products/W-1/movements", **move)
        assert r.status_code == 201, r.text
        assert (await client.get("/products/W-1")).json()["stock"] == 43


async def test_concurrent_movements_on_many_products_add_up(backend_app: FastAPI) -> None:
    """80 concurrent movements (16 at a time) on 4 products, some refused (not enough stock): every
    product's stock is its start plus the deltas answered 201, its history holds
    exactly those movements, and each one starts where the one before it ended."""
    async with running(backend_app) as client:
        for i in range(4):
            body = {**WIDGET, "sku": f"W-{i}", "stock": 20}
            assert (await client.post("/products", json=body)).status_code == 201
        plan = [(f"W-{n % 4}", "out" if n % 3 else "in", 1 + n % 5) for n in range(80)]

        # 16 at a time (the load bench's clients): PostgreSQL's pool (10 + 10) never
        # runs dry, which would queue writes (202) instead of applying them
        gate = asyncio.Semaphore(16)

        async def move(sku: str, kind: str, qty: int) -> Any:
            async with gate:
                return await client.post(
                    f"/products/{sku}/movements", json={"kind": kind, "quantity": qty}
                )

        answers = await asyncio.gather(*(move(*p) for p in plan))
        statuses = Counter(r.status_code for r in answers)
        assert set(statuses) <= {201, 409}, [(r.status_code, r.text[:200]) for r in answers]
        for i in range(4):
            sku = f"W-{i}"
            applied = [
                r.json()
                for (s, _, _), r in zip(plan, answers, strict=True)
                if s == sku and r.status_code == 201
            ]
            stock = (await client.get(f"/products/{sku}")).json()["stock"]
            assert stock == 20 + sum(m["delta"] for m in applied) >= 0
            history = (await client.get(f"/products/{sku}/movements?limit=100")).json()
            assert sorted(m["id"] for m in history) == sorted(m["id"] for m in applied)
            level = 20  # in commit order, each movement starts where the one before ended
            for m in sorted(history, key=lambda m: m["id"]):
                assert m["stock_after"] == level + m["delta"] >= 0, history
                level = m["stock_after"]
            assert level == stock
