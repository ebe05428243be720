"""Fixtures for inventario's tests: one app per test on its own SQLite file, and the
headless Chromium the page tests share."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tools.stack import service_settings

from brownout.chaos import ThreadedFaultProxy
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.s3 import S3Server
from inventario.app import create_app
from inventario.config import load_settings
from tests.servers._util import missing, require_module
from tests.servers.plugin import RedisServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def s3_settings(
    s3_server: S3Server, bucket: str, proxy: ThreadedFaultProxy | None = None
) -> dict[str, Any]:
    """inventario's S3 settings for ``bucket`` of ``s3_server`` (through ``proxy`` if given)."""
    return service_settings(s3=(s3_server, proxy, bucket))


def ai_settings(stub: OpenAIStub) -> dict[str, Any]:
    """inventario's OpenAI settings for the stub, reached directly."""
    return service_settings(openai=(stub, None, "sk-test-invoices"))


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, and a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inventario") as client:
            yield client


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., FastAPI]:
    def make(**settings: Any) -> FastAPI:
        settings.setdefault("var_dir", tmp_path / "var")
        settings.setdefault("heartbeat", 3600.0)
        return create_app(load_settings(**settings))

    return make


@pytest.fixture
async def client(make_app: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(make_app()) as c:
        yield c


WIDGET = {
    "sku": "W-1",
    "name": "Widget",
    "category": "tools",
    "price": "9.99",
    "cost": "5.00",
    "stock": 10,
    "min_stock": 3,
}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Playwright's Chromium driving the system's /usr/bin/chromium (never a download)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing(f"{CHROMIUM} not found: install the Debian package chromium")
    require_module("playwright.sync_api", "playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ------------------------------------------------ a private Redis behind a fault proxy


@pytest.fixture
def server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server for the test (tests/servers): the proxy may slow it down."""
    return make_redis()


@pytest.fixture
def proxy(server: RedisServer, make_proxy: Callable[..., ThreadedFaultProxy]) -> ThreadedFaultProxy:
    """``server`` behind a fault proxy: the service is pointed at the proxy."""
    return make_proxy(server)


@pytest.fixture
def direct(server: RedisServer) -> Iterator[Any]:
    """A client straight to the server (not through the proxy): what Redis holds."""
    redis_py = pytest.importorskip("redis")
    client = redis_py.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()
