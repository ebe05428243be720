"""``/status/trends``: each dependency's last minutes and the level timeline, public."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI

from inventario.runtime import FEATURES
from inventario.status_page import public_trends
from tests.inventario.conftest import WIDGET, running


async def test_trends_after_traffic_have_rates_states_and_level_lines(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app()
    async with running(app) as client:
        trends = app.state.runtime.trends
        await trends.stop()  # sampled by hand below, not by the clock
        t0 = time.time()
        trends.sample(t0)
        for i in range(5):
            await client.post("/products", json={**WIDGET, "sku": f"W-{i}"})
            await client.get(f"/products/W-{i}")
        trends.sample(t0 + 1.0)
        r = await client.get("/status/trends")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    db = doc["dependencies"]["database"]
    # the task's first sample (at start) may come before these two
    assert db["t"][-2:] == [t0, t0 + 1.0]
    assert db["rps"][-1] > 0
    assert db["error_rate"][-1] == 0.0
    assert db["p95_ms"][-1] is not None and db["p95_ms"][-1] > 0
    assert set(db["state"]) == {"closed"}
    assert db["in_use"][-1] is None
    assert doc["levels"][0] == "optimal"
    assert doc["level"]["value"][-2:] == [0, 0]
    impacts = doc["level_impacts"]
    assert list(impacts) == doc["levels"]
    assert impacts["optimal"] == "everything works"
    # plain words of what users live with, from each feature's ``when_off``
    reports = next(f.when_off for f in FEATURES if f.name == "complex_queries")
    assert reports == "searches and reports are off"
    assert reports in impacts["limited"] and reports not in impacts["degraded"]
    assert "writes are being queued" in impacts["minimal"]
    assert "writes are being queued" not in impacts["limited"]
    assert all(f.when_off for f in FEATURES), "every inventario feature says what its loss means"


async def test_trends_name_no_secret_and_no_host(make_app: Callable[..., FastAPI]) -> None:
    secrets = {
        "database password": "Db-Pw-trends-4f81",
        "redis password": "Redis-Pw-trends-77a0",
        "openai key": "sk-test-Trends-9c1d",
    }
    app = make_app(
        # nothing listens on port 9: every dependency fails and records errors
        database_url=f"postgresql+asyncpg://inv:{secrets['database password']}@127.0.0.1:9/inv",
        redis_url=f"redis://:{secrets['redis password']}@127.0.0.1:9/0",
        openai_api_key=secrets["openai key"],
        openai_base_url="http://127.0.0.1:9/v1",
        admin_token="admin-token-trends",
    )
    async with running(app) as client:
        trends = app.state.runtime.trends
        trends.sample(time.time())
        for _ in range(4):
            await client.get("/products/W-1")
            await client.post("/products", json=WIDGET)
        trends.sample(time.time() + 1.0)
        r = await client.get("/status/trends")
    assert r.status_code == 200
    for what, secret in secrets.items():
        assert secret not in r.text, f"{what} leaked into /status/trends"
    for text in ("127.0.0.1", "postgresql", "redis://", "Connect", "refused"):
        assert text not in r.text
    db = r.json()["dependencies"]["database"]
    assert any(e for e in db["error_rate"] if e)  # the failures are there, as numbers


def test_public_trends_keeps_numbers_and_state_words_only() -> None:
    doc = {
        "dependencies": {
            "database": {
                "t": [1.0, "host"],
                "rps": [2.0, "postgresql://u:pw@h/db"],
                "state": ["closed", "boom: 10.0.0.1 refused"],
                "error": ["a text"],
            }
        },
        "level": {"t": [1.0], "value": [0]},
    }
    out = public_trends(doc)
    db = out["dependencies"]["database"]
    assert db["t"] == [1.0, None] and db["rps"] == [2.0, None]
    assert db["state"] == ["closed", None]
    assert "error" not in db
