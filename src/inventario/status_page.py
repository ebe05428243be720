"""The live status page: ``GET /status`` (HTML) and ``GET /status/data`` (its JSON).

The page is plain HTML, CSS and JavaScript shipped inside the package
(``inventario/static``, read with :mod:`importlib.resources`): no build step, no
CDN. It polls ``/status/data`` every second and redraws itself.

``/status/data`` has two shapes, like ``/health``. Without a token it is what
anyone may see of how the service is doing (:func:`public_status`): the level,
the score, each component's state, score and figures (breaker state, success
rate, latency, pool use), the features with their reasons, the transitions
with their reasons, and the backlogs' counts and flags
(:func:`public_backlogs`), with ``"details": false``. No text that came from a
driver or a client (errors), no adapter settings (URLs, paths, hosts, users,
bucket names, models, drivers), no dead-letter or spool failure reasons (they
name buckets, object keys and data). With ``Authorization: Bearer
<ADMIN_TOKEN>`` it is ``brownout.web.health_document(manager)`` (breaker
snapshots, adapter figures and errors, probes, explanation) plus the backlogs
in full (:meth:`inventario.runtime.Runtime.health_extras`), with ``"details":
true``; a wrong token is a 401/403 problem.

The page inserts every value with ``textContent`` (never as HTML) and is served
with a Content-Security-Policy that allows only its own script and style
files, so nothing in the data can run in the browser. The routes are not gated
by a feature: the status page must answer at every level.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from brownout import State, redact
from brownout.web import authorize, health_document, problem_response, problem_responses
from inventario import __version__
from inventario.level_settings import level_table
from inventario.runtime import REPLAY_BATCH

__all__ = [
    "ASSETS",
    "public_backlogs",
    "public_status",
    "public_trends",
    "router",
    "status_data",
]

logger = logging.getLogger("inventario.status")

router = APIRouter(tags=["health"])

#: The files the page is made of: URL name -> media type.
ASSETS: Mapping[str, str] = {
    "status.html": "text/html; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
    "trends.js": "text/javascript; charset=utf-8",
    # uPlot 1.6.32 (MIT), vendored: see static/uPlot.VERSION and static/uPlot.LICENSE
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("inventario").joinpath("static", name).read_bytes()


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become ``null``; strings are redacted once more."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


#: A component's figures anyone may see: numbers only (never a text an adapter reported).
_PUBLIC_FIGURES = (
    "success_rate",
    "latency_avg_ms",
    "latency_p95_ms",
    "samples",
    "hit_ratio",
    "pool_in_use",
    "pool_idle",
    "pool_size",
    "pool_overflow",
    "bytes_up",
    "bytes_down",
)
_PUBLIC_TOTALS = ("prompt_tokens", "completion_tokens")
_PUBLIC_BREAKER = (
    "calls",
    "failures",
    "failure_rate",
    "slow_rate",
    "consecutive_failures",
    "retry_after",
    "trips",
    "shadow",
)

#: Told to a client that asked without the token: what it does not see, and how to see it.
DETAILS_HINT = (
    "counts and states only: error texts, adapter settings (paths, hosts, users, buckets), "
    "probes, and the reasons of dead letters and failed uploads with "
    "'Authorization: Bearer <ADMIN_TOKEN>'"
)
#: The same, when the service has no admin token: nobody can see the details over HTTP.
NO_DETAILS_HINT = (
    "counts and states only: the service has no ADMIN_TOKEN, so the details (error texts, "
    "adapter settings, failure reasons) are in its log only"
)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float)


def _pick(doc: Any, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The ``keys`` of ``doc`` that hold a number, a flag or ``None`` (a text never)."""
    if not isinstance(doc, Mapping):
        return None
    return {k: doc[k] for k in keys if k in doc and _scalar(doc[k])}


def _public_component(c: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: c[k]
        for k in ("name", "configured", "status", "score", "down", "weight", "cascade_of")
        if k in c
    }
    out["depends_on"] = [str(d) for d in c.get("depends_on") or ()]
    breaker = c.get("breaker")
    out["breaker"] = _pick(breaker, _PUBLIC_BREAKER)
    if out["breaker"] is not None and isinstance(breaker, Mapping):
        # a State value, one of a fixed few words: the one text a breaker shows to anyone
        out["breaker"]["state"] = str(breaker.get("state"))
    adapter = _pick(c.get("adapter"), _PUBLIC_FIGURES)
    if adapter is not None:
        totals = _pick(c["adapter"].get("totals"), _PUBLIC_TOTALS)
        if totals:
            adapter["totals"] = totals
    out["adapter"] = adapter
    probe = c.get("probe")
    out["probe"] = {"ok": probe.get("ok")} if isinstance(probe, Mapping) else None
    return out


