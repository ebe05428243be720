"""What the resource routers share: request parameters (a sku in a path, a price filter,
the ``Idempotency-Key`` header) and the documented answers of a write (a replay, queued)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import Header, Path, Query
from pydantic import BaseModel

from inventario.schemas import MAX_PRICE, SKU_PATTERN, Queued

__all__ = ["IdempotencyKey", "PriceFilter", "Sku", "queued", "replayed"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="retrying with the same key never applies a write twice",
    ),
]
#: A product's sku in a path: what ``ProductIn.sku`` accepts (anything else is a 422).
Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="letters, digits, . _ - (max 64)")]
PriceFilter = Annotated[Decimal | None, Query(ge=0, le=MAX_PRICE, description=f"0 to {MAX_PRICE}")]


def replayed(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The 200 of a write sent again with its ``Idempotency-Key``: the first answer."""
    return {200: {"model": model, "description": "a replay: the answer to this Idempotency-Key"}}


def queued() -> dict[int | str, dict[str, Any]]:
    """The 202 of a write the outbox took because the database is down."""
    return {202: {"model": Queued, "description": "queued in the outbox: the database is down"}}
