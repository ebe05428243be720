"""FastAPI integration: the status router, ``requires_feature``, one-call :func:`install`.

The app finds its manager without globals: the router factory takes it, and
:class:`requires_feature` reads ``request.app.state.brownout`` (set it:
``app.state.brownout = manager``; :func:`install` does) unless it was given
one explicitly.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

try:
    from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
    from fastapi.dependencies.models import Dependant
    from fastapi.dependencies.utils import get_dependant
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised by hiding the module
    raise ImportError(
        "brownout.web's FastAPI integration needs fastapi: pip install 'brownout[web]'"
    ) from exc

from brownout._errors import BrownoutError
from brownout.health import DegradationManager, UnknownFeature
from brownout.web._asgi import DegradationHeaderMiddleware, check_prefix, internal_error
from brownout.web._problem import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_SCHEMA,
    code_for_status,
    excerpt,
    problem,
)
from brownout.web._reply import JSON_CONTENT_TYPE, Reply
from brownout.web._status import (
    BREAKER_ACTIONS,
    admin_breaker,
    admin_pin,
    admin_unpin,
    authorize,
    check_admin_token,
    feature_unavailable,
    health_reply,
    live,
    ready,
)

if TYPE_CHECKING:
    from brownout.prometheus import PrometheusMetrics

__all__ = [
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
]

logger = logging.getLogger("brownout.web")


def problem_response(reply: Reply) -> Response:
    """A :class:`~brownout.web.Reply` (a problem or any JSON answer) as a Starlette response."""
    return Response(
        reply.content(),
        status_code=reply.status,
        headers=dict(reply.headers),
        media_type=reply.content_type,
    )


_respond = problem_response


def health_router(
    manager: DegradationManager,
    metrics: PrometheusMetrics | None = None,
    admin_token: str | None = None,
    prefix: str = "",
) -> APIRouter:
    """An ``APIRouter`` with the status endpoints of ``manager`` (see ``docs/operations.md``).

    ``GET /health/live``, ``GET /health/ready``, ``GET /health``; ``GET /metrics``
    only with ``metrics``; the admin endpoints only with ``admin_token`` (a
    bearer token, compared in constant time). Everything under ``prefix``.
    """
    if not isinstance(manager, DegradationManager):
        raise TypeError(f"health_router needs a DegradationManager, got {type(manager).__name__}")
    token = check_admin_token(admin_token)
    router = APIRouter(prefix=check_prefix(prefix))

    @router.get("/health/live", tags=["health"], summary="Liveness: the process answers")
    async def health_live() -> Response:
        return _respond(live())

    @router.get(
        "/health/ready",
        tags=["health"],
        summary="Readiness: 503 at EMERGENCY or while a required component is down",
        responses={
            503: {
                "description": "not ready: the reasons, with Retry-After",
                "content": {JSON_CONTENT_TYPE: {"schema": {"type": "object"}}},
            }
        },
    )
    async def health_ready() -> Response:
        return _respond(ready(manager))

    @router.get(
        "/health",
        tags=["health"],
        summary="Level, score, components, features; the why and the details with the admin token",
        responses=problem_responses(401, 403),
    )
    async def health(request: Request) -> Response:
        return _respond(health_reply(manager, token, request.headers.get("authorization")))

    if metrics is not None:
        from brownout.prometheus import CONTENT_TYPE

        @router.get(
            "/metrics",
            tags=["health"],
            summary="Prometheus metrics",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
        async def prometheus_metrics() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE)

    if token is None:
        return router

    for action in BREAKER_ACTIONS:
        router.add_api_route(
            f"/admin/breakers/{{name}}/{action}",
            _breaker_endpoint(manager, token, action),
            methods=["POST"],
            tags=["admin"],
            summary=f"{action.capitalize()} a circuit breaker (admin token)",
            name=f"admin_breaker_{action}",
            responses=problem_responses(400, 401, 403, 404),
        )

    @router.post(
        "/admin/level/pin",
        tags=["admin"],
        summary="Pin the level (admin token)",
        responses=problem_responses(401, 403, 413, 422),
    )
    async def pin_level(request: Request) -> Response:
        denied = authorize(token, request.headers.get("authorization"))
        if denied is not None:
            return _respond(denied)
        return _respond(admin_pin(manager, await request.body()))

    @router.delete(
        "/admin/level/pin",
        tags=["admin"],
        summary="Unpin the level (admin token)",
        responses=problem_responses(401, 403),
    )
    async def unpin_level(request: Request) -> Response:
        denied = authorize(token, request.headers.get("authorization"))
        return _respond(denied or admin_unpin(manager))

    return router


def _breaker_endpoint(manager: DegradationManager, token: str, action: str) -> Any:
    async def endpoint(name: str, request: Request) -> Response:
        denied = authorize(token, request.headers.get("authorization"))
        seconds = request.query_params.get("seconds")
        return _respond(denied or admin_breaker(manager, name, action, seconds))

    endpoint.__name__ = f"admin_breaker_{action}"
    return endpoint


# ------------------------------------------------------------ features


class FeatureUnavailable(HTTPException, BrownoutError):
    """Raised by :class:`requires_feature` while its feature is off: a 503 with ``Retry-After``.

    With :func:`feature_unavailable_handler` installed (:func:`install` does)
    the body is a problem (``application/problem+json``) with code
    ``feature_unavailable``, ``feature``, ``level``, ``reason`` and
    ``retry_after``; with FastAPI's default handler it is the same object
    under ``"detail"``.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status, detail=dict(reply.body), headers=dict(reply.headers))
        self.reply = reply


