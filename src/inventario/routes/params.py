"""Request parameters the resource routers share: a sku in a path, a price filter, the
``Idempotency-Key`` header."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Header, Path, Query

from inventario.schemas import MAX_PRICE, SKU_PATTERN

__all__ = ["IdempotencyKey", "PriceFilter", "Sku"]

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
