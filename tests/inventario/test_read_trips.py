"""On SQLite the reads of a request run whole in one trip to the pooled connection's
thread (``AsyncDatabase.run_read``), not one round trip from the event loop per driver
call: a product, a page of products, a product's movements."""

from __future__ import annotations

from typing import Any

import aiosqlite
import pytest
from fastapi import FastAPI

from tests.inventario.conftest import WIDGET, running


@pytest.mark.parametrize(
    "path", ["/products/W-1", "/products?limit=20&offset=0", "/products/W-1/movements?limit=20"]
)
async def test_a_read_is_one_trip_to_the_database_thread(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    app: FastAPI = make_app()  # SQLite under VAR_DIR, no Redis: every GET reads the database
    trips: list[int] = []
    real = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(1)
        return await real(self, fn, *args, **kwargs)

    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        move = {"kind": "in", "quantity": 1}
        assert (await client.post("/products/W-1/movements", json=move)).status_code == 201
        assert (await client.get(path)).status_code == 200  # pooled connection opened
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        answer = await client.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.json()  # the product, the page, the movement
        # the function (the rollback of what it began runs with it: no pool reset after)
        assert len(trips) == 1, len(trips)
