"""The FastAPI application: ``create_app()`` builds one instance (no globals)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from brownout import BreakerOpen
from brownout.overload import Overloaded
from brownout.web import (
    BodyLimitMiddleware,
    SheddingMiddleware,
    authorize,
    check_features,
    document_problems,
    install,
    problem,
    problem_response,
    problem_responses,
)
from inventario import __version__, store
from inventario.api_docs import install_docs
from inventario.config import ConfigError, Settings, load_settings
from inventario.deps import DependencyUnavailable, busy, try_again
from inventario.routes import ROUTERS
from inventario.runtime import Runtime, build_runtime
from inventario.shedding import build_classifier, parse_routes, route_classes, unknown_routes
from inventario.status_page import public_backlogs

__all__ = ["create_app"]

logger = logging.getLogger("inventario")


#: how long the lifespan's shutdown may take to stop the background tasks and close the
#: journals and clients, after SHUTDOWN_TIMEOUT for in-flight requests
STOP_SECONDS = 10.0


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, freeze_gc: bool = False
) -> FastAPI:
    """Build the service: adapters, degradation manager, outbox, routes, status endpoints.

    ``freeze_gc`` (``inventario serve`` sets it: the process serves this one
    application): once started, the objects alive then (modules, routes, schemas,
    the runtime: well over 100,000) are moved out of the garbage collector's
    generations (:func:`gc.freeze`), so its full collections, which run every few
    seconds under load, no longer scan them each time: a pause of the event loop of
    about 100 ms of CPU became 6-15 ms (docs/benchmarks.md).
    """
    if runtime is None:
        runtime = build_runtime(settings or load_settings())
    rt = runtime

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        logger.info("inventario started: %s", rt.settings.describe())
        try:
            yield
        finally:
            # bounded: a dependency that hangs must not keep a terminating process alive
            # (what is queued is durable in VAR_DIR whether or not closing finished)
            try:
                await asyncio.wait_for(rt.stop(), timeout=STOP_SECONDS)
            except TimeoutError:
                logger.error(
                    "inventario: closing took over %.0f s; exiting anyway (queued writes and "
                    "spooled uploads stay in VAR_DIR for the next start)",
                    STOP_SECONDS,
                )

    app = FastAPI(
        title="inventario",
        version=__version__,
        summary="Retail inventory that degrades gracefully instead of failing",
        lifespan=lifespan,
        docs_url=None,  # served from local files by install_docs: FastAPI's load a CDN
        redoc_url=None,
    )
    app.state.runtime = rt
    app.state.product_cache = rt.product_cache

    @app.exception_handler(store.StoreError)
    async def store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, store.StoreError)
        facts = exc.body()
        code = str(facts.pop("error", exc.code))
        detail = str(facts.pop("detail", exc))
        return problem_response(problem(exc.status, code, detail, **facts))

    @app.exception_handler(DependencyUnavailable)
    async def dependency_unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DependencyUnavailable)
        return problem_response(
            problem(
                503,
                exc.code,
                str(exc),
                retry_after=exc.retry_after,
                dependency=exc.dependency,
                level=rt.manager.level.name,
            )
        )

    @app.exception_handler(BreakerOpen)
    async def breaker_open(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BreakerOpen)
        wait = exc.retry_after or rt.manager.retry_after()
        return problem_response(
            problem(
                503,
                "dependency_unavailable",
                f"{exc.name} is unavailable (circuit breaker {exc.state.value}: the request was "
                f"not attempted): {try_again(wait)}",
                retry_after=wait,
                dependency=exc.name,
                level=rt.manager.level.name,
            )
        )

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Exception) -> Response:
        # a call refused by an admission limit outside inventario.deps' database helpers
        assert isinstance(exc, Overloaded)
        return await dependency_unavailable(request, busy(rt, exc))

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/status")

    admin = rt.settings.admin_token.get_secret_value() if rt.settings.admin_token else None

    @app.get("/about", tags=["health"], responses=problem_responses(401, 403))
    async def about(request: Request) -> Response:
        """Version and backlogs; the configuration (secrets removed) with the admin token.

        The configuration names paths, hosts and users, the backlogs' details
        name buckets, object keys and failure reasons: like ``/health``'s
        details, they are shown only with ``Authorization: Bearer <ADMIN_TOKEN>``
        (a wrong token is a 401/403 problem); without it the backlogs' counts.
        """
        # pid: which worker of `serve --workers N` answered
        doc: dict[str, Any] = {"service": "inventario", "version": __version__, "pid": os.getpid()}
        authorization = request.headers.get("authorization")
        if authorization is not None and admin is not None:
            denied = authorize(admin, authorization)
            if denied is not None:
                return problem_response(denied)
            doc["configuration"] = rt.settings.describe()
            doc.update(rt.health_extras())
        else:
            doc.update(public_backlogs(rt.health_extras()))
        return JSONResponse(doc)

    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    for module in ("inventario.routes.invoices", "inventario.status_page"):
        router = _optional_router(module)
        if router is not None:
            app.include_router(router)
    # before install(): inside the level-header middleware, so a 413 (and a request shed
    # for overload) carries the header too
    _install_shedding(app, rt)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=rt.settings.max_body_bytes,
        exempt={("POST", "/invoices")},  # uploads stream to disk under INVOICE_MAX_BYTES
        hint="MAX_BODY_BYTES",
    )
    if admin:  # the spool's and the outbox's operator endpoints, as brownout's admin ones
        from inventario.routes.outbox_admin import router as outbox_admin
        from inventario.routes.spool_admin import router as spool_admin

        app.include_router(spool_admin)
        app.include_router(outbox_admin)
    install(app, rt.manager, metrics=rt.metrics, admin_token=admin, check=False)
    # what install() documents (500, 400/422 on bodies, 422 on parameters, 404 on paths),
    # plus what inventario adds: 413 over MAX_BODY_BYTES, 503 wherever a dependency or a
    # feature can be off (everywhere but the status endpoints)
    document_problems(
        app,
        always=(503,),
        with_body=(413,),
        with_parameters=(),
        with_path=(),
        skip=_NEVER_UNAVAILABLE,
    )
    check_features(app, rt.manager)
    return app


#: Paths that answer whatever the dependencies do (no 503 of their own).
_NEVER_UNAVAILABLE = frozenset(
    {"/about", "/health", "/health/live", "/health/ready", "/metrics", "/writes/{key}"}
)


def _install_shedding(app: FastAPI, rt: Runtime) -> None:
    """Priority shedding (:mod:`inventario.shedding`): refuse the lowest request classes
    first under overload; a configured route that names no route of the app is an error."""
    classifier = build_classifier(parse_routes(rt.settings.route_criticality))
    unknown = unknown_routes(classifier, _method_paths(app.routes))
    if unknown:
        # a ConfigError, as for the settings themselves: `inventario serve` says what is wrong
        # and exits, no traceback
        raise ConfigError(
            "invalid configuration:\n  ROUTE_CRITICALITY: names routes inventario does not "
            f"have: {', '.join(unknown)}"
        )
    rt.route_classes = route_classes(classifier)
    rt.manager.add_section("route_criticality", lambda: rt.route_classes)
    app.add_middleware(SheddingMiddleware, shedder=rt.shedder, classify=classifier)


def _method_paths(routes: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path template) of the app, through included routers (FastAPI >= 0.16x
    keeps an included router whole: ``original_router`` under its ``include_context``)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            context = getattr(route, "include_context", None)
            yield from _method_paths(original.routes, prefix + getattr(context, "prefix", ""))
            continue
        for method in getattr(route, "methods", None) or ():
            yield method, prefix + str(getattr(route, "path", ""))


def _optional_router(module: str) -> Any:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, "router", None)
