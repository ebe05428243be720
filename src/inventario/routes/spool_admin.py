"""The invoice spool for operators: its health, and list / retry / retarget / discard.

Files that S3 could not take yet wait in the spool (``brownout.spool``). One
whose destination refuses it for good (no such bucket, access denied) is marked
*failed* with the reason by the uploader and then waits for an operator; until
then S3 is shown "degraded" on ``/health`` and ``/status`` (with the reason) and
``brownout_spool_failed_entries`` counts it. The operator's tools, behind
``ADMIN_TOKEN`` (and ``inventario spool ...``, which calls them):

* ``GET  /admin/spool`` -- the entries (``?state=failed`` for the failed ones);
* ``POST /admin/spool/retry`` -- try again (after creating the bucket or fixing
  its policy);
* ``POST /admin/spool/retarget`` -- send them to another bucket (``"bucket":
  null``: the configured one); the invoices' records follow;
* ``POST /admin/spool/discard`` -- delete them without uploading (their invoices
  keep their lines; their file is gone).

Each action takes ``{"ids": [...]}`` (full ids or unique prefixes of at least 8
characters, as ``GET`` lists them) or ``{"all_failed": true}``. The spool is
locked by the running service, so these are the only way to act on it while it
runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from brownout.spool import Spool, SpoolEntry, SpoolError
from brownout.web import problem_responses
from inventario.db import invoices
from inventario.deps import RuntimeDep, require_admin, write_in_database
from inventario.invoice_storage import UNBOUND
from inventario.runtime import Runtime
from inventario.spool_health import spool_backlog

__all__ = ["Retarget", "Selection", "router"]

logger = logging.getLogger("inventario")

router = APIRouter(prefix="/admin/spool", tags=["admin"])

#: Shortest id prefix an action accepts.
MIN_PREFIX = 8
#: Most entries one request lists or acts on.
MAX_IDS = 1000

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# ------------------------------------------------------------------ admin endpoints


Admin = Depends(require_admin)  # shared with the outbox admin: one token check

IdPrefix = Annotated[str, StringConstraints(pattern=rf"^[0-9a-f]{{{MIN_PREFIX},64}}$")]


class Selection(BaseModel):
    """Which entries: ``ids`` (full ids or unique prefixes) or ``all_failed``."""

    model_config = ConfigDict(extra="forbid")

    ids: list[IdPrefix] = Field(default_factory=list, max_length=MAX_IDS)
    all_failed: bool = False

    @model_validator(mode="after")
    def _one(self) -> Selection:
        if bool(self.ids) == self.all_failed:
            raise ValueError("give either ids (a non-empty list) or all_failed: true")
        return self


class Retarget(Selection):
    """The selection and its new bucket (``null``: the configured one at upload time)."""

    bucket: str | None = Field(
        description="an S3 bucket name; null: the bucket configured when it is uploaded"
    )

    @model_validator(mode="after")
    def _bucket(self) -> Retarget:
        if self.bucket is not None and not _BUCKET.match(self.bucket):
            raise ValueError(
                "bucket must be an S3 bucket name (3-63 characters: a-z, 0-9, '.', '-') or null"
            )
        return self


def _view(entry: SpoolEntry, now: float) -> dict[str, Any]:
    return {
        "id": entry.id,
        "bucket": entry.bucket,
        "key": entry.key,
        "destination": entry.destination,
        "size": entry.size,
        "content_type": entry.content_type,
        "sha256": entry.sha256,
        "spooled_at": entry.created,
        "age_s": max(0.0, now - entry.created),
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "state": "failed" if entry.failed is not None else "pending",
        "failed": entry.failed,
        "failed_at": entry.failed_at,
    }


def _spool(rt: Runtime) -> Spool:
    return rt.spool


def _select(spool: Spool, selection: Selection) -> tuple[list[SpoolEntry], list[str]]:
    """(the entries selected, the ids that name none); an ambiguous prefix is a 422."""
    if selection.all_failed:
        return spool.failed(), []
    entries = spool.entries()
    found: dict[str, SpoolEntry] = {}
    missing: list[str] = []
    for prefix in dict.fromkeys(selection.ids):
        matches = [e for e in entries if e.id.startswith(prefix)]
        if len(matches) > 1:
            raise HTTPException(
                422, f"the id prefix {prefix!r} matches {len(matches)} entries: give more of it"
            )
        if matches:
            found[matches[0].id] = matches[0]
        else:
            missing.append(prefix)
    return list(found.values()), missing


def _wake(rt: Runtime) -> None:
    if rt.spool_uploader is not None:
        rt.spool_uploader.wake()


_ERRORS = problem_responses(401, 403, 422, s422="a bad selection: ids or all_failed, not both")


@router.get("", dependencies=[Admin], summary="Spooled uploads (admin token)", responses=_ERRORS)
async def list_spool(
    rt: RuntimeDep,
    state: Annotated[Literal["all", "failed", "pending"], Query()] = "all",
    limit: Annotated[int, Query(ge=1, le=MAX_IDS)] = 100,
) -> dict[str, Any]:
    """The spool's figures and its entries, oldest first (``state`` filters them)."""
    spool = _spool(rt)
    entries = await asyncio.to_thread(spool.entries)
    if state != "all":
        entries = [e for e in entries if (e.failed is not None) == (state == "failed")]
    now = time.time()
    bucket = rt.s3.bucket if rt.s3 is not None else None
    return {
        "stats": spool_backlog(spool, bucket),
        "total": len(entries),
        "entries": [_view(e, now) for e in entries[:limit]],
    }


