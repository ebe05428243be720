"""Issue 14 item 6, the status page as a person sees it, in headless Chromium with
nothing but the service reachable (every other request the page would make is aborted
and counted: it must work offline): after some traffic to a real PostgreSQL and Redis,
every chart has a line (screenshots read back), the breaker bands and the level timeline
are drawn, the bulkhead in use is charted for the dependencies that have one, there is
one plain-words line per level, times carry their date and the browser's time zone, and
no secret (the DSN's password, the API key, the admin token) is anywhere in the rendered
page, ``/status/data`` or ``/status/trends``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI

from brownout.health import Level
from brownout.testing import eventually
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.redis import RedisServer
from tests.inventario.conftest import WIDGET
from tests.inventario.live_server import serving
from tests.inventario.test_status_trends_browser import _colour_pixels, _line_pixels

SECRETS = {
    "database password": "Pg-Pw-outsider-5e2b",
    "openai key": "sk-test-Outsider-81fa",
    "admin token": "admin-token-outsider-c3d9",
}
GREEN = (0x2F, 0xBF, 0x71)


def _samples(base: str, name: str) -> int:
    doc = httpx.get(f"{base}/status/trends", timeout=5).json()
    series = doc["dependencies"].get(name, {})
    return sum(1 for r in series.get("rps", []) if r)


def test_the_status_page_as_a_person_sees_it_offline(
    chromium: Any,
    make_app: Callable[..., FastAPI],
    fresh_database: str,
    redis_server: RedisServer,
    openai_stub: OpenAIStub,
) -> None:
    from playwright.sync_api import Route, expect

    # trust authentication ignores the password: it is in the DSN only to be kept secret
    dsn = fresh_database.replace("@", f":{SECRETS['database password']}@", 1)
    assert SECRETS["database password"] in dsn
    app = make_app(
        database_url=dsn,
        redis_url=redis_server.url_for(db=12),
        openai_api_key=SECRETS["openai key"],
        openai_base_url=openai_stub.base_url,
        admin_token=SECRETS["admin token"],
        heartbeat=1.0,
    )
    with serving(app) as base:
        origin = urlsplit(base).netloc
        for i in range(10):
            r = httpx.post(f"{base}/products", json={**WIDGET, "sku": f"O-{i}"}, timeout=10)
            assert r.status_code == 201, r.text

        def traffic() -> bool:
            for i in range(10):
                assert httpx.get(f"{base}/products/O-{i}", timeout=10).status_code == 200
            return min(_samples(base, "database"), _samples(base, "cache")) >= 3

        # the recorder samples once a second: traffic until three samples saw some
        eventually(traffic, timeout=60, what="three samples with traffic per dependency")

        context = chromium.new_context(
            viewport={"width": 1280, "height": 2400},
            timezone_id="America/New_York",
            locale="en-US",
        )
        elsewhere: list[str] = []

        def only_the_service(route: Route) -> None:
            if urlsplit(route.request.url).netloc == origin:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_service)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/status")

        for name in ("database", "cache"):
            for key in ("rps", "p95_ms", "error_rate"):
                canvas = page.get_by_test_id(f"chart-{name}-{key}").locator("canvas")
                expect(canvas).to_have_count(1, timeout=10_000)
            for key in ("rps", "p95_ms"):
                shot = page.get_by_test_id(f"chart-{name}-{key}").locator("canvas").screenshot()
                assert _line_pixels(shot) > 20, f"the {name} {key} chart shows no line"
            band = page.get_by_test_id(f"band-{name}").screenshot()
            assert _colour_pixels(band, GREEN) > 50, f"no 'closed' band for {name}"
            # both have an admission limit (a bulkhead) in inventario: charted
            in_use = page.get_by_test_id(f"chart-{name}-in_use").locator("canvas")
            expect(in_use).to_have_count(1, timeout=10_000)
            assert _line_pixels(in_use.screenshot()) > 20, f"no bulkhead in use line for {name}"
            expect(page.get_by_test_id(f"in-use-{name}")).to_have_text(
                re.compile(r"bulkhead in use: \d+ %")
            )
        # the AI has no bulkhead in inventario: no chart, said as n/a
        expect(page.get_by_test_id("in-use-openai")).to_have_text("bulkhead in use: n/a")
        assert page.get_by_test_id("chart-openai-in_use").count() == 0

        level = page.get_by_test_id("level-band").screenshot()
        assert _colour_pixels(level, GREEN) > 50, "no level timeline drawn"
        lines = page.get_by_test_id("level-lines").locator("li")
        expect(lines).to_have_count(len(Level))
        for i, lvl in enumerate(Level):
            text = lines.nth(i).inner_text()
            name, _, words = text.partition(": ")
            assert name == lvl.name.lower(), text
            # plain words: no feature identifiers, no missing text
            assert re.fullmatch(r"[a-z][A-Za-z ,;()'-]+", words), text
            assert "undefined" not in words and "null" not in words, text
        # the browser's zone, with the date: December in New York is EST
        expect(page.get_by_test_id("trends-range")).to_have_text(
            re.compile(r"from \w{3} \d\d, 20\d\d, \d\d:\d\d:\d\d (AM|PM) EST to .*EST")
        )
        expect(page.get_by_test_id("updated")).to_contain_text(re.compile(r"20\d\d.*EST"))

        # nothing secret in what the page shows, nor in what it reads
        rendered = page.content()
        public = httpx.get(f"{base}/status/data", timeout=5).text
        trends = httpx.get(f"{base}/status/trends", timeout=5).text
        detailed = httpx.get(
            f"{base}/status/data",
            headers={"Authorization": f"Bearer {SECRETS['admin token']}"},
            timeout=5,
        ).text
        for what, secret in SECRETS.items():
            for where, text in (
                ("the rendered page", rendered),
                ("/status/data", public),
                ("/status/data with the token", detailed),
                ("/status/trends", trends),
            ):
                assert secret not in text, f"the {what} is in {where}"
        context.close()
    assert elsewhere == [], f"the page asked for something else than the service: {elsewhere}"
    assert errors == [], errors
