"""Applying outbox intents to a SQL database exactly once in effect (SQLAlchemy)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

try:
    from sqlalchemy import TextClause, bindparam, text
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "brownout.outbox.SqlApplier needs SQLAlchemy: pip install 'brownout[sql]'"
    ) from exc

from brownout._errors import UnknownOperation
from brownout.outbox._journal import Intent
from brownout.sql import is_missing_schema

__all__ = ["BatchHandler", "Handler", "SqlApplier", "UnknownOperation"]

#: Applies one intent's payload inside the given session's transaction.
Handler = Callable[[AsyncSession, Any], Awaitable[None]]
#: Applies several intents' payloads (in order) inside the given session's transaction,
#: e.g. with one ``executemany``: one round trip for the lot.
BatchHandler = Callable[[AsyncSession, list[Any]], Awaitable[None]]


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
        self._batch_handlers: dict[str, BatchHandler] = {}
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

    def register_batch(self, operation: str, handler: BatchHandler) -> None:
        """Apply runs of consecutive intents named ``operation`` with one call,
        ``handler(session, [payload, ...])`` (in journal order), for example one
        ``executemany``: one database round trip for many intents. It must apply
        all of them or raise; when it raises, the run is split in halves and tried
        again until the intent at fault is found (then dead-lettered alone)."""
        if not callable(handler):
            raise TypeError(f"SqlApplier.register_batch({operation!r}): handler must be callable")
        self._batch_handlers[operation] = handler

    def batch_handler(self, operation: str) -> Callable[[BatchHandler], BatchHandler]:
        """Decorator form of :meth:`register_batch`."""

        def decorate(fn: BatchHandler) -> BatchHandler:
            self.register_batch(operation, fn)
            return fn

        return decorate

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        if isinstance(self.database, AsyncEngine):
            async with AsyncSession(self.database) as session, session.begin():
                yield session
        else:
            # every unit here writes (or belongs to a replay that does): on a SQLite file
            # AsyncDatabase's writer, taken in turn with the service's own writes
            write_session = getattr(self.database, "write_session", None)
            source = write_session if write_session is not None else self.database.session
            async with source() as session:
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

    async def apply_batch(
        self,
        intents: Sequence[Intent],
        *,
        stop: Callable[[BaseException], bool] | None = None,
    ) -> list[bool | Exception]:
        """Apply ``intents`` (oldest first) in as few transactions as possible.

        Returns per intent ``True`` (committed), ``False`` (not tried) or its error
        (nothing of it applied). All go in one transaction, their keys recorded in
        it (one ``executemany``). If an intent fails, the transaction is rolled
        back and the batch is split around it: the intents before it go again in
        one transaction, it gets its error alone, and the rest of the batch goes on
        in another, less the later intents of its stream (``False``: FIFO per
        stream). After an error for which ``stop(exc)`` is true (an outage) nothing
        more is tried. A failure that cannot be pinned on one intent (a batch
        handler's, see :meth:`register_batch`; the key insert; the commit) is
        bisected: each half goes again in its own transaction.
        """
        outcomes: list[bool | Exception] = [False] * len(intents)
        blocked: set[str] = set()
        segments: deque[list[int]] = deque([list(range(len(intents)))])
        while segments:
            segment = [i for i in segments.popleft() if intents[i].stream not in blocked]
            if not segment:
                continue
            chunk = [intents[i] for i in segment]
            failed = await self._apply_together(chunk)
            if failed is None:
                for i in segment:
                    outcomes[i] = True
                self._committed(chunk)
                continue
            position, exc = failed
            if position is None:  # not known whose (a batch handler, the key insert, the commit)
                if stop is not None and stop(exc):
                    outcomes[segment[0]] = exc
                    break
                if len(segment) > 1:  # bisect: the halves go again, each in one transaction
                    half = len(segment) // 2
                    segments.extendleft([segment[half:], segment[:half]])
                    continue
                position = 0
            bad = segment[position]
            outcomes[bad] = exc
            blocked.add(intents[bad].stream)
            if stop is not None and stop(exc):
                break
            segments.extendleft([segment[position + 1 :], segment[:position]])
        return outcomes

    async def _apply_together(self, intents: list[Intent]) -> tuple[int | None, Exception] | None:
        """One transaction for ``intents``: ``None`` if committed, else (the position of
        the intent that failed, or ``None`` if none did: a failure of the key check,
        the key insert or the commit; the error); then nothing of them is applied."""
        position: int | None = None
        try:
            async with self._session() as session:
                seen = await session.execute(
                    self._seen_statement(session), {"keys": [intent.key for intent in intents]}
                )
                applied = set(seen.scalars())  # committed before a crash: skipped
                now = time.time()
                fresh = []
                todo = [(n, i) for n, i in enumerate(intents) if i.key not in applied]
                at = 0
                while at < len(todo):
                    position, intent = todo[at]
                    end = at + 1
                    run = self._batch_handlers.get(intent.operation)
                    if run is not None:  # the run of consecutive intents it can take
                        while end < len(todo) and todo[end][1].operation == intent.operation:
                            end += 1
                        if end > at + 1:
                            position = None  # which of the run failed is not known
                        await run(session, [i.payload for _, i in todo[at:end]])
                    else:
                        handler = self._handlers.get(intent.operation)
                        if handler is None:
                            raise UnknownOperation(
                                f"no handler registered for outbox operation {intent.operation!r}"
                            )
                        await handler(session, intent.payload)
                    for _, done in todo[at:end]:
                        fresh.append({"key": done.key, "operation": done.operation, "at": now})
                    at = end
                position = None
                if fresh:
                    await session.execute(
                        text(
                            f"INSERT INTO {self._table} (key, operation, applied_at) "
                            "VALUES (:key, :operation, :at)"
                        ),
                        fresh,
                    )
        except Exception as exc:
            return position, exc
        return None

    def _seen_statement(self, session: AsyncSession) -> TextClause:
        """The statement that finds which of ``:keys`` are applied already.

        On PostgreSQL the keys go as one array joined to the table: that plan is an
        index probe per key whatever PostgreSQL knows of the table. ``key IN (:k1, ...,
        :k500)`` (and ``key = ANY(:keys)``) is planned, once the driver's prepared
        statement switches to a generic plan, as a sequential scan comparing every row
        with every key when the table was small or never analysed (autovacuum off, or
        not yet run): a batch of 500 then took 4-5 s against 50,000 applied keys, and
        the drain of 100,000 intents ran at 162/s. SQLite (no plan cached across
        statements; ``IN`` is index probes): ``IN`` with one parameter per key."""
        if session.get_bind().dialect.name == "postgresql":
            return text(
                f"SELECT a.key FROM {self._table} AS a "
                "JOIN unnest(CAST(:keys AS VARCHAR[])) AS k(key) ON a.key = k.key"
            )
        return text(f"SELECT key FROM {self._table} WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )

    def _committed(self, intents: list[Intent]) -> None:
        if self._after_commit is not None:
            for intent in intents:
                self._after_commit(intent)

    async def __call__(self, intent: Intent) -> None:
        handler = self._handlers.get(intent.operation)
        run = self._batch_handlers.get(intent.operation)
        if handler is None and run is not None:

            async def handler(session: AsyncSession, payload: Any) -> None:
                await run(session, [payload])

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
        self._committed([intent])
