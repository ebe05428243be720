"""Supplier invoices: upload, line extraction by the OpenAI API, review, and applying to stock.

States (one column, these transitions only)::

    stored --> extracting --> extracted --> applied
       |            |             ^
       +------------+--> needs_review (lines entered by hand: PUT .../lines)

* ``POST /invoices`` (feature ``file_upload``) reads the multipart upload with
  the checks of :mod:`inventario.invoice_storage` (413 / 415 / 422), stores the
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

import base64
import json
import logging
import re
import time
import unicodedata
import uuid
import zlib
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brownout import BreakerOpen, State
from brownout.web import problem_responses, requires_feature
from inventario import store
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
from inventario.invoice_storage import InvoiceFiles, object_key, read_upload
from inventario.invoice_store import InvoiceConflict, check_skus, touched_skus
from inventario.invoice_store import get_invoice as _get
from inventario.routes.params import IdempotencyKey
from inventario.runtime import Runtime
from inventario.schemas import (
    SKU_PATTERN,
    AppliedInvoice,
    Invoice,
    InvoiceLine,
    InvoiceLines,
    InvoicePage,
    InvoiceState,
    Queued,
)
from inventario.services.writes import accepts_writes, write

__all__ = ["content_disposition", "pdf_text", "router"]

logger = logging.getLogger("inventario")
router = APIRouter(prefix="/invoices", tags=["invoices"])

InvoiceId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an invoice id")]

#: Characters of invoice text sent to the model at most.
MAX_TEXT_CHARS = 50_000
#: Products listed in the prompt so the model can map descriptions to skus.
CATALOGUE_SIZE = 200

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

#: Structured output asked from the model (strict mode: every property required).
LINES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "supplier": {"type": "string", "description": "the supplier's name, or empty"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {
                        "type": ["string", "null"],
                        "description": "the product's sku from the catalogue, null if unsure",
                    },
                    "description": {"type": "string"},
                    "quantity": {"type": "integer", "description": "units received, >= 1"},
                    "unit_cost": {"type": "number", "description": "cost per unit, >= 0"},
                },
                "required": ["sku", "description", "quantity", "unit_cost"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["supplier", "lines"],
    "additionalProperties": False,
}

_PROMPT = (
    "You read supplier invoices for a retail shop. Return every product line of the "
    "invoice: the product's sku when the invoice names a product of the catalogue below "
    "(else null), a short description, the quantity received (an integer) and the cost of "
    "one unit (a number, without currency). Leave out totals, taxes, discounts and "
    "shipping. If the document is not an invoice, return no lines."
)


# ------------------------------------------------------------------ rows


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


def _line_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "sku": line.sku,
        "description": line.description,
        "quantity": line.quantity,
        "unit_cost": str(line.unit_cost),
    }


async def _update(s: AsyncSession, invoice_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Update an invoice that is not applied; the row as it is afterwards."""
    values = {**values, "updated_at": time.time()}
    result = await s.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.state != "applied")
        .values(**values)
        .returning(invoices.c.id)
    )
    if result.first() is None:
        row = await _get(s, invoice_id)
        raise InvoiceConflict.already_applied(invoice_id, row["state"])
    return await _get(s, invoice_id)


async def _list(
    s: AsyncSession, state: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    count = select(func.count()).select_from(invoices)
    query = (
        select(invoices)
        .order_by(invoices.c.created_at.desc(), invoices.c.id)
        .limit(limit)
        .offset(offset)
    )
    if state is not None:
        count = count.where(invoices.c.state == state)
        query = query.where(invoices.c.state == state)
    total = int((await s.execute(count)).scalar() or 0)
    rows = (await s.execute(query)).mappings().all()
    return [dict(r) for r in rows], total


class _Unreadable(Exception):
    """The file cannot be turned into model input; the message says why."""


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """A PDF literal string starting at ``data[i] == '('``; (bytes, index after it)."""
    out = bytearray()
    depth, i, n = 1, i + 1, len(data)
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
    while i < n:
        c = data[i]
        if c == 0x5C and i + 1 < n:  # backslash
            nxt = data[i + 1]
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
            elif 0x30 <= nxt <= 0x37:
                j = i + 1
                while j < n and j < i + 4 and 0x30 <= data[j] <= 0x37:
                    j += 1
                out.append(int(data[i + 1 : j], 8) & 0xFF)
                i = j
            elif nxt in (0x0A, 0x0D):  # line continuation
                i += 3 if data[i + 1 : i + 3] == b"\r\n" else 2
            else:
                out.append(nxt)
                i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), n


def _decode_pdf_string(raw: bytes) -> str:
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


_DELIMS = b"()<>[]{}/% \t\r\n\f\x00"


