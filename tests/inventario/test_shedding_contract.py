"""Issue 14 item 5, outsider checks against the served app: every 503 inventario answers
is an RFC 9457 problem with an integer ``Retry-After`` of at least a second, whatever the
level and whoever refused (the shedder by load or by level, a queue wait that ran out, a
feature gate, a dependency); critical routes are never shed, neither by level nor by load;
an override for a route with path parameters applies to every path of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from brownout.health import Level
from brownout.testing import eventually
from brownout.web import Criticality
from inventario.app import _method_paths
from inventario.shedding import ROUTES, build_classifier
from tests.inventario.conftest import WIDGET, running
from tests.inventario.live_server import serving
from tests.inventario.test_shedding import held, in_flight

ADMIN = "contract-admin-token"
#: a readiness probe answers the health document (not a problem) by design: a load balancer
#: reads its status only (docs/operations.md, "GET /health/ready")
PROBES = {"/health/ready"}


def assert_problem_503(r: httpx.Response, where: str) -> dict[str, Any]:
    assert r.status_code == 503, (where, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json", (where, r.headers)
    retry_after = r.headers.get("retry-after", "")
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), (where, retry_after)
    body: dict[str, Any] = r.json()
    assert body["status"] == 503 and body["type"] and body["title"] and body["detail"], where
    assert body["retry_after"] == int(retry_after), (where, body)
    return body


def _request(method: str, template: str) -> tuple[str, Any]:
    path = re.sub(r"\{[^}]+\}", "W-1", template)
    if template.endswith("/movements") and method == "POST":
        return path, {"kind": "in", "quantity": 1, "reason": "delivery"}
    if method == "PATCH":
        return path, {"name": "Widget 2"}
    if template == "/products" and method == "POST":
        return path, {**WIDGET, "sku": "W-2"}
    return path, None


async def test_every_503_at_every_level_is_a_problem_and_critical_routes_are_never_shed(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(admin_token=ADMIN)
    routes = sorted(
        (m, t) for m, t in set(_method_paths(app.routes)) if m != "HEAD" and t not in PROBES
    )
    classify = build_classifier()
    critical = [(m, t) for m, t in routes if classify(m, t) is Criticality.CRITICAL]
    assert sorted(critical) == sorted(
        tuple(k.split(" ", 1)) for k, c in ROUTES.items() if c is Criticality.CRITICAL
    )
    seen: dict[str, int] = {}
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        manager = app.state.runtime.manager
        for level in Level:
            manager.pin(level, duration=600, reason="contract sweep")
            for method, template in routes:
                path, body = _request(method, template)
                r = await client.request(
                    method, path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
                )
                where = f"{level.name} {method} {template}"
                assert r.status_code != 500, (where, r.text)
                if r.status_code != 503:
                    continue
                problem = assert_problem_503(r, where)
                seen[problem["code"]] = seen.get(problem["code"], 0) + 1
                criticality = classify(method, path)
                if criticality is Criticality.CRITICAL or criticality is None:
                    assert problem["code"] not in ("shed_by_level", "overloaded"), where
                if problem["code"] == "shed_by_level":
                    assert criticality is Criticality.SHEDDABLE and level >= Level.MINIMAL, where
                    assert problem["criticality"] == "sheddable", where
            if level >= Level.MINIMAL:
                for key, value in ROUTES.items():
                    if value is Criticality.SHEDDABLE:
                        method, template = key.split(" ", 1)
                        path, body = _request(method, template)
                        r = await client.request(method, path, json=body)
                        assert assert_problem_503(r, key)["code"] == "shed_by_level"
        manager.unpin()
    # the sweep met the shedder's, the gates' and a dependency's refusals
    assert {"shed_by_level", "feature_unavailable", "dependency_unavailable"} <= set(seen), seen


def test_a_request_whose_queue_wait_runs_out_gets_a_problem_with_retry_after(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app(shed_max_in_flight=4, shed_max_delay=5.0, shed_max_queue_wait=0.2)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/products", json=WIDGET).status_code == 201
        with held(base, 4):
            eventually(lambda: in_flight(client) == 4, what="four writes in flight")
            for path, criticality in (
                ("/products/W-1", "default"),
                ("/reports/low-stock", "sheddable"),
            ):
                problem = assert_problem_503(client.get(path), path)
                assert problem["code"] == "overloaded" and problem["criticality"] == criticality
            shedding = client.get("/status/data").json()["shedding"]
            assert shedding["in_flight"] == 4
        assert client.get("/products/W-1").status_code == 200


@pytest.mark.parametrize(
    ("override", "paths"),
    [
        ("GET /products/{sku}=sheddable", ["/products/A-1", "/products/x%20y", "/products/Z"]),
        ("GET /products/{sku}/movements=sheddable", ["/products/A-1/movements"]),
    ],
)
def test_an_override_of_a_route_with_parameters_sheds_every_path_of_it(
    override: str, paths: list[str], make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(shed_max_in_flight=4, shed_max_delay=5.0, route_criticality=override)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/products", json=WIDGET).status_code == 201
        with held(base, 2):
            eventually(lambda: in_flight(client) == 2, what="two writes in flight")
            for path in paths:
                problem = assert_problem_503(client.get(path), path)
                assert problem == {**problem, "code": "overloaded", "criticality": "sheddable"}
            # the rest of the resource keeps its own class: a critical write is served
            r = client.patch("/products/W-1", json={"name": "Widget 3"})
            assert r.status_code == 200, r.text
        shedding = client.get("/status/data").json()["shedding"]
        assert shedding["shed"]["sheddable"]["overload"] == len(paths)
        metrics = client.get("/metrics").text
        assert (
            'brownout_requests_shed_total{criticality="sheddable",reason="overload",'
            f'shedder="edge"}} {float(len(paths))}' in metrics
        )
