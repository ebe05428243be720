"""Apply-or-queue: every write is applied now, in one transaction with its idempotency
record, or accepted into the outbox (202) when the database cannot take it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from brownout.outbox import IdempotencyConflict, OutboxFull, new_key
from brownout.web import requires_feature
from inventario import store
from inventario.cache import ProductCache, product_key
from inventario.deps import DependencyUnavailable, jsonable
from inventario.fleet_cache import mark_stale_sync
from inventario.runtime import Runtime
from inventario.schemas import Queued
from inventario.writes import IdempotencyMismatch, apply_write_sync

__all__ = ["RACE_ATTEMPTS", "accepts_writes", "write"]

logger = logging.getLogger("inventario")


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
    key = key or new_key()  # time-ordered: the journal's key index grows at its edge
    why = rt.database_unavailable()
    if why is None and not rt.manager.enabled("database_write"):
        why = (
            f"direct writes are off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('database_write')})"
        )
    if why is None:
        stale: Callable[[dict[str, Any]], list[str]] = touched or (lambda _: [sku])
        # Redis slow: the key's journal record is written during the write, not after it
        ahead = cache.invalidate_ahead(sku) if touched is None else None
        try:
            result, repeated, marked = await _apply_now(rt, operation, data, key, stale)
        except store.StoreError:
            cache.drop_ahead(ahead)
            raise
        except Exception as exc:
            cache.drop_ahead(ahead)
            why = rt.database_failure(exc)
            if why is None:
                raise
            logger.info("write %s queued: %s", key, rt.db.describe(exc).splitlines()[0])
        else:
            if rt.snapshot is not None:
                rt.snapshot.applied(operation, result)
            for product in stale(result):
                await cache.invalidate(
                    product, marked.get(product), ahead=ahead if product == sku else None
                )
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
    if rt.snapshot is not None:  # reads served from it while the database is down count it
        await rt.snapshot.queued(key, operation, data, sku)
    if touched is None:  # else not known before it applies: invalidated after the replay
        # the database has not changed yet: the replay's transaction records the key for
        # the other replicas, so a DEL not sent now does not stop cached reads fleet-wide
        await cache.invalidate(sku, share=False)
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
    rt: Runtime,
    operation: str,
    data: dict[str, Any],
    key: str,
    stale: Callable[[dict[str, Any]], list[str]],
) -> tuple[dict[str, Any], bool, dict[str, int]]:
    """:func:`~inventario.writes.apply_write_sync` in one transaction; a lost race is
    answered like the sequential case. With replicas sharing invalidations, the
    products ``stale(result)`` names are recorded in the same transaction
    (:func:`~inventario.fleet_cache.mark_stale_sync`): sku -> row, settled once their
    ``DEL`` is sent.

    Two requests creating one sku, or carrying one ``Idempotency-Key``, can both
    pass their checks before either commits; the second then violates a unique
    constraint. Its transaction is rolled back and the write is looked at again,
    now seeing the winner's row: the sku is taken (409) or the key's answer is
    replayed. A violation that persists is a conflict with the data (409).
    """
    for attempt in range(RACE_ATTEMPTS):
        try:
            # SQLite: on the one writer, in turn, the whole transaction in one trip to
            # its thread; PostgreSQL: a pooled session
            if rt.shared_invalidations is None:
                result, repeated = await rt.db.run_write(apply_write_sync, operation, data, key)
                return result, repeated, {}
            return await rt.db.run_write(_apply_marking_sync, operation, data, key, stale)
        except IntegrityError as exc:
            logger.info("write %s lost a race (attempt %d): %s", key, attempt + 1, exc.orig)
    raise store.Conflict(
        "the write conflicts with data changed at the same time; nothing was written: retry"
    )


def _apply_marking_sync(
    conn: Connection,
    operation: str,
    data: dict[str, Any],
    key: str,
    stale: Callable[[dict[str, Any]], list[str]],
) -> tuple[dict[str, Any], bool, dict[str, int]]:
    """:func:`~inventario.writes.apply_write_sync`, and the cache keys of the products
    it changed recorded in the shared table in its transaction (none for a replay of
    an earlier request's answer: nothing changed)."""
    result, repeated = apply_write_sync(conn, operation, data, key)
    if repeated:
        return result, repeated, {}
    products = list(dict.fromkeys(stale(result)))
    rows = mark_stale_sync(conn, [product_key(p) for p in products])
    return result, repeated, dict(zip(products, rows, strict=True))