def public_backlogs(backlogs: Mapping[str, Any]) -> dict[str, Any]:
    """The backlogs as anyone may see them: each one's counts and flags only.

    Drops every text and list: the spool's bucket and its failure reasons
    (bucket names, object keys, S3's error texts), the outbox's latest dead
    letters (keys and the database's refusals), the cache coherence's last
    report. An error reading the backlogs is named only as such (the log says why).
    """
    out: dict[str, Any] = {}
    for name, section in backlogs.items():
        if name == "error":
            out["error"] = "backlogs unavailable (the service's log says why)"
        elif isinstance(section, Mapping):
            # s3_bucket: a name when set (dropped as a text), so dropped when unset too
            out[str(name)] = {
                str(k): v for k, v in section.items() if _scalar(v) and k != "s3_bucket"
            }
    return out


#: The shedder's figures anyone may see (``Shedder.snapshot()``): numbers, class and
#: level names only.
_PUBLIC_SHEDDING = (
    "in_flight",
    "peak_in_flight",
    "max_in_flight",
    "delay_ms",
    "max_delay_ms",
    "pressure",
    "last_shed_s_ago",
    "disabled",
    "queued",
    "peak_queued",
    "max_queued",
    "max_queue_wait_ms",
)


def public_shedding(snapshot: Any) -> dict[str, Any] | None:
    """Priority shedding as anyone may see it: counts, limits, which classes are refused."""
    if not isinstance(snapshot, Mapping):
        return None
    out: dict[str, Any] = _pick(snapshot, _PUBLIC_SHEDDING) or {}
    classes = ("critical", "default", "sheddable")
    out["shedding"] = [c for c in snapshot.get("shedding") or () if c in classes]
    for key in (
        "in_flight_by_class",
        "admitted",
        "shed_at",
        "queued_by_class",
        "waited",
        "abandoned",
    ):
        section = snapshot.get(key)
        if isinstance(section, Mapping):
            out[key] = {c: section[c] for c in classes if c in section and _scalar(section[c])}
    levels = snapshot.get("shed_at_level")
    if isinstance(levels, Mapping):
        out["shed_at_level"] = {c: str(levels[c]) for c in classes if c in levels}
    shed = snapshot.get("shed")
    if isinstance(shed, Mapping):
        out["shed"] = {c: _pick(shed[c], ("overload", "level")) for c in classes if c in shed}
    routes = snapshot.get("routes")
    if isinstance(routes, Mapping):
        # the routes of each class: "METHOD /template" of the app's API (public in its docs)
        out["routes"] = {
            c: [r for r in routes[c] if isinstance(r, str)]
            for c in classes
            if isinstance(routes.get(c), list)
        }
    return out


def public_status(doc: Mapping[str, Any], *, details_available: bool) -> dict[str, Any]:
    """What anyone may see of a detailed status document (see the module's docstring).

    An allow-list: a field added to the detailed document later stays private
    until it is added here.
    """
    pinned = doc.get("pinned")
    explanation = doc.get("explanation")
    return {
        "level": doc.get("level"),
        "level_value": doc.get("level_value"),
        "score": doc.get("score"),
        "components": [
            _public_component(c) for c in doc.get("components") or () if isinstance(c, Mapping)
        ],
        "features": {
            name: {
                k: f[k]
                for k in ("enabled", "reason", "requires", "worst_level", "description")
                if k in f
            }
            for name, f in (doc.get("features") or {}).items()
        },
        # level reasons are the manager's own words (scores, rules, an operator's pin
        # reason): never an adapter's error
        "transitions": list(doc.get("transitions") or ()),
        "explanation": {"decision": explanation.get("decision")}
        if isinstance(explanation, Mapping)
        else {},
        "shedding": public_shedding(doc.get("shedding")),
        # level names, setting names and numbers only (inventario.level_settings)
        "level_settings": doc.get("level_settings"),
        "pinned": None
        if not isinstance(pinned, Mapping)
        else {k: pinned.get(k) for k in ("level", "seconds_left", "reason")},
        "predicted_recovery_s": doc.get("predicted_recovery_s"),
        "retry_after_s": doc.get("retry_after_s"),
        "backlogs": public_backlogs(doc.get("backlogs") or {}),
        "details": False,
        "details_available": details_available,
        "details_hint": DETAILS_HINT if details_available else NO_DETAILS_HINT,
    }


