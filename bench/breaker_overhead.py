"""Breaker overhead: what does guarding a call cost, with and without metrics, next to
pybreaker, circuitbreaker, aiobreaker and purgatory?

Issues #2 and #11. A benchmark, not a timed test: it prints a Markdown table and
exits 0 whether or not the targets are met (it exits 1 only if a breaker was not
in the state it was supposed to be in, or the metrics did not count every call,
which would make the figures meaningless).

Scenarios (every figure is the median ns per call over ``--rounds`` rounds,
each round timing a batch of ``--batch`` calls per cell; all cells of
scenarios 1-5 are interleaved round-robin in one process, see ``_harness``):

1. sync closed: ``f(x)`` vs ``cb.call(f, x)``, ``@cb``-decorated ``f``, the
   same with metrics attached as inventario attaches them (the breaker comes
   from a ``Registry`` that a ``PrometheusMetrics`` is attached to), the same
   with a no-op ``on_call`` listener (which turns brownout's lock-free fast
   path off), ``pybreaker.CircuitBreaker.call(f, x)``, a ``@circuit``-decorated
   ``f``, ``aiobreaker.CircuitBreaker.call(f, x)`` and a purgatory
   ``@breakers("name")``-decorated ``f``.
2. sync open: the baseline is a function call that raises a fresh exception
   instance, caught by the caller; each breaker is tripped (five failures, the
   default threshold of all three libraries) with a break of ~11 days, so it
   stays open for the whole run, and its rejection is caught.
3. async closed: ``await af(x)`` vs ``await cb.acall(af, x)`` etc. pybreaker is
   n/a: its only async API, ``call_async``, is built on tornado's
   ``gen.coroutine`` (tornado is not even a dependency), not on asyncio.
4. async open: ``await`` of a coroutine that raises, caught, vs rejections.
5. count window + slow-call timing: ``f(x)`` vs ``cb.call(f, x)`` on a breaker
   with a count window, failure and slow-call rates and a slow-call threshold
   (every call is timed: two clock reads and a duration kept), without and with
   metrics; the other libraries cannot time calls and run in their defaults.
6. two threads making a 20 ms call (``time.sleep(0.02)``) through one breaker
   at the same time: wall time of the pair / time of one call made alone
   (1.00 = fully parallel, 2.00 = serialised), median over ``--thread-reps``.
7. heap: one million calls through breakers with metrics attached (closed,
   closed and timed, open), measured with ``tracemalloc`` after a scrape: the
   traced heap must not grow with the number of calls.

Targets (issue #11; "plain" rows / "with metrics" rows): sync closed <= 4x /
<= 6x bare, sync open <= 1.5x / <= 2x bare raise-and-catch, async closed <= 2.5x /
<= 3.5x bare await, count window + slow-call timing <= 8x / <= 9x, and brownout
ahead of every other library in every scenario; two threads <= 1.05x one call.
They are printed next to every row's ratio.

Run: ``.venv/bin/python bench/breaker_overhead.py [--rounds R] [--batch N]
[--quick] [--json PATH] [--heap-calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
from purgatory.domain.model import OpenedState

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry, State
from brownout.prometheus import PrometheusMetrics

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.breaker_overhead
    from bench import _harness as h

# A tripped breaker logs a warning; keep the benchmark's output to the table.
logging.getLogger("brownout").addHandler(logging.NullHandler())
logging.getLogger("brownout").propagate = False

LIBRARIES = (
    "brownout",
    "pybreaker",
    "circuitbreaker",
    "aiobreaker",
    "purgatory",
    "prometheus-client",
)
LONG_BREAK = 1_000_000.0  # seconds (~11.6 days): an open breaker stays open for the run
SLEEP_S = 0.02

SYNC_CLOSED = "1. sync closed"
SYNC_OPEN = "2. sync open (rejection, caught)"
ASYNC_CLOSED = "3. async closed"
ASYNC_OPEN = "4. async open (rejection, caught)"
TIMED = "5. count window + slow-call timing"
THREADS = "6. two threads, 20 ms calls"

#: scenario -> (target ratio or None, what the baseline is)
TARGETS: dict[str, tuple[float | None, str]] = {
    SYNC_CLOSED: (4.0, "`f(x)`"),
    SYNC_OPEN: (1.5, "`try: raiser(x) except E: pass` (raises a fresh `E()`)"),
    ASYNC_CLOSED: (2.5, "`await af(x)`"),
    ASYNC_OPEN: (None, "`try: await araiser(x) except E: pass`"),
    TIMED: (8.0, "`f(x)`"),
    THREADS: (1.05, "`time.sleep(0.02)` called directly"),
}
#: scenario -> target ratio of the rows with metrics attached
METRICS_TARGETS: dict[str, float | None] = {
    SYNC_CLOSED: 6.0,
    SYNC_OPEN: 2.0,
    ASYNC_CLOSED: 3.5,
    ASYNC_OPEN: None,
    TIMED: 9.0,
}
#: the row label of brownout with metrics attached as inventario attaches them
WITH_METRICS = "brownout + metrics (as inventario)"
AB_OPEN = aiobreaker.CircuitBreakerState.OPEN
AB_CLOSED = aiobreaker.CircuitBreakerState.CLOSED
PEERS = ("pybreaker", "circuitbreaker", "aiobreaker", "purgatory")
#: a count window with failure and slow-call rates: every call is timed
TIMED_CONFIG = BreakerConfig(
    window_size=100, failure_rate=0.5, slow_call_rate=0.5, slow_call_duration=1.0
)

NOT_AVAILABLE = {
    (
        ASYNC_CLOSED,
        "pybreaker",
    ): "n/a: `call_async` needs tornado (`gen.coroutine`), no asyncio API",
    (ASYNC_OPEN, "pybreaker"): "n/a: as above",
}


class E(Exception):
    """The baseline's exception: a plain subclass, like the libraries' errors."""


def f(x: int) -> int:
    return x


def raiser(x: int) -> int:
    raise E()


async def af(x: int) -> int:
    return x


async def araiser(x: int) -> int:
    raise E()


def boom() -> None:
    raise ConnectionError("down")


def noop_listener(event: object) -> None:
    return None


# ------------------------------------------------------------------- breakers


class Inventario:
    """Breakers with metrics attached as inventario attaches them: a ``Registry`` that a
    ``PrometheusMetrics`` is attached to (``inventario.runtime.build_runtime``)."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.metrics = PrometheusMetrics()
        self.metrics.attach(self.registry)

    def closed(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        return self.registry.get(name, config)

    def tripped(self, name: str) -> CircuitBreaker:
        cb = self.registry.get(name, BreakerConfig(open_for=LONG_BREAK, open_for_max=LONG_BREAK))
        for _ in range(5):
            with contextlib.suppress(ConnectionError):
                cb.call(boom)
        return cb

    def count(self, name: str, outcome: str) -> float:
        self.metrics.render()  # a scrape, as Prometheus makes it
        got = self.metrics.registry.get_sample_value(
            "brownout_calls_total", {"breaker": name, "outcome": outcome}
        )
        return -1.0 if got is None else got


def brownout_closed(name: str, *, listener: bool = False) -> CircuitBreaker:
    cb = CircuitBreaker(name)  # default config: 5 consecutive failures, window of 100
    if listener:
        cb.add_listener(on_call=noop_listener)
    return cb


def brownout_tripped(name: str, *, listener: bool = False) -> CircuitBreaker:
    cb = CircuitBreaker(name, BreakerConfig(open_for=LONG_BREAK, open_for_max=LONG_BREAK))
    for _ in range(5):
        with contextlib.suppress(ConnectionError):
            cb.call(boom)
    if listener:
        cb.add_listener(on_call=noop_listener)
    return cb


def brownout_forced(name: str) -> CircuitBreaker:
    cb = CircuitBreaker(name)
    cb.force_open()
    return cb


def pybreaker_closed(name: str) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, name=name)  # the defaults


