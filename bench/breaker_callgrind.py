"""Instruction counts per guarded call, for ``valgrind --tool=callgrind``: the cells of
``bench/breaker_overhead.py`` without the wall clock.

Wall-clock ratios on a shared machine are noise; instruction counts are not (they do
not see what a clock read or a cache miss costs in time, so confirm a change with an
interleaved ``breaker_overhead.py`` run). Each cell is run at two loop lengths and the
difference is divided by the difference in calls, which cancels the interpreter's
start-up, the imports and the set-up::

    .venv/bin/python bench/breaker_callgrind.py --all            # every cell, ~2 min
    .venv/bin/python bench/breaker_callgrind.py --all open timed # some cells

or one run by hand (what ``--all`` does per cell and length; the script switches
callgrind's instrumentation on itself, with ``callgrind_control``, after the set-up)::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \\
      .venv/bin/python bench/breaker_callgrind.py open 20000 2>&1 | grep refs

Cells (the breakers are built as ``breaker_overhead.py`` builds them; ``-m``: metrics
attached as inventario attaches them): ``bare`` (``f(x)``), ``closed``, ``closed-m``,
``raise`` (a bare raise-and-catch, the baseline of ``open``), ``open``, ``open-m``,
``forced``, ``abare`` (``await af(x)``), ``aclosed``, ``aclosed-m``, ``araise``,
``aopen``, ``timed``, ``timed-m`` (count window + slow-call timing, baseline ``bare``).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from brownout import BreakerOpen, CircuitBreaker

try:  # run as a script: bench/ is sys.path[0]
    import breaker_overhead as bo
except ImportError:  # imported as bench.breaker_callgrind
    from bench import breaker_overhead as bo

#: cell -> its baseline cell (ratios are taken against it)
CELLS: dict[str, str] = {
    "bare": "bare",
    "closed": "bare",
    "closed-m": "bare",
    "raise": "raise",
    "open": "raise",
    "open-m": "raise",
    "forced": "raise",
    "abare": "abare",
    "aclosed": "abare",
    "aclosed-m": "abare",
    "araise": "araise",
    "aopen": "araise",
    "timed": "bare",
    "timed-m": "bare",
}


def runner(cell: str) -> Callable[[int], Any]:
    """The batch runner of one cell (``run(n)`` makes n calls)."""
    inv = bo.Inventario()
    sync: dict[str, Callable[[], Callable[[int], Any]]] = {
        "bare": lambda: bo.loop_call(bo.f),
        "closed": lambda: bo.loop_cb_call(bo.brownout_closed("cg")),
        "closed-m": lambda: bo.loop_cb_call(inv.closed("cg")),
        "raise": lambda: bo.loop_reject(bo.raiser, bo.E),
        "open": lambda: bo.loop_cb_reject(bo.brownout_tripped("cg"), BreakerOpen),
        "open-m": lambda: bo.loop_cb_reject(inv.tripped("cg"), BreakerOpen),
        "forced": lambda: bo.loop_cb_reject(bo.brownout_forced("cg"), BreakerOpen),
        "timed": lambda: bo.loop_cb_call(CircuitBreaker("cg", bo.TIMED_CONFIG)),
        "timed-m": lambda: bo.loop_cb_call(inv.closed("cg", bo.TIMED_CONFIG)),
    }
    if cell in sync:
        return sync[cell]()
    runners = bo.AsyncRunners()
    aio: dict[str, Callable[[], Callable[[int], Any]]] = {
        "abare": lambda: runners.await_call(bo.af),
        "aclosed": lambda: runners.await_acall(bo.brownout_closed("cg")),
        "aclosed-m": lambda: runners.await_acall(inv.closed("cg")),
        "araise": lambda: runners.await_reject(bo.araiser, bo.E),
        "aopen": lambda: runners.await_acall_reject(bo.brownout_tripped("cg")),
    }
    return aio[cell]()


def instrument() -> None:
    """Under ``--instr-atstart=no``: start counting now (start-up and imports are skipped,
    which makes a run seconds instead of a minute; the loop-length difference cancels
    what is counted after this)."""
    subprocess.run(
        ["callgrind_control", "--instr=on", str(os.getpid())], capture_output=True, check=False
    )


def count(cell: str, n: int) -> int:
    """Instructions of a whole run of ``cell`` with ``n`` calls, under callgrind."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            cell,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    found = re.search(r"refs:\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output for {cell}:\n{out}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--all", action="store_true", help="run the cells under valgrind, print a table")
    p.add_argument("--calls", type=int, default=20_000, help="the difference in calls (--all)")
    p.add_argument("cells", nargs="*", help="with --all: the cells (default all); else CELL N")
    args = p.parse_args(argv)
    if not args.all:
        if len(args.cells) != 2 or args.cells[0] not in CELLS:
            p.error(f"give a cell ({', '.join(CELLS)}) and a number of calls, or --all")
        run = runner(args.cells[0])
        run(100)  # warm: every lazily made object exists
        gc.collect()
        gc.disable()  # as the timed batches of breaker_overhead.py
        instrument()
        run(int(args.cells[1]))
        return 0
    wanted = args.cells or list(CELLS)
    unknown = [c for c in wanted if c not in CELLS]
    if unknown:
        p.error(f"unknown cells {unknown}: {', '.join(CELLS)}")
    todo = list(dict.fromkeys(c for cell in wanted for c in (CELLS[cell], cell)))
    per_call: dict[str, float] = {}
    for cell in todo:
        small, large = count(cell, args.calls), count(cell, 2 * args.calls)
        per_call[cell] = (large - small) / args.calls
        print(f"[breaker_callgrind] {cell}: {per_call[cell]:,.0f}", file=sys.stderr, flush=True)
    print("| cell | instructions per call | baseline | ratio |")
    print("|---|---:|---|---:|")
    for cell in wanted:
        base = CELLS[cell]
        print(
            f"| {cell} | {per_call[cell]:,.0f} | {base} | {per_call[cell] / per_call[base]:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
