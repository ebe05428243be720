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

Before/after: ``--baseline REV`` takes ``src/brownout`` from a git revision,
imports it as ``brownout_base`` and times the manager cells of both, interleaved
in one run (base cell, new cell, ...), so machine noise hits both alike; the
figure to read is the median over rounds of the paired ratio new / base.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import brownout
import brownout.health
from brownout.health import DegradationManager

_IMPORT = re.compile(r"\b(from|import) brownout\b")


def build(down: tuple[str, ...] = (), lib: ModuleType = brownout) -> DegradationManager:
    health = importlib.import_module(f"{lib.__name__}.health")
    registry = lib.Registry.with_defaults()
    names = ["database", "cache", "openai", "s3", "external_api"]
    manager: DegradationManager = health.DegradationManager(
        [health.Component(n, breaker=registry.get(n)) for n in names]
    )
    for n in down:
        registry.get(n).force_open()
    return manager


def extract(rev: str, into: Path) -> ModuleType:
    """``rev``'s ``src/brownout``, imported as ``brownout_base``."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "src/brownout"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "src" / "brownout").rename(into / "brownout_base")
    for path in (into / "brownout_base").rglob("*.py"):
        path.write_text(_IMPORT.sub(lambda m: f"{m.group(1)} brownout_base", path.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module("brownout_base")


def manager_runners(lib: ModuleType) -> tuple[h.BatchRunner, h.BatchRunner, h.BatchRunner]:
    """``enabled(name)``, ``evaluate()`` all healthy, ``evaluate()`` with cache and s3 down."""
    healthy = build((), lib)
    degraded = build(("cache", "s3"), lib)

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

    return enabled, evaluate(healthy), evaluate(degraded)


def manager_cells(lib: ModuleType, side: str) -> list[h.Cell]:
    enabled, all_healthy, two_down = manager_runners(lib)
    return [
        h.Cell("enabled(name)", side, enabled),
        h.Cell("evaluate(), all healthy", side, all_healthy),
        h.Cell("evaluate(), cache and s3 down", side, two_down),
    ]


def ab(rev: str, rounds: int, batch: int) -> int:
    with tempfile.TemporaryDirectory(prefix="brownout-degradation-ab-") as tmp:
        base = manager_cells(extract(rev, Path(tmp)), "base")
        new = manager_cells(brownout, "new")
        cells = [c for pair in zip(base, new, strict=True) for c in pair]
        h.run_interleaved(cells, rounds=rounds, batch=batch, warmup=2)
    rows = []
    for a, b in zip(base, new, strict=True):
        paired = statistics.median(y / x for x, y in zip(a.samples, b.samples, strict=True))
        rows.append([a.scenario, f"{a.median:,.0f} ns", f"{b.median:,.0f} ns", f"{paired:.3f}"])
    print("# Degradation manager, before/after\n")
    print(h.header_line(h.machine_info(())) + "\n")
    print(f"baseline {rev} vs working tree; {rounds} rounds x {batch:,} calls, interleaved.\n")
    print(h.markdown_table(["what", "base median", "new median", "new / base (paired)"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--batch", type=int, default=2_000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--baseline", help="git revision to compare against (before/after)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.batch = 3, 50
    if args.baseline:
        return ab(args.baseline, args.rounds, args.batch)
    enabled, all_healthy, two_down = manager_runners(brownout)
    table = {name: True for name in ("cache_read", "ai_pricing", "inventory_write")}

    def bare_lookup(n: int) -> int:
        get = table.__getitem__
        start = time.perf_counter_ns()
        for _ in range(n):
            get("ai_pricing")
        return time.perf_counter_ns() - start

    cells = [
        h.Cell("enabled(name)", "dict lookup (floor)", bare_lookup),
        h.Cell("enabled(name)", "manager.enabled", enabled),
        h.Cell("evaluate(), 5 components", "all healthy", all_healthy),
        h.Cell("evaluate(), 5 components", "cache and s3 down", two_down),
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