def pybreaker_tripped(name: str) -> pybreaker.CircuitBreaker:
    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=LONG_BREAK, name=name)
    for _ in range(5):
        # the 5th failure trips it and raises CircuitBreakerError
        with contextlib.suppress(ConnectionError, pybreaker.CircuitBreakerError):
            pb.call(boom)
    return pb


def circuitbreaker_closed(name: str) -> circuitbreaker.CircuitBreaker:
    # the defaults: failure_threshold=5, recovery_timeout=30, expected_exception=Exception
    return circuitbreaker.CircuitBreaker(name=name)


def circuitbreaker_tripped(name: str) -> circuitbreaker.CircuitBreaker:
    cbk = circuitbreaker.CircuitBreaker(recovery_timeout=int(LONG_BREAK), name=name)
    for _ in range(5):
        with contextlib.suppress(ConnectionError):
            cbk.call(boom)
    return cbk


def aiobreaker_closed(name: str) -> aiobreaker.CircuitBreaker:
    return aiobreaker.CircuitBreaker(name=name)  # the defaults: fail_max=5, 60 s


def aiobreaker_tripped(name: str) -> aiobreaker.CircuitBreaker:
    import datetime

    ab = aiobreaker.CircuitBreaker(
        fail_max=5, timeout_duration=datetime.timedelta(seconds=LONG_BREAK), name=name
    )
    for _ in range(5):
        with contextlib.suppress(ConnectionError, aiobreaker.CircuitBreakerError):
            ab.call(boom)
    return ab


def purgatory_sync(name: str, *, tripped: bool = False) -> Callable[[int], int]:
    """``f`` decorated by purgatory's ``SyncCircuitBreakerFactory`` (its documented use)."""
    breakers = purgatory.SyncCircuitBreakerFactory(default_ttl=LONG_BREAK)  # threshold 5

    @breakers(name)
    def guarded(x: int) -> int:
        if x < 0:
            raise ConnectionError("down")
        return x

    if tripped:
        for _ in range(5):
            with contextlib.suppress(ConnectionError):
                guarded(-1)
    return guarded


def purgatory_async(name: str, *, tripped: bool = False) -> Callable[[int], Any]:
    breakers = purgatory.AsyncCircuitBreakerFactory(default_ttl=LONG_BREAK)

    @breakers(name)
    async def guarded(x: int) -> int:
        if x < 0:
            raise ConnectionError("down")
        return x

    if tripped:
        loop = asyncio.new_event_loop()
        try:
            for _ in range(5):
                with contextlib.suppress(ConnectionError):
                    loop.run_until_complete(guarded(-1))
        finally:
            loop.close()
    return guarded


# -------------------------------------------------------------- batch runners
# Each runner makes n calls in a plain for loop and returns the elapsed ns; the
# loop itself is part of every cell of a scenario, baseline included.


