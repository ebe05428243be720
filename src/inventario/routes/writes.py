"""``GET /writes/{key}``: where a write accepted with 202 stands."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from brownout.web import authorize, problem_response, problem_responses
from inventario.deps import RuntimeDep
from inventario.schemas import WriteStatus
from inventario.writes import public_reason

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/writes/{key}",
    response_model=WriteStatus,
    responses=problem_responses(401, 403),
    tags=["writes"],
)
async def write_status(key: str, rt: RuntimeDep, request: Request) -> Any:
    """Where a write accepted with 202 stands: ``pending`` (with why it waits),
    ``applied``, ``dead`` (with the reason: an operator may retry or discard it) or
    ``discarded`` (an operator gave up on it).

    ``last_error`` is in words for any client: a refusal by the data says what was
    refused (``refused (insufficient_stock): ...``); any other failure says only that
    it failed (``failed: ...``). The error as recorded (``reason``: it may name
    tables, SQL or paths) is shown only with ``Authorization: Bearer <ADMIN_TOKEN>``
    (a wrong token is a 401/403 problem), as ``/health``'s details.
    """
    authorization = request.headers.get("authorization")
    admin = rt.settings.admin_token
    operator = False
    if authorization is not None and admin is not None:
        denied = authorize(admin.get_secret_value(), authorization)
        if denied is not None:
            return problem_response(denied)
        operator = True
    status = rt.outbox.status(key)
    if status is None:
        return {"idempotency_key": key, "status": "unknown"}
    out: dict[str, Any] = {"idempotency_key": key, "status": status}
    reason: str | None = None
    if status == "pending":
        intent = rt.outbox.pending_intent(key)
        if intent is not None:
            reason = intent.last_error
            public = public_reason(reason)
            if intent.attempts == 0 and reason:
                # it waits for the database (an outage is never the write's fault)
                public = "waiting: the database could not take it yet"
            out.update(operation=intent.operation, attempts=intent.attempts, last_error=public)
    elif status == "dead":
        dead = rt.outbox.dead_letter(key)
        if dead is not None:
            reason = dead.reason
            out.update(
                operation=dead.operation, attempts=dead.attempts, last_error=public_reason(reason)
            )
    elif status == "discarded":
        reason = rt.outbox.discarded_reason(key)
        out.update(last_error=public_reason(reason))
    if operator and reason:
        out["reason"] = reason
    return out
