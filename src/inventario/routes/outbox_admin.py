"""The outbox for operators: list, retry and discard its dead letters (behind ``ADMIN_TOKEN``).

A write answered 202 waits in the outbox until the database can take it. An
outage or a missing schema never kills it (it waits, however long); a write the
database refuses for good (the sku was taken meanwhile, not enough stock) or that
failed ``max_attempts`` times is a *dead letter*, kept with its reason for an
operator, shown on ``/status`` and counted by ``brownout_outbox_dead_letters_stored``.
The operator's tools (``inventario outbox ...`` calls them):

* ``GET  /admin/outbox`` -- the backlog figures, the dead letters (key, operation,
  payload, attempts, reason) and the pending intents with why they wait;
* ``POST /admin/outbox/retry`` -- send dead letters back to be applied again
  (after fixing what made them fail: e.g. stock booked in);
* ``POST /admin/outbox/discard`` -- give up on dead letters for good; their key
  stays known (``GET /writes/{key}`` says ``discarded``, with the reason).

Each action takes ``{"keys": [...]}`` (idempotency keys, as listed) or
``{"all": true}`` (every dead letter).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from brownout.outbox import DeadLetter, Intent, Outbox
from brownout.web import problem_responses
from inventario.deps import RuntimeDep, require_admin

__all__ = ["OutboxSelection", "router"]

#: Most keys one request acts on, and most entries one listing shows.
MAX_KEYS = 1000

router = APIRouter(
    prefix="/admin/outbox",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403),
)

Key = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:\-]+$")
]


class OutboxSelection(BaseModel):
    """Which dead letters: ``keys`` (their idempotency keys) or ``all``."""

    model_config = ConfigDict(extra="forbid")

    keys: list[Key] = Field(default_factory=list, max_length=MAX_KEYS)
    all: bool = False

    @model_validator(mode="after")
    def _one(self) -> OutboxSelection:
        if bool(self.keys) == self.all:
            raise ValueError("give either keys (a non-empty list) or all: true")
        return self


class OutboxAction(BaseModel):
    """What an action did: how many dead letters it moved, and the keys that were not dead."""

    done: int = Field(description="dead letters retried or discarded")
    not_dead: list[str] = Field(description="keys given that are not dead letters (untouched)")
    dead_letters: int = Field(description="dead letters left")


def _dead(d: DeadLetter, now: float) -> dict[str, Any]:
    return {
        "key": d.key,
        "operation": d.operation,
        "stream": d.stream,
        "payload": d.payload,
        "attempts": d.attempts,
        "reason": d.reason,
        "accepted_at": d.created,
        "dead_at": d.dead_at,
        "age_s": max(0.0, now - d.created),
    }


def _pending(i: Intent, now: float) -> dict[str, Any]:
    return {
        "key": i.key,
        "operation": i.operation,
        "stream": i.stream,
        "attempts": i.attempts,
        "waiting_because": i.last_error,
        "accepted_at": i.created,
        "age_s": max(0.0, now - i.created),
    }


@router.get("", summary="The outbox's dead letters and pending writes")
async def list_outbox(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_KEYS, description="most entries of each list")] = 100,
) -> dict[str, Any]:
    """Backlog figures, dead letters (with their reason) and pending writes (with why
    they wait), oldest first."""
    outbox: Outbox = rt.outbox
    now = time.time()
    return {
        "stats": outbox.stats(),
        "dead_letters": [_dead(d, now) for d in outbox.dead_letters(limit)],
        "pending": [_pending(i, now) for i in outbox.pending(limit)],
    }


def _act(rt: Any, selection: OutboxSelection, action: str) -> dict[str, Any]:
    outbox: Outbox = rt.outbox
    move = outbox.retry_dead if action == "retry" else outbox.discard_dead
    not_dead: list[str] = []
    if selection.all:
        done = move(None)
    else:
        done = 0
        for key in dict.fromkeys(selection.keys):
            moved = move(key)
            done += moved
            if not moved:
                not_dead.append(key)
    return {"done": done, "not_dead": not_dead, "dead_letters": outbox.stats()["dead_letters"]}


@router.post("/retry", response_model=OutboxAction, summary="Apply dead letters again")
async def retry_dead_letters(selection: OutboxSelection, rt: RuntimeDep) -> dict[str, Any]:
    """Send dead letters back to the outbox, at the end of their product's queue, with
    their attempts reset; the replayer is woken at once."""
    result = _act(rt, selection, "retry")
    if result["done"]:
        rt.replayer.wake()
    return result


@router.post("/discard", response_model=OutboxAction, summary="Give up on dead letters")
async def discard_dead_letters(selection: OutboxSelection, rt: RuntimeDep) -> dict[str, Any]:
    """Delete dead letters for good (never applied); their keys answer ``discarded``."""
    return _act(rt, selection, "discard")
