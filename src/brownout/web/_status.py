"""The status model behind ``brownout.web``: JSON documents and admin actions, framework-neutral.

Everything here is a plain function of a
:class:`~brownout.health.DegradationManager` (and, for the admin actions, of
the request's ``Authorization`` header and body) returning a :class:`Reply`:
a status code, a JSON-ready body and extra headers. The FastAPI router and the
plain ASGI app both serve these replies, encoded by :func:`encode`, so they
answer byte for byte the same.

Nothing in a reply comes from ``repr()`` of user objects (probes, clients):
only names, numbers, states and texts that the breakers and adapters already
redacted; every string of the ``/health`` document goes through
:func:`brownout._redact.redact` once more on the way out.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from brownout._redact import redact
from brownout.health import Level, UnknownFeature
from brownout.web._problem import problem
from brownout.web._reply import JSON_CONTENT_TYPE, Reply, encode

if TYPE_CHECKING:
    from brownout._breaker import CircuitBreaker
    from brownout.health import Component, DegradationManager

__all__ = [
    "JSON_CONTENT_TYPE",
    "Reply",
    "admin_breaker",
    "admin_pin",
    "admin_unpin",
    "authorize",
    "encode",
    "feature_unavailable",
    "find_breaker",
    "health_document",
    "health_reply",
    "live",
    "ready",
    "retry_after_seconds",
]

logger = logging.getLogger("brownout.web")

#: How many transitions ``/health`` lists (most recent last).
RECENT_TRANSITIONS = 20
#: Longest accepted pin reason (characters).
MAX_REASON = 200
#: Largest accepted admin request body (bytes).
MAX_BODY = 16 * 1024

BREAKER_ACTIONS = ("open", "close", "disable", "shadow", "unshadow")
#: Longest timed open the admin API accepts (seconds): a day.
MAX_OPEN_SECONDS = 86_400.0


def _scrub(value: Any) -> Any:
    """Every string value redacted again (defence in depth: keys are ours and left alone)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


# ------------------------------------------------------------------- probes


def live() -> Reply:
    """``/health/live``: the process answers. Never depends on a dependency."""
    return Reply(200, {"status": "alive"})


def ready(manager: DegradationManager) -> Reply:
    """``/health/ready``: 503 at EMERGENCY or while a ``required_for_ready`` component is down."""
    level = manager.level
    reasons: list[str] = []
    if level >= Level.EMERGENCY:
        reasons.append(f"degradation level is {level.name}")
    evaluation = manager.last_evaluation
    down = evaluation.down if evaluation is not None else frozenset()
    required = [c.name for c in manager.components if c.required_for_ready and c.configured]
    for name in required:
        if name in down:
            reasons.append(f"required component {name} is down")
    body: dict[str, Any] = {
        "status": "not_ready" if reasons else "ready",
        "level": level.name,
        "score": manager.score,
        "required": required,
    }
    if reasons:
        body["reasons"] = reasons
        return Reply(503, body, {"Retry-After": str(retry_after_seconds(manager))})
    return Reply(200, body)


def retry_after_seconds(manager: DegradationManager) -> int:
    """``manager.retry_after()`` as whole seconds, at least 1 (for ``Retry-After``)."""
    try:
        wait = float(manager.retry_after())
    except Exception:  # a Retry-After hint must never fail the answer it decorates
        logger.exception("brownout.web: manager.retry_after() failed")
        wait = 5.0
    if not math.isfinite(wait):
        wait = 60.0
    return max(1, math.ceil(wait))


# ------------------------------------------------------------------- /health


