"""Breaker overhead, before and after: a git revision's brownout against the working tree's.

Takes ``src/brownout`` from ``--baseline`` (a git revision) and imports it under the
name ``brownout_base``. One bench script (``bench/breaker_overhead.py``, the working
tree's by default; the baseline's with ``--bench baseline``, for a baseline whose
brownout lacks something the newer script reads) is loaded twice, once on each
brownout (the same cells, runners and checks on both sides: only brownout differs),
and every cell of both is timed in one process, interleaved round-robin
(``bench/_harness.run_interleaved``: base cell, new cell, next base cell, ...,
and every other round in the reverse order, so neither side always runs second),
so machine noise hits both alike. Reports each cell's median for both, each
one's ratio to its own bare baseline, and the median over rounds of the
paired ratio new / base (the figure to read on a shared machine: the bare and
peer-library cells show its noise, as they run the same code on both sides).

Scenarios 1-5 of ``breaker_overhead.py`` only: its two-thread and heap sections
are not run here (run ``breaker_overhead.py`` itself on each tree for those).
The default settings take ~1 minute on a quiet 2-core machine (84 cells x 106
rounds x 2,000 calls; progress and the elapsed time go to stderr).

    .venv/bin/python bench/breaker_ab.py --baseline 8dda391 [--rounds 101 --batch 2000]
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

_IMPORT = re.compile(r"\b(from|import) brownout\b")
_FAST_IS = re.compile(r"(\w+\._fast) is (True|False)")


def extract(rev: str, into: Path, *, bench_from_baseline: bool = False) -> None:
    """``rev``'s ``src/brownout`` as ``brownout_base``; the bench script (the working
    tree's, or ``rev``'s with ``bench_from_baseline``) as ``overhead_base`` (on
    ``brownout_base``) and ``overhead_new`` (on the working tree's ``brownout``)."""
    root = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--show-toplevel"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", root, "archive", rev, "src/brownout", "bench/breaker_overhead.py"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "src" / "brownout").rename(into / "brownout_base")
    for path in (into / "brownout_base").rglob("*.py"):
        path.write_text(_IMPORT.sub(lambda m: f"{m.group(1)} brownout_base", path.read_text()))
    source = into / "bench" if bench_from_baseline else HERE
    bench = (source / "breaker_overhead.py").read_text()
    # the fast-path checks, whatever _fast holds (a bool before issue 10, a counter after)
    bench = _FAST_IS.sub(
        lambda m: f"bool({m.group(1)})" if m.group(2) == "True" else f"not {m.group(1)}", bench
    )
    (into / "overhead_new.py").write_text(bench)
    (into / "overhead_base.py").write_text(
        _IMPORT.sub(lambda m: f"{m.group(1)} brownout_base", bench)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--baseline", required=True, help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=101)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--bench",
        choices=("worktree", "baseline"),
        default="worktree",
        help="whose bench/breaker_overhead.py runs on both sides (default: the working tree's)",
    )
    args = p.parse_args(argv)
    started = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="brownout-ab-") as tmp:
        extract(args.baseline, Path(tmp), bench_from_baseline=args.bench == "baseline")
        sys.path.insert(0, tmp)
        base = importlib.import_module("overhead_base")
        new = importlib.import_module("overhead_new")
        expected = (args.warmup + args.rounds) * args.batch
        runners = base.AsyncRunners(), new.AsyncRunners()
        try:
            cells_a, post_a = base.build_cells(runners[0], expected)
            cells_b, post_b = new.build_cells(runners[1], expected)
            cells = [c for pair in zip(cells_a, cells_b, strict=True) for c in pair]
            progress(f"{len(cells)} cells, {args.warmup} + {args.rounds} rounds")
            h.run_interleaved(
                cells,
                rounds=args.rounds,
                batch=args.batch,
                warmup=args.warmup,
                progress=progress,
                alternate=True,
            )
        finally:
            for r in runners:
                r.close()
        failed = post_a.run() + post_b.run()
    bare_a = {c.scenario: c.median for c in cells_a if c.label == "bare"}
    bare_b = {c.scenario: c.median for c in cells_b if c.label == "bare"}
    rows = []
    for a, b in zip(cells_a, cells_b, strict=True):
        paired = statistics.median(y / x for x, y in zip(a.samples, b.samples, strict=True))
        rows.append(
            [
                a.scenario,
                a.label,
                f"{a.median:,.0f}",
                f"{b.median:,.0f}",
                f"{a.median / bare_a[a.scenario]:.2f}x",
                f"{b.median / bare_b[b.scenario]:.2f}x",
                f"{paired:.3f}",
            ]
        )
    print(h.header_line(h.machine_info({})))
    print(
        f"\nbaseline {args.baseline} vs working tree; {args.rounds} rounds x {args.batch:,} calls "
        f"per cell, {args.warmup} warm-up rounds, {len(cells)} cells interleaved; "
        f"the {args.bench}'s bench on both; {time.monotonic() - started:.0f} s\n"
    )
    print(
        h.markdown_table(
            [
                "scenario",
                "cell",
                "base ns/call",
                "new ns/call",
                "base vs bare",
                "new vs bare",
                "new / base (paired)",
            ],
            rows,
        )
    )
    if failed:
        print("post-run checks FAILED:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
