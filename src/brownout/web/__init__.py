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

Every error is an RFC 9457 problem (``application/problem+json``, built by
:func:`problem`): admin refusals, feature gates (503 with ``Retry-After``)
and, with :func:`install`, the app's own 404/422/500s.

Without FastAPI, :class:`StatusApp` serves the same endpoints as a plain ASGI
app and :class:`DegradationHeaderMiddleware` wraps any ASGI app. The JSON
documents themselves come from framework-neutral functions
(:func:`health_document`, :func:`ready`, ...). See ``docs/operations.md``.

The FastAPI names (``health_router``, ``requires_feature``, ``check_features``,
``install``, ``FeatureUnavailable``, ``feature_unavailable_handler`` and the
problem helpers for FastAPI) are imported on first use, so the rest works without FastAPI installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brownout.web._asgi import DegradationHeaderMiddleware, StatusApp
from brownout.web._problem import PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA, excerpt, problem
from brownout.web._reply import Reply
from brownout.web._shedding import (
    Criticality,
    RouteCriticality,
    ShedDecision,
    Shedder,
    SheddingMiddleware,
)
from brownout.web._status import (
    authorize,
    feature_unavailable,
    health_document,
    live,
    ready,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from brownout.web._fastapi import (
        BodyLimitMiddleware,
        FeatureUnavailable,
        check_features,
        document_problems,
        feature_unavailable_handler,
        health_router,
        install,
        install_problem_handlers,
        problem_response,
        problem_responses,
        requires_feature,
        validation_problem,
    )

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_SCHEMA",
    "BodyLimitMiddleware",
    "Criticality",
    "DegradationHeaderMiddleware",
    "FeatureUnavailable",
    "Reply",
    "RouteCriticality",
    "ShedDecision",
    "Shedder",
    "SheddingMiddleware",
    "StatusApp",
    "authorize",
    "check_features",
    "document_problems",
    "excerpt",
    "feature_unavailable",
    "feature_unavailable_handler",
    "health_document",
    "health_router",
    "install",
    "install_problem_handlers",
    "live",
    "problem",
    "problem_response",
    "problem_responses",
    "ready",
    "requires_feature",
    "retry_after_seconds",
    "validation_problem",
]

_FASTAPI = frozenset(
    {
        "BodyLimitMiddleware",
        "FeatureUnavailable",
        "check_features",
        "document_problems",
        "feature_unavailable_handler",
        "health_router",
        "install",
        "install_problem_handlers",
        "problem_response",
        "problem_responses",
        "requires_feature",
        "validation_problem",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FASTAPI:
        module = importlib.import_module("brownout.web._fastapi")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'brownout.web' has no attribute {name!r}")
