"""Bulkhead: a limit on the concurrent calls to one dependency, with a bounded wait.

One object serves threads and coroutines alike (a dependency is often reached
from both: a sync worker thread and the event loop). The state (permits in
use, the limit, the queue of waiters) lives under one ``threading.Lock`` that
is only ever held for a few attribute updates, never across a wait or the
guarded call:

- fast path, fixed limit: the free permits are tokens in a ``deque``;
  ``pop()`` takes one and ``append()`` gives it back, both atomic (one C call
  under the GIL), so a caller that finds a token and nobody queued takes no
  lock at all. The lock is taken only to queue, and by a release that finds
  waiters. A waiter re-checks the tokens after it has joined the queue and a
  release checks the queue after it has put its token back, so a token given
  back while a waiter was joining is never left unclaimed;
- fast path, adaptive limit: a free permit and nobody queued ⇒ take it (one
  lock round trip: the policy's limit and the count in use change together);
- otherwise, if a wait is allowed and the queue is not full, join a FIFO queue
  of waiters; a release hands its permit directly to the first waiter (marks
  it granted under the lock, then wakes it), so a late-comer can never
  overtake a queued caller and the count of permits in use stays exact;
- a waiter that times out or is cancelled takes the lock and looks at its own
  ``granted`` flag: not granted ⇒ it leaves the queue; granted meanwhile ⇒ it
  keeps the permit (timeout) or passes it on (cancellation).

The limit is fixed or adaptive (:class:`~brownout.overload.Gradient2`): an
adaptive policy is told every call's round-trip time when its permit is
released and may lower the limit below the permits in use; nobody is then
admitted until enough calls finished.

Under the kill switch (``BROWNOUT_DISABLED=1`` when the bulkhead is created, as
for breakers) a bulkhead admits every call at once: it never waits and never
refuses, and still counts the calls in flight (and their peak) and tells an
adaptive policy every round-trip time (it learns; its limit is not applied).
That bulkhead takes the locked path (no tokens) and is switched to a subclass
whose ``_grab_locked`` always succeeds, at construction: an enabled bulkhead's
paths carry no check for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, TypeVar

from brownout._breaker import kill_switch_active
from brownout._clock import Clock, Duration, monotonic, to_seconds
from brownout._errors import BulkheadFull
from brownout.overload._limit import LimitPolicy

__all__ = ["Bulkhead", "BulkheadSnapshot", "Permit"]

P = ParamSpec("P")
R = TypeVar("R")

#: weight of the newest hold time in the average that ``retry_after`` reports
_EWMA = 0.1
#: a fixed limit times one call in ``_SAMPLE_MASK + 1`` (and every call until the
#: first was timed): two clock reads are a fifth of an acquire/release pair's cost
_SAMPLE_MASK = 7
#: the largest fixed limit (its free permits are a deque of tokens: a typo such as
#: ``10**12`` would take all memory) and the longest wait (a longer one cannot be a
#: bounded wait, and past ``threading.TIMEOUT_MAX`` the first queued thread would get an
#: ``OverflowError`` instead of a permit)
MAX_LIMIT = 1_000_000
MAX_WAIT = 3600.0


class _Waiter:
    """One queued caller: a thread (``event``) or a coroutine (``loop``/``future``)."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self,
        event: threading.Event | None,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[None] | None,
    ) -> None:
        self.event = event
        self.loop = loop
        self.future = future
        self.granted = False

    def wake(self) -> None:
        """Wake the waiter (called after ``granted`` was set, outside the lock)."""
        if self.event is not None:
            self.event.set()
            return
        assert self.loop is not None
        assert self.future is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            _resolve(self.future)
        else:
            # a closed loop raises RuntimeError: its waiter is gone with it
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A bulkhead at one moment, for metrics and the health score.

    ``saturation`` is ``in_use / limit`` (above 1.0 while an adaptive limit has
    just been lowered below the calls already running); ``admitted`` counts
    permits given (at once or after a wait), ``rejected`` the calls refused
    with :class:`~brownout.BulkheadFull`, ``waited`` the admitted calls that
    had to queue.

    ``disabled``: built under the kill switch (``BROWNOUT_DISABLED=1``): every
    call is admitted at once, ``limit`` is what it would be (an adaptive
    policy's latest) and is not applied, ``saturation`` may pass 1.0, and
    ``peak_in_use`` is the most calls that were in flight at once (``None``
    for an enabled bulkhead: it never holds more than its limit).
    """

    name: str
    limit: int
    in_use: int
    waiting: int
    saturation: float
    admitted: int
    rejected: int
    waited: int
    adaptive: bool
    mean_hold: float | None
    disabled: bool = False
    peak_in_use: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "in_use": self.in_use,
            "waiting": self.waiting,
            "saturation": self.saturation,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "waited": self.waited,
            "adaptive": self.adaptive,
            "mean_hold": self.mean_hold,
            "disabled": self.disabled,
            "peak_in_use": self.peak_in_use,
        }


class Permit:
    """One admission to a bulkhead; also the ``with`` / ``async with`` object.

    ``bulkhead.acquire()`` returns an unacquired permit: ``with`` takes it
    (waiting in the thread), ``async with`` takes it (waiting in the event
    loop), and leaving the block releases it. An error that matches the
    bulkhead's ``drop_on`` (timeouts by default) tells an adaptive limit that
    the call was dropped. :meth:`release` is idempotent.

    A permit from :meth:`Bulkhead.try_acquire` is already held: release it in
    a ``finally``.
    """

    __slots__ = ("_bulkhead", "_held", "_inflight", "_start", "_timeout")

    def __init__(self, bulkhead: Bulkhead, timeout: float | None) -> None:
        self._bulkhead = bulkhead
        self._timeout = timeout
        self._held = False
        self._start = 0.0
        self._inflight = 0

    @property
    def held(self) -> bool:
        return self._held

    def release(self, *, dropped: bool = False) -> None:
        """Give the permit back; ``dropped`` tells an adaptive limit the call timed out
        or was refused for overload. Does nothing if the permit is not held."""
        if self._held:
            self._held = False
            bh = self._bulkhead
            if bh._tokens is not None:
                bh._give_back(self)
            else:
                bh._release(self, dropped)

    def __enter__(self) -> Permit:
        bh = self._bulkhead
        tokens = bh._tokens
        if tokens is not None and not bh._waiters:
            # the fixed-limit fast path inlined: no lock, no extra Python frame
            try:
                tokens.pop()
            except IndexError:
                pass
            else:
                # ``+=`` on a slot is not interrupted by a thread switch under the GIL
                bh._admitted += 1
                self._held = True
                if bh._admitted & _SAMPLE_MASK and bh._hold >= 0:
                    self._start = -1.0  # not timed
                else:
                    self._start = bh._clock()
                return self
        bh._acquire_sync(self, self._timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._held:
            self._held = False
            bh = self._bulkhead
            tokens = bh._tokens
            if tokens is not None:
                if self._start >= 0:
                    # the hold time only feeds ``retry_after``'s average; a lost
                    # update between threads costs that average one sample
                    held = bh._clock() - self._start
                    hold = bh._hold
                    bh._hold = held if hold < 0 else hold + (held - hold) * _EWMA
                tokens.append(None)
                if bh._waiters:
                    bh._hand_off()
            else:
                bh._release(self, exc is not None and isinstance(exc, bh._drop_on))

    def _try_now(self) -> bool:
        """The fixed-limit fast path of ``__enter__`` (no lock, no wait): True if taken."""
        bh = self._bulkhead
        tokens = bh._tokens
        if tokens is None or bh._waiters:
            return False
        try:
            tokens.pop()
        except IndexError:
            return False
        bh._admitted += 1
        self._held = True
        if bh._admitted & _SAMPLE_MASK and bh._hold >= 0:
            self._start = -1.0
        else:
            self._start = bh._clock()
        return True

    async def __aenter__(self) -> Permit:
        if not self._try_now():
            await self._bulkhead._acquire_async(self, self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._held:
            self._held = False
            bh = self._bulkhead
            if bh._tokens is not None:
                bh._give_back(self)
            else:
                bh._release(self, exc is not None and isinstance(exc, bh._drop_on))


class Bulkhead:
    """At most ``limit`` concurrent calls to one dependency; the rest wait up to
    ``max_wait`` seconds in a queue of at most ``max_waiting`` callers, then are
    refused with :class:`~brownout.BulkheadFull` (which carries ``retry_after``:
    the mean time a permit is held, a fair guess of when one comes free).

    ``limit`` is a number (fixed) or a :class:`~brownout.overload.LimitPolicy`
    such as :class:`~brownout.overload.Gradient2` (adaptive: the limit follows
    the observed latency). ``max_waiting=None`` means "as many as the current
    limit", so an adaptive bulkhead also queues less when its limit shrinks.

    Under the kill switch (``BROWNOUT_DISABLED=1`` in the environment when it is
    created) it admits every call at once and only counts: :attr:`disabled`
    is True, and ``snapshot()`` says so (see the module docstring).

    >>> from brownout.overload import Bulkhead
    >>> bh = Bulkhead("redis", limit=2)
    >>> with bh.acquire():
    ...     bh.in_use
    1
    >>> a, b = bh.try_acquire(), bh.try_acquire()
    >>> bh.try_acquire() is None, bh.saturation
    (True, 1.0)
    >>> a.release(); b.release()
    >>> bh.call(len, "abc")
    3
    """

    __slots__ = (
        "_admitted",
        "_clock",
        "_drop_on",
        "_hold",
        "_in_use",
        "_limit",
        "_lock",
        "_peak",
        "_policy",
        "_rejected",
        "_tokens",
        "_waited",
        "_waiters",
        "max_wait",
        "max_waiting",
        "name",
    )

    #: built under the kill switch: admits every call (set by the subclass it is switched to)
    disabled: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        *,
        limit: int | LimitPolicy = 10,
        max_wait: Duration = 0.0,
        max_waiting: int | None = None,
        drop_on: tuple[type[BaseException], ...] = (TimeoutError,),
        clock: Clock = monotonic,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Bulkhead.name must be a non-empty string, got {name!r}")
        self.name = name
        self._policy: LimitPolicy | None
        if isinstance(limit, LimitPolicy):
            self._policy = limit
            self._limit = limit.limit
        elif isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(
                f"Bulkhead.limit must be an integer >= 1 and <= {MAX_LIMIT} or a LimitPolicy "
                f"(e.g. Gradient2), got {limit!r}"
            )
        else:
            self._policy = None
            self._limit = limit
        try:
            wait = to_seconds(max_wait)
        except TypeError as exc:
            raise TypeError(f"Bulkhead.max_wait: {exc}") from None
        if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT:
            raise ValueError(
                f"Bulkhead.max_wait must be >= 0 and <= {MAX_WAIT:g} seconds, got {max_wait!r}"
            )
        self.max_wait = wait
        if max_waiting is not None and (
            isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0
        ):
            raise ValueError(
                f"Bulkhead.max_waiting must be an integer >= 0 or None (= the limit), "
                f"got {max_waiting!r}"
            )
        self.max_waiting = max_waiting
        if not isinstance(drop_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in drop_on
        ):
            raise TypeError(f"Bulkhead.drop_on must be a tuple of exception types, got {drop_on!r}")
        self._drop_on = drop_on
        self._clock = clock
        self._lock = threading.Lock()
        self._in_use = 0  # adaptive limit only; a fixed limit counts its free tokens
        # fixed limit: one token per free permit (see the module's docstring)
        self._tokens: deque[None] | None = (
            deque([None] * self._limit) if self._policy is None else None
        )
        self._waiters: deque[_Waiter] = deque()
        self._admitted = 0
        self._rejected = 0
        self._waited = 0
        self._hold = -1.0  # mean hold time (s); < 0 until the first release
        self._peak = 0  # most permits in use at once (counted under the kill switch only)
        if kill_switch_active():
            # no tokens: every acquire takes the locked path, whose _grab_locked the
            # subclass makes always succeed (nothing waits, nothing is refused)
            self._tokens = None
            self.__class__ = _unguarded(type(self))

    # -- reading -------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def policy(self) -> LimitPolicy | None:
        """The adaptive limit policy, ``None`` for a fixed limit."""
        return self._policy

    @property
    def in_use(self) -> int:
        tokens = self._tokens
        return self._in_use if tokens is None else self._limit - len(tokens)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def saturation(self) -> float:
        """Permits in use / limit: the signal a health score reads (1.0 = full)."""
        return self.in_use / self._limit

    def snapshot(self) -> BulkheadSnapshot:
        with self._lock:
            in_use = self.in_use
            return BulkheadSnapshot(
                name=self.name,
                limit=self._limit,
                in_use=in_use,
                waiting=len(self._waiters),
                saturation=in_use / self._limit,
                admitted=self._admitted,
                rejected=self._rejected,
                waited=self._waited,
                adaptive=self._policy is not None,
                mean_hold=None if self._hold < 0 else self._hold,
                disabled=self.disabled,
                peak_in_use=self._peak if self.disabled else None,
            )

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, in_use={self.in_use}, limit={self._limit})"

    def refresh_limit(self) -> int:
        """Read the policy's limit now, and return the limit in force.

        A bulkhead reads its policy's limit after every call; a policy whose limit
        also changes between calls (inventario's level-scaled limits, on a change of
        degradation level) is read again with this, so the next call has the new
        limit, and callers queued for a permit are let in at once if it grew (a
        smaller limit takes no permit back: the ones held finish). A fixed limit has
        nothing to read.
        """
        policy = self._policy
        if policy is None:
            return self._limit
        with self._lock:
            self._limit = max(1, policy.limit)
            woken = self._next_locked() if self._waiters else ()
        for waiter in woken:
            waiter.wake()
        return self._limit

    # -- acquiring -----------------------------------------------------------------------

    def acquire(self, *, timeout: Duration | None = None) -> Permit:
        """A permit to take with ``with`` (blocking the thread) or ``async with``
        (waiting in the loop); ``timeout`` overrides ``max_wait`` for this call."""
        permit = _new_permit(Permit)  # no Python ``__init__`` frame: this is the hot path
        permit._bulkhead = self
        permit._timeout = None if timeout is None else _check_timeout(timeout)
        permit._held = False
        return permit

    def try_acquire(self) -> Permit | None:
        """A held permit if one is free right now (nobody queued), else ``None``;
        counts nothing as rejected (the caller decides what a refusal means)."""
        permit = Permit(self, None)
        tokens = self._tokens
        if tokens is not None:
            if self._waiters:
                return None
            try:
                tokens.pop()
            except IndexError:
                return None
            self._admitted += 1
            permit._held = True
            permit._start = (
                -1.0 if self._admitted & _SAMPLE_MASK and self._hold >= 0 else self._clock()
            )
            return permit
        with self._lock:
            if self._waiters or not self._grab_locked():
                return None
            self._take_locked(permit)
        return permit

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` holding a permit (waiting at most ``max_wait``)."""
        with Permit(self, None):
            return fn(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` holding a permit (waiting at most ``max_wait``)."""
        async with Permit(self, None):
            return await fn(*args, **kwargs)

    def _grab_locked(self) -> bool:
        """Count one more permit in use if the limit allows it (under the lock)."""
        tokens = self._tokens
        if tokens is None:
            if self._in_use < self._limit:
                self._in_use += 1
                return True
            return False
        try:
            tokens.pop()
        except IndexError:
            return False
        return True

    def _put_back_locked(self) -> None:
        """Count one permit fewer in use (under the lock)."""
        if self._tokens is None:
            self._in_use -= 1
        else:
            self._tokens.append(None)

    def _take_locked(self, permit: Permit) -> None:
        self._admitted += 1
        permit._inflight = self._in_use
        permit._held = True
        permit._start = self._clock()

    def _enqueue_locked(self, waiter: _Waiter, wait: float) -> bool:
        bound = self._limit if self.max_waiting is None else self.max_waiting
        if wait <= 0.0 or len(self._waiters) >= bound:
            self._rejected += 1
            return False
        self._waiters.append(waiter)
        return True

    def _refuse(self) -> BulkheadFull:
        return BulkheadFull(self.name, None if self._hold < 0 else self._hold)

    # Deliberate twins, not the fast path: _acquire_sync and _acquire_async repeat the
    # queueing steps of a caller that must wait (a thread blocks on an Event, a task awaits
    # a future: one function cannot do both); the queue itself (_enqueue_locked,
    # _next_locked, _settle) is written once. The fast path (a free token taken without
    # the lock) is Permit's, measured in docs/overload.md.
    def _acquire_sync(self, permit: Permit, timeout: float | None) -> None:
        wait = self.max_wait if timeout is None else timeout
        with self._lock:
            if not self._waiters and self._grab_locked():
                self._take_locked(permit)
                return
            waiter = _Waiter(threading.Event(), None, None)
            if not self._enqueue_locked(waiter, wait):
                raise self._refuse()
            # a token given back while this caller was joining the queue: claim it now
            woken = self._next_locked()
        for other in woken:
            other.wake()
        assert waiter.event is not None
        interrupted = False
        try:
            waiter.event.wait(wait)
        except BaseException:  # KeyboardInterrupt in the wait: give a granted permit on
            interrupted = True
            raise
        finally:
            granted = self._settle(waiter, permit, interrupted)
        if not granted:
            raise self._refuse()

    async def _acquire_async(self, permit: Permit, wait_for: float | None) -> None:
        wait = self.max_wait if wait_for is None else wait_for
        with self._lock:
            if not self._waiters and self._grab_locked():
                self._take_locked(permit)
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(None, loop, loop.create_future())
            if not self._enqueue_locked(waiter, wait):
                raise self._refuse()
            woken = self._next_locked()
        for other in woken:
            other.wake()
        assert waiter.future is not None
        cancelled = False
        try:
            async with asyncio.timeout(wait):
                await waiter.future
        except TimeoutError:
            pass
        except BaseException:  # cancelled (or interrupted): give a granted permit on
            cancelled = True
            raise
        finally:
            granted = self._settle(waiter, permit, cancelled)
        if not granted:
            raise self._refuse()

    def _settle(self, waiter: _Waiter, permit: Permit, abandoned: bool) -> bool:
        """After a wait: leave the queue (not granted, counted as rejected), take the
        permit (granted) or pass it on (granted, but the waiter was cancelled)."""
        with self._lock:
            granted = waiter.granted
            if not granted:
                self._waiters.remove(waiter)
                self._rejected += 1
                return False
            if not abandoned:
                self._granted_locked(permit)
                return True
            self._put_back_locked()
            woken = self._next_locked()
        for other in woken:
            other.wake()
        return False

    def _granted_locked(self, permit: Permit) -> None:
        # the releaser already counted the permit as in use
        self._admitted += 1
        self._waited += 1
        permit._inflight = self._in_use
        permit._held = True
        permit._start = self._clock()

    # -- releasing -----------------------------------------------------------------------

    def _release(self, permit: Permit, dropped: bool) -> None:
        now = self._clock()
        held = now - permit._start
        with self._lock:
            self._in_use -= 1
            self._hold = held if self._hold < 0 else self._hold + (held - self._hold) * _EWMA
            if self._policy is not None:
                # at least 1, as refresh_limit: a policy answering 0 would admit nothing
                # again, and with nothing admitted no sample would ever raise it
                self._limit = max(1, self._policy.on_sample(now, held, permit._inflight, dropped))
            woken = self._next_locked() if self._waiters else ()
        for waiter in woken:
            waiter.wake()

    def _give_back(self, permit: Permit) -> None:
        """Release a fixed-limit permit: its token back in the deque, no lock unless
        somebody is queued."""
        if permit._start >= 0:
            held = self._clock() - permit._start
            hold = self._hold
            self._hold = held if hold < 0 else hold + (held - hold) * _EWMA
        assert self._tokens is not None
        self._tokens.append(None)
        if self._waiters:
            self._hand_off()

    def _hand_off(self) -> None:
        """Give the free tokens to the queued callers (a release found waiters)."""
        with self._lock:
            woken = self._next_locked()
        for waiter in woken:
            waiter.wake()

    def _next_locked(self) -> list[_Waiter]:
        """Hand the free permits to the first waiters (more than one when an adaptive
        limit grew); they are woken after the lock is let go."""
        woken = []
        while self._waiters and self._grab_locked():
            waiter = self._waiters.popleft()
            waiter.granted = True
            woken.append(waiter)
        return woken


class _Unguarded(Bulkhead):
    """A bulkhead built under the kill switch: every call is admitted at once and
    counted (in use, peak); an adaptive policy still gets every sample (its limit
    is reported, not applied). Nobody ever queues, so the waiters' paths are never
    taken."""

    __slots__ = ()
    disabled = True

    def _grab_locked(self) -> bool:
        self._in_use += 1
        if self._in_use > self._peak:
            self._peak = self._in_use
        return True

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.name!r}, in_use={self.in_use}, limit={self._limit}, "
            "disabled: BROWNOUT_DISABLED)"
        )


#: a subclass of Bulkhead -> its unguarded class (built once)
_UNGUARDED: dict[type[Bulkhead], type[Bulkhead]] = {}


def _unguarded(cls: type[Bulkhead]) -> type[Bulkhead]:
    """The class a bulkhead of ``cls`` built under the kill switch is switched to:
    :class:`_Unguarded` for a plain one; for a subclass of an application's, a subclass
    of it with no slot of its own (so the switch is allowed whatever the subclass's
    layout) and :class:`_Unguarded`'s admission: its own methods, slots and
    ``isinstance`` stay."""
    if cls is Bulkhead or cls.disabled:
        return _Unguarded if cls is Bulkhead else cls
    found = _UNGUARDED.get(cls)
    if found is None:
        namespace = {
            "__slots__": (),
            "__module__": cls.__module__,
            "disabled": True,
            "_grab_locked": _Unguarded._grab_locked,
            "__repr__": _Unguarded.__repr__,
        }
        found = _UNGUARDED.setdefault(cls, type(f"Unguarded{cls.__name__}", (cls,), namespace))
    return found


_new_permit = object.__new__


def _check_timeout(timeout: Duration) -> float:
    try:
        seconds = to_seconds(timeout)
    except TypeError as exc:
        raise TypeError(f"Bulkhead.acquire: timeout: {exc}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WAIT:
        raise ValueError(
            f"Bulkhead.acquire: timeout must be >= 0 and <= {MAX_WAIT:g} seconds, got {timeout!r}"
        )
    return seconds
