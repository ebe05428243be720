"""brownout.web: status endpoints, feature gates, the level header, admin control, plain ASGI."""

from __future__ import annotations

import doctest
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import brownout.web
from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State
from brownout.adapter import Adapter, DependencyError, ErrorRule, ErrorTable, Figures
from brownout.health import Component, DegradationManager, Feature, Level, UnknownFeature
from brownout.prometheus import CONTENT_TYPE, PrometheusMetrics
from brownout.testing import FakeClock
from brownout.web import (
    DegradationHeaderMiddleware,
    StatusApp,
    check_features,
    health_router,
    install,
    requires_feature,
)

TOKEN = "t0ken-Adm1n-very-secret-42"
DSN_SECRET = "hunter2-db-pass"


class KVAdapter(Adapter):
    kind = "kv"
    errors = ErrorTable(ErrorRule(ConnectionError, True, "connection", "unreachable"))

    def __init__(self, **kw: Any) -> None:
        super().__init__(secrets=[DSN_SECRET], **kw)
        self.up = True

    def get(self, key: str) -> bytes:
        def fetch() -> bytes:
            if not self.up:
                raise ConnectionError(f"cannot reach kv://app:{DSN_SECRET}@kv:6379")
            return key.encode()

        return self._run("get", fetch, figures=Figures(key=key, cache_hits=1))

    def _probe_once(self) -> None:
        if not self.up:
            raise ConnectionError(f"kv://app:{DSN_SECRET}@kv:6379 refused")

    def extra_figures(self) -> dict[str, Any]:
        return {"pool_in_use": 1, "pool_size": 4}


@dataclass
class World:
    clock: FakeClock
    manager: DegradationManager
    kv: KVAdapter
    metrics: PrometheusMetrics

    def breaker(self, name: str) -> CircuitBreaker:
        cb = self.manager.component(name).breaker
        assert cb is not None
        return cb


@pytest.fixture
def world() -> Iterator[World]:
    clock = FakeClock(100.0)
    kv = KVAdapter(
        name="kv", config=BreakerConfig(consecutive_failures=2, open_for=30), clock=clock
    )
    manager = DegradationManager(
        [
            Component(
                "database",
                breaker=CircuitBreaker("database", clock=clock),
                required_for_ready=True,
            ),
            Component("cache", breaker=CircuitBreaker("cache", clock=clock)),
            Component("openai", breaker=CircuitBreaker("openai", clock=clock)),
            Component.of(kv, weight=0.1),
            Component("s3", configured=False),
        ],
        features=[
            Feature("cache_read", {"cache"}, Level.DEGRADED, "serve reads from the cache"),
            Feature("orders", {"database"}, Level.LIMITED, "take orders"),
            Feature("status", (), Level.EMERGENCY, "health pages"),
        ],
        dwell=5.0,
        clock=clock,
    )
    metrics = PrometheusMetrics()
    metrics.attach(manager)
    metrics.attach(kv)
    yield World(clock, manager, kv, metrics)
    manager.close()