def _component(manager: DegradationManager, c: Component, view: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": c.name,
        "configured": c.configured,
        "required_for_ready": c.required_for_ready,
        "depends_on": sorted(c.depends_on),
    }
    if view is not None:
        doc.update(
            weight=view.weight,
            score=view.score,
            status=view.status,
            down=view.down,
            why=list(view.why),
            cascade_of=view.root_cause,
        )
    adapter_doc: dict[str, Any] | None = None
    if c.adapter is not None and c.configured:
        try:
            adapter_doc = dict(c.adapter.health())
        except Exception as exc:
            logger.exception("brownout.web: health() of adapter %r failed", c.adapter.name)
            adapter_doc = {"error": f"health() failed: {type(exc).__name__}"}
    breaker_doc: dict[str, Any] | None = None
    if c.breaker is not None:
        if (
            adapter_doc is not None
            and c.adapter is not None
            and c.adapter.breaker is c.breaker
            and isinstance(adapter_doc.get("breaker"), Mapping)
        ):
            # the adapter's copy: its last_error is also cleaned of the adapter's own secrets
            breaker_doc = dict(adapter_doc.pop("breaker"))
        else:
            breaker_doc = c.breaker.snapshot().to_dict()
    elif adapter_doc is not None:
        adapter_doc.pop("breaker", None)
    doc["breaker"] = breaker_doc
    doc["adapter"] = adapter_doc
    doc["probe"] = manager.probe_state(c.name) if c.probe is not None and c.configured else None
    return doc


def _features(manager: DegradationManager) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for feature in manager.features:
        try:
            on, reason = manager.enabled(feature.name), manager.feature_reason(feature.name)
        except UnknownFeature:  # pragma: no cover - every feature is evaluated at start
            on, reason = False, "not evaluated yet"
        out[feature.name] = {
            "enabled": on,
            "reason": reason,
            "requires": sorted(feature.requires),
            "worst_level": feature.worst_level.name,
            "description": feature.description,
        }
    return out


#: Where the details of ``/health`` are, told to a client that asked without the token.
DETAILS_HINT = (
    "components and their state only: errors, adapters, breakers, probes, transitions and "
    "settings with 'Authorization: Bearer <admin token>'"
)


def health_document(manager: DegradationManager, *, details: bool = True) -> dict[str, Any]:
    """``/health``: level, score, components, features, transitions, explanation, settings.

    ``details=False`` is what anyone may see: the level, the score, each
    component's name and state, each feature's state. Everything that can
    name internals (errors, adapters with their hosts, users and paths,
    breakers, probes, transitions, the explanation, settings) needs
    ``details=True`` (the routers: a valid admin token).
    """
    evaluation = manager.last_evaluation
    views = {v.name: v for v in evaluation.components} if evaluation is not None else {}
    pin = manager.pinned
    if not details:
        public: dict[str, Any] = _scrub(
            {
                "level": manager.level.name,
                "level_value": int(manager.level),
                "score": manager.score,
                "components": [_state(c, views.get(c.name)) for c in manager.components],
                "features": {
                    name: {"enabled": f["enabled"], "reason": f["reason"]}
                    for name, f in _features(manager).items()
                },
                "pinned": None if pin is None else {"level": pin[0].name},
                "retry_after_s": retry_after_seconds(manager),
                "details": False,
                "details_hint": DETAILS_HINT,
            }
        )
        return public
    doc = {
        "level": manager.level.name,
        "level_value": int(manager.level),
        "score": manager.score,
        "components": [_component(manager, c, views.get(c.name)) for c in manager.components],
        "features": _features(manager),
        "transitions": [t.to_dict() for t in manager.history[-RECENT_TRANSITIONS:]],
        "explanation": manager.explain(),
        "settings": manager.settings.to_dict(),
        "pinned": None
        if pin is None
        else {"level": pin[0].name, "seconds_left": pin[1], "reason": pin[2]},
        "predicted_recovery_s": manager.predict_recovery(),
        "retry_after_s": retry_after_seconds(manager),
        "details": True,
    }
    scrubbed: dict[str, Any] = _scrub(doc)
    return scrubbed


