"""A replica's own copy of the products, read when the database is down and the cache misses.

With the database down a replica still answers from Redis, but a product that is not
in Redis needs the database: without this it is a 503 from a replica the load balancer
has ready (marking the replica not ready would take the whole fleet out, and writes
must still be queued). :class:`ReadSnapshot` keeps the products in ``VAR_DIR/snapshot.db``
(SQLite, shared by the workers of one service) and answers those reads from it, saying
how old the answer is.

* **Refreshed while the database is up**: on every heartbeat, the rows whose
  ``updated_at`` is at or after the newest one seen minus :data:`LAG` seconds (writes
  committed late, or by a replica whose clock is behind, are read again), paged by
  ``(updated_at, sku)``; everything on the first refresh. One worker refreshes at a
  time (``snapshot.lease``). ``as_of`` is when the last complete refresh started: the
  database's state then.
* **Every write this replica applies** (201/200) puts its result in at once, and
  **every write it queues** (202) is noted with its key: the stock and fields served
  are the snapshot's row with this replica's queued stock movements and product updates
  applied in order, as the replay will apply them (a movement the replay would refuse,
  stock below 0 or above the maximum, is skipped). A queued write stops counting once
  the row was read again after it was applied (the outbox's replay notes when), or once
  the outbox gave up on it (dead letter).
* **Served** only when a read needs the database and cannot have it: ``X-Cache:
  snapshot``, ``X-Stale-As-Of`` (an HTTP date), ``Age`` (seconds) and a ``stale``
  object in the body (``as_of``, ``age_seconds``, ``queued_writes``, ``reason``).
* What it cannot answer truthfully: a product it has never seen (created on another
  replica since the last refresh, or queued here and not applied yet): that read stays
  a 503 with ``Retry-After`` (a 404 could be false). Queued invoice applications are not
  reflected (the products they move are known once applied). Writes of *other* replicas
  after ``as_of`` are not in it: that is what ``as_of`` says.

Used with PostgreSQL (replicas on a database across the network); the single-process
SQLite default reads its database from the same disk and needs none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from brownout import State
from brownout.sql import AsyncDatabase
from inventario import store
from inventario.background import BackgroundJob, on_heartbeat
from inventario.db import products
from inventario.schemas import MAX_STOCK

__all__ = ["LAG", "PAGE", "ReadSnapshot", "SnapshotRead"]

logger = logging.getLogger("inventario.snapshot")

#: Seconds before the newest ``updated_at`` seen from which a refresh reads rows again:
#: a transaction that stamped its rows earlier but committed after the last refresh,
#: or a replica whose clock is behind by less than this, is still picked up.
LAG = 30.0

#: Rows read per query while refreshing.
PAGE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    doc TEXT NOT NULL,          -- the product as GET /products/{sku} answers it
    updated_at REAL NOT NULL,   -- the database's updated_at
    read_at REAL NOT NULL       -- when this value was known to be the database's
);
CREATE TABLE IF NOT EXISTS queued (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,   -- the write's Idempotency-Key (its outbox key)
    sku TEXT NOT NULL,
    operation TEXT NOT NULL,
    data TEXT NOT NULL,
    queued_at REAL NOT NULL,
    applied_at REAL             -- set once the replay committed it
);
CREATE INDEX IF NOT EXISTS queued_sku ON queued (sku, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class SnapshotRead:
    """A product as the snapshot answers it: ``doc`` (with the ``stale`` object) and
    the headers that say how old it is."""

    def __init__(self, doc: dict[str, Any], as_of: float, queued: int, reason: str) -> None:
        self.as_of = as_of
        self.age = max(0.0, time.time() - as_of)
        self.doc = {
            **doc,
            "stale": {
                "as_of": as_of,
                "age_seconds": round(self.age, 3),
                "queued_writes": queued,
                "reason": reason,
            },
        }

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-Cache": "snapshot",
            "X-Stale-As-Of": formatdate(self.as_of, usegmt=True),
            "Age": str(int(self.age)),
        }


def _money(value: Any) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def _replay(doc: dict[str, Any], operation: str, data: Mapping[str, Any]) -> int:
    """Apply one queued write to ``doc`` as the replay would; 1 if it changed it."""
    if operation == "stock.move":
        stock, quantity = int(doc["stock"]), int(data["quantity"])
        after = {"in": stock + quantity, "out": stock - quantity, "adjust": quantity}.get(
            str(data["kind"])
        )
        if after is None or not 0 <= after <= MAX_STOCK:
            return 0  # the replay refuses it (a dead letter): nothing moves
        doc["stock"] = after
    elif operation == "product.update":
        for name, value in dict(data.get("patch") or {}).items():
            if value is None or name not in doc:
                continue
            doc[name] = _money(value) if name in ("price", "cost") else value
    else:
        return 0
    doc["low_stock"] = int(doc["stock"]) <= int(doc["min_stock"])
    return 1


def _changed_sync(
    conn: Connection, since: float, after: tuple[float, str] | None, limit: int
) -> list[dict[str, Any]]:
    """Products with ``updated_at >= since``, in ``(updated_at, sku)`` order, after ``after``."""
    query = select(products).where(products.c.updated_at >= since)
    if after is not None:
        at, sku = after
        query = query.where(
            or_(
                products.c.updated_at > at,
                and_(products.c.updated_at == at, products.c.sku > sku),
            )
        )
    rows = conn.execute(
        query.order_by(products.c.updated_at, products.c.sku).limit(limit)
    ).mappings()
    return [store._product(row) for row in rows]


def _jsonable(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in doc.items()}


class ReadSnapshot:
    """``VAR_DIR/snapshot.db``: see the module's docstring."""

    def __init__(
        self,
        path: Path,
        db: AsyncDatabase,
        *,
        outbox: Any = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.path = path
        self.db = db
        self.outbox = outbox  # status(key): dead letters stop counting
        self.ready = ready  # the schema exists: before it, there is nothing to read
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # a copy: losing the tail is fine
        self._conn.executescript(_SCHEMA)
        self._lease = path.with_name(path.name + ".lease")
        self._refreshing = BackgroundJob(self.refresh, logger, "read snapshot: refresh")
        self._notes: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Any] = []
        self.refreshes = 0
        self.served = 0

    # -- the SQLite side (in a thread) ---------------------------------------------------

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(sql, rows)

    def _meta(self, name: str) -> float | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else float(row[0])

    def _meta_locked(self, name: str) -> float | None:
        with self._lock:
            return self._meta(name)

    def _upsert_sync(self, docs: list[dict[str, Any]], read_at: float) -> None:
        self._write(
            "INSERT INTO products (sku, doc, updated_at, read_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sku) DO UPDATE SET doc = excluded.doc, "
            "updated_at = excluded.updated_at, read_at = excluded.read_at "
            "WHERE excluded.read_at >= products.read_at",
            [(d["sku"], json.dumps(_jsonable(d)), float(d["updated_at"]), read_at) for d in docs],
        )

    def _read_sync(self, sku: str) -> tuple[dict[str, Any], float, int] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT doc, read_at FROM products WHERE sku = ?", (sku,)
            ).fetchone()
            if row is None:
                return None
            doc, read_at = json.loads(row[0]), float(row[1])
            queued = self._conn.execute(
                "SELECT operation, data FROM queued WHERE sku = ? "
                "AND (applied_at IS NULL OR applied_at > ?) ORDER BY seq",
                (sku, read_at),
            ).fetchall()
            as_of = max(read_at, self._meta("as_of") or 0.0)
        counted = sum(_replay(doc, op, json.loads(data)) for op, data in queued)
        return doc, as_of, counted

    # -- what the service tells it -------------------------------------------------------

    def applied(self, operation: str, result: Mapping[str, Any]) -> None:
        """A write this replica applied now (its result): put it in, in the background."""
        now = time.time()
        if operation in ("product.create", "product.update") and "sku" in result:
            self._note(self._upsert_sync, [dict(result)], now)
        elif operation == "stock.move" and "stock_after" in result:
            self._note(self._stock_sync, str(result["sku"]), int(result["stock_after"]), now)

    def _stock_sync(self, sku: str, stock: int, now: float) -> None:
        with self._lock, self._conn:
            row = self._conn.execute(
                "SELECT doc, read_at FROM products WHERE sku = ?", (sku,)
            ).fetchone()
            if row is None or float(row[1]) > now:
                return  # unknown here (the next refresh reads it) or newer already
            doc = json.loads(row[0])
            doc["stock"] = stock
            doc["low_stock"] = stock <= int(doc["min_stock"])
            doc["updated_at"] = now
            self._conn.execute(
                "UPDATE products SET doc = ?, read_at = ? WHERE sku = ?",
                (json.dumps(doc), now, sku),
            )

    async def queued(self, key: str, operation: str, data: Mapping[str, Any], sku: str) -> None:
        """A write this replica queued (202): counted in what is served for ``sku``."""
        row = (key, sku, operation, json.dumps(dict(data), default=str), time.time())
        try:
            await asyncio.to_thread(
                self._write,
                "INSERT OR IGNORE INTO queued (key, sku, operation, data, queued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [row],
            )
        except sqlite3.Error as exc:  # the write is queued: the snapshot is only a view
            logger.warning("read snapshot: could not note a queued write: %s", exc)

    def replayed(self, key: str) -> None:
        """The outbox's replay committed ``key`` (``SqlApplier(after_commit=...)``)."""
        self._note(
            self._write,
            "UPDATE queued SET applied_at = ? WHERE key = ? AND applied_at IS NULL",
            [(time.time(), key)],
        )

    def _note(self, fn: Any, *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with contextlib.suppress(sqlite3.Error):
                fn(*args)
            return
        task = loop.create_task(self._in_thread(fn, *args))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    @staticmethod
    async def _in_thread(fn: Any, *args: Any) -> None:
        try:
            await asyncio.to_thread(fn, *args)
        except sqlite3.Error as exc:
            logger.warning("read snapshot: could not record a write: %s", exc)

    # -- serving -------------------------------------------------------------------------

    async def read(self, sku: str, reason: str) -> SnapshotRead | None:
        """``sku`` as of the last refresh with this replica's queued writes, or ``None``
        when the snapshot has never seen it."""
        try:
            found = await asyncio.to_thread(self._read_sync, sku)
        except sqlite3.Error as exc:
            logger.warning("read snapshot: read failed: %s", exc)
            return None
        if found is None:
            return None
        doc, as_of, queued = found
        self.served += 1
        return SnapshotRead(doc, as_of, queued, reason)

    # -- refreshing ----------------------------------------------------------------------

    async def refresh(self) -> int:
        """Read what changed in the database since the last refresh (everything the
        first time) into the snapshot; the rows read. Skipped (0) while another worker
        of this service refreshes. Raises what the database raised."""
        fd = os.open(self._lease, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0
            return await self._refresh()
        finally:
            os.close(fd)

    async def _refresh(self) -> int:
        started = time.time()
        newest = await asyncio.to_thread(self._meta_locked, "newest")
        since = newest - LAG if newest is not None else float("-inf")
        after: tuple[float, str] | None = None
        read = 0
        while True:
            rows = await self.db.run_read(_changed_sync, since, after, PAGE)
            if rows:
                await asyncio.to_thread(self._upsert_sync, rows, started)
                read += len(rows)
                after = (float(rows[-1]["updated_at"]), str(rows[-1]["sku"]))
            if len(rows) < PAGE:
                break
        await asyncio.to_thread(self._settle_sync, started, after)
        self.refreshes += 1
        return read

    def _settle_sync(self, started: float, after: tuple[float, str] | None) -> None:
        """After a complete refresh: ``as_of``, the newest ``updated_at``, and the queued
        writes that no longer count (applied and read again; given up by the outbox)."""
        with self._lock:
            pending = self._conn.execute(
                "SELECT key FROM queued WHERE applied_at IS NULL"
            ).fetchall()
        gone: list[tuple[str]] = []
        applied: list[tuple[float, str]] = []
        if self.outbox is not None:
            for (key,) in pending:
                status = self.outbox.status(key)
                if status in ("dead", "discarded", None):
                    gone.append((key,))
                elif status == "applied":  # its replay's note was lost (a worker killed)
                    applied.append((time.time(), key))
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM queued WHERE key = ?", gone)
            self._conn.executemany(
                "UPDATE queued SET applied_at = ? WHERE key = ? AND applied_at IS NULL", applied
            )
            self._conn.execute(
                "DELETE FROM queued WHERE applied_at IS NOT NULL AND applied_at < "
                "(SELECT read_at FROM products WHERE products.sku = queued.sku)"
            )
            values = [("as_of", started)]
            if after is not None:
                values.append(("newest", max(after[0], self._meta("newest") or after[0])))
            self._conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                values,
            )

    def schedule(self) -> None:
        """Start one refresh in the background (unless one runs, or the database's
        breaker does not let calls through)."""
        if self._refreshing.running:
            return
        if self.db.breaker.state is not State.CLOSED or not self.ready():
            return
        self._refreshing.start()

    def watch(self, manager: Any) -> None:
        """Refresh on every heartbeat evaluation of ``manager``."""

        undo = on_heartbeat(manager, self.schedule)
        if undo is not None:
            self._unsubscribe.append(undo)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            count = self._conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]
            queued = self._conn.execute("SELECT COUNT(*) FROM queued").fetchone()[0]
            as_of = self._meta("as_of")
        return {
            "products": int(count),
            "queued_writes": int(queued),
            "as_of": as_of,
            "refreshes": self.refreshes,
            "served": self.served,
        }

    async def aclose(self) -> None:
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()
        await self._refreshing.cancel()
        tasks = [t for t in self._notes if t is not None and not t.done()]
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        with self._lock:
            self._conn.close()
