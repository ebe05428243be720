"""Stock: movements in, out and adjusting, their history, the low-stock report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from brownout.web import problem_responses, requires_feature
from inventario import store
from inventario.deps import CacheDep, Offset, RuntimeDep, read_in_database, run_in_database
from inventario.routes.params import IdempotencyKey, Sku, queued, replayed
from inventario.schemas import Movement, MovementIn, Product
from inventario.services.writes import accepts_writes, write

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/products/{sku}/movements",
    status_code=201,
    response_model=Movement,
    responses={
        **replayed(Movement),
        **queued(),
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
    # one trip to the database's thread on SQLite
    return await read_in_database(rt, store.movement_history_sync, sku, limit=limit, offset=offset)


@router.get(
    "/reports/low-stock",
    response_model=list[Product],
    dependencies=[Depends(requires_feature("complex_queries"))],
    tags=["stock"],
)
async def low_stock_report(rt: RuntimeDep) -> Any:
    return await run_in_database(rt, store.low_stock)