def loop_call(fn: Callable[[int], Any]) -> h.BatchRunner:
    def run(n: int) -> int:
        x = 1
        t0 = perf_counter_ns()
        for _ in range(n):
            fn(x)
        return perf_counter_ns() - t0

    return run


def loop_cb_call(breaker: Any) -> h.BatchRunner:
    """``breaker.call(f, x)``, the bound method looked up on every call as users write it."""

    def run(n: int) -> int:
        x = 1
        cb = breaker
        t0 = perf_counter_ns()
        for _ in range(n):
            cb.call(f, x)
        return perf_counter_ns() - t0

    return run


def loop_reject(fn: Callable[[int], Any], exc: type[BaseException]) -> h.BatchRunner:
    def run(n: int) -> int:
        x = 1
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105 - a plain try/except is what is timed
                fn(x)
            except exc:
                pass
        return perf_counter_ns() - t0

    return run


def loop_cb_reject(breaker: Any, exc: type[BaseException]) -> h.BatchRunner:
    def run(n: int) -> int:
        x = 1
        cb = breaker
        t0 = perf_counter_ns()
        for _ in range(n):
            try:  # noqa: SIM105 - a plain try/except is what is timed
                cb.call(f, x)
            except exc:
                pass
        return perf_counter_ns() - t0

    return run


class AsyncRunners:
    """Async batch runners; timing happens inside the coroutine, on one shared loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def _wrap(self, coro_fn: Callable[[int], Any]) -> h.BatchRunner:
        def run(n: int) -> int:
            return int(self.loop.run_until_complete(coro_fn(n)))

        return run

    def await_call(self, fn: Callable[[int], Any]) -> h.BatchRunner:
        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                await fn(x)
            return perf_counter_ns() - t0

        return self._wrap(go)

    def await_call_async(self, ab: aiobreaker.CircuitBreaker) -> h.BatchRunner:
        """aiobreaker's ``await ab.call_async(af, x)``."""

        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                await ab.call_async(af, x)
            return perf_counter_ns() - t0

        return self._wrap(go)

    def await_call_async_reject(self, ab: aiobreaker.CircuitBreaker) -> h.BatchRunner:
        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105 - a plain try/except is what is timed
                    await ab.call_async(af, x)
                except aiobreaker.CircuitBreakerError:
                    pass
            return perf_counter_ns() - t0

        return self._wrap(go)

    def await_acall(self, cb: CircuitBreaker) -> h.BatchRunner:
        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                await cb.acall(af, x)
            return perf_counter_ns() - t0

        return self._wrap(go)

    def await_reject(self, fn: Callable[[int], Any], exc: type[BaseException]) -> h.BatchRunner:
        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105 - a plain try/except is what is timed
                    await fn(x)
                except exc:
                    pass
            return perf_counter_ns() - t0

        return self._wrap(go)

    def await_acall_reject(self, cb: CircuitBreaker) -> h.BatchRunner:
        async def go(n: int) -> int:
            x = 1
            t0 = perf_counter_ns()
            for _ in range(n):
                try:  # noqa: SIM105 - a plain try/except is what is timed
                    await cb.acall(af, x)
                except BreakerOpen:
                    pass
            return perf_counter_ns() - t0

        return self._wrap(go)


# ------------------------------------------------------------------ checking


class SetupError(RuntimeError):
    pass


def expect_raises(what: str, exc: type[BaseException], call: Callable[[], Any]) -> None:
    try:
        call()
    except exc:
        return
    except BaseException as other:
        raise SetupError(
            f"{what}: expected {exc.__name__}, got {type(other).__name__}: {other}"
        ) from other
    raise SetupError(f"{what}: expected {exc.__name__}, nothing was raised")


def check(what: str, ok: bool) -> None:
    if not ok:
        raise SetupError(what)


def still(b: CircuitBreaker, state: State) -> Callable[[], bool]:
    """A post-run check: ``b`` is in ``state`` (as during the whole run)."""
    return lambda: b.state is state


def rejected(b: CircuitBreaker, calls: int) -> Callable[[], bool]:
    """A post-run check: ``b`` rejected ``calls`` calls."""
    return lambda: b.snapshot().total_rejected == calls


def timed(b: CircuitBreaker, calls: int) -> Callable[[], bool]:
    """A post-run check: ``b`` timed ``calls`` calls."""
    return lambda: b.snapshot().call_duration_count == calls


def acall_once(loop: asyncio.AbstractEventLoop, b: CircuitBreaker) -> Callable[[], Any]:
    return lambda: loop.run_until_complete(b.acall(af, 1))


@dataclass
class Checks:
    """Post-run assertions: each breaker is still in the state it was timed in."""

    items: list[tuple[str, Callable[[], bool]]]

    def run(self) -> list[str]:
        return [what for what, ok in self.items if not ok()]


# ------------------------------------------------------------------- building


