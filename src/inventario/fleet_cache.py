"""Cache coherence across replicas: invalidations that could not reach Redis are shared
through the database, and every replica deletes them before it reads Redis again.

Each replica has its own coherence journal (``VAR_DIR/coherence.db``): a key that a
write made stale while Redis was away is deleted when *that* replica reconciles. Other
replicas, on the same Redis, know nothing of it and would serve the old cached value
in between. :class:`SharedInvalidations` closes that gap:

* **Recording, in the write's transaction.** Every write applied (directly or by the
  outbox's replay) adds a row per cache key it makes stale to the
  ``cache_invalidations`` table *in its own transaction* (:func:`mark_stale_sync`): the
  row commits with the write, so no crash between the commit and the ``DEL`` can leave
  a stale entry unrecorded. Once the ``DEL`` is sent the row is deleted in the
  background (:meth:`SharedInvalidations.settled`, batched); when it cannot be sent
  (Redis unreachable, its breaker open) the row stays, and the replica stops reading
  the cache until the table is flushed. A key invalidated outside such a transaction is
  recorded on its own (:meth:`SharedInvalidations.record`).
* **The gate.** A replica reads (and fills) the cache only while it is *synced*: it
  has emptied the shared table since it last saw Redis go down. It stops being synced
  at start, when its Redis breaker leaves ``CLOSED`` (the replica's own judgement that
  Redis is down) and when it records a key itself. One failed call (a timeout on a
  loaded host) only starts a flush: stopping cached reads on every such failure would
  stop them for the whole of a database outage, when they are the only reads left.
* **Flushing.** While not synced, on every heartbeat and after a failed Redis call, the
  replica takes the table's keys, deletes them in Redis, removes the rows it deleted,
  and is synced once every row up to the highest id it saw when it started is gone and
  Redis was not seen down meanwhile (rows of writes committing meanwhile, whose own
  ``DEL`` is on its way, do not hold it: such a row is like one recorded just after
  the flush, found by the next heartbeat's). A replica
  whose breaker stayed closed (it made few Redis calls during the outage, or only
  another replica lost Redis) finds the rows on its next heartbeat: that bounds its
  stale window to one heartbeat.
* The database down while a replica is not synced (it starts, or Redis comes back):
  the table cannot be read, so its cached reads stay off (reads need the database, and
  fail with it) until both are back.

Used for PostgreSQL (several processes, several hosts); the single-process SQLite
default needs only the local journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Float, Integer, String, Table, delete, func, insert, select
from sqlalchemy.engine import Connection

from brownout import State, StateChange
from brownout.redis import AsyncRedisAdapter
from brownout.sql import AsyncDatabase
from inventario.background import BackgroundJob, on_heartbeat
from inventario.db import metadata

__all__ = ["FLUSH_BATCH", "SharedInvalidations", "cache_invalidations", "mark_stale_sync"]

logger = logging.getLogger("inventario.cache")

#: Keys deleted per ``DEL`` (and rows per ``DELETE``) while flushing.
FLUSH_BATCH = 500

cache_invalidations = Table(
    "cache_invalidations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),
    Column("recorded_at", Float, nullable=False),
)


def mark_stale_sync(conn: Connection, keys: Sequence[str]) -> list[int]:
    """In a write's transaction: one ``cache_invalidations`` row per cache key it makes
    stale, committed (or rolled back) with it; the rows' ids, in the order of ``keys``."""
    if not keys:
        return []
    now = time.time()
    rows = conn.execute(
        insert(cache_invalidations).returning(
            cache_invalidations.c.id, sort_by_parameter_order=True
        ),
        [{"key": key, "recorded_at": now} for key in keys],
    )
    return [int(id_) for (id_,) in rows]


