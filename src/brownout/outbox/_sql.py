"""Applying outbox intents to a SQL database exactly once in effect (SQLAlchemy)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

try:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "brownout.outbox.SqlApplier needs SQLAlchemy: pip install 'brownout[sql]'"
    ) from exc

from brownout._errors import BrownoutError
from brownout.outbox._journal import Intent
from brownout.sql import is_missing_schema

__all__ = ["Handler", "SqlApplier", "UnknownOperation"]

#: Applies one intent's payload inside the given session's transaction.
Handler = Callable[[AsyncSession, Any], Awaitable[None]]


class UnknownOperation(BrownoutError):
    """No handler is registered for an intent's operation (a caller error: it is dead-lettered)."""


class _SessionSource(Protocol):
    def session(self) -> AbstractAsyncContextManager[AsyncSession]: ...


class SqlApplier:
    """Applies an intent and records its idempotency key in the same transaction.

    ``database`` is a :class:`brownout.sql.AsyncDatabase` (each intent is one
    guarded unit of work: it counts against the database breaker) or a plain
    ``AsyncEngine``. The table ``brownout_applied(key PRIMARY KEY, ...)`` makes
    a second application of the same key impossible: if the process dies after
    the database commit and before the journal is updated, the replay finds the
    key and only updates the journal.

    ``after_commit(intent)`` runs after the commit and before the journal
    update (tests use it to crash exactly there).
    """

    def __init__(
        self,
        database: _SessionSource | AsyncEngine,
        handlers: Mapping[str, Handler] | None = None,
        *,
        table: str = "brownout_applied",
        after_commit: Callable[[Intent], None] | None = None,
    ) -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"SqlApplier.table must be a plain identifier, got {table!r}")
        self.database = database
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._table = table
        self._after_commit = after_commit

    def register(self, operation: str, handler: Handler) -> None:
        """Apply intents named ``operation`` with ``handler(session, payload)``."""
        if not callable(handler):
            raise TypeError(f"SqlApplier.register({operation!r}): handler must be callable")
        self._handlers[operation] = handler

    def handler(self, operation: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(fn: Handler) -> Handler:
            self.register(operation, fn)
            return fn

        return decorate

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        if isinstance(self.database, AsyncEngine):
            async with AsyncSession(self.database) as session, session.begin():
                yield session
        else:
            async with self.database.session() as session:
                yield session

    async def ensure_schema(self) -> None:
        """Create the applied-keys table if it does not exist (PostgreSQL and SQLite)."""
        async with self._session() as session:
            await session.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {self._table} ("
                    "key VARCHAR(200) PRIMARY KEY, operation VARCHAR(200) NOT NULL, "
                    "applied_at DOUBLE PRECISION NOT NULL)"
                )
            )

    def not_ready(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the schema is not there yet (a missing table: the
        applied-keys table or a handler's), not that the intent is wrong: the
        :class:`~brownout.outbox.Replayer` keeps such intents waiting, never
        dead-letters them."""
        return is_missing_schema(exc)

    async def is_applied(self, key: str) -> bool:
        async with self._session() as session:
            row = await session.execute(
                text(f"SELECT 1 FROM {self._table} WHERE key = :key"),
                {"key": key},
            )
            return row.first() is not None

    async def __call__(self, intent: Intent) -> None:
        handler = self._handlers.get(intent.operation)
        if handler is None:
            raise UnknownOperation(
                f"no handler registered for outbox operation {intent.operation!r}"
            )
        async with self._session() as session:
            seen = await session.execute(
                text(f"SELECT 1 FROM {self._table} WHERE key = :key"),
                {"key": intent.key},
            )
            if seen.first() is not None:
                return  # committed before a crash: only the journal needs updating
            await session.execute(
                text(
                    f"INSERT INTO {self._table} (key, operation, applied_at) "
                    "VALUES (:key, :operation, :at)"
                ),
                {"key": intent.key, "operation": intent.operation, "at": time.time()},
            )
            await handler(session, intent.payload)
        if self._after_commit is not None:
            self._after_commit(intent)