def build_cells(runners: AsyncRunners, expected_calls: int) -> tuple[list[h.Cell], Checks]:
    cells: list[h.Cell] = []
    post: list[tuple[str, Callable[[], bool]]] = []
    inv = Inventario()

    def add(scenario: str, label: str, run: h.BatchRunner) -> None:
        cells.append(h.Cell(scenario, label, run))

    def counted(name: str, outcome: str, extra: int = 0) -> None:
        post.append(
            (
                f"the metrics counted every {outcome} of {name}",
                lambda: inv.count(name, outcome) == expected_calls + extra,
            )
        )

    # 1. sync closed ---------------------------------------------------------
    b1 = brownout_closed("bench-sync-closed")
    b1d = brownout_closed("bench-sync-closed-deco")
    b1m = inv.closed("bench-sync-closed-metrics")
    b1l = brownout_closed("bench-sync-closed-listener", listener=True)
    p1 = pybreaker_closed("bench-sync-closed")
    c1 = circuitbreaker_closed("bench-sync-closed")
    a1 = aiobreaker_closed("bench-sync-closed")
    g1 = purgatory_sync("bench-sync-closed")
    check("brownout default breaker is on its lock-free fast path", b1._fast is not None)
    check("brownout breaker with metrics attached is on its fast path", b1m._fast is not None)
    check("brownout breaker with a call listener is off the fast path", b1l._fast is None)
    add(SYNC_CLOSED, "bare", loop_call(f))
    add(SYNC_CLOSED, "brownout `cb.call(f, x)`", loop_cb_call(b1))
    add(SYNC_CLOSED, "brownout `@cb` decorator", loop_call(b1d(f)))
    add(SYNC_CLOSED, WITH_METRICS, loop_cb_call(b1m))
    add(SYNC_CLOSED, "brownout + listener", loop_cb_call(b1l))
    add(SYNC_CLOSED, "pybreaker `pb.call(f, x)`", loop_cb_call(p1))
    add(SYNC_CLOSED, "circuitbreaker `@circuit`", loop_call(c1(f)))
    add(SYNC_CLOSED, "aiobreaker `ab.call(f, x)`", loop_cb_call(a1))
    add(SYNC_CLOSED, "purgatory `@breakers(name)`", loop_call(g1))
    for b in (b1, b1d, b1m, b1l):
        post.append((f"{b.name} stayed closed", still(b, State.CLOSED)))
    counted(b1m.name, "success")
    post.append(("pybreaker sync closed stayed closed", lambda: p1.current_state == "closed"))
    post.append(("circuitbreaker sync closed stayed closed", lambda: c1.closed))
    post.append(("aiobreaker sync closed stayed closed", lambda: a1.current_state is AB_CLOSED))

    # 2. sync open -------------------------------------------------------------
    b2 = brownout_tripped("bench-sync-open")
    b2d = brownout_tripped("bench-sync-open-deco")
    b2f = brownout_forced("bench-sync-forced")
    b2m = inv.tripped("bench-sync-open-metrics")
    b2l = brownout_tripped("bench-sync-open-listener", listener=True)
    p2 = pybreaker_tripped("bench-sync-open")
    c2 = circuitbreaker_tripped("bench-sync-open")
    a2 = aiobreaker_tripped("bench-sync-open")
    g2 = purgatory_sync("bench-sync-open", tripped=True)
    b2d_f, c2_f = b2d(f), c2(f)
    for b in (b2, b2d, b2m, b2l):
        check(f"{b.name} is open after 5 failures", b.state is State.OPEN)
    check("bench-sync-forced is forced open", b2f.state is State.FORCED_OPEN)
    check("pybreaker is open after 5 failures", p2.current_state == "open")
    check("circuitbreaker is open after 5 failures", c2.opened)
    check("aiobreaker is open after 5 failures", a2.current_state is AB_OPEN)
    expect_raises("raiser", E, lambda: raiser(1))
    expect_raises("brownout cb.call (open)", BreakerOpen, lambda: b2.call(f, 1))
    expect_raises("brownout @cb (open)", BreakerOpen, lambda: b2d_f(1))
    expect_raises("brownout cb.call (forced open)", BreakerOpen, lambda: b2f.call(f, 1))
    expect_raises("brownout + metrics (open)", BreakerOpen, lambda: b2m.call(f, 1))
    expect_raises("brownout + listener (open)", BreakerOpen, lambda: b2l.call(f, 1))
    expect_raises("pybreaker (open)", pybreaker.CircuitBreakerError, lambda: p2.call(f, 1))
    expect_raises("circuitbreaker (open)", circuitbreaker.CircuitBreakerError, lambda: c2_f(1))
    expect_raises("aiobreaker (open)", aiobreaker.CircuitBreakerError, lambda: a2.call(f, 1))
    expect_raises("purgatory (open)", OpenedState, lambda: g2(1))
    add(SYNC_OPEN, "bare", loop_reject(raiser, E))
    add(SYNC_OPEN, "brownout `cb.call(f, x)`", loop_cb_reject(b2, BreakerOpen))
    add(SYNC_OPEN, "brownout `@cb` decorator", loop_reject(b2d_f, BreakerOpen))
    add(SYNC_OPEN, "brownout `force_open()`", loop_cb_reject(b2f, BreakerOpen))
    add(SYNC_OPEN, WITH_METRICS, loop_cb_reject(b2m, BreakerOpen))
    add(SYNC_OPEN, "brownout + listener", loop_cb_reject(b2l, BreakerOpen))
    add(SYNC_OPEN, "pybreaker `pb.call(f, x)`", loop_cb_reject(p2, pybreaker.CircuitBreakerError))
    add(
        SYNC_OPEN,
        "circuitbreaker `@circuit`",
        loop_reject(c2_f, circuitbreaker.CircuitBreakerError),
    )
    add(SYNC_OPEN, "aiobreaker `ab.call(f, x)`", loop_cb_reject(a2, aiobreaker.CircuitBreakerError))
    add(
        SYNC_OPEN,
        "purgatory `@breakers(name)`",
        h.traceback_cleared(loop_reject(g2, OpenedState), lambda: g2(1)),
    )
    for b in (b2, b2d, b2m, b2l):
        post.append((f"{b.name} stayed open", still(b, State.OPEN)))
        post.append(
            (
                f"{b.name} rejected every timed call",
                rejected(b, expected_calls + 1),
            )
        )
    counted(b2m.name, "rejected", 1)
    post.append(("bench-sync-forced stayed forced open", lambda: b2f.state is State.FORCED_OPEN))
    post.append(("pybreaker sync open stayed open", lambda: p2.current_state == "open"))
    post.append(("circuitbreaker sync open stayed open", lambda: c2.opened))
    post.append(("aiobreaker sync open stayed open", lambda: a2.current_state is AB_OPEN))

    # 3. async closed ----------------------------------------------------------
    b3 = brownout_closed("bench-async-closed")
    b3d = brownout_closed("bench-async-closed-deco")
    b3m = inv.closed("bench-async-closed-metrics")
    b3l = brownout_closed("bench-async-closed-listener", listener=True)
    c3 = circuitbreaker_closed("bench-async-closed")
    a3 = aiobreaker_closed("bench-async-closed")
    g3 = purgatory_async("bench-async-closed")
    check("brownout async breaker is on its fast path", b3._fast is not None)
    check("brownout async breaker with metrics is on its fast path", b3m._fast is not None)
    add(ASYNC_CLOSED, "bare", runners.await_call(af))
    add(ASYNC_CLOSED, "brownout `cb.acall(af, x)`", runners.await_acall(b3))
    add(ASYNC_CLOSED, "brownout `@cb` decorator", runners.await_call(b3d(af)))
    add(ASYNC_CLOSED, WITH_METRICS, runners.await_acall(b3m))
    add(ASYNC_CLOSED, "brownout + listener", runners.await_acall(b3l))
    add(ASYNC_CLOSED, "circuitbreaker `@circuit`", runners.await_call(c3(af)))
    add(ASYNC_CLOSED, "aiobreaker `ab.call_async(af, x)`", runners.await_call_async(a3))
    add(ASYNC_CLOSED, "purgatory `@breakers(name)`", runners.await_call(g3))
    for b in (b3, b3d, b3m, b3l):
        post.append((f"{b.name} stayed closed", still(b, State.CLOSED)))
    counted(b3m.name, "success")
    post.append(("circuitbreaker async closed stayed closed", lambda: c3.closed))
    post.append(("aiobreaker async closed stayed closed", lambda: a3.current_state is AB_CLOSED))

    # 4. async open ------------------------------------------------------------
    b4 = brownout_tripped("bench-async-open")
    b4d = brownout_tripped("bench-async-open-deco")
    b4m = inv.tripped("bench-async-open-metrics")
    b4l = brownout_tripped("bench-async-open-listener", listener=True)
    c4 = circuitbreaker_tripped("bench-async-open")
    a4 = aiobreaker_tripped("bench-async-open")
    g4 = purgatory_async("bench-async-open", tripped=True)
    b4d_af, c4_af = b4d(af), c4(af)
    loop = runners.loop
    expect_raises("araiser", E, lambda: loop.run_until_complete(araiser(1)))
    for what, cb in (("acall", b4), ("+ metrics", b4m), ("+ listener", b4l)):
        expect_raises(
            f"brownout {what} (open)",
            BreakerOpen,
            acall_once(loop, cb),
        )
    expect_raises(
        "brownout @cb async (open)", BreakerOpen, lambda: loop.run_until_complete(b4d_af(1))
    )
    expect_raises(
        "circuitbreaker async (open)",
        circuitbreaker.CircuitBreakerError,
        lambda: loop.run_until_complete(c4_af(1)),
    )
    expect_raises(
        "aiobreaker async (open)",
        aiobreaker.CircuitBreakerError,
        lambda: loop.run_until_complete(a4.call_async(af, 1)),
    )
    expect_raises("purgatory async (open)", OpenedState, lambda: loop.run_until_complete(g4(1)))
    add(ASYNC_OPEN, "bare", runners.await_reject(araiser, E))
    add(ASYNC_OPEN, "brownout `cb.acall(af, x)`", runners.await_acall_reject(b4))
    add(ASYNC_OPEN, "brownout `@cb` decorator", runners.await_reject(b4d_af, BreakerOpen))
    add(ASYNC_OPEN, WITH_METRICS, runners.await_acall_reject(b4m))
    add(ASYNC_OPEN, "brownout + listener", runners.await_acall_reject(b4l))
    add(
        ASYNC_OPEN,
        "circuitbreaker `@circuit`",
        runners.await_reject(c4_af, circuitbreaker.CircuitBreakerError),
    )
    add(ASYNC_OPEN, "aiobreaker `ab.call_async(af, x)`", runners.await_call_async_reject(a4))
    add(
        ASYNC_OPEN,
        "purgatory `@breakers(name)`",
        h.traceback_cleared(
            runners.await_reject(g4, OpenedState), lambda: loop.run_until_complete(g4(1))
        ),
    )
    for b in (b4, b4d, b4m, b4l):
        post.append((f"{b.name} stayed open", still(b, State.OPEN)))
        post.append(
            (
                f"{b.name} rejected every timed call",
                rejected(b, expected_calls + 1),
            )
        )
    counted(b4m.name, "rejected", 1)
    post.append(("circuitbreaker async open stayed open", lambda: c4.opened))
    post.append(("aiobreaker async open stayed open", lambda: a4.current_state is AB_OPEN))

    # 5. count window + slow-call timing --------------------------------------
    b5 = CircuitBreaker("bench-timed", TIMED_CONFIG)
    b5m = inv.closed("bench-timed-metrics", TIMED_CONFIG)
    p5 = pybreaker_closed("bench-timed")
    c5 = circuitbreaker_closed("bench-timed")
    a5 = aiobreaker_closed("bench-timed")
    g5 = purgatory_sync("bench-timed")
    for b in (b5, b5m):
        check(f"{b.name} times its calls (not the untimed path)", b._fast is None)
    add(TIMED, "bare", loop_call(f))
    add(TIMED, "brownout `cb.call(f, x)`", loop_cb_call(b5))
    add(TIMED, WITH_METRICS, loop_cb_call(b5m))
    add(TIMED, "pybreaker `pb.call(f, x)` (no timing)", loop_cb_call(p5))
    add(TIMED, "circuitbreaker `@circuit` (no timing)", loop_call(c5(f)))
    add(TIMED, "aiobreaker `ab.call(f, x)` (no timing)", loop_cb_call(a5))
    add(TIMED, "purgatory `@breakers(name)` (no timing)", loop_call(g5))
    for b in (b5, b5m):
        post.append((f"{b.name} stayed closed", still(b, State.CLOSED)))
        post.append(
            (
                f"{b.name} timed every call",
                timed(b, expected_calls),
            )
        )
    counted(b5m.name, "success")

    return cells, Checks(post)


