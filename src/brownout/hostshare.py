"""Breaker state shared by the processes of one host (issue 13 item 2).

With several worker processes per host, each has its own breakers: when a
dependency fails, every worker pays ``consecutive_failures`` times the timeout
before it stops calling, and when it recovers every worker sends its own
half-open probes. Shopify's Semian shares its breakers between the processes
of a host for this reason. :class:`HostShare` does it with a SQLite file that
every process of the host opens (one small table, WAL, no server):

* when a breaker **opens** in one process (its own failures), the row says
  ``open``, by whom and until when;
* every other process reads the table every ``poll_interval`` seconds (a
  daemon thread; nothing on the call path) and holds its own breaker of the
  same name ``OPEN`` for as long as the row does, without spending a failure;
* only the process that opened the breaker (the row's owner) **probes**: its
  breaker half-opens when its break is over, it holds a lease on the row
  while it probes, and the others stay open, so the dependency gets
  ``half_open_calls`` probes from the host, not one set per process (a process
  whose breaker half-opened on its own but lost the claim may let a call
  through before its poller holds it open; if that call fails, its breaker
  reopens without touching the owner's row);
* when the owner's breaker **closes**, the row says so and the others close;
* if the owner dies, its lease runs out; the others' breakers then half-open
  on their own and the first to claim the row becomes the new owner.

Process-local breakers stay the default; sharing is one object away::

    share = HostShare(var_dir / "breakers.db")
    share.attach(registry.get("postgres"))   # in every worker

A breaker attached here still trips on its own failures exactly as before;
the share only adds the other processes' verdicts. Operator actions
(``force_open``, ``reset``) in one process are also shared.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brownout._breaker import CircuitBreaker
from brownout._clock import to_seconds
from brownout._events import StateChange
from brownout._state import State

__all__ = ["HostShare", "SharedRow"]

logger = logging.getLogger("brownout")

#: the reason of every transition the share causes; its own listener ignores them
SHARED = "shared by another process of this host"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,          -- open | half_open | closed
    owner TEXT NOT NULL,          -- the process that wrote it (pid-random)
    until REAL NOT NULL,          -- wall clock: end of the break, or of the probe lease
    generation INTEGER NOT NULL,  -- +1 on every change of state
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streaks (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    failures INTEGER NOT NULL,    -- this process's failures since its last success
    at REAL NOT NULL,             -- wall clock of the last update
    PRIMARY KEY (name, owner)
)
"""


@dataclass(frozen=True, slots=True)
class SharedRow:
    """One breaker's shared state as read from the file."""

    name: str
    state: str
    owner: str
    until: float
    generation: int
    reason: str


@dataclass(slots=True)
class _Attached:
    breaker: CircuitBreaker
    unsubscribe: Callable[[], None]
    #: the generation of the row this process last applied to its breaker (-1: none)
    applied: int = -1
    #: the breaker is open because of the row, not its own failures
    held: bool = False
    #: lifetime failures and successes read at the last sync, and the failures in a
    #: row since (as far as the poller can tell: a success in between resets it)
    seen_failures: int = 0
    seen_successes: int = 0
    streak: int = 0


