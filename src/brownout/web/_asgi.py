"""Plain ASGI: the ``X-Degradation-Level`` middleware and the status endpoints without FastAPI.

Neither needs anything beyond the standard library: :class:`StatusApp` serves
the same endpoints, with the same JSON, as
:func:`brownout.web.health_router`, for services on another framework (or
none); :class:`DegradationHeaderMiddleware` wraps any ASGI app (FastAPI,
Starlette, :class:`StatusApp`, ...).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from brownout.web._problem import problem
from brownout.web._reply import Reply
from brownout.web._status import (
    BREAKER_ACTIONS,
    MAX_BODY,
    admin_breaker,
    admin_pin,
    admin_unpin,
    authorize,
    check_admin_token,
    health_reply,
    live,
    method_not_allowed,
    not_found,
    ready,
)

if TYPE_CHECKING:
    from brownout.health import DegradationManager
    from brownout.prometheus import PrometheusMetrics

__all__ = ["ASGIApp", "DegradationHeaderMiddleware", "StatusApp"]

logger = logging.getLogger("brownout.web")

# The ASGI types, spelled as Starlette spells them (so these classes fit its add_middleware).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "X-Degradation-Level"


def internal_error(scope: Scope, exc: BaseException) -> Reply:
    """The 500 problem for an unexpected exception, logged with its traceback and request id.

    The body names only the request id (``request_id``, also the
    ``X-Request-ID`` header): the exception, its message and the traceback go
    to the log, never to the client.
    """
    request_id = uuid.uuid4().hex
    logger.error(
        "unhandled error in %s %s (request id %s)",
        scope.get("method", "?"),
        scope.get("path", "?"),
        request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return problem(
        500,
        "internal_error",
        f"an unexpected error occurred; the service's log has the details under request id "
        f"{request_id}",
        headers={"X-Request-ID": request_id},
        request_id=request_id,
    )


class DegradationHeaderMiddleware:
    """Pure ASGI middleware: ``X-Degradation-Level: <LEVEL NAME>`` on every HTTP response.

    The level is read when the response starts. Only the ``http.response.start``
    message is touched, so streaming bodies pass through untouched. If the
    wrapped app raises before it started a response, the middleware logs the
    exception with a request id and answers a 500 problem
    (``application/problem+json``, code ``internal_error``) naming only that
    id; an exception after the response started is re-raised (the server
    closes the connection and logs it).

    FastAPI / Starlette: ``app.add_middleware(DegradationHeaderMiddleware, manager=manager)``;
    anything else: ``app = DegradationHeaderMiddleware(app, manager)``.
    """

    def __init__(self, app: ASGIApp, manager: DegradationManager, header: str = HEADER) -> None:
        self.app = app
        self.manager = manager
        self._header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        header = self._header

        async def send_with_level(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if bytes(k).lower() != header
                ]
                headers.append((header, self.manager.level.name.encode("latin-1")))
                message = dict(message)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_level)
        except Exception as exc:
            if started:
                raise
            await _send_reply(send_with_level, internal_error(scope, exc))


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {prefix!r}")
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(
            f"prefix must be '' or start with '/' and not end with '/', got {prefix!r}"
        )
    return prefix


class StatusApp:
    """The status endpoints as a plain ASGI app (no FastAPI needed).

    ``GET /health/live``, ``GET /health/ready``, ``GET /health``, ``GET /metrics``
    (only with ``metrics``), and with ``admin_token`` the admin endpoints
    ``POST /admin/breakers/{name}/open|close|disable|shadow|unshadow`` (``open?seconds=N``:
    open for N seconds), ``POST`` and
    ``DELETE /admin/level/pin``; all under ``prefix``. Every response carries
    ``X-Degradation-Level``. Serve it on its own (``uvicorn module:app``) or
    mount it in another framework.
    """

    def __init__(
        self,
        manager: DegradationManager,
        *,
        metrics: PrometheusMetrics | None = None,
        admin_token: str | None = None,
        prefix: str = "",
    ) -> None:
        self.manager = manager
        self._metrics = metrics
        self._token = check_admin_token(admin_token)
        self._prefix = check_prefix(prefix)
        self._metrics_type = ""
        if metrics is not None:
            from brownout.prometheus import CONTENT_TYPE

            self._metrics_type = CONTENT_TYPE
        self._app = DegradationHeaderMiddleware(self._serve, manager)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await self._app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    def _path(self, scope: Scope) -> str | None:
        path: str = scope.get("path", "/")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if self._prefix:
            if path != self._prefix and not path.startswith(self._prefix + "/"):
                return None
            path = path[len(self._prefix) :]
        return path or "/"

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope.get("method", "GET").upper()
        path = self._path(scope)
        if path is None:
            await _send_reply(send, not_found())
            return
        if path in ("/health/live", "/health/ready", "/health", "/metrics"):
            if path == "/metrics" and self._metrics is None:
                await _send_reply(send, not_found())
            elif method != "GET":
                await _send_reply(send, method_not_allowed(("GET",)))
            elif path == "/metrics":
                assert self._metrics is not None
                await _send(send, 200, self._metrics.render(), self._metrics_type, {})
            elif path == "/health/live":
                await _send_reply(send, live())
            elif path == "/health/ready":
                await _send_reply(send, ready(self.manager))
            else:
                authorization = _header(scope, b"authorization")
                await _send_reply(send, health_reply(self.manager, self._token, authorization))
            return
        if self._token is not None:
            reply = await self._admin(method, path, scope, receive)
            if reply is not None:
                await _send_reply(send, reply)
                return
        await _send_reply(send, not_found())

    async def _admin(self, method: str, path: str, scope: Scope, receive: Receive) -> Reply | None:
        """The admin reply for ``path``, or ``None`` if it is no admin endpoint."""
        assert self._token is not None
        parts = path.split("/")  # "", "admin", ...
        if path == "/admin/level/pin":
            allowed: tuple[str, ...] = ("POST", "DELETE")
        elif (
            len(parts) == 5
            and parts[1] == "admin"
            and parts[2] == "breakers"
            and parts[3]
            and parts[4] in BREAKER_ACTIONS
        ):
            allowed = ("POST",)
        else:
            return None
        if method not in allowed:
            return method_not_allowed(allowed)
        denied = authorize(self._token, _header(scope, b"authorization"))
        if denied is not None:
            return denied
        if path == "/admin/level/pin":
            if method == "DELETE":
                return admin_unpin(self.manager)
            return admin_pin(self.manager, await _read_body(receive))
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        seconds = query.get("seconds", [None])[-1]
        return admin_breaker(self.manager, parts[3], parts[4], seconds)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if size <= MAX_BODY:  # keep one byte past the limit: enough to refuse the body
            chunks.append(chunk[: MAX_BODY + 1 - size])
        size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_reply(send: Send, reply: Reply) -> None:
    await _send(send, reply.status, reply.content(), reply.content_type, reply.headers)


async def _send(send: Send, status: int, body: bytes, content_type: str, headers: Any) -> None:
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