async def feature_unavailable_handler(request: Request, exc: Exception) -> Response:
    """Exception handler rendering :class:`FeatureUnavailable` as its problem body."""
    if not isinstance(exc, FeatureUnavailable):  # pragma: no cover - registered for it only
        raise exc
    return _respond(exc.reply)


#: What a client is told of a route that cannot run (the log names the cause: not the client).
_MISCONFIGURED = "this route is misconfigured and cannot run; the service's log says why"


class requires_feature:  # lower case: used like a function, Depends(requires_feature("x"))
    """A FastAPI dependency: 503 (:class:`FeatureUnavailable`) while ``feature`` is off.

    ``Depends(requires_feature("ai_pricing"))`` on a route (or in a router's
    ``dependencies``). The manager is ``manager`` if given, else
    ``request.app.state.brownout``. A feature name the manager does not know is
    a programming error: :func:`check_features` (run by :func:`install`)
    refuses it when the app is built; a route that escaped that check answers
    500 and logs the error at its first request.
    """

    def __init__(self, feature: str, manager: DegradationManager | None = None) -> None:
        if not isinstance(feature, str) or not feature:
            raise ValueError(f"requires_feature needs a feature name, got {feature!r}")
        if manager is not None and not isinstance(manager, DegradationManager):
            raise TypeError(
                f"requires_feature manager must be a DegradationManager, got {manager!r}"
            )
        self.feature = feature
        self.manager = manager

    def __repr__(self) -> str:
        return f"requires_feature({self.feature!r})"

    def _manager(self, request: Request) -> DegradationManager:
        if self.manager is not None:
            return self.manager
        manager = getattr(request.app.state, "brownout", None)
        if not isinstance(manager, DegradationManager):
            logger.error(
                "brownout.web: %s on %s %s: no DegradationManager in app.state.brownout "
                "(set app.state.brownout = manager, use brownout.web.install, or pass manager=)",
                self,
                request.method,
                request.url.path,
            )
            raise HTTPException(500, detail=_MISCONFIGURED)
        return manager

    async def __call__(self, request: Request) -> None:
        manager = self._manager(request)
        try:
            on = manager.enabled(self.feature)
        except UnknownFeature as exc:
            logger.error(
                "brownout.web: %s %s requires an unknown feature: %s",
                request.method,
                request.url.path,
                exc,
            )
            raise HTTPException(500, detail=_MISCONFIGURED) from None
        if not on:
            raise FeatureUnavailable(feature_unavailable(manager, self.feature))


def _walk(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _walk(sub)


def _depends_calls(depends: Iterable[Any]) -> Iterator[Any]:
    """The callables of ``Depends(...)`` objects, and of what they depend on in turn."""
    for depends_ in depends:
        call = getattr(depends_, "dependency", None)
        if call is None:
            continue
        yield call
        if isinstance(call, requires_feature):
            continue
        try:
            dependant = get_dependant(path="", call=call)
        except Exception:  # pragma: no cover - not a dependency FastAPI can analyse
            continue
        yield from _walk(dependant)


def _route_requirements(
    routes: Iterable[Any], prefix: str = "", inherited: tuple[Any, ...] = ()
) -> Iterator[tuple[str, requires_feature]]:
    for route in routes:
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant):
            methods = ",".join(sorted(getattr(route, "methods", None) or ()))
            where = f"{methods} {prefix}{getattr(route, 'path', '?')}".strip()
            for call in (*inherited, *_walk(dependant)):
                if isinstance(call, requires_feature):
                    yield where, call
            continue
        original = getattr(route, "original_router", None)
        if original is not None:  # FastAPI >= 0.16x: include_router keeps the router whole
            context = getattr(route, "include_context", None)
            extra = tuple(_depends_calls(getattr(context, "dependencies", None) or ()))
            yield from _route_requirements(
                original.routes, prefix + getattr(context, "prefix", ""), (*inherited, *extra)
            )
            continue
        sub = getattr(route, "routes", None)  # mounted apps
        if sub is not None:
            yield from _route_requirements(sub, prefix + getattr(route, "path", ""), inherited)


