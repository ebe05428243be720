"""Overload guards' overhead: what does a bulkhead acquire/release pair (fixed and
adaptive), an adaptive-throttle attempt and a retry-budget deposit cost next to a
bare call and a breaker call?

Issue 14 (library part). A benchmark, not a timed test: it prints a Markdown
table of the median ns per call over ``--rounds`` rounds (each round times a batch
of ``--batch`` calls per cell; all cells interleaved round-robin in one process,
see ``_harness``) and exits 0; it exits 1 only if a guard was left holding permits
or did not count every call, which would make the figures meaningless.

Uncontended: one caller, so every acquire takes the fast path (a free permit,
nobody queued). Contended waits are measured by nothing here: they cost what the
wait costs.

    .venv/bin/python bench/overload_overhead.py [--rounds 30 --batch 20000 --warmup 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from brownout import BreakerConfig, CircuitBreaker
from brownout.overload import AdaptiveThrottle, Bulkhead, Gradient2, RetryBudget


def f(x: int) -> int:
    return x + 1


async def af(x: int) -> int:
    return x + 1


def build(
    loop: asyncio.AbstractEventLoop,
) -> tuple[list[h.Cell], Callable[[], list[tuple[str, bool]]]]:
    fixed = Bulkhead("fixed", limit=10)
    adaptive = Bulkhead("adaptive", limit=Gradient2())
    throttle = AdaptiveThrottle("throttle")
    budget = RetryBudget("budget")
    cb = CircuitBreaker("cb", BreakerConfig())
    afixed = Bulkhead("afixed", limit=10)

    def bare(n: int) -> int:
        t0 = time.perf_counter_ns()
        for i in range(n):
            f(i)
        return time.perf_counter_ns() - t0

    def with_fixed(n: int) -> int:
        acquire = fixed.acquire
        t0 = time.perf_counter_ns()
        for i in range(n):
            with acquire():
                f(i)
        return time.perf_counter_ns() - t0

    def with_adaptive(n: int) -> int:
        acquire = adaptive.acquire
        t0 = time.perf_counter_ns()
        for i in range(n):
            with acquire():
                f(i)
        return time.perf_counter_ns() - t0

    def fixed_call(n: int) -> int:
        call = fixed.call
        t0 = time.perf_counter_ns()
        for i in range(n):
            call(f, i)
        return time.perf_counter_ns() - t0

    def try_release(n: int) -> int:
        try_acquire = fixed.try_acquire
        t0 = time.perf_counter_ns()
        for i in range(n):
            p = try_acquire()
            try:
                f(i)
            finally:
                p.release()  # type: ignore[union-attr]
        return time.perf_counter_ns() - t0

    def with_throttle(n: int) -> int:
        attempt = throttle.attempt
        t0 = time.perf_counter_ns()
        for i in range(n):
            with attempt():
                f(i)
        return time.perf_counter_ns() - t0

    def with_budget(n: int) -> int:
        request = budget.request
        t0 = time.perf_counter_ns()
        for i in range(n):
            request()
            f(i)
        return time.perf_counter_ns() - t0

    def breaker(n: int) -> int:
        call = cb.call
        t0 = time.perf_counter_ns()
        for i in range(n):
            call(f, i)
        return time.perf_counter_ns() - t0

    async def abare_batch(n: int) -> int:
        t0 = time.perf_counter_ns()
        for i in range(n):
            await af(i)
        return time.perf_counter_ns() - t0

    async def afixed_batch(n: int) -> int:
        acquire = afixed.acquire
        t0 = time.perf_counter_ns()
        for i in range(n):
            async with acquire():
                await af(i)
        return time.perf_counter_ns() - t0

    def abare(n: int) -> int:
        return loop.run_until_complete(abare_batch(n))

    def awith_fixed(n: int) -> int:
        return loop.run_until_complete(afixed_batch(n))

    cells = [
        h.Cell("sync", "bare f(x)", bare),
        h.Cell("sync", "with bulkhead.acquire() (fixed limit)", with_fixed),
        h.Cell("sync", "with bulkhead.acquire() (Gradient2)", with_adaptive),
        h.Cell("sync", "bulkhead.call(f, x) (fixed)", fixed_call),
        h.Cell("sync", "try_acquire() + release() (fixed)", try_release),
        h.Cell("sync", "with throttle.attempt()", with_throttle),
        h.Cell("sync", "budget.request() + f(x)", with_budget),
        h.Cell("sync", "breaker.call(f, x) (reference)", breaker),
        h.Cell("async", "await af(x)", abare),
        h.Cell("async", "async with bulkhead.acquire() (fixed)", awith_fixed),
    ]

    def checks() -> list[tuple[str, bool]]:
        return [
            (f"{b.name} holds no permit at the end", b.in_use == 0)
            for b in (fixed, adaptive, afixed)
        ] + [
            ("the throttle rejected nothing", throttle.snapshot().total_rejected == 0),
            ("every call was admitted by the fixed bulkhead", fixed.snapshot().rejected == 0),
        ]

    return cells, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    info = h.machine_info()
    loop = asyncio.new_event_loop()
    try:
        cells, checks = build(loop)
        h.run_interleaved(cells, rounds=args.rounds, batch=args.batch, warmup=args.warmup)
        failed = [what for what, ok in checks() if not ok]
    finally:
        loop.close()
    base = {c.scenario: c.median for c in cells if c.label in ("bare f(x)", "await af(x)")}
    rows = [
        [
            c.scenario,
            c.label,
            f"{c.median:.0f}",
            f"{c.median - base[c.scenario]:.0f}",
            f"{c.median / base[c.scenario]:.2f}x",
            f"{c.spread * 100:.0f} %",
        ]
        for c in cells
    ]
    print(h.header_line(info) + "\n")
    print(
        h.markdown_table(
            ["", "cell", "ns/call", "added ns", "vs bare", "IQR"],
            rows,
        )
    )
    h.print_problems(failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
