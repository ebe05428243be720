"""Breakers shared by the processes of a host (issue 13 item 2): what a dependency outage
costs N worker processes until all of them reject, with and without ``HostShare``, and
what sharing costs per call.

A benchmark, not a timed test: it prints Markdown tables and exits 0 (1 only if a
worker never rejected, which would make the figures meaningless).

Outage: N processes (``multiprocessing``, spawn) start together; each calls a dependency
that is down: every call waits ``--timeout`` (0.5 s, as a client timeout would) and
fails. Each process's breaker opens after 5 consecutive failures (the default); with
``HostShare`` the failures in a row of all processes add up to those 5. Per run:
the failures spent in all (each one cost a timeout) and the seconds from the start until
the last process rejects. Shared: every process attaches its breaker to one
``HostShare`` file (poll interval 0.1 s). Each cell is the median of ``--reps`` runs.

Per call: ``cb.call(f)`` on a closed breaker with and without ``HostShare.attach`` (a
state listener only: nothing on the call path), interleaved rounds in one process, ns
per call (median).

Run: ``.venv/bin/python bench/hostshare.py [--reps R] [--quick]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from brownout import BreakerOpen, CircuitBreaker
from brownout.hostshare import HostShare


def _down(timeout: float) -> None:
    time.sleep(timeout)
    raise TimeoutError("dependency timed out")


def _worker(path: str | None, timeout: float, start: Any, out: Any) -> None:
    breaker = CircuitBreaker("db")
    share = HostShare(path, poll_interval=0.1, lease=2.0) if path else None
    if share is not None:
        share.attach(breaker)
    failures = 0
    start.wait()
    began = time.monotonic()
    while time.monotonic() - began < 30:
        try:
            breaker.call(_down, timeout)
        except TimeoutError:
            failures += 1
        except BreakerOpen:
            out.put((failures, time.monotonic() - began))
            break
    else:
        out.put((failures, -1.0))
    if share is not None:
        share.close()


def outage(n: int, shared: bool, timeout: float) -> tuple[int, float]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "breakers.db") if shared else None
        procs = [ctx.Process(target=_worker, args=(path, timeout, start, out)) for _ in range(n)]
        for proc in procs:
            proc.start()
        time.sleep(2.0)  # let every process import and attach before the outage starts
        start.set()
        results = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(10)
    if any(took < 0 for _, took in results):
        raise SystemExit("a worker never rejected: the run is meaningless")
    return sum(f for f, _ in results), max(t for _, t in results)


def per_call(rounds: int, batch: int) -> dict[str, float]:
    def f() -> int:
        return 1

    plain = CircuitBreaker("plain")
    shared = CircuitBreaker("shared")
    with tempfile.TemporaryDirectory() as tmp:
        share = HostShare(Path(tmp) / "b.db", poll_interval=None)
        share.attach(shared)
        samples: dict[str, list[float]] = {"bare": [], "plain": [], "shared": []}
        for i in range(rounds):
            t = time.perf_counter_ns()
            for _ in range(batch):
                f()
            samples["bare"].append((time.perf_counter_ns() - t) / batch)
            cells = [("plain", plain), ("shared", shared)]
            for name, cb in cells if i % 2 else cells[::-1]:
                call = cb.call
                t = time.perf_counter_ns()
                for _ in range(batch):
                    call(f)
                samples[name].append((time.perf_counter_ns() - t) / batch)
        share.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--reps", type=int, default=5, help="runs per outage cell (default 5)")
    p.add_argument("--timeout", type=float, default=0.5, help="s each failing call takes")
    p.add_argument("--rounds", type=int, default=31, help="per-call rounds (default 31)")
    p.add_argument("--batch", type=int, default=100_000, help="calls per round")
    p.add_argument("--quick", action="store_true", help="small numbers (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.rounds, args.batch = 1, 5, 10_000
    print(f"# bench/hostshare.py, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"# {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    print(f"# {' '.join(sys.argv)}\n")
    print("| workers | breakers | failures spent (all workers) | s until all reject |")
    print("|---|---|---|---|")
    for n in (2, 4):
        for shared in (False, True):
            runs = [outage(n, shared, args.timeout) for _ in range(args.reps)]
            failures = statistics.median(r[0] for r in runs)
            seconds = statistics.median(r[1] for r in runs)
            label = "shared (HostShare)" if shared else "per process"
            print(f"| {n} | {label} | {failures:g} | {seconds:.2f} |")
    cost = per_call(args.rounds, args.batch)
    print("\n| per call, closed | ns (median) | x bare |")
    print("|---|---|---|")
    for name in ("bare", "plain", "shared"):
        print(f"| {name} | {cost[name]:.1f} | {cost[name] / cost['bare']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