def check_features(app: FastAPI | APIRouter, manager: DegradationManager | None = None) -> None:
    """Refuse, at build time, routes that require a feature their manager does not know.

    Walks every route of ``app`` (a ``FastAPI`` app or an ``APIRouter``,
    mounted sub-apps included) and checks each :class:`requires_feature`
    against its own manager, else ``manager``, else ``app.state.brownout``.
    Raises :class:`~brownout.health.UnknownFeature` naming every offending
    route, with close matches. Call it once the routes are defined.
    """
    default = manager
    if default is None:
        state = getattr(app, "state", None)
        default = getattr(state, "brownout", None) if state is not None else None
    problems: list[str] = []
    for where, requirement in _route_requirements(app.routes):
        mgr = requirement.manager or default
        if mgr is None:
            raise ValueError(
                f"check_features: {where} uses {requirement} but no manager is known: pass "
                "check_features(app, manager) or set app.state.brownout"
            )
        known = [f.name for f in mgr.features]
        if requirement.feature not in known:
            close = difflib.get_close_matches(requirement.feature, known, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            problem = f"{where} requires unknown feature {requirement.feature!r}{hint}"
            if problem not in problems:
                problems.append(problem)
    if problems:
        raise UnknownFeature("; ".join(problems))


def install(
    app: FastAPI,
    manager: DegradationManager,
    *,
    metrics: PrometheusMetrics | None = None,
    admin_token: str | None = None,
    prefix: str = "",
    check: bool = True,
    problem_details: bool = True,
) -> APIRouter:
    """Wire ``manager`` into ``app`` in one call; returns the status router it included.

    Sets ``app.state.brownout``, includes :func:`health_router`, adds
    :class:`~brownout.web.DegradationHeaderMiddleware`, registers
    :func:`feature_unavailable_handler`, and (``check=True``) runs
    :func:`check_features` on the routes defined so far: call it after your
    routes, or call ``check_features(app)`` again later. With
    ``problem_details=True`` (the default) every error of the app becomes an
    RFC 9457 problem: :func:`install_problem_handlers` and
    :func:`document_problems`.
    """
    app.state.brownout = manager
    router = health_router(manager, metrics=metrics, admin_token=admin_token, prefix=prefix)
    app.include_router(router)
    app.add_middleware(DegradationHeaderMiddleware, manager=manager)
    app.add_exception_handler(FeatureUnavailable, feature_unavailable_handler)
    if problem_details:
        install_problem_handlers(app)
        document_problems(app)
    if check:
        check_features(app, manager)
    return router


# ------------------------------------------------------------ problems


def _field(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def validation_problem(errors: Iterable[Any]) -> Reply:
    """The 422 problem for pydantic/FastAPI validation ``errors``: field, message, excerpt.

    Only a short excerpt of each offending input is quoted (never the whole
    value: a 50 MB field is not echoed back), and nothing that cannot be
    encoded (NaN, lone surrogates) breaks the answer.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        item: dict[str, Any] = {
            "field": _field(error.get("loc", ())),
            "message": str(error.get("msg", "invalid")),
            "code": str(error.get("type", "invalid")),
        }
        quoted = excerpt(error.get("input")) if "input" in error else None
        if quoted is not None and item["code"] != "missing":
            item["input"] = quoted
        out.append(item)
        if len(out) >= 20:  # a list of 10,000 bad items is not answered item by item
            break
    first = f"{out[0]['field']}: {out[0]['message']}" if out else "the request is not valid"
    more = f" (and {len(out) - 1} more)" if len(out) > 1 else ""
    return problem(422, "validation_error", f"the request is not valid: {first}{more}", errors=out)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    reply = getattr(exc, "reply", None)
    if isinstance(reply, Reply):  # FeatureUnavailable, a body over its limit: their problem
        return problem_response(reply)
    detail = exc.detail
    if not isinstance(detail, str) or not detail:
        detail = code_for_status(exc.status_code).replace("_", " ")
    if exc.status_code < 400:  # pragma: no cover - HTTPException for a redirect: not an error
        return Response(status_code=exc.status_code, headers=exc.headers)
    return problem_response(
        problem(
            exc.status_code,
            code_for_status(exc.status_code),
            detail,
            headers=dict(exc.headers or {}),
        )
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(validation_problem(exc.errors()))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return problem_response(internal_error(request.scope, exc))


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` an RFC 9457 problem (``application/problem+json``).

    ``HTTPException`` (404, 405, ... with its detail), request validation
    (422 with ``errors``: field, message, code and a short excerpt of the
    input) and unexpected exceptions (500 naming a request id; the traceback
    goes to the log). :func:`install` calls it.
    """
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    400: "Bad request",
    401: "No admin token",
    403: "Wrong admin token",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation error",
    500: "Unexpected error (the request id names it in the log)",
    502: "A dependency answered badly",
    503: "Unavailable now: a dependency or feature is off (Retry-After)",
    507: "Out of local storage",
}


def problem_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for ``statuses`` answering a problem body.

    ``descriptions`` overrides a status's description: ``problem_responses(404,
    409, s409="the sku is taken")``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": descriptions.get(f"s{status}")
            or _DESCRIPTIONS.get(status, code_for_status(status).replace("_", " ")),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
        }
    return out


