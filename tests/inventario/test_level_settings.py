"""The level's settings act (issue 14 item 7): replay batch size and Redis admission."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from brownout.health import DEFAULT_SETTINGS, Level
from inventario.level_settings import LevelScaledLimit, replay_batch
from inventario.runtime import REPLAY_BATCH
from tests.inventario.conftest import WIDGET, running


def test_replay_batch_follows_the_batch_multiplier() -> None:
    sizes = [replay_batch(REPLAY_BATCH, DEFAULT_SETTINGS[level]) for level in Level]
    assert sizes == [200, 160, 100, 50, 20]
    assert replay_batch(3, DEFAULT_SETTINGS[Level.EMERGENCY]) == 1  # never 0


def test_level_scaled_limit() -> None:
    factor = [1.0]
    limit = LevelScaledLimit(50, lambda: factor[0])
    assert limit.limit == 50
    factor[0] = 0.2
    assert limit.on_sample(0.0, 0.01, 1, False) == 10
    factor[0] = 0.001
    assert limit.limit == 1
    with pytest.raises(ValueError, match="base must be an integer >= 1"):
        LevelScaledLimit(0)


def test_level_scaled_limit_scales_an_adaptive_one() -> None:
    from brownout.overload import Gradient2

    factor = [1.0]
    gradient = Gradient2(initial_limit=50, max_limit=50, window=1.0, min_samples=1)
    limit = LevelScaledLimit(50, lambda: factor[0], adaptive=gradient)
    assert limit.limit == 50
    now = 0.0
    for _ in range(5):  # normal latency, busy: the long-term RTT is learnt
        now += 1.1
        limit.on_sample(now, 0.001, 50, False)
    for _ in range(30):  # 200x slower: the gradient falls, the limit with it
        now += 1.1
        limit.on_sample(now, 0.2, 50, False)
    assert gradient.limit < 50 and limit.limit == gradient.limit
    factor[0] = 0.5
    assert limit.limit == max(1, gradient.limit // 2)


async def test_the_replay_batch_at_minimal_is_a_quarter(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        assert rt.replayer.batch_size == 200
        rt.db.breaker.force_open()
        rt.manager.evaluate(immediate=True)
        assert rt.manager.level is Level.MINIMAL  # the database alone down
        for i in range(60):
            r = await client.post(
                "/products/W-1/movements",
                json={"kind": "in", "quantity": 1},
                headers={"Idempotency-Key": f"m-{i}"},
            )
            assert r.status_code == 202, r.text
        assert rt.replayer.batch_size == 50
        sizes: list[int] = []
        batch = rt.outbox.batch

        def spy(size: int, *args: Any, **kwargs: Any) -> Any:
            sizes.append(size)
            return batch(size, *args, **kwargs)

        monkeypatch.setattr(rt.outbox, "batch", spy)
        # the level stays MINIMAL while the database comes back (recovery dwell)
        rt.manager.pin(Level.MINIMAL, duration=60, reason="recovering")
        rt.db.breaker.reset()
        await rt.replayer.drain()
        assert (await client.get("/writes/m-59")).json()["status"] == "applied"
        assert sizes and max(sizes) == 50, sizes
        rt.manager.pin(Level.OPTIMAL, duration=60, reason="recovered")
        assert rt.replayer.batch_size == 200
        data = (await client.get("/status/data")).json()["level_settings"]
        assert data["current"] == "OPTIMAL"
        assert [row["replay_batch"] for row in data["levels"]] == [200, 160, 100, 50, 20]
        assert "replay_batch" in data["applied"]


async def test_the_redis_admission_limit_follows_the_level(
    make_app: Callable[..., FastAPI], redis_server: Any
) -> None:
    app = make_app(redis_url=redis_server.url)
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        bulkhead = rt.redis_admission
        assert bulkhead is not None and rt.cache.guards.bulkhead is bulkhead
        assert (await client.get("/products/W-1")).status_code == 200
        assert bulkhead.limit == 50
        admitted = bulkhead.snapshot().admitted
        assert admitted >= 1  # the read went through it
        rt.manager.pin(Level.DEGRADED, duration=60, reason="test")
        assert (await client.get("/products/W-1")).status_code == 200  # a call: limit read
        assert bulkhead.limit == 45  # 50 x 0.9
        data = (await client.get("/status/data")).json()["level_settings"]
        assert [row["redis_admission"] for row in data["levels"]] == [50, 45, 37, 25, 10]
        rt.manager.pin(Level.OPTIMAL, duration=60, reason="test")
        assert (await client.get("/products/W-1")).status_code == 200
        assert bulkhead.limit == 50
