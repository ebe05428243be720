"""Inventory operations on one database session (one transaction): no HTTP, no caching here."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from inventario.db import movements, products
from inventario.schemas import MAX_STOCK

__all__ = [
    "Conflict",
    "InsufficientStock",
    "NotFound",
    "SkuTaken",
    "StockLimit",
    "create_product",
    "create_product_sync",
    "get_product",
    "get_product_sync",
    "in_session",
    "list_products",
    "list_products_sync",
    "low_stock",
    "move_stock",
    "move_stock_sync",
    "movement_history",
    "movement_history_sync",
    "on_session",
    "product_age",
    "product_age_sync",
    "update_product",
    "update_product_sync",
]


class StoreError(Exception):
    """A request the data does not allow. ``permanent``: retrying cannot help.

    Answered as an RFC 9457 problem: ``status``, ``code`` (snake_case) and the
    message as ``detail``; :meth:`body` adds the problem's own facts.
    """

    permanent = True
    status = 400
    code = "invalid_request"

    def body(self) -> dict[str, Any]:
        """``{"error": code, "detail": message, ...facts}`` (the app renders it as a problem)."""
        return {"error": self.code, "detail": str(self)}


class NotFound(StoreError):
    status = 404
    code = "not_found"


class SkuTaken(StoreError):
    status = 409
    code = "sku_taken"


class Conflict(StoreError):
    """The write conflicts with the data as it is now (409)."""

    status = 409
    code = "conflict"


class InsufficientStock(StoreError):
    status = 409
    code = "insufficient_stock"

    def __init__(self, sku: str, stock: int, requested: int) -> None:
        super().__init__(f"only {stock} of {sku} in stock, cannot take out {requested}")
        self.sku, self.stock, self.requested = sku, stock, requested

    def body(self) -> dict[str, Any]:
        return {
            "error": "insufficient_stock",
            "detail": str(self),
            "sku": self.sku,
            "stock": self.stock,
            "requested": self.requested,
        }


class StockLimit(StoreError):
    """A movement would take the stock past :data:`~inventario.schemas.MAX_STOCK` (409)."""

    status = 409
    code = "stock_limit"

    def __init__(self, sku: str, stock: int, delta: int) -> None:
        super().__init__(
            f"{sku} has {stock} in stock: adding {delta} would pass the maximum stock of "
            f"{MAX_STOCK} units; nothing was moved"
        )
        self.sku, self.stock, self.delta = sku, stock, delta

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "detail": str(self),
            "sku": self.sku,
            "stock": self.stock,
            "requested": self.delta,
            "max_stock": MAX_STOCK,
        }


def _product(row: Mapping[str, Any] | Any) -> dict[str, Any]:
    data = dict(row)
    data.pop("id", None)
    data.pop("price_updated_at", None)
    data["price"] = Decimal(data["price"]).quantize(Decimal("0.01"))
    data["cost"] = Decimal(data["cost"]).quantize(Decimal("0.01"))
    data["low_stock"] = data["stock"] <= data["min_stock"]
    return data


P = ParamSpec("P")
T = TypeVar("T")


async def on_session(
    s: AsyncSession,
    fn: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``fn(connection, ...)``, a synchronous function of this module, in the session's
    transaction (``AsyncSession.run_sync``).

    The work is written once, synchronously on a :class:`~sqlalchemy.engine.Connection`:
    :meth:`brownout.sql.AsyncDatabase.run_write` runs it whole in the SQLite writer's
    thread (one trip), and async callers holding a session run it here.
    """
    return await s.run_sync(lambda session: fn(session.connection(), *args, **kwargs))


def get_product_sync(conn: Connection, sku: str) -> dict[str, Any]:
    row = conn.execute(select(products).where(products.c.sku == sku)).mappings().first()
    if row is None:
        raise NotFound(f"no product with sku {sku!r}")
    return _product(row)


def product_age_sync(conn: Connection, sku: str) -> float:
    """Seconds since the product's price last changed."""
    row = conn.execute(select(products.c.price_updated_at).where(products.c.sku == sku))
    value = row.scalar()
    if value is None:
        raise NotFound(f"no product with sku {sku!r}")
    return max(0.0, time.time() - float(value))


def create_product_sync(conn: Connection, data: Mapping[str, Any]) -> dict[str, Any]:
    exists = conn.execute(select(products.c.id).where(products.c.sku == data["sku"]))
    if exists.first() is not None:
        raise SkuTaken(f"a product with sku {data['sku']!r} already exists")
    now = time.time()
    values = {
        "sku": data["sku"],
        "name": data["name"],
        "category": data.get("category", ""),
        "price": Decimal(str(data["price"])),
        "cost": Decimal(str(data["cost"])),
        "stock": int(data.get("stock", 0)),
        "min_stock": int(data.get("min_stock", 0)),
        "created_at": now,
        "updated_at": now,
        "price_updated_at": now,
    }
    conn.execute(insert(products).values(**values))
    return get_product_sync(conn, data["sku"])