def make_app(world: World, *, admin_token: str | None = TOKEN, metrics: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/orders", dependencies=[Depends(requires_feature("orders"))])
    async def orders() -> dict[str, str]:
        return {"orders": "ok"}

    @app.get("/cached", dependencies=[Depends(requires_feature("cache_read"))])
    async def cached() -> dict[str, str]:
        return {"cached": "ok"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler exploded")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    install(
        app,
        world.manager,
        metrics=world.metrics if metrics else None,
        admin_token=admin_token,
    )
    return app


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def trip(world: World, name: str) -> None:
    world.breaker(name).force_open("test outage")


# ------------------------------------------------------------------ probes


async def test_live_is_alive_even_with_dependencies_down(world: World) -> None:
    async with client(make_app(world)) as http:
        r = await http.get("/health/live")
        assert r.status_code == 200
        assert r.json() == {"status": "alive"}
        trip(world, "database")
        trip(world, "cache")
        assert world.manager.level is Level.EMERGENCY
        r = await http.get("/health/live")
        assert r.status_code == 200
        assert r.json() == {"status": "alive"}
        assert r.headers["X-Degradation-Level"] == "EMERGENCY"


async def test_ready_while_healthy_and_degraded(world: World) -> None:
    async with client(make_app(world)) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready"
        assert body["level"] == "OPTIMAL"
        assert body["required"] == ["database"]
        trip(world, "cache")  # not required: degraded but ready
        r = await http.get("/health/ready")
        assert r.status_code == 200
        assert r.json()["level"] == "DEGRADED"


async def test_ready_fails_at_emergency_while_live_does_not(world: World) -> None:
    world.manager.pin(Level.EMERGENCY, duration=60, reason="maintenance")
    async with client(make_app(world)) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not_ready"
        assert body["reasons"] == ["degradation level is EMERGENCY"]
        assert int(r.headers["Retry-After"]) >= 1
        assert (await http.get("/health/live")).status_code == 200


async def test_ready_fails_while_a_required_component_is_down(world: World) -> None:
    trip(world, "database")
    assert world.manager.level is Level.MINIMAL  # not EMERGENCY: the rule alone
    async with client(make_app(world)) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["reasons"] == ["required component database is down"]
        assert r.headers["X-Degradation-Level"] == "MINIMAL"
        assert (await http.get("/health/live")).status_code == 200
        world.breaker("database").reset()
        assert (await http.get("/health/ready")).status_code == 200


# ------------------------------------------------------------------ /health


async def test_health_document(world: World) -> None:
    world.kv.get("a")
    world.kv.up = False
    for _ in range(2):
        with pytest.raises(DependencyError):  # the client's text held the password
            world.kv.get("b")
    trip(world, "cache")
    async with client(make_app(world)) as http:
        r = await http.get("/health", headers=bearer())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["details"] is True
    assert doc["level"] == world.manager.level.name
    assert doc["level_value"] == int(world.manager.level)
    assert doc["score"] == world.manager.score
    components = {c["name"]: c for c in doc["components"]}
    assert set(components) == {"database", "cache", "openai", "kv", "s3"}
    assert components["cache"]["breaker"]["state"] == "forced_open"
    assert components["cache"]["down"] is True
    assert components["cache"]["adapter"] is None
    assert components["database"]["required_for_ready"] is True
    assert components["s3"]["configured"] is False
    assert components["s3"]["breaker"] is None
    kv = components["kv"]
    assert kv["breaker"]["state"] == "open"
    assert kv["adapter"]["kind"] == "kv"
    assert kv["adapter"]["pool_size"] == 4
    assert "breaker" not in kv["adapter"]  # shown once, under "breaker"
    assert kv["probe"] is not None and set(kv["probe"]) >= {"ok", "error", "failures"}
    assert doc["features"]["cache_read"] == {
        "enabled": False,
        "reason": "cache down",
        "requires": ["cache"],
        "worst_level": "DEGRADED",
        "description": "serve reads from the cache",
    }
    assert doc["features"]["status"]["enabled"] is True
    assert doc["transitions"][-1]["to"] == world.manager.level.name
    assert doc["explanation"]["level"] == world.manager.level.name
    assert doc["settings"] == world.manager.settings.to_dict()
    assert "predicted_recovery_s" in doc
    assert doc["pinned"] is None
    text = r.text
    assert DSN_SECRET not in text
    assert "kv://app:***@kv" in text  # the error is there, redacted
    for leak in ("<bound method", "<function", " object at 0x"):
        assert leak not in text


async def test_health_without_the_admin_token_names_components_and_states_only(
    world: World,
) -> None:
    world.kv.up = False
    for _ in range(2):
        with pytest.raises(DependencyError):  # the error names the host and the user
            world.kv.get("b")
    trip(world, "cache")
    async with client(make_app(world)) as http:
        public = await http.get("/health")
        wrong = await http.get("/health", headers=bearer("not-the-token"))
        missing_scheme = await http.get("/health", headers={"Authorization": "Basic eDp5"})
    assert public.status_code == 200
    doc = public.json()
    assert doc["details"] is False and "admin token" in doc["details_hint"]
    assert doc["level"] == world.manager.level.name and doc["score"] == world.manager.score
    components = {c["name"]: c for c in doc["components"]}
    assert components["cache"] == {
        "name": "cache",
        "configured": True,
        "status": components["cache"]["status"],
        "score": components["cache"]["score"],
        "down": True,
    }
    for c in doc["components"]:
        assert set(c) <= {"name", "configured", "status", "score", "down"}
    assert doc["features"]["cache_read"] == {"enabled": False, "reason": "cache down"}
    for hidden in ("transitions", "explanation", "settings"):
        assert hidden not in doc
    assert "kv:6379" not in public.text and "kv://" not in public.text
    assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
    assert missing_scheme.status_code == 401


async def test_health_document_is_strict_json(world: World) -> None:
    async with client(make_app(world)) as http:
        r = await http.get("/health")
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


# ------------------------------------------------------------------ /metrics


async def test_metrics_endpoint(world: World) -> None:
    world.kv.get("a")
    async with client(make_app(world)) as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE
    assert "brownout_degradation_level 0.0" in r.text
    assert 'brownout_pool_size{dependency="kv",name="kv"} 4.0' in r.text
    assert r.headers["X-Degradation-Level"] == "OPTIMAL"


async def test_metrics_404_without_metrics(world: World) -> None:
    async with client(make_app(world, metrics=False)) as http:
        r = await http.get("/metrics")
    assert r.status_code == 404
    assert r.headers["X-Degradation-Level"] == "OPTIMAL"


# ----------------------------------------------------------------- features


async def test_requires_feature_passes_while_on(world: World) -> None:
    async with client(make_app(world)) as http:
        r = await http.get("/orders")
    assert r.status_code == 200
    assert r.json() == {"orders": "ok"}


async def test_requires_feature_503_with_retry_after(world: World) -> None:
    trip(world, "cache")
    async with client(make_app(world)) as http:
        r = await http.get("/cached")
    assert r.status_code == 503
    retry = int(r.headers["Retry-After"])
    assert retry >= 1
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json() == {
        "type": "urn:problem:feature_unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"cache_read is off at level DEGRADED (cache down): try again in {retry} s",
        "code": "feature_unavailable",
        "feature": "cache_read",
        "level": "DEGRADED",
        "reason": "cache down",
        "retry_after": retry,
    }
    assert r.headers["X-Degradation-Level"] == "DEGRADED"
    # the break of a forced-open breaker has no end: the manager's default wait
    assert retry == 5


async def test_retry_after_follows_the_open_breaker(world: World) -> None:
    cb = world.breaker("database")
    while cb.state is not State.OPEN:
        try:
            cb.call(_boom)
        except ConnectionError:
            pass
    async with client(make_app(world)) as http:
        r = await http.get("/orders")
    assert r.status_code == 503
    snap = cb.snapshot()
    assert snap.retry_after is not None
    assert int(r.headers["Retry-After"]) == max(1, -(-int(snap.retry_after * 1000) // 1000))
    assert r.json()["reason"] == "database down"


def _boom() -> None:
    raise ConnectionError("refused")


async def test_requires_feature_with_an_explicit_manager(world: World) -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(requires_feature("cache_read", world.manager))])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as http:
        assert (await http.get("/x")).status_code == 200
        trip(world, "cache")
        r = await http.get("/x")
    assert r.status_code == 503  # FastAPI's default handler: the same body under "detail"
    assert r.json()["detail"]["code"] == "feature_unavailable"
    assert "Retry-After" in r.headers


def test_install_refuses_an_unknown_feature(world: World) -> None:
    app = FastAPI()

    @app.get("/typo", dependencies=[Depends(requires_feature("cache_raed"))])
    async def typo() -> None:
        return None

    with pytest.raises(UnknownFeature, match=r"GET /typo requires unknown feature 'cache_raed'"):
        install(app, world.manager)
    with pytest.raises(UnknownFeature, match=r"did you mean 'cache_read'"):
        check_features(app, world.manager)


def test_check_features_walks_routers_and_nested_dependencies(world: World) -> None:
    router = APIRouter(dependencies=[Depends(requires_feature("orders"))])

    async def nested(_: None = Depends(requires_feature("nope"))) -> None:
        return None

    @router.post("/a")
    async def a(_: None = Depends(nested)) -> None:
        return None

    with pytest.raises(UnknownFeature) as info:
        check_features(router, world.manager)
    assert "POST /a requires unknown feature 'nope'" in str(info.value)
    assert "'orders'" not in str(info.value)
    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.state.brownout = world.manager
    with pytest.raises(UnknownFeature, match="POST /v1/a"):
        check_features(app)
    # dependencies given to include_router count too
    other = APIRouter()

    @other.get("/b")
    async def b() -> None:
        return None

    app = FastAPI()
    app.include_router(other, prefix="/v2", dependencies=[Depends(requires_feature("zzz"))])
    with pytest.raises(UnknownFeature, match="GET /v2/b requires unknown feature 'zzz'"):
        check_features(app, world.manager)


def test_check_features_needs_a_manager() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(requires_feature("orders"))])
    async def x() -> None:
        return None

    with pytest.raises(ValueError, match="no manager is known"):
        check_features(app)


