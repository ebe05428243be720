"""Priority shedding at inventario's edge, with real requests to a served app.

Requests are held in flight by sending a write's headers and only part of its
body: the app has admitted them and waits for the rest. With
``SHED_MAX_IN_FLIGHT=4``, two held requests put the pressure at 0.5 (sheddable
requests refused), four at 1.0 (default ones too); critical ones are served
throughout.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from brownout.health import Level
from brownout.testing import eventually
from brownout.web import Criticality
from inventario.config import ConfigError, load_settings
from inventario.shedding import parse_routes
from tests.inventario.conftest import WIDGET
from tests.inventario.live_server import serving

ADMIN = "shedding-admin-token"


@contextlib.contextmanager
def held(base: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` product writes (critical) in flight: headers sent, body not finished."""
    url = urlsplit(base)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection((url.hostname, url.port), timeout=10)
            s.sendall(
                b"POST /products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def in_flight(client: httpx.Client) -> int:
    data = client.get("/status/data").json()
    return int(data["shedding"]["in_flight"])


def assert_shed(r: httpx.Response, code: str, criticality: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-degradation-level"]
    body = r.json()
    assert body["code"] == code and body["criticality"] == criticality
    assert body["retry_after"] == int(r.headers["retry-after"])


@pytest.fixture
def served(make_app: Callable[..., FastAPI]) -> Iterator[tuple[FastAPI, httpx.Client]]:
    app = make_app(shed_max_in_flight=4, shed_max_delay=5.0, admin_token=ADMIN)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/products", json=WIDGET).status_code == 201
        yield app, client


def test_lowest_classes_are_shed_first_and_critical_ones_served(
    served: tuple[FastAPI, httpx.Client],
) -> None:
    app, client = served
    base = str(client.base_url)
    assert client.get("/reports/low-stock").status_code == 200
    with held(base, 2):
        eventually(lambda: in_flight(client) == 2, what="two writes in flight")
        assert_shed(client.get("/reports/low-stock"), "overloaded", "sheddable")
        assert_shed(client.get("/products/W-1/price-suggestion"), "overloaded", "sheddable")
        assert client.get("/products/W-1").status_code == 200  # default: 3 of 4
        with held(base, 2):
            eventually(lambda: in_flight(client) == 4, what="four writes in flight")
            assert_shed(client.get("/products/W-1"), "overloaded", "default")
            r = client.post(
                "/products/W-1/movements", json={"kind": "out", "quantity": 1, "reason": "sale"}
            )
            assert r.status_code in (200, 201, 202), r.text  # critical: served
            r = client.patch("/products/W-1", json={"name": "Widget 2"})
            assert r.status_code == 200, r.text
            assert client.get("/health").status_code == 200  # exempt
            assert client.get("/metrics").status_code == 200
    eventually(lambda: in_flight(client) == 0, what="the held writes to end")
    assert client.get("/reports/low-stock").status_code == 200

    data = client.get("/status/data").json()["shedding"]
    assert data["shed"]["sheddable"]["overload"] == 2
    assert data["shed"]["default"]["overload"] == 1
    assert data["shed"]["critical"] == {"overload": 0, "level": 0}
    assert data["max_in_flight"] == 4 and data["peak_in_flight"] >= 5
    metrics = client.get("/metrics").text
    assert (
        'brownout_requests_shed_total{criticality="sheddable",reason="overload",shedder="edge"} 2.0'
        in metrics
    )
    assert 'brownout_requests_in_flight{criticality="critical",shedder="edge"} 0.0' in metrics
    explanation = client.get("/health", headers={"Authorization": f"Bearer {ADMIN}"}).json()[
        "explanation"
    ]
    assert explanation["shedding"]["shed"]["default"]["overload"] == 1
    assert app.state.runtime.shedder.in_flight == 0


def test_the_level_sheds_whatever_the_load(served: tuple[FastAPI, httpx.Client]) -> None:
    app, client = served
    manager = app.state.runtime.manager
    manager.pin(Level.MINIMAL, duration=60, reason="test")
    assert_shed(client.get("/reports/low-stock"), "shed_by_level", "sheddable")
    assert client.get("/products/W-1").status_code == 200
    r = client.post(
        "/products/W-1/movements", json={"kind": "in", "quantity": 2, "reason": "delivery"}
    )
    assert r.status_code in (200, 201, 202), r.text  # critical: served
    assert client.get("/status/data").json()["shedding"]["shedding"] == ["sheddable"]
    manager.pin(Level.EMERGENCY, duration=60, reason="test")
    # below MINIMAL the feature gates refuse, with their own reason (not shed_by_level)
    r = client.get("/products/W-1")
    assert r.status_code == 503 and r.json()["code"] != "shed_by_level"
    assert app.state.runtime.shedder.shed[Criticality.DEFAULT, "level"] == 0
    manager.pin(Level.OPTIMAL, duration=60, reason="test")
    assert client.get("/products/W-1").status_code == 200
    assert client.get("/reports/low-stock").status_code == 200
    manager.unpin()


def test_route_criticality_is_configurable(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(
        shed_max_in_flight=2,
        route_criticality="GET /products/{sku}=sheddable, GET /reports/low-stock=critical",
    )
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/products", json=WIDGET).status_code == 201
        with held(base, 1):
            eventually(lambda: in_flight(client) == 1, what="a write in flight")
            assert_shed(client.get("/products/W-1"), "overloaded", "sheddable")
            assert client.get("/reports/low-stock").status_code == 200


def test_bad_route_criticality_is_refused_naming_the_entry(
    make_app: Callable[..., FastAPI],
) -> None:
    with pytest.raises(ConfigError, match="'urgent' is not one of"):
        load_settings(route_criticality="GET /products=urgent")
    with pytest.raises(ConfigError, match="not 'METHOD /path=class'"):
        load_settings(route_criticality="GET /products")
    with pytest.raises(ConfigError, match="GET /prodcts"):
        make_app(route_criticality="GET /prodcts=critical")
    assert parse_routes(" GET  /x=Critical ,") == {"GET /x": Criticality.CRITICAL}


def test_the_status_page_shows_shedding_and_what_each_level_changes(
    make_app: Callable[..., FastAPI], chromium: Any
) -> None:
    from playwright.sync_api import expect

    app = make_app(shed_max_in_flight=4, shed_max_delay=5.0)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/products", json=WIDGET).status_code == 201
        page = chromium.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/status")
        expect(page.get_by_test_id("shedding-sub")).to_have_text("serving every request class")
        with held(base, 2):
            eventually(lambda: in_flight(client) == 2, what="two writes in flight")
            assert_shed(client.get("/reports/low-stock"), "overloaded", "sheddable")
            expect(page.get_by_test_id("shedding-in-flight")).to_have_text("2 / 4")
            expect(page.get_by_test_id("shedding-sub")).to_contain_text("refusing sheddable")
            expect(page.get_by_test_id("shedding-shed-sheddable")).to_have_text("1")
        row = page.get_by_test_id("level-settings-OPTIMAL")
        expect(row).to_have_attribute("data-current", "true")
        expect(page.get_by_test_id("level-settings-MINIMAL")).to_contain_text("50")
        app.state.runtime.manager.pin(Level.MINIMAL, duration=60, reason="test")
        expect(page.get_by_test_id("level-settings-MINIMAL")).to_have_attribute(
            "data-current", "true"
        )
        assert errors == []
