"""Priority shedding at a service's edge: the lowest request classes go first.

Every request has a :class:`Criticality` (``critical``, ``default``,
``sheddable``), read from its route. A :class:`Shedder` decides, as each
request arrives, whether to serve it, from two measures of overload and the
degradation level:

* **in flight**: the requests being served now (every class counts) over
  ``max_in_flight``;
* **queueing delay**: how late the event loop runs a callback it was asked to
  run now (sampled by :class:`SheddingMiddleware` every ``lag_interval``
  seconds): in an asyncio server, the time a request that is ready to run waits
  for the loop;
* **the level**: at ``MINIMAL`` sheddable requests are refused, at
  ``EMERGENCY`` default ones too (``shed_at_level``).

The *pressure* is the larger of ``in_flight / max_in_flight`` and
``delay / max_delay``. A ``sheddable`` request is refused from a pressure of
0.5, a ``default`` one from 1.0, a ``critical`` one never: the capacity above
the limit is kept for it. A refused request gets a 503 problem
(``application/problem+json``, code ``overloaded`` or ``shed_by_level``) with
``Retry-After`` and never reaches the application.

With ``max_queue_wait`` > 0, a ``default`` or ``sheddable`` request that the
load refuses *waits* instead, up to that long, for a request to finish
(:meth:`Shedder.acquire`): waiting requests are admitted most important class
first, in arrival order within a class, as the pressure falls below their
class's threshold; one that is still waiting when its time is up gets the
503. Critical requests are never refused: the other classes stop at
``max_in_flight``, and ``critical_reserve`` more slots (half of
``max_in_flight`` by default) are theirs alone, so a critical request that
comes while the others fill the limit is served at once. With a queue, one
that finds the reserve full too waits: first in line, admitted at the next
free slot, and after ``max_queue_wait`` at the latest whatever the load. A
waiting request costs no CPU, and its client does not send another one
meanwhile: under a flood the service keeps serving at its capacity,
``max_in_flight`` requests at a time, instead of spending it on refusals that
come straight back, and a critical request finds few requests ahead of it.

The shedder does no I/O and reads time from an injectable clock; its counts are
read by ``snapshot()`` (``/health``'s explanation, Prometheus, the status page).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

from brownout._aio import retrieve
from brownout._breaker import kill_switch_active
from brownout.health import Level
from brownout.web._asgi import _send_reply
from brownout.web._problem import problem

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from brownout.health import DegradationManager

__all__ = [
    "Criticality",
    "RouteCriticality",
    "ShedDecision",
    "Shedder",
    "SheddingMiddleware",
]


class Criticality(enum.Enum):
    """How much a request matters when the service cannot serve them all.

    >>> Criticality("sheddable").rank > Criticality.CRITICAL.rank
    True
    """

    CRITICAL = "critical"  # never shed: writes a user is waiting on (stock movements)
    DEFAULT = "default"  # shed when over the limit (reads)
    SHEDDABLE = "sheddable"  # shed first (reports, suggestions, batch-like work)

    @property
    def rank(self) -> int:
        """0 for critical, 2 for sheddable: a larger rank is shed earlier."""
        return _RANK[self]


_RANK = {Criticality.CRITICAL: 0, Criticality.DEFAULT: 1, Criticality.SHEDDABLE: 2}

logger = logging.getLogger(__name__)


#: Pressure (in-flight or delay over its limit) from which a class is shed; critical: never.
DEFAULT_SHED_AT: Mapping[Criticality, float] = {
    Criticality.SHEDDABLE: 0.5,
    Criticality.DEFAULT: 1.0,
}

#: The best level at which a class is shed whatever the load; critical: never.
DEFAULT_SHED_AT_LEVEL: Mapping[Criticality, Level] = {
    Criticality.SHEDDABLE: Level.MINIMAL,
    Criticality.DEFAULT: Level.EMERGENCY,
}


@dataclass(frozen=True, slots=True)
class ShedDecision:
    """Why a request was refused: ``reason`` is ``"overload"``, ``"level"`` or ``"gone"``
    (its client closed the connection while it waited: nothing is sent)."""

    criticality: Criticality
    reason: str
    retry_after: float
    detail: str


def _check_fraction_map(name: str, value: Mapping[Criticality, float]) -> dict[Criticality, float]:
    out: dict[Criticality, float] = {}
    for key, fraction in value.items():
        if not isinstance(key, Criticality):
            raise TypeError(f"Shedder {name} keys must be Criticality values, got {key!r}")
        if key is Criticality.CRITICAL:
            raise ValueError(f"Shedder {name}: critical requests are never shed")
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction <= 10
        ):
            raise ValueError(f"Shedder {name}[{key.value}] must be > 0 and <= 10, got {fraction!r}")
        out[key] = float(fraction)
    return out


class Shedder:
    """Admission by request class; see the module docstring for the rules.

    >>> from brownout.testing import FakeClock
    >>> shedder = Shedder(max_in_flight=2, clock=FakeClock())
    >>> shedder.admit(Criticality.DEFAULT) is None  # served: release() when done
    True
    >>> shedder.admit(Criticality.SHEDDABLE).reason  # 1 of 2 in flight: pressure 0.5
    'overload'
    >>> shedder.admit(Criticality.DEFAULT) is None, shedder.admit(Criticality.CRITICAL) is None
    (True, True)
    >>> shedder.admit(Criticality.DEFAULT).reason  # 3 of 2: only critical ones now
    'overload'

    ``manager``: shed by degradation level too (``shed_at_level``).
    ``max_queue_wait`` (seconds, 0: refuse at once) and ``max_queued`` (how many
    may wait at once; default 16 x ``max_in_flight``): see :meth:`acquire`.
    ``critical_reserve``: slots over ``max_in_flight`` that only critical requests
    take (default ``max_in_flight // 2``). Not
    thread-safe: one shedder serves one event loop (the ASGI middleware's).
    Under the kill switch (``BROWNOUT_DISABLED=1`` when it is created) it
    admits everything and only counts.
    """

    def __init__(
        self,
        *,
        max_in_flight: int = 64,
        max_delay: float = 0.2,
        shed_at: Mapping[Criticality, float] = DEFAULT_SHED_AT,
        shed_at_level: Mapping[Criticality, Level] = DEFAULT_SHED_AT_LEVEL,
        manager: DegradationManager | None = None,
        retry_after: float = 1.0,
        clock: Callable[[], float] | None = None,
        max_queue_wait: float = 0.0,
        max_queued: int | None = None,
        critical_reserve: int | None = None,
    ) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise TypeError(f"Shedder max_in_flight must be an int, got {max_in_flight!r}")
        if max_in_flight < 1:
            raise ValueError(f"Shedder max_in_flight must be >= 1, got {max_in_flight}")
        if not isinstance(max_delay, int | float) or not (
            math.isfinite(max_delay) and max_delay > 0
        ):
            raise ValueError(f"Shedder max_delay must be > 0 seconds, got {max_delay!r}")
        if not isinstance(retry_after, int | float) or not (
            math.isfinite(retry_after) and retry_after > 0
        ):
            raise ValueError(f"Shedder retry_after must be > 0 seconds, got {retry_after!r}")
        if not isinstance(max_queue_wait, int | float) or not (
            math.isfinite(max_queue_wait) and max_queue_wait >= 0
        ):
            raise ValueError(f"Shedder max_queue_wait must be >= 0 seconds, got {max_queue_wait!r}")
        if max_queued is None:
            max_queued = 16 * max_in_flight
        if isinstance(max_queued, bool) or not isinstance(max_queued, int) or max_queued < 0:
            raise ValueError(f"Shedder max_queued must be an int >= 0, got {max_queued!r}")
        if critical_reserve is None:
            critical_reserve = max_in_flight // 2
        if (
            isinstance(critical_reserve, bool)
            or not isinstance(critical_reserve, int)
            or critical_reserve < 0
        ):
            raise ValueError(
                f"Shedder critical_reserve must be an int >= 0, got {critical_reserve!r}"
            )
        self.max_in_flight = max_in_flight
        self.critical_reserve = critical_reserve
        self.max_delay = float(max_delay)
        self.max_queue_wait = float(max_queue_wait)
        self.max_queued = max_queued
        self.shed_at = _check_fraction_map("shed_at", shed_at)
        for key, level in shed_at_level.items():
            # a key that is not a Criticality ("sheddable", "urgent") would never match a
            # request: the level would silently shed nothing
            if not isinstance(key, Criticality):
                raise TypeError(
                    f"Shedder shed_at_level keys must be Criticality values, got {key!r}"
                )
            if key is Criticality.CRITICAL:
                raise ValueError("Shedder shed_at_level: critical requests are never shed")
            if not isinstance(level, Level):
                raise TypeError(f"Shedder shed_at_level[{key}] must be a Level, got {level!r}")
        self.shed_at_level = dict(shed_at_level)
        self.manager = manager
        self.retry_after = float(retry_after)
        self._clock = clock or monotonic
        self._in_flight = dict.fromkeys(Criticality, 0)
        self._total = 0
        self._delay = 0.0
        self._peak_in_flight = 0
        self.admitted = dict.fromkeys(Criticality, 0)
        self.shed: dict[tuple[Criticality, str], int] = {
            (c, reason): 0 for c in Criticality for reason in ("overload", "level")
        }
        self._last_shed: float | None = None
        self.disabled = kill_switch_active()
        # requests waiting for a slot (acquire), by class; a done future is a waiter that
        # gave up (dropped when it reaches the head)
        self._queues: dict[Criticality, deque[asyncio.Future[None]]] = {
            c: deque() for c in Criticality
        }
        self._queued = dict.fromkeys(Criticality, 0)
        self._queued_total = 0
        self._peak_queued = 0
        self.waited = dict.fromkeys(Criticality, 0)  # admitted after waiting
        self.abandoned = dict.fromkeys(Criticality, 0)  # client gone while waiting

    # ------------------------------------------------------------------ signals

    @property
    def in_flight(self) -> int:
        return self._total

    @property
    def delay(self) -> float:
        """The last measured queueing delay (seconds)."""
        return self._delay

    def observe_delay(self, seconds: float) -> None:
        """Record a measured queueing delay (the middleware's event-loop lag sampler)."""
        if math.isfinite(seconds):
            self._delay = max(0.0, float(seconds))
            if self._queued_total:
                self._dispatch()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now (:meth:`acquire`)."""
        return self._queued_total

    @property
    def pressure(self) -> float:
        """``max(in_flight / max_in_flight, delay / max_delay)``: 1.0 = at the limit."""
        return max(self._total / self.max_in_flight, self._delay / self.max_delay)

    def shedding(self) -> list[str]:
        """The classes a request would be refused in now (``critical`` never)."""
        out: list[str] = []
        if self.disabled:
            return out
        level = self.manager.level if self.manager is not None else None
        for c in Criticality:
            if self._reason(c, self._total, level) is not None:
                out.append(c.value)
        return out

    # ---------------------------------------------------------------- admission

    def _reason(self, c: Criticality, in_flight: int, level: Level | None) -> str | None:
        if c is Criticality.CRITICAL:
            # never shed; with a queue (acquire) it waits while the in-flight limit is full
            return None
        if level is not None:
            at = self.shed_at_level.get(c)
            if at is not None and level >= at:
                return "level"
        at_pressure = self.shed_at.get(c)
        if at_pressure is not None:
            pressure = max(in_flight / self.max_in_flight, self._delay / self.max_delay)
            if pressure >= at_pressure:
                return "overload"
        return None

    def admit(self, criticality: Criticality) -> ShedDecision | None:
        """``None``: serve it (and call :meth:`release` when done); else why it is refused.

        Refuses at once (no waiting): :meth:`acquire` is the waiting one."""
        level = self.manager.level if self.manager is not None else None
        reason = None if self.disabled else self._reason(criticality, self._total, level)
        if reason is None:
            self._admit(criticality)
            return None
        return self._refuse(criticality, reason, level)

    async def acquire(
        self,
        criticality: Criticality,
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> ShedDecision | None:
        """:meth:`admit`, except that a request the load refuses (not the level) waits up
        to ``max_queue_wait`` for a slot, behind those of its class and of more important
        classes already waiting; at most ``max_queued`` wait at once (beyond, refused at
        once). A critical request waits while ``max_in_flight + critical_reserve``
        requests are in flight (first in line), then is served whatever the load.
        ``None``: serve it, then :meth:`release`.

        ``gone``: called only if the request has to wait; what it returns completes when
        the client has gone (closed its connection). A request whose client is gone
        before its slot comes leaves the queue (reason ``"gone"``, counted in
        ``abandoned``): nobody would read its answer, and serving it would delay the
        requests whose clients still wait."""
        if self.disabled or self.max_queue_wait <= 0:
            return self.admit(criticality)
        level = self.manager.level if self.manager is not None else None
        reason = self._queue_reason(criticality, self._total, level)
        if reason is None and not self._waiting_before(criticality):
            self._admit(criticality)
            return None
        if reason == "level" or self._queued_total >= self.max_queued:
            if criticality is Criticality.CRITICAL:
                self._admit(criticality)  # never refused
                return None
            return self._refuse(criticality, reason or "overload", level)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[criticality].append(waiter)
        self._queued[criticality] += 1
        self._queued_total += 1
        self._peak_queued = max(self._peak_queued, self._queued_total)
        self._dispatch()  # a slot may be free already (those before it are admitted first)
        watch = None if gone is None or waiter.done() else asyncio.ensure_future(gone())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_queue_wait
        try:
            while True:
                await asyncio.wait(
                    (waiter,) if watch is None else (waiter, watch),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiter.done() or watch is None or not watch.done():
                    break
                if not watch.cancelled() and watch.exception() is None:
                    break  # the client is gone
                # the watch failed (receive() raised; the exception is retrieved here, so
                # nothing is logged as "never retrieved"): not a sign that the client
                # left: the request waits on, unwatched
                logger.debug("shedder: watching a waiting request's client failed: %r", watch)
                watch = None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(criticality)  # admitted as it was cancelled: give the slot back
            else:
                self._give_up(criticality, waiter)
            raise
        finally:
            if watch is not None:
                if watch.done():
                    retrieve(watch)
                else:
                    watch.cancel()
        if waiter.done():
            self.waited[criticality] += 1
            return None  # admitted by _dispatch (counted in flight there)
        self._give_up(criticality, waiter)
        if watch is not None and watch.done() and not watch.cancelled():
            self.abandoned[criticality] += 1
            return ShedDecision(
                criticality, "gone", 0.0, "the client closed its connection while waiting"
            )
        if criticality is Criticality.CRITICAL:
            self.waited[criticality] += 1
            self._admit(criticality)  # waited long enough: served over the limit
            return None
        level = self.manager.level if self.manager is not None else None
        return self._refuse(criticality, "overload", level, waited=self.max_queue_wait)

    def _queue_reason(self, c: Criticality, in_flight: int, level: Level | None) -> str | None:
        """:meth:`_reason`, and a critical request waits (first) while the limit is full."""
        if c is Criticality.CRITICAL:
            limit = self.max_in_flight + self.critical_reserve
            return "overload" if in_flight >= limit else None
        return self._reason(c, in_flight, level)

    def _waiting_before(self, criticality: Criticality) -> bool:
        """Requests of this class or a more important one are waiting for a slot."""
        return any(n for c, n in self._queued.items() if n and c.rank <= criticality.rank)

    def _give_up(self, criticality: Criticality, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()  # left in its queue: _dispatch drops it when it reaches the head
        self._queued[criticality] -= 1
        self._queued_total -= 1

    def _dispatch(self) -> None:
        """Admit waiting requests, most important class first, while the load allows."""
        level = self.manager.level if self.manager is not None else None
        for c in sorted(self._queues, key=lambda c: c.rank):
            queue = self._queues[c]
            while queue:
                waiter = queue[0]
                if waiter.done():  # gave up
                    queue.popleft()
                    continue
                if self._queue_reason(c, self._total, level) is not None:
                    return  # and the less important classes wait too
                queue.popleft()
                self._queued[c] -= 1
                self._queued_total -= 1
                self._admit(c)
                waiter.set_result(None)

    def _admit(self, criticality: Criticality) -> None:
        self._in_flight[criticality] += 1
        self._total += 1
        self._peak_in_flight = max(self._peak_in_flight, self._total)
        self.admitted[criticality] += 1

    def _refuse(
        self, criticality: Criticality, reason: str, level: Level | None, waited: float = 0.0
    ) -> ShedDecision:
        self.shed[criticality, reason] += 1
        self._last_shed = self._clock()
        if reason == "level":
            assert level is not None
            wait = self.manager.retry_after() if self.manager is not None else self.retry_after
            detail = (
                f"{criticality.value} requests are not served at level {level.name}: "
                "the service keeps its capacity for critical ones"
            )
        else:
            wait = self.retry_after
            detail = (
                f"the service is overloaded ({self._total} requests in flight, "
                f"{self._delay * 1000:.0f} ms queueing delay"
                + (f", waited {waited:g} s for a slot" if waited else "")
                + f"): {criticality.value} requests are refused until it catches up; "
                "critical ones are still served"
            )
        return ShedDecision(criticality, reason, wait, detail)

    def release(self, criticality: Criticality) -> None:
        """A request admitted by :meth:`admit` or :meth:`acquire` is done."""
        self._in_flight[criticality] -= 1
        self._total -= 1
        if self._queued_total:
            self._dispatch()

    def snapshot(self) -> dict[str, Any]:
        """Counts and settings, numbers and class names only (safe to show anyone)."""
        last = self._last_shed
        return {
            "in_flight": self._total,
            "in_flight_by_class": {c.value: n for c, n in self._in_flight.items()},
            "peak_in_flight": self._peak_in_flight,
            "max_in_flight": self.max_in_flight,
            "critical_reserve": self.critical_reserve,
            "queued": self._queued_total,
            "queued_by_class": {c.value: n for c, n in self._queued.items()},
            "peak_queued": self._peak_queued,
            "max_queued": self.max_queued,
            "max_queue_wait_ms": round(self.max_queue_wait * 1000, 3),
            "waited": {c.value: n for c, n in self.waited.items()},
            "abandoned": {c.value: n for c, n in self.abandoned.items()},
            "delay_ms": round(self._delay * 1000, 3),
            "max_delay_ms": round(self.max_delay * 1000, 3),
            "pressure": round(self.pressure, 4),
            "shedding": self.shedding(),
            "shed_at": {c.value: f for c, f in self.shed_at.items()},
            "shed_at_level": {c.value: lvl.name for c, lvl in self.shed_at_level.items()},
            "admitted": {c.value: n for c, n in self.admitted.items()},
            "shed": {
                c.value: {reason: self.shed[c, reason] for reason in ("overload", "level")}
                for c in Criticality
            },
            "last_shed_s_ago": None if last is None else round(self._clock() - last, 3),
            "disabled": self.disabled,
        }


# --------------------------------------------------------------------------- routes

_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")


def _template_regex(template: str) -> re.Pattern[str]:
    """``/products/{sku}`` -> a regex matching one path segment per parameter
    (``{name:path}`` matches the rest of the path, as in Starlette)."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(".+" if m.group(2) == "path" else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


class RouteCriticality:
    """Each request's class from its method and route: ``"POST /products/{sku}/movements"``.

    ``routes`` maps ``"METHOD /template"`` (or ``"* /template"`` for any
    method) to a :class:`Criticality` or its name; the first matching entry
    wins, in the order given. ``exempt``: path prefixes that are neither
    counted nor shed (health checks, metrics, the status page: they must
    answer at every level). Anything else is ``default``.

    >>> classify = RouteCriticality({"POST /products/{sku}/movements": "critical"})
    >>> classify("POST", "/products/A-1/movements")
    <Criticality.CRITICAL: 'critical'>
    >>> classify("GET", "/products/A-1/movements")
    <Criticality.DEFAULT: 'default'>
    """

    def __init__(
        self,
        routes: Mapping[str, Criticality | str],
        *,
        default: Criticality | str = Criticality.DEFAULT,
        exempt: Iterable[str] = (),
    ) -> None:
        self.default = _criticality(default, "default")
        self.exempt = tuple(exempt)
        self.rules: list[tuple[str, str, re.Pattern[str], Criticality]] = []
        for key, value in routes.items():
            method, template = _split_route(key)
            self.rules.append(
                (method, template, _template_regex(template), _criticality(value, key))
            )

    @property
    def templates(self) -> list[tuple[str, str]]:
        """The configured ``(method, template)`` pairs (to check them against an app's routes)."""
        return [(method, template) for method, template, _, _ in self.rules]

    def __call__(self, method: str, path: str) -> Criticality | None:
        """The request's class; ``None`` for an exempt path."""
        if path.startswith(self.exempt) if self.exempt else False:
            return None
        for rule_method, _, regex, criticality in self.rules:
            if rule_method in ("*", method) and regex.match(path):
                return criticality
        return self.default

    def to_dict(self) -> dict[str, str]:
        return {f"{m} {t}": c.value for m, t, _, c in self.rules}


def _criticality(value: Criticality | str, where: str) -> Criticality:
    if isinstance(value, Criticality):
        return value
    try:
        return Criticality(str(value).strip().lower())
    except ValueError:
        names = ", ".join(c.value for c in Criticality)
        raise ValueError(f"route criticality {where!r}: {value!r} is not one of {names}") from None


_METHODS = frozenset({"*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _split_route(key: str) -> tuple[str, str]:
    parts = str(key).split()
    if len(parts) != 2 or parts[0].upper() not in _METHODS or not parts[1].startswith("/"):
        raise ValueError(
            f"a route is 'METHOD /path/{{param}}' (METHOD one of {', '.join(sorted(_METHODS))}),"
            f" got {key!r}"
        )
    return parts[0].upper(), parts[1]


# --------------------------------------------------------------------------- middleware


class _ClientGone:
    """While a request waits for a slot: has its client closed the connection?

    ASGI says so only through ``receive()`` (``http.disconnect``), which also hands out
    the request's body. :meth:`wait` reads the first message and keeps it for the
    application (:meth:`receive` hands it back first); if the body is all there, the next
    message can only be the disconnect. A body that comes in several messages is not read
    further (the queue does not hold bodies): such a request is watched no more.
    """

    __slots__ = ("_receive", "read")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.read: list[Message] = []

    async def wait(self) -> None:
        """Returns once the client is gone (cancelled when the request leaves the queue)."""
        while True:
            message = await self._receive()
            self.read.append(message)
            if message["type"] == "http.disconnect":
                return
            if message.get("more_body", False):
                await asyncio.get_running_loop().create_future()  # until cancelled

    async def receive(self) -> Message:
        if self.read:
            return self.read.pop(0)
        return await self._receive()


class SheddingMiddleware:
    """Pure ASGI middleware: refuse the lowest request classes first under overload.

    ``classify(method, path)`` gives a request's :class:`Criticality` (``None``:
    exempt); :class:`RouteCriticality` is the usual one. A refused request gets
    the shedder's 503 problem with ``Retry-After``; an admitted one is counted
    in flight until its response is sent (or it fails). While requests come, a
    task samples the event loop's lag every ``lag_interval`` seconds and feeds
    ``shedder.observe_delay`` the *smallest* lag of the last ``delay_window``
    seconds: as in CoDel (Nichols and Jacobson, "Controlling Queue Delay", ACM
    Queue 2012), a queue that drains between bursts is good, one that stands is
    the overload; a single stall (a garbage collection, a slow callback) sheds
    nothing. It stops on its own after ``idle_after`` seconds without a request.

    FastAPI: ``app.add_middleware(SheddingMiddleware, shedder=..., classify=...)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        shedder: Shedder,
        classify: Callable[[str, str], Criticality | None],
        *,
        lag_interval: float = 0.05,
        delay_window: float = 1.0,
        idle_after: float = 5.0,
    ) -> None:
        if not lag_interval > 0:
            raise ValueError(f"SheddingMiddleware lag_interval must be > 0, got {lag_interval!r}")
        self.app = app
        self.shedder = shedder
        self.classify = classify
        self.lag_interval = float(lag_interval)
        if not delay_window >= lag_interval:
            raise ValueError(
                f"SheddingMiddleware delay_window must be >= lag_interval, got {delay_window!r}"
            )
        self.delay_window = float(delay_window)
        self.idle_after = float(idle_after)
        self._sampler: asyncio.Task[None] | None = None
        self._last_request = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        criticality = self.classify(scope["method"], scope["path"])
        if criticality is None:
            await self.app(scope, receive, send)
            return
        self._last_request = monotonic()
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample_lag())
        watch = _ClientGone(receive)
        decision = await self.shedder.acquire(criticality, watch.wait)
        if decision is not None:
            if decision.reason == "gone":
                return  # nobody to answer
            code = "overloaded" if decision.reason == "overload" else "shed_by_level"
            reply = problem(
                503,
                code,
                decision.detail,
                retry_after=decision.retry_after,
                criticality=criticality.value,
            )
            await _send_reply(send, reply)
            return
        try:
            await self.app(scope, watch.receive if watch.read else receive, send)
        finally:
            self.shedder.release(criticality)

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.lag_interval
        size = max(1, round(self.delay_window / interval))
        samples = deque([0.0] * size, maxlen=size)  # a full window of lag before shedding
        while monotonic() - self._last_request < self.idle_after:
            start = loop.time()
            await asyncio.sleep(interval)
            samples.append(max(0.0, loop.time() - start - interval))
            self.shedder.observe_delay(min(samples))
        self.shedder.observe_delay(0.0)

    async def aclose(self) -> None:
        """Stop the lag sampler (it also stops on its own once requests stop)."""
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