def _content_text(content: bytes) -> str:
    """The text shown by one content stream's string operators (Tj, TJ, ', ")."""
    out: list[str] = []
    operands: list[Any] = []
    last_y: float | None = None
    i, n = 0, len(content)
    while i < n:
        c = content[i]
        if c in b" \t\r\n\f\x00":
            i += 1
        elif c == 0x25:  # comment
            while i < n and content[i] not in b"\r\n":
                i += 1
        elif c == 0x28:
            raw, i = _literal(content, i)
            operands.append(_decode_pdf_string(raw))
        elif c == 0x3C and content[i + 1 : i + 2] != b"<":  # hex string
            end = content.find(b">", i)
            end = n if end < 0 else end
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", content[i + 1 : end])
            if len(digits) % 2:
                digits += b"0"
            operands.append(_decode_pdf_string(bytes.fromhex(digits.decode())))
            i = end + 1
        elif c in b"<>":
            i += 2 if content[i + 1 : i + 2] == bytes([c]) else 1
        elif c == 0x5B:
            operands.append("[")
            i += 1
        elif c == 0x5D:
            start = len(operands) - 1
            while start >= 0 and operands[start] != "[":
                start -= 1
            items = operands[start + 1 :]
            del operands[max(start, 0) :]
            operands.append(items)
            i += 1
        elif c == 0x2F:  # a name
            j = i + 1
            while j < n and content[j] not in _DELIMS:
                j += 1
            operands.append(None)
            i = j
        else:
            j = i
            while j < n and content[j] not in _DELIMS:
                j += 1
            token = content[i:j].decode("latin-1")
            i = max(j, i + 1)
            try:
                operands.append(float(token))
                continue
            except ValueError:
                pass
            if token in ("Tj", "'", '"'):
                if token != "Tj":
                    out.append("\n")
                if operands and isinstance(operands[-1], str) and operands[-1] != "[":
                    out.append(operands[-1])
            elif token == "TJ" and operands and isinstance(operands[-1], list):
                for item in operands[-1]:
                    if isinstance(item, str):
                        out.append(item)
                    elif isinstance(item, float) and item < -200:
                        out.append(" ")
            elif token in ("Td", "TD") and len(operands) >= 2:
                out.append("\n" if operands[-1] != 0 else " ")
            elif token == "Tm" and len(operands) >= 6 and isinstance(operands[-1], float):
                out.append("\n" if last_y is not None and operands[-1] != last_y else " ")
                last_y = operands[-1]
            elif token in ("T*", "ET"):
                out.append("\n")
            operands.clear()
    return "".join(out)


_STREAM = re.compile(rb"stream\r?\n")
_MAX_INFLATED = 8 * 1024 * 1024


def pdf_text(data: bytes) -> str | None:
    """The text of a simple PDF, or ``None`` when it cannot be read simply.

    Simple: not encrypted, text in content streams that are uncompressed or
    Flate-compressed, shown with literal or hex strings in a single-byte
    encoding. Scanned pages, CID fonts and other filters give ``None`` (or
    text that fails the printable check), and the invoice goes to review.

    >>> page = b"%PDF-1.4\\n1 0 obj <<>> stream\\nBT (W-1  5 x 2.50) Tj ET\\nendstream endobj"
    >>> pdf_text(page)
    'W-1 5 x 2.50'
    """
    if b"/Encrypt" in data:
        return None
    chunks: list[str] = []
    budget = _MAX_INFLATED
    for match in _STREAM.finditer(data):
        if data[match.start() - 3 : match.start()] == b"end":
            continue
        header = data[max(0, match.start() - 1024) : match.start()]
        header = header[header.rfind(b"obj") + 3 :] if b"obj" in header else header
        end = data.find(b"endstream", match.end())
        if end < 0:
            break
        raw = data[match.end() : end]
        filters = re.findall(rb"/(\w+Decode)\b", header)
        if filters == [b"FlateDecode"]:
            try:
                inflater = zlib.decompressobj()
                raw = inflater.decompress(raw, budget)
            except zlib.error:
                continue
        elif filters:
            continue  # images (DCT, CCITT...) or filters we do not read
        budget -= len(raw)
        if budget <= 0:
            return None
        if b"BT" in raw:
            chunks.append(_content_text(raw))
    text = "\n".join(chunks)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line)
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalnum() for ch in visible) < 4:
        return None
    printable = sum(ch.isprintable() for ch in visible)
    if printable < 0.95 * len(visible):
        return None
    return text


