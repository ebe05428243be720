"""Products, stock movements, queued writes, reports and price suggestions."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from brownout.outbox import IdempotencyConflict, OutboxFull
from brownout.web import authorize, problem_response, problem_responses, requires_feature
from inventario import store
from inventario.cache import ProductCache
from inventario.deps import (
    CacheDep,
    DependencyUnavailable,
    Offset,
    RuntimeDep,
    jsonable,
    run_in_database,
)
from inventario.runtime import Runtime
from inventario.schemas import (
    MAX_PRICE,
    SKU_PATTERN,
    Movement,
    MovementIn,
    PriceSuggestion,
    Product,
    ProductIn,
    ProductPage,
    ProductPatch,
    Queued,
    Text,
    WriteStatus,
)
from inventario.writes import IdempotencyMismatch, apply_write, public_reason

__all__ = ["DependencyUnavailable", "IdempotencyKey", "accepts_writes", "router", "write"]

logger = logging.getLogger("inventario")
router = APIRouter()

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


async def write(
    rt: Runtime,
    cache: ProductCache,
    *,
    operation: str,
    data: dict[str, Any],
    sku: str,
    key: str | None,
    created: bool,
    render: Callable[[dict[str, Any]], Any] | None = None,
    touched: Callable[[dict[str, Any]], list[str]] | None = None,
) -> JSONResponse:
    """Apply a write now, or accept it into the outbox when the database cannot take it.

    Queued (202) whenever the database cannot take it, whatever the level: it is
    down, its breaker is open, its schema is not created yet, or the direct
    attempt failed with an outage; or direct writes are off at this level
    (``database_write``). The 202 says which, truthfully.

    ``sku`` is the write's outbox stream (writes of one stream apply in order) and,
    unless ``touched(result)`` names the products the write changed, the one
    product whose cache entry it makes stale. ``render(result)`` is the answer's
    body (default: the result as it is).
    """
    key = key or uuid.uuid4().hex
    why = rt.database_unavailable()
    if why is None and not rt.manager.enabled("database_write"):
        why = (
            f"direct writes are off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('database_write')})"
        )
    if why is None:
        try:
            result, repeated = await _apply_now(rt, operation, data, key)
        except store.StoreError:
            raise
        except Exception as exc:
            why = rt.database_failure(exc)
            if why is None:
                raise
            logger.info("write %s queued: %s", key, rt.db.describe(exc).splitlines()[0])
        else:
            for stale in touched(result) if touched is not None else [sku]:
                await cache.invalidate(stale)
            status = 201 if created and not repeated else 200
            body = render(result) if render is not None else result
            return JSONResponse(
                jsonable(body), status_code=status, headers={"Idempotency-Key": key}
            )
    try:
        # durable once this returns; the fsync waits in a thread (never on the event
        # loop) and shares its commit with the other writes queued at the same time
        await rt.outbox.asubmit(
            operation, {"data": data, "key": key}, stream=sku, idempotency_key=key
        )
    except IdempotencyConflict as exc:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was already used for a different request ({exc})"
        ) from None
    except OutboxFull as exc:
        raise DependencyUnavailable("outbox", f"{why}, and {exc}", exc.retry_after) from None
    if touched is None:  # else not known before it applies: invalidated after the replay
        await cache.invalidate(sku)
    queued = Queued(
        idempotency_key=key,
        operation=operation,
        status_url=f"/writes/{key}",
        detail=f"{why}: the write is stored durably and will be applied exactly once "
        "when the database can take it",
    )
    return JSONResponse(queued.model_dump(), status_code=202, headers={"Idempotency-Key": key})


class accepts_writes(requires_feature):  # lower case: used like a function, as its base
    """``inventory_write`` (503 while it is off), except while the database is the thing
    that is down: then the write goes to the outbox (202) at any level, as long as the
    outbox has room (else 503). A level pinned to EMERGENCY with the database up
    (maintenance) still refuses writes."""

    async def __call__(self, request: Request) -> None:
        rt: Runtime = request.app.state.runtime
        if rt.database_unavailable() is None:
            await super().__call__(request)


#: How often a write that lost a race (a unique key committed meanwhile) is looked at again.
RACE_ATTEMPTS = 3


async def _apply_now(
    rt: Runtime, operation: str, data: dict[str, Any], key: str
) -> tuple[dict[str, Any], bool]:
    """:func:`apply_write` in one transaction; a lost race is answered like the sequential case.

    Two requests creating one sku, or carrying one ``Idempotency-Key``, can both
    pass their checks before either commits; the second then violates a unique
    constraint. Its transaction is rolled back and the write is looked at again,
    now seeing the winner's row: the sku is taken (409) or the key's answer is
    replayed. A violation that persists is a conflict with the data (409).
    """
    for attempt in range(RACE_ATTEMPTS):
        try:
            async with rt.db.write_session() as s:  # SQLite: the one writer, in turn
                return await apply_write(s, operation, data, key)
        except IntegrityError as exc:
            logger.info("write %s lost a race (attempt %d): %s", key, attempt + 1, exc.orig)
    raise store.Conflict(
        "the write conflicts with data changed at the same time; nothing was written: retry"
    )


# ------------------------------------------------------------------- products


@router.post(
    "/products",
    status_code=201,
    response_model=Product,
    responses={
        200: {"model": Product, "description": "a replay: the answer to this Idempotency-Key"},
        202: {"model": Queued, "description": "queued in the outbox: the database is down"},
        **problem_responses(409, s409="sku_taken, or conflict (retry)"),
    },
    dependencies=[Depends(accepts_writes("inventory_write"))],
    tags=["products"],
)
async def create_product(
    body: ProductIn, rt: RuntimeDep, cache: CacheDep, key: IdempotencyKey = None
) -> JSONResponse:
    data = jsonable(body.model_dump())
    return await write(
        rt, cache, operation="product.create", data=data, sku=body.sku, key=key, created=True
    )


@router.get("/products", response_model=ProductPage, tags=["products"])
async def list_products(
    rt: RuntimeDep,
    q: Annotated[Text | None, Query(max_length=100)] = None,
    category: Annotated[Text | None, Query(max_length=100)] = None,
    min_price: PriceFilter = None,
    max_price: PriceFilter = None,
    low_stock: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    if q and not rt.manager.enabled("complex_queries"):
        raise DependencyUnavailable(
            "database",
            f"searching is off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('complex_queries')}); filter by category instead",
            rt.manager.retry_after(),
        )
    items, total = await run_in_database(
        rt,
        store.list_products,
        q=q,
        category=category,
        min_price=min_price,
        max_price=max_price,
        low_stock_only=low_stock,
        limit=limit,
        offset=offset,
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/products/{sku}", response_model=Product, tags=["products"])
async def get_product(sku: Sku, rt: RuntimeDep, cache: CacheDep) -> Any:
    cached = await cache.get(sku)
    if cached is not None:
        return JSONResponse(cached, headers={"X-Cache": "hit"})
    product = await run_in_database(rt, store.get_product, sku)
    await cache.put(sku, jsonable(product))
    return JSONResponse(jsonable(product), headers={"X-Cache": "miss"})


@router.patch(
    "/products/{sku}",
    response_model=Product,
    responses={202: {"model": Queued, "description": "queued in the outbox: the database is down"}},
    dependencies=[Depends(accepts_writes("inventory_write"))],
    tags=["products"],
)
async def update_product(
    sku: Sku, body: ProductPatch, rt: RuntimeDep, cache: CacheDep, key: IdempotencyKey = None
) -> JSONResponse:
    patch = jsonable(body.model_dump(exclude_unset=True))
    # with the database down a price change is queued like any write (``pricing_update``
    # needs the database, so it is off then); with it up, the level decides
    if (
        "price" in patch
        and rt.database_unavailable() is None
        and not rt.manager.enabled("pricing_update")
    ):
        raise DependencyUnavailable(
            "database",
            f"price changes are off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('pricing_update')})",
            rt.manager.retry_after(),
        )
    return await write(
        rt,
        cache,
        operation="product.update",
        data={"sku": sku, "patch": patch},
        sku=sku,
        key=key,
        created=False,
    )


# ------------------------------------------------------------------ movements


@router.post(
    "/products/{sku}/movements",
    status_code=201,
    response_model=Movement,
    responses={
        200: {"model": Movement, "description": "a replay: the answer to this Idempotency-Key"},
        202: {"model": Queued, "description": "queued in the outbox: the database is down"},
        **problem_responses(409, s409="insufficient_stock or stock_limit (MAX_STOCK)"),
    },
    dependencies=[Depends(accepts_writes("inventory_write"))],
    tags=["stock"],
)
async def move_stock(
    sku: Sku, body: MovementIn, rt: RuntimeDep, cache: CacheDep, key: IdempotencyKey = None
) -> JSONResponse:
    data = {"sku": sku, "kind": body.kind, "quantity": body.quantity, "reason": body.reason}
    return await write(rt, cache, operation="stock.move", data=data, sku=sku, key=key, created=True)


@router.get("/products/{sku}/movements", response_model=list[Movement], tags=["stock"])
async def movement_history(
    sku: Sku,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Any:
    return await run_in_database(rt, store.movement_history, sku, limit=limit, offset=offset)


@router.get(
    "/reports/low-stock",
    response_model=list[Product],
    dependencies=[Depends(requires_feature("complex_queries"))],
    tags=["stock"],
)
async def low_stock_report(rt: RuntimeDep) -> Any:
    return await run_in_database(rt, store.low_stock)


@router.get(
    "/writes/{key}",
    response_model=WriteStatus,
    responses=problem_responses(401, 403),
    tags=["writes"],
)
async def write_status(key: str, rt: RuntimeDep, request: Request) -> Any:
    """Where a write accepted with 202 stands: ``pending`` (with why it waits),
    ``applied``, ``dead`` (with the reason: an operator may retry or discard it) or
    ``discarded`` (an operator gave up on it).

    ``last_error`` is in words for any client: a refusal by the data says what was
    refused (``refused (insufficient_stock): ...``); any other failure says only that
    it failed (``failed: ...``). The error as recorded (``reason``: it may name
    tables, SQL or paths) is shown only with ``Authorization: Bearer <ADMIN_TOKEN>``
    (a wrong token is a 401/403 problem), as ``/health``'s details.
    """
    authorization = request.headers.get("authorization")
    admin = rt.settings.admin_token
    operator = False
    if authorization is not None and admin is not None:
        denied = authorize(admin.get_secret_value(), authorization)
        if denied is not None:
            return problem_response(denied)
        operator = True
    status = rt.outbox.status(key)
    if status is None:
        return {"idempotency_key": key, "status": "unknown"}
    out: dict[str, Any] = {"idempotency_key": key, "status": status}
    reason: str | None = None
    if status == "pending":
        intent = rt.outbox.pending_intent(key)
        if intent is not None:
            reason = intent.last_error
            public = public_reason(reason)
            if intent.attempts == 0 and reason:
                # it waits for the database (an outage is never the write's fault)
                public = "waiting: the database could not take it yet"
            out.update(operation=intent.operation, attempts=intent.attempts, last_error=public)
    elif status == "dead":
        dead = rt.outbox.dead_letter(key)
        if dead is not None:
            reason = dead.reason
            out.update(
                operation=dead.operation, attempts=dead.attempts, last_error=public_reason(reason)
            )
    elif status == "discarded":
        reason = rt.outbox.discarded_reason(key)
        out.update(last_error=public_reason(reason))
    if operator and reason:
        out["reason"] = reason
    return out


# -------------------------------------------------------------------- pricing

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


@router.get("/products/{sku}/price-suggestion", response_model=PriceSuggestion, tags=["pricing"])
async def price_suggestion(sku: Sku, rt: RuntimeDep) -> dict[str, Any]:
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
