"""Supplier invoices: upload, line extraction by the OpenAI API, review, and applying to stock.

States (one column, these transitions only)::

    stored --> extracting --> extracted --> applied
       |            |             ^
       +------------+--> needs_review (lines entered by hand: PUT .../lines)

* ``POST /invoices`` (feature ``file_upload``) reads the multipart upload with
  the checks of :mod:`inventario.invoice_upload` (413 / 415 / 422), stores the
  file in S3, or in the local spool when S3 is not configured, rejecting
  (breaker open) or failing (``"storage": "spool"``; the spool uploader moves
  it to S3 later), records the invoice, then extracts its lines.
* Extraction runs **inside the upload request** (and ``POST
  /invoices/{id}/extract``): the answer says at once whether the lines were
  read, tests are deterministic, and there is no background queue to lose
  work in. It is bounded by the OpenAI adapter's timeout and breaker: while
  the API is failing the breaker rejects at once and the invoice goes to
  ``needs_review`` with the reason. Text files are sent as text, images as a
  data URL, PDFs as their text when it can be read simply (uncompressed or
  Flate content streams with plain string operators), else ``needs_review``.
* ``POST /invoices/{id}/apply`` (feature ``batch_processing``) creates one
  ``in`` movement per line, reason ``invoice <id>``, and marks the invoice
  applied, all in one database transaction (:func:`inventario.invoice_store.apply_invoice`):
  an unknown sku is a 422 and nothing is applied; applying again is a 409. It is
  a write like the others (:func:`inventario.services.writes.write`): while the database is
  down it is queued in the outbox (202) and applied once when it is back.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from brownout import BreakerOpen, State
from brownout.web import problem_responses, requires_feature
from inventario.db import invoices
from inventario.deps import (
    CacheDep,
    DependencyUnavailable,
    Offset,
    RuntimeDep,
    run_in_database,
    try_again,
    unavailable,
    write_in_database,
)
from inventario.invoice_extraction import extract
from inventario.invoice_storage import InvoiceFiles, object_key
from inventario.invoice_store import InvoiceConflict, check_skus, line_json, touched_skus
from inventario.invoice_store import get_invoice as _get
from inventario.invoice_store import list_invoices as _list
from inventario.invoice_store import update_invoice as _update
from inventario.invoice_upload import read_upload
from inventario.routes.params import IdempotencyKey, queued
from inventario.runtime import Runtime
from inventario.schemas import (
    AppliedInvoice,
    Invoice,
    InvoiceLines,
    InvoicePage,
    InvoiceState,
)
from inventario.services.writes import accepts_writes, write

__all__ = ["content_disposition", "router"]

logger = logging.getLogger("inventario")
router = APIRouter(prefix="/invoices", tags=["invoices"])

InvoiceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an invoice id")]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "PDF, PNG, JPEG, WEBP or plain text",
                        },
                        "supplier": {"type": "string", "maxLength": 200},
                    },
                }
            }
        },
    }
}


def content_disposition(name: str) -> str:
    """``attachment`` with the file's exact name per RFC 6266.

    ``filename*=UTF-8''<percent-encoded>`` carries the exact name (every client of the
    last decade reads it); ``filename="..."`` is the ASCII fallback for the others:
    accents dropped (``Müller`` -> ``Muller``), any other character outside a safe set
    (quotes, backslashes, ``;``, non-Latin letters) replaced by ``_``.

    >>> print(content_disposition("Müller 3€.pdf"))
    attachment; filename="Muller 3_.pdf"; filename*=UTF-8''M%C3%BCller%203%E2%82%AC.pdf
    """
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    fallback = re.sub(r"[^A-Za-z0-9._ ()+,=@-]", "_", plain)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _files(rt: Runtime) -> InvoiceFiles:
    return InvoiceFiles(rt.spool, rt.s3, rt.spool_uploader)


def _view(row: Mapping[str, Any], files: InvoiceFiles) -> dict[str, Any]:
    lines = json.loads(row["lines"]) if row["lines"] else None
    return {
        "id": row["id"],
        "supplier": row["supplier"],
        "filename": row["filename"],
        "content_type": row["content_type"],
        "size": row["size"],
        "sha256": row["sha256"],
        "storage": files.where(row["bucket"], row["object_key"], row["storage"]),
        "state": row["state"],
        "lines": lines,
        "extracted_by": row["extracted_by"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "applied_at": row["applied_at"],
        "file_url": f"/invoices/{row['id']}/file",
    }


def _database_rejecting(rt: Runtime) -> bool:
    snap = rt.db.breaker.snapshot()
    return snap.state is State.FORCED_OPEN or (
        snap.state is State.OPEN and (snap.retry_after or 0) > 0
    )


@router.post(
    "",
    status_code=201,
    response_model=Invoice,
    dependencies=[Depends(requires_feature("file_upload"))],
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"description": "the file is larger than INVOICE_MAX_BYTES"},
        415: {"description": "not a PDF, PNG, JPEG, WEBP or text file"},
        422: {"description": "bad file name or form"},
        502: {"description": "S3 refused the file (no such bucket, access denied)"},
        503: {"description": "the database is unavailable: nothing was stored"},
        507: {"description": "S3 is down and the spool is full"},
    },
)
async def upload_invoice(request: Request, rt: RuntimeDep) -> JSONResponse:
    """Upload an invoice file (multipart field ``file``, optional ``supplier``)."""
    upload = await read_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        max_bytes=rt.settings.invoice_max_bytes,
    )
    if _database_rejecting(rt):  # check before storing anything we could not record
        wait = rt.manager.retry_after()
        raise DependencyUnavailable(
            "database",
            "the database is unavailable: invoices cannot be recorded now and nothing was "
            f"stored; {try_again(wait)}",
            wait,
        )
    invoice_id = uuid.uuid4().hex
    key = object_key(invoice_id, upload.content_type)
    files = _files(rt)
    storage = await files.store(key, upload, invoice_id)
    now = time.time()
    row = {
        "id": invoice_id,
        "supplier": upload.supplier,
        "filename": upload.filename,
        "content_type": upload.content_type,
        "size": len(upload.data),
        "sha256": upload.sha256,
        "storage": storage,
        "bucket": files.bucket,
        "object_key": key,
        "state": "stored",
        "lines": None,
        "extracted_by": None,
        "reason": None,
        "created_at": now,
        "updated_at": now,
        "applied_at": None,
    }
    try:
        async with rt.db.write_session() as s:
            await s.execute(insert(invoices).values(**row))
    except BaseException as exc:
        await files.discard(files.bucket, key, storage)  # nothing half written
        if isinstance(exc, BreakerOpen) or (
            isinstance(exc, Exception) and rt.db.errors.counts(exc)
        ):
            raise unavailable(rt, exc) from None
        raise
    try:
        row = await extract(rt, row, upload.data)
    except DependencyUnavailable as exc:
        row["reason"] = f"stored; extraction deferred ({exc}): POST /invoices/{invoice_id}/extract"
    logger.info("invoice %s stored in %s (%d bytes)", invoice_id, storage, len(upload.data))
    return JSONResponse(
        _view(row, files), status_code=201, headers={"Location": f"/invoices/{invoice_id}"}
    )


@router.get("", response_model=InvoicePage)
async def list_invoices(
    rt: RuntimeDep,
    state: InvoiceState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Invoices, newest first, optionally in one state."""
    rows, total = await run_in_database(rt, _list, state, limit, offset)
    files = _files(rt)
    return {
        "items": [_view(r, files) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{invoice_id}", response_model=Invoice)
async def get_invoice(invoice_id: InvoiceId, rt: RuntimeDep) -> dict[str, Any]:
    return _view(await run_in_database(rt, _get, invoice_id), _files(rt))


@router.get(
    "/{invoice_id}/file",
    response_class=Response,
    responses={200: {"content": {t: {} for t in ("application/pdf", "image/png", "text/plain")}}},
)
async def invoice_file(invoice_id: InvoiceId, rt: RuntimeDep) -> Response:
    """The uploaded file: from the spool while it waits for S3, else from S3."""
    row = await run_in_database(rt, _get, invoice_id)
    data, where = await _files(rt).fetch(row["bucket"], row["object_key"], row["storage"])
    return Response(
        data,
        media_type=row["content_type"],
        headers={
            "Content-Disposition": content_disposition(row["filename"]),
            "X-Invoice-Storage": where,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.put(
    "/{invoice_id}/lines",
    response_model=Invoice,
    responses=problem_responses(409, s409="invoice_applied: the invoice is already applied"),
)
async def set_lines(invoice_id: InvoiceId, body: InvoiceLines, rt: RuntimeDep) -> dict[str, Any]:
    """Enter the lines by hand (every sku must exist); the invoice is then ready to apply."""
    lines = [line_json(line) for line in body.lines]

    async def run(s: AsyncSession) -> dict[str, Any]:
        row = await _get(s, invoice_id)
        if row["state"] == "applied":
            raise InvoiceConflict.already_applied(invoice_id)
        await check_skus(s, invoice_id, lines)
        values = {
            "state": "extracted",
            "lines": json.dumps(lines),
            "extracted_by": "manual",
            "reason": None,
        }
        return await _update(s, invoice_id, values)

    return _view(await write_in_database(rt, run), _files(rt))


@router.post(
    "/{invoice_id}/extract",
    response_model=Invoice,
    dependencies=[Depends(requires_feature("ai_invoice_extraction"))],
    responses=problem_responses(409, s409="invoice_applied: the invoice is already applied"),
)
async def extract_again(invoice_id: InvoiceId, rt: RuntimeDep) -> dict[str, Any]:
    """Run the AI extraction again (after ``needs_review``, or to replace the lines)."""
    files = _files(rt)
    row = await run_in_database(rt, _get, invoice_id)
    if row["state"] == "applied":
        raise InvoiceConflict.already_applied(invoice_id)
    data, _ = await files.fetch(row["bucket"], row["object_key"], row["storage"])
    return _view(await extract(rt, row, data), files)


@router.post(
    "/{invoice_id}/apply",
    response_model=AppliedInvoice,
    dependencies=[Depends(accepts_writes("batch_processing"))],
    responses={
        **queued(),
        **problem_responses(
            409,
            422,
            s409="invoice_applied, or invoice_not_ready (no lines yet)",
            s422="unknown_sku or lines_without_sku: nothing applied; or idempotency_key_reused",
        ),
    },
)
async def apply_invoice(
    invoice_id: InvoiceId, rt: RuntimeDep, cache: CacheDep, key: IdempotencyKey = None
) -> Any:
    """Receive the invoice's lines into stock: one ``in`` movement per line, one transaction.

    While the database is down it is queued in the outbox (202, with the
    ``/writes/{key}`` to follow) and applied exactly once when it returns; the
    invoice is checked then (applied already, no lines, an unknown sku: the write
    is refused, with the reason, on ``/writes/{key}``).
    """
    files = _files(rt)

    def render(result: dict[str, Any]) -> dict[str, Any]:
        return {"invoice": _view(result["invoice"], files), "movements": result["movements"]}

    return await write(
        rt,
        cache,
        operation="invoice.apply",
        data={"invoice_id": invoice_id},
        sku=f"invoice:{invoice_id}",
        key=key,
        created=False,
        render=render,
        touched=touched_skus,
    )