# -------------------------------------------------------------- two threads


@dataclass
class ThreadResult:
    label: str
    single_ms: list[float]
    pair_ms: list[float]
    ratios: list[float]


def _one_call_ns(one: Callable[[], Any]) -> int:
    t0 = perf_counter_ns()
    one()
    return perf_counter_ns() - t0


def _pair_wall_ns(one: Callable[[], Any]) -> int:
    barrier = threading.Barrier(2)
    starts: list[int] = [0, 0]
    ends: list[int] = [0, 0]

    def worker(i: int) -> None:
        barrier.wait()
        starts[i] = perf_counter_ns()
        one()
        ends[i] = perf_counter_ns()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(ends) - min(starts)


def run_threads(reps: int, warmup: int) -> tuple[list[ThreadResult], Checks]:
    b5 = brownout_closed("bench-threads")
    b5l = brownout_closed("bench-threads-listener", listener=True)
    p5 = pybreaker_closed("bench-threads")
    c5 = circuitbreaker_closed("bench-threads")
    sleep = time.sleep

    @c5
    def nap() -> None:
        sleep(SLEEP_S)

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("bare", lambda: sleep(SLEEP_S)),
        ("brownout `cb.call(time.sleep, 0.02)`", lambda: b5.call(sleep, SLEEP_S)),
        ("brownout + listener", lambda: b5l.call(sleep, SLEEP_S)),
        ("pybreaker `pb.call(time.sleep, 0.02)`", lambda: p5.call(sleep, SLEEP_S)),
        ("circuitbreaker `@circuit`", nap),
    ]
    results = [ThreadResult(label, [], [], []) for label, _ in cases]
    for r in range(warmup + reps):
        for (_, one), res in zip(cases, results, strict=True):
            gc.collect()
            single = _one_call_ns(one)
            pair = _pair_wall_ns(one)
            if r >= warmup:
                res.single_ms.append(single / 1e6)
                res.pair_ms.append(pair / 1e6)
                res.ratios.append(pair / single)
    checks = Checks(
        [
            ("brownout threads breaker stayed closed", lambda: b5.state is State.CLOSED),
            ("brownout threads + listener stayed closed", lambda: b5l.state is State.CLOSED),
            ("pybreaker threads breaker stayed closed", lambda: p5.current_state == "closed"),
            ("circuitbreaker threads breaker stayed closed", lambda: c5.closed),
        ]
    )
    return results, checks


