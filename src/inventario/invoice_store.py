"""Invoice operations on one database session (one transaction): no HTTP, no files here.

Applying an invoice is a write like a stock movement: :mod:`inventario.writes`
runs :func:`apply_invoice` directly or, while the database is down, from the
outbox, with the same idempotency record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from inventario import store
from inventario.db import invoices, products
from inventario.schemas import InvoiceLine

__all__ = [
    "InvoiceApplied",
    "InvoiceConflict",
    "InvoiceNotReady",
    "LinesMissing",
    "UnknownSku",
    "apply_invoice",
    "apply_invoice_sync",
    "check_skus",
    "get_invoice",
    "line_json",
    "list_invoices",
    "touched_skus",
    "update_invoice",
]


class InvoiceConflict(store.StoreError):
    """The invoice's state does not allow this (409)."""

    status = 409
    code = "invoice_conflict"

    def __init__(self, error: str, detail: str, state: str) -> None:
        super().__init__(detail)
        self.error, self.state = error, state

    @classmethod
    def already_applied(cls, invoice_id: str, state: str = "applied") -> InvoiceConflict:
        return InvoiceApplied("invoice_applied", f"invoice {invoice_id} is already applied", state)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": str(self), "state": self.state}


class InvoiceApplied(InvoiceConflict):
    """The invoice is applied already (409)."""

    code = "invoice_applied"


class InvoiceNotReady(InvoiceConflict):
    """The invoice has no lines to apply yet (409)."""

    code = "invoice_not_ready"


class UnknownSku(store.StoreError):
    """Lines name products that do not exist (422)."""

    status = 422
    code = "unknown_sku"

    def __init__(self, invoice_id: str, skus: Sequence[str], lines: Sequence[int]) -> None:
        super().__init__(
            f"no product with sku {', '.join(repr(s) for s in skus)} "
            f"(line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}): create the "
            f"product or correct the line with PUT /invoices/{invoice_id}/lines"
        )
        self.skus, self.lines = list(skus), list(lines)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": str(self), "skus": self.skus, "lines": self.lines}


class LinesMissing(store.StoreError):
    """Lines without a sku cannot be applied (422)."""

    status = 422
    code = "lines_without_sku"


def get_invoice_sync(conn: Connection, invoice_id: str) -> dict[str, Any]:
    """The invoice's row, or :class:`~inventario.store.NotFound`."""
    row = (conn.execute(select(invoices).where(invoices.c.id == invoice_id))).mappings().first()
    if row is None:
        raise store.NotFound(f"no invoice with id {invoice_id!r}")
    return dict(row)


def check_skus_sync(conn: Connection, invoice_id: str, lines: list[dict[str, Any]]) -> None:
    """Raise :class:`UnknownSku` if a line's sku names no product."""
    skus = {line["sku"] for line in lines}
    if not skus:
        return
    found = conn.execute(select(products.c.sku).where(products.c.sku.in_(sorted(skus))))
    missing = skus - {row[0] for row in found}
    if missing:
        raise UnknownSku(
            invoice_id,
            sorted(missing),
            [n for n, line in enumerate(lines, 1) if line["sku"] in missing],
        )


def apply_invoice_sync(conn: Connection, invoice_id: str) -> dict[str, Any]:
    """Receive the invoice's lines into stock: ``{"invoice": row, "movements": [...]}``.

    One ``in`` movement per line, and the invoice marked applied, in the session's
    transaction: an unknown sku or a line without one applies nothing (422);
    applying again, or before there are lines, is a 409.
    """
    now = time.time()
    # the state change first: it takes the row's write lock, so a concurrent apply
    # waits here and then finds the invoice applied (409) instead of applying twice
    claimed = conn.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.state == "extracted")
        .values(state="applied", applied_at=now, updated_at=now)
        .returning(invoices.c.lines)
    )
    got = claimed.first()
    if got is None:
        row = get_invoice_sync(conn, invoice_id)
        if row["state"] == "applied":
            raise InvoiceConflict.already_applied(invoice_id)
        raise InvoiceNotReady(
            "invoice_not_ready",
            f"invoice {invoice_id} is {row['state']}: it needs extracted lines first "
            f"(PUT /invoices/{invoice_id}/lines or POST /invoices/{invoice_id}/extract)",
            row["state"],
        )
    lines: list[dict[str, Any]] = json.loads(got[0] or "[]")
    if not lines:
        raise InvoiceNotReady(
            "invoice_not_ready",
            f"invoice {invoice_id} has no lines: enter them with PUT /invoices/{invoice_id}/lines",
            "extracted",
        )
    no_sku = [n for n, line in enumerate(lines, 1) if not line.get("sku")]
    if no_sku:
        raise LinesMissing(
            f"line{'s' if len(no_sku) > 1 else ''} {', '.join(map(str, no_sku))} "
            f"name no product (no sku): set them with PUT /invoices/{invoice_id}/lines"
        )
    check_skus_sync(conn, invoice_id, lines)
    moved = []
    for n, line in enumerate(lines, 1):
        moved.append(
            store.move_stock_sync(
                conn,
                sku=line["sku"],
                kind="in",
                quantity=int(line["quantity"]),
                reason=f"invoice {invoice_id}",
                idempotency_key=f"invoice:{invoice_id}:{n}",
                source="invoice",
                invoice_id=invoice_id,
            )
        )
    return {"invoice": get_invoice_sync(conn, invoice_id), "movements": moved}


async def get_invoice(s: AsyncSession, invoice_id: str) -> dict[str, Any]:
    """The invoice's row, or :class:`~inventario.store.NotFound`."""
    return await store.on_session(s, get_invoice_sync, invoice_id)


async def check_skus(s: AsyncSession, invoice_id: str, lines: list[dict[str, Any]]) -> None:
    """Raise :class:`UnknownSku` if a line's sku names no product."""
    await store.on_session(s, check_skus_sync, invoice_id, lines)


async def apply_invoice(s: AsyncSession, invoice_id: str) -> dict[str, Any]:
    """:func:`apply_invoice_sync` in the session's transaction."""
    return await store.on_session(s, apply_invoice_sync, invoice_id)


def touched_skus(result: Mapping[str, Any]) -> list[str]:
    """The products an applied invoice changed (their cache entries are stale)."""
    return sorted({m["sku"] for m in result.get("movements", [])})


async def update_invoice(
    s: AsyncSession, invoice_id: str, values: dict[str, Any]
) -> dict[str, Any]:
    """Update an invoice that is not applied; the row as it is afterwards."""
    values = {**values, "updated_at": time.time()}
    result = await s.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id, invoices.c.state != "applied")
        .values(**values)
        .returning(invoices.c.id)
    )
    if result.first() is None:
        row = await get_invoice(s, invoice_id)
        raise InvoiceConflict.already_applied(invoice_id, row["state"])
    return await get_invoice(s, invoice_id)


async def list_invoices(
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


def line_json(line: InvoiceLine) -> dict[str, Any]:
    """An invoice line as the row's ``lines`` JSON holds it (the cost as a string)."""
    return {
        "sku": line.sku,
        "description": line.description,
        "quantity": line.quantity,
        "unit_cost": str(line.unit_cost),
    }
