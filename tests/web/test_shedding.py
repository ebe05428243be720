"""Priority shedding: the Shedder's rules (fake clock), route classes, the ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout import CircuitBreaker
from brownout.health import Component, DegradationManager, Level
from brownout.testing import FakeClock, aeventually
from brownout.web import Criticality, RouteCriticality, Shedder, SheddingMiddleware

CRITICAL, DEFAULT, SHEDDABLE = Criticality.CRITICAL, Criticality.DEFAULT, Criticality.SHEDDABLE


def fill(shedder: Shedder, n: int) -> None:
    for _ in range(n):
        assert shedder.admit(CRITICAL) is None


def test_sheddable_goes_at_half_the_limit_default_at_the_limit_critical_never() -> None:
    shedder = Shedder(max_in_flight=10, clock=FakeClock())
    fill(shedder, 4)
    assert shedder.admit(SHEDDABLE) is None  # 4/10 in flight
    fill(shedder, 0)
    assert shedder.in_flight == 5
    refused = shedder.admit(SHEDDABLE)  # 5/10: pressure 0.5
    assert refused is not None and refused.reason == "overload"
    assert refused.retry_after == 1.0 and "critical ones are still served" in refused.detail
    fill(shedder, 4)  # 9/10
    assert shedder.admit(DEFAULT) is None  # 10/10 now
    refused = shedder.admit(DEFAULT)
    assert refused is not None and refused.reason == "overload"
    for _ in range(100):  # far over the limit: critical requests are still admitted
        assert shedder.admit(CRITICAL) is None
    assert shedder.shedding() == ["default", "sheddable"]
    snap = shedder.snapshot()
    assert snap["shed"]["sheddable"]["overload"] == 1
    assert snap["shed"]["default"]["overload"] == 1
    assert snap["shed"]["critical"] == {"overload": 0, "level": 0}
    assert snap["in_flight"] == 110 and snap["peak_in_flight"] == 110


def test_release_lowers_the_pressure_again() -> None:
    shedder = Shedder(max_in_flight=2, clock=FakeClock())
    fill(shedder, 2)
    assert shedder.admit(DEFAULT) is not None
    shedder.release(CRITICAL)
    shedder.release(CRITICAL)
    assert shedder.admit(SHEDDABLE) is None
    assert shedder.snapshot()["in_flight_by_class"] == {"critical": 0, "default": 0, "sheddable": 1}


def test_the_queueing_delay_sheds_as_the_in_flight_count_does() -> None:
    shedder = Shedder(max_in_flight=100, max_delay=0.2, clock=FakeClock())
    shedder.observe_delay(0.1)  # half of max_delay
    assert shedder.pressure == pytest.approx(0.5)
    assert shedder.admit(SHEDDABLE) is not None
    assert shedder.admit(DEFAULT) is None
    shedder.observe_delay(0.25)
    assert shedder.admit(DEFAULT) is not None
    assert shedder.admit(CRITICAL) is None
    shedder.observe_delay(0.0)
    assert shedder.admit(SHEDDABLE) is None
    shedder.observe_delay(float("nan"))  # ignored
    assert shedder.delay == 0.0


def manager_at(clock: FakeClock) -> DegradationManager:
    return DegradationManager(
        [Component("database", breaker=CircuitBreaker("database", clock=clock))], clock=clock
    )


@pytest.mark.parametrize(
    ("level", "shed"),
    [
        (Level.OPTIMAL, []),
        (Level.DEGRADED, []),
        (Level.LIMITED, []),
        (Level.MINIMAL, ["sheddable"]),
        (Level.EMERGENCY, ["default", "sheddable"]),
    ],
)
def test_the_level_sheds_the_lowest_classes_whatever_the_load(
    level: Level, shed: list[str]
) -> None:
    clock = FakeClock()
    manager = manager_at(clock)
    shedder = Shedder(manager=manager, clock=clock)
    manager.pin(level, duration=60, reason="test")
    assert shedder.shedding() == shed
    for c in Criticality:
        decision = shedder.admit(c)
        assert (decision is not None) == (c.value in shed)
        if decision is not None:
            assert decision.reason == "level"
            assert level.name in decision.detail
            assert decision.retry_after == manager.retry_after()
    assert shedder.snapshot()["shed"]["critical"]["level"] == 0


def test_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be >= 1"):
        Shedder(max_in_flight=0)
    with pytest.raises(TypeError, match="max_in_flight must be an int"):
        Shedder(max_in_flight=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_delay must be > 0"):
        Shedder(max_delay=0)
    with pytest.raises(ValueError, match="retry_after must be > 0"):
        Shedder(retry_after=float("inf"))
    with pytest.raises(ValueError, match="critical requests are never shed"):
        Shedder(shed_at={CRITICAL: 2.0})
    with pytest.raises(ValueError, match=r"shed_at\[default\] must be > 0"):
        Shedder(shed_at={DEFAULT: 0})
    with pytest.raises(ValueError, match="critical requests are never shed"):
        Shedder(shed_at_level={CRITICAL: Level.EMERGENCY})
    with pytest.raises(TypeError, match="must be a Level"):
        Shedder(shed_at_level={DEFAULT: 3})  # type: ignore[dict-item]


def test_the_kill_switch_admits_everything_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    shedder = Shedder(max_in_flight=1, clock=FakeClock())
    for _ in range(5):
        assert shedder.admit(SHEDDABLE) is None
    snap = shedder.snapshot()
    assert snap["disabled"] is True and snap["shedding"] == [] and snap["in_flight"] == 5


@given(st.lists(st.tuples(st.sampled_from(list(Criticality)), st.booleans()), max_size=60))
def test_in_flight_counts_what_was_admitted_and_not_released(
    steps: list[tuple[Criticality, bool]],
) -> None:
    """A small reference model: critical always admitted; counts never go negative."""
    shedder = Shedder(max_in_flight=6, clock=FakeClock())
    held: list[Criticality] = []
    for c, release in steps:
        if release and held:
            shedder.release(held.pop(0))
            continue
        before = len(held)
        decision = shedder.admit(c)
        limit = {CRITICAL: None, DEFAULT: 6, SHEDDABLE: 3}[c]
        assert (decision is None) == (limit is None or before < limit)
        if decision is None:
            held.append(c)
        assert shedder.in_flight == len(held)
    snap = shedder.snapshot()
    assert snap["in_flight_by_class"] == {c.value: held.count(c) for c in Criticality}


# --------------------------------------------------------------------------- routes


def test_routes_match_templates_methods_and_exempt_prefixes() -> None:
    classify = RouteCriticality(
        {
            "POST /products/{sku}/movements": "critical",
            "GET /reports/low-stock": Criticality.SHEDDABLE,
            "* /files/{rest:path}": "sheddable",
        },
        exempt=("/health", "/metrics"),
    )
    assert classify("POST", "/products/A-1/movements") is CRITICAL
    assert classify("POST", "/products/A-1/movements/x") is DEFAULT  # one segment per param
    assert classify("GET", "/products/A-1/movements") is DEFAULT
    assert classify("GET", "/reports/low-stock") is SHEDDABLE
    assert classify("DELETE", "/files/a/b/c") is SHEDDABLE
    assert classify("GET", "/health/ready") is None
    assert classify("GET", "/metrics") is None
    assert classify.to_dict()["GET /reports/low-stock"] == "sheddable"


def test_a_bad_route_or_class_is_named() -> None:
    with pytest.raises(ValueError, match="'FETCH /x'"):
        RouteCriticality({"FETCH /x": "critical"})
    with pytest.raises(ValueError, match="'GET products'"):
        RouteCriticality({"GET products": "critical"})
    with pytest.raises(ValueError, match="'urgent' is not one of critical, default, sheddable"):
        RouteCriticality({"GET /x": "urgent"})


# --------------------------------------------------------------------------- middleware


class Held:
    """An ASGI app whose requests wait until released (to hold them in flight)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.started += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_middleware_refuses_with_a_problem_and_counts_in_flight() -> None:
    inner = Held()
    shedder = Shedder(max_in_flight=2)
    classify = RouteCriticality({"POST /w": "critical", "GET /r": "sheddable"}, exempt=("/h",))
    app = SheddingMiddleware(inner, shedder, classify)
    held = [asyncio.create_task(call(app, "POST", "/w")) for _ in range(2)]
    await aeventually(lambda: inner.started == 2, what="two requests in flight")
    status, headers, body = await call(app, "GET", "/r")
    assert status == 503
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    problem = json.loads(body)
    assert problem["code"] == "overloaded" and problem["criticality"] == "sheddable"
    assert inner.started == 2  # never reached the application
    status, _, _ = await call(app, "GET", "/other")  # default, 2/2 in flight
    assert status == 503
    exempt = asyncio.create_task(call(app, "GET", "/h"))  # exempt: served, not counted
    critical = asyncio.create_task(call(app, "POST", "/w"))
    await aeventually(lambda: inner.started == 4, what="four requests in flight")
    assert shedder.in_flight == 3
    inner.release.set()
    results = await asyncio.gather(*held, exempt, critical)
    assert [r[0] for r in results] == [200, 200, 200, 200]
    assert shedder.in_flight == 0
    assert (await call(app, "GET", "/r"))[0] == 200
    await app.aclose()