# ---------------------------------------------------------------------- heap

HEAP_NOTE = (
    "`tracemalloc`, traced heap after `gc.collect()` and a scrape, before and after the "
    "calls; target: no growth with the number of calls (< 16 KiB after one million)"
)
HEAP_LIMIT = 16 * 1024


def heap_check(calls: int) -> list[dict[str, Any]]:
    """One million calls (``calls``) with metrics attached must not grow the heap."""
    inv = Inventario()
    fast = inv.closed("heap-closed")
    timed = inv.closed("heap-timed", TIMED_CONFIG)
    opened = inv.tripped("heap-open")

    def reject(x: int) -> None:
        try:  # noqa: SIM105 - what is measured
            opened.call(f, x)
        except BreakerOpen:
            pass

    cases: list[tuple[str, Callable[[int], Any]]] = [
        ("closed (lock-free path)", lambda x: fast.call(f, x)),
        ("count window + slow-call timing", lambda x: timed.call(f, x)),
        ("open (rejection, caught)", reject),
    ]
    out = []
    for label, one in cases:
        for x in range(5_000):  # warm: every lazily made object exists
            one(x)
        inv.metrics.render()
        tracemalloc.start()
        try:
            gc.collect()
            inv.metrics.render()
            before = tracemalloc.get_traced_memory()[0]
            tenth = calls // 10
            for x in range(tenth):
                one(x)
            gc.collect()
            inv.metrics.render()
            after_tenth = tracemalloc.get_traced_memory()[0]
            for x in range(calls - tenth):
                one(x)
            gc.collect()
            inv.metrics.render()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        growth = after - before
        out.append(
            {
                "label": label,
                "calls": calls,
                "growth_tenth": after_tenth - before,
                "growth": growth,
                "met": growth < HEAP_LIMIT,
            }
        )
    return out


