"""Price suggestions: the model's when it can answer, else a rule (cost, markup, inflation)."""

from __future__ import annotations

import logging
import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from inventario import store
from inventario.deps import run_in_database
from inventario.runtime import Runtime

__all__ = ["rule_price", "suggest_price"]

logger = logging.getLogger("inventario")

_PRICE_SCHEMA = {
    "type": "object",
    "properties": {
        "price": {"type": "number", "minimum": 0},
        "rationale": {"type": "string"},
    },
    "required": ["price", "rationale"],
    "additionalProperties": False,
}


def rule_price(cost: Decimal, markup: float, monthly_inflation: float, age_s: float) -> Decimal:
    """cost x (1 + markup), grown by the monthly inflation since the price last changed."""
    months = age_s / (30 * 86400)
    value = cost * Decimal(str(1 + markup)) * Decimal(str(math.pow(1 + monthly_inflation, months)))
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def suggest_price(rt: Runtime, sku: str) -> dict[str, Any]:
    """A price for ``sku``: the model's when it is configured, on and answers, else the
    rule's (:func:`rule_price`), with the reason the model was not used."""
    product = await run_in_database(rt, store.get_product, sku)
    age = await run_in_database(rt, store.product_age, sku)
    settings = rt.settings
    rule = rule_price(
        product["cost"], settings.pricing_markup, settings.pricing_monthly_inflation, age
    )
    rule_text = (
        f"cost {product['cost']} x (1 + {settings.pricing_markup:g} markup) with "
        f"{settings.pricing_monthly_inflation:.1%} monthly inflation over {age / 86400:.0f} days"
    )
    if rt.ai is not None and rt.manager.enabled("ai_pricing"):
        try:
            answer = await rt.ai.chat_json(
                [
                    {
                        "role": "system",
                        "content": "You price retail products. Answer with JSON: "
                        '{"price": number, "rationale": string}.',
                    },
                    {
                        "role": "user",
                        "content": (
                            f"Product {product['name']} (sku {sku}, category "
                            f"{product['category'] or 'none'}): cost {product['cost']}, current "
                            f"price {product['price']}, stock {product['stock']}. A rule-based "
                            f"price would be {rule}. Suggest a price."
                        ),
                    },
                ],
                _PRICE_SCHEMA,
                name="price_suggestion",
            )
            price = Decimal(str(answer["price"])).quantize(Decimal("0.01"))
            if price > 0:
                return {
                    "sku": sku,
                    "current_price": product["price"],
                    "suggested_price": price,
                    "source": "ai",
                    "rationale": str(answer.get("rationale", ""))[:500],
                }
        except Exception as exc:
            logger.info("AI pricing unavailable, using the rule: %s", rt.ai.describe(exc))
            rule_text += f" (AI unavailable: {type(exc).__name__})"
    elif rt.ai is not None:
        rule_text += f" (AI pricing off: {rt.manager.feature_reason('ai_pricing')})"
    return {
        "sku": sku,
        "current_price": product["price"],
        "suggested_price": rule,
        "source": "rule",
        "rationale": rule_text,
    }