class SharedInvalidations:
    """The fleet-wide record of cache keys to delete, and this replica's gate on it."""

    def __init__(self, db: AsyncDatabase, redis: AsyncRedisAdapter) -> None:
        self.db = db
        self.redis = redis
        self._synced = False
        self._failures = 0  # Redis failures seen: a flush that overlapped one proves nothing
        self._flushing = BackgroundJob(self.flush, logger, "cache coherence: shared flush")
        self._unsubscribe: list[Any] = []
        self.flushes = 0
        self.flushed_keys = 0
        self.recorded = 0
        self._settled: set[int] = set()  # rows whose DEL was sent: to delete
        self._cleaning: asyncio.Task[None] | None = None
        self.cleaned = 0

    # -- the gate ----------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True while cached reads are safe here: the shared table was emptied after the
        last Redis failure this replica saw."""
        return self._synced

    def saw_failure(self) -> None:
        """A Redis call of this replica failed: the shared table must be emptied (here or
        anywhere) before this replica reads Redis again."""
        self._failures += 1
        self._synced = False

    def reads_allowed(self) -> bool:
        if not self._synced:
            self.schedule()
        return self._synced

    # -- recording ---------------------------------------------------------------------

    async def record(self, *keys: str) -> None:
        """Write ``keys`` to the shared table (their ``DEL`` could not be sent)."""
        if not keys:
            return
        self.saw_failure()
        now = time.time()
        async with self.db.session() as s:
            await s.execute(
                insert(cache_invalidations), [{"key": k, "recorded_at": now} for k in keys]
            )
        self.recorded += len(keys)

    def settled(self, row: int, *, sent: bool) -> None:
        """The ``DEL`` for the key of ``row`` (written by :func:`mark_stale_sync` in the
        write's transaction) was sent: the row is deleted soon, in a batch; or it was not:
        the row stays for a flush, and this replica is not synced until then."""
        if not sent:
            self.saw_failure()
            self.recorded += 1  # left in the table for the fleet, as record() does
            return
        self._settled.add(row)
        if self._cleaning is not None and not self._cleaning.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # left for a flush
        self._cleaning = loop.create_task(self._clean())

    async def _clean(self) -> None:
        """Delete the settled rows (a failure leaves them to a flush: a second ``DEL``
        of a key is harmless)."""
        while self._settled:
            rows = [self._settled.pop() for _ in range(min(FLUSH_BATCH, len(self._settled)))]
            try:
                async with self.db.session() as s:
                    await s.execute(
                        delete(cache_invalidations).where(cache_invalidations.c.id.in_(rows))
                    )
            except Exception as exc:
                logger.debug("cache coherence: settled rows left to a flush: %s", exc)
                return
            self.cleaned += len(rows)

    # -- flushing ----------------------------------------------------------------------

    async def flush(self) -> int:
        """Delete every key of the shared table in Redis and remove its rows; synced when
        the table was emptied without a Redis failure meanwhile. Returns the keys deleted.
        Raises what the database or Redis raised (then it stays unsynced)."""
        failures = self._failures
        deleted = 0
        async with self.db.session() as s:
            ceiling = (await s.execute(select(func.max(cache_invalidations.c.id)))).scalar()
        while ceiling is not None:
            async with self.db.session() as s:
                rows = (
                    await s.execute(
                        select(cache_invalidations.c.id, cache_invalidations.c.key)
                        .where(cache_invalidations.c.id <= ceiling)
                        .order_by(cache_invalidations.c.id)
                        .limit(FLUSH_BATCH)
                    )
                ).all()
            if not rows:
                break
            await self.redis.delete(*{key for _, key in rows})
            async with self.db.session() as s:
                await s.execute(
                    delete(cache_invalidations).where(
                        cache_invalidations.c.id.in_([id_ for id_, _ in rows])
                    )
                )
            deleted += len(rows)
        self.flushes += 1
        self.flushed_keys += deleted
        if self._failures == failures:
            self._synced = True
        if deleted:
            logger.info("cache coherence: deleted %d key(s) invalidated across the fleet", deleted)
        return deleted

    def schedule(self) -> None:
        """Start one flush in the background (unless one runs, or Redis's breaker is open)."""
        if self._flushing.running:
            return
        if self.redis.breaker.state in (State.OPEN, State.FORCED_OPEN):
            return
        self._flushing.start()  # off the loop: the next trigger on the loop flushes

    def watch(self, manager: Any) -> None:
        """Unsynced when Redis's breaker leaves ``CLOSED``; flush when it lets calls through
        again, and on every heartbeat evaluation of ``manager`` (rows another replica
        recorded are found there even by a replica that never saw Redis fail)."""

        def on_change(event: StateChange) -> None:
            if event.from_state is State.CLOSED:
                self.saw_failure()
            if event.to_state in (State.CLOSED, State.HALF_OPEN):
                self.schedule()

        self._unsubscribe.append(self.redis.breaker.add_listener(on_state_change=on_change))

        undo = on_heartbeat(manager, self.schedule)
        if undo is not None:
            self._unsubscribe.append(undo)

    async def aclose(self) -> None:
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()
        await self._flushing.cancel()
        cleaning, self._cleaning = self._cleaning, None
        if cleaning is not None and not cleaning.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(cleaning, 2.0)  # else a flush deletes them

    def stats(self) -> dict[str, Any]:
        return {
            "synced": self._synced,
            "recorded": self.recorded,
            "flushes": self.flushes,
            "flushed_keys": self.flushed_keys,
            "settled_rows_deleted": self.cleaned,
        }