# ------------------------------------------------------------------ reporting


def fmt_ns(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "—"
    return "yes" if ratio <= target else "**no**"


def row_target(scenario: str, label: str) -> float | None:
    """The target of a row: brownout's plain rows and its "with metrics" row have one."""
    if label == WITH_METRICS:
        return METRICS_TARGETS.get(scenario)
    if label.startswith("brownout") and "listener" not in label:
        return TARGETS[scenario][0]
    return None


def paired_median(cell: h.Cell, base: h.Cell) -> float:
    """The median of the per-round ratios cell / bare (timed moments apart, same round)."""
    return statistics.median(a / b for a, b in zip(cell.samples, base.samples, strict=True))


def peers_table(cells: list[h.Cell]) -> tuple[str, list[dict[str, Any]]]:
    """Per scenario: brownout plain and with metrics against the fastest other library."""
    base_cells = {c.scenario: c for c in cells if c.label == "bare"}
    rows, data = [], []
    for scenario in dict.fromkeys(c.scenario for c in cells):
        mine = [c for c in cells if c.scenario == scenario]
        base = base_cells[scenario]
        plain = next(c for c in mine if c.label.startswith("brownout `cb."))
        metered = next(c for c in mine if c.label == WITH_METRICS)
        peers = [c for c in mine if c.label.split()[0] in PEERS]
        best = min(peers, key=lambda c: c.median)
        ahead = plain.median < best.median and metered.median < best.median
        rows.append(
            [
                scenario,
                f"{paired_median(plain, base):.2f}x",
                f"{paired_median(metered, base):.2f}x",
                f"{best.label.split()[0]} {paired_median(best, base):.2f}x",
                "yes" if ahead else "**no**",
            ]
        )
        data.append(
            {
                "scenario": scenario,
                "plain": paired_median(plain, base),
                "with_metrics": paired_median(metered, base),
                "best_peer": best.label,
                "best_peer_ratio": paired_median(best, base),
                "ahead": ahead,
            }
        )
    table = h.markdown_table(
        ["scenario", "brownout plain", "brownout + metrics", "fastest other library", "ahead"],
        rows,
    )
    return table, data


def report(
    cells: list[h.Cell],
    threads: list[ThreadResult],
    heap: list[dict[str, Any]],
    info: dict[str, Any],
    params: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    base_cells = {c.scenario: c for c in cells if c.label == "bare"}
    baselines = {sc: c.median for sc, c in base_cells.items()}
    rows: list[list[str]] = []
    json_cells: list[dict[str, Any]] = []
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    for scenario in scenarios:
        base = baselines[scenario]
        for c in (c for c in cells if c.scenario == scenario):
            target = row_target(scenario, c.label)
            med = c.median
            ratio = med / base
            q1, _, q3 = h.quantiles(c.samples)
            is_base = c.label == "bare"
            # the same ratio taken round by round (cell and baseline timed moments apart)
            paired = [a / b for a, b in zip(c.samples, base_cells[scenario].samples, strict=True)]
            pmed = statistics.median(paired)
            rows.append(
                [
                    scenario,
                    c.label,
                    fmt_ns(med),
                    "—" if is_base else f"{med - base:+,.0f}",
                    f"{ratio:.2f}x",
                    f"{pmed:.2f}x",
                    "—" if target is None or is_base else f"<= {target:g}x",
                    "—" if is_base else verdict(pmed, target),
                    f"{c.spread * 100:.1f}%",
                ]
            )
            json_cells.append(
                {
                    "scenario": scenario,
                    "label": c.label,
                    "median_ns": med,
                    "p25_ns": q1,
                    "p75_ns": q3,
                    "overhead_ns": med - base,
                    "ratio": ratio,
                    "paired_ratio": pmed,
                    "paired_ratio_quartiles": h.quantiles(paired),
                    "target": target,
                    "met": None if target is None or is_base else pmed <= target,
                    "samples_ns": c.samples,
                }
            )
        for (sc, label), why in NOT_AVAILABLE.items():
            if sc == scenario:
                rows.append([scenario, label, "n/a", "—", "n/a", "n/a", "—", "—", "—"])
                json_cells.append({"scenario": scenario, "label": label, "n/a": why})

    table = h.markdown_table(
        [
            "scenario",
            "cell",
            "median ns/call",
            "vs bare (ns)",
            "ratio of medians",
            "paired ratio",
            "target",
            "met",
            "IQR",
        ],
        rows,
    )
    p_table, json_peers = peers_table(cells)
    heap_table = h.markdown_table(
        ["breaker (metrics attached)", "calls", "heap growth after a tenth", "heap growth", "met"],
        [
            [
                r["label"],
                f"{r['calls']:,}",
                f"{r['growth_tenth']:+,} B",
                f"{r['growth']:+,} B",
                "yes" if r["met"] else "**no**",
            ]
            for r in heap
        ],
    )

    t_target, _ = TARGETS[THREADS]
    assert t_target is not None
    t_rows: list[list[str]] = []
    json_threads: list[dict[str, Any]] = []
    for res in threads:
        ratio = statistics.median(res.ratios)
        t_rows.append(
            [
                THREADS,
                res.label,
                f"{statistics.median(res.single_ms):.2f}",
                f"{statistics.median(res.pair_ms):.2f}",
                f"{ratio:.2f}x",
                f"<= {t_target:g}x",
                verdict(ratio, t_target),
                f"{min(res.ratios):.2f} to {max(res.ratios):.2f}",
            ]
        )
        json_threads.append(
            {
                "label": res.label,
                "single_ms": res.single_ms,
                "pair_ms": res.pair_ms,
                "ratios": res.ratios,
                "median_ratio": ratio,
                "target": t_target,
                "met": ratio <= t_target,
            }
        )
    t_table = h.markdown_table(
        [
            "scenario",
            "cell",
            "one call (ms)",
            "pair wall (ms)",
            "pair / one",
            "target",
            "met",
            "min to max",
        ],
        t_rows,
    )

    baseline_notes = "\n".join(f"- Baseline of *{sc}*: {what}" for sc, (_, what) in TARGETS.items())
    text = "\n".join(
        [
            "# Breaker overhead (issues #2 and #11)",
            "",
            h.header_line(info),
            "",
            f"Settings: {params['rounds']} rounds x {params['batch']:,} calls per cell, "
            f"{params['warmup']} warm-up rounds, cells interleaved round-robin; "
            f"two-thread scenario: {params['thread_reps']} repetitions "
            f"(+{params['thread_warmup']} warm-up). "
            "ns/call includes the `for` loop (the same in every cell); "
            "ratio of medians = median / median of the scenario's bare cell; "
            "paired ratio = median of the per-round ratios to the bare cell (the verdict); "
            "IQR = inter-quartile range / median.",
            "",
            table,
            "",
            "Ahead of the other libraries (paired ratios; ahead = brownout plain and "
            "with metrics both faster than the fastest other library):",
            "",
            p_table,
            "",
            t_table,
            "",
            f"Heap ({HEAP_NOTE}):",
            "",
            heap_table,
            "",
            baseline_notes,
            "- pybreaker n/a in 3 and 4: pybreaker 1.4.1 has no asyncio API; its `call_async` "
            "wraps the call in tornado's `gen.coroutine` (tornado is not a dependency).",
        ]
    )
    data = {
        "benchmark": "breaker_overhead",
        "machine": info,
        "params": params,
        "cells": json_cells,
        "peers": json_peers,
        "threads": json_threads,
        "heap": heap,
    }
    return text, data


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, help="recorded rounds per cell (default 41)")
    p.add_argument("--batch", type=int, help="calls per cell per round (default 20000)")
    p.add_argument("--warmup", type=int, help="unrecorded rounds first (default 5)")
    p.add_argument("--thread-reps", type=int, help="two-thread repetitions (default 15)")
    p.add_argument("--heap-calls", type=int, help="calls per heap case (default 1000000)")
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke test (~1 s)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    quick = {"rounds": 3, "batch": 200, "warmup": 1, "thread_reps": 2, "heap_calls": 20_000}
    full = {
        "rounds": 41,
        "batch": 20_000,
        "warmup": 5,
        "thread_reps": 15,
        "heap_calls": 1_000_000,
    }
    for key, default in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
        if getattr(args, key) < (0 if key == "warmup" else 1):
            p.error(f"--{key.replace('_', '-')} must be >= {0 if key == 'warmup' else 1}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = h.machine_info(LIBRARIES)
    thread_warmup = 1
    params = {
        "rounds": args.rounds,
        "batch": args.batch,
        "warmup": args.warmup,
        "thread_reps": args.thread_reps,
        "thread_warmup": thread_warmup,
        "heap_calls": args.heap_calls,
        "quick": args.quick,
    }

    def progress(msg: str) -> None:
        print(f"[breaker_overhead] {msg}", file=sys.stderr, flush=True)

    runners = AsyncRunners()
    try:
        expected = (args.warmup + args.rounds) * args.batch
        try:
            cells, post = build_cells(runners, expected)
        except SetupError as exc:
            print(f"setup check failed: {exc}", file=sys.stderr)
            return 1
        progress(f"{len(cells)} cells x ({args.warmup}+{args.rounds}) rounds x {args.batch} calls")
        h.run_interleaved(
            cells, rounds=args.rounds, batch=args.batch, warmup=args.warmup, progress=progress
        )
        progress(f"two threads: {args.thread_reps}+{thread_warmup} repetitions")
        threads, t_post = run_threads(args.thread_reps, thread_warmup)
        progress(f"heap: {args.heap_calls:,} calls per case under tracemalloc")
        heap = heap_check(args.heap_calls)
    finally:
        runners.close()

    failed = post.run() + t_post.run()
    text, data = report(cells, threads, heap, info, params)
    data["checks_failed"] = failed
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if failed:
        print("post-run checks FAILED (figures are not valid):", file=sys.stderr)
        for what in failed:
            print(f"  - {what}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
