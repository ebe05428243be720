"""Degradation manager cost: ``manager.enabled(name)`` and one full evaluation.

Issue #4. A benchmark, not a timed test: it prints a Markdown table.

Cells (interleaved round-robin, see ``_harness``):

* ``enabled(name)``: the feature check that sits on request hot paths
  (target: median <= 200 ns); a bare ``dict`` lookup is timed alongside as the
  floor of what Python can do.
* ``evaluate()``: one full evaluation over 5 components with breakers (no
  probes run), each component reading its breaker's snapshot (target: median
  <= 50 us); once with every component healthy, once with two down.

Run: ``.venv/bin/python bench/degradation.py [--rounds R] [--batch N] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
from brownout import Registry
from brownout.health import Component, DegradationManager


def build(down: tuple[str, ...] = ()) -> DegradationManager:
    registry = Registry.with_defaults()
    names = ["database", "cache", "openai", "s3", "external_api"]
    manager = DegradationManager([Component(n, breaker=registry.get(n)) for n in names])
    for n in down:
        registry.get(n).force_open()
    return manager


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.batch = 3, 50
    healthy = build()
    degraded = build(("cache", "s3"))
    table = {name: True for name in ("cache_read", "ai_pricing", "inventory_write")}

    def bare_lookup(n: int) -> int:
        get = table.__getitem__
        start = time.perf_counter_ns()
        for _ in range(n):
            get("ai_pricing")
        return time.perf_counter_ns() - start

    def enabled(n: int) -> int:
        check = healthy.enabled
        start = time.perf_counter_ns()
        for _ in range(n):
            check("ai_pricing")
        return time.perf_counter_ns() - start

    def evaluate(manager: DegradationManager) -> h.BatchRunner:
        def run(n: int) -> int:
            ev = manager.evaluate
            start = time.perf_counter_ns()
            for _ in range(n):
                ev("bench")
            return time.perf_counter_ns() - start

        return run

    cells = [
        h.Cell("enabled(name)", "dict lookup (floor)", bare_lookup),
        h.Cell("enabled(name)", "manager.enabled", enabled),
        h.Cell("evaluate(), 5 components", "all healthy", evaluate(healthy)),
        h.Cell("evaluate(), 5 components", "cache and s3 down", evaluate(degraded)),
    ]
    h.run_interleaved(cells, rounds=args.rounds, batch=args.batch, warmup=2)
    targets = {"manager.enabled": 200.0, "all healthy": 50_000.0, "cache and s3 down": 50_000.0}
    rows = []
    for cell in cells:
        target = targets.get(cell.label)
        rows.append(
            [
                cell.scenario,
                cell.label,
                f"{cell.median:,.0f} ns",
                f"{cell.spread:.0%}",
                "" if target is None else f"<= {target:,.0f} ns",
                "" if target is None else ("yes" if cell.median <= target else "**no**"),
            ]
        )
    info = h.machine_info(())
    print("# Degradation manager (issue #4)\n")
    print(h.header_line(info) + "\n")
    print(f"Settings: {args.rounds} rounds x {args.batch:,} calls per cell, interleaved.\n")
    print(h.markdown_table(["what", "cell", "median", "IQR", "target", "met"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