async def test_unknown_feature_at_request_time_is_a_clear_500(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(world)

    @app.get("/late", dependencies=[Depends(requires_feature("ordres"))])
    async def late() -> None:
        return None

    async with client(app) as http:
        with caplog.at_level(logging.ERROR, logger="brownout.web"):
            r = await http.get("/late")
    assert r.status_code == 500
    assert "misconfigured" in r.json()["detail"] and "ordres" not in r.text  # no internals
    assert "requires an unknown feature" in caplog.text and "'ordres'" in caplog.text
    assert r.headers["X-Degradation-Level"] == "OPTIMAL"


async def test_requires_feature_without_a_manager_is_a_clear_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(requires_feature("orders"))])
    async def x() -> None:
        return None

    async with client(app) as http:
        with caplog.at_level(logging.ERROR, logger="brownout.web"):
            r = await http.get("/x")
    assert r.status_code == 500
    assert "misconfigured" in r.json()["detail"] and "DegradationManager" not in r.text
    assert "no DegradationManager" in caplog.text and "app.state.brownout = manager" in caplog.text


def test_requires_feature_arguments() -> None:
    with pytest.raises(ValueError, match="feature name"):
        requires_feature("")
    with pytest.raises(TypeError, match="DegradationManager"):
        requires_feature("x", object())  # type: ignore[arg-type]
    assert repr(requires_feature("x")) == "requires_feature('x')"


