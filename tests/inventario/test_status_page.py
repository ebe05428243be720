"""The live status page: its HTTP surface, and a real headless Chromium watching a fault happen."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from brownout.chaos import ThreadedFaultProxy
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server
from inventario.status_page import ASSETS
from tests.inventario.conftest import WIDGET, running
from tests.inventario.live_server import serving

# ------------------------------------------------------------------ plain HTTP


async def test_page_is_html_with_a_strict_csp(client: httpx.AsyncClient) -> None:
    r = await client.get("/status")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    assert 'src="status/assets/status.js"' in html
    assert 'href="status/assets/status.css"' in html
    # nothing inline that the CSP would block, nothing from elsewhere
    assert "<script>" not in html and "<style" not in html and "style=" not in html
    assert "http://" not in html and "https://" not in html


async def test_root_redirects_to_the_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code in (302, 307)
    assert r.headers["location"] == "/status"


@pytest.mark.parametrize(
    "name",
    ["status.css", "status.js", "trends.js", "uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"],
)
async def test_assets_are_served(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/status/assets/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == ASSETS[name]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert len(r.content) > 1000


async def test_script_never_inserts_data_as_html(client: httpx.AsyncClient) -> None:
    for name in ("status.js", "trends.js"):
        js = (await client.get(f"/status/assets/{name}")).text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in js, (name, sink)
        assert "textContent" in js


@pytest.mark.parametrize(
    "name", ["nope.js", "status.html", "..%2Fstatus_page.py", "..%2F..%2Fpyproject.toml"]
)
async def test_unknown_asset_is_404(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/status/assets/{name}")
    assert r.status_code == 404
    assert "status_page" not in r.text and "[project]" not in r.text


async def test_data_shape(make_app: Callable[..., FastAPI]) -> None:
    token = "data-shape-admin-token"
    async with running(make_app(admin_token=token)) as client:
        r = await client.get("/status/data", headers={"Authorization": f"Bearer {token}"})
        public = (await client.get("/status/data")).json()
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert doc["details"] is True
    assert doc["level"] == "OPTIMAL"
    assert doc["score"] == 100.0
    names = [c["name"] for c in doc["components"]]
    assert names == ["database", "cache", "s3", "openai"]
    by_name = {c["name"]: c for c in doc["components"]}
    db = by_name["database"]
    assert db["configured"] is True
    assert db["breaker"]["state"] == "closed"
    assert {"success_rate", "latency_p95_ms", "last_error", "pool_size"} <= set(db["adapter"])
    for absent in ("cache", "s3", "openai"):
        assert by_name[absent]["configured"] is False
        assert by_name[absent]["breaker"] is None
    assert doc["features"]["cache_read"]["enabled"] is False  # no Redis configured
    assert doc["features"]["inventory_write"]["enabled"] is True
    assert isinstance(doc["transitions"], list)
    assert "decision" in doc["explanation"]
    assert "predicted_recovery_s" in doc
    assert doc["backlogs"]["outbox"]["pending"] == 0
    assert doc["service"]["name"] == "inventario"
    assert isinstance(doc["now"], float)

    # the same service without the token: states, figures and counts, no adapter texts
    assert public["details"] is False and public["level"] == "OPTIMAL"
    assert [c["name"] for c in public["components"]] == names
    db = next(c for c in public["components"] if c["name"] == "database")
    assert db["breaker"]["state"] == "closed" and db["status"] == "up"
    assert {"success_rate", "latency_p95_ms", "pool_size"} <= set(db["adapter"])
    assert not {"last_error", "url", "dialect", "driver", "kind"} & set(db["adapter"])
    assert set(public["explanation"]) == {"decision"}
    assert public["backlogs"]["outbox"]["pending"] == 0
    assert public["service"]["name"] == "inventario" and isinstance(public["now"], float)


async def test_data_has_no_secrets(make_app: Callable[..., FastAPI]) -> None:
    secrets = {
        "database password": "Db-Pw-4f81c2e9",
        "redis password": "Redis-Pw-77a0b3",
        "openai key": "sk-test-StatusPageSecret-9c1d",
        "admin token": "admin-token-5e2a0d7c",
        "s3 secret": "S3-Secret-b6d4e1",
    }
    app = make_app(
        # nothing listens on port 9 (discard): every dependency fails and records errors
        database_url=f"postgresql+asyncpg://inv:{secrets['database password']}@127.0.0.1:9/inv",
        redis_url=f"redis://:{secrets['redis password']}@127.0.0.1:9/0",
        openai_api_key=secrets["openai key"],
        openai_base_url="http://127.0.0.1:9/v1",
        admin_token=secrets["admin token"],
        s3_endpoint_url="http://127.0.0.1:9",
        s3_bucket="invoices",
        s3_access_key_id="AKIDSTATUSPAGE",
        s3_secret_access_key=secrets["s3 secret"],
    )
    async with running(app) as client:
        for _ in range(4):
            await client.get("/products/W-1")
            await client.post("/products", json=WIDGET)
        public = await client.get("/status/data")
        r = await client.get(
            "/status/data", headers={"Authorization": f"Bearer {secrets['admin token']}"}
        )
        page = (await client.get("/status")).text
    assert r.status_code == 200 and public.status_code == 200
    doc = r.json()
    by_name = {c["name"]: c for c in doc["components"]}
    # the failures were recorded, so the check below looks at real error texts
    assert by_name["database"]["adapter"]["last_error"] or by_name["database"]["probe"]["error"]
    assert by_name["database"]["adapter"]["url"].startswith("postgresql+asyncpg://inv:")
    for what, secret in secrets.items():
        assert secret not in r.text, f"{what} leaked into /status/data"
        assert secret not in public.text, f"{what} leaked into the public /status/data"
        assert secret not in page, f"{what} leaked into /status"


def _texts(doc: Any, keys: frozenset[str]) -> list[str]:
    """Every non-empty string held under one of ``keys``, anywhere in ``doc``."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in keys and isinstance(value, str) and value:
                found.append(value)
            found += _texts(value, keys)
    elif isinstance(doc, list):
        for value in doc:
            found += _texts(value, keys)
    return found


