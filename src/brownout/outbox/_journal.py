"""The durable journal of write intents (SQLite, WAL, ``synchronous=FULL``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brownout import _sqlite
from brownout._errors import (
    IdempotencyConflict,
    OutboxCorrupted,
    OutboxError,
    OutboxFull,
)
from brownout._journal_base import JournalListeners, orphaned_log_message

__all__ = [
    "DeadLetter",
    "IdempotencyConflict",
    "Intent",
    "Outbox",
    "OutboxCorrupted",
    "OutboxError",
    "OutboxFull",
    "new_key",
]

#: The intents table (``{name}``: ``intents``, or the table a migration fills). ``seq`` is
#: the rowid without ``AUTOINCREMENT``: that kept a high-water mark in ``sqlite_sequence``,
#: one more page written and fsynced with every commit (a third of a lone submit's
#: bytes). Submits give ``seq`` themselves (see ``Outbox._next_seq_locked``): above every
#: ``seq`` in ``intents`` and in ``dead``, so a stream's order stays its submit order and a
#: dead letter's ``seq`` is never given to another intent while it is kept.
_INTENTS = """
CREATE TABLE IF NOT EXISTS {name} (
    seq          INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    stream       TEXT NOT NULL,
    operation    TEXT NOT NULL,
    payload      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created      REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    not_before   REAL NOT NULL DEFAULT 0
);
"""
_INTENT_COLUMNS = (
    "seq, key, stream, operation, payload, digest, size, created, attempts, last_error, not_before"
)

_SCHEMA = (
    _INTENTS.format(name="intents")
    + """
