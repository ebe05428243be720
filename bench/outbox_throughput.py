"""Outbox throughput: durable submits and replays, in intents per second.

Issue #5. A benchmark, not a timed test: it prints a Markdown table and exits 0
(it exits 1 only if a sanity check fails: an intent missing from the journal or
from the target database, or the journal not in WAL mode with synchronous=FULL;
then the figures mean nothing).

Scenarios (each repeated ``--reps`` times on fresh files, the submit ones
interleaved round by round with the fsync reference, so machine noise lands on
each alike; the figure is the median over repetitions of ``intents / wall time``):

1. **submit, 1 thread**: ``Outbox.submit`` of ``--submits`` intents (a ~90-byte
   JSON payload, 50 streams) into a new journal (SQLite, ``journal_mode=WAL``,
   ``synchronous=FULL``: every commit is fsynced). The per-call median and p99
   latency come from the same runs.
2. **submit, 2 / 8 threads**: the same number of intents from 2 or 8 threads
   sharing one ``Outbox``: submits waiting together share one transaction and
   one fsync (group commit).
3. **asubmit, 8 tasks**: ``await Outbox.asubmit`` from 8 asyncio tasks on one
   loop (the fsync waits in the outbox's committer thread, never on the loop).
4. **reference: write + fsync**: ``os.write`` of 4 KiB then ``os.fsync`` on a
   plain file in the same directory, the ceiling any fsync-per-write journal
   has on this disk.
5. **replay into SQLite / PostgreSQL, batch handler**: ``Replayer.drain()`` of
   a journal holding ``--replay`` intents through ``SqlApplier`` on a
   ``brownout.sql.AsyncDatabase`` (aiosqlite on a local file; asyncpg on the
   shared server), batches of ``--batch`` intents: per batch one database
   transaction (the applied keys checked with one ``SELECT ... IN``, the
   movement rows inserted by a batch handler with one ``executemany``, the keys
   inserted with one more, commit), then one journal transaction.
6. **the same with a handler per intent** (one ``INSERT`` per intent, as
   inventario's handlers do), ``--replay // 5`` intents per repetition,
   interleaved with 5.
7. **drain of a backlog**: one ``Replayer.drain()`` of ``--drain`` queued
   intents (default 100,000: a one-hour outage at ~28 writes/s), batch handler,
   into each target, timed once (``--drain 0`` skips it).

Each submit row also gives the bytes the process wrote per intent (``wchar`` of
/proc/self/io: the journal's log frames, a page of 4 KiB each, before the fsync),
which the disk's noise does not change, and the process CPU (user + system, every
thread) and context switches per intent (``getrusage``): what the submits cost
besides waiting for the disk. The prefills are not timed.
PostgreSQL uses a throwaway database (``brownout_bench_outbox_*``) created on
``--pg-url``'s server and dropped at the end; no other database is touched.

Run: ``.venv/bin/python bench/outbox_throughput.py [--reps R] [--submits N]
[--replay N] [--batch N] [--drain N] [--pg-url URL | --no-pg] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from brownout.outbox import Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.outbox_throughput
    from bench import _harness as h

LIBRARIES = ("brownout", "SQLAlchemy", "aiosqlite", "asyncpg", "psycopg")
STREAMS = 50
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def payload(i: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{i % STREAMS:04d}",
        "delta": 5 if i % 3 == 0 else -1,
        "reason": "sale",
        "order": f"ORD-{i:08d}",
    }


def stream(i: int) -> str:
    return f"SKU-{i % STREAMS:04d}"


@dataclass
class Result:
    scenario: str
    target: str
    n: int
    rates: list[float] = field(default_factory=list)  # intents/s, one per repetition
    latencies_us: list[float] = field(default_factory=list)  # per call, all repetitions
    note: str = ""
    per_commit: list[float] = field(default_factory=list)  # intents per journal commit
    stops: list[str] = field(default_factory=list)  # outage stops of its drains
    written: list[float] = field(default_factory=list)  # bytes written per intent
    cpu_us: list[float] = field(default_factory=list)  # process CPU (user + system) per intent
    switches: list[float] = field(default_factory=list)  # context switches per intent


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failed.append(what)


def filesystem_of(path: Path) -> str:
    """``<type> on <device>`` of the mount holding ``path`` (from /proc/mounts)."""
    best = ("", "unknown", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    except OSError:
        pass
    return f"{best[1]} on {best[2]}"


# ------------------------------------------------------------------ submit


def bytes_written() -> int | None:
    """Bytes this process has passed to write calls so far (``wchar`` of /proc/self/io:
    every log frame SQLite writes, before the fsync), or None off Linux."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def note_written(result: Result, before: int | None, n: int) -> None:
    after = bytes_written()
    if before is not None and after is not None:
        result.written.append((after - before) / n)


