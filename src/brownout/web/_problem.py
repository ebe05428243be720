"""RFC 9457 problem details: the one error format of ``brownout.web`` (and of inventario).

Every 4xx and 5xx answer is an ``application/problem+json`` object::

    {"type": "urn:problem:insufficient_stock", "title": "Conflict", "status": 409,
     "detail": "only 2 of BOLT-1 in stock, cannot take out 3",
     "code": "insufficient_stock", "sku": "BOLT-1", "stock": 2, "requested": 3}

``code`` is a stable snake_case identifier (``type`` is the same code as a
URN, as RFC 9457 wants a URI there); ``detail`` says what happened and what to
do, in words meant for people; ``errors`` lists field problems (validation);
``retry_after`` (seconds, also the ``Retry-After`` header) says when trying
again makes sense. Further members are the problem's own facts (``sku``,
``feature``, ``request_id``...). Bodies never carry internals: no SQL, driver
or library names, file paths, DSNs or hosts (the details go to the log).

Framework-neutral and stdlib-only: :func:`problem` returns a
:class:`~brownout.web.Reply` that the FastAPI router and the plain ASGI app
both serve.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from brownout._redact import redact
from brownout.web._reply import Reply

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_SCHEMA",
    "code_for_status",
    "excerpt",
    "problem",
    "problem_body",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: ``type`` of a problem is this prefix and its code.
TYPE_PREFIX = "urn:problem:"
#: How much of a client's input a problem may quote back (characters).
EXCERPT_CHARS = 40

_CODE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")

#: The JSON Schema of a problem body (for OpenAPI documents).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "An RFC 9457 problem details object (application/problem+json).",
    "properties": {
        "type": {"type": "string", "description": "urn:problem:<code>"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer", "description": "the HTTP status code"},
        "detail": {"type": "string", "description": "what happened and what to do"},
        "code": {"type": "string", "description": "stable snake_case identifier"},
        "errors": {
            "type": "array",
            "description": "field problems (validation): where, what, and an excerpt of the input",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                    "input": {"type": "string"},
                },
                "required": ["field", "message", "code"],
            },
        },
        "retry_after": {
            "type": "integer",
            "minimum": 1,
            "description": "seconds before trying again makes sense (also Retry-After)",
        },
        "request_id": {
            "type": "string",
            "description": "500: identifies the error in the service's log",
        },
    },
    "required": ["type", "title", "status", "detail", "code"],
    "additionalProperties": True,
}

_RESERVED = frozenset({"type", "title", "status", "detail", "code", "errors", "retry_after"})


def code_for_status(status: int) -> str:
    """The default code of a status: its phrase in snake_case (``404`` -> ``not_found``)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_") or "error"


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def retry_seconds(value: float) -> int:
    """Whole seconds for ``Retry-After``: at least 1, a finite number."""
    try:
        wait = float(value)
    except (TypeError, ValueError):
        return 5
    if not math.isfinite(wait):
        return 60
    return max(1, math.ceil(wait))


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    retry_after: float | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """The JSON object of a problem (see :func:`problem` for the arguments)."""
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"a problem needs a 4xx or 5xx status, got {status!r}")
    if not isinstance(code, str) or not _CODE.match(code):
        raise ValueError(f"a problem code must be snake_case, got {code!r}")
    clash = _RESERVED.intersection(extensions)
    if clash:
        raise ValueError(f"problem extensions cannot replace {sorted(clash)}")
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title or _title(status),
        "status": status,
        "detail": redact(str(detail)),
        "code": code,
    }
    body.update(extensions)
    if errors is not None:
        body["errors"] = [dict(e) for e in errors]
    if retry_after is not None:
        body["retry_after"] = retry_seconds(retry_after)
    return body


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Reply:
    """An RFC 9457 problem as a :class:`~brownout.web.Reply` (``application/problem+json``).

    ``code`` is snake_case (``type`` becomes ``urn:problem:<code>``); ``title``
    defaults to the status phrase; ``errors`` lists field problems;
    ``retry_after`` (seconds, rounded up to at least 1) also sets the
    ``Retry-After`` header; ``extensions`` are further members of the body.
    ``detail`` is redacted once more (no URL passwords or keys).
    """
    body = problem_body(
        status, code, detail, title=title, errors=errors, retry_after=retry_after, **extensions
    )
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(body["retry_after"])
    return Reply(status, body, all_headers, content_type=PROBLEM_CONTENT_TYPE)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str | None:
    """A short, printable excerpt of a client's input, or ``None`` for containers.

    Strings longer than ``limit`` are cut (with ``…``); lone surrogates become
    ``\\udXXX`` escapes so the excerpt can always be encoded; numbers (NaN and
    infinities included) become their text. Objects and lists are not quoted.
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: limit * 4]).decode("utf-8", "backslashreplace")
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    cut = len(text) > limit
    text = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    return text + "…" if cut else text
