"""Invoice lines read by the model: the prompt (with the catalogue), the structured
answer checked line by line, and the invoice's state afterwards (``extracted``, or
``needs_review`` with the reason whenever the model cannot or did not answer)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from inventario import store
from inventario.deps import run_in_database, write_in_database
from inventario.invoice_parsing import Unreadable, model_input
from inventario.invoice_store import line_json, update_invoice
from inventario.runtime import Runtime
from inventario.schemas import SKU_PATTERN, InvoiceLine

__all__ = ["CATALOGUE_SIZE", "LINES_SCHEMA", "extract", "lines_from_answer"]

logger = logging.getLogger("inventario")

#: Products listed in the prompt so the model can map descriptions to skus.
CATALOGUE_SIZE = 200

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
        out.append(line_json(line))
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


async def extract(rt: Runtime, row: Mapping[str, Any], data: bytes) -> dict[str, Any]:
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
            content = model_input(row["content_type"], data, row["filename"])
        except Unreadable as exc:
            why_not = str(exc)
    if why_not is not None or ai is None:  # (ai is not None when why_not is None)
        values = {"state": "needs_review", "reason": why_not}
        return await write_in_database(rt, update_invoice, invoice_id, values)
    await write_in_database(rt, update_invoice, invoice_id, {"state": "extracting", "reason": None})
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
        return await write_in_database(rt, update_invoice, invoice_id, values)
    done: dict[str, Any] = {
        "state": "extracted",
        "lines": json.dumps(lines),
        "extracted_by": "ai",
        "reason": None,
    }
    supplier = answer.get("supplier")
    if not row["supplier"] and isinstance(supplier, str) and supplier.strip():
        done["supplier"] = supplier.strip()[:200]
    extracted = await write_in_database(rt, update_invoice, invoice_id, done)
    logger.info(
        "invoice %s: %d lines extracted in %.2f s",
        invoice_id,
        len(lines),
        time.perf_counter() - started,
    )
    return extracted