def _model_input(content_type: str, data: bytes, filename: str) -> list[dict[str, Any]]:
    """The user message content for the model; :class:`_Unreadable` says why there is none."""
    if content_type == "text/plain":
        text = decode_text(data)
    elif content_type == "application/pdf":
        found = pdf_text(data)
        if found is None:
            raise _Unreadable(
                "the PDF's text cannot be read simply (scanned, encrypted or complex): "
                "enter the lines by hand"
            )
        text = found
    else:
        url = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return [
            {"type": "text", "text": f"The invoice {filename!r} is this image:"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    if len(text) > MAX_TEXT_CHARS:
        raise _Unreadable(
            f"the invoice text has {len(text)} characters, more than the {MAX_TEXT_CHARS} "
            "sent for extraction: enter the lines by hand"
        )
    return [{"type": "text", "text": f"The invoice {filename!r}:\n\n{text}"}]


def decode_text(data: bytes) -> str:
    """A text invoice's characters: UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def lines_from_answer(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Checked invoice lines from the model's JSON; ``ValueError`` naming the bad part."""
    raw = answer.get("lines")
    if not isinstance(raw, list):
        raise ValueError("the answer has no 'lines' list")
    if not raw:
        raise ValueError("the model found no invoice lines")
    out = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise ValueError(f"line {n} is not an object")
        sku = item.get("sku")
        sku = sku.strip() if isinstance(sku, str) and sku.strip() else None
        description = str(item.get("description") or "").strip()
        if sku is not None and not re.fullmatch(SKU_PATTERN, sku):
            description, sku = f"{sku} {description}".strip(), None
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float):
            raise ValueError(f"line {n}: quantity {quantity!r} is not a number")
        if isinstance(quantity, float):
            if not quantity.is_integer():
                raise ValueError(f"line {n}: quantity {quantity} is not a whole number")
            quantity = int(quantity)
        cost = item.get("unit_cost")
        if isinstance(cost, bool) or not isinstance(cost, int | float | str):
            raise ValueError(f"line {n}: unit_cost {cost!r} is not a number")
        try:
            unit_cost = Decimal(str(cost)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise ValueError(f"line {n}: unit_cost {cost!r} is not a number") from None
        try:
            line = InvoiceLine(
                sku=sku, description=description[:500], quantity=quantity, unit_cost=unit_cost
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"line {n}: {field}: {first['msg']}") from None
        out.append(_line_json(line))
    return out


def _ai_unavailable(rt: Runtime, invoice_id: str) -> str | None:
    """Why AI extraction cannot run now, or ``None`` if it can."""
    if rt.ai is None:
        return "AI extraction is not configured (OPENAI_API_KEY is unset): enter the lines by hand"
    if not rt.manager.enabled("ai_invoice_extraction"):
        return (
            f"AI extraction is off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('ai_invoice_extraction')}): enter the lines by hand "
            f"or retry with POST /invoices/{invoice_id}/extract"
        )
    return None


async def _catalogue(rt: Runtime) -> str:
    """Known products for the prompt (best effort: none if the database cannot say)."""
    try:
        items, _ = await run_in_database(rt, store.list_products, limit=CATALOGUE_SIZE)
    except Exception as exc:
        logger.info("invoice extraction without the catalogue: %r", exc)
        return "(catalogue unavailable)"
    return "\n".join(f"{p['sku']}: {p['name']}" for p in items) or "(empty)"


async def _extract(rt: Runtime, row: Mapping[str, Any], data: bytes) -> dict[str, Any]:
    """Read the lines of ``row``'s file ``data`` with the model; the row afterwards.

    Never raises for the model's failures (they become ``needs_review`` with
    the reason); database failures propagate as 503.
    """
    invoice_id = row["id"]
    ai = rt.ai
    why_not = _ai_unavailable(rt, invoice_id)
    content: list[dict[str, Any]] = []
    if why_not is None:
        try:
            content = _model_input(row["content_type"], data, row["filename"])
        except _Unreadable as exc:
            why_not = str(exc)
    if why_not is not None or ai is None:  # (ai is not None when why_not is None)
        values = {"state": "needs_review", "reason": why_not}
        return await write_in_database(rt, _update, invoice_id, values)
    await write_in_database(rt, _update, invoice_id, {"state": "extracting", "reason": None})
    catalogue = await _catalogue(rt)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"{_PROMPT}\n\nCatalogue (sku: name):\n{catalogue}"},
        {"role": "user", "content": content},
    ]
    started = time.perf_counter()
    try:
        answer = await ai.chat_json(messages, LINES_SCHEMA, name="invoice_lines")
        lines = lines_from_answer(answer)
    except Exception as exc:
        why = ai.describe(exc)
        logger.info("invoice %s needs review: AI extraction failed: %s", invoice_id, why)
        values = {"state": "needs_review", "reason": f"AI extraction failed: {why}"}
        return await write_in_database(rt, _update, invoice_id, values)
    done: dict[str, Any] = {
        "state": "extracted",
        "lines": json.dumps(lines),
        "extracted_by": "ai",
        "reason": None,
    }
    supplier = answer.get("supplier")
    if not row["supplier"] and isinstance(supplier, str) and supplier.strip():
        done["supplier"] = supplier.strip()[:200]
    extracted = await write_in_database(rt, _update, invoice_id, done)
    logger.info(
        "invoice %s: %d lines extracted in %.2f s",
        invoice_id,
        len(lines),
        time.perf_counter() - started,
    )
    return extracted


# ------------------------------------------------------------------ routes


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
        row = await _extract(rt, row, upload.data)
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
    lines = [_line_json(line) for line in body.lines]

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
    return _view(await _extract(rt, row, data), files)


@router.post(
    "/{invoice_id}/apply",
    response_model=AppliedInvoice,
    dependencies=[Depends(accepts_writes("batch_processing"))],
    responses={
        202: {"model": Queued, "description": "queued in the outbox: the database is down"},
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
