"""The cache coherence journal (:class:`CacheCoherence`); see the package docstring."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from brownout import _sqlite
from brownout._aio import retrieve
from brownout._breaker import CircuitBreaker, kill_switch_active
from brownout._errors import CoherenceError
from brownout._events import StateChange
from brownout._journal_base import JournalListeners, orphaned_log_message
from brownout._lease import FileLease
from brownout._outage import default_is_outage
from brownout._redact import redact
from brownout._state import State

__all__ = [
    "CacheCoherence",
    "CoherenceError",
    "ReconcileReport",
]

logger = logging.getLogger("brownout.coherence")

Key = str | bytes
_Rows = list[tuple[bytes, int]]  # (key, seq) as recorded

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    key       BLOB PRIMARY KEY,
    seq       INTEGER NOT NULL,
    recorded  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_seq ON pending (seq);
CREATE TABLE IF NOT EXISTS counters (
    name      TEXT PRIMARY KEY,
    value     INTEGER NOT NULL
);
"""

_PENDING_COLUMNS = ("key", "seq", "recorded")

_HOLD_REASON = "invalidating cache keys written while Redis was unavailable"
_OVERFLOW_REASON = (
    "coherence journal overflowed: flush the cache (FLUSHDB), then call clear_overflow()"
)


class _Manager(Protocol):
    def hold(self, component: str, reason: str) -> None: ...

    def release(self, component: str) -> None: ...