# ------------------------------------------------------------- the header


async def test_level_header_on_every_response(world: World) -> None:
    trip(world, "cache")
    async with client(make_app(world), raise_app_exceptions=False) as http:
        responses = [
            await http.get("/health/live"),
            await http.get("/health"),
            await http.get("/orders"),
            await http.get("/cached"),  # 503
            await http.get("/no/such/path"),  # 404
            await http.post("/health/live"),  # 405
            await http.get("/boom"),  # unhandled exception: 500
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 503, 404, 405, 500]
    for r in responses:
        assert r.headers.get_list("X-Degradation-Level") == ["DEGRADED"], r.request.url


async def test_unhandled_errors_answer_a_problem_and_go_to_the_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async with client(make_app(world)) as http:
        with caplog.at_level(logging.ERROR, logger="brownout.web"):
            r = await http.get("/boom")
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "internal_error" and body["status"] == 500
    request_id = body["request_id"]
    assert r.headers["X-Request-ID"] == request_id and request_id in body["detail"]
    assert "exploded" not in r.text and "RuntimeError" not in r.text  # details: log only
    assert request_id in caplog.text and "handler exploded" in caplog.text
    assert "Traceback" in caplog.text


async def test_level_header_on_streaming_responses(world: World) -> None:
    async with client(make_app(world)) as http, http.stream("GET", "/stream") as r:
        assert r.headers["X-Degradation-Level"] == "OPTIMAL"
        chunks = [c async for c in r.aiter_bytes()]
    assert b"".join(chunks) == b"chunk0;chunk1;chunk2;"


async def test_level_header_replaces_one_set_by_the_app(world: World) -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-degradation-level", b"FAKE"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    trip(world, "cache")
    async with client(DegradationHeaderMiddleware(inner, world.manager)) as http:
        r = await http.get("/")
    assert r.headers.get_list("x-degradation-level") == ["DEGRADED"]
    assert r.text == "ok"


# ----------------------------------------------------------------- admin