def _state(c: Component, view: Any) -> dict[str, Any]:
    """A component as anyone may see it: name and state, nothing it was configured with."""
    doc: dict[str, Any] = {"name": c.name, "configured": c.configured}
    if view is not None:
        doc.update(status=view.status, score=view.score, down=view.down)
    return doc


def health_reply(
    manager: DegradationManager, admin_token: str | None, authorization: str | None
) -> Reply:
    """``GET /health``: the details with a valid admin token, the public document without one.

    No ``Authorization`` header: the public document (200). A header with a
    wrong token: 401/403 as the admin endpoints answer (not a silently shorter
    document).
    """
    if authorization is None or admin_token is None:
        return Reply(200, health_document(manager, details=False))
    denied = authorize(admin_token, authorization)
    if denied is not None:
        return denied
    return Reply(200, health_document(manager, details=True))


def feature_unavailable(manager: DegradationManager, feature: str) -> Reply:
    """The 503 problem for a request that needs ``feature`` while it is off.

    ``code`` ``feature_unavailable`` with ``feature``, ``level``, ``reason``
    and ``retry_after`` (also the ``Retry-After`` header).
    """
    wait = retry_after_seconds(manager)
    level = manager.level.name
    reason = redact(manager.feature_reason(feature))
    return problem(
        503,
        "feature_unavailable",
        f"{feature} is off at level {level} ({reason}): try again in {wait} s",
        retry_after=wait,
        feature=feature,
        level=level,
        reason=reason,
    )


# -------------------------------------------------------------------- admin


def _error(status: int, error: str, message: str, **headers: str) -> Reply:
    return problem(status, error, message, headers=headers)


def authorize(admin_token: str, authorization: str | None) -> Reply | None:
    """``None`` if ``authorization`` is ``Bearer <admin_token>``, else the 401/403 to answer.

    The comparison takes constant time (``hmac.compare_digest`` on UTF-8 bytes);
    neither the expected nor the offered token appears in the reply.
    """
    challenge = 'Bearer realm="brownout-admin"'
    if not authorization:
        return _error(
            401,
            "unauthorized",
            "this endpoint needs an 'Authorization: Bearer <admin token>' header",
            **{"WWW-Authenticate": challenge},
        )
    scheme, _, offered = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return _error(
            401,
            "unauthorized",
            "the Authorization header must use the Bearer scheme",
            **{"WWW-Authenticate": challenge},
        )
    if not hmac.compare_digest(offered.strip().encode("utf-8"), admin_token.encode("utf-8")):
        return _error(403, "forbidden", "the admin token is not valid")
    return None


def check_admin_token(admin_token: str | None) -> str | None:
    """Validate a configured admin token (``None``: the admin endpoints do not exist)."""
    if admin_token is None:
        return None
    if not isinstance(admin_token, str) or not admin_token.strip():
        raise ValueError("admin_token must be a non-empty string (or None to disable admin)")
    if admin_token != admin_token.strip() or any(ch.isspace() for ch in admin_token):
        raise ValueError("admin_token must not contain whitespace")
    return admin_token


def find_breaker(manager: DegradationManager, name: str) -> CircuitBreaker | None:
    """The breaker of the manager's components named ``name`` (by breaker, then component name)."""
    for c in manager.components:
        if c.breaker is not None and c.breaker.name == name:
            return c.breaker
    for c in manager.components:
        if c.breaker is not None and c.name == name:
            return c.breaker
    return None