def document_problems(
    app: FastAPI,
    *,
    always: Iterable[int] = (500,),
    with_body: Iterable[int] = (400, 422),
    with_parameters: Iterable[int] = (422,),
    with_path: Iterable[int] = (404,),
    skip: Iterable[str] = (),
) -> None:
    """Make ``app``'s OpenAPI document its problems: every error response has the Problem schema.

    Adds the ``Problem`` schema and documents, on every operation (except the
    paths in ``skip``), the statuses in ``always``; in ``with_body`` on those
    with a request body (a body that cannot be parsed is a 400, an invalid one
    a 422); in ``with_parameters`` on those with query or header parameters; in
    ``with_path`` on those with path parameters (no such resource). The 422
    FastAPI documents (``HTTPValidationError``) becomes a problem, and any
    4xx/5xx documented without a schema is given the problem content type.
    Call it again to document more (each call adds to the last).
    """
    original = app.openapi
    statuses, bodies = tuple(always), tuple(with_body)
    params, paths, skipped = tuple(with_parameters), tuple(with_path), frozenset(skip)

    def wanted(operation: dict[str, Any]) -> list[int]:
        out = list(statuses)
        where = {p.get("in") for p in operation.get("parameters", ())}
        if "requestBody" in operation:
            out.extend(bodies)
        if where & {"query", "header"}:
            out.extend(params)
        if "path" in where:
            out.extend(paths)
        return out

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = original()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for path, item in doc.get("paths", {}).items():
            for operation in item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if path not in skipped:
                    for status in wanted(operation):
                        responses.setdefault(str(status), problem_responses(status)[status])
                for status, response in responses.items():
                    if not status.isdigit() or int(status) < 400:
                        continue
                    content = response.get("content") or {}
                    if PROBLEM_CONTENT_TYPE in content:
                        continue
                    schema = (content.get(JSON_CONTENT_TYPE) or {}).get("schema")
                    if int(status) == 422 or not schema:
                        content.pop(JSON_CONTENT_TYPE, None)
                        content[PROBLEM_CONTENT_TYPE] = {"schema": _PROBLEM_REF}
                    response["content"] = content
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused in schemas and unused not in json.dumps(
                {k: v for k, v in doc.items() if k != "components"}
            ):
                del schemas[unused]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit (an HTTPException: FastAPI lets it
    through its body parsing instead of calling it a parse error)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status, detail=str(reply.body["detail"]))
        self.reply = reply


class BodyLimitMiddleware:
    """ASGI middleware: a request body larger than ``max_bytes`` is a 413 problem, unparsed.

    A ``Content-Length`` over the limit is refused before anything is read; a
    body without one (chunked) is counted while the app reads it and refused
    as soon as it passes the limit. ``exempt`` is a set of ``(method, path)``
    that keep their own limit (uploads streamed to disk). ``hint`` is added to
    the problem's detail (e.g. the setting that changes the limit).
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int,
        *,
        exempt: Iterable[tuple[str, str]] = (),
        hint: str = "",
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes
        self._exempt = frozenset((m.upper(), p) for m, p in exempt)
        self._hint = hint

    def _problem(self) -> Reply:
        detail = f"the request body must be at most {self.max_bytes} bytes; nothing was read"
        if self._hint:
            detail += f" ({self._hint})"
        return problem(413, "body_too_large", detail, max_bytes=self.max_bytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope.get("method", ""), scope.get("path", "")) in (
            self._exempt
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if bytes(name).lower() == b"content-length":
                declared = bytes(value).strip()
                if not declared.isdigit() or int(declared) > self.max_bytes:
                    await problem_response(self._problem())(scope, receive, send)
                    return
        received = 0
        started = False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self._problem())
            return message

        async def tracked(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if started:
                raise
            await problem_response(self._problem())(scope, receive, send)
