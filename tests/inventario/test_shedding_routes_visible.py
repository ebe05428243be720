"""Issue 14 item 5: "every route has a criticality ... configurable per route; visible in
explain(), metrics and /status". The classes were visible (counts, metrics by class) but
not which route is in which: an operator could not check that ROUTE_CRITICALITY took.
Now ``explain()`` (``route_criticality``), ``/status/data`` (``shedding.routes``, public:
the API's own route templates) and the page's load-shedding card list them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from tests.inventario.conftest import running
from tests.inventario.live_server import serving

ADMIN = "routes-visible-admin-token"
OVERRIDES = "GET /products/{sku}=sheddable, GET /reports/low-stock=critical"
EXPECTED = {
    "critical": [
        "GET /reports/low-stock",
        "PATCH /products/{sku}",
        "POST /products",
        "POST /products/{sku}/movements",
    ],
    "default": [],
    "sheddable": [
        "GET /products/{sku}",
        "GET /products/{sku}/price-suggestion",
        "POST /invoices/{invoice_id}/extract",
    ],
}


async def test_explain_and_status_data_list_each_class_routes(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(route_criticality=OVERRIDES, admin_token=ADMIN)
    async with running(app) as client:
        health = await client.get("/health", headers={"Authorization": f"Bearer {ADMIN}"})
        public = (await client.get("/status/data")).json()
        detailed = (
            await client.get("/status/data", headers={"Authorization": f"Bearer {ADMIN}"})
        ).json()
    assert health.json()["explanation"]["route_criticality"] == EXPECTED
    assert public["shedding"]["routes"] == EXPECTED
    assert detailed["shedding"]["routes"] == EXPECTED


async def test_without_overrides_the_routes_are_inventarios_own(
    make_app: Callable[..., FastAPI],
) -> None:
    async with running(make_app()) as client:
        routes = (await client.get("/status/data")).json()["shedding"]["routes"]
    assert routes["critical"] == [
        "PATCH /products/{sku}",
        "POST /products",
        "POST /products/{sku}/movements",
    ]
    assert routes["sheddable"] == [
        "GET /products/{sku}/price-suggestion",
        "GET /reports/low-stock",
        "POST /invoices/{invoice_id}/extract",
    ]


def test_the_page_lists_the_routes_of_each_class(
    chromium: Any, make_app: Callable[..., FastAPI]
) -> None:
    from playwright.sync_api import expect

    app = make_app(route_criticality=OVERRIDES)
    with serving(app) as base:
        page = chromium.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/status")
        expect(page.get_by_test_id("shedding-routes-critical")).to_have_text(
            "critical: " + ", ".join(EXPECTED["critical"])
        )
        expect(page.get_by_test_id("shedding-routes-default")).to_have_text(
            "default: every other route"
        )
        expect(page.get_by_test_id("shedding-routes-sheddable")).to_contain_text(
            "GET /products/{sku}, GET /products/{sku}/price-suggestion"
        )
        assert errors == []
