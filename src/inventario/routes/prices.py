"""``GET /products/{sku}/price-suggestion``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from inventario.deps import RuntimeDep
from inventario.routes.params import Sku
from inventario.schemas import PriceSuggestion
from inventario.services.pricing import suggest_price

__all__ = ["router"]

router = APIRouter()


@router.get("/products/{sku}/price-suggestion", response_model=PriceSuggestion, tags=["pricing"])
async def price_suggestion(sku: Sku, rt: RuntimeDep) -> dict[str, Any]:
    return await suggest_price(rt, sku)