def update_product_sync(conn: Connection, sku: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    current = get_product_sync(conn, sku)
    values: dict[str, Any] = {k: v for k, v in patch.items() if v is not None}
    for money in ("price", "cost"):
        if money in values:
            values[money] = Decimal(str(values[money]))
    if not values:
        return current
    now = time.time()
    values["updated_at"] = now
    if "price" in values and values["price"] != current["price"]:
        values["price_updated_at"] = now
    conn.execute(update(products).where(products.c.sku == sku).values(**values))
    return get_product_sync(conn, sku)


def list_products_sync(
    conn: Connection,
    *,
    q: str | None = None,
    category: str | None = None,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    low_stock_only: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of products (filtered) and how many match in all."""
    where = []
    if q:
        pattern = f"%{q.lower()}%"
        where.append(
            or_(func.lower(products.c.name).like(pattern), func.lower(products.c.sku).like(pattern))
        )
    if category:
        where.append(products.c.category == category)
    if min_price is not None:
        where.append(products.c.price >= min_price)
    if max_price is not None:
        where.append(products.c.price <= max_price)
    if low_stock_only:
        where.append(products.c.stock <= products.c.min_stock)
    condition = and_(*where) if where else None
    count = select(func.count()).select_from(products)
    query = select(products).order_by(products.c.sku).limit(limit).offset(offset)
    if condition is not None:
        count = count.where(condition)
        query = query.where(condition)
    total = int(conn.execute(count).scalar() or 0)
    rows = conn.execute(query).mappings().all()
    return [_product(r) for r in rows], total


async def low_stock(s: AsyncSession) -> list[dict[str, Any]]:
    rows = (
        (
            await s.execute(
                select(products)
                .where(products.c.stock <= products.c.min_stock)
                .order_by((products.c.min_stock - products.c.stock).desc(), products.c.sku)
            )
        )
        .mappings()
        .all()
    )
    return [_product(r) for r in rows]


def move_stock_sync(
    conn: Connection,
    *,
    sku: str,
    kind: str,
    quantity: int,
    reason: str = "",
    idempotency_key: str | None = None,
    source: str = "direct",
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """Apply one movement atomically; stock never goes negative."""
    if kind not in ("in", "out", "adjust"):
        raise StoreError(f"unknown movement kind {kind!r}")
    if kind in ("in", "out") and quantity < 1:
        raise StoreError("quantity must be >= 1 for in/out movements")
    if not 0 <= quantity <= MAX_STOCK:
        raise StoreError(f"quantity must be between 0 and {MAX_STOCK}")
    if kind == "adjust":
        current = conn.execute(
            select(products.c.stock).where(products.c.sku == sku).with_for_update()
        )
        before = current.scalar()
        if before is None:
            raise NotFound(f"no product with sku {sku!r}")
        conn.execute(
            update(products)
            .where(products.c.sku == sku)
            .values(stock=quantity, updated_at=time.time())
        )
        stock_after = quantity
        delta = quantity - int(before)
    else:
        delta = quantity if kind == "in" else -quantity
        # both bounds in the one statement: concurrent movements cannot pass either
        row = conn.execute(
            update(products)
            .where(
                products.c.sku == sku,
                products.c.stock + delta >= 0,
                products.c.stock + delta <= MAX_STOCK,
            )
            .values(stock=products.c.stock + delta, updated_at=time.time())
            .returning(products.c.stock)
        )
        moved = row.scalar()
        if moved is None:
            current = conn.execute(select(products.c.stock).where(products.c.sku == sku))
            stock = current.scalar()
            if stock is None:
                raise NotFound(f"no product with sku {sku!r}")
            if delta > 0:
                raise StockLimit(sku, int(stock), delta)
            raise InsufficientStock(sku, int(stock), quantity)
        stock_after = int(moved)
    result = conn.execute(
        insert(movements)
        .values(
            sku=sku,
            kind=kind,
            quantity=quantity,
            delta=delta,
            reason=reason,
            stock_after=int(stock_after),
            idempotency_key=idempotency_key,
            source=source,
            invoice_id=invoice_id,
            created_at=time.time(),
        )
        .returning(*movements.c)
    )
    data = dict(result.mappings().one())
    data.pop("idempotency_key", None)
    data.pop("invoice_id", None)
    return data


def in_session(
    fn: Callable[Concatenate[Connection, P], T],
) -> Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, T]]:
    """The async form of ``fn`` (a synchronous function of this module): the same
    parameters after an :class:`AsyncSession` instead of a connection, run by
    :func:`on_session` in the session's transaction. One body per operation, no twin."""

    @functools.wraps(fn)
    async def run(s: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await on_session(s, fn, *args, **kwargs)

    return run


get_product = in_session(get_product_sync)
product_age = in_session(product_age_sync)
create_product = in_session(create_product_sync)
update_product = in_session(update_product_sync)
move_stock = in_session(move_stock_sync)


async def movement_by_key(s: AsyncSession, key: str) -> dict[str, Any] | None:
    row = (
        (await s.execute(select(movements).where(movements.c.idempotency_key == key)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    data = dict(row)
    data.pop("idempotency_key", None)
    data.pop("invoice_id", None)
    return data


def movement_history_sync(
    conn: Connection, sku: str, *, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """The product's movements, newest first (:class:`NotFound` for an unknown sku)."""
    get_product_sync(conn, sku)
    rows = (
        conn.execute(
            select(movements)
            .where(movements.c.sku == sku)
            .order_by(movements.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        .mappings()
        .all()
    )
    out = []
    for r in rows:
        data = dict(r)
        data.pop("idempotency_key", None)
        data.pop("invoice_id", None)
        out.append(data)
    return out


list_products = in_session(list_products_sync)
movement_history = in_session(movement_history_sync)