ADMIN_CALLS = [
    ("POST", "/admin/breakers/cache/open", None),
    ("POST", "/admin/breakers/cache/close", None),
    ("POST", "/admin/breakers/cache/disable", None),
    ("POST", "/admin/breakers/cache/shadow", None),
    ("POST", "/admin/breakers/cache/open?seconds=30", None),
    ("POST", "/admin/level/pin", {"level": "MINIMAL", "duration": 300}),
    ("DELETE", "/admin/level/pin", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_endpoints_absent_without_a_token(
    world: World, method: str, path: str, body: Any
) -> None:
    async with client(make_app(world, admin_token=None)) as http:
        r = await http.request(method, path, json=body, headers=bearer())
    assert r.status_code == 404
    assert world.breaker("cache").state is State.CLOSED
    assert world.manager.pinned is None


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_refuses_a_missing_or_wrong_token(
    world: World, method: str, path: str, body: Any
) -> None:
    async with client(make_app(world)) as http:
        missing = await http.request(method, path, json=body)
        basic = await http.request(
            method, path, json=body, headers={"Authorization": "Basic dXNlcjpwYXNz"}
        )
        wrong = await http.request(method, path, json=body, headers=bearer("not-the-token"))
        prefix = await http.request(method, path, json=body, headers=bearer(TOKEN[:-1]))
    for r in (missing, basic):
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthorized"
    for r in (wrong, prefix):
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
    for r in (missing, basic, wrong, prefix):
        assert TOKEN not in r.text
        assert r.headers["X-Degradation-Level"] == "OPTIMAL"
    assert world.breaker("cache").state is State.CLOSED
    assert not world.breaker("cache").shadow
    assert world.manager.pinned is None


async def test_admin_breaker_control(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        async with client(make_app(world)) as http:
            r = await http.post("/admin/breakers/cache/open", headers=bearer())
            assert r.status_code == 200
            assert r.json() == {
                "breaker": "cache",
                "action": "open",
                "state": "forced_open",
                "shadow": False,
                "level": "DEGRADED",
            }
            assert r.headers["X-Degradation-Level"] == "DEGRADED"
            assert world.breaker("cache").state is State.FORCED_OPEN
            r = await http.post("/admin/breakers/cache/close", headers=bearer())
            assert r.json()["state"] == "closed"
            assert world.breaker("cache").state is State.CLOSED
            r = await http.post("/admin/breakers/cache/disable", headers=bearer())
            assert r.json()["state"] == "disabled"
            assert world.breaker("cache").state is State.DISABLED
            r = await http.post("/admin/breakers/nope/open", headers=bearer())
            assert r.status_code == 404
            assert r.json()["code"] == "unknown_breaker"
            assert "'cache'" in r.json()["detail"]  # lists the known breakers
            r = await http.post("/admin/breakers/kv/open", headers=bearer())  # adapter's breaker
            assert r.status_code == 200
            assert world.kv.breaker.state is State.FORCED_OPEN
    assert "breaker 'cache' open" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("app", ["fastapi", "asgi"])
async def test_admin_timed_open_and_shadow_mode(world: World, app: str) -> None:
    served = make_app(world) if app == "fastapi" else StatusApp(world.manager, admin_token=TOKEN)
    cache = world.breaker("cache")
    async with client(served) as http:
        r = await http.post("/admin/breakers/cache/open?seconds=30", headers=bearer())
        assert r.status_code == 200
        assert (r.json()["state"], r.json()["seconds"]) == ("open", 30.0)
        assert cache.snapshot().retry_after == pytest.approx(30)
        world.clock.advance(30)
        assert cache.state is State.HALF_OPEN  # then half-opens as after a trip
        for bad in ("0", "-5", "nan", "inf", "1e9", "soon"):
            r = await http.post(f"/admin/breakers/cache/open?seconds={bad}", headers=bearer())
            assert r.status_code == 400, bad
            assert "seconds" in r.json()["detail"]
        r = await http.post("/admin/breakers/cache/close?seconds=5", headers=bearer())
        assert r.status_code == 400
        r = await http.post("/admin/breakers/cache/shadow", headers=bearer())
        assert r.status_code == 200 and r.json()["shadow"] is True
        cache.force_open()
        assert cache.call(lambda: "through") == "through"  # shadow: never rejects
        r = await http.post("/admin/breakers/cache/unshadow", headers=bearer())
        assert r.json()["shadow"] is False
        with pytest.raises(BreakerOpen):
            cache.call(lambda: "through")


async def test_admin_pin_and_unpin(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        async with client(make_app(world)) as http:
            r = await http.post(
                "/admin/level/pin",
                json={"level": "minimal", "duration": 300, "reason": "db migration"},
                headers=bearer(),
            )
            assert r.status_code == 200
            assert r.json() == {
                "level": "MINIMAL",
                "pinned": {"level": "MINIMAL", "seconds_left": 300.0, "reason": "db migration"},
            }
            assert world.manager.level is Level.MINIMAL
            assert (await http.get("/orders")).status_code == 503
            health = (await http.get("/health", headers=bearer())).json()
            assert health["pinned"]["reason"] == "db migration"
            r = await http.delete("/admin/level/pin", headers=bearer())
            assert r.status_code == 200
            assert r.json()["pinned"] is None
            assert r.json()["was_pinned"] is True
            assert world.manager.pinned is None
    assert "pinned at MINIMAL" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"level": "SEVERE", "duration": 60}, "invalid_level"),
        ({"level": 9, "duration": 60}, "invalid_level"),
        ({"duration": 60}, "invalid_level"),
        ({"level": "MINIMAL", "duration": 0}, "invalid_duration"),
        ({"level": "MINIMAL", "duration": -5}, "invalid_duration"),
        ({"level": "MINIMAL", "duration": "300"}, "invalid_duration"),
        ({"level": "MINIMAL"}, "invalid_duration"),
        ({"level": "MINIMAL", "duration": 60, "reason": 3}, "invalid_reason"),
        ({"level": "MINIMAL", "duration": 60, "until": 3}, "invalid_body"),
        (["MINIMAL", 60], "invalid_body"),
        ("{not json", "invalid_body"),
    ],
)
async def test_admin_pin_rejects_bad_bodies(world: World, body: Any, error: str) -> None:
    async with client(make_app(world)) as http:
        if isinstance(body, str):
            r = await http.post("/admin/level/pin", content=body, headers=bearer())
        else:
            r = await http.post("/admin/level/pin", json=body, headers=bearer())
    assert r.status_code == 422
    assert r.json()["code"] == error
    assert r.json()["detail"]
    assert world.manager.pinned is None