-- no index on (stream, seq): each intent of a group commit dirtied its own random leaf of
-- it (fsynced with the commit); batch() reads in seq order and heads() groups the pending
-- intents (bounded by max_pending) without it. Journals made before lose it here.
DROP INDEX IF EXISTS intents_stream;
CREATE TABLE IF NOT EXISTS dead (
    seq          INTEGER PRIMARY KEY,
    key          TEXT NOT NULL UNIQUE,
    stream       TEXT NOT NULL,
    operation    TEXT NOT NULL,
    payload      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created      REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    dead_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS done (
    key          TEXT PRIMARY KEY,
    operation    TEXT NOT NULL,
    stream       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    applied_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS discarded (
    key          TEXT PRIMARY KEY,
    operation    TEXT NOT NULL,
    stream       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    discarded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name         TEXT PRIMARY KEY,
    value        INTEGER NOT NULL
);
"""
)


def _migrate(db: sqlite3.Connection) -> None:
    """Rebuild the intents table of a journal made with ``AUTOINCREMENT`` (before the
    change above) without it, in one transaction: every intent kept, with its ``seq``
    (so its order). A journal already migrated, or new, is left alone."""
    autoincrement = "SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_master WHERE name = 'intents'"
    row = db.execute(autoincrement).fetchone()
    if row is None or not row[0]:
        return
    with _sqlite.immediate(db):
        row = db.execute(autoincrement).fetchone()  # another process may have done it
        if row is None or not row[0]:
            return
        db.execute("DROP TABLE IF EXISTS intents_rebuilt")
        db.execute(_INTENTS.format(name="intents_rebuilt"))
        db.execute(
            f"INSERT INTO intents_rebuilt ({_INTENT_COLUMNS}) "
            f"SELECT {_INTENT_COLUMNS} FROM intents ORDER BY seq"
        )
        db.execute("DROP TABLE intents")  # its sqlite_sequence row goes with it
        db.execute("ALTER TABLE intents_rebuilt RENAME TO intents")


@dataclass(frozen=True, slots=True)
class Intent:
    """A write accepted into the outbox."""

    seq: int
    key: str
    stream: str
    operation: str
    payload: Any
    created: float  # wall-clock seconds
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An intent given up on after repeated caller errors."""

    seq: int
    key: str
    stream: str
    operation: str
    payload: Any
    created: float
    attempts: int
    reason: str
    dead_at: float


#: Keys per ``DELETE ... WHERE key IN (...)`` when applied intents are dropped (SQLite
#: before 3.32 allows 999 parameters per statement).
_KEYS_PER_STATEMENT = 500
#: At most this many submits share one transaction (bounds a group's latency).
_MAX_GROUP = 512
#: The longest a group's leader waits for more submits to join (see ``Outbox._gather``).
_MAX_GATHER = 0.002

_INSERT = (
    "INSERT INTO intents (seq, key, stream, operation, payload, digest, size, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Where an explicit key was used before: one statement instead of one per table.
_FIND = (
    "SELECT digest, operation FROM ("
    "SELECT 0 AS t, digest, operation FROM intents WHERE key = ?1 UNION ALL "
    "SELECT 1, digest, operation FROM done WHERE key = ?1 UNION ALL "
    "SELECT 2, digest, operation FROM dead WHERE key = ?1 UNION ALL "
    "SELECT 3, digest, operation FROM discarded WHERE key = ?1"
    ") ORDER BY t LIMIT 1"
)


def _make_encoder() -> Callable[[Any], str]:
    """``json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)``,
    its encoder made once: ``dumps`` builds a ``JSONEncoder`` and its C encoder at each
    call, half the cost of encoding a small payload. A circular payload raises
    ``RecursionError`` here instead of ``ValueError`` (both are reported alike). Falls
    back to ``JSONEncoder.encode`` where the C encoder is missing or encodes otherwise."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return encoder.encode
    try:
        c_encode = make(
            None, encoder.default, json.encoder.encode_basestring_ascii, None,
            ":", ",", True, False, False,
        )  # fmt: skip

        def encode(payload: Any) -> str:
            return "".join(c_encode(payload, 0))

        sample = {"b": [1, 2.5, None, True, "\u00e9\n"], "a": {"2": -0.0, "1": 1e300}}
        if encode(sample) == encoder.encode(sample):
            return encode
    except Exception:  # pragma: no cover - another C encoder signature
        pass
    return encoder.encode  # pragma: no cover


_encode = _make_encoder()
#: Decodes a body ``_encode`` made (no surrounding whitespace): ``json.loads`` without
#: its type and whitespace checks.
_raw_decode = json.JSONDecoder().raw_decode


@dataclass(slots=True)
class _Request:
    """One submit waiting for its group commit."""

    operation: str
    payload: Any
    body: str
    stream: str
    key: str
    digest: str
    size: int
    explicit_key: bool
    seq: int = 0  # set once inserted (the submit's thread makes the Intent)
    created: float = 0.0
    intent: Intent | None = None  # the intent accepted before under the same key
    error: OutboxError | None = None
    done: bool = False
    wake: threading.Lock | None = None  # released to wake the waiting submit
    future: asyncio.Future[Intent] | None = None  # an asubmit's, set on its loop
    loop: asyncio.AbstractEventLoop | None = None
    start: float = 0.0  # an asubmit's perf_counter when it queued


_key_lock = threading.Lock()
_last_key = 0  # the payload (time and random bits, 122 bits) of the last key made here


def new_key() -> str:
    """A new idempotency key: a UUID version 7 in hex (32 characters), the time in
    milliseconds first, then 74 random bits.

    Keys made one after another sort one after another, so the journal's unique index
    on ``key`` grows at its right edge: a group commit rewrites one leaf of it instead
    of one random leaf per intent (with ``uuid4`` keys, each intent of a group
    dirtied its own index page, written to the log and fsynced with the commit).
    Within one process the order is strict even for keys made in the same millisecond
    (or after the clock stepped back): such a key is the last one plus one (RFC 9562,
    6.2, a monotonic random). Keys of different processes interleave by millisecond.

    >>> keys = [new_key() for _ in range(1000)]
    >>> keys == sorted(keys) and len(set(keys)) == 1000
    True
    """
    global _last_key
    payload = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 74
    payload |= int.from_bytes(os.urandom(10), "big") >> 6  # 74 random bits
    with _key_lock:
        if payload <= _last_key:
            payload = _last_key + 1
        _last_key = payload
    # the version (7) and variant (0b10) bits go in at fixed places: the order stays
    value = (payload >> 74) << 80 | 0x7 << 76 | ((payload >> 62) & 0xFFF) << 64
    value |= 0x2 << 62 | payload & ((1 << 62) - 1)
    return value.to_bytes(16, "big").hex()  # = f"{value:032x}", at half the cost


def _digest(operation: str, payload_json: str) -> str:
    return hashlib.sha256(f"{operation}\0{payload_json}".encode()).hexdigest()


class Outbox(JournalListeners):
    """A durable, bounded, ordered journal of writes to apply later.

    ``submit`` returns only once the intent is on disk (SQLite in WAL mode with
    ``synchronous=FULL``: the commit is fsynced). Intents are applied by an
    :class:`~brownout.outbox.Replayer`, exactly once in effect, FIFO within a
    stream.

    >>> import tempfile, os
    >>> box = Outbox(os.path.join(tempfile.mkdtemp(), "outbox.db"))
    >>> intent = box.submit("stock.move", {"sku": "A-1", "delta": -2}, stream="A-1")
    >>> box.pending_count(), box.status(intent.key)
    (1, 'pending')
    >>> box.close()
    """

    #: ``add_listener(fn)`` -> unsubscribe; ``fn(JournalEvent)`` of kind ``submitted``
    #: (operation, seconds), ``refused`` (operation, reason ``full`` or ``error``),
    #: ``replayed`` (operation, seconds: the apply, waited: since accepted), ``dead``
    #: (operation, reason), and an operator's ``retried`` and ``discarded`` (operation).
    _source = "outbox"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pending: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_payload_bytes: int = 1024 * 1024,
        max_attempts: int = 5,
        done_retention: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("max_pending", max_pending),
            ("max_bytes", max_bytes),
            ("max_payload_bytes", max_payload_bytes),
            ("max_attempts", max_attempts),
            ("done_retention", done_retention),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Outbox.{name} must be an int >= 1, got {value!r}")
        self.path = Path(path)
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.max_payload_bytes = max_payload_bytes
        self.max_attempts = max_attempts
        self.done_retention = done_retention
        self._clock = clock
        self._lock = threading.Lock()  # the connection: one transaction at a time
        # group commit: submits queue here; one of them (the leader) writes the whole
        # queue in one transaction (one fsync) while the others wait for its result
        self._group = threading.Condition(threading.Lock())
        self._queue: list[_Request] = []
        self._leading = False
        self._groups = 0  # group commits written (intents per fsync = submits / groups)
        # submitters seen at once lately (the last group and those queued behind it): a new
        # leader waits for that many to queue, up to half a commit's time (see _gather)
        self._siblings = 1
        self._gathering = False
        self._wanted = 1  # the queue length at which a gathering leader is woken
        self._commit_seconds = 0.0  # moving average of a group commit's duration
        self._pool: ThreadPoolExecutor | None = None  # the committer thread (asubmit)
        self._closing = False
        # (pending count, pending bytes, next seq) as of this connection's last write, valid
        # while PRAGMA data_version says no other connection (another process) wrote since
        self._usage: tuple[int, int, int] | None = None
        self._usage_version = -1
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._refuse_orphaned_log()
        try:
            self._db = _sqlite.connect(self.path)
            _sqlite.make_durable(self._db, _SCHEMA)
            _migrate(self._db)
            problem = _sqlite.integrity_problem(self._db)
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_db"):
                self._db.close()
            code = _sqlite.error_code(exc) or ""
            if isinstance(exc, sqlite3.OperationalError) and not _sqlite.is_corruption(exc):
                raise OutboxError(
                    f"cannot open outbox journal {self.path}: {exc} [{code}] (a directory, "
                    "missing permissions, a full disk, or locked by another process?); "
                    "nothing was changed"
                ) from exc
            raise OutboxCorrupted(
                f"outbox journal {self.path} is not a readable SQLite database ({exc}); "
                "it was left as it is: move it aside to start a new one, and inspect it "
                "with sqlite3 to recover what it holds"
            ) from exc
        if problem is not None:
            self._db.close()
            raise OutboxCorrupted(
                f"outbox journal {self.path} failed its integrity check ({problem}); "
                "it was left as it is"
            )

    def _refuse_orphaned_log(self) -> None:
        """Refuse a missing or empty journal next to a write-ahead log that holds frames
        (see :func:`brownout._sqlite.orphaned_log`): it would lose the intents in the log."""
        message = orphaned_log_message(
            self.path,
            "outbox journal",
            "the intents in it",
            "Restore the journal next to its -wal (or move both aside to start afresh)",
        )
        if message is not None:
            raise OutboxCorrupted(message)

    # ------------------------------------------------------------------ plumbing

    def _failure(self, what: str, exc: sqlite3.Error) -> OutboxError:
        """The error to raise for ``exc``: it names the journal and what was being done."""
        detail = _sqlite.failure_detail(exc)
        if isinstance(exc, sqlite3.ProgrammingError) and self._closed:
            return OutboxError(f"outbox journal {self.path}: {what} failed: the outbox is closed")
        if _sqlite.is_corruption(exc) or type(exc) is sqlite3.DatabaseError:
            return OutboxCorrupted(
                f"outbox journal {self.path}: {what} failed: {detail}; the journal file is "
                "damaged: stop the service, copy the file (with its -wal) aside and inspect it "
                "with sqlite3 (PRAGMA integrity_check) to recover what it holds"
            )
        return OutboxError(
            f"outbox journal {self.path}: {what} failed: {detail}; nothing was changed, "
            "intents accepted before are kept"
        )

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock (the pending figures are counted again
        at the next submit)."""
        with self._lock, self._tx_locked(what) as db:
            self._usage = None
            yield db

    @contextmanager
    def _tx_locked(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction; the caller holds the lock."""
        try:
            with _sqlite.write(self._db, lambda exc: self._failure(what, exc)) as db:
                yield db
        except BaseException:
            self._usage = None  # counted again at the next submit
            raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._failure(what, exc) from exc

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        operation: str,
        payload: Any,
        *,
        stream: str = "",
        idempotency_key: str | None = None,
    ) -> Intent:
        """Durably accept a write intent; returns once it is on disk.

        Concurrent submits (from threads, or from :meth:`asubmit`) are written by
        *group commit*: the submits waiting at the same moment share one journal
        transaction and so one fsync, and each returns only once the transaction
        holding its own intent is committed. A lone submit is one transaction, as
        before.

        Reusing ``idempotency_key`` with the same operation and payload returns
        the intent already accepted (whether pending, applied or dead); with a
        different one raises :class:`IdempotencyConflict`. Raises
        :class:`OutboxFull` at the bounds and ``TypeError`` for a payload that
        is not JSON-serialisable; in every error case nothing is written.
        """
        return self._finish(self._prepare(operation, payload, stream, idempotency_key))

    async def asubmit(
        self,
        operation: str,
        payload: Any,
        *,
        stream: str = "",
        idempotency_key: str | None = None,
    ) -> Intent:
        """:meth:`submit` for the event loop: the intent is queued from the loop and
        written by the outbox's committer thread (or by a :meth:`submit` leading the
        group), never on the loop; the loop is woken once per group commit, not per
        submit. Concurrent ``asubmit`` calls share group commits like threads do.

        Bad input raises here, before anything is queued. If the awaiting task is
        cancelled, the submit still completes: the intent may be accepted (submit it
        again with the same ``idempotency_key`` to find out).
        """
        request = self._prepare(operation, payload, stream, idempotency_key)
        loop = asyncio.get_running_loop()
        request.loop, request.future = loop, loop.create_future()
        request.start = time.perf_counter()
        with self._group:
            if self._closing:
                raise self._closed_error()
            self._queue.append(request)
            if self._gathering and len(self._queue) >= self._wanted:
                self._group.notify()
            lead = not self._leading
            self._leading = True
        if lead:
            self._start_committer()
        return await request.future

    def _closed_error(self) -> OutboxError:
        return OutboxError(f"outbox journal {self.path}: submit failed: the outbox is closed")

    def _start_committer(self) -> None:
        """(Leading is taken, only asubmits queued: they have no thread of their own to
        write in.) Lead in the outbox's committer thread."""
        with self._group:
            pool = self._pool
            if pool is None and not self._closing:
                pool = self._pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="brownout-outbox-commit"
                )
        try:
            if pool is None:
                raise RuntimeError("closed")
            pool.submit(self._commit_queued)
        except RuntimeError:  # closing: the pool is gone or shut down
            error = self._closed_error()
            with self._group:
                group, self._queue = self._queue, []
                self._leading = False
            for r in group:
                r.error = error
            self._finish_group(group)

    def _commit_queued(self) -> None:
        """The committer thread's job: write groups until :meth:`_hand_on` gives the lead
        to a submit() or the queue is empty."""
        while True:
            try:
                self._write_next_group()
            except Exception:  # its group has its error; the queue must go on
                logging.getLogger("brownout.outbox").exception("outbox group commit failed")
            if not self._hand_on():
                return

    def _hand_on(self) -> bool:
        """(The leader, its group done.) Give up the lead if the queue is empty, or hand
        it to the oldest submit() queued (it writes the next group in its own thread).
        True when only asubmits are queued: the committer thread leads next."""
        with self._group:
            if not self._queue:
                self._leading = False
                return False
            for r in self._queue:
                if r.wake is not None:
                    r.wake.release()  # it leads (it is not done yet)
                    return False
            return True

    def _prepare(
        self, operation: str, payload: Any, stream: str, idempotency_key: str | None
    ) -> _Request:
        """Check and serialise a submit (no I/O): raises for bad input."""
        if not isinstance(operation, str) or not operation:
            raise ValueError("Outbox.submit: operation must be a non-empty string")
        if not isinstance(stream, str):
            raise TypeError("Outbox.submit: stream must be a string")
        try:
            body = _encode(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            where = _locate_unserialisable(payload)
            raise TypeError(
                f"Outbox.submit: the payload of {operation!r} is not JSON-serialisable: "
                f"{where or exc}; nothing was written"
            ) from None
        size = len(body)  # ASCII: the encoder escapes every other character
        if size > self.max_payload_bytes:
            raise OutboxError(
                f"Outbox.submit: payload of {size} bytes exceeds max_payload_bytes "
                f"({self.max_payload_bytes})"
            )
        key = idempotency_key or new_key()
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            raise ValueError("Outbox.submit: idempotency_key must be a string of 1-200 characters")
        return _Request(
            operation, payload, body, stream, key, _digest(operation, body), size,
            idempotency_key is not None,
        )  # fmt: skip

    def _finish(self, request: _Request) -> Intent:
        """Write ``request`` (in a group commit) and wait until it is durable."""
        start = time.perf_counter()
        self._commit_in_group(request)
        error = request.error
        if error is not None:
            self._emit_refused(request)
            raise error
        if not request.seq:  # accepted before under this key
            assert request.intent is not None
            return request.intent
        # made here, not by the group's writer: the payload as it will be replayed
        r = request
        intent = Intent(r.seq, r.key, r.stream, r.operation, _raw_decode(r.body)[0], r.created)
        if self._listeners:
            self._emit("submitted", operation=r.operation, seconds=time.perf_counter() - start)
        return intent

    def _emit_refused(self, request: _Request) -> None:
        if isinstance(request.error, OutboxFull):
            self._emit("refused", operation=request.operation, reason="full")
        elif not isinstance(request.error, IdempotencyConflict):
            self._emit("refused", operation=request.operation, reason="error")

    def _commit_in_group(self, request: _Request) -> None:
        """Queue ``request`` and return once it is committed (or has its error).

        The first submit to find no group being written leads: it writes the whole
        queue in one transaction and wakes each submit of it; if more queued up
        meanwhile it hands the lead to the oldest submit() among them, which writes
        the next group (to the committer thread if only asubmits queued). Each waiter
        sleeps on its own lock: a commit wakes only its group.
        """
        with self._group:
            self._queue.append(request)
            if self._gathering and len(self._queue) >= self._wanted:
                self._group.notify()  # only then: a leader woken per arrival cost a switch each
            if self._leading:
                waiting = request.wake = threading.Lock()
                waiting.acquire()
            else:
                self._leading = True
                waiting = None
        if waiting is not None:
            waiting.acquire()  # released when done, or when handed the lead
            if request.done:
                return
        try:
            # handed the lead, its own request may be behind more than a group's worth
            while not request.done:
                self._write_next_group()
        finally:
            if self._hand_on():
                self._start_committer()

    def _write_next_group(self) -> None:
        """(The leader.) Gather, write the queue's oldest requests in one transaction,
        then wake or settle each of them."""
        group: list[_Request] = []
        try:
            self._gather()
            with self._lock:  # taken first: the group gathers while another write runs
                with self._group:
                    group = self._queue[:_MAX_GROUP]
                    del self._queue[:_MAX_GROUP]
                began = time.perf_counter()
                self._write_group(group)
                took = time.perf_counter() - began
                self._commit_seconds += (took - self._commit_seconds) / 8
        except BaseException as exc:  # interrupted: no submit of the group may hang
            for r in group:
                if not r.seq and r.intent is None and r.error is None:
                    r.error = OutboxError(
                        f"outbox journal {self.path}: submit interrupted ({type(exc).__name__})"
                    )
            raise
        finally:
            self._finish_group(group, count_siblings=True)

    def _finish_group(self, group: list[_Request], *, count_siblings: bool = False) -> None:
        """Wake each submit() of a written group; settle each asubmit's future on its loop
        (one callback per loop for the whole group: the loop is woken once)."""
        settle: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Intent | None]]] = {}
        with self._group:
            if count_siblings:
                self._siblings = max(1, len(group) + len(self._queue))
            for r in group:
                r.done = True
                if r.wake is not None:
                    r.wake.release()
        for r in group:
            if r.loop is None:
                continue
            intent = None
            if r.error is not None:
                self._emit_refused(r)
            elif not r.seq:
                intent = r.intent
            else:  # made and announced here: the fsync and its events stay off the loop
                intent = Intent(
                    r.seq, r.key, r.stream, r.operation, _raw_decode(r.body)[0], r.created
                )
                if self._listeners:
                    self._emit(
                        "submitted",
                        operation=r.operation,
                        seconds=time.perf_counter() - r.start,
                    )
            settle.setdefault(r.loop, []).append((r, intent))
        for loop, outcomes in settle.items():
            with suppress(RuntimeError):  # the loop is closed: nobody awaits these
                loop.call_soon_threadsafe(_settle, outcomes)

    def _gather(self) -> None:
        """(The leader, before it writes.) Wait for the submitters seen lately to queue.

        The submits a commit just returned come back with their next intent a moment
        later; a leader that started at once would write without them, and with ``n``
        submitters the groups would alternate in two halves (measured: ~4.8 intents
        per commit with 8 threads). Like PostgreSQL's ``commit_delay`` with
        ``commit_siblings``, the leader waits until as many submits are queued as
        were at once lately, for at most half a commit's time: everything queued
        meanwhile shares the next fsync. A lone submitter never waits.
        """
        with self._group:
            wanted = min(self._siblings, _MAX_GROUP)
            if len(self._queue) >= wanted:
                return
            deadline = time.perf_counter() + min(self._commit_seconds / 2, _MAX_GATHER)
            self._wanted = wanted
            self._gathering = True
            try:
                while len(self._queue) < wanted:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._group.wait(left)
            finally:
                self._gathering = False
            if len(self._queue) < wanted:  # fewer came: expect as many next time
                self._siblings = len(self._queue)

    def _write_group(self, group: list[_Request]) -> None:
        """(Under the lock.) One transaction for every request of ``group`` (in order); sets each
        request's ``seq`` (inserted), ``intent`` (accepted before) or ``error``. A journal
        error fails them all (nothing of the group is written); a full outbox or an
        idempotency conflict fails only the request it concerns.

        The transaction is written out here rather than with ``_tx_locked`` (three nested
        generator context managers) and the rows go in with one ``executemany``: this
        runs once per commit, on the path every submit of the group waits for."""
        self._groups += 1
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                count, total, seq = self._usage_locked(db)
                now = self._clock()
                rows = []
                fresh: dict[str, _Request] = {}  # explicit keys inserted by this group
                for r in group:
                    if r.explicit_key:
                        first = fresh.get(r.key)
                        if first is not None:  # the same key twice in one group
                            found: tuple[str, str] | None = (first.digest, first.operation)
                        else:
                            found = db.execute(_FIND, (r.key,)).fetchone()
                        if found is not None:
                            if found[0] != r.digest:
                                what = "payload" if found[1] == r.operation else "operation"
                                r.error = IdempotencyConflict(
                                    f"idempotency key {r.key!r} was already used for a "
                                    f"different {what}"
                                )
                            elif first is not None:
                                r.intent = Intent(
                                    first.seq, r.key, r.stream, r.operation, r.payload, now
                                )
                            else:
                                r.intent = self._intent_for_locked(
                                    db, r.key, r.operation, r.payload, r.stream
                                )
                            continue
                    if count >= self.max_pending:
                        r.error = OutboxFull(
                            f"outbox is full: {count} pending intents "
                            f"(max_pending={self.max_pending})"
                        )
                        continue
                    if total + r.size > self.max_bytes:
                        r.error = OutboxFull(
                            f"outbox is full: {total + r.size} bytes pending "
                            f"(max_bytes={self.max_bytes})"
                        )
                        continue
                    rows.append((seq, r.key, r.stream, r.operation, r.body, r.digest, r.size, now))
                    r.seq, r.created = seq, now
                    if r.explicit_key:
                        fresh[r.key] = r
                    count += 1
                    total += r.size
                    seq += 1
                if rows:
                    db.executemany(_INSERT, rows)
                db.execute("COMMIT")
                self._usage = (count, total, seq)
            except BaseException:
                self._usage = None  # counted again at the next submit
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = self._failure("submit", exc)
            for r in group:  # rolled back: nothing of the group was written
                r.seq = 0
                r.intent = None
                if not isinstance(r.error, IdempotencyConflict):  # that one stays true
                    r.error = error

    @staticmethod
    def _next_seq_locked(db: sqlite3.Connection) -> int:
        """(In a write transaction.) The ``seq`` of the next intent: above every pending
        intent's and every dead letter's (a dead letter keeps its intent's ``seq``, the
        ``dead`` table's key). Without ``AUTOINCREMENT`` the ``seq`` of an applied or
        discarded intent may be given again; nothing keeps it (``done`` and
        ``discarded`` are keyed by the idempotency key)."""
        row = db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM intents), 0), "
            "COALESCE((SELECT MAX(seq) FROM dead), 0))"
        ).fetchone()
        return int(row[0]) + 1

    def _usage_locked(self, db: sqlite3.Connection) -> tuple[int, int, int]:
        """(pending intents, pending bytes, the next seq), read again only when another
        connection (another process: the CLI) wrote to the journal since this one last
        did, or this one wrote elsewhere than in a submit (``_tx`` forgets them)."""
        version = int(db.execute("PRAGMA data_version").fetchone()[0])
        if self._usage is None or version != self._usage_version:
            count, total = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM intents"
            ).fetchone()
            self._usage = (int(count), int(total), self._next_seq_locked(db))
            self._usage_version = version
        return self._usage

    def _intent_for_locked(
        self, db: sqlite3.Connection, key: str, operation: str, payload: Any, stream: str
    ) -> Intent:
        row = db.execute(
            "SELECT seq, created, attempts, last_error FROM intents WHERE key = ?", (key,)
        ).fetchone()
        if row is not None:
            return Intent(row[0], key, stream, operation, payload, row[1], row[2], row[3])
        return Intent(0, key, stream, operation, payload, 0.0)

    # ------------------------------------------------------------------ reading

    def status(self, key: str) -> str | None:
        """``pending``, ``applied``, ``dead``, ``discarded`` (a dead letter an operator
        gave up on) or ``None`` (unknown key)."""
        with self._read("status") as db:
            for table, name in (
                ("intents", "pending"),
                ("done", "applied"),
                ("dead", "dead"),
                ("discarded", "discarded"),
            ):
                row = db.execute(
                    f"SELECT 1 FROM {table} WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is not None:
                    return name
        return None

    def pending_count(self) -> int:
        with self._read("count pending intents") as db:
            return int(db.execute("SELECT COUNT(*) FROM intents").fetchone()[0])

    def pending_bytes(self) -> int:
        with self._read("sum pending bytes") as db:
            return int(db.execute("SELECT COALESCE(SUM(size),0) FROM intents").fetchone()[0])

    def oldest_age(self) -> float | None:
        """Seconds since the oldest pending intent was accepted (None when empty)."""
        with self._read("read the oldest intent") as db:
            row = db.execute("SELECT MIN(created) FROM intents").fetchone()
        return None if row[0] is None else max(0.0, self._clock() - row[0])

    def heads(self, now: float | None = None, limit: int = 100) -> list[Intent]:
        """The oldest pending intent of each stream that may be tried now (FIFO per stream)."""
        now = self._clock() if now is None else now
        with self._read("read the stream heads") as db:
            rows = db.execute(
                "SELECT i.seq, i.key, i.stream, i.operation, i.payload, i.created, i.attempts, "
                "i.last_error FROM intents i "
                "JOIN (SELECT stream, MIN(seq) AS seq FROM intents GROUP BY stream) h "
                "ON i.seq = h.seq WHERE i.not_before <= ? ORDER BY i.seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Intent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def batch(self, limit: int = 200, now: float | None = None) -> list[Intent]:
        """Up to ``limit`` intents that may be applied now, oldest first, FIFO per
        stream: a stream whose oldest intent waits (a retry backoff) gives none, so no
        intent is ever applied before an older one of its stream."""
        if limit < 1:
            return []
        now = self._clock() if now is None else now
        # rows read per query: one query fills the batch unless streams wait (then the
        # next rows are read); reading 2 * limit read and decoded twice what it used
        window = max(limit, 256)
        out: list[Intent] = []
        blocked: set[str] = set()
        after = 0
        with self._read("read a batch of intents") as db:
            while len(out) < limit:
                rows = db.execute(
                    "SELECT seq, key, stream, operation, payload, created, attempts, "
                    "last_error, not_before FROM intents WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, window),
                ).fetchall()
                for r in rows:  # in seq order: a stream's first row here is its oldest
                    if r[2] in blocked:
                        continue
                    if r[8] > now:
                        blocked.add(r[2])
                        continue
                    out.append(Intent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]))
                    if len(out) == limit:
                        break
                if len(rows) < window:
                    break
                after = rows[-1][0]
        return out

    def pending(self, limit: int = 1000) -> list[Intent]:
        with self._read("list pending intents") as db:
            rows = db.execute(
                "SELECT seq, key, stream, operation, payload, created, attempts, last_error "
                "FROM intents ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Intent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        with self._read("list dead letters") as db:
            rows = db.execute(
                "SELECT seq, key, stream, operation, payload, created, attempts, reason, dead_at "
                "FROM dead ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def pending_intent(self, key: str) -> Intent | None:
        """The pending intent of ``key``, or ``None`` if that key is not pending."""
        with self._read("read an intent") as db:
            r = db.execute(
                "SELECT seq, key, stream, operation, payload, created, attempts, last_error "
                "FROM intents WHERE key = ?",
                (key,),
            ).fetchone()
        if r is None:
            return None
        return Intent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])

    def dead_letter(self, key: str) -> DeadLetter | None:
        """The dead letter of ``key``, or ``None`` if that key is not dead."""
        with self._read("read a dead letter") as db:
            r = db.execute(
                "SELECT seq, key, stream, operation, payload, created, attempts, reason, dead_at "
                "FROM dead WHERE key = ?",
                (key,),
            ).fetchone()
        if r is None:
            return None
        return DeadLetter(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])

    def counters(self) -> dict[str, int]:
        with self._read("read counters") as db:
            rows = db.execute("SELECT name, value FROM counters").fetchall()
        return {name: int(value) for name, value in rows}

    def stats(self) -> dict[str, Any]:
        """Figures for health pages and metrics."""
        counters = self.counters()
        with self._read("count dead letters") as db:
            dead = int(db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
        return {
            "pending": self.pending_count(),
            "pending_bytes": self.pending_bytes(),
            "oldest_pending_age_s": self.oldest_age(),
            "replayed_total": counters.get("replayed", 0),
            "dead_letters": dead,
            "dead_letter_total": counters.get("dead", 0),
            "retried_total": counters.get("retried", 0),
            "discarded_total": counters.get("discarded", 0),
            "max_pending": self.max_pending,
            "max_bytes": self.max_bytes,
        }

    # ------------------------------------------------------------------ updates

    def mark_applied(self, intent: Intent, *, seconds: float = 0.0) -> None:
        """The intent's effect is committed in the database: drop it from the journal."""
        self.mark_applied_many([intent], seconds=seconds)

    def mark_applied_many(self, intents: Sequence[Intent], *, seconds: float = 0.0) -> None:
        """These intents' effects are committed in the database: drop them from the
        journal in one transaction (one fsync). ``seconds``: the apply time of each."""
        if not intents:
            return
        dropped: list[Intent] = []
        with self._tx("mark applied") as db:
            now = self._clock()
            done = []
            digests: dict[str, str] = {}
            keys = [intent.key for intent in intents]
            for at in range(0, len(keys), _KEYS_PER_STATEMENT):  # one statement per chunk
                chunk = keys[at : at + _KEYS_PER_STATEMENT]
                marks = ",".join("?" * len(chunk))
                digests.update(
                    db.execute(
                        f"DELETE FROM intents WHERE key IN ({marks}) RETURNING key, digest", chunk
                    ).fetchall()
                )
            for intent in intents:
                digest = digests.pop(intent.key, None)  # pop: a key given twice counts once
                if digest is not None:
                    dropped.append(intent)
                    done.append((intent.key, intent.operation, intent.stream, digest, now))
            if not done:
                return
            db.executemany(
                "INSERT OR REPLACE INTO done (key, operation, stream, digest, applied_at) "
                "VALUES (?, ?, ?, ?, ?)",
                done,
            )
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('replayed', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (len(done),),
            )
            # keep the last done_retention keys: rowids grow with each insert, so this
            # is a range delete on the primary index, not a sort of the whole table
            db.execute(
                "DELETE FROM done WHERE rowid <= (SELECT MAX(rowid) FROM done) - ?",
                (self.done_retention,),
            )
        now = self._clock()
        for intent in dropped:
            self._emit(
                "replayed",
                operation=intent.operation,
                seconds=seconds,
                waited=max(0.0, now - intent.created),
            )

    def mark_waiting(self, intent: Intent, reason: str) -> None:
        """The dependency is down (or not ready): note why the intent waits, without
        counting an attempt (an outage is never the intent's fault)."""
        with self._tx("note why an intent waits") as db:
            db.execute(
                "UPDATE intents SET last_error = ? WHERE key = ?", (reason[:2000], intent.key)
            )

    def mark_failed(
        self, intent: Intent, reason: str, *, backoff: float = 1.0, final: bool = False
    ) -> bool:
        """A caller error: count the attempt; dead-letter it after ``max_attempts``.

        ``final``: retrying cannot help (e.g. not enough stock): dead-letter now.
        Returns True if the intent went to the dead letters.
        """
        with self._tx("mark failed") as db:
            row = db.execute(
                "UPDATE intents SET attempts = attempts + 1, last_error = ?, not_before = ? "
                "WHERE key = ? RETURNING attempts",
                (reason[:2000], self._clock() + backoff, intent.key),
            ).fetchone()
            if row is None:
                return False
            if row[0] < self.max_attempts and not final:
                return False
            db.execute(
                "INSERT INTO dead (seq, key, stream, operation, payload, digest, created, "
                "attempts, reason, dead_at) SELECT seq, key, stream, operation, payload, digest, "
                "created, attempts, ?, ? FROM intents WHERE key = ?",
                (reason[:2000], self._clock(), intent.key),
            )
            db.execute("DELETE FROM intents WHERE key = ?", (intent.key,))
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('dead', 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
        self._emit("dead", operation=intent.operation, reason=reason)
        return True

    def retry_dead(self, key: str | None = None) -> int:
        """Move dead letters (one, or all) back to the journal, at the end of their stream,
        with their attempts reset (the operator fixed what made them fail). Returns how
        many moved (0 for a key that is not dead)."""
        with self._tx("retry dead letters") as db:
            where, args = ("WHERE key = ?", (key,)) if key is not None else ("", ())
            rows = db.execute(
                f"SELECT key, stream, operation, payload, digest, created FROM dead {where} "
                "ORDER BY seq",
                args,
            ).fetchall()
            for k, stream, operation, payload, digest, created in rows:
                db.execute(
                    "INSERT INTO intents (seq, key, stream, operation, payload, digest, size, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self._next_seq_locked(db), k, stream, operation, payload, digest,
                        len(payload.encode()), created,
                    ),
                )  # fmt: skip
                db.execute("DELETE FROM dead WHERE key = ?", (k,))
            self._count_locked(db, "retried", len(rows))
        for row in rows:
            self._emit("retried", operation=row[2])
        return len(rows)

    def discard_dead(self, key: str | None = None) -> int:
        """Give up on dead letters (one, or all) for good: their payload is deleted; the key
        stays known (``status()`` says ``discarded``, with the reason it died), so a client
        repeating the request under the same key does not make it a new write. Returns how
        many were discarded (0 for a key that is not dead)."""
        with self._tx("discard dead letters") as db:
            where, args = ("WHERE key = ?", (key,)) if key is not None else ("", ())
            rows = db.execute(
                f"SELECT key, operation, stream, digest, reason FROM dead {where} ORDER BY seq",
                args,
            ).fetchall()
            now = self._clock()
            for k, operation, stream, digest, reason in rows:
                db.execute(
                    "INSERT OR REPLACE INTO discarded "
                    "(key, operation, stream, digest, reason, discarded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (k, operation, stream, digest, reason, now),
                )
                db.execute("DELETE FROM dead WHERE key = ?", (k,))
            self._count_locked(db, "discarded", len(rows))
        for row in rows:
            self._emit("discarded", operation=row[1])
        return len(rows)

    def discarded_reason(self, key: str) -> str | None:
        """Why the discarded intent ``key`` had died (``None``: not discarded)."""
        with self._read("read a discarded intent") as db:
            row = db.execute("SELECT reason FROM discarded WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _count_locked(db: sqlite3.Connection, name: str, n: int) -> None:
        if n:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    def close(self) -> None:
        with self._group:
            self._closing = True  # asubmits from now on are refused
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # submits in flight finish first
        with self._lock:
            self._closed = True
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Outbox {str(self.path)!r}>"


def _settle(outcomes: list[tuple[_Request, Intent | None]]) -> None:
    """(On the asubmits' loop.) Each future gets its intent or its error; a future
    whose task was cancelled is left as it is (the intent may still be accepted)."""
    for r, intent in outcomes:
        future = r.future
        if future is None or future.done():
            continue
        if intent is None:
            future.set_exception(r.error or OutboxError("submit failed"))
        else:
            future.set_result(intent)


def _locate_unserialisable(payload: Any) -> str | None:
    """Where in ``payload`` the first value JSON cannot hold is, and why (no values shown:
    payloads may hold personal data; only types, and the non-finite floats)."""
    active: set[int] = set()

    def walk(value: Any, path: str) -> str | None:
        if value is None or isinstance(value, str | bool | int):
            return None
        if isinstance(value, float):
            if math.isfinite(value):
                return None
            return f"{path} is {value!r} (NaN and infinities are not valid JSON)"
        if isinstance(value, list | tuple | dict):
            if id(value) in active:
                return f"{path} contains itself (a circular reference)"
            active.add(id(value))
            try:
                if isinstance(value, dict):
                    return walk_dict(value, path)
                for i, item in enumerate(value):
                    found = walk(item, f"{path}[{i}]")
                    if found:
                        return found
                return None
            finally:
                active.discard(id(value))
        return f"{path} is of type {type(value).__name__}, which JSON cannot hold"

    def walk_dict(value: dict[Any, Any], path: str) -> str | None:
        kinds: set[str] = set()
        for key in value:
            if key is not None and not isinstance(key, str | bool | int | float):
                return f"{path} has a key of type {type(key).__name__} (keys must be strings)"
            kinds.add("string" if isinstance(key, str) else "non-string")
        if len(kinds) > 1:
            return f"{path} mixes string and non-string keys, which cannot be sorted"
        for key, item in value.items():
            found = walk(item, f"{path}[{key!r}]")
            if found:
                return found
        return None

    try:
        return walk(payload, "payload")
    except RecursionError:
        return "payload is nested too deeply"


def next_backoff(attempts: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff for a retried intent."""
    return min(cap, base * math.pow(2, max(0, attempts - 1)))
