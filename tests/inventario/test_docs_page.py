"""``/docs`` and ``/redoc`` work offline: their assets come from the service, not a CDN.

The browser test drives the system's Chromium with every request that is not for the local
server aborted, as on a machine without internet: the pages must still list the operations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.inventario.live_server import serving


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_name_no_other_host(page: str, make_app: Callable[..., FastAPI]) -> None:
    """Every script, style sheet and icon is a path on this service."""
    app = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://inventario") as client:
        r = await client.get(page)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert re.findall(r"https?://", r.text) == [], r.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert assets, r.text
        for asset in assets:
            assert asset.startswith("/"), asset
            got = await client.get(asset)
            assert got.status_code == 200, asset
            assert len(got.content) > 1000, asset


def test_docs_list_the_operations_offline(chromium: Any, make_app: Callable[..., FastAPI]) -> None:
    from playwright.sync_api import Route, expect

    app = make_app()
    operations = [
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    ]
    assert ("POST", "/products") in operations
    with serving(app) as base:
        context = chromium.new_context()
        elsewhere: list[str] = []

        def offline(route: Route) -> None:
            if route.request.url.startswith(base + "/"):
                route.continue_()
            else:  # no internet: what a CDN would have served never arrives
                elsewhere.append(route.request.url)
                route.abort("internetdisconnected")

        context.route("**/*", offline)
        errors: list[str] = []
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{base}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("inventario")
        for method, path in operations:
            block = page.locator(f".opblock-{method.lower()}").filter(
                has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
            )
            expect(block.first).to_be_visible()
        version = page.evaluate("window.versions && window.versions.swaggerUI.version")
        assert str(version).startswith("5."), version  # 4.x cannot render OpenAPI 3.1

        assert errors == [], errors

        page.goto(f"{base}/redoc")
        expect(page.locator("h1").first).to_contain_text("inventario")
        expect(page.get_by_text("/products/{sku}/movements").first).to_be_attached()

        assert elsewhere == [], f"the docs asked for other hosts: {elsewhere}"
        # ReDoc's sidebar logo from cdn.redoc.ly is refused by the page's CSP, nothing else
        assert [e for e in errors if "cdn.redoc.ly" not in e] == [], errors
        context.close()