@dataclass
class ReconcileReport:
    """What one :meth:`CacheCoherence.reconcile` did."""

    deleted: int = 0  # keys deleted from Redis (and dropped from the journal)
    remaining: int = 0  # keys still pending afterwards
    stopped: str | None = None  # why it stopped early (Redis failing), redacted
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_bytes(key: object, position: int) -> bytes:
    """A cache key as the journal stores it: bytes as given, str as UTF-8 (redis-py's default)."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"CacheCoherence: cache key #{position} {key!r} is not valid UTF-8 text ({exc})"
            ) from None
    raise TypeError(
        f"CacheCoherence: cache keys must be str or bytes, key #{position} is "
        f"{type(key).__name__} ({key!r:.60})"
    )


def _check_keys(keys: Sequence[object]) -> list[bytes]:
    return [_as_bytes(k, i) for i, k in enumerate(keys)]


class CacheCoherence(JournalListeners):
    """Records cache invalidations Redis missed; deletes them before cached reads resume.

    ``redis`` is the cache's adapter (sync or async: its ``delete`` decides);
    ``journal_path`` a local SQLite file (WAL, ``synchronous=FULL``: a
    recorded key is on disk before :meth:`invalidate` returns). ``manager``
    (optional) is held with ``manager.hold(component, ...)`` while keys are
    pending and released once they are all deleted; ``component`` must be one
    of its components. ``batch_size`` keys go in one DEL; at most
    ``max_keys`` keys are kept (beyond, the journal *overflows*: cached reads
    stay off until an operator flushes the cache and calls
    :meth:`clear_overflow`).

    ``max_wait`` (seconds, default ``None``: as long as the client takes) bounds
    how long :meth:`ainvalidate` waits for Redis to answer the DEL: a Redis that
    is slow but up would otherwise hold every write for its latency. Past it the
    keys are recorded (durably, as for a Redis that is down) and ``ainvalidate``
    returns False; the DEL goes on in the background (at most
    :attr:`max_background_deletes` at once, beyond that it is cancelled) and,
    once Redis has done it, drops the keys from the journal again unless they
    were recorded anew meanwhile. Until then cached reads stay off, as for any
    pending key. Under the kill switch (``BROWNOUT_DISABLED=1`` when the object is
    created, as for breakers) ``max_wait`` is ignored (:attr:`max_wait` is
    ``None``, :attr:`disabled` True): a write waits for its DEL as long as the
    client takes, as without brownout. What keeps the cache correct stays: the
    keys of a DEL that *failed* are recorded and deleted before cached reads resume.

    Use :meth:`invalidate` / :meth:`ainvalidate` after every database write in
    place of deleting cache keys yourself, read through the cache only while
    :meth:`reads_allowed` (and the manager's cache features) say so, and call
    :meth:`watch` with the Redis adapter's breaker. One instance per journal
    file (the pending count is kept in memory: :meth:`reads_allowed` does no
    I/O), or, with ``shared=True``, one per process of those sharing the file
    (the workers of one service): each records into the same journal,
    :meth:`reads_allowed` reads whether another process recorded or deleted keys
    since (``PRAGMA data_version``: a read of SQLite's shared memory, no disk),
    and reconciles take turns under an exclusive lease (``<journal>.lease``, an
    ``flock``): a key is deleted from Redis by one of them.
    """

    #: ``add_listener(fn)`` -> unsubscribe; ``fn(JournalEvent)`` of kind ``recorded``
    #: (keys, pending) and ``reconciled`` (deleted, remaining, seconds, stopped): metrics.
    _source = "coherence"

    def __init__(
        self,
        redis: Any,
        journal_path: str | os.PathLike[str],
        *,
        manager: _Manager | None = None,
        component: str = "cache",
        batch_size: int = 500,
        max_keys: int = 1_000_000,
        is_outage: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
        max_wait: float | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_keys", max_keys)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CacheCoherence.{name} must be an int >= 1, got {value!r}")
        if max_wait is not None and (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, int | float)
            or not 0 <= max_wait < float("inf")
        ):
            raise ValueError(
                f"CacheCoherence.max_wait must be None or a number of seconds >= 0, "
                f"got {max_wait!r}"
            )
        delete = getattr(redis, "delete", None)
        if not callable(delete):
            raise TypeError(
                "CacheCoherence: redis must have a delete(*keys) method, "
                f"got {type(redis).__name__}"
            )
        if manager is not None:
            for method in ("hold", "release"):
                if not callable(getattr(manager, method, None)):
                    raise TypeError(f"CacheCoherence: manager has no {method}() method")
            lookup = getattr(manager, "component", None)
            if callable(lookup):
                try:
                    lookup(component)
                except KeyError:
                    raise ValueError(
                        f"CacheCoherence: the manager has no component {component!r} to hold"
                    ) from None
        self.redis = redis
        self.path = Path(journal_path)
        self.manager = manager
        self.component = component
        self.batch_size = batch_size
        self.max_keys = max_keys
        #: built under the kill switch: ``max_wait`` is not applied (a write waits for its DEL)
        self.disabled = kill_switch_active()
        self.max_wait = None if self.disabled else max_wait
        self._slow_until = 0.0  # a DEL was late: ainvalidate does not wait until then
        self._is_outage = is_outage or default_is_outage(redis)
        self._async = inspect.iscoroutinefunction(delete)
        self._clock = clock
        self._lock = threading.RLock()  # the connection, the counts, the volatile keys
        self._hold_lock = threading.Lock()
        self._reconcile_lock = threading.Lock()
        self._areconcile_lock: asyncio.Lock | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._breaker: CircuitBreaker | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._futures: set[concurrent.futures.Future[None]] = set()
        self._threads: set[threading.Thread] = set()
        # DELs past max_wait, still on their way, and what follows each (see ainvalidate)
        self._late: set[asyncio.Future[Any]] = set()
        # their recordings and drops, committed together (one transaction, one fsync, for
        # every write that was late meanwhile): (keys, their future) and (key, seq) rows
        self._to_record: list[tuple[list[bytes], asyncio.Future[_Rows]]] = []
        self._to_drop: _Rows = []
        self._committer: asyncio.Task[None] | None = None
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held = False
        self._closed = False
        # keys whose recording failed (disk full, I/O error): deleted by the next
        # reconcile of this process, lost if it dies first (the error said so)
        self._volatile: dict[bytes, tuple[int, float]] = {}  # key -> (seq, first recorded)
        self._volatile_seq = 0
        self._volatile_overflow = False
        self.last_report: ReconcileReport | None = None
        self.shared = shared
        self._version = -1  # PRAGMA data_version when the counts were last read (shared)
        self._db = self._open()
        try:
            self._journaled = int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
            self._overflowed = bool(self._counter("overflowed"))
            if shared:
                self._version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            self._db.close()
            raise CoherenceError(
                f"coherence journal {self.path} could not be read ({exc}); it was left as it is"
            ) from exc
        if self._journaled or self._overflowed:
            logger.warning(
                "coherence: journal %s holds %d keys from before%s: cached reads stay off "
                "until they are deleted from Redis",
                self.path,
                self._journaled,
                " and is overflowed" if self._overflowed else "",
            )
        self._lease = FileLease(self.path.with_name(self.path.name + ".lease")) if shared else None
        self._sync_hold()  # keys left by a previous process: hold at once

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CoherenceError(
                f"coherence journal {self.path}: cannot create its directory ({exc})"
            ) from exc
        self._refuse_orphaned_log()
        db: sqlite3.Connection | None = None
        try:
            db = _sqlite.connect(self.path)
            # look before changing anything: a foreign database is refused untouched
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(pending)"))
            integrity = _sqlite.integrity_problem(db)
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise CoherenceError(
                f"coherence journal {self.path} cannot be opened as a SQLite database ({exc}); "
                "it was left as it is. The keys it recorded may be stale in Redis: flush the "
                "cache (FLUSHDB) before moving the file aside"
            ) from exc
        problem = None
        if integrity is not None:
            problem = (
                f"failed its integrity check ({integrity}); it was left as it is. Flush the cache "
                "(FLUSHDB) before moving the file aside"
            )
        elif tables and (not tables <= {"pending", "counters"} or columns != _PENDING_COLUMNS):
            problem = (
                f"is a SQLite database but not a coherence journal (tables {sorted(tables)}, "
                f"'pending' columns {columns}); it was left as it is"
            )
        if problem is not None:
            db.close()
            raise CoherenceError(f"coherence journal {self.path} {problem}")
        try:
            _sqlite.make_durable(db, _SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            raise CoherenceError(
                f"coherence journal {self.path} could not be set up ({exc}): is the disk full "
                "or the directory read-only?"
            ) from exc
        return db

    def _refuse_orphaned_log(self) -> None:
        """Refuse a missing or empty journal next to a write-ahead log that holds frames
        (see :func:`brownout._sqlite.orphaned_log`): the keys recorded in the log would be
        lost, and their stale values served."""
        message = orphaned_log_message(
            self.path,
            "coherence journal",
            "the keys recorded in it (their stale values would be served)",
            "Restore the journal next to its -wal, or flush the cache (FLUSHDB) and move both "
            "aside",
        )
        if message is not None:
            raise CoherenceError(message)

    # ------------------------------------------------------------------ plumbing

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise CoherenceError(f"coherence journal {self.path}: {what}: it is closed")
            with _sqlite.write(
                self._db,
                lambda exc: CoherenceError(
                    f"coherence journal {self.path}: {what} failed: {_sqlite.failure_detail(exc)}"
                ),
            ) as db:
                yield db

    def _sync_hold(self) -> None:
        """Hold the component while reads are not allowed, release it once they are.

        The state is read under the hold lock after the change was committed:
        whoever calls last sees the latest state, so a release can never win
        over a concurrent record. The manager is called only on a change (its
        evaluations are not multiplied by the number of writes).
        """
        manager = self.manager
        if manager is None:
            return
        with self._hold_lock:
            allowed = self._allowed_now()
            if not allowed and not self._held:
                manager.hold(self.component, _OVERFLOW_REASON if self.overflowed else _HOLD_REASON)
                self._held = True
            elif allowed and self._held:
                manager.release(self.component)
                self._held = False

    def _refresh(self, *, blocking: bool = True) -> bool | None:
        """(Shared.) Read the counts again if another process changed the journal since;
        whether they changed. A read error keeps the last counts (the next call retries).

        Not ``blocking``: ``None`` at once if this process is using the journal (a
        record or a reconcile may be waiting for another process's write lock: the
        event loop must not wait with it)."""
        if not self.shared:
            return False
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            if self._closed:
                return False
            try:
                version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
                if version == self._version:
                    return False
                journaled = int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
                overflowed = bool(self._counter("overflowed"))
            except sqlite3.Error:
                logger.warning("coherence: reading %s failed", self.path, exc_info=True)
                return False
            changed = (journaled, overflowed) != (self._journaled, self._overflowed)
            self._version, self._journaled, self._overflowed = version, journaled, overflowed
        finally:
            self._lock.release()
        return changed

    # ------------------------------------------------------------------ state

    def pending(self) -> int:
        """How many keys are recorded (or kept in memory) and not yet deleted from Redis."""
        return self._journaled + len(self._volatile)

    def pending_keys(self, limit: int = 1000) -> list[bytes]:
        """The pending keys (as bytes): those kept in memory, then the journal's, oldest first."""
        with self._lock:
            keys = list(self._volatile)[:limit]
            if len(keys) < limit and not self._closed:
                rows = self._db.execute(
                    "SELECT key FROM pending ORDER BY seq LIMIT ?", (limit - len(keys),)
                ).fetchall()
                keys += [bytes(r[0]) for r in rows]
        return keys

    @property
    def overflowed(self) -> bool:
        """More keys had to be recorded than ``max_keys``: see :meth:`clear_overflow`."""
        return self._overflowed or self._volatile_overflow

    def reads_allowed(self) -> bool:
        """True when no invalidation is pending and the journal never overflowed: cached
        reads are coherent. No I/O (safe on every request); shared: what every process
        recorded, read from SQLite's shared memory when another process wrote."""
        if self.shared:
            changed = self._refresh(blocking=False)
            if changed is None:
                return False  # this process is recording or deleting keys right now
            if changed:
                # another process recorded keys or deleted them all: this process's hold
                # on the component follows (else it stays "recovering" with nothing left
                # to reconcile, once a request has seen the change before the heartbeat)
                self._sync_hold()
        return self._allowed()

    def _allowed_now(self) -> bool:
        """:meth:`reads_allowed` without syncing the hold (the hold's own reading)."""
        if self.shared and self._refresh(blocking=False) is None:
            return False
        return self._allowed()

    def _allowed(self) -> bool:
        return not (
            self._journaled or self._volatile or self._overflowed or self._volatile_overflow
        )

    @property
    def coherent(self) -> bool:
        """Same as :meth:`reads_allowed`."""
        return self.reads_allowed()

    def stats(self) -> dict[str, Any]:
        """pending, unjournaled, overflowed, reads_allowed, oldest_pending_age_s,
        recorded_total, reconciled_total, last_reconcile; max_wait_s (``None``: a write
        waits for its DEL) and disabled (built under the kill switch)."""
        with self._lock:
            if self._closed:
                oldest, counters = None, {}
            else:
                oldest = self._db.execute("SELECT MIN(recorded) FROM pending").fetchone()[0]
                counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            volatile_oldest = min((t for _, t in self._volatile.values()), default=None)
        if volatile_oldest is not None:
            oldest = volatile_oldest if oldest is None else min(oldest, volatile_oldest)
        report = self.last_report
        return {
            "pending": self.pending(),
            "unjournaled": len(self._volatile),
            "overflowed": self.overflowed,
            "reads_allowed": self.reads_allowed(),
            "oldest_pending_age_s": None
            if oldest is None
            else round(max(0.0, self._clock() - oldest), 3),
            "recorded_total": int(counters.get("recorded", 0)),
            "reconciled_total": int(counters.get("reconciled", 0)),
            "last_reconcile": None if report is None else report.to_dict(),
            "max_wait_s": self.max_wait,
            "disabled": self.disabled,
        }

    # ------------------------------------------------------------------ recording

    def record(self, *keys: Key) -> int:
        """Durably record ``keys`` as needing deletion; returns how many are pending.

        :meth:`invalidate` calls this when Redis cannot take the DEL; call it
        yourself to mark keys stale without trying Redis. Raises
        :class:`CoherenceError` when the journal cannot be written (the keys
        are then kept in memory) or would hold more than ``max_keys`` (the
        journal is marked overflowed: cached reads stay off until
        :meth:`clear_overflow`). ``TypeError``/``ValueError`` for a key that is
        not str/bytes or not UTF-8.
        """
        return self._record(_check_keys(keys))

    def _record(self, raw: list[bytes]) -> int:
        self._record_rows(raw)
        return self.pending()

    def _record_rows(self, raw: list[bytes], *, hold: bool = True) -> _Rows:
        """:meth:`_record`; the (key, seq) rows written (what a later DEL may drop).

        Not ``hold``: the manager is not held for these keys (yet): a DEL past
        ``max_wait`` that is still on its way; :meth:`_late_done` holds it if that
        DEL does not delete them. Cached reads are off meanwhile all the same."""
        if not raw:
            return []
        rows: _Rows = []
        try:
            with self._lock:  # the count is set under the lock, once committed
                with self._tx("recording keys") as db:
                    seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM pending").fetchone()[0])
                    now = self._clock()
                    rows = [(key, seq + i) for i, key in enumerate(raw, start=1)]
                    db.executemany(
                        "INSERT INTO pending (key, seq, recorded) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET seq = excluded.seq",
                        [(key, n, now) for key, n in rows],
                    )
                    count = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
                    if count > self.max_keys:
                        raise _Overflow(count)
                    db.execute(
                        "INSERT INTO counters (name, value) VALUES ('recorded', ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (len(raw),),
                    )
                self._journaled = count
        except _Overflow as overflow:
            self._mark_overflow(overflow.count)
            self._sync_hold()
            raise CoherenceError(
                f"coherence journal {self.path} would hold {overflow.count} keys "
                f"(max_keys={self.max_keys}): the keys were not recorded and cached reads are "
                "off; flush the cache (FLUSHDB), then call clear_overflow()"
            ) from None
        except CoherenceError:
            self._keep_in_memory(raw)
            self._sync_hold()
            raise
        if hold:
            self._sync_hold()
        self._emit("recorded", keys=len(raw), pending=self.pending())
        return rows

    def _mark_overflow(self, count: int) -> None:
        logger.error(
            "coherence: journal %s overflowed (%d keys > max_keys=%d): cached reads stay off "
            "until the cache is flushed and clear_overflow() is called",
            self.path,
            count,
            self.max_keys,
        )
        try:
            with self._tx("marking the journal overflowed") as db:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('overflowed', 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = 1"
                )
            self._overflowed = True
        except CoherenceError:
            logger.exception("coherence: the overflow could not be recorded durably")
            self._volatile_overflow = True

    def _keep_in_memory(self, raw: list[bytes]) -> None:
        logger.error(
            "coherence: %d keys could not be recorded in %s; kept in memory until Redis takes "
            "their DEL (lost if this process dies first: then flush the cache)",
            len(raw),
            self.path,
        )
        now = self._clock()
        with self._lock:
            for key in raw:
                previous = self._volatile.get(key)
                if previous is None and len(self._volatile) >= self.max_keys:
                    self._volatile_overflow = True
                    break
                self._volatile_seq += 1
                self._volatile[key] = (self._volatile_seq, now if previous is None else previous[1])

    def clear_overflow(self) -> None:
        """After an operator flushed the cache: forget the overflow (and every pending key)."""
        with self._lock:
            with self._tx("clearing the overflow") as db:
                db.execute("DELETE FROM pending")
                db.execute("DELETE FROM counters WHERE name = 'overflowed'")
            self._journaled = 0
            self._overflowed = False
            self._volatile.clear()
            self._volatile_overflow = False
        logger.warning("coherence: overflow cleared by the operator (the cache was flushed)")
        self._sync_hold()

    def invalidate(self, *keys: Key) -> bool:
        """Delete ``keys`` from Redis now; if Redis is failing, record them durably.

        Returns True if Redis deleted them, False if they were recorded (to be
        deleted by :meth:`reconcile`). An error that does not count against
        Redis (e.g. an ACL forbidding DEL) is raised; so is a
        :class:`CoherenceError` if recording fails.
        """
        raw = _check_keys(keys)
        if not raw:
            return True
        if self._async:
            raise TypeError("CacheCoherence over an async adapter: await ainvalidate()")
        try:
            self.redis.delete(*keys)
            return True
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            reason = redact(f"{type(exc).__name__}: {exc}")
        self._record(raw)
        logger.info("coherence: recorded %d keys for later deletion (%s)", len(raw), reason)
        return False

    #: DELs past ``max_wait`` let run in the background at once; one more is cancelled
    #: (its keys are recorded: the reconcile deletes them).
    max_background_deletes = 256
    #: Seconds after a DEL past ``max_wait`` during which :meth:`ainvalidate` does not wait.
    slow_backoff = 1.0

    def record_ahead(self, *keys: Key) -> Ahead | None:
        """While Redis is slow (a DEL was late within :attr:`slow_backoff`, so
        :meth:`ainvalidate` would record the keys and not wait for their DEL), start
        recording ``keys`` now, *before* the write that makes them stale commits: the
        recording's group commit then runs during the write instead of after it. Pass
        what it returns to :meth:`ainvalidate` (``ahead=``) once the write committed, or
        to :meth:`drop_ahead` if it did not. ``None`` (nothing started) when Redis is
        not known to be slow or there is no ``max_wait``.

        Recording a key early is safe: a recorded key is only ever deleted again
        (before cached reads resume), never served. Its row is dropped once a DEL
        sent after the write succeeded, as for a late DEL.
        """
        if self.max_wait is None or not (self._slow_until and self._clock() < self._slow_until):
            return None
        raw = _check_keys(keys)
        if not raw:
            return None
        self._loop = asyncio.get_running_loop()
        recording: asyncio.Future[_Rows] = self._loop.create_future()
        self._to_record.append((raw, recording))
        self._commit_soon()
        return Ahead(tuple(keys), raw, recording)

    def drop_ahead(self, ahead: Ahead) -> None:
        """The write :meth:`record_ahead` was for did not commit: its keys' DEL is sent in
        the background (a DEL of an entry that did not change is harmless), and their
        rows are dropped once it succeeded."""
        self._follow(asyncio.ensure_future(self._adelete(ahead.keys)), ahead.recording)

    async def ainvalidate(self, *keys: Key, ahead: Ahead | None = None) -> bool:
        """The async :meth:`invalidate` (an async adapter's DEL; a sync one's in a thread).

        With ``max_wait``, a DEL Redis has not answered within it is treated as
        one that failed (the keys are recorded, False) and goes on in the
        background; see the class docstring. Cancelled while the DEL is in
        flight: the keys are recorded (the DEL may not have happened) before
        the cancellation goes on. ``ahead``: what :meth:`record_ahead` returned
        for these keys before the write: the DEL is sent now and not waited for, and
        this returns (False) once that recording is committed.
        """
        raw = _check_keys(keys)
        if not raw:
            return True
        self._loop = asyncio.get_running_loop()
        if ahead is not None:
            if sorted(ahead.raw) != sorted(raw):
                raise ValueError("ainvalidate(ahead=...): recorded ahead for other keys")
            self._follow(asyncio.ensure_future(self._adelete(keys)), ahead.recording)
            try:
                await asyncio.shield(ahead.recording)
            except asyncio.CancelledError:
                self._record(raw)  # the thread may not have committed yet: record here too
                raise
            return False
        if self.max_wait is not None:
            return await self._ainvalidate_within(keys, raw, self.max_wait)
        try:
            await self._adelete(keys)
            return True
        except asyncio.CancelledError:
            self._record(raw)  # blocking, but short: a cancelled DEL must not be forgotten
            raise
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            reason = redact(f"{type(exc).__name__}: {exc}")
        await asyncio.to_thread(self._record, raw)
        logger.info("coherence: recorded %d keys for later deletion (%s)", len(raw), reason)
        return False

    async def _adelete(self, keys: Sequence[Key]) -> None:
        if self._async:
            await self.redis.delete(*keys)
        else:
            await asyncio.to_thread(self.redis.delete, *keys)

    async def _ainvalidate_within(self, keys: Sequence[Key], raw: list[bytes], wait: float) -> bool:
        """:meth:`ainvalidate` waiting at most ``wait`` seconds for Redis; not at all for
        :attr:`slow_backoff` seconds after a DEL was late (Redis is slow: each write would
        wait the whole ``wait`` for nothing)."""
        if self._slow_until and self._clock() < self._slow_until:
            wait = 0.0
        delete = asyncio.ensure_future(self._adelete(keys))
        try:
            await asyncio.wait((delete,), timeout=wait)
        except asyncio.CancelledError:
            self._record(raw)  # blocking, but short: a cancelled DEL must not be forgotten
            self._follow(delete, None)
            raise
        if delete.done():
            exc = delete.exception()
            if exc is None:
                return True
            if not isinstance(exc, Exception) or not self._is_outage(exc):
                raise exc
            reason = redact(f"{type(exc).__name__}: {exc}")
            await asyncio.to_thread(self._record, raw)
            logger.info("coherence: recorded %d keys for later deletion (%s)", len(raw), reason)
            return False
        # Redis is slow: the write is not held for it. The keys are recorded (cached reads
        # stop until they are gone); the DEL goes on and drops them once Redis did it
        self._slow_until = self._clock() + self.slow_backoff
        recording: asyncio.Future[_Rows] = asyncio.get_running_loop().create_future()
        self._to_record.append((raw, recording))
        self._commit_soon()
        self._follow(delete, recording)
        try:
            await asyncio.shield(recording)
        except asyncio.CancelledError:
            self._record(raw)  # the thread may not have committed yet: record here too
            raise
        logger.debug(
            "coherence: DEL of %d keys not answered within %.3f s: recorded, still sent",
            len(raw),
            wait,
        )
        return False

    def _follow(
        self, delete: asyncio.Future[None], recording: asyncio.Future[_Rows] | None
    ) -> None:
        """Let a DEL past ``max_wait`` finish in the background (bounded), then drop the
        keys it deleted from the journal (:meth:`_late_done`)."""
        if len(self._late) >= self.max_background_deletes:
            delete.cancel()
            delete.add_done_callback(retrieve)
            if recording is not None:
                recording.add_done_callback(self._hold_after)
            return
        follow = asyncio.ensure_future(self._late_done(delete, recording))
        self._late.add(follow)
        follow.add_done_callback(self._late.discard)

    async def _late_done(
        self, delete: asyncio.Future[None], recording: asyncio.Future[_Rows] | None
    ) -> None:
        try:
            await delete
            deleted = True
        except asyncio.CancelledError:
            delete.cancel()
            if recording is not None:
                recording.add_done_callback(self._hold_after)
            raise
        except Exception as exc:
            deleted = False
            logger.debug("coherence: a late DEL failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        try:
            rows = None if recording is None else await recording
        except Exception:
            rows = None  # the recording failed and said so (its caller got the error)
        if deleted and rows:
            # Redis did the DEL after the write it invalidates: the keys are not stale
            # there, unless recorded again since (a newer seq, kept by _done)
            self._to_drop.extend(rows)
            self._commit_soon()
        elif not self._closed:
            # keys left (the DEL failed): the manager is held until a reconcile deletes them
            self._sync_hold()

    def _commit_soon(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_late())

    async def _commit_late(self) -> None:
        """Record the keys of late DELs and drop those Redis deleted, each batch in one
        transaction in a thread, while there are any (a group commit)."""
        while self._to_record or self._to_drop:
            records, self._to_record = self._to_record, []
            drops, self._to_drop = self._to_drop, []
            try:
                rows = await asyncio.to_thread(self._commit_batch, records, drops)
            except Exception as exc:  # CoherenceError: each recorder raises it
                for _, future in records:
                    if not future.done():
                        future.set_exception(exc)
                        future.add_done_callback(retrieve)
                if not records:
                    logger.warning("coherence: dropping keys late DELs deleted failed: %s", exc)
                continue
            start = 0
            for raw, future in records:
                if not future.done():
                    future.set_result(rows[start : start + len(raw)])
                start += len(raw)
            if drops and not self._closed:
                self._sync_hold()

    def _commit_batch(
        self, records: list[tuple[list[bytes], asyncio.Future[_Rows]]], drops: _Rows
    ) -> _Rows:
        rows: _Rows = []
        if drops:
            try:
                self._done(drops)
            except CoherenceError as exc:  # the keys stay recorded: a reconcile deletes them
                logger.warning("coherence: dropping keys late DELs deleted failed: %s", exc)
        if records:
            rows = self._record_rows([key for raw, _ in records for key in raw], hold=False)
        return rows

    def _committing(self) -> bool:
        return self._committer is not None and not self._committer.done()

    def _hold_after(self, recording: asyncio.Future[Any]) -> None:
        """Done callback of a recording whose DEL was cancelled: hold the manager."""
        if not recording.cancelled() and recording.exception() is None and not self._closed:
            self._sync_hold()

    # ------------------------------------------------------------------ reconciling

    def _flow(self, report: ReconcileReport) -> Generator[list[bytes], BaseException | None, None]:
        """The reconcile logic, shared by the sync and async drivers.

        Yields each batch of keys to DEL and receives the error the DEL raised
        (None when it succeeded); stops at the first error.
        """
        while True:
            with self._lock:
                volatile = list(self._volatile.items())[: self.batch_size]
            if volatile:
                error = yield [k for k, _ in volatile]
                if error is not None:
                    report.stopped = redact(f"{type(error).__name__}: {error}")
                    return
                with self._lock:
                    for key, entry in volatile:
                        if self._volatile.get(key) == entry:  # not recorded again meanwhile
                            del self._volatile[key]
                            report.deleted += 1
                continue
            with self._lock:
                if self._closed:
                    report.stopped = "the journal was closed"
                    return
                rows = self._db.execute(
                    "SELECT key, seq FROM pending ORDER BY seq LIMIT ?", (self.batch_size,)
                ).fetchall()
                if not rows:
                    self._journaled = 0
                    return
            batch = [(bytes(k), int(s)) for k, s in rows]
            error = yield [k for k, _ in batch]
            if error is not None:
                report.stopped = redact(f"{type(error).__name__}: {error}")
                return
            report.deleted += self._done(batch)

    def _done(self, batch: Sequence[tuple[bytes, int]]) -> int:
        """Drop deleted keys, unless one was recorded again meanwhile (a newer seq)."""
        removed = 0
        with self._lock:  # the count is set under the lock, once committed
            with self._tx("dropping deleted keys") as db:
                for key, seq in batch:
                    cur = db.execute("DELETE FROM pending WHERE key = ? AND seq <= ?", (key, seq))
                    removed += cur.rowcount
                db.execute(
                    "INSERT INTO counters (name, value) VALUES ('reconciled', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (removed,),
                )
                count = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
            self._journaled = count
        return removed

    def _finish(self, report: ReconcileReport, start: float) -> ReconcileReport:
        report.remaining = self.pending()
        report.seconds = time.perf_counter() - start
        self.last_report = report
        self._sync_hold()
        if report.stopped:
            logger.warning(
                "coherence: reconcile stopped after deleting %d keys, %d remaining: %s",
                report.deleted,
                report.remaining,
                report.stopped,
            )
        elif report.deleted:
            logger.info(
                "coherence: deleted %d recorded keys from Redis in %.3f s, %d remaining",
                report.deleted,
                report.seconds,
                report.remaining,
            )
        self._emit(
            "reconciled",
            deleted=report.deleted,
            remaining=report.remaining,
            seconds=report.seconds,
            stopped=report.stopped,
        )
        return report

    def reconcile(self) -> ReconcileReport:
        """Delete the pending keys from Redis in batches of ``batch_size``, then release.

        Stops at the first failure (the keys left stay recorded and the
        component stays held); call it again later, or let :meth:`watch` do it.
        Journal errors raise :class:`CoherenceError`.
        """
        if self._async:
            raise TypeError("CacheCoherence over an async adapter: await areconcile()")
        with self._reconcile_lock, self._turn_sync():
            report, start = ReconcileReport(), time.perf_counter()
            flow = self._flow(report)
            keys = _step(flow, None)
            while keys is not None:
                error: BaseException | None = None
                try:
                    self.redis.delete(*keys)
                except Exception as exc:
                    error = exc
                keys = _step(flow, error)
            return self._finish(report, start)

    async def areconcile(self) -> ReconcileReport:
        """The async :meth:`reconcile` (the journal work runs in a thread)."""
        self._loop = asyncio.get_running_loop()
        if self._areconcile_lock is None:
            self._areconcile_lock = asyncio.Lock()
        async with self._areconcile_lock, self._turn():
            report, start = ReconcileReport(), time.perf_counter()
            flow = self._flow(report)
            keys = await asyncio.to_thread(_step, flow, None)
            while keys is not None:
                error: BaseException | None = None
                try:
                    if self._async:
                        await self.redis.delete(*keys)
                    else:
                        await asyncio.to_thread(self.redis.delete, *keys)
                except Exception as exc:
                    error = exc
                keys = await asyncio.to_thread(_step, flow, error)
            return await asyncio.to_thread(self._finish, report, start)

    @contextlib.contextmanager
    def _turn_sync(self) -> Iterator[None]:
        """(Shared.) This process's turn to reconcile: the lease, waited for."""
        lease = self._lease
        if lease is None:
            yield
            return
        while not lease.try_acquire():
            time.sleep(_TURN_POLL)
        try:
            self._refresh()  # what the other process deleted is not deleted again
            yield
        finally:
            lease.release()

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """:meth:`_turn_sync` for the event loop (cancellable while it waits)."""
        lease = self._lease
        if lease is None:
            yield
            return
        # ASYNC110: the lease is another process's flock; no event can say it is free
        while not lease.try_acquire():  # noqa: ASYNC110
            await asyncio.sleep(_TURN_POLL)
        try:
            await asyncio.to_thread(self._refresh)
            yield
        finally:
            lease.release()

    # ------------------------------------------------------------------ triggers

    def watch(self, breaker: CircuitBreaker) -> None:
        """Reconcile when Redis answers again.

        Triggers: ``breaker`` (the Redis adapter's) half-opens (the DELs are its
        trial calls) or closes; the manager's heartbeat (every evaluation
        triggered by ``manager.tick()``), while keys remain and the breaker is
        not open: so a reconcile that stopped early is retried, and keys left
        by a previous process are deleted without waiting for a transition.
        Now, too, if keys are pending and the breaker lets calls through.
        Sync adapter: in a background thread. Async adapter: as a task on the
        event loop the trigger happens in (or the loop this object last ran
        in, for a trigger in another thread).
        """
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._breaker = breaker

        def on_change(event: StateChange) -> None:
            if event.to_state in (State.CLOSED, State.HALF_OPEN) and not self.reads_allowed():
                self._schedule()

        self._unsubscribe.append(breaker.add_listener(on_state_change=on_change))
        add_listener = getattr(self.manager, "add_listener", None)
        if callable(add_listener):

            def on_evaluation(evaluation: Any) -> None:
                if "heartbeat" in str(getattr(evaluation, "trigger", "")) and self._due():
                    self._schedule()

            undo = add_listener(on_evaluation)
            if callable(undo):
                self._unsubscribe.append(undo)
        if self._due():
            self._schedule()

    def _due(self) -> bool:
        if self.shared:
            # another process recorded keys, or deleted them all (seen now or by a
            # request before): the hold follows the journal on every heartbeat
            self._refresh(blocking=False)
            self._sync_hold()
        if self._closed or (not self._journaled and not self._volatile):
            return False
        breaker = self._breaker
        return breaker is None or breaker.state not in (State.OPEN, State.FORCED_OPEN)

    def _schedule(self) -> None:
        """Start one reconcile in the background unless one is already on its way."""
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
        if not self._async:
            thread = threading.Thread(
                target=self._reconcile_logged, name="brownout-coherence-reconcile", daemon=True
            )
            self._threads.add(thread)
            thread.start()
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(self._areconcile_logged())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._loop is not None and not self._loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._areconcile_logged(), self._loop)
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
        else:
            self._scheduled = False
            if getattr(self.manager, "add_listener", None) is not None:
                logger.debug("coherence: no event loop yet; the next heartbeat reconciles")
            else:
                logger.warning("coherence: no event loop to reconcile on; call areconcile()")

    def _reconcile_logged(self) -> None:
        try:
            self._scheduled = False
            self.reconcile()
        except Exception:
            logger.exception("coherence: reconcile failed")
        finally:
            self._threads.discard(threading.current_thread())

    async def _areconcile_logged(self) -> None:
        try:
            self._scheduled = False
            await self.areconcile()
        except Exception:
            logger.exception("coherence: reconcile failed")

    async def wait_reconciled(self) -> None:
        """Wait for the reconciles :meth:`watch` started and the DELs past ``max_wait``
        still on their way (tests, shutdown)."""
        while self._tasks or self._futures or self._threads or self._late or self._committing():
            waits: list[Any] = [*self._tasks, *self._late, *map(asyncio.wrap_future, self._futures)]
            if self._committing():
                assert self._committer is not None
                waits.append(self._committer)
            waits += [asyncio.to_thread(t.join) for t in list(self._threads)]
            await asyncio.gather(*waits, return_exceptions=True)

    def wait_reconciled_sync(self, timeout: float | None = None) -> None:
        """Join the reconcile threads :meth:`watch` started (sync adapter)."""
        for thread in list(self._threads):
            thread.join(timeout)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop watching and close the journal (pending keys stay recorded on disk)."""
        for undo in self._unsubscribe:
            with contextlib.suppress(Exception):
                undo()
        self._unsubscribe.clear()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            if self._lease is not None:
                self._lease.close()
        if self._volatile:
            logger.error(
                "coherence: closing with %d keys that could not be journaled: they may be "
                "stale in Redis; flush the cache",
                len(self._volatile),
            )

    async def aclose(self) -> None:
        """Cancel reconciles in flight (they resume after a restart), then :meth:`close`."""
        for task in [*self._tasks, *self._late]:
            task.cancel()
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        if self._committing():  # the keys being recorded are on disk before it closes
            assert self._committer is not None
            await asyncio.gather(self._committer, return_exceptions=True)
        for future in list(self._futures):
            future.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # a journal step running in a worker thread finishes under the lock first
        await asyncio.to_thread(self.close)

    def __enter__(self) -> CacheCoherence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CacheCoherence:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<CacheCoherence {str(self.path)!r} pending={self.pending()}>"


#: Seconds between two looks at the reconcile lease while another process holds it.
_TURN_POLL = 0.05


def _step(
    flow: Generator[list[bytes], BaseException | None, None], error: BaseException | None
) -> list[bytes] | None:
    """Advance the reconcile flow: the next batch, or None when it is over.

    (StopIteration cannot cross a thread's future, hence None.)
    """
    try:
        return flow.send(error)  # send(None) starts it
    except StopIteration:
        return None


@dataclass(frozen=True, slots=True)
class Ahead:
    """Keys :meth:`CacheCoherence.record_ahead` is recording before a write commits."""

    keys: tuple[Key, ...]
    raw: list[bytes]
    recording: asyncio.Future[_Rows]


class _Overflow(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count