async def test_data_without_the_token_names_no_internals(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    """SQLite under a tmp VAR_DIR, Redis and S3 unreachable on 127.0.0.1, a spool entry
    its bucket refused for good, an outbox dead letter: without the admin token
    /status/data shows states and counts but no path, host, bucket, key or error text;
    with it, all of them."""
    token = "status-data-admin-token-0b7e"
    app = make_app(
        var_dir=tmp_path / "var-dir-4d1f",
        admin_token=token,
        redis_url="redis://127.0.0.1:9/0",  # nothing listens on port 9: errors recorded
        s3_endpoint_url="http://127.0.0.1:9",
        s3_bucket="status-secret-bucket",
        s3_access_key_id="AKIDSTATUSDATA",
        s3_secret_access_key="S3-Secret-status-data",
    )
    rt = app.state.runtime
    spool = rt.spool
    entry = spool.put("old-secret-bucket", "invoices/ab/secret-object-key.txt", b"x")
    refusal = (
        "bucket 'old-secret-bucket': NoSuchBucket: An error occurred (NoSuchBucket) when "
        "calling the PutObject operation: The specified bucket does not exist"
    )
    assert spool.mark_failed(entry, refusal, give_up=True) is not None
    async with running(app) as client:
        assert (await client.post("/products", json={**WIDGET, "stock": 1})).status_code == 201
        for _ in range(4):  # cache reads fail: Redis's error texts are recorded
            assert (await client.get("/products/W-1")).status_code == 200
        rt.db.breaker.force_open()
        r = await client.post(
            "/products/W-1/movements",
            json={"kind": "out", "quantity": 5},
            headers={"Idempotency-Key": "dead-letter-key-7c"},
        )
        assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        await rt.replayer.drain()  # only 1 in stock: refused for good, a dead letter
        public = await client.get("/status/data")
        full = await client.get("/status/data", headers={"Authorization": f"Bearer {token}"})
        wrong = await client.get("/status/data", headers={"Authorization": "Bearer nope"})
        about = await client.get("/about")  # its backlogs are the same counts

    assert public.status_code == 200 and full.status_code == 200
    detailed, shown = full.json(), public.json()
    assert detailed["details"] is True and shown["details"] is False
    assert "ADMIN_TOKEN" in shown["details_hint"] and shown["details_available"] is True

    # the details are there for the operator: the check below looks at real texts
    errors = _texts(detailed, frozenset({"last_error", "error", "reason", "why", "url"}))
    errors = [e for e in errors if "127.0.0.1" in e or "Error" in e or "error" in e]
    cache = next(c for c in detailed["components"] if c["name"] == "cache")
    assert cache["breaker"]["last_error"] or cache["adapter"]["last_error"]
    internals = {
        "VAR_DIR path": str(tmp_path / "var-dir-4d1f"),
        "database file": "inventario.db",
        "host": "127.0.0.1",
        "configured bucket": "status-secret-bucket",
        "refusing bucket": "old-secret-bucket",
        "object key": "secret-object-key",
        "S3 error": "NoSuchBucket",
        "dead letter's key": "dead-letter-key-7c",
        "dead letter's reason": "only 1 of W-1 in stock",
        "driver": "aiosqlite",
    }
    for what, text in internals.items():
        assert text in full.text, f"{what} missing from the detailed /status/data"
        assert text not in public.text, f"{what} shown without the token"
        assert text not in about.text, f"{what} shown on /about without the token"
    assert errors
    for error in errors:
        assert error not in public.text, f"error text shown without the token: {error!r}"

    # what a person needs to see how the service is doing is all there
    assert (shown["level"], shown["score"]) == (detailed["level"], detailed["score"])
    by_name = {c["name"]: c for c in shown["components"]}
    for c in detailed["components"]:
        assert (by_name[c["name"]]["status"], by_name[c["name"]]["score"]) == (
            c["status"],
            c["score"],
        )
    assert by_name["cache"]["breaker"]["state"] == cache["breaker"]["state"]
    assert shown["features"]["cache_read"] == {
        k: detailed["features"]["cache_read"][k]
        for k in ("enabled", "reason", "requires", "worst_level", "description")
    }
    assert shown["transitions"] == detailed["transitions"] and shown["transitions"]
    outbox, spool_card = shown["backlogs"]["outbox"], shown["backlogs"]["spool"]
    assert (outbox["pending"], outbox["dead_letters"]) == (0, 1)
    assert (spool_card["files"], spool_card["failed"], spool_card["s3_configured"]) == (1, 1, True)
    assert "recent_dead" not in outbox and "failures" not in spool_card
    # a wrong token is refused, as on /health: not a silently shorter document
    assert wrong.status_code == 403
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_data_survives_a_failing_backlog(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(admin_token="b4cklog-t0ken")

    def broken() -> dict[str, Any]:
        raise OSError("disk gone")

    monkeypatch.setattr(app.state.runtime, "health_extras", broken)
    async with running(app) as client:
        r = await client.get("/status/data")
        full = await client.get("/status/data", headers={"Authorization": "Bearer b4cklog-t0ken"})
    assert r.status_code == 200 and full.status_code == 200
    assert r.json()["backlogs"] == {"error": "backlogs unavailable (the service's log says why)"}
    assert full.json()["backlogs"] == {"error": "backlogs unavailable: OSError"}


# ---------------------------------------------------------------- real browser


def _show_details(page: Any, token: str) -> None:
    """Enter the admin token in the page's form, as an operator would."""
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-submit").click()


def _cache_breaker(base: str) -> str:
    doc = httpx.get(f"{base}/status/data", timeout=5).json()
    cache = next(c for c in doc["components"] if c["name"] == "cache")
    state: str = cache["breaker"]["state"]
    return state


def test_browser_sees_redis_fail_without_reload(
    chromium: Any,
    make_app: Callable[..., FastAPI],
    redis_server: RedisServer,
    redis_proxy: ThreadedFaultProxy,
    openai_stub: OpenAIStub,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    # database + cache + openai configured: Redis alone down scores 75 => DEGRADED
    # (with only database + cache, the cache is a third of the weight: 66.7 => LIMITED)
    token = "status-page-admin-token-31"
    app = make_app(
        redis_url=redis_server.url_for(db=11, port=redis_proxy.port),
        openai_api_key="sk-test-status-page",
        openai_base_url=openai_stub.base_url,
        admin_token=token,
    )
    with serving(app) as base:
        r = httpx.post(f"{base}/products", json=WIDGET, timeout=5)
        assert r.status_code == 201, r.text
        assert httpx.get(f"{base}/products/W-1", timeout=5).status_code == 200

        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.goto(f"{base}/status")

        level = page.get_by_test_id("level")
        cache_breaker = page.get_by_test_id("breaker-cache")
        expect(level).to_have_text("OPTIMAL")
        expect(page.locator("body")).to_have_attribute("data-level", "OPTIMAL")
        expect(cache_breaker).to_have_text("closed")
        expect(page.get_by_test_id("status-s3")).to_have_text("not configured")
        expect(page.get_by_test_id("feature-cache_read")).to_have_attribute("data-enabled", "true")
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        expect(page.get_by_test_id("backlog-outbox")).to_be_visible()
        expect(page.get_by_test_id("timeline-empty")).to_be_visible()
        page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads

        # the real fault: every connection to Redis is reset; product reads go on
        redis_proxy.set_mode("reset")
        for _ in range(10):
            assert httpx.get(f"{base}/products/W-1", timeout=5).status_code == 200
            if _cache_breaker(base) == "open":
                break
        assert _cache_breaker(base) == "open"

        expect(level).to_have_text("DEGRADED")
        expect(page.locator("body")).to_have_attribute("data-level", "DEGRADED")
        expect(cache_breaker).to_have_text("open")
        expect(page.get_by_test_id("component-cache")).to_have_attribute("data-status", "down")
        expect(page.get_by_test_id("feature-cache_read")).to_have_attribute("data-enabled", "false")
        expect(page.get_by_test_id("timeline")).to_contain_text("OPTIMAL → DEGRADED")
        expect(page.get_by_test_id("timeline-empty")).to_be_hidden()
        # times people read carry their date and time zone (Chromium's default: UTC)
        when = page.get_by_test_id("timeline").locator(".when").first
        expect(when).to_contain_text(re.compile(r"20\d\d.*\d\d:\d\d:\d\d.*UTC"))
        expect(page.get_by_test_id("updated")).to_contain_text(re.compile(r"20\d\d.*UTC"))

        # without the token the page says the details are hidden, and shows no error text
        expect(page.get_by_test_id("details-notice")).to_be_visible()
        expect(page.get_by_test_id("details-notice")).to_contain_text("Details hidden")
        expect(page.get_by_test_id("why-hidden-cache")).to_contain_text("admin token")
        assert page.get_by_test_id("error-cache").count() == 0
        # the operator enters the token: the errors appear, the token stays in this tab
        _show_details(page, token)
        expect(page.get_by_test_id("details-shown")).to_be_visible()
        expect(page.get_by_test_id("details-notice")).to_be_hidden()
        expect(page.get_by_test_id("error-cache")).to_contain_text("last error")
        assert page.evaluate("sessionStorage.getItem('inventario.status.adminToken')") == token
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("window.__sameDocument") == "yes", "the page was reloaded"
        assert console_errors == [], console_errors  # no CSP violation, no script error

        shot = tmp_path / "status-degraded.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.is_file() and shot.stat().st_size > 0

        phone = chromium.new_context(viewport={"width": 390, "height": 844})
        small = phone.new_page()
        small.goto(f"{base}/status")
        expect(small.get_by_test_id("level")).to_have_text("DEGRADED")
        expect(small.get_by_test_id("breaker-cache")).to_have_text("open")
        width = small.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, f"horizontal scroll at phone width: scrollWidth {width}"
        small.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
        phone.close()

    # the service is gone: the open page says so instead of showing stale data as live
    expect(page.get_by_test_id("connection-lost")).to_be_visible()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "lost")
    expect(level).to_have_text("DEGRADED")  # the last known state stays readable
    page.screenshot(path=str(tmp_path / "status-lost.png"))
    context.close()


def test_page_escapes_hostile_text(
    chromium: Any, make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reason holding markup is shown as text: nothing is parsed or run. And the
    recovery prediction appears when the manager has one."""
    from playwright.sync_api import expect

    from brownout.health import Level

    app = make_app(admin_token="t0ken-for-pinning")
    monkeypatch.setattr(app.state.runtime.manager, "predict_recovery", lambda: 42.0)
    hostile = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
    with serving(app) as base:
        r = httpx.post(
            f"{base}/admin/level/pin",
            headers={"Authorization": "Bearer t0ken-for-pinning"},
            content=json.dumps({"level": "LIMITED", "duration": 60, "reason": hostile}),
            timeout=5,
        )
        assert r.status_code == 200, r.text
        assert app.state.runtime.manager.level is Level.LIMITED
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/status")
        expect(page.get_by_test_id("level")).to_have_text("LIMITED")
        expect(page.get_by_test_id("pinned")).to_contain_text(hostile)
        expect(page.get_by_test_id("timeline")).to_contain_text(hostile)
        assert page.locator("img").count() == 0 and page.locator("main b").count() == 0
        assert page.evaluate("window.__pwned") is None
        expect(page.get_by_test_id("recovery")).to_have_text(
            "Predicted recovery to OPTIMAL in about 42 s (from past recoveries)"
        )
        context.close()


def test_spool_card_says_s3_is_not_configured_and_shows_failed_files(
    chromium: Any,
    make_app: Callable[..., FastAPI],
    s3_server: S3Server,
    fresh_bucket: str,
    tmp_path: Path,
) -> None:
    """Without S3 the spool is where invoice files live: the card says so (no backlog
    warning). With S3, files their bucket refuses for good turn the card 'failed', with
    the reasons, and S3's card 'degraded'."""
    from playwright.sync_api import expect

    from brownout.testing import eventually
    from tests.inventario.conftest import s3_settings

    local = make_app(var_dir=tmp_path / "local")
    with serving(local) as base:
        local.state.runtime.spool.put(None, "inv.txt", b"x")
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/status")
        card = page.get_by_test_id("backlog-spool")
        expect(card).to_have_attribute("data-state", "local")
        expect(card).to_have_attribute("data-busy", "false")
        expect(page.get_by_test_id("spool-badge")).to_have_text("local store")
        expect(page.get_by_test_id("spool-sub")).to_contain_text("S3 is not configured")
        expect(page.get_by_test_id("spool-files")).to_have_text("1")
        context.close()

    token = "spool-card-admin-token-52"
    app = make_app(
        var_dir=tmp_path / "s3", admin_token=token, **s3_settings(s3_server, fresh_bucket)
    )
    spool = app.state.runtime.spool
    with serving(app) as base:
        spool.put(f"gone-{fresh_bucket}", "inv.txt", b"x")
        app.state.runtime.spool_uploader.wake()
        eventually(lambda: spool.stats()["failed"] == 1, timeout=15, what="a failed entry")
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/status")
        card = page.get_by_test_id("backlog-spool")
        expect(card).to_have_attribute("data-state", "failed")
        expect(page.get_by_test_id("spool-failed")).to_have_text("1")
        expect(page.get_by_test_id("status-s3")).to_have_text("degraded")
        # without the token: the count and what to do, not the bucket nor S3's error
        expect(card).to_contain_text("shown with the admin token")
        assert "NoSuchBucket" not in page.content() and fresh_bucket not in page.content()
        _show_details(page, token)
        expect(page.get_by_test_id("spool-failures")).to_contain_text("NoSuchBucket")
        expect(page.get_by_test_id("spool-sub")).to_contain_text(fresh_bucket)
        context.close()


def test_outbox_card_shows_waiting_writes_and_dead_letters_with_their_reasons(
    chromium: Any, make_app: Callable[..., FastAPI]
) -> None:
    """Writes waiting for the database say so; dead letters turn the card 'failed', with
    each one's reason and the command that acts on them."""
    from playwright.sync_api import expect

    token = "outbox-card-admin-token-73"
    app = make_app(admin_token=token)
    rt = app.state.runtime
    with serving(app) as base:
        assert httpx.post(f"{base}/products", json={**WIDGET, "stock": 1}).status_code == 201
        rt.db.breaker.force_open()
        for key, quantity in (("too-many", 5), ("fine", 1)):
            r = httpx.post(
                f"{base}/products/W-1/movements",
                json={"kind": "out", "quantity": quantity},
                headers={"Idempotency-Key": key},
            )
            assert r.status_code == 202, r.text
        rt.replayer.wake()  # rejected by the open breaker: the writes wait
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/status")
        card = page.get_by_test_id("backlog-outbox")
        expect(card).to_have_attribute("data-state", "waiting")
        expect(page.get_by_test_id("outbox-pending")).to_have_text("2")
        expect(page.get_by_test_id("outbox-sub")).to_contain_text("waiting for the database")

        rt.db.breaker.reset()
        rt.replayer.wake()
        expect(card).to_have_attribute("data-state", "failed")
        expect(page.get_by_test_id("outbox-dead")).to_have_text("1")
        expect(card).to_contain_text("inventario outbox list")
        # without the token: the count, not the key nor the database's refusal
        expect(card).to_contain_text("shown with the admin token")
        assert page.get_by_test_id("outbox-failures").count() == 0
        assert "InsufficientStock" not in page.content()
        _show_details(page, "not-the-token")  # a wrong token is said so, and forgotten
        expect(page.get_by_test_id("token-refused")).to_contain_text("HTTP 403")
        expect(page.get_by_test_id("details-notice")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
        _show_details(page, token)
        expect(page.get_by_test_id("outbox-failures")).to_contain_text(
            "too-many (stock.move): InsufficientStock: only 1 of W-1 in stock"
        )
        expect(page.get_by_test_id("token-refused")).to_be_hidden()
        context.close()
