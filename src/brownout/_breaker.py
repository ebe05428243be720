"""The circuit breaker: one state machine, driven by thin sync and async shells.

Design notes (see ``docs/breaker.md`` for the user-facing description):

* All state lives in this object and changes only under ``self._lock``, a
  plain ``threading.Lock``. The lock is held for a few attribute updates and
  never while the guarded function runs, never while a listener, a predicate
  or a hook runs, and never across an ``await``; so the same lock serves
  threads and asyncio tasks alike.
* Every admission carries a *token*: the generation (``_gen``) of the state
  it was admitted in, bitwise-inverted for half-open probes, ``None`` for
  calls that count for nothing (``DISABLED``), ``_SHADOW`` for calls shadow
  mode lets through where it would have rejected them. ``_gen`` changes on
  every transition, so an outcome that arrives after the state moved on is
  not counted against the new state, and a probe's permit is only returned to
  the half-open period that issued it.
* The hot path takes no lock at all: in ``CLOSED``, with a count window and
  nothing that needs timing (no slow-call threshold, no call listener, no
  ``failure_result``, no ``call_timeout``), a successful call is recorded by
  one ``next()`` on the window's success counter (``_window.new_counter``)
  read when the call was admitted; while ``OPEN``, a rejection reads two
  attributes and bumps another such counter. Both are single C-level
  operations, atomic under the GIL. Every new ``CLOSED`` period starts a new
  success counter, so a success that outlives its period advances a retired
  counter and cannot reset the failures of a later one. Everything else
  (failures, probes, transitions) takes the lock.
* Transitions are queued under the lock as plain tuples and published
  (listeners, log line) after the lock is released, in order, by whichever
  thread drains the queue first.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import os
import sys
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from dataclasses import asdict, dataclass
from types import MethodType, TracebackType
from typing import Any, NamedTuple, ParamSpec, TypeVar, overload

from brownout._clock import Clock, monotonic, to_seconds
from brownout._config import BreakerConfig
from brownout._errors import BreakerOpen, CallTimeout
from brownout._events import CallEvent, Outcome, StateChange
from brownout._histogram import add_batch, bucket_of
from brownout._histogram import empty as _empty_histogram
from brownout._redact import redact
from brownout._state import TRANSITIONS, State
from brownout._window import Counter, CountWindow, TimeWindow, count_value, new_counter

__all__ = ["BreakerSnapshot", "BreakerTotals", "CircuitBreaker", "kill_switch_active"]

logger = logging.getLogger("brownout")

P = ParamSpec("P")
R = TypeVar("R")

StateListener = Callable[[StateChange], object]
CallListener = Callable[[CallEvent], object]
Fallback = Callable[[BaseException], Any]

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN
_FORCED_OPEN = State.FORCED_OPEN
_DISABLED = State.DISABLED

_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_IGNORED = Outcome.IGNORED
_REJECTED = Outcome.REJECTED


def _event(fields: tuple[str, Outcome, float, bool, BaseException | None]) -> CallEvent:
    """A CallEvent from its five fields, without NamedTuple's Python-level ``__new__``.

    (About twice as fast: it is built for every call while a call listener is attached.)
    """
    return tuple.__new__(CallEvent, fields)


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

#: The token of a call whose outcome must not reach the window or a half-open period:
#: admitted by shadow mode instead of being rejected, or found stale. It never equals a
#: generation, nor the inverse of one (generations stay far below 2**62).
_STALE = _SHADOW = -(1 << 62)
#: The duration passed for a call that was not timed (the lock-free fast path).
_UNTIMED = -1.0
#: Retired success counters kept readable (see ``_new_period_locked``).
_RETIRED = 16
#: Lock-free durations are summed into the totals when this many are waiting.
_FOLD_AT = 1024
#: How many loop iterations a cancellation's source is watched before waiting for its task.
_CANCEL_POLLS = 3
#: 3.11's wait_for runs its awaitable in an inner task; from 3.12 on it uses asyncio.timeout.
_WAIT_FOR_HAS_INNER_TASK = sys.version_info < (3, 12)


def kill_switch_active() -> bool:
    """True when ``BROWNOUT_DISABLED`` is set to 1/true/yes/on in the environment.

    Breakers read it when they are created: a breaker created under the kill
    switch stays ``DISABLED`` (every call passes straight through, nothing is
    counted, manual control is refused with a log line).
    """
    return os.environ.get("BROWNOUT_DISABLED", "").strip().lower() in _TRUE_WORDS


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """An immutable, consistent view of one breaker at one instant.

    Window figures (``calls``, ``failures``, ``slow_calls`` and the rates)
    cover the configured sliding window; ``total_*`` figures count since the
    breaker was created (``DISABLED`` counts nothing). Rates are ``None``
    while the window is empty. ``opened_at`` is the breaker clock's reading
    at the last trip, ``retry_after`` the seconds until a probe is let through
    (``None`` unless ``OPEN``), ``last_error`` the redacted text of the last
    recorded error. ``call_duration_sum`` (seconds) and ``call_duration_count``
    cover the calls that were timed: every call except those of the untimed
    fast path (see ``docs/breaker.md``). ``shadow`` is true in shadow mode
    (the breaker never rejects; ``state`` is the state it would be in).
    """

    name: str
    state: State
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float | None
    slow_rate: float | None
    consecutive_failures: int
    opened_at: float | None
    open_for: float | None
    retry_after: float | None
    half_open_in_flight: int
    trips: int
    total_failures: int
    total_ignored: int
    total_rejected: int
    total_slow: int
    last_error: str | None
    last_failure_at: float | None
    total_successes: int = 0
    call_duration_sum: float = 0.0
    call_duration_count: int = 0
    shadow: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the state as its string value)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data


class BreakerTotals(NamedTuple):
    """A breaker's lifetime counts, as metrics read them (:meth:`CircuitBreaker.totals`).

    The same figures as the ``total_*`` and ``call_duration_*`` ones of
    :class:`BreakerSnapshot`, plus ``duration_buckets``: the timed calls per
    bucket of ``brownout._histogram.DURATION_BUCKETS`` (not cumulative; the
    last slot counts those above the largest bound).
    """

    successes: int
    failures: int
    ignored: int
    rejected: int
    slow: int
    duration_sum: float
    duration_count: int
    duration_buckets: tuple[int, ...]


def _match(
    exc: BaseException, types: tuple[type[BaseException], ...], preds: tuple[Any, ...]
) -> bool:
    if types and isinstance(exc, types):
        return True
    return any(pred(exc) for pred in preds)


def _split(
    matchers: tuple[Any, ...],
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]]:
    types = tuple(m for m in matchers if isinstance(m, type))
    preds = tuple(m for m in matchers if not isinstance(m, type))
    return types, preds


def _describe(exc: BaseException | None, secrets: tuple[str, ...] = ()) -> str | None:
    if exc is None:
        return None
    text = str(exc)
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, *secrets)


def _wait_for_timed_out(task: asyncio.Task[Any]) -> bool | None:
    """Python 3.11: was ``task`` cancelled by an ``asyncio.wait_for`` that timed out?

    3.11's ``wait_for`` runs a coroutine in an inner task and, when its timer
    fires, cancels that task and raises ``TimeoutError`` in the outer one. The
    outer task is suspended in ``wait_for`` (in ``_cancel_and_wait``) by the
    time the inner one sees its ``CancelledError``: its frame holds the inner
    task as ``fut`` and its timer's future as ``waiter``, which the timer
    resolved (a timeout) or the outer task's own cancellation cancelled.
    ``None``: no ``wait_for`` awaits ``task``.
    """
    code = asyncio.tasks.wait_for.__code__
    for other in asyncio.all_tasks(task.get_loop()):
        coro: Any = other.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None)
            if frame is None:
                break
            if frame.f_code is code:
                local = frame.f_locals
                if local.get("fut") is task:
                    waiter = local.get("waiter")
                    if waiter is None:  # wait_for(..., timeout <= 0): timed out at once
                        return True
                    return bool(waiter.done() and not waiter.cancelled())
                break
            coro = getattr(coro, "cr_await", None)
    return None


def _misused(exc: TypeError) -> bool:
    """Did ``acall`` itself raise this TypeError (bad arguments, nothing to await)?

    True when every frame of its traceback is ``acall``'s (or ``_bounded``'s):
    the error comes from calling ``fn`` with these arguments or from awaiting
    what it returned, not from inside the dependency's code. Only looked at
    when a call raised a TypeError.
    """
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code not in _OWN_CODES:
            return False
        tb = tb.tb_next
    return True


def _explain_misuse(exc: TypeError, fn: Callable[..., Any]) -> TypeError:
    target = fn.func if isinstance(fn, functools.partial) else fn
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        kind = "an async generator" if inspect.isasyncgenfunction(target) else "a generator"
        return TypeError(
            f"acall() awaits a coroutine function; {getattr(target, '__qualname__', target)!r} "
            f"is {kind} function: decorate it with the breaker (@cb) to guard its iteration "
            f"(not counted against the dependency)"
        )
    return exc


class _Guarded(functools.partial[Any]):
    """A decorated function: ``breaker.call(fn, ...)`` bound as a partial; binds like a method."""

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        return self if obj is None else MethodType(self, obj)


class CircuitBreaker:
    """Guards calls to one dependency; opens when it fails, probes it, closes when it is back.

    >>> from brownout.testing import FakeClock
    >>> clock = FakeClock()
    >>> config = BreakerConfig(consecutive_failures=2, open_for=20)
    >>> cb = CircuitBreaker("redis", config, clock=clock)
    >>> def boom() -> None:
    ...     raise ConnectionError("refused")
    >>> for _ in range(2):
    ...     try:
    ...         cb.call(boom)
    ...     except ConnectionError:
    ...         pass
    >>> cb.state
    <State.OPEN: 'open'>
    >>> clock.advance(20)
    >>> cb.state
    <State.HALF_OPEN: 'half_open'>

    Use it with :meth:`call` / :meth:`acall`, as a decorator (sync or async
    functions, generators and async generators), or as a context manager
    (``with cb:`` / ``async with cb:``). ``fallback`` (sync, or async for
    async calls) receives the exception and its return value is returned
    instead, when a call is rejected or fails with a recorded error.
    """

    __slots__ = (
        "__weakref__",
        "_armed",
        "_call_listeners",
        "_call_timeout",
        "_clock",
        "_collected_hooks",
        "_config",
        "_count_window",
        "_ctx",
        "_dispatch_lock",
        "_dur_count",
        "_dur_sum",
        "_durations",
        "_failure_result",
        "_fallback",
        "_fast_capable",
        "_frozen",
        "_gen",
        "_hist",
        "_ho_calls",
        "_ho_done",
        "_ho_failed",
        "_ho_in_flight",
        "_ho_rate",
        "_ho_since",
        "_ho_slow",
        "_ho_wait",
        "_ign_preds",
        "_ign_types",
        "_last_error",
        "_last_failure_at",
        "_lf_below",
        "_lock",
        "_lockfree",
        "_min_calls",
        "_name",
        "_open_for",
        "_open_for_max",
        "_open_for_mult",
        "_open_until",
        "_opened_at",
        "_pending",
        "_rate",
        "_rec_preds",
        "_rec_types",
        "_reject",
        "_rejections",
        "_retired",
        "_retry_after",
        "_secrets",
        "_shadow",
        "_slow_rate",
        "_slow_s",
        "_state",
        "_state_listeners",
        "_succ",
        "_succ_base",
        "_totals",
        "_trip_after",
        "_trip_keep",
        "_trips",
        "_trips_in_row",
        "_window",
        "permit",
    )

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        fallback: Fallback | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"CircuitBreaker name must be a non-empty string, got {name!r}")
        if config is None:
            config = BreakerConfig()
        elif not isinstance(config, BreakerConfig):
            raise TypeError(
                f"CircuitBreaker config must be a BreakerConfig, got {type(config).__name__}"
            )
        if clock is not None and not callable(clock):
            raise TypeError("CircuitBreaker clock must be a callable returning seconds")
        if fallback is not None and not callable(fallback):
            raise TypeError("CircuitBreaker fallback must be a callable taking the exception")
        self._name = name
        self._clock: Clock = clock if clock is not None else monotonic
        self._fallback = fallback
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._dispatch_lock = threading.Lock()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._state_listeners: tuple[StateListener, ...] = ()
        self._call_listeners: tuple[CallListener, ...] = ()
        self._ctx: contextvars.ContextVar[tuple[tuple[int | None, float], ...]] = (
            contextvars.ContextVar(f"brownout-{name}", default=())
        )
        self._compile(config)
        self._window: CountWindow | TimeWindow = self._new_window(config)

        # dynamic state (guarded by _lock)
        self._frozen = kill_switch_active()
        self._shadow = config.shadow
        self._state = _DISABLED if self._frozen else _CLOSED
        self._gen = 0
        # Rates cannot rise on a success, except while the window is still filling
        # up to ``minimum_calls``: after a failure below that, successes are checked
        # too (on the locked path) until the window holds enough calls.
        self._armed = False
        # The success counter of the current CLOSED period (the window's), read by the
        # fast path when it admits a call; retired ones stay readable for lifetime totals.
        self._succ = self._window.successes
        self._retired: deque[Counter] = deque()
        self._succ_base = 0
        # The fast path's "go": the period's success counter while it applies, else None.
        self.permit: Counter | None = (
            self._succ if self._state is _CLOSED and self._fast_capable else None
        )
        # A timed success may be counted without the lock (CLOSED, count window, not armed).
        self._lockfree = self._state is _CLOSED and self._count_window
        # The timed path's lock-free success: a timed call that took less than this
        # (the slow-call threshold while the lock-free success applies and nothing else
        # wants the outcome: no call listener, no failure_result; else -inf) is counted
        # inline by call/acall (see _refresh_fast_locked).
        self._lf_below = (
            self._slow_s if self._lockfree and self._failure_result is None else -math.inf
        )
        # Rejections without the lock (OPEN or FORCED_OPEN, no fallback, no call
        # listener, no shadow mode): (open until, name, state, timed) in one tuple, so
        # readers see a consistent snapshot and the hot path reads one attribute.
        self._reject: tuple[float, str, State, bool] | None = None
        self._opened_at: float | None = None
        self._open_until = 0.0
        self._trips = 0
        self._trips_in_row = 0
        self._ho_since = 0.0
        self._ho_in_flight = 0
        self._ho_done = 0
        self._ho_failed = 0
        self._ho_slow = 0
        self._last_error: str | None = None
        self._last_failure_at: float | None = None
        # failures, ignored, slow, successes outside the window's counter (under the lock);
        # rejections are lock-free
        self._totals = [0, 0, 0, 0]
        self._rejections = new_counter()
        # durations of timed calls: appended without the lock (list.append is atomic),
        # summed into _dur_sum/_dur_count under the lock now and then
        self._durations: list[float] = []
        self._dur_sum = 0.0
        self._dur_count = 0
        # the same durations per histogram bucket (metrics read them at scrape time)
        self._hist = _empty_histogram()
        self._collected_hooks: tuple[Callable[[str, BreakerTotals], object], ...] = ()

    def _compile(self, config: BreakerConfig) -> None:
        """Set the attributes the hot paths read from ``config`` (lock held, or in __init__)."""
        self._config = config
        self._rec_types, self._rec_preds = _split(tuple(config.record))
        self._ign_types, self._ign_preds = _split(tuple(config.ignore))
        self._failure_result = config.failure_result
        self._retry_after = config.retry_after
        cf = config.consecutive_failures
        self._trip_after: float = cf if cf is not None else math.inf
        self._trip_keep = cf if cf is not None else 0
        self._rate = config.failure_rate
        self._slow_rate = config.slow_call_rate
        self._slow_s = (
            to_seconds(config.slow_call_duration)
            if config.slow_call_duration is not None
            else math.inf
        )
        self._min_calls = config.minimum_calls
        self._open_for = to_seconds(config.open_for)
        self._open_for_mult = float(config.open_for_multiplier)
        self._open_for_max = config.effective_open_for_max
        self._ho_calls = config.half_open_calls
        self._ho_rate = config.half_open_policy == "rate"
        self._ho_wait = (
            to_seconds(config.half_open_max_wait)
            if config.half_open_max_wait is not None
            else math.inf
        )
        self._call_timeout = (
            to_seconds(config.call_timeout) if config.call_timeout is not None else None
        )
        self._count_window = config.window_duration is None
        # The lock-free success path needs nothing but "it returned": no duration, no
        # result check, no timeout, no listener; it is re-evaluated on every transition.
        self._fast_capable = (
            self._count_window
            and self._slow_s == math.inf
            and self._failure_result is None
            and self._call_timeout is None
        )

    @staticmethod
    def _new_window(config: BreakerConfig) -> CountWindow | TimeWindow:
        if config.window_duration is None:
            return CountWindow(config.window_size)
        return TimeWindow(to_seconds(config.window_duration), to_seconds(config.window_bucket))

    # ------------------------------------------------------- admission protocol
    #
    # How a guarded call goes through the breaker: acquire -> run -> settle. call(),
    # acall() and the adapters' lean per-command path (brownout._adapter) use these and
    # nothing else of the breaker's state; no other module touches its private attributes.
    #
    # * Lock-free admission: ``permit = cb.permit``. Not None: the breaker is CLOSED on
    #   its untimed fast path and ``permit`` is the period's success counter. Run the
    #   call; on success settle with ``next(permit)``; on an Exception take the token
    #   with ``token = cb.fast_token(permit)`` and settle with
    #   ``cb.settle_error(token, exc, UNTIMED)`` (True: recorded as a failure, the
    #   fallback applies if ``cb.fallback`` is set: ``cb.run_fallback(exc)`` /
    #   ``await cb.arun_fallback(exc)``); on a cancellation or another BaseException
    #   ``cb.settle_interrupt(token, exc, duration)``.
    # * Otherwise: ``token = cb.acquire()`` (raises BreakerOpen, counted as a rejection;
    #   None: DISABLED, run the call and settle nothing). Time the call on ``cb.clock``
    #   and settle with exactly one of ``settle_success(token, duration, now)``,
    #   ``settle_failure(token, None, duration, now)`` (a failure result),
    #   ``settle_error(token, exc, duration)`` or ``settle_interrupt(token, exc, duration)``.
    # * The token is the generation of the state the call was admitted in (inverted for
    #   a half-open probe, a negative sentinel for shadow-mode or stale admissions): an
    #   outcome settled after the breaker moved on is not counted against the new state,
    #   and a probe's permit goes back only to the half-open period that issued it.

    @property
    def _fast(self) -> Counter | None:
        """The old name of :attr:`permit` (read by tests and benchmarks)."""
        return self.permit

    @property
    def fallback(self) -> Fallback | None:
        """The fallback given at construction (or None)."""
        return self._fallback

    def run_fallback(self, exc: BaseException) -> Any:
        """The fallback's value for ``exc`` (sync calls; the fallback must be set)."""
        assert self._fallback is not None
        return self._fallback(exc)

    # ------------------------------------------------------------------ views

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def shadow(self) -> bool:
        """True in shadow mode: the breaker records and transitions but never rejects."""
        return self._shadow

    @property
    def state(self) -> State:
        """The current state; a break that is over reads as ``HALF_OPEN``."""
        state = self._state
        if state is _OPEN or state is _HALF_OPEN:
            now = self._clock()
            with self._lock:
                self._advance_locked(now)
                state = self._state
            self._drain()
        return state

    def snapshot(self) -> BreakerSnapshot:
        """A consistent, immutable view of the breaker now."""
        now = self._clock()
        with self._lock:
            self._advance_locked(now)
            self._fold_durations_locked()
            calls, failures, slow = self._window.totals(now)
            state = self._state
            t = self._totals
            snap = BreakerSnapshot(
                name=self._name,
                state=state,
                calls=calls,
                failures=failures,
                slow_calls=slow,
                failure_rate=failures / calls if calls else None,
                slow_rate=slow / calls if calls else None,
                consecutive_failures=self._window.trailing_failures(),
                opened_at=self._opened_at,
                open_for=(self._open_until - self._opened_at)
                if self._opened_at is not None and state is _OPEN
                else None,
                retry_after=max(0.0, self._open_until - now) if state is _OPEN else None,
                half_open_in_flight=self._ho_in_flight if state is _HALF_OPEN else 0,
                trips=self._trips,
                total_failures=t[0],
                total_ignored=t[1],
                total_rejected=count_value(self._rejections),
                total_slow=t[2],
                last_error=self._last_error,
                last_failure_at=self._last_failure_at,
                total_successes=self._total_successes_locked(),
                call_duration_sum=self._dur_sum,
                call_duration_count=self._dur_count,
                shadow=self._shadow,
            )
        self._drain()
        return snap

    def _total_successes_locked(self) -> int:
        return (
            self._succ_base
            + self._totals[3]
            + count_value(self._succ)
            + sum(count_value(c) for c in self._retired)
        )

    def _fold_durations(self) -> None:
        with self._lock:
            self._fold_durations_locked()

    def _fold_durations_locked(self) -> None:
        durations = self._durations
        n = len(durations)
        if n:
            # slice and del are each atomic: appends made meanwhile stay for the next fold
            batch = durations[:n]
            del durations[:n]
            batch.sort()  # C-level; add_batch wants it sorted, and untimed ones come first
            untimed = bisect_left(batch, 0.0)  # the fast path's -1.0: left out
            if untimed:
                del batch[:untimed]
            self._dur_sum += sum(batch)  # C-level, unlike a comprehension or fsum
            self._dur_count += len(batch)
            add_batch(self._hist, batch)

    def totals(self) -> BreakerTotals:
        """The lifetime counts metrics read at scrape time (cheaper than :meth:`snapshot`).

        Counting them costs the calls nothing more than they already pay: the
        successes on the lock-free path are the window's counter, the durations
        are folded into the histogram in batches.
        """
        with self._lock:
            self._fold_durations_locked()
            t = self._totals
            return BreakerTotals(
                self._total_successes_locked(),
                t[0],
                t[1],
                count_value(self._rejections),
                t[2],
                self._dur_sum,
                self._dur_count,
                tuple(self._hist),
            )

    def when_collected(self, hook: Callable[[str, BreakerTotals], object]) -> Callable[[], None]:
        """Call ``hook(name, final totals)`` when this breaker is garbage-collected.

        For metrics that keep counting a breaker's calls after it is gone (a
        counter must not go down when a breaker is replaced by a new one of the
        same name). The hook must not refer to the breaker. Returns a function
        that removes it.
        """
        if not callable(hook):
            raise TypeError(f"when_collected needs a callable, got {hook!r}")
        with self._lock:
            self._collected_hooks = (*self._collected_hooks, hook)
        ref = weakref.ref(self)  # the remover must not keep the breaker alive

        def remove() -> None:
            me = ref()
            if me is not None:
                with me._lock:
                    me._collected_hooks = tuple(h for h in me._collected_hooks if h is not hook)

        return remove

    def __del__(self) -> None:
        hooks = getattr(self, "_collected_hooks", ())
        if hooks:
            final = self.totals()
            for hook in hooks:
                try:
                    hook(self._name, final)
                except Exception:  # pragma: no cover - a finalizer must not raise
                    logger.exception("breaker %r: when_collected hook raised", self._name)

    def add_secrets(self, *secrets: str | None) -> None:
        """Strings (passwords, API keys) to remove from the errors this breaker keeps and logs.

        Known shapes (URL passwords, ``sk-`` keys, bearer tokens) are always
        removed; these are removed wherever they appear. Adapters call this with
        the secrets they were configured with.
        """
        found = tuple(s for s in secrets if s and len(s) >= 3)
        self._secrets = tuple(dict.fromkeys((*self._secrets, *found)))

    def summary(self) -> tuple[State, int, int, str | None]:
        """(state, calls in the window, failures in the window, last error): a cheap snapshot.

        What health scoring reads on every evaluation; :meth:`snapshot` has everything.
        """
        now = self._clock()
        with self._lock:
            self._advance_locked(now)
            calls, failures, _ = self._window.totals(now)
            result = (self._state, calls, failures, self._last_error)
        if self._pending:
            self._drain()
        return result

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state.value}>"

    # -------------------------------------------------------------- listeners

    def add_listener(
        self,
        *,
        on_state_change: StateListener | None = None,
        on_call: CallListener | None = None,
    ) -> Callable[[], None]:
        """Subscribe to transitions and/or call outcomes; returns a function that unsubscribes.

        Listeners run after the breaker's lock is released, in the thread (or
        task) that caused the event. One that raises is logged on the
        ``brownout`` logger and does not affect the call or other listeners.
        """
        if on_state_change is None and on_call is None:
            raise ValueError("add_listener needs on_state_change= and/or on_call=")
        for label, fn in (("on_state_change", on_state_change), ("on_call", on_call)):
            if fn is not None and not callable(fn):
                raise TypeError(f"add_listener {label} must be callable, got {fn!r}")
        with self._lock:
            if on_state_change is not None:
                self._state_listeners = (*self._state_listeners, on_state_change)
            if on_call is not None:
                self._call_listeners = (*self._call_listeners, on_call)
            self._refresh_fast_locked()

        def unsubscribe() -> None:
            with self._lock:
                if on_state_change is not None:
                    self._state_listeners = tuple(
                        f for f in self._state_listeners if f is not on_state_change
                    )
                if on_call is not None:
                    self._call_listeners = tuple(
                        f for f in self._call_listeners if f is not on_call
                    )
                self._refresh_fast_locked()

        return unsubscribe

    # ------------------------------------------------------------ sync shells

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises :class:`BreakerOpen` (or returns the fallback's value) when
        rejected; re-raises whatever ``fn`` raised (or returns the fallback's
        value for recorded failures). A sync call cannot be bounded in time
        (``call_timeout`` applies to async calls only): give the client its own
        timeout.
        """
        succ = self.permit
        if succ is not None:
            try:
                # ``fn(*args)`` unless there are keyword arguments: ``fn(*args, **kwargs)``
                # builds and merges a second, empty dict on every call (callgrind, closed
                # cell of bench/breaker_callgrind.py: 2,298 -> 2,096 instructions a call).
                # (mypy's ParamSpec check cannot see that ``kwargs`` is empty there.)
                result = fn(*args, **kwargs) if kwargs else fn(*args)  # type: ignore[call-arg]
            except Exception as exc:
                admitted = self._fast_token(succ)
                if self._on_error(admitted, exc, _UNTIMED) and self._fallback is not None:
                    return self._fallback(exc)  # type: ignore[no-any-return]
                raise
            next(succ)
            return result
        reject = self._reject
        if reject is not None:  # (open until, name, state, timed): one atomic snapshot
            # the clock read off its slot first: ``self._clock()`` is a LOAD_METHOD that
            # CPython 3.11 cannot specialise for a slot (callgrind, open cell: -100)
            clock = self._clock
            now = clock()
            if now < reject[0]:
                next(self._rejections)
                raise BreakerOpen(reject[1], reject[2], reject[0] - now if reject[3] else None)
        try:
            token = self._gen if self._state is _CLOSED else self._acquire()
        except BreakerOpen as exc:
            if self._fallback is None:
                raise
            return self._fallback(exc)  # type: ignore[no-any-return]
        if token is None:  # DISABLED: straight through, nothing counted
            return fn(*args, **kwargs)
        clock = self._clock
        start = clock()
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)  # type: ignore[call-arg]
        except Exception as exc:
            if self._on_error(token, exc, clock() - start) and self._fallback is not None:
                return self._fallback(exc)  # type: ignore[no-any-return]
            raise
        except BaseException as exc:  # interrupted: counts as nothing
            self._on_interrupt(token, exc, clock() - start)
            raise
        end = clock()
        duration = end - start
        succ = self._succ  # read before the generation check: see the module docstring
        if token == self._gen and duration < self._lf_below:
            # _on_success's lock-free branch, inline (one Python call less per timed call).
            # Deliberate hot-path twin (call/acall and _on_success): callgrind, timed cell
            # of bench/breaker_overhead.py, 5,705 -> 4,850 instructions per call (a9b4dd2)
            next(succ)
            durations = self._durations
            durations.append(duration)
            if len(durations) >= _FOLD_AT:
                self._fold_durations()
            return result
        if self._failure_result is not None and self._failure_result(result):
            self._on_failure(token, None, duration, end)
        else:
            self._on_success(token, duration, end)
        return result

    def __enter__(self) -> CircuitBreaker:
        token = self._gen if self._state is _CLOSED else self._acquire()
        self._ctx.set((*self._ctx.get(), (token, self._clock())))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = self._ctx.get()
        token, start = stack[-1]
        self._ctx.set(stack[:-1])
        if token is None:
            return
        end = self._clock()
        if exc is None:
            self._on_success(token, end - start, end)
        elif isinstance(exc, Exception):
            self._on_error(token, exc, end - start)
        else:
            self._on_interrupt(token, exc, end - start)

    # ----------------------------------------------------------- async shells

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker (see :meth:`call`).

        With ``call_timeout`` set, the call is bounded by ``asyncio.timeout``
        and raises (and records) ``TimeoutError`` when it runs out. A call
        ended by the caller's own timeout (``asyncio.timeout``,
        ``asyncio.wait_for``) counts as a failure with a ``TimeoutError``; a
        call cancelled for any other reason counts as nothing and gives its
        half-open permit back (see ``docs/breaker.md`` for what is detected).
        """
        succ = self.permit
        if succ is not None:
            try:
                # no second, empty dict built per call (see call): 3,763 -> 3,562
                result = await (fn(*args, **kwargs) if kwargs else fn(*args))  # type: ignore[call-arg]
            except Exception as exc:
                admitted = self._fast_token(succ)
                if type(exc) is TypeError and _misused(exc):
                    self._release(admitted, exc, _UNTIMED)
                    raise _explain_misuse(exc, fn) from None
                if self._on_error(admitted, exc, _UNTIMED) and self._fallback is not None:
                    return await self._afallback(exc)  # type: ignore[no-any-return]
                raise
            except asyncio.CancelledError as exc:
                self._on_interrupt(self._fast_token(succ), exc, _UNTIMED)
                raise
            next(succ)
            return result
        reject = self._reject
        if reject is not None:  # (open until, name, state, timed): one atomic snapshot
            clock = self._clock  # see call
            now = clock()
            if now < reject[0]:
                next(self._rejections)
                raise BreakerOpen(reject[1], reject[2], reject[0] - now if reject[3] else None)
        try:
            token = self._gen if self._state is _CLOSED else self._acquire()
        except BreakerOpen as exc:
            if self._fallback is None:
                raise
            return await self._afallback(exc)  # type: ignore[no-any-return]
        if token is None:  # DISABLED: straight through, nothing counted
            return await fn(*args, **kwargs)
        clock = self._clock
        start = clock()
        try:
            if self._call_timeout is None:
                result = await (fn(*args, **kwargs) if kwargs else fn(*args))  # type: ignore[call-arg]
            else:
                result = await self._bounded(self._call_timeout, fn(*args, **kwargs))
        except Exception as exc:
            if type(exc) is TypeError and _misused(exc):
                self._release(token, exc, clock() - start)
                raise _explain_misuse(exc, fn) from None
            if self._on_error(token, exc, clock() - start) and self._fallback is not None:
                return await self._afallback(exc)  # type: ignore[no-any-return]
            raise
        except BaseException as exc:  # cancelled, interrupted: see _on_interrupt
            self._on_interrupt(token, exc, clock() - start)
            raise
        end = clock()
        duration = end - start
        succ = self._succ  # read before the generation check: see the module docstring
        if token == self._gen and duration < self._lf_below:
            # _on_success's lock-free branch, inline (one Python call less per timed call).
            # Deliberate hot-path twin (call/acall and _on_success): callgrind, timed cell
            # of bench/breaker_overhead.py, 5,705 -> 4,850 instructions per call (a9b4dd2)
            next(succ)
            durations = self._durations
            durations.append(duration)
            if len(durations) >= _FOLD_AT:
                self._fold_durations()
            return result
        if self._failure_result is not None and self._failure_result(result):
            self._on_failure(token, None, duration, end)
        else:
            self._on_success(token, duration, end)
        return result

    def _fast_token(self, succ: Counter) -> int:
        """The token of a fast-path call that ended other than by success.

        The fast path admits with the current period's success counter alone. The
        counter is retired on every transition before the generation moves on, so
        reading the generation first and then finding the counter still current
        means no transition happened since the admission.
        """
        gen = self._gen
        return gen if succ is self._succ else _STALE

    async def _bounded(self, seconds: float, aw: Awaitable[R]) -> R:
        """Await ``aw`` within ``seconds`` (``call_timeout``); CallTimeout names the breaker."""
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                return await aw
        except TimeoutError as exc:
            if not limit.expired():
                raise  # the awaitable's own TimeoutError
            raise CallTimeout(self._name, seconds) from exc

    async def _afallback(self, exc: BaseException) -> Any:
        assert self._fallback is not None
        value = self._fallback(exc)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -------------------------------------------------------------- decorator

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function so every call goes through the breaker.

        For sync and async functions the wrapper is a ``functools.partial`` of
        :meth:`call` / :meth:`acall` (argument forwarding in C, no extra Python
        frame) that also binds as a method when used on one. For generator and
        async generator functions the wrapper guards the iteration: one
        admission per generator, taken at its first ``next()`` (``BreakerOpen``
        is raised there); an error raised while iterating is classified like
        any other; a generator closed early counts as a success. The fallback
        is not used for generators.
        """
        if not callable(fn):
            raise TypeError(f"{self!r} decorates callables, got {fn!r}")
        if inspect.isasyncgenfunction(fn):
            agen_fn = fn

            def aguarded(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
                return self._aiterate(agen_fn(*args, **kwargs))

            return functools.update_wrapper(aguarded, fn)
        if inspect.isgeneratorfunction(fn):
            gen_fn = fn

            def guarded(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return self._iterate(gen_fn(*args, **kwargs))

            return functools.update_wrapper(guarded, fn)
        runner = self.acall if inspect.iscoroutinefunction(fn) else self.call
        return functools.update_wrapper(_Guarded(runner, fn), fn)

    def _iterate(self, gen: Generator[Any, Any, R]) -> Generator[Any, Any, R]:
        """Iterate ``gen`` as one guarded call (see :meth:`__call__`)."""
        token = self._gen if self._state is _CLOSED else self._acquire()
        clock = self._clock
        start = clock()
        try:
            result = yield from gen
        except GeneratorExit:  # closed early: what it produced, it produced
            end = clock()
            self._on_success(token, end - start, end)
            raise
        except Exception as exc:
            self._on_error(token, exc, clock() - start)
            raise
        except BaseException as exc:
            self._on_interrupt(token, exc, clock() - start)
            raise
        end = clock()
        self._on_success(token, end - start, end)
        return result

    async def _aiterate(self, agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
        """Iterate ``agen`` as one guarded call, forwarding asend/athrow/aclose."""
        token = self._gen if self._state is _CLOSED else self._acquire()
        clock = self._clock
        start = clock()
        try:
            value = await agen.__anext__()
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as thrown:  # athrow() into us: pass it on
                    value = await agen.athrow(thrown)
                else:
                    value = await agen.asend(sent)
        except StopAsyncIteration:
            pass
        except GeneratorExit:  # closed early: what it produced, it produced
            end = clock()
            self._on_success(token, end - start, end)
            raise
        except Exception as exc:
            self._on_error(token, exc, clock() - start)
            raise
        except BaseException as exc:
            self._on_interrupt(token, exc, clock() - start)
            raise
        end = clock()
        self._on_success(token, end - start, end)

    # --------------------------------------------------------- manual control

    def force_open(
        self, reason: str = "forced open by operator", duration: float | None = None
    ) -> None:
        """Reject every call until :meth:`reset` (state ``FORCED_OPEN``).

        With ``duration`` (seconds, or a ``timedelta``) the breaker goes
        ``OPEN`` for that long instead and then half-opens as after a trip
        (resilience4j's ``transitionToOpenStateFor``); not counted as a trip.
        """
        if duration is None:
            self._manual(_FORCED_OPEN, reason)
            return
        try:
            seconds = to_seconds(duration)
        except TypeError:
            raise TypeError(
                f"force_open duration must be seconds (float) or a timedelta, got {duration!r}"
            ) from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"force_open duration must be > 0 seconds, got {seconds}")
        if self._refused("open"):
            return
        now = self._clock()
        with self._lock:
            self._trips_in_row = 0
            self._opened_at = now
            self._open_until = now + seconds
            reason = f"{reason} (for {seconds:g} s)"
            if self._state is _OPEN:  # a new deadline for the same break
                self._refresh_fast_locked()
                self._pending.append(
                    (_OPEN, _OPEN, reason, "manual", now, seconds, self._last_error)
                )
            else:
                self._transition_locked(_OPEN, "manual", reason, now, seconds)
        self._drain()

    def disable(self, reason: str = "disabled by operator") -> None:
        """Let every call through uncounted until :meth:`reset` (state ``DISABLED``)."""
        self._manual(_DISABLED, reason)

    def reset(self, reason: str = "reset by operator") -> None:
        """Back to ``CLOSED`` with an empty window, from any state."""
        self._manual(_CLOSED, reason)

    def half_open(self, reason: str = "recovery signalled") -> bool:
        """End the break early: ``OPEN`` → ``HALF_OPEN`` now (e.g. a health probe succeeded).

        Returns whether the breaker moved; it only moves from ``OPEN``.
        """
        now = self._clock()
        with self._lock:
            moved = self._state is _OPEN
            if moved:
                self._transition_locked(_HALF_OPEN, "probe", reason, now)
        self._drain()
        return moved

    def set_shadow(self, enabled: bool) -> None:
        """Switch shadow mode on or off (resilience4j's ``METRICS_ONLY``).

        In shadow mode the breaker counts and transitions as usual (publishing
        every transition it makes) but never rejects a call: a call it would
        reject runs, is counted in ``total_rejected`` and in the lifetime
        totals, and stays out of the window. For rolling a breaker out on a
        live dependency. Logged; not a transition. ``config.shadow`` follows.
        """
        if not isinstance(enabled, bool):
            raise TypeError(f"set_shadow takes a bool, got {enabled!r}")
        with self._lock:
            changed = self._shadow is not enabled
            self._shadow = enabled
            if self._config.shadow is not enabled:  # config reads back the mode in force
                self._config = self._config.replace(shadow=enabled)
            self._refresh_fast_locked()
        if changed:
            logger.warning(
                "breaker %r: shadow mode %s",
                self._name,
                "on: records, never rejects" if enabled else "off: rejects again",
                extra={"breaker": self._name},
            )

    def reconfigure(self, config: BreakerConfig, reason: str = "reconfigured") -> None:
        """Apply a new configuration now, keeping the state and what is counted.

        The state, the current break, the half-open period and the lifetime
        totals are kept. A count window keeps its calls when only its size
        changes (a smaller one keeps the newest); a change of window kind,
        duration or bucket starts an empty window. New thresholds apply from
        the next outcome (they do not trip the breaker by themselves), a new
        break length from the next break. ``config.shadow`` is applied.
        Published as a :class:`StateChange` from the current state to itself
        with trigger ``"reconfigured"``.
        """
        if not isinstance(config, BreakerConfig):
            raise TypeError(f"reconfigure takes a BreakerConfig, got {type(config).__name__}")
        now = self._clock()
        with self._lock:
            self._advance_locked(now)
            old = self._config
            changed = [
                f"{name} {getattr(old, name)!r} -> {getattr(config, name)!r}"
                for name in old.__dataclass_fields__
                if getattr(old, name) != getattr(config, name)
            ]
            self._compile(config)
            window = self._window
            if (
                isinstance(window, CountWindow)
                and config.window_duration is None
                and window.size != config.window_size
            ):
                window.resize(config.window_size)
            elif isinstance(window, TimeWindow) != (config.window_duration is not None) or (
                isinstance(window, TimeWindow)
                and (
                    window.duration != to_seconds(config.window_duration or 0)
                    or window.bucket != to_seconds(config.window_bucket)
                )
            ):
                self._window = self._new_window(config)
                self._new_period_locked()
            self._shadow = config.shadow
            # re-check the rates on the next outcome, success or not, with the new minimum
            self._armed = self._rate is not None or self._slow_rate is not None
            self._refresh_fast_locked()
            if self._state is _HALF_OPEN and self._ho_done >= self._ho_calls:
                self._decide_half_open_locked(now, None)
            state = self._state
            text = f"{reason}: {'; '.join(changed) if changed else 'no change'}"
            self._pending.append((state, state, text, "reconfigured", now, None, self._last_error))
        self._drain()

    def _refused(self, what: str) -> bool:
        if self._frozen:
            logger.warning(
                "breaker %r: %s refused: BROWNOUT_DISABLED is set, the breaker stays disabled",
                self._name,
                what,
            )
        return self._frozen

    def _manual(self, to: State, reason: str) -> None:
        if self._refused(to.value):
            return
        now = self._clock()
        with self._lock:
            if self._state is not to:
                self._transition_locked(to, "manual", reason, now)
            elif to is _CLOSED:
                self._window.clear()
                self._new_period_locked()
                self._armed = False
                self._refresh_fast_locked()
        self._drain()

    # ---------------------------------------------------------- state machine

    def _acquire(self) -> int | None:
        """Admit a call outside the CLOSED fast path, or raise BreakerOpen."""
        now = self._clock()
        with self._lock:
            self._advance_locked(now)
            state = self._state
            if state is _CLOSED:
                return self._gen
            if state is _DISABLED:
                return None
            if state is _HALF_OPEN and self._ho_in_flight + self._ho_done < self._ho_calls:
                self._ho_in_flight += 1
                return ~self._gen
            next(self._rejections)
            if self._shadow:  # would be rejected: runs, counted as a would-be rejection
                return _SHADOW
            retry_after = max(0.0, self._open_until - now) if state is _OPEN else None
        if self._pending:
            self._drain()
        if self._call_listeners:
            self._publish_rejected()
        raise BreakerOpen(self._name, state, retry_after)

    def _advance_locked(self, now: float) -> None:
        """Apply the time-driven transitions that are due (lock held)."""
        if self._state is _OPEN and now >= self._open_until:
            self._transition_locked(
                _HALF_OPEN,
                "open_for_elapsed",
                f"break of {self._open_until - (self._opened_at or 0.0):.3g} s is over",
                now,
            )
        elif self._state is _HALF_OPEN and now - self._ho_since >= self._ho_wait:
            self._trip_locked(
                "half_open_timeout",
                f"half-open probes did not finish within {self._ho_wait:.3g} s",
                now,
                None,
            )

    def _on_success(self, token: int | None, duration: float, now: float) -> None:
        if token is None:  # DISABLED: counts nothing
            return
        slow = duration >= self._slow_s
        succ = self._succ  # read before the generation check: see the module docstring
        if not slow and token == self._gen and self._lockfree:
            # lock-free, as on the fast path (see the module docstring)
            next(succ)
            durations = self._durations
            durations.append(duration)  # untimed (< 0) ones are left out when folded
            if len(durations) >= _FOLD_AT:
                self._fold_durations()
        else:
            with self._lock:
                if duration >= 0:
                    self._dur_sum += duration
                    self._dur_count += 1
                    self._hist[bucket_of(duration)] += 1
                if slow:
                    self._totals[2] += 1
                if token == self._gen and self._state is _CLOSED:
                    self._window.record(now, False, slow)
                    if (
                        (slow and self._slow_rate is not None)
                        or self._armed
                        or not self._count_window
                    ):
                        self._check_rates_locked(now, None)
                else:
                    self._totals[3] += 1
                    if token < 0 and ~token == self._gen:
                        self._probe_done_locked(False, slow, None, duration, now, None)
            if self._pending:
                self._drain()
        if self._call_listeners:
            self._publish_call(_event((self._name, _SUCCESS, duration, slow, None)))

    def _on_error(self, token: int | None, exc: Exception, duration: float) -> bool:
        """Classify and count an error; True if it was recorded as a failure."""
        if token is None:  # DISABLED: counts nothing, and the error passes through
            return False
        if _match(exc, self._ign_types, self._ign_preds):
            self._release(token, exc, duration)
            return False
        if not _match(exc, self._rec_types, self._rec_preds):
            self._on_success(token, duration, self._clock())
            return False
        self._on_failure(token, exc, duration, self._clock())
        return True

    def _on_failure(
        self, token: int | None, exc: BaseException | None, duration: float, now: float
    ) -> None:
        if token is None:  # DISABLED: counts nothing
            return
        slow = duration >= self._slow_s
        described = (
            _describe(exc, self._secrets) if exc is not None else "returned a failure result"
        )
        hint = None
        if exc is not None and self._retry_after is not None:
            try:
                hint = self._retry_after(exc)
            except Exception:
                logger.exception("breaker %r: retry_after hook raised", self._name)
        with self._lock:
            self._totals[0] += 1
            if slow:
                self._totals[2] += 1
            if duration >= 0:
                self._dur_sum += duration
                self._dur_count += 1
                self._hist[bucket_of(duration)] += 1
            self._last_error = described
            self._last_failure_at = now
            if token == self._gen and self._state is _CLOSED:
                self._window.record(now, True, slow)
                run = self._window.trailing_failures()
                if run >= self._trip_after:
                    self._trip_locked(
                        "consecutive_failures",
                        f"{run} consecutive failures >= {self._trip_keep}",
                        now,
                        hint,
                    )
                else:
                    self._check_rates_locked(now, hint)
            elif token < 0 and ~token == self._gen:
                self._probe_done_locked(True, slow, described, duration, now, hint)
        if self._pending:
            self._drain()
        if self._call_listeners:
            self._publish_call(_event((self._name, _FAILURE, duration, slow, exc)))

    def _on_interrupt(self, token: int | None, exc: BaseException, duration: float) -> None:
        """A call ended by a BaseException that is not an Exception.

        A cancellation that comes from the caller's own timeout counts as a
        ``TimeoutError`` failure; anything else (a cancellation for another
        reason, ``KeyboardInterrupt``, ``GeneratorExit``) counts as nothing and
        gives a half-open permit back. Telling the two apart may have to wait
        until the cancellation has reached the ``asyncio.timeout`` that sent it:
        the decision is then taken in a loop callback, soon after.
        """
        if token is None:
            return
        task = None
        if isinstance(exc, asyncio.CancelledError):
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no running loop
                task = None
        if task is None:
            self._release(token, exc, duration)
            return
        if _WAIT_FOR_HAS_INNER_TASK:
            timed_out = _wait_for_timed_out(task)
            if timed_out is not None:
                if timed_out:
                    self._timed_out(token, duration, "asyncio.wait_for")
                else:
                    self._release(token, exc, duration)
                return
        cancelling = task.cancelling()
        if not cancelling:  # raised, not sent by task.cancel(): no timeout sent it
            self._release(token, exc, duration)
            return
        task.get_loop().call_soon(self._decide_cancel, task, cancelling, token, exc, duration, 0)

    def _decide_cancel(
        self,
        task: asyncio.Task[Any],
        cancelling: int,
        token: int,
        exc: BaseException,
        duration: float,
        polls: int,
    ) -> None:
        """Was the cancellation consumed by ``uncancel()`` (a timeout) or did it go on?"""
        if task.cancelling() < cancelling:
            # asyncio.timeout (and 3.12+'s wait_for) uncancel() the cancellation they sent
            # and raise TimeoutError instead
            self._timed_out(token, duration, "asyncio.timeout")
        elif task.done():
            self._release(token, exc, duration)
        elif polls < _CANCEL_POLLS:
            task.get_loop().call_soon(
                self._decide_cancel, task, cancelling, token, exc, duration, polls + 1
            )
        else:  # the cancellation is still on its way (cleanup awaiting): decide at the end
            task.add_done_callback(
                lambda t: self._decide_cancel(t, cancelling, token, exc, duration, _CANCEL_POLLS)
            )

    def _timed_out(self, token: int, duration: float, by: str) -> None:
        took = f" after {duration:.3g} s" if duration >= 0 else ""
        error = TimeoutError(f"cancelled by the caller's {by}{took}")
        try:
            self._on_error(token, error, duration)
        except Exception:  # pragma: no cover - a predicate raised, from a loop callback
            logger.exception("breaker %r: counting a timed-out call failed", self._name)

    def _release(
        self, token: int | None, exc: BaseException | None = None, duration: float = 0.0
    ) -> None:
        """The call counts as nothing (ignored error, cancellation): give its permit back."""
        if token is None:
            return
        with self._lock:
            self._totals[1] += 1
            if token < 0 and ~token == self._gen:
                self._ho_in_flight -= 1
        if self._call_listeners:
            self._publish_call(_event((self._name, _IGNORED, max(duration, 0.0), False, exc)))

    def _probe_done_locked(
        self,
        failed: bool,
        slow: bool,
        described: str | None,
        duration: float,
        now: float,
        hint: float | None,
    ) -> None:
        """A half-open probe finished (lock held): reopen, close, or wait for the others."""
        self._ho_in_flight -= 1
        self._ho_done += 1
        self._ho_failed += failed
        self._ho_slow += slow
        by_rate = self._ho_rate
        if failed and not (by_rate and self._rate is not None):
            self._trip_locked("probe_failed", f"half-open probe failed: {described}", now, hint)
        elif slow and self._slow_rate is not None and not by_rate:
            self._trip_locked(
                "probe_failed",
                f"half-open probe was slow ({duration:.3g} s >= {self._slow_s:.3g} s)",
                now,
                None,
            )
        elif self._ho_done >= self._ho_calls:
            self._decide_half_open_locked(now, hint)

    def _decide_half_open_locked(self, now: float, hint: float | None) -> None:
        done = self._ho_done
        if self._ho_rate:
            failure_rate, slow_rate = self._ho_failed / done, self._ho_slow / done
            if self._rate is not None and failure_rate >= self._rate:
                self._trip_locked(
                    "probe_failed",
                    f"half-open failure rate {failure_rate:.2f} >= {self._rate:.2f} "
                    f"over {done} probes",
                    now,
                    hint,
                )
                return
            if self._slow_rate is not None and slow_rate >= self._slow_rate:
                self._trip_locked(
                    "probe_failed",
                    f"half-open slow-call rate {slow_rate:.2f} >= {self._slow_rate:.2f} "
                    f"over {done} probes",
                    now,
                    None,
                )
                return
            reason = f"{done} half-open probe(s): failure rate {failure_rate:.2f}"
        else:
            reason = f"{done} half-open probe(s) succeeded"
        self._transition_locked(_CLOSED, "probes_succeeded", reason, now)

    def _check_rates_locked(self, now: float, hint: float | None) -> None:
        if self._rate is None and self._slow_rate is None:
            if self._armed:
                self._armed = False
                self._refresh_fast_locked()
            return
        calls, failures, slow = self._window.totals(now)
        armed = calls < self._min_calls
        if armed is not self._armed:
            self._armed = armed
            self._refresh_fast_locked()
        if armed:
            return
        if self._rate is not None and failures / calls >= self._rate:
            self._trip_locked(
                "failure_rate",
                f"failure rate {failures / calls:.2f} >= {self._rate:.2f} over {calls} calls",
                now,
                hint,
            )
        elif self._slow_rate is not None and slow / calls >= self._slow_rate:
            self._trip_locked(
                "slow_call_rate",
                f"slow-call rate {slow / calls:.2f} >= {self._slow_rate:.2f} over {calls} calls "
                f"(slow: >= {self._slow_s:.3g} s)",
                now,
                hint,
            )

    def _trip_locked(self, trigger: str, reason: str, now: float, hint: float | None) -> None:
        self._trips += 1
        self._trips_in_row += 1
        if hint is not None:
            open_for = min(hint, self._open_for_max)
            reason = f"{reason}; break of {open_for:.3g} s from the error's retry-after"
        else:
            open_for = min(
                self._open_for * self._open_for_mult ** (self._trips_in_row - 1),
                self._open_for_max,
            )
        self._opened_at = now
        self._open_until = now + open_for
        self._transition_locked(_OPEN, trigger, reason, now, open_for)

    def _transition_locked(
        self, to: State, trigger: str, reason: str, now: float, open_for: float | None = None
    ) -> None:
        frm = self._state
        if (frm, to) not in TRANSITIONS:  # pragma: no cover - a bug, not a user error
            raise RuntimeError(f"breaker {self._name!r}: illegal transition {frm} -> {to}")
        # A new success counter first, then the new generation: a fast-path call that
        # reads the new generation finds its counter retired (see _fast_token).
        if to is _CLOSED:
            self._window.clear()
        else:
            self._window.retire()
        self._new_period_locked()
        self._state = to
        self._gen += 1
        if to is _HALF_OPEN:
            self._ho_since = now
            self._ho_in_flight = 0
            self._ho_done = self._ho_failed = self._ho_slow = 0
        elif to is _CLOSED:
            self._armed = False
            self._trips_in_row = 0
            self._opened_at = None
        elif to is not _OPEN:
            self._trips_in_row = 0
        self._refresh_fast_locked()
        if self._shadow and to in (_OPEN, _FORCED_OPEN):
            reason = f"{reason} [shadow mode: not rejecting]"
        self._pending.append((frm, to, reason, trigger, now, open_for, self._last_error))

    def _new_period_locked(self) -> None:
        """The window was cleared or replaced: follow its new success counter (lock held).

        The old counter is retired, not forgotten: calls admitted before may still
        succeed and advance it (they count over the lifetime, not in the window). The
        last few stay readable; an older one is summed up for good.
        """
        self._fold_durations_locked()
        old, new = self._succ, self._window.successes
        if old is new:
            return
        retired = self._retired
        retired.append(old)
        if len(retired) > _RETIRED:
            self._succ_base += count_value(retired.popleft())
        self._succ = new

    def _refresh_fast_locked(self) -> None:
        state = self._state
        self._lockfree = state is _CLOSED and self._count_window and not self._armed
        self._lf_below = (
            self._slow_s
            if self._lockfree and not self._call_listeners and self._failure_result is None
            else -math.inf
        )
        self.permit = (
            self._succ
            if state is _CLOSED
            and self._fast_capable
            and not self._call_listeners
            and not self._armed
            else None
        )
        if (state is _OPEN or state is _FORCED_OPEN) and not self._shadow:
            until = self._open_until if state is _OPEN else math.inf
            ok = self._fallback is None and not self._call_listeners
            self._reject = (until, self._name, state, state is _OPEN) if ok else None
        else:
            self._reject = None

    # ------------------------------------------------------------- publishing

    def _drain(self) -> None:
        """Publish queued transitions, in order, outside the state lock."""
        while self._pending:
            if not self._dispatch_lock.acquire(blocking=False):
                return  # another thread is publishing and will pick ours up
            try:
                while True:
                    try:
                        frm, to, reason, trigger, at, open_for, last_error = self._pending.popleft()
                    except IndexError:
                        break
                    event = StateChange(
                        self._name, frm, to, reason, trigger, at, open_for, last_error
                    )
                    logger.log(
                        logging.WARNING
                        if to in (_OPEN, _FORCED_OPEN) and trigger != "reconfigured"
                        else logging.INFO,
                        "breaker %r: %s -> %s (%s)%s",
                        self._name,
                        frm.value,
                        to.value,
                        reason,
                        f"; last error: {last_error}" if last_error and to is _OPEN else "",
                        extra={
                            "breaker": self._name,
                            "from_state": frm.value,
                            "to_state": to.value,
                        },
                    )
                    for listener in self._state_listeners:
                        try:
                            listener(event)
                        except Exception:
                            logger.exception(
                                "breaker %r: state listener %r raised", self._name, listener
                            )
            finally:
                self._dispatch_lock.release()

    def _publish_rejected(self) -> None:
        self._publish_call(_event((self._name, _REJECTED, 0.0, False, None)))

    def _publish_call(self, event: CallEvent) -> None:
        for listener in self._call_listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("breaker %r: call listener %r raised", self._name, listener)

    # the admission protocol's public names (see "admission protocol" above)
    acquire = _acquire
    fast_token = _fast_token
    settle_success = _on_success
    settle_failure = _on_failure
    settle_error = _on_error
    settle_interrupt = _on_interrupt
    release = _release
    arun_fallback = _afallback


#: The frames of a TypeError that :func:`_misused` takes for the caller's mistake.
_OWN_CODES = frozenset({CircuitBreaker.acall.__code__, CircuitBreaker._bounded.__code__})
