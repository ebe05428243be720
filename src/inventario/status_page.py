"""The live status page: ``GET /status`` (HTML) and ``GET /status/data`` (its JSON).

The page is plain HTML, CSS and JavaScript shipped inside the package
(``inventario/static``, read with :mod:`importlib.resources`): no build step, no
CDN. It polls ``/status/data`` every second and redraws itself; the data is
``brownout.web.health_document(manager)`` (level, score, components with their
breaker snapshots and adapter figures, features, transitions, explanation,
predicted recovery) plus the service's backlogs (outbox, spool) from
:meth:`inventario.runtime.Runtime.health_extras`.

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

from brownout import redact
from brownout.web import health_document
from inventario import __version__

__all__ = ["ASSETS", "router", "status_data"]

logger = logging.getLogger("inventario.status")

router = APIRouter(tags=["health"])

#: The files the page is made of: URL name -> media type.
ASSETS: Mapping[str, str] = {
    "status.html": "text/html; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
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


def status_data(runtime: Any) -> dict[str, Any]:
    """The document behind the page: ``/health``'s, the backlogs, the server's clock."""
    doc = health_document(runtime.manager)
    try:
        backlogs = dict(runtime.health_extras())
    except Exception as exc:  # a backlog figure must never take the status page down
        logger.exception("status page: health_extras() failed")
        backlogs = {"error": f"backlogs unavailable: {type(exc).__name__}"}
    doc["backlogs"] = backlogs
    doc["service"] = {"name": "inventario", "version": __version__}
    doc["now"] = time.time()
    result: dict[str, Any] = _finite(doc)
    return result


@router.get("/status", include_in_schema=False)
async def status_page() -> Response:
    """The live status page (HTML; polls ``/status/data``)."""
    return Response(
        _asset("status.html"),
        media_type=ASSETS["status.html"],
        headers={**_HEADERS, "Content-Security-Policy": _CSP},
    )


@router.get("/status/data")
async def status_json(request: Request) -> Response:
    """Level, score, components (breakers, adapter figures), features, transitions, backlogs."""
    body = json.dumps(
        status_data(request.app.state.runtime),
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