def admin_breaker(
    manager: DegradationManager, name: str, action: str, seconds: str | None = None
) -> Reply:
    """``POST /admin/breakers/{name}/{open|close|disable|shadow|unshadow}``.

    ``open?seconds=N`` opens for N seconds, then half-opens as after a trip
    (without it: forced open until closed); ``shadow`` / ``unshadow`` switch
    shadow mode (count, never reject) on and off.
    """
    if action not in BREAKER_ACTIONS:
        return _error(404, "not_found", f"unknown breaker action {action!r}")
    duration = None
    if seconds is not None:
        if action != "open":
            return _error(400, "bad_request", f"seconds= applies to 'open' only, not {action!r}")
        try:
            duration = float(seconds)
        except ValueError:
            duration = math.nan
        if not 0 < duration <= MAX_OPEN_SECONDS:  # also refuses nan
            return _error(
                400,
                "bad_request",
                f"seconds must be a number in (0, {MAX_OPEN_SECONDS:g}], got {seconds[:40]!r}",
            )
    breaker = find_breaker(manager, name)
    if breaker is None:
        known = sorted({c.breaker.name for c in manager.components if c.breaker is not None})
        return _error(404, "unknown_breaker", f"no breaker named {name!r}; known: {known}")
    if action == "open":
        breaker.force_open("forced open via the admin API", duration=duration)
    elif action == "close":
        breaker.reset("reset via the admin API")
    elif action == "disable":
        breaker.disable("disabled via the admin API")
    else:
        breaker.set_shadow(action == "shadow")
    logger.warning(
        "brownout.web admin: breaker %r %s%s",
        breaker.name,
        action,
        f" for {duration:g} s" if duration is not None else "",
    )
    body: dict[str, Any] = {
        "breaker": breaker.name,
        "action": action,
        "state": breaker.state.value,
        "shadow": breaker.shadow,
        "level": manager.level.name,
    }
    if duration is not None:
        body["seconds"] = duration
    return Reply(200, body)


def _parse_level(value: Any) -> Level | None:
    if isinstance(value, str):
        try:
            return Level[value.strip().upper()]
        except KeyError:
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Level(value)
        except ValueError:
            return None
    return None


def admin_pin(manager: DegradationManager, raw: bytes) -> Reply:
    """``POST /admin/level/pin`` with ``{"level": "MINIMAL", "duration": 300, "reason": "..."}``."""
    if len(raw) > MAX_BODY:
        return _error(413, "body_too_large", f"the body must be at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return _error(422, "invalid_body", "the body must be a JSON object")
    if not isinstance(body, dict):
        return _error(
            422,
            "invalid_body",
            'the body must be a JSON object like {"level": "MINIMAL", "duration": 300}',
        )
    names = [lvl.name for lvl in Level]
    level = _parse_level(body.get("level"))
    if level is None:
        return _error(422, "invalid_level", f"level must be one of {names}")
    duration = body.get("duration")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or duration <= 0
    ):
        return _error(422, "invalid_duration", "duration must be a number of seconds > 0")
    reason = body.get("reason", "pinned via the admin API")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        return _error(
            422, "invalid_reason", f"reason must be a string of at most {MAX_REASON} characters"
        )
    unknown = sorted(set(body) - {"level", "duration", "reason"})
    if unknown:
        return _error(422, "invalid_body", f"unknown field(s) {unknown}")
    reason = redact(reason) or "pinned via the admin API"
    manager.pin(level, duration=float(duration), reason=reason)
    logger.warning(
        "brownout.web admin: level pinned at %s for %g s (%s)", level.name, duration, reason
    )
    pin = manager.pinned
    return Reply(
        200,
        {
            "level": manager.level.name,
            "pinned": None
            if pin is None
            else {"level": pin[0].name, "seconds_left": pin[1], "reason": pin[2]},
        },
    )


def admin_unpin(manager: DegradationManager) -> Reply:
    """``DELETE /admin/level/pin``."""
    was = manager.pinned
    manager.unpin()
    logger.warning("brownout.web admin: level unpinned")
    return Reply(
        200,
        {"level": manager.level.name, "pinned": None, "was_pinned": was is not None},
    )


def not_found() -> Reply:
    return _error(404, "not_found", "no such endpoint")


def method_not_allowed(allowed: tuple[str, ...]) -> Reply:
    return _error(405, "method_not_allowed", "method not allowed", Allow=", ".join(allowed))