def test_bad_admin_tokens_are_refused(world: World) -> None:
    for token in ("", "   ", "with space"):
        with pytest.raises(ValueError, match="admin_token"):
            health_router(world.manager, admin_token=token)
        with pytest.raises(ValueError, match="admin_token"):
            StatusApp(world.manager, admin_token=token)


def test_bad_router_arguments(world: World) -> None:
    with pytest.raises(TypeError, match="DegradationManager"):
        health_router(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        health_router(world.manager, prefix="ops/")


async def test_router_prefix(world: World) -> None:
    app = FastAPI()
    app.include_router(health_router(world.manager, prefix="/ops", admin_token=TOKEN))
    async with client(app) as http:
        assert (await http.get("/ops/health/live")).status_code == 200
        assert (await http.get("/health/live")).status_code == 404
        r = await http.post("/ops/admin/breakers/cache/open", headers=bearer())
        assert r.status_code == 200


# ------------------------------------------------------------- plain ASGI


async def test_plain_asgi_app_serves_the_same_json(world: World) -> None:
    world.kv.get("a")
    trip(world, "cache")
    fastapi_app = make_app(world)
    plain = StatusApp(world.manager, metrics=world.metrics, admin_token=TOKEN)
    async with client(fastapi_app) as a, client(plain) as b:
        for path in ("/health/live", "/health/ready", "/health"):
            ra, rb = await a.get(path), await b.get(path)
            assert (ra.status_code, ra.json()) == (rb.status_code, rb.json()), path
            assert ra.headers["content-type"] == rb.headers["content-type"]
            assert rb.headers["X-Degradation-Level"] == "DEGRADED"
        rm = await b.get("/metrics")
        assert rm.status_code == 200
        assert rm.headers["content-type"] == CONTENT_TYPE
        assert "brownout_health_score" in rm.text
        world.manager.pin(Level.EMERGENCY, duration=30)
        ra, rb = await a.get("/health/ready"), await b.get("/health/ready")
        assert ra.status_code == rb.status_code == 503
        assert ra.json() == rb.json()
        assert ra.headers["Retry-After"] == rb.headers["Retry-After"]


async def test_plain_asgi_app_admin_and_errors(world: World) -> None:
    plain = StatusApp(world.manager, admin_token=TOKEN)
    async with client(plain) as http:
        assert (await http.get("/metrics")).status_code == 404
        nope = await http.get("/nope")
        assert nope.status_code == 404
        assert nope.json()["code"] == "not_found"
        assert nope.headers["X-Degradation-Level"] == "OPTIMAL"
        r = await http.post("/health")
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET"
        r = await http.get("/admin/level/pin", headers=bearer())
        assert r.status_code == 405
        assert r.headers["Allow"] == "POST, DELETE"
        r = await http.post("/admin/breakers/cache/open")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await http.post("/admin/breakers/cache/open", headers=bearer("wrong"))
        assert r.status_code == 403
        r = await http.post("/admin/breakers/cache/open", headers=bearer())
        assert r.status_code == 200
        assert r.headers["X-Degradation-Level"] == "DEGRADED"
        assert world.breaker("cache").state is State.FORCED_OPEN
        r = await http.post("/admin/breakers/cache/explode", headers=bearer())
        assert r.status_code == 404
        r = await http.post("/admin/breakers/ghost/open", headers=bearer())
        assert r.status_code == 404
        assert r.json()["code"] == "unknown_breaker"
        r = await http.post(
            "/admin/level/pin", json={"level": "LIMITED", "duration": 60}, headers=bearer()
        )
        assert r.status_code == 200
        assert world.manager.level is Level.LIMITED
        r = await http.post(
            "/admin/level/pin", json={"level": "LIMITED", "duration": -1}, headers=bearer()
        )
        assert r.status_code == 422
        r = await http.post("/admin/level/pin", content=b"x" * 20000, headers=bearer())
        assert r.status_code == 413
        r = await http.delete("/admin/level/pin", headers=bearer())
        assert r.status_code == 200
        assert world.manager.pinned is None


async def test_plain_asgi_app_without_token_has_no_admin(world: World) -> None:
    async with client(StatusApp(world.manager)) as http:
        r = await http.post("/admin/breakers/cache/open", headers=bearer())
        assert r.status_code == 404
        r = await http.post("/admin/level/pin", headers=bearer(), json={})
        assert r.status_code == 404
    assert world.breaker("cache").state is State.CLOSED


async def test_plain_asgi_app_prefix_and_root_path(world: World) -> None:
    plain = StatusApp(world.manager, prefix="/ops")
    async with client(plain) as http:
        assert (await http.get("/ops/health/live")).status_code == 200
        assert (await http.get("/health/live")).status_code == 404
        assert (await http.get("/opsx/health/live")).status_code == 404
    mounted = httpx.ASGITransport(app=StatusApp(world.manager), root_path="/status")
    async with httpx.AsyncClient(transport=mounted, base_url="http://test") as http:
        r = await http.get("/status/health/live")
        assert r.status_code == 200


async def test_plain_asgi_app_lifespan_and_websocket(world: World) -> None:
    plain = StatusApp(world.manager)
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await plain({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    sent.clear()
    await plain({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


# ------------------------------------------------------------- packaging


def test_package_docstring_example_runs() -> None:
    result = doctest.testmod(brownout.web, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_plain_parts_import_without_fastapi() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "import brownout.web as web\n"
        "assert web.StatusApp and web.DegradationHeaderMiddleware and web.health_document\n"
        "try:\n"
        "    web.install\n"
        "except ImportError as exc:\n"
        "    assert \"pip install 'brownout[web]'\" in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('install imported without fastapi')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        brownout.web.nothing  # noqa: B018


# ------------------------------------------------------------ docs and deploy

ROOT = Path(__file__).resolve().parents[2]


def _exported_names(world: World) -> set[str]:
    import tempfile

    from brownout.outbox import Outbox
    from brownout.spool import Spool

    world.metrics.attach(world.breaker("cache"))
    with (  # the outbox and spool metrics too
        tempfile.TemporaryDirectory() as tmp,
        Outbox(Path(tmp) / "o.db") as box,
        Spool(Path(tmp) / "spool") as spool,
    ):
        world.metrics.attach(box)
        world.metrics.attach(spool)
        body = world.metrics.render().decode()
    names = {line.split()[2] for line in body.splitlines() if line.startswith(("# TYPE", "# HELP"))}
    return {n for n in names if not n.endswith("_created")}  # prometheus_client's extras


def _mentioned(text: str) -> set[str]:
    names = set(re.findall(r"\bbrownout_[a-z0-9_]+", text))
    suffixes = ("_bucket", "_count", "_sum")
    return {next((n[: -len(s)] for s in suffixes if n.endswith(s)), n) for n in names}


def test_documented_metric_names_exist(world: World) -> None:
    exported = _exported_names(world)
    text = (ROOT / "docs" / "operations.md").read_text()
    mentioned = _mentioned(text)
    missing = {
        n for n in mentioned if n not in exported and n.removesuffix("_total") not in exported
    }
    assert not missing, missing
    # and every exported metric is documented
    undocumented = {n for n in exported if n not in mentioned and f"{n}_total" not in mentioned}
    assert not undocumented, undocumented


def test_alert_rules_are_valid_and_use_real_metrics(world: World) -> None:
    yaml = pytest.importorskip("yaml")
    exported = _exported_names(world)
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) >= {
        "BrownoutLevelMinimalOrWorse",
        "BrownoutBreakerOpen",
        "BrownoutHealthScoreLow",
    }
    assert alerts["BrownoutLevelMinimalOrWorse"]["for"] == "2m"
    assert alerts["BrownoutLevelMinimalOrWorse"]["expr"].endswith(f">= {int(Level.MINIMAL)}")
    assert alerts["BrownoutBreakerOpen"]["for"] == "5m"
    assert alerts["BrownoutHealthScoreLow"]["expr"].endswith("< 70")
    for rule in alerts.values():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["expr"].count("(") == rule["expr"].count(")")
        for name in _mentioned(rule["expr"]):
            assert name in exported or name.removesuffix("_total") in exported, name


def test_grafana_dashboard_is_valid_json_with_the_panels(world: World) -> None:
    exported = _exported_names(world)
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("level", "health score", "component", "breaker states", "call rate", "p95"):
        assert topic in titles, topic
    for panel in panels:
        for target in panel["targets"]:
            for name in _mentioned(target["expr"]):
                assert name in exported or name.removesuffix("_total") in exported, name


# ------------------------------------------------------------- problems


class Order(BaseModel):
    name: str = Field(max_length=20)
    quantity: int


def _problem_app(world: World) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    async def order(body: Order) -> dict[str, str]:
        return {"name": body.name}

    install(app, world.manager)
    return app


def _is_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:problem:{code}" and body["code"] == code
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_every_error_of_an_installed_app_is_a_problem(world: World) -> None:
    async with client(_problem_app(world)) as http:
        _is_problem(await http.get("/no/such/path"), 404, "not_found")
        allowed = await http.get("/orders")
        _is_problem(allowed, 405, "method_not_allowed")
        assert allowed.headers["Allow"] == "POST"
        body = _is_problem(await http.post("/orders", json={"name": "x"}), 422, "validation_error")
        assert body["errors"] == [
            {"field": "body.quantity", "message": "Field required", "code": "missing"}
        ]
        assert "body.quantity" in body["detail"]


async def test_validation_problems_survive_nan_and_quote_only_an_excerpt(world: World) -> None:
    async with client(_problem_app(world)) as http:
        # a raw NaN token: Python's json accepts it; the 422 must still be valid JSON
        nan = await http.post(
            "/orders",
            content=b'{"name": "x", "quantity": NaN}',
            headers={"Content-Type": "application/json"},
        )
        body = _is_problem(nan, 422, "validation_error")
        assert body["errors"][0]["field"] == "body.quantity"
        huge = await http.post("/orders", json={"name": "n" * 1_000_000, "quantity": 1})
        body = _is_problem(huge, 422, "validation_error")
        assert len(huge.content) < 2000  # not echoed back
        assert body["errors"][0]["input"] == "n" * 40 + "…"
        surrogate = await http.post(
            "/orders",
            content=b'{"name": "\\ud800' + b"x" * 30 + b'", "quantity": "q"}',
            headers={"Content-Type": "application/json"},
        )
        _is_problem(surrogate, 422, "validation_error")


async def test_the_openapi_documents_problems(world: World) -> None:
    async with client(_problem_app(world)) as http:
        doc = (await http.get("/openapi.json")).json()
    assert doc["components"]["schemas"]["Problem"]["required"][:4] == [
        "type",
        "title",
        "status",
        "detail",
    ]
    responses = doc["paths"]["/orders"]["post"]["responses"]
    for status in ("422", "500"):
        assert list(responses[status]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in json.dumps(doc)


def test_problem_refuses_what_is_not_a_problem() -> None:
    from brownout.web import problem

    reply = problem(409, "sku_taken", "taken", retry_after=2.2, sku="A")
    assert reply.headers == {"Retry-After": "3"} and reply.body["retry_after"] == 3
    assert reply.body["sku"] == "A" and reply.content_type == "application/problem+json"
    with pytest.raises(ValueError, match="snake_case"):
        problem(409, "SkuTaken", "taken")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        problem(200, "ok", "fine")
    with pytest.raises(ValueError, match="cannot replace"):
        problem(409, "x", "y", type="about:blank")
