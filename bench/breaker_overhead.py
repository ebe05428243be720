"""Breaker overhead: what does guarding a call cost, next to pybreaker and circuitbreaker?

Issue #2. A benchmark, not a timed test: it prints a Markdown table and exits 0
whether or not the targets are met (it exits 1 only if a breaker was not in the
state it was supposed to be in, which would make the figures meaningless).

Scenarios (every figure is the median ns per call over ``--rounds`` rounds,
each round timing a batch of ``--batch`` calls per cell; all cells of
scenarios 1-4 are interleaved round-robin in one process, see ``_harness``):

1. sync closed: ``f(x)`` vs ``cb.call(f, x)``, ``@cb``-decorated ``f``, the same
   with a no-op ``on_call`` listener (which turns brownout's lock-free fast path
   off), ``pybreaker.CircuitBreaker.call(f, x)`` and a ``@circuit``-decorated ``f``.
2. sync open: the baseline is a function call that raises a fresh exception
   instance, caught by the caller; each breaker is tripped (five failures, the
   default threshold of all three libraries) with a break of ~11 days, so it
   stays open for the whole run, and its rejection is caught.
3. async closed: ``await af(x)`` vs ``await cb.acall(af, x)`` etc. pybreaker is
   n/a: its only async API, ``call_async``, is built on tornado's
   ``gen.coroutine`` (tornado is not even a dependency), not on asyncio.
4. async open: ``await`` of a coroutine that raises, caught, vs rejections.
5. two threads making a 20 ms call (``time.sleep(0.02)``) through one breaker
   at the same time: wall time of the pair / time of one call made alone
   (1.00 = fully parallel, 2.00 = serialised), median over ``--thread-reps``.

Targets (issue #2, for brownout's default configuration): sync closed <= 8x
bare, sync open <= 2x bare raise-and-catch, async closed <= 4x bare await, two
threads <= 1.05x one call. They are printed next to every row's ratio.

Run: ``.venv/bin/python bench/breaker_overhead.py [--rounds R] [--batch N]
[--quick] [--json PATH]``.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import circuitbreaker
import pybreaker

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.breaker_overhead
    from bench import _harness as h

# A tripped breaker logs a warning; keep the benchmark's output to the table.
logging.getLogger("brownout").addHandler(logging.NullHandler())
logging.getLogger("brownout").propagate = False

LIBRARIES = ("brownout", "pybreaker", "circuitbreaker")
LONG_BREAK = 1_000_000.0  # seconds (~11.6 days): an open breaker stays open for the run
SLEEP_S = 0.02

SYNC_CLOSED = "1. sync closed"
SYNC_OPEN = "2. sync open (rejection, caught)"
ASYNC_CLOSED = "3. async closed"
ASYNC_OPEN = "4. async open (rejection, caught)"
THREADS = "5. two threads, 20 ms calls"

#: scenario -> (target ratio or None, what the baseline is)
TARGETS: dict[str, tuple[float | None, str]] = {
    SYNC_CLOSED: (8.0, "`f(x)`"),
    SYNC_OPEN: (2.0, "`try: raiser(x) except E: pass` (raises a fresh `E()`)"),
    ASYNC_CLOSED: (4.0, "`await af(x)`"),
    ASYNC_OPEN: (None, "`try: await araiser(x) except E: pass`"),
    THREADS: (1.05, "`time.sleep(0.02)` called directly"),
}

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

    def add(scenario: str, label: str, run: h.BatchRunner) -> None:
        cells.append(h.Cell(scenario, label, run))

    # 1. sync closed ---------------------------------------------------------
    b1 = brownout_closed("bench-sync-closed")
    b1d = brownout_closed("bench-sync-closed-deco")
    b1l = brownout_closed("bench-sync-closed-listener", listener=True)
    p1 = pybreaker_closed("bench-sync-closed")
    c1 = circuitbreaker_closed("bench-sync-closed")
    check("brownout default breaker is on its lock-free fast path", b1._fast is not None)
    check("brownout breaker with a call listener is off the fast path", b1l._fast is None)
    add(SYNC_CLOSED, "bare", loop_call(f))
    add(SYNC_CLOSED, "brownout `cb.call(f, x)`", loop_cb_call(b1))
    add(SYNC_CLOSED, "brownout `@cb` decorator", loop_call(b1d(f)))
    add(SYNC_CLOSED, "brownout + listener", loop_cb_call(b1l))
    add(SYNC_CLOSED, "pybreaker `pb.call(f, x)`", loop_cb_call(p1))
    add(SYNC_CLOSED, "circuitbreaker `@circuit`", loop_call(c1(f)))
    for b in (b1, b1d, b1l):
        post.append((f"{b.name} stayed closed", lambda b=b: b.state is State.CLOSED))
    post.append(("pybreaker sync closed stayed closed", lambda: p1.current_state == "closed"))
    post.append(("circuitbreaker sync closed stayed closed", lambda: c1.closed))

    # 2. sync open -------------------------------------------------------------
    b2 = brownout_tripped("bench-sync-open")
    b2d = brownout_tripped("bench-sync-open-deco")
    b2f = brownout_forced("bench-sync-forced")
    b2l = brownout_tripped("bench-sync-open-listener", listener=True)
    p2 = pybreaker_tripped("bench-sync-open")
    c2 = circuitbreaker_tripped("bench-sync-open")
    b2d_f, c2_f = b2d(f), c2(f)
    for b in (b2, b2d, b2l):
        check(f"{b.name} is open after 5 failures", b.state is State.OPEN)
    check("bench-sync-forced is forced open", b2f.state is State.FORCED_OPEN)
    check("pybreaker is open after 5 failures", p2.current_state == "open")
    check("circuitbreaker is open after 5 failures", c2.opened)
    expect_raises("raiser", E, lambda: raiser(1))
    expect_raises("brownout cb.call (open)", BreakerOpen, lambda: b2.call(f, 1))
    expect_raises("brownout @cb (open)", BreakerOpen, lambda: b2d_f(1))
    expect_raises("brownout cb.call (forced open)", BreakerOpen, lambda: b2f.call(f, 1))
    expect_raises("brownout + listener (open)", BreakerOpen, lambda: b2l.call(f, 1))
    expect_raises("pybreaker (open)", pybreaker.CircuitBreakerError, lambda: p2.call(f, 1))
    expect_raises("circuitbreaker (open)", circuitbreaker.CircuitBreakerError, lambda: c2_f(1))
    add(SYNC_OPEN, "bare", loop_reject(raiser, E))
    add(SYNC_OPEN, "brownout `cb.call(f, x)`", loop_cb_reject(b2, BreakerOpen))
    add(SYNC_OPEN, "brownout `@cb` decorator", loop_reject(b2d_f, BreakerOpen))
    add(SYNC_OPEN, "brownout `force_open()`", loop_cb_reject(b2f, BreakerOpen))
    add(SYNC_OPEN, "brownout + listener", loop_cb_reject(b2l, BreakerOpen))
    add(SYNC_OPEN, "pybreaker `pb.call(f, x)`", loop_cb_reject(p2, pybreaker.CircuitBreakerError))
    add(
        SYNC_OPEN,
        "circuitbreaker `@circuit`",
        loop_reject(c2_f, circuitbreaker.CircuitBreakerError),
    )
    for b in (b2, b2d, b2l):
        post.append((f"{b.name} stayed open", lambda b=b: b.state is State.OPEN))
        post.append(
            (
                f"{b.name} rejected every timed call",
                lambda b=b: b.snapshot().total_rejected == expected_calls + 1,
            )
        )
    post.append(("bench-sync-forced stayed forced open", lambda: b2f.state is State.FORCED_OPEN))
    post.append(("pybreaker sync open stayed open", lambda: p2.current_state == "open"))
    post.append(("circuitbreaker sync open stayed open", lambda: c2.opened))

    # 3. async closed ----------------------------------------------------------
    b3 = brownout_closed("bench-async-closed")
    b3d = brownout_closed("bench-async-closed-deco")
    b3l = brownout_closed("bench-async-closed-listener", listener=True)
    c3 = circuitbreaker_closed("bench-async-closed")
    check("brownout async breaker is on its fast path", b3._fast is not None)
    add(ASYNC_CLOSED, "bare", runners.await_call(af))
    add(ASYNC_CLOSED, "brownout `cb.acall(af, x)`", runners.await_acall(b3))
    add(ASYNC_CLOSED, "brownout `@cb` decorator", runners.await_call(b3d(af)))
    add(ASYNC_CLOSED, "brownout + listener", runners.await_acall(b3l))
    add(ASYNC_CLOSED, "circuitbreaker `@circuit`", runners.await_call(c3(af)))
    for b in (b3, b3d, b3l):
        post.append((f"{b.name} stayed closed", lambda b=b: b.state is State.CLOSED))
    post.append(("circuitbreaker async closed stayed closed", lambda: c3.closed))

    # 4. async open ------------------------------------------------------------
    b4 = brownout_tripped("bench-async-open")
    b4d = brownout_tripped("bench-async-open-deco")
    b4l = brownout_tripped("bench-async-open-listener", listener=True)
    c4 = circuitbreaker_tripped("bench-async-open")
    b4d_af, c4_af = b4d(af), c4(af)
    loop = runners.loop
    expect_raises("araiser", E, lambda: loop.run_until_complete(araiser(1)))
    for what, cb in (("acall", b4), ("+ listener", b4l)):
        expect_raises(
            f"brownout {what} (open)",
            BreakerOpen,
            lambda cb=cb: loop.run_until_complete(cb.acall(af, 1)),
        )
    expect_raises(
        "brownout @cb async (open)", BreakerOpen, lambda: loop.run_until_complete(b4d_af(1))
    )
    expect_raises(
        "circuitbreaker async (open)",
        circuitbreaker.CircuitBreakerError,
        lambda: loop.run_until_complete(c4_af(1)),
    )
    add(ASYNC_OPEN, "bare", runners.await_reject(araiser, E))
    add(ASYNC_OPEN, "brownout `cb.acall(af, x)`", runners.await_acall_reject(b4))
    add(ASYNC_OPEN, "brownout `@cb` decorator", runners.await_reject(b4d_af, BreakerOpen))
    add(ASYNC_OPEN, "brownout + listener", runners.await_acall_reject(b4l))
    add(
        ASYNC_OPEN,
        "circuitbreaker `@circuit`",
        runners.await_reject(c4_af, circuitbreaker.CircuitBreakerError),
    )
    for b in (b4, b4d, b4l):
        post.append((f"{b.name} stayed open", lambda b=b: b.state is State.OPEN))
        post.append(
            (
                f"{b.name} rejected every timed call",
                lambda b=b: b.snapshot().total_rejected == expected_calls + 1,
            )
        )
    post.append(("circuitbreaker async open stayed open", lambda: c4.opened))

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


# ------------------------------------------------------------------ reporting


def fmt_ns(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "—"
    return "yes" if ratio <= target else "**no**"


def report(
    cells: list[h.Cell], threads: list[ThreadResult], info: dict[str, Any], params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    base_cells = {c.scenario: c for c in cells if c.label == "bare"}
    baselines = {sc: c.median for sc, c in base_cells.items()}
    rows: list[list[str]] = []
    json_cells: list[dict[str, Any]] = []
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    for scenario in scenarios:
        target, _ = TARGETS[scenario]
        base = baselines[scenario]
        for c in (c for c in cells if c.scenario == scenario):
            med = c.median
            ratio = med / base
            q1, _, q3 = h.quantiles(c.samples)
            is_base = c.label == "bare"
            # the same ratio taken round by round (cell and baseline timed moments apart)
            paired = [a / b for a, b in zip(c.samples, base_cells[scenario].samples, strict=True)]
            rows.append(
                [
                    scenario,
                    c.label,
                    fmt_ns(med),
                    "—" if is_base else f"{med - base:+,.0f}",
                    f"{ratio:.2f}x",
                    "—" if target is None or is_base else f"<= {target:g}x",
                    "—" if is_base else verdict(ratio, target),
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
                    "paired_ratio_quartiles": h.quantiles(paired),
                    "target": target,
                    "met": None if target is None or is_base else ratio <= target,
                    "samples_ns": c.samples,
                }
            )
        for (sc, label), why in NOT_AVAILABLE.items():
            if sc == scenario:
                rows.append([scenario, label, "n/a", "—", "n/a", "—", "—", "—"])
                json_cells.append({"scenario": scenario, "label": label, "n/a": why})

    table = h.markdown_table(
        ["scenario", "cell", "median ns/call", "vs bare (ns)", "ratio", "target", "met", "IQR"],
        rows,
    )

    t_target, _ = TARGETS[THREADS]
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
            "# Breaker overhead (issue #2)",
            "",
            h.header_line(info),
            "",
            f"Settings: {params['rounds']} rounds x {params['batch']:,} calls per cell, "
            f"{params['warmup']} warm-up rounds, cells interleaved round-robin; "
            f"two-thread scenario: {params['thread_reps']} repetitions "
            f"(+{params['thread_warmup']} warm-up). "
            "ns/call includes the `for` loop (the same in every cell); "
            "ratio = median / median of the scenario's bare cell; "
            "IQR = inter-quartile range / median.",
            "",
            table,
            "",
            t_table,
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
        "threads": json_threads,
    }
    return text, data


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, help="recorded rounds per cell (default 41)")
    p.add_argument("--batch", type=int, help="calls per cell per round (default 20000)")
    p.add_argument("--warmup", type=int, help="unrecorded rounds first (default 5)")
    p.add_argument("--thread-reps", type=int, help="two-thread repetitions (default 15)")
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke test (~1 s)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    quick = {"rounds": 3, "batch": 200, "warmup": 1, "thread_reps": 2}
    full = {"rounds": 41, "batch": 20_000, "warmup": 5, "thread_reps": 15}
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
    finally:
        runners.close()

    failed = post.run() + t_post.run()
    text, data = report(cells, threads, info, params)
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
