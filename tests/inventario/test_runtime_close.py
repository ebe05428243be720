"""The runtime closes everything it opened (issue 12 item 2).

Before, it looked for ``close`` on every adapter and so never closed the Redis and
OpenAI clients (they close with ``aclose()``): their connections stayed open after
shutdown. Here every dependency is configured and used, then the app shuts down, and
the process must hold no connection to any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from brownout import State
from brownout.health import Level
from brownout.testing import aeventually
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.s3 import S3Server
from tests.inventario.conftest import WIDGET, ai_settings, running, s3_settings
from tests.servers.plugin import RedisServer

pytest.importorskip("redis")
if not Path("/proc/self/net/tcp").exists():
    pytest.skip("needs Linux /proc to list the process's connections", allow_module_level=True)


def connected_ports() -> set[int]:
    """The remote ports of this process's established TCP connections (Linux /proc)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:  # closed meanwhile
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes:  # ESTABLISHED, and ours
                    ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


async def test_no_client_is_left_open_after_shutdown(
    make_app: Callable[..., FastAPI],
    make_redis: Callable[..., RedisServer],
    s3_server: S3Server,
    fresh_bucket: str,
    openai_stub: OpenAIStub,
    fresh_database: str,
) -> None:
    redis = make_redis()
    settings: dict[str, Any] = {
        "redis_url": redis.url,
        "database_url": fresh_database.replace("postgresql://", "postgresql+asyncpg://"),
        **s3_settings(s3_server, fresh_bucket),
        **ai_settings(openai_stub),
    }
    app = make_app(**settings)
    ports = {
        "redis": redis.port,
        "postgresql": int(fresh_database.rsplit(":", 1)[1].split("/", 1)[0]),
        "s3": s3_server.port,
        "openai": openai_stub.port,
    }
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        assert (await client.get("/products/W-1")).status_code == 200  # Redis: a miss, put

        async def hit() -> bool:  # cached reads start once the shared table was emptied
            return (await client.get("/products/W-1")).headers["X-Cache"] == "hit"

        await aeventually(hit, timeout=30.0, what="a read served from Redis")
        r = await client.post(
            "/invoices", files={"file": ("invoice.txt", b"W-1 Widget 5 x 2.50\n", "text/plain")}
        )
        assert r.status_code == 201, r.text  # S3, and OpenAI reading the lines
        assert r.json()["storage"] == "s3", r.json()
        assert len(openai_stub.requests) >= 1
        # S3's client may have let its connection go already (moto closes it)
        used = {ports[name] for name in ("redis", "postgresql", "openai")}
        assert used <= connected_ports(), ports
    left = {name: port for name, port in ports.items() if port in connected_ports()}
    assert left == {}, f"connections left open after shutdown: {left}"


async def test_shutdown_closes_the_degradation_manager(make_app: Callable[..., FastAPI]) -> None:
    """The runtime closes its manager with ``aclose()``: no heartbeat task is left, and
    the manager no longer hears the breakers (its subscriptions are gone)."""
    app = make_app()
    rt = app.state.runtime
    async with running(app) as client:
        assert (await client.get("/health/live")).status_code == 200
        assert any(t.get_name() == "brownout-degradation-heartbeat" for t in asyncio.all_tasks())
    assert not any(t.get_name() == "brownout-degradation-heartbeat" for t in asyncio.all_tasks())
    before = rt.manager.level
    rt.db.breaker.force_open()
    assert rt.db.breaker.state is State.FORCED_OPEN
    assert rt.manager.level is before is Level.OPTIMAL