def usage() -> tuple[float, int]:
    """(CPU seconds, context switches) of this process so far, every thread included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


def note_usage(result: Result, before: tuple[float, int], n: int) -> None:
    """CPU and thread switches per intent: what the submits cost besides waiting for the
    disk, figures the machine's load moves far less than the wall time."""
    cpu, switches = usage()
    result.cpu_us.append((cpu - before[0]) / n * 1e6)
    result.switches.append((switches - before[1]) / n)


def new_outbox(root: Path, n: int) -> Outbox:
    return Outbox(
        root / f"journal-{secrets.token_hex(4)}.db",
        max_pending=n + 100,
        max_bytes=1 << 30,
    )


def remove_journal(box: Outbox) -> None:
    box.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{box.path}{suffix}").unlink(missing_ok=True)


def check_durability(box: Outbox, checks: Checks) -> None:
    mode = box._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = box._db.execute("PRAGMA synchronous").fetchone()[0]
    checks.expect(mode == "wal", f"journal_mode is {mode}, not wal")
    checks.expect(sync == 2, f"synchronous is {sync}, not 2 (FULL)")


def submit_one_thread(root: Path, n: int, result: Result, checks: Checks) -> None:
    box = new_outbox(root, n)
    check_durability(box, checks)
    for i in range(10):  # warm-up: the -wal and -shm files are created here
        box.submit("warmup", {"i": i})
    lat = result.latencies_us
    written = bytes_written()
    used = usage()
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        box.submit("stock.move", payload(i), stream=stream(i))
        lat.append((time.perf_counter_ns() - t0) / 1000)
    elapsed = time.perf_counter() - start
    note_written(result, written, n)
    note_usage(result, used, n)
    checks.expect(box.pending_count() == n + 10, "submit: an intent is missing")
    result.rates.append(n / elapsed)
    result.per_commit.append((n + 10) / box._groups)
    remove_journal(box)


def submit_threads(root: Path, n: int, threads: int, result: Result, checks: Checks) -> None:
    box = new_outbox(root, n)
    for i in range(10):
        box.submit("warmup", {"i": i})
    barrier = threading.Barrier(threads + 1)
    per = n // threads

    def work(t: int) -> None:
        barrier.wait()
        for j in range(per):
            i = t * per + j
            box.submit("stock.move", payload(i), stream=stream(i))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    written = bytes_written()
    used = usage()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    note_written(result, written, per * threads)
    note_usage(result, used, per * threads)
    checks.expect(box.pending_count() == per * threads + 10, "threads: an intent is missing")
    result.rates.append(per * threads / elapsed)
    result.per_commit.append((per * threads + 10) / box._groups)
    remove_journal(box)


def submit_tasks(root: Path, n: int, tasks: int, result: Result, checks: Checks) -> None:
    box = new_outbox(root, n)
    for i in range(10):
        box.submit("warmup", {"i": i})
    per = n // tasks

    async def work(t: int) -> None:
        for j in range(per):
            i = t * per + j
            await box.asubmit("stock.move", payload(i), stream=stream(i))

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(work(t) for t in range(tasks)))
        return time.perf_counter() - start

    written = bytes_written()
    used = usage()
    elapsed = asyncio.run(run())
    note_written(result, written, per * tasks)
    note_usage(result, used, per * tasks)
    checks.expect(box.pending_count() == per * tasks + 10, "tasks: an intent is missing")
    result.rates.append(per * tasks / elapsed)
    result.per_commit.append((per * tasks + 10) / box._groups)
    remove_journal(box)


