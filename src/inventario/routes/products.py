"""Products: create, list, read (through the cache), update."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from brownout.web import problem_responses
from inventario import store
from inventario.deps import (
    CacheDep,
    DependencyUnavailable,
    Offset,
    RuntimeDep,
    jsonable,
    read_in_database,
)
from inventario.routes.params import IdempotencyKey, PriceFilter, Sku, queued, replayed
from inventario.schemas import Product, ProductIn, ProductPage, ProductPatch, Text
from inventario.services.writes import accepts_writes, write

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/products",
    status_code=201,
    response_model=Product,
    responses={
        **replayed(Product),
        **queued(),
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
    items, total = await read_in_database(
        rt,
        store.list_products_sync,
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
    try:
        # one trip to the database's thread on SQLite (the read behind every cache miss)
        product = await read_in_database(rt, store.get_product_sync, sku)
    except DependencyUnavailable as exc:
        # the database is down: this replica's copy, with its age (not in maintenance
        # mode, a pinned EMERGENCY with the database up: its reads are off on purpose)
        stale = None
        if (
            rt.snapshot is not None
            and exc.dependency == "database"
            and (rt.manager.enabled("read_only_database") or rt.database_unavailable())
        ):
            stale = await rt.snapshot.read(sku, str(exc))
        if stale is None:
            raise  # never seen here: a 404 could be false, it stays a 503
        return JSONResponse(stale.doc, headers=stale.headers)
    await cache.put(sku, jsonable(product))
    return JSONResponse(jsonable(product), headers={"X-Cache": "miss"})


@router.patch(
    "/products/{sku}",
    response_model=Product,
    responses=queued(),
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
