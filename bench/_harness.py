"""Shared helpers for the benchmarks in ``bench/`` (not a test framework, not timed tests).

What every benchmark here does the same way:

* **Interleaved cells.** A *cell* is one thing being timed (a scenario x library
  pair). :func:`run_interleaved` runs every cell once per round, in the same
  order (A B C A B C ...), for ``warmup`` unrecorded rounds and then ``rounds``
  recorded ones, so machine noise (frequency scaling, a neighbour's burst) lands
  on every cell alike instead of on whichever one happened to run at that moment.
* **Batches.** Each cell times a whole batch of ``batch`` calls per round with
  :func:`time.perf_counter_ns` around the loop, with the garbage collector
  disabled for the batch (and a collection before it, outside the timing).
* **Medians.** A cell's figure is the median over rounds of ``batch time /
  batch``; the spread reported is the inter-quartile range relative to it.
* **Same-run baselines.** Ratios are always taken against the baseline cell of
  the same scenario measured in the same run.

:func:`machine_info` and :func:`header_line` describe where and how a run was
made; :func:`markdown_table` renders rows; :func:`print_problems` and
:func:`write_json` end a run. :func:`private_redis` starts a throwaway
``redis-server`` for the benchmarks that need one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

#: The checkout's root on sys.path, so that a benchmark run as ``python bench/X.py`` can
#: import ``tools.stack`` (the stack builder the demo and the tests share).
CHECKOUT = Path(__file__).resolve().parent.parent
if str(CHECKOUT) not in sys.path:
    sys.path.append(str(CHECKOUT))

if TYPE_CHECKING:
    from brownout.testing.servers import RedisServer

__all__ = [
    "BatchRunner",
    "Cell",
    "SetupError",
    "command_line",
    "header_line",
    "machine_info",
    "markdown_table",
    "percentile",
    "print_problems",
    "private_redis",
    "quantiles",
    "run_interleaved",
    "timed_batch",
    "traceback_cleared",
    "write_json",
]

#: A batch runner: given ``n``, make ``n`` calls and return the elapsed nanoseconds.
BatchRunner = Callable[[int], int]


@dataclass
class Cell:
    """One timed thing: ``run(n)`` makes ``n`` calls and returns the elapsed ns."""

    scenario: str
    label: str
    run: BatchRunner
    samples: list[float] = field(default_factory=list)  # ns per call, one per recorded round

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Inter-quartile range relative to the median (0.05 = 5 %)."""
        q1, _, q3 = quantiles(self.samples)
        med = self.median
        return (q3 - q1) / med if med else 0.0


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(p25, p50, p75) of ``values``; degenerate inputs give the value itself."""
    if len(values) < 2:
        v = values[0] if values else 0.0
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def percentile(values: Sequence[float], q: float) -> float:
    """The value at rank ``q`` (0 to 1) of ``values`` (nearest rank, no interpolation)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def timed_batch(run: BatchRunner, n: int) -> int:
    """Run one batch with the GC collected beforehand and disabled during it."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        return run(n)
    finally:
        if enabled:
            gc.enable()


def run_interleaved(
    cells: Sequence[Cell],
    *,
    rounds: int,
    batch: int,
    warmup: int,
    progress: Callable[[str], Any] | None = None,
    alternate: bool = False,
) -> None:
    """Round-robin over ``cells``: ``warmup`` unrecorded rounds, then ``rounds`` recorded ones.

    Fills each cell's ``samples`` with ns per call. With ``alternate`` every other round
    runs the cells in the reverse order (for pairs compared cell by cell, as an A/B run's
    base and new cells: the one that runs second is not always the same).

    What exists before the first round (modules, the cells, their breakers) is frozen
    (:func:`gc.freeze`) for the run, so the collection before each batch scans only
    what the run itself made: with ~50,000 objects of set-up, a full collection before
    each of an A/B run's 84 cells x 106 rounds took most of its time. The timed batches
    are unchanged (the collector is off during each one either way).
    """
    gc.collect()
    gc.freeze()
    try:
        for r in range(warmup + rounds):
            for cell in reversed(cells) if alternate and r % 2 else cells:
                elapsed = timed_batch(cell.run, batch)
                if r >= warmup:
                    cell.samples.append(elapsed / batch)
            if progress is not None and (r + 1) % max(1, (warmup + rounds) // 10) == 0:
                progress(f"round {r + 1}/{warmup + rounds}")
    finally:
        gc.unfreeze()


def traceback_cleared(run: BatchRunner, reject: Callable[[], Any]) -> BatchRunner:
    """``run``, and after each batch (outside its timing) the traceback of the exception
    that ``reject()`` raises set to None.

    An open purgatory breaker raises its state object itself (``raise self`` in
    ``OpenedState``): every rejection prepends its frames to that one exception's
    traceback, so the heap grows by ~12 objects a call for the whole run and each
    ``gc.collect()`` between batches gets slower (a long A/B run took over 15 minutes).
    Clearing it between batches keeps purgatory's per-call work as it is.
    """
    try:
        reject()
    except Exception as e:  # whatever the library raises is what is cleared
        raised = e
    else:
        raise SetupError("the breaker did not reject: there is no traceback to clear")

    def cleared(n: int) -> int:
        try:
            return run(n)
        finally:
            raised.__traceback__ = None

    return cleared


# --------------------------------------------------------------- describing a run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command that started this process, with paths relative to the cwd where shorter."""

    def rel(p: str) -> str:
        try:
            r = os.path.relpath(p)
        except ValueError:
            return p
        return r if len(r) < len(p) else p

    exe = rel(sys.executable)
    if os.sep not in exe:
        exe = f".{os.sep}{exe}"
    script = rel(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return shlex.join([exe, script, *sys.argv[1:]])


def machine_info(libraries: Iterable[str] = ()) -> dict[str, Any]:
    """Where and with what this run was made (JSON-ready)."""
    ram = _ram_gib()
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "nproc": _nproc(),
        "ram_gib": round(ram, 1) if ram is not None else None,
        "command": command_line(),
        "libraries": {name: _version(name) for name in libraries},
    }


def header_line(info: dict[str, Any]) -> str:
    """One line describing the run, for the top of a benchmark's output."""
    libs = ", ".join(f"{k} {v}" for k, v in info.get("libraries", {}).items())
    ram = f", {info['ram_gib']} GiB RAM" if info.get("ram_gib") is not None else ""
    return (
        f"{info['date_utc']} | {info['implementation']} {info['python']} | "
        f"{info['platform']} | CPU: {info['cpu_model']} x {info['nproc']} (nproc){ram}"
        + (f" | {libs}" if libs else "")
        + f" | command: `{info['command']}`"
    )


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; columns after the first two are right-aligned."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def fmt(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
            + " |"
        )

    sep = "|" + "|".join(
        "-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
    )
    return "\n".join([fmt(headers), sep + "|", *(fmt(r) for r in rows)])


def print_problems(problems: Sequence[str]) -> None:
    """The checks that failed (the figures above them are then not what they claim)."""
    if problems:
        print()
        for problem in problems:
            print(f"- **check failed:** {problem}")


def write_json(
    path: Path, info: dict[str, Any], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """Write ``results`` with the machine ``info`` and the run's ``args`` (as strings)."""
    data = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, **results}
    path.write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------- servers


class SetupError(RuntimeError):
    """The run cannot be made here (a server missing or not starting): nothing was measured."""


@contextlib.contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` of the benchmark's own (free port, own directory; never the
    shared 6379), removed at the end."""
    from brownout.testing.servers import RedisServer, redis_unavailable

    reason = redis_unavailable()
    if reason is not None:
        raise SetupError(reason)
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
