"""What inventario's routers share: the runtime as a dependency, guarded database calls, 503s.

the routers of :mod:`inventario.routes` (products, stock, writes, pricing) and
:mod:`inventario.routes.invoices` both run their database work through
:func:`run_in_database` (reads) or :func:`write_in_database` (writes), so a
failing or rejecting database becomes the same 503
(:class:`DependencyUnavailable`, with ``Retry-After``) everywhere.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from brownout import BreakerOpen
from brownout.overload import Overloaded
from inventario import store
from inventario.cache import ProductCache
from inventario.runtime import Runtime
from inventario.schemas import MAX_OFFSET

__all__ = [
    "CacheDep",
    "DependencyUnavailable",
    "Offset",
    "RuntimeDep",
    "jsonable",
    "read_in_database",
    "require_admin",
    "run_in_database",
    "try_again",
    "unavailable",
    "write_in_database",
]

T = TypeVar("T")
P = ParamSpec("P")

logger = logging.getLogger("inventario")


class DependencyUnavailable(Exception):
    """A dependency needed for this request is down (503 with Retry-After); ``code``:
    the problem's, ``dependency_busy`` when its admission limit refused the call."""

    def __init__(
        self,
        dependency: str,
        detail: str,
        retry_after: float,
        *,
        code: str = "dependency_unavailable",
    ) -> None:
        super().__init__(detail)
        self.dependency = dependency
        self.retry_after = retry_after
        self.code = code


def busy(rt: Runtime, exc: Overloaded) -> DependencyUnavailable:
    """The 503 for a call a dependency's admission limit (the level's ``pool_multiplier``)
    or throttle refused: it was not made."""
    wait = exc.retry_after or 1.0
    return DependencyUnavailable(
        exc.name,
        f"{exc.name} has as many calls in flight as the service allows at level "
        f"{rt.manager.level.name} (the request was not attempted): {try_again(wait)}",
        wait,
        code="dependency_busy",
    )


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, a round trip to another thread per request for a lookup.
async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def product_cache(request: Request) -> ProductCache:
    cache: ProductCache = request.app.state.product_cache
    return cache


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def require_admin(request: Request) -> None:
    """inventario's own admin endpoints (the outbox's): ``Authorization: Bearer
    <ADMIN_TOKEN>`` as brownout's ``/admin`` ones: 401 without it, 403 with a wrong one
    (compared in constant time), 404 while no ``ADMIN_TOKEN`` is set."""
    expected = request.app.state.runtime.settings.admin_token
    if expected is None:
        raise HTTPException(404, "no admin endpoints: ADMIN_TOKEN is not set")
    challenge = {"WWW-Authenticate": 'Bearer realm="brownout-admin"'}
    scheme, _, offered = (request.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        raise HTTPException(
            401,
            "this endpoint needs an 'Authorization: Bearer <admin token>' header",
            headers=challenge,
        )
    if not hmac.compare_digest(offered.strip().encode(), expected.get_secret_value().encode()):
        raise HTTPException(403, "the admin token is not valid")


#: How far a list is paged: bounded, so every accepted offset fits the database's integers.
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"0 to {MAX_OFFSET}")]
CacheDep = Annotated[ProductCache, Depends(product_cache)]


def try_again(seconds: float) -> str:
    """What a 503's detail tells the client to do (the same seconds as its Retry-After)."""
    return f"try again in {max(1, round(seconds))} s"


def unavailable(rt: Runtime, exc: BaseException) -> DependencyUnavailable:
    """The 503 for a database call that was rejected (``BreakerOpen``) or failed."""
    if isinstance(exc, BreakerOpen):
        wait = exc.retry_after if exc.retry_after is not None else rt.manager.retry_after()
        detail = (
            f"{exc.name} is unavailable (circuit breaker {exc.state.value}: the request was "
            f"not attempted): {try_again(wait)}"
        )
        return DependencyUnavailable(exc.name, detail, wait)
    wait = rt.manager.retry_after()
    # the driver's message names hosts, databases and SQL: the log gets it, the client does not
    logger.warning("database call failed: %s", rt.db.describe(exc))
    return DependencyUnavailable(
        "database", f"the database is unavailable: {try_again(wait)}", wait
    )


async def run_in_database(
    rt: Runtime,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """``fn(session, *args, **kwargs)`` in one guarded database session (one transaction).

    Refused while database reads are off (EMERGENCY: maintenance mode); a
    rejected or failing database becomes :class:`DependencyUnavailable` (503),
    a :class:`inventario.store.StoreError` passes through (the client's 4xx).
    For work that writes, use :func:`write_in_database`.
    """
    return await _in_database(rt, rt.db.session, fn, args, kwargs)


async def read_in_database(
    rt: Runtime,
    fn: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """:func:`run_in_database` for a synchronous read (``fn(connection, ...)``, e.g.
    :func:`inventario.store.get_product_sync`): on SQLite in one trip to the pooled
    connection's thread (:meth:`brownout.sql.AsyncDatabase.run_read`)."""
    return await _guarded(rt, lambda: rt.db.run_read(fn, *args, **kwargs))


async def write_in_database(
    rt: Runtime,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """:func:`run_in_database` for work that writes: on the database's write session
    (on SQLite, the one writer connection, taken in turn rather than fought over)."""
    return await _in_database(rt, rt.db.write_session, fn, args, kwargs)


async def _in_database(
    rt: Runtime,
    session: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    async def call() -> T:
        async with session() as s:
            return await fn(s, *args, **kwargs)

    return await _guarded(rt, call)


async def _guarded(rt: Runtime, call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` unless database reads are off; its database failures as 503s."""
    if not rt.manager.enabled("read_only_database"):  # EMERGENCY: maintenance mode
        wait = rt.manager.retry_after()
        raise DependencyUnavailable(
            "database",
            f"database reads are off at level {rt.manager.level.name} "
            f"({rt.manager.feature_reason('read_only_database')}): {try_again(wait)}",
            wait,
        )
    try:
        return await call()
    except store.StoreError:
        raise
    except BreakerOpen as exc:
        raise unavailable(rt, exc) from None
    except Overloaded as exc:  # as a database down to a read: its snapshot may answer
        raise busy(rt, exc) from None
    except Exception as exc:
        if rt.db.errors.counts(exc):
            raise unavailable(rt, exc) from None
        if rt.database_failure(exc) is not None:  # no schema yet: it is being created
            wait = rt.manager.retry_after()
            raise DependencyUnavailable(
                "database", f"the database is not ready: {try_again(wait)}", wait
            ) from None
        raise


def jsonable(value: Any) -> Any:
    """``value`` with every ``Decimal`` (at any depth in dicts and lists) as its string."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