async def test_a_failing_request_leaves_the_in_flight_count() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    shedder = Shedder(max_in_flight=2)
    app = SheddingMiddleware(failing, shedder, RouteCriticality({}))
    with pytest.raises(RuntimeError):
        await call(app, "GET", "/x")
    assert shedder.in_flight == 0
    await app.aclose()


async def test_the_lag_sampler_sheds_on_a_standing_delay_not_on_one_stall() -> None:
    inner = Held()
    inner.release.set()
    shedder = Shedder(max_delay=0.04)
    app = SheddingMiddleware(
        inner, shedder, RouteCriticality({}), lag_interval=0.01, delay_window=0.05
    )
    await call(app, "GET", "/x")  # the first request starts the sampler
    await asyncio.sleep(0)  # the sampler starts its first wait
    time.sleep(0.2)  # noqa: ASYNC251  # one stall of the loop
    for _ in range(10):
        await asyncio.sleep(0.01)
        assert shedder.delay < 0.02  # the smallest lag of the window: the stall is not it
    for _ in range(20):  # a standing delay: every turn of the loop waits 30 ms
        time.sleep(0.03)  # noqa: ASYNC251  # the point: a busy loop
        await asyncio.sleep(0)
    assert shedder.delay >= 0.02
    assert shedder.admit(SHEDDABLE) is not None  # 0.02 of 0.04: pressure 0.5
    await app.aclose()
