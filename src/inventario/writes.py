"""Every write, direct or replayed from the outbox, goes through :func:`apply_write`.

One function, one transaction: the idempotency record and the effect are
committed together, so a key means the same thing whichever path applied it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Float, String, Table, Text, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from inventario import store
from inventario.db import metadata
from inventario.invoice_store import apply_invoice_sync, touched_skus

__all__ = [
    "OPERATIONS",
    "TOUCHES",
    "IdempotencyMismatch",
    "apply_write",
    "apply_write_sync",
    "apply_writes",
    "apply_writes_sync",
    "digest",
    "public_reason",
]

idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("operation", String(100), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)


class IdempotencyMismatch(store.StoreError):
    """An ``Idempotency-Key`` was reused with a different request (422)."""

    status = 422
    code = "idempotency_key_reused"


def digest(operation: str, payload: Mapping[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{operation}\0{body}".encode()).hexdigest()


def _create_product(conn: Connection, p: Mapping[str, Any], source: str) -> dict[str, Any]:
    return store.create_product_sync(conn, p)


def _update_product(conn: Connection, p: Mapping[str, Any], source: str) -> dict[str, Any]:
    return store.update_product_sync(conn, p["sku"], p["patch"])


def _move_stock(conn: Connection, p: Mapping[str, Any], source: str) -> dict[str, Any]:
    return store.move_stock_sync(
        conn,
        sku=p["sku"],
        kind=p["kind"],
        quantity=int(p["quantity"]),
        reason=p.get("reason", ""),
        source=source,
    )


def _apply_invoice(conn: Connection, p: Mapping[str, Any], source: str) -> dict[str, Any]:
    return apply_invoice_sync(conn, p["invoice_id"])


#: Synchronous, on a SQLAlchemy ``Connection``: run whole in the SQLite writer's thread
#: (:meth:`brownout.sql.AsyncDatabase.run_write`) or over a session (``run_sync``).
Operation = Callable[[Connection, Mapping[str, Any], str], dict[str, Any]]

#: operation name -> what it does (the outbox registers the same table)
OPERATIONS: dict[str, Operation] = {
    "product.create": _create_product,
    "product.update": _update_product,
    "stock.move": _move_stock,
    "invoice.apply": _apply_invoice,
}

#: operation name -> the products a result changed, where that is not the stream
#: (the product's sku): their cache entries are dropped once it is committed
TOUCHES: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "invoice.apply": touched_skus,
}


def apply_write_sync(
    conn: Connection,
    operation: str,
    payload: Mapping[str, Any],
    key: str,
    *,
    source: str = "direct",
) -> tuple[dict[str, Any], bool]:
    """Apply ``operation`` once for ``key``; returns (result, replayed_from_an_earlier_request)."""
    wanted = digest(operation, payload)
    row = (conn.execute(select(idempotency).where(idempotency.c.key == key))).mappings().first()
    if row is not None:
        if row["digest"] != wanted or row["operation"] != operation:
            raise IdempotencyMismatch(
                f"Idempotency-Key {key!r} was already used for a different request"
            )
        return json.loads(row["response"]), True
    result = OPERATIONS[operation](conn, payload, source)
    conn.execute(insert(idempotency).values(_record(key, operation, wanted, result)))
    return result, False


def apply_writes_sync(
    conn: Connection,
    operation: str,
    writes: Sequence[tuple[Mapping[str, Any], str]],
    *,
    source: str = "outbox",
) -> list[dict[str, Any]]:
    """:func:`apply_write_sync` for a run of ``(payload, key)`` in one transaction, in order;
    the results, in the same order.

    The outbox's batched replay: one ``SELECT`` for the keys already recorded and one
    ``INSERT`` (executemany) for the new records, instead of one of each per write;
    the effects still run one by one, each seeing the ones before it. It applies all
    of them or raises (then nothing of the transaction is kept: the applier splits
    the run to find the write at fault).
    """
    keys = [key for _, key in writes]
    rows = conn.execute(select(idempotency).where(idempotency.c.key.in_(keys)))
    known: dict[str, tuple[str, str, dict[str, Any]]] = {
        row["key"]: (row["operation"], row["digest"], json.loads(row["response"]))
        for row in rows.mappings()
    }
    run = OPERATIONS[operation]
    results: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for payload, key in writes:
        wanted = digest(operation, payload)
        seen = known.get(key)
        if seen is not None:  # recorded before (or earlier in this run): its answer
            if seen[0] != operation or seen[1] != wanted:
                raise IdempotencyMismatch(
                    f"Idempotency-Key {key!r} was already used for a different request"
                )
            results.append(seen[2])
            continue
        result = run(conn, payload, source)
        known[key] = (operation, wanted, result)
        records.append(_record(key, operation, wanted, result))
        results.append(result)
    if records:
        conn.execute(insert(idempotency), records)
    return results


async def apply_write(
    s: AsyncSession, operation: str, payload: Mapping[str, Any], key: str, *, source: str = "direct"
) -> tuple[dict[str, Any], bool]:
    """:func:`apply_write_sync` in the session's transaction."""
    return await store.on_session(s, apply_write_sync, operation, payload, key, source=source)


async def apply_writes(
    s: AsyncSession,
    operation: str,
    writes: Sequence[tuple[Mapping[str, Any], str]],
    *,
    source: str = "outbox",
) -> list[dict[str, Any]]:
    """:func:`apply_writes_sync` in the session's transaction."""
    return await store.on_session(s, apply_writes_sync, operation, writes, source=source)


def _record(key: str, operation: str, wanted: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The idempotency row of a write applied now."""
    return {
        "key": key,
        "operation": operation,
        "digest": wanted,
        "response": json.dumps(result, default=str),
        "created_at": time.time(),
    }


#: What ``GET /writes/{key}`` says of a write that failed for a reason of its own
#: that is not the client's (a bug, a database error): the error itself names
#: tables, SQL, drivers or paths, and is for operators only.
FAILED = (
    "failed: the write could not be applied for a reason that is not the request's; "
    "an operator can see it (inventario outbox list) and retry or discard the write"
)


def _refusals(cls: type[store.StoreError]) -> dict[str, str]:
    """Every :class:`~inventario.store.StoreError` class's name -> its problem code."""
    out = {cls.__name__: cls.code}
    for sub in cls.__subclasses__():
        out.update(_refusals(sub))
    return out


def public_reason(reason: str | None) -> str | None:
    """A replay error (as the outbox records it: ``"<ErrorClass>: <message>"``, one
    line) in words fit for any client.

    A refusal by the data (a :class:`~inventario.store.StoreError`: not enough stock,
    no such product, ...) is ``"refused (<code>): <message>"``, the same message a
    direct request gets in its 4xx; anything else is :data:`FAILED`, without the error.

    >>> public_reason("NotFound: no product with sku 'X-1'")
    "refused (not_found): no product with sku 'X-1'"
    >>> public_reason("OperationalError: (sqlite3.OperationalError) disk I/O error")[:8]
    'failed: '
    """
    if not reason:
        return reason
    name, sep, message = reason.partition(": ")
    code = _refusals(store.StoreError).get(name) if sep else None
    if code is None:
        return FAILED
    return f"refused ({code}): {message}"
