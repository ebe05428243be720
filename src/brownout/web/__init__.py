"""Status endpoints, feature gates and manual control for web services (extra ``web``).

``pip install 'brownout[web]'`` (FastAPI and prometheus-client). With FastAPI:

>>> from fastapi import Depends, FastAPI
>>> from brownout.health import Component, DegradationManager
>>> from brownout.web import install, requires_feature
>>> manager = DegradationManager([Component("database"), Component("cache")])
>>> app = FastAPI()
>>> @app.get("/recommendations", dependencies=[Depends(requires_feature("cache_read"))])
... async def recommendations() -> list[str]:
...     return []
>>> router = install(app, manager)  # app.state.brownout, routes, middleware, 503 handler, checks

Without FastAPI, :class:`StatusApp` serves the same endpoints as a plain ASGI
app and :class:`DegradationHeaderMiddleware` wraps any ASGI app. The JSON
documents themselves come from framework-neutral functions
(:func:`health_document`, :func:`ready`, ...). See ``docs/operations.md``.

The FastAPI names (``health_router``, ``requires_feature``, ``check_features``,
``install``, ``FeatureUnavailable``, ``feature_unavailable_handler``) are
imported on first use, so the rest works without FastAPI installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brownout.web._asgi import DegradationHeaderMiddleware, StatusApp
from brownout.web._status import (
    Reply,
    feature_unavailable,
    health_document,
    live,
    ready,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from brownout.web._fastapi import (
        FeatureUnavailable,
        check_features,
        feature_unavailable_handler,
        health_router,
        install,
        requires_feature,
    )

__all__ = [
    "DegradationHeaderMiddleware",
    "FeatureUnavailable",
    "Reply",
    "StatusApp",
    "check_features",
    "feature_unavailable",
    "feature_unavailable_handler",
    "health_document",
    "health_router",
    "install",
    "live",
    "ready",
    "requires_feature",
    "retry_after_seconds",
]

_FASTAPI = frozenset(
    {
        "FeatureUnavailable",
        "check_features",
        "feature_unavailable_handler",
        "health_router",
        "install",
        "requires_feature",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FASTAPI:
        module = importlib.import_module("brownout.web._fastapi")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'brownout.web' has no attribute {name!r}")