class HostShare:
    """Share breaker state between the processes of one host through ``path`` (SQLite).

    ``poll_interval`` (seconds) bounds how long another process's verdict
    takes to arrive (the others reject within about one interval); ``lease``
    is how long an owner's probing claim lasts without being renewed (renewed
    every interval while it probes), so a dead owner is replaced after about
    ``lease`` seconds. ``poll_interval=None`` starts no thread: call
    :meth:`sync` yourself (tests do). ``clock`` is a wall clock shared by the
    processes (``time.time``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float | None = 0.2,
        lease: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if poll_interval is not None and not 0 < poll_interval <= 60:
            raise ValueError(f"HostShare poll_interval must be in (0, 60] s, got {poll_interval}")
        if not 0 < lease <= 3600:
            raise ValueError(f"HostShare lease must be in (0, 3600] s, got {lease}")
        if poll_interval is not None and lease <= 2 * poll_interval:
            raise ValueError(
                f"HostShare lease ({lease} s) must be more than twice poll_interval "
                f"({poll_interval} s): the owner renews it every interval"
            )
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.lease = lease
        self._clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.RLock()
        self._attached: dict[str, _Attached] = {}
        self._db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        self._db.isolation_level = None  # explicit transactions only
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # state, not data: a lost row is safe
            self._db.executescript(_SCHEMA)
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if poll_interval is not None:
            self._thread = threading.Thread(
                target=self._run, name=f"brownout-hostshare-{self.path.name}", daemon=True
            )
            self._thread.start()
            weakref.finalize(self, self._wake.set)

    # ------------------------------------------------------------------ public

    def attach(self, breaker: CircuitBreaker) -> Callable[[], None]:
        """Share ``breaker`` with the breakers of the same name in the host's other
        processes; returns a function that detaches it (its state stays as it is)."""
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"HostShare.attach needs a CircuitBreaker, got {breaker!r}")
        with self._lock:
            if self._closed:
                raise RuntimeError("HostShare is closed")
            if breaker.name in self._attached:
                raise ValueError(f"a breaker named {breaker.name!r} is already attached here")
            unsubscribe = breaker.add_listener(on_state_change=self._on_change)
            totals = breaker.totals()
            self._attached[breaker.name] = _Attached(
                breaker, unsubscribe, seen_failures=totals.failures, seen_successes=totals.successes
            )
        self.sync()

        def detach() -> None:
            with self._lock:
                attached = self._attached.pop(breaker.name, None)
            if attached is not None:
                attached.unsubscribe()

        return detach

    def rows(self) -> dict[str, SharedRow]:
        """Every breaker's shared state, by name."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT name, state, owner, until, generation, reason FROM breakers"
            )
            return {row[0]: SharedRow(*row) for row in cursor.fetchall()}

    def sync(self) -> None:
        """Apply the shared state to the attached breakers, and renew this process's
        probing leases (the poller does this every ``poll_interval``)."""
        now = self._clock()
        rows = self.rows()
        with self._lock:
            attached = list(self._attached.values())
        for item in attached:
            row = rows.get(item.breaker.name)
            if row is not None:
                self._apply(item, row, now)
            self._count(item, row, now)

    def close(self) -> None:
        """Stop the poller and close the file; attached breakers keep their state."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            attached = list(self._attached.values())
            self._attached.clear()
        for item in attached:
            item.unsubscribe()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            self._db.close()

    def __enter__(self) -> HostShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ inside

    def _run(self) -> None:
        assert self.poll_interval is not None
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.sync()
            except Exception:  # a locked or vanished file must not kill the poller
                logger.exception("brownout: HostShare %s: sync failed", self.path)

    def _write(self, sql: str, *args: object) -> int:
        with self._lock:
            if self._closed:
                return 0
            cursor = self._db.execute(sql, args)
            return cursor.rowcount

    def _on_change(self, event: StateChange) -> None:
        """A transition of an attached breaker: publish those it made on its own."""
        if event.reason.startswith(SHARED):
            return
        with self._lock:
            item = self._attached.get(event.breaker)
        if item is None:
            return
        item.held = False
        now = self._clock()
        to = event.to_state
        if to is State.OPEN and event.from_state is State.HALF_OPEN:
            row = self.rows().get(event.breaker)
            if (
                row is not None
                and row.owner != self.owner
                and row.state == "half_open"
                and row.until > now
            ):
                # a probe let through here after this process lost the claim (before the
                # poller held it open) failed: the owner's probes decide for the host, so
                # this verdict stays local; the poller holds this breaker open meanwhile
                self._wake.set()
                return
        if to in (State.OPEN, State.FORCED_OPEN):
            until = now + (event.open_for if event.open_for is not None else 365 * 86400.0)
            self._publish(event.breaker, "open", until, event.reason)
        elif to is State.HALF_OPEN:
            claimed = self._write(
                "UPDATE breakers SET state='half_open', owner=?, until=?, "
                "generation=generation+1, reason=? WHERE name=? "
                "AND (owner=? OR state='closed' OR until<?)",
                self.owner,
                now + self.lease,
                event.reason,
                event.breaker,
                self.owner,
                now,
            )
            if not claimed and event.breaker not in self.rows():
                self._publish(event.breaker, "half_open", now + self.lease, event.reason)
            elif not claimed:
                self._wake.set()  # another process probes: the poller holds this one open
        elif to in (State.CLOSED, State.DISABLED):
            self._publish(event.breaker, "closed", now, event.reason)

    def _publish(self, name: str, state: str, until: float, reason: str) -> None:
        if state in ("open", "closed"):  # a new verdict: the host's count starts again
            self._write("DELETE FROM streaks WHERE name=?", name)
        self._write(
            "INSERT INTO breakers (name, state, owner, until, generation, reason) "
            "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(name) DO UPDATE SET state=excluded.state, "
            "owner=excluded.owner, until=excluded.until, generation=generation+1, "
            "reason=excluded.reason",
            name,
            state,
            self.owner,
            until,
            reason,
        )
        with self._lock:
            item = self._attached.get(name)
        if item is not None:
            row = self.rows().get(name)
            if row is not None:
                item.applied = row.generation

    def _count(self, item: _Attached, row: SharedRow | None, now: float) -> None:
        """Host-wide failures in a row: each process publishes its own streak (read from
        the breaker's lifetime totals, nothing on the call path) and the breaker opens
        everywhere once their sum reaches its ``consecutive_failures``."""
        breaker = item.breaker
        totals = breaker.totals()
        failures = totals.failures - item.seen_failures
        successes = totals.successes - item.seen_successes
        item.seen_failures, item.seen_successes = totals.failures, totals.successes
        if breaker.state is not State.CLOSED:
            item.streak = 0
            return
        streak = 0 if successes else item.streak + failures
        if streak == item.streak:
            return
        item.streak = streak
        self._write(
            "INSERT INTO streaks (name, owner, failures, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, owner) DO UPDATE SET failures=excluded.failures, at=excluded.at",
            breaker.name,
            self.owner,
            streak,
            now,
        )
        threshold = breaker.config.consecutive_failures
        if not streak or threshold is None or (row is not None and row.state != "closed"):
            return
        with self._lock:
            (host,) = self._db.execute(
                "SELECT COALESCE(SUM(failures), 0) FROM streaks WHERE name=? AND at>?",
                (breaker.name, now - self.lease),
            ).fetchone()
        if host >= threshold:
            open_for = to_seconds(breaker.config.open_for)
            reason = f"{host} failures in a row across this host's processes >= {threshold}"
            self._publish(breaker.name, "open", now + open_for, reason)
            item.held = False
            breaker.force_open(f"{SHARED}: {reason}", duration=open_for)

    def _apply(self, item: _Attached, row: SharedRow, now: float) -> None:
        breaker = item.breaker
        state = breaker.state
        if row.owner == self.owner:
            if row.state == "half_open" and state is State.HALF_OPEN:
                self._write(  # renew the probing lease
                    "UPDATE breakers SET until=? WHERE name=? AND owner=?",
                    now + self.lease,
                    row.name,
                    self.owner,
                )
            return
        if row.state in ("open", "half_open") and row.until > now:
            # another process's break (or its probes): hold this breaker open without
            # counting a failure, past the row's end by one lease, so that a renewed
            # lease is followed before this breaker would half-open on its own, and a
            # dead owner is replaced about a lease after its row ran out
            if state in (State.FORCED_OPEN, State.DISABLED):
                return  # an operator's choice in this process wins
            remaining = row.until - now
            if state is State.OPEN and item.held and item.applied == row.generation:
                left = breaker.snapshot().retry_after
                if left is not None and left >= remaining + (self.poll_interval or 0.0):
                    return  # already held long enough
            item.held = True
            item.applied = row.generation
            breaker.force_open(f"{SHARED}: {row.reason}", duration=remaining + self.lease)
        elif row.state == "closed" and row.generation != item.applied:
            # another process closed it (its probes succeeded, or an operator reset it)
            item.held = False
            item.applied = row.generation
            if state in (State.OPEN, State.HALF_OPEN):
                breaker.reset(f"{SHARED}: {row.reason}")