@router.post(
    "/retry", dependencies=[Admin], summary="Retry spooled uploads (admin token)", responses=_ERRORS
)
async def retry_spool(body: Selection, rt: RuntimeDep) -> dict[str, Any]:
    """Clear the failure and the attempts of the selected entries; the uploader tries again."""
    spool = _spool(rt)
    entries, missing = _select(spool, body)
    done = []
    for entry in entries:
        if await asyncio.to_thread(spool.reset_attempts, entry) or entry.failed is None:
            done.append(entry.id)
    _wake(rt)
    logger.warning("spool: %d entries retried by an operator", len(done))
    return {"retried": done, "missing": missing}


@router.post(
    "/discard",
    dependencies=[Admin],
    summary="Discard spooled uploads (admin token)",
    responses=_ERRORS,
)
async def discard_spool(body: Selection, rt: RuntimeDep) -> dict[str, Any]:
    """Delete the selected entries without uploading them: their files are lost."""
    spool = _spool(rt)
    entries, missing = _select(spool, body)
    done = []
    for entry in entries:
        if await asyncio.to_thread(spool.discard, entry, "discarded by an operator (admin API)"):
            done.append(entry.id)
    return {"discarded": done, "missing": missing}


@router.post(
    "/retarget",
    dependencies=[Admin],
    summary="Send spooled uploads elsewhere (admin token)",
    responses={
        **_ERRORS,
        **problem_responses(503, s503="the database is unavailable: nothing was changed"),
    },
)
async def retarget_spool(body: Retarget, rt: RuntimeDep) -> dict[str, Any]:
    """Send the selected entries to ``bucket`` (``null``: the configured one when uploaded).

    The invoices that name those files are updated in the same database
    transaction; when the database is unavailable nothing changes (503).
    """
    spool = _spool(rt)
    entries, missing = _select(spool, body)
    recorded = UNBOUND if body.bucket is None else body.bucket

    async def move(session: AsyncSession) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        moved: list[dict[str, str]] = []
        refused: list[dict[str, str]] = []
        keys = [e.key for e in entries]
        if keys:
            await session.execute(
                update(invoices).where(invoices.c.object_key.in_(keys)).values(bucket=recorded)
            )
        for entry in entries:
            try:
                new = await asyncio.to_thread(spool.retarget, entry, body.bucket)
            except (KeyError, SpoolError) as exc:
                refused.append({"id": entry.id, "detail": str(exc).strip("'\"")})
                await session.execute(  # its invoice keeps naming where the file still is
                    update(invoices)
                    .where(invoices.c.object_key == entry.key)
                    .values(bucket=UNBOUND if entry.bucket is None else entry.bucket)
                )
                continue
            moved.append({"id": new.id, "from": entry.destination, "to": new.destination})
        return moved, refused

    moved, refused = await write_in_database(rt, move)
    _wake(rt)
    return {"retargeted": moved, "refused": refused, "missing": missing}