def prefill(box: Outbox, n: int, tag: str, threads: int = 8) -> None:
    """``n`` intents into ``box`` from ``threads`` threads (group commits; not timed)."""

    def work(t: int) -> None:
        for i in range(t, n, threads):
            data = payload(i)
            data["order"] = f"{tag}-{i:07d}"
            box.submit("stock.move", data, stream=stream(i))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def write_fsync(root: Path, n: int, result: Result) -> None:
    path = root / f"fsync-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096
    try:
        start = time.perf_counter()
        for _ in range(n):
            os.write(fd, block)
            os.fsync(fd)
        result.rates.append(n / (time.perf_counter() - start))
    finally:
        os.close(fd)
        path.unlink()


# ------------------------------------------------------------------ replay


INSERT_MOVE = "INSERT INTO bench_movements (order_ref, sku, delta) VALUES (:order, :sku, :delta)"


async def replay_into(
    db: AsyncDatabase,
    root: Path,
    args: argparse.Namespace,
    results: tuple[Result, Result, Result],
    backlog: Path | None,
    checks: Checks,
    tag: str,
) -> None:
    """Replays into ``db``: ``--reps`` x ``--replay`` intents with a batch handler
    (one ``executemany`` per run of intents), ``--reps`` x ``--replay // 5`` with a
    handler per intent (one statement each, as inventario's), and the backlog once."""
    batched, single, drain = results
    per_batch = SqlApplier(db)
    per_intent = SqlApplier(db)

    @per_batch.batch_handler("stock.move")
    async def moves(session: Any, payloads: list[Any]) -> None:
        await session.execute(text(INSERT_MOVE), payloads)

    @per_intent.handler("stock.move")
    async def move(session: Any, data: Any) -> None:
        await session.execute(text(INSERT_MOVE), data)

    async with db.session() as s:
        await s.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_movements (order_ref VARCHAR(40) PRIMARY KEY, "
                "sku VARCHAR(20) NOT NULL, delta INTEGER NOT NULL)"
            )
        )
    await per_batch.ensure_schema()
    runs: list[tuple[Result, SqlApplier, int, str]] = []
    for rep in range(args.reps):  # interleaved
        runs.append((batched, per_batch, args.replay, f"{tag}-b{rep}"))
        runs.append((single, per_intent, max(1, args.replay // 5), f"{tag}-s{rep}"))
    expected = sum(n for _, _, n, _ in runs)
    for into, applier, count, name in runs:
        box = new_outbox(root, count)
        await asyncio.to_thread(prefill, box, count, name)
        await drain_into(box, applier, args.batch, count, into, checks, name)
    if backlog is not None:
        path = root / f"backlog-{tag}.db"
        shutil.copyfile(backlog, path)
        box = Outbox(path, max_pending=args.drain + 100, max_bytes=1 << 30)
        await drain_into(box, per_batch, args.batch, args.drain, drain, checks, f"{tag}-drain")
        expected += args.drain
    rows = await db.scalar(text("SELECT COUNT(*) FROM bench_movements"))
    checks.expect(rows == expected, f"{tag}: {rows} rows, expected {expected}")


async def drain_into(
    box: Outbox,
    applier: SqlApplier,
    batch: int,
    count: int,
    into: Result,
    checks: Checks,
    name: str,
) -> None:
    replayer = Replayer(box, applier, batch_size=batch)
    applied = 0
    stops: list[str] = []
    start = time.perf_counter()
    while True:  # as the service's replayer: after an outage stop, drain again
        report = await replayer.drain()
        applied += report.applied
        if not report.stopped or len(stops) >= 20:
            break
        stops.append(report.stopped)
        await asyncio.sleep(1.0)  # counted: the backlog is not drained meanwhile
    elapsed = time.perf_counter() - start
    why = f" (stopped: {stops[-1]})" if stops else ""
    checks.expect(applied == count, f"{name}: applied {applied} of {count}{why}")
    checks.expect(box.pending_count() == 0, f"{name}: intents left in the journal")
    into.rates.append(count / elapsed)
    into.stops += stops
    if into.stops:
        reasons = sorted({r.split(":")[0] for r in into.stops})
        into.note = (
            f"{len(into.stops)} outage stops ({', '.join(reasons)}), drained again after 1 s"
        )
    if into.scenario.startswith("7."):
        into.note = f"drained in {elapsed:.1f} s" + (f"; {into.note}" if into.note else "")
    remove_journal(box)


def make_backlog(root: Path, n: int) -> Path:
    """A journal holding ``n`` intents, closed (copied for each target; not timed)."""
    box = new_outbox(root, n)
    prefill(box, n, "backlog")
    path = box.path
    box.close()
    return path


async def sqlite_settings(db: AsyncDatabase) -> str:
    mode = await db.scalar(text("PRAGMA journal_mode"))
    sync = await db.scalar(text("PRAGMA synchronous"))
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={mode}, synchronous={names.get(sync, sync)}"


def pg_admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def pg_url_for(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=database)
        .render_as_string(hide_password=False)
    )


# ------------------------------------------------------------------ report


def fmt_rate(values: list[float]) -> tuple[str, str]:
    med = statistics.median(values)
    return f"{med:,.0f}", f"{min(values):,.0f} to {max(values):,.0f}"


def report(results: list[Result], info: dict[str, Any], params: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for r in results:
        if not r.rates:
            rows.append([r.scenario, r.target, "skipped", "", "", "", r.note])
            continue
        med, spread = fmt_rate(r.rates)
        per_ms = 1000 / statistics.median(r.rates)
        if r.latencies_us:
            lat = sorted(r.latencies_us)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            latency = f"{statistics.median(lat) / 1000:.3f} / {p99 / 1000:.3f}"
        else:
            latency = ""
        if r.per_commit:
            latency += f"{'; ' if latency else ''}{statistics.median(r.per_commit):.1f}/commit"
        if r.written:
            latency += f"; {statistics.median(r.written) / 1024:.1f} KiB written"
        if r.cpu_us:
            latency += (
                f"; {statistics.median(r.cpu_us):.0f} us CPU, "
                f"{statistics.median(r.switches):.1f} switches"
            )
        rows.append(
            [
                r.scenario,
                r.target,
                med,
                spread,
                f"{per_ms:.3f}",
                latency,
                f"{len(r.rates)} x {r.n:,}" + (f"; {r.note}" if r.note else ""),
            ]
        )
    table = h.markdown_table(
        [
            "scenario",
            "target",
            "intents/s (median)",
            "min to max",
            "ms per intent",
            "call p50 / p99 (ms); intents per commit; written, CPU, thread switches per intent",
            "reps x intents",
        ],
        rows,
    )
    return "\n".join(
        [
            "# Outbox throughput (issues #5, #11)",
            "",
            h.header_line(info),
            "",
            f"Journal: SQLite {params['sqlite_version']}, journal_mode=WAL, synchronous=FULL "
            f"(checked), group commit (one fsynced transaction per group of waiting "
            f"submits); replay batches of {params['batch']}; directory on "
            f"{params['filesystem']}. {STREAMS} streams, ~90-byte JSON payloads.",
            f"Replay targets: {params['targets']}.",
            "",
            table,
        ]
    )


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--reps", type=int, help="repetitions of each scenario (default 7)")
    p.add_argument("--submits", type=int, help="intents per submit repetition (default 2000)")
    p.add_argument("--replay", type=int, help="intents per replay repetition (default 5000)")
    p.add_argument("--batch", type=int, help="Replayer.batch_size (default 500)")
    p.add_argument(
        "--drain", type=int, help="backlog drained once per target (default 100000; 0: skip)"
    )
    p.add_argument("--pg-url", default=DEFAULT_PG, help=f"PostgreSQL server (default {DEFAULT_PG})")
    p.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL replay")
    p.add_argument("--dir", type=Path, help="where the journals go (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    quick = {"reps": 2, "submits": 200, "replay": 100, "drain": 500} if args.quick else {}
    defaults = {"reps": 7, "submits": 2000, "replay": 5000, "batch": 500, "drain": 100_000}
    for key, default in {**defaults, **quick}.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
        if getattr(args, key) < (0 if key == "drain" else 1):
            p.error(f"--{key} must be >= {0 if key == 'drain' else 1}")
    return args


def main(argv: list[str] | None = None) -> int:
    import sqlite3

    args = parse_args(argv)
    info = h.machine_info(LIBRARIES)
    checks = Checks()

    def progress(msg: str) -> None:
        print(f"[outbox_throughput] {msg}", file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    one = Result("1. submit, 1 thread", "SQLite journal", args.submits)
    two = Result("2. submit, 2 threads", "SQLite journal", args.submits)
    eight = Result("2. submit, 8 threads", "SQLite journal", args.submits)
    tasks = Result("3. asubmit, 8 asyncio tasks", "SQLite journal", args.submits)
    ref = Result("4. reference: write 4 KiB + fsync", "plain file", args.submits)
    sq = Result("5. replay, batch handler", "SQLite (aiosqlite)", args.replay)
    pg = Result("5. replay, batch handler", "PostgreSQL (asyncpg)", args.replay)
    small = max(1, args.replay // 5)
    sq1 = Result("6. replay, handler per intent", "SQLite (aiosqlite)", small)
    pg1 = Result("6. replay, handler per intent", "PostgreSQL (asyncpg)", small)
    sq_drain = Result("7. drain backlog, batch handler", "SQLite (aiosqlite)", args.drain)
    pg_drain = Result("7. drain backlog, batch handler", "PostgreSQL (asyncpg)", args.drain)
    targets: list[str] = []
    try:
        progress(
            f"submits: {args.reps} x {args.submits} (1, 2, 8 threads, 8 tasks, fsync reference)"
        )
        for _ in range(args.reps):  # interleaved, so machine noise lands on each alike
            submit_one_thread(root, args.submits, one, checks)
            submit_threads(root, args.submits, 2, two, checks)
            submit_threads(root, args.submits, 8, eight, checks)
            submit_tasks(root, args.submits, 8, tasks, checks)
            write_fsync(root, args.submits, ref)

        backlog = None
        if args.drain:
            progress(f"backlog of {args.drain} intents (not timed)")
            backlog = make_backlog(root, args.drain)

        async def replays() -> None:
            progress(f"replay into SQLite: {args.reps} x {args.replay}, drain {args.drain}")
            db = AsyncDatabase.from_url(f"sqlite+aiosqlite:///{root / 'target.db'}")
            try:
                targets.append(f"SQLite file ({await sqlite_settings(db)})")
                await replay_into(db, root, args, (sq, sq1, sq_drain), backlog, checks, "sqlite")
            finally:
                await db.aclose()
            if args.no_pg:
                pg.note = "--no-pg"
                return
            name = f"brownout_bench_outbox_{os.getpid()}_{secrets.token_hex(3)}"
            try:
                admin = pg_admin(args.pg_url)
            except Exception as exc:
                pg.note = f"PostgreSQL unreachable: {type(exc).__name__}"
                progress(pg.note)
                return
            try:
                admin.execute(f'CREATE DATABASE "{name}"')
                settings = {
                    key: admin.execute(f"SHOW {key}").fetchone()[0]
                    for key in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
                }
                progress(f"replay into PostgreSQL {settings['server_version']}: database {name}")
                pdb = AsyncDatabase.from_url(pg_url_for(args.pg_url, name))
                try:
                    await replay_into(pdb, root, args, (pg, pg1, pg_drain), backlog, checks, "pg")
                finally:
                    await pdb.aclose()
                targets.append(
                    f"PostgreSQL {settings['server_version']} on 127.0.0.1 (shared server, "
                    f"throwaway database; synchronous_commit={settings['synchronous_commit']}, "
                    f"fsync={settings['fsync']}, wal_sync_method={settings['wal_sync_method']})"
                )
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.close()
                progress(f"dropped database {name}")

        asyncio.run(replays())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    params = {
        "reps": args.reps,
        "submits": args.submits,
        "replay": args.replay,
        "batch": args.batch,
        "drain": args.drain,
        "sqlite_version": sqlite3.sqlite_version,
        "filesystem": filesystem_of(root),
        "targets": "; ".join(targets) or "none",
    }
    results = [one, two, eight, tasks, ref, sq, pg, sq1, pg1]
    results += [r for r in (sq_drain, pg_drain) if r.rates]
    print(report(results, info, params))
    if args.json is not None:
        data = {
            "benchmark": "outbox_throughput",
            "machine": info,
            "params": params,
            "results": [
                {"scenario": r.scenario, "target": r.target, "n": r.n, "rates": r.rates}
                for r in results
            ],
            "checks_failed": checks.failed,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if checks.failed:
        print("sanity checks FAILED (figures are not valid):", file=sys.stderr)
        for what in checks.failed:
            print(f"  - {what}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