def status_data(runtime: Any, *, details: bool = True) -> dict[str, Any]:
    """The document behind the page: ``/health``'s, the backlogs, the server's clock.

    ``details=False``: :func:`public_status` of it (what ``/status/data`` answers
    without the admin token).
    """
    doc = health_document(runtime.manager)
    try:
        backlogs = dict(runtime.health_extras())
    except Exception as exc:  # a backlog figure must never take the status page down
        logger.exception("status page: health_extras() failed")
        backlogs = {"error": f"backlogs unavailable: {type(exc).__name__}"}
    doc["backlogs"] = backlogs
    doc["shedding"] = {**runtime.shedder.snapshot(), "routes": runtime.route_classes}
    doc["level_settings"] = level_table(
        runtime.manager,
        replay_base=REPLAY_BATCH,
        redis=runtime.redis_admission,
        database=runtime.db_admission,
        database_timeouts=runtime.db_admission is not None,
        redis_timeouts=runtime.cache is not None,
        openai=runtime.ai is not None,
        s3=runtime.s3 is not None,
        s3_admission=runtime.s3_admission,
    )
    if not details:
        doc = public_status(doc, details_available=bool(runtime.settings.admin_token))
    doc["service"] = {"name": "inventario", "version": __version__}
    doc["now"] = time.time()
    result: dict[str, Any] = _finite(doc)
    return result


#: A dependency's trend series anyone may see: times, numbers and breaker state words.
_TREND_SERIES = ("t", "rps", "error_rate", "p95_ms", "state", "in_use")
_STATES = frozenset(str(s) for s in State)


def public_trends(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/status/trends`` answers: an allow-list of :meth:`TrendRecorder.to_dict`.

    Numbers (or ``None``) in every series but ``state``, whose values are
    breaker state words only; the level names and each level's line of what is
    off (the features' own descriptions). No host, no error text.
    """

    def numbers(values: Any) -> list[Any]:
        return [v if _scalar(v) and not isinstance(v, bool) else None for v in values or ()]

    deps: dict[str, Any] = {}
    for name, series in (doc.get("dependencies") or {}).items():
        if not isinstance(series, Mapping):
            continue
        out = {k: numbers(series.get(k)) for k in _TREND_SERIES if k != "state"}
        out["state"] = [v if v in _STATES else None for v in series.get("state") or ()]
        deps[str(name)] = out
    level = doc.get("level") or {}
    return {
        "interval_s": doc.get("interval_s"),
        "points": doc.get("points"),
        "levels": [str(v) for v in doc.get("levels") or ()],
        "level_impacts": {str(k): str(v) for k, v in (doc.get("level_impacts") or {}).items()},
        "level": {"t": numbers(level.get("t")), "value": numbers(level.get("value"))},
        "dependencies": deps,
        "now": time.time(),
    }


@router.get("/status/trends")
async def status_trends(request: Request) -> Response:
    """Each dependency's last 15 minutes (one point a second) and the level's timeline.

    Per dependency: ``t`` (seconds since the epoch), ``rps`` (calls per second),
    ``error_rate`` (failed and rejected over all, ``null`` without calls),
    ``p95_ms``, ``state`` (the breaker's) and ``in_use`` (the admission's
    saturation, 0..1, ``null`` when not reported); ``level``: ``t`` and
    ``value`` (an index into ``levels``); ``level_impacts``: per level, which
    features are off. Public: numbers and states only, as ``/status/data``.
    """
    runtime = request.app.state.runtime
    body = json.dumps(
        _finite(public_trends(runtime.trends.to_dict())),
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return Response(body, media_type="application/json", headers=_HEADERS)


@router.get("/status", include_in_schema=False)
async def status_page() -> Response:
    """The live status page (HTML; polls ``/status/data``)."""
    return Response(
        _asset("status.html"),
        media_type=ASSETS["status.html"],
        headers={**_HEADERS, "Content-Security-Policy": _CSP},
    )


@router.get("/status/data", responses=problem_responses(401, 403))
async def status_json(request: Request) -> Response:
    """Level, score, components, features, transitions, backlogs; the details with the token.

    Without ``Authorization``: states, scores, figures and counts only (no error
    texts, paths, hosts, users, bucket names or failure reasons, ``"details":
    false``). With ``Authorization: Bearer <ADMIN_TOKEN>``: the adapters, their
    errors, probes, the explanation and the backlogs in full (``"details": true``).
    A wrong token is a 401/403 problem, as on ``/health``.
    """
    runtime = request.app.state.runtime
    authorization = request.headers.get("authorization")
    admin = runtime.settings.admin_token
    details = False
    if authorization is not None and admin:
        denied = authorize(admin.get_secret_value(), authorization)
        if denied is not None:
            return problem_response(denied)
        details = True
    body = json.dumps(
        status_data(runtime, details=details),
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return Response(body, media_type="application/json", headers=_HEADERS)


@router.get("/status/assets/{name}", include_in_schema=False)
async def status_asset(name: str) -> Response:
    """The page's stylesheet and script (a fixed list: nothing else is served)."""
    if name not in ASSETS or name == "status.html":
        raise HTTPException(status_code=404, detail="no such asset")
    return Response(
        _asset(name),
        media_type=ASSETS[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
