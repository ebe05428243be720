"""Adapter overhead: raw client vs brownout adapter (without and with metrics attached) on
the same server, and time-to-fail.

Issues #3 and #11. A benchmark, not a timed test: it prints Markdown tables and exits 0
whether or not the targets are met (it exits 1 only if an adapter was not in the
state it was timed in, e.g. a breaker that opened during a throughput cell, or
a rejection timed while the breaker was not open: then the figures mean nothing).

Throughput cells (ops/s; every cell interleaved round-robin with the others in
one process and one event loop, see ``_harness``; a cell's figure is the median
over ``--rounds`` rounds of one batch of operations spread over N asyncio tasks):

1. Redis GET, 50 tasks: ``redis.asyncio.Redis.get`` vs
   ``brownout.redis.AsyncRedisAdapter.get`` (a hit, 100-byte value).
2. Redis SET, 50 tasks: ``Redis.set`` vs ``AsyncRedisAdapter.set`` (100 bytes).
   Both clients are built with the adapter's own settings
   (``AsyncRedisAdapter.client_settings()``: pool of 50, 0.5 s socket and
   connect timeouts, no retries), so the adapter is the only difference.
3. PostgreSQL ``SELECT 1``, 10 tasks (= the pool size): a raw SQLAlchemy
   ``AsyncSession`` transaction (``async with maker() as s: await s.scalar(q);
   await s.commit()``, the same unit of work the adapter runs) vs
   ``brownout.sql.AsyncDatabase.scalar(q)``; a raw Core
   ``engine.connect()`` + ``conn.scalar(q)`` is timed too, for reference. Both
   engines are built by ``AsyncDatabase.from_url`` (asyncpg, its default pool
   settings: 10 + 10 overflow, pre-ping, timeouts); the raw cells use only that
   engine, not the adapter around it.

Every adapter cell is run twice: plain, and "+ metrics" with metrics attached
as inventario attaches them (the adapter's breaker in a ``Registry``, a
``PrometheusMetrics`` attached to the registry and to the adapter); the
script checks that the metrics counted every operation.

Targets (issue #11): Redis GET and SET >= 97 % of raw throughput, PostgreSQL
>= 98 %, with metrics attached (judged on the paired median).

Time-to-fail (a private redis-server paused with SIGSTOP): the breaker is
tripped by real timeouts (sequential GETs until the first ``BreakerOpen``),
then single guarded GETs are timed one by one (perf_counter_ns around each
``await``), interleaved with unguarded GETs on a raw client with the same
0.5 s socket timeout, which each wait for that timeout. Target: median of a
guarded call with the breaker open < 0.1 ms. One more unguarded GET on a
client with redis-py's own defaults (no socket timeout) shows what "no
timeout" means: it is abandoned after ``--hang-cap`` seconds.

Servers: a private ``redis-server`` on a free port with its own directory
(never the shared 6379) and, unless ``--postgres-url`` is given, a private
PostgreSQL cluster (``brownout.testing.servers``); both are removed at the end.

Run: ``.venv/bin/python bench/adapter_overhead.py [--rounds R] [--quick]
[--json PATH] [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns, process_time_ns
from typing import Any

import redis.asyncio as aredis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from brownout import BreakerOpen, Registry, State
from brownout import sql as bsql
from brownout.prometheus import PrometheusMetrics
from brownout.redis import DEFAULT_SOCKET_TIMEOUT, AsyncRedisAdapter

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.adapter_overhead
    from bench import _harness as h

# A tripped breaker logs a warning; keep the output to the tables.
logging.getLogger("brownout").addHandler(logging.NullHandler())
logging.getLogger("brownout").propagate = False

LIBRARIES = ("brownout", "redis", "sqlalchemy", "asyncpg")
TARGET_RATIO = 0.97
TARGET_PG_RATIO = 0.98
WITH_METRICS = " + metrics"
TARGET_OPEN_MS = 0.1
REDIS_TASKS = 50
PG_TASKS = 10
VALUE = b"x" * 100

GET = "1. Redis GET, 50 tasks"
SET = "2. Redis SET, 50 tasks"
SELECT = "3. PostgreSQL SELECT 1, 10 tasks"


@dataclass
class Timed:
    """One throughput cell with its own batch size (operations per round)."""

    cell: h.Cell
    batch: int
    baseline: bool = False
    targeted: bool = True
    note: str = ""
    paired: list[float] = field(default_factory=list)  # this cell / baseline, per round
    cpu: list[float] = field(default_factory=list)  # client process CPU ns per op, per round


# ------------------------------------------------------------------ runners


class ConcurrentRunner:
    """``n`` awaits of ``op(worker)`` spread over ``tasks`` tasks; returns elapsed wall ns.

    Also keeps the process CPU time of the last batch (``last_cpu_ns``): the
    client's own cost per operation, steadier than wall time on a shared machine.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, tasks: int, op: Callable[[int], Awaitable[Any]]
    ) -> None:
        self.loop = loop
        self.tasks = tasks
        self.op = op
        self.last_cpu_ns = 0

    async def _worker(self, index: int, count: int) -> None:
        op = self.op
        for _ in range(count):
            await op(index)

    async def _go(self, n: int) -> int:
        per, extra = divmod(n, self.tasks)
        workers = [self._worker(i, per + (1 if i < extra else 0)) for i in range(self.tasks)]
        c0 = process_time_ns()
        t0 = perf_counter_ns()
        await asyncio.gather(*workers)
        elapsed = perf_counter_ns() - t0
        self.last_cpu_ns = process_time_ns() - c0
        return elapsed

    def __call__(self, n: int) -> int:
        return self.loop.run_until_complete(self._go(n))


def run_rounds(timed: list[Timed], *, rounds: int, warmup: int) -> None:
    """Round-robin over the cells, each with its own batch; fills samples and paired ratios."""
    baselines = {t.cell.scenario: t for t in timed if t.baseline}
    total = warmup + rounds
    for r in range(total):
        this_round: dict[int, float] = {}
        for t in timed:
            elapsed = h.timed_batch(t.cell.run, t.batch)
            this_round[id(t)] = elapsed / t.batch
            if r >= warmup:
                t.cell.samples.append(elapsed / t.batch)
                runner = t.cell.run
                if isinstance(runner, ConcurrentRunner):
                    t.cpu.append(runner.last_cpu_ns / t.batch)
        if r >= warmup:
            for t in timed:
                base = baselines[t.cell.scenario]
                # throughput ratio = base ns/op / this ns/op
                t.paired.append(this_round[id(base)] / this_round[id(t)])
        print(f"  round {r + 1}/{total}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ servers


class Servers(contextlib.ExitStack):
    """Private redis-server and (unless a URL is given) PostgreSQL, closed on exit."""

    def __init__(self) -> None:
        super().__init__()
        self.redis: Any = None
        self.postgres_url: str | None = None
        self.postgres_note = ""

    def start_redis(self) -> None:
        self.redis = self.enter_context(h.private_redis())

    def start_postgres(self, url: str | None) -> None:
        if url:
            parsed = make_url(url)
            self.postgres_url = url
            self.postgres_note = (
                f"PostgreSQL given by --postgres-url ({parsed.host}:{parsed.port}), read-only"
            )
            return
        from brownout.testing.servers import PostgresServer, find_pg_bin

        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise h.SetupError(
                "PostgreSQL server binaries not found (apt-get install postgresql, or "
                "BROWNOUT_PG_BIN); or pass --postgres-url"
            )
        server = PostgresServer(pg_bin=pg_bin)
        self.callback(server.close)
        server.start()
        self.postgres_url = server.sqlalchemy_url()
        self.postgres_note = f"private PostgreSQL ({Path(pg_bin).parent.name}) on a free port"


# ------------------------------------------------------------------ throughput


class Metered:
    """Metrics attached as inventario attaches them (``inventario.runtime.build_runtime``):
    adapters register their breakers in a ``Registry``; a ``PrometheusMetrics`` is attached
    to the registry and to every adapter."""

    def __init__(self) -> None:
        self.registry = Registry.with_defaults()
        self.metrics = PrometheusMetrics()
        self.metrics.attach(self.registry)

    def attach(self, adapter: Any) -> Any:
        self.metrics.attach(adapter)
        return adapter

    def requests(self, name: str, dependency: str, operation: str) -> float:
        self.metrics.render()  # a scrape, as Prometheus makes it
        got = self.metrics.registry.get_sample_value(
            "brownout_dependency_requests_total",
            {"dependency": dependency, "name": name, "operation": operation, "outcome": "success"},
        )
        return -1.0 if got is None else got


async def build_redis(
    url: str, prefix: str, metered: Metered
) -> tuple[aredis.Redis, AsyncRedisAdapter, AsyncRedisAdapter]:
    raw = aredis.Redis.from_url(url, **AsyncRedisAdapter.client_settings())
    guarded = AsyncRedisAdapter.from_url(url, name="bench-redis")
    with_metrics = metered.attach(
        AsyncRedisAdapter.from_url(url, name="bench-redis-metrics", registry=metered.registry)
    )
    for i in range(REDIS_TASKS):
        await raw.set(f"{prefix}:get:{i}", VALUE)
    return raw, guarded, with_metrics


def raw_pg_engine(url: str) -> tuple[bsql.AsyncDatabase, AsyncEngine]:
    """A plain SQLAlchemy ``AsyncEngine`` built exactly as ``AsyncDatabase.from_url(url)``
    builds one (same pool and driver settings). The raw cells use only the engine, never
    the adapter around it; closing that adapter disposes of the engine."""
    holder = bsql.AsyncDatabase.from_url(url, name="bench-raw-engine")
    return holder, holder.engine


def build_cells(
    loop: asyncio.AbstractEventLoop,
    raw: aredis.Redis,
    guarded: AsyncRedisAdapter,
    guarded_m: AsyncRedisAdapter,
    prefix: str,
    engine: AsyncEngine,
    db: bsql.AsyncDatabase,
    db_m: bsql.AsyncDatabase,
    *,
    redis_batch: int,
    pg_batch: int,
) -> list[Timed]:
    get_keys = [f"{prefix}:get:{i}" for i in range(REDIS_TASKS)]
    set_keys = [f"{prefix}:set:{i}" for i in range(REDIS_TASKS)]
    query = text("SELECT 1")
    maker = async_sessionmaker(engine, expire_on_commit=False)

    async def raw_get(i: int) -> Any:
        return await raw.get(get_keys[i])

    async def guarded_get(i: int) -> Any:
        return await guarded.get(get_keys[i])

    async def guarded_get_m(i: int) -> Any:
        return await guarded_m.get(get_keys[i])

    async def guarded_set_m(i: int) -> Any:
        return await guarded_m.set(set_keys[i], VALUE)

    async def guarded_select_m(i: int) -> Any:
        return await db_m.scalar(query)

    async def raw_set(i: int) -> Any:
        return await raw.set(set_keys[i], VALUE)

    async def guarded_set(i: int) -> Any:
        return await guarded.set(set_keys[i], VALUE)

    async def raw_session(i: int) -> Any:
        async with maker() as s:
            value = await s.scalar(query)
            await s.commit()
            return value

    async def raw_core(i: int) -> Any:
        async with engine.connect() as conn:
            return await conn.scalar(query)

    async def guarded_select(i: int) -> Any:
        return await db.scalar(query)

    def cell(scenario: str, label: str, tasks: int, op: Callable[[int], Awaitable[Any]]) -> h.Cell:
        return h.Cell(scenario, label, ConcurrentRunner(loop, tasks, op))

    return [
        Timed(cell(GET, "raw `redis.asyncio.Redis.get`", REDIS_TASKS, raw_get), redis_batch, True),
        Timed(cell(GET, "brownout `AsyncRedisAdapter.get`", REDIS_TASKS, guarded_get), redis_batch),
        Timed(
            cell(
                GET, f"brownout `AsyncRedisAdapter.get`{WITH_METRICS}", REDIS_TASKS, guarded_get_m
            ),
            redis_batch,
        ),
        Timed(cell(SET, "raw `redis.asyncio.Redis.set`", REDIS_TASKS, raw_set), redis_batch, True),
        Timed(cell(SET, "brownout `AsyncRedisAdapter.set`", REDIS_TASKS, guarded_set), redis_batch),
        Timed(
            cell(
                SET, f"brownout `AsyncRedisAdapter.set`{WITH_METRICS}", REDIS_TASKS, guarded_set_m
            ),
            redis_batch,
        ),
        Timed(cell(SELECT, "raw SQLAlchemy `AsyncSession`", PG_TASKS, raw_session), pg_batch, True),
        Timed(cell(SELECT, "brownout `AsyncDatabase.scalar`", PG_TASKS, guarded_select), pg_batch),
        Timed(
            cell(
                SELECT, f"brownout `AsyncDatabase.scalar`{WITH_METRICS}", PG_TASKS, guarded_select_m
            ),
            pg_batch,
        ),
        Timed(
            cell(SELECT, "raw SQLAlchemy Core `engine.connect()`", PG_TASKS, raw_core),
            pg_batch,
            targeted=False,
            note="reference: no ORM session, no COMMIT (rolled back on release)",
        ),
    ]


# ------------------------------------------------------------------ own cost (no I/O)


class FakeRedis:
    """An in-memory stand-in for ``redis.asyncio.Redis``: answers at once, no I/O."""

    async def get(self, key: str) -> bytes:
        return VALUE

    async def set(
        self,
        key: str,
        value: bytes,
        ex: Any = None,
        px: Any = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        return True


def own_cost_cells(loop: asyncio.AbstractEventLoop) -> list[h.Cell]:
    """The adapter's own work per operation: the same calls on a client that does nothing."""
    fake = FakeRedis()
    adapter = AsyncRedisAdapter(fake, name="bench-fake")  # type: ignore[arg-type]

    def timed(fn: Callable[..., Awaitable[Any]], *args: Any) -> h.BatchRunner:
        async def go(n: int) -> int:
            t0 = perf_counter_ns()
            for _ in range(n):
                await fn(*args)
            return perf_counter_ns() - t0

        def run(n: int) -> int:
            return loop.run_until_complete(go(n))

        return run

    return [
        h.Cell("GET", "fake client", timed(fake.get, "k")),
        h.Cell("GET", "adapter over the fake", timed(adapter.get, "k")),
        h.Cell("SET", "fake client", timed(fake.set, "k", VALUE)),
        h.Cell("SET", "adapter over the fake", timed(adapter.set, "k", VALUE)),
    ]


# ------------------------------------------------------------------ time to fail


@dataclass
class FailTimes:
    trip_calls: list[float] = field(default_factory=list)  # s, sequential GETs until open
    time_to_open: float = 0.0
    guarded_open: list[float] = field(default_factory=list)  # s per rejected call
    unguarded: list[float] = field(default_factory=list)  # s per timed-out call
    unguarded_errors: list[str] = field(default_factory=list)
    default_client: float | None = None
    default_client_outcome: str = ""
    rejections_counted: int = 0
    state_after: str = ""


async def time_to_fail(
    server: Any, *, guarded_calls: int, unguarded_calls: int, hang_cap: float
) -> FailTimes:
    url = server.url
    guarded = AsyncRedisAdapter.from_url(url, name="bench-redis-paused")
    raw = aredis.Redis.from_url(url, **AsyncRedisAdapter.client_settings())
    default = aredis.Redis.from_url(url)  # redis-py's own defaults: no socket timeout
    out = FailTimes()
    try:
        for client in (raw, default):  # connections made while the server answers
            await client.set("bench:ttf", VALUE)
        await guarded.get("bench:ttf")
        server.pause()
        t0 = time.perf_counter()
        while guarded.breaker.state is not State.OPEN:
            s = time.perf_counter()
            with contextlib.suppress(Exception):
                await guarded.get("bench:ttf")
            out.trip_calls.append(time.perf_counter() - s)
            if len(out.trip_calls) > 50:
                raise h.SetupError("the breaker did not open after 50 failed GETs")
        out.time_to_open = time.perf_counter() - t0
        before = guarded.breaker.snapshot().total_rejected
        per_round = max(1, guarded_calls // max(1, unguarded_calls))
        for _ in range(max(1, unguarded_calls)):
            s = time.perf_counter()
            try:
                await raw.get("bench:ttf")
                out.unguarded_errors.append("answered?!")
            except Exception as exc:
                out.unguarded_errors.append(type(exc).__name__)
            out.unguarded.append(time.perf_counter() - s)
            get = guarded.get
            for _ in range(per_round):
                s_ns = perf_counter_ns()
                try:  # noqa: SIM105 - a plain try/except is what is timed
                    await get("bench:ttf")
                except BreakerOpen:
                    pass
                out.guarded_open.append((perf_counter_ns() - s_ns) / 1e9)
        out.rejections_counted = guarded.breaker.snapshot().total_rejected - before
        out.state_after = guarded.breaker.state.value
        s = time.perf_counter()
        try:
            await asyncio.wait_for(default.get("bench:ttf"), hang_cap)
            out.default_client_outcome = "answered?!"
        except TimeoutError:
            out.default_client_outcome = f"no answer, abandoned after {hang_cap:g} s"
        except Exception as exc:
            out.default_client_outcome = type(exc).__name__
        out.default_client = time.perf_counter() - s
    finally:
        server.resume()
        for client in (raw, default):
            with contextlib.suppress(Exception):
                await client.aclose()
        with contextlib.suppress(Exception):
            await guarded.aclose()
    return out


# ------------------------------------------------------------------ report


def fmt_ops(ns_per_op: float) -> str:
    return f"{1e9 / ns_per_op:,.0f}"


def throughput_table(timed: list[Timed]) -> str:
    baselines = {t.cell.scenario: t for t in timed if t.baseline}
    rows = []
    for t in timed:
        base = baselines[t.cell.scenario]
        ratio = base.cell.median / t.cell.median
        paired = statistics.median(t.paired) if t.paired else float("nan")
        cpu = statistics.median(t.cpu) if t.cpu else float("nan")
        base_cpu = statistics.median(base.cpu) if base.cpu else float("nan")
        if t.baseline:
            target = met = "—"
        elif t.targeted:
            goal = TARGET_PG_RATIO if t.cell.scenario == SELECT else TARGET_RATIO
            target = f">= {goal:.0%}"
            met = "yes" if paired >= goal else "**no**"
        else:
            target, met = "—", "—"
        rows.append(
            [
                t.cell.scenario,
                t.cell.label,
                fmt_ops(t.cell.median),
                f"{t.cell.median / 1000:.1f}",
                f"{ratio:.1%}",
                f"{paired:.1%}",
                target,
                met,
                f"{t.cell.spread:.1%}",
                f"{cpu / 1000:.1f}",
                f"{base_cpu / cpu:.1%}",
            ]
        )
    return h.markdown_table(
        [
            "scenario",
            "cell",
            "ops/s (median)",
            "µs/op",
            "vs raw",
            "paired vs raw",
            "target",
            "met",
            "IQR",
            "client CPU µs/op",
            "CPU: raw / cell",
        ],
        rows,
    )


def own_cost_table(cells: list[h.Cell], timed: list[Timed]) -> str:
    raw_cpu = {
        GET: next(t for t in timed if t.cell.scenario == GET and t.baseline),
        SET: next(t for t in timed if t.cell.scenario == SET and t.baseline),
    }
    rows = []
    for op, scenario in (("GET", GET), ("SET", SET)):
        bare, guarded = (c for c in cells if c.scenario == op)
        extra = guarded.median - bare.median
        cpu = statistics.median(raw_cpu[scenario].cpu) if raw_cpu[scenario].cpu else float("nan")
        rows.append(
            [
                op,
                "`AsyncRedisAdapter` over `FakeRedis`",
                f"{bare.median:,.0f}",
                f"{guarded.median:,.0f}",
                f"+{extra / 1000:.2f}",
                f"{cpu / 1000:.1f}",
                f"{cpu / (cpu + extra):.1%}",
            ]
        )
    return h.markdown_table(
        [
            "operation (no I/O)",
            "cell",
            "fake client ns/op",
            "adapter ns/op",
            "adapter's own µs/op",
            "raw redis-py CPU µs/op",
            "ceiling if CPU-bound",
        ],
        rows,
    )


def fail_table(f: FailTimes) -> str:
    g_med = statistics.median(f.guarded_open) * 1000
    rows = [
        [
            "guarded, breaker open",
            "`AsyncRedisAdapter.get` → `BreakerOpen`",
            str(len(f.guarded_open)),
            f"{g_med:.4f}",
            f"{h.percentile(f.guarded_open, 0.99) * 1000:.4f}",
            f"{max(f.guarded_open) * 1000:.3f}",
            f"< {TARGET_OPEN_MS} ms",
            "yes" if g_med < TARGET_OPEN_MS else "**no**",
        ],
        [
            "unguarded, same settings",
            f"`Redis.get` ({DEFAULT_SOCKET_TIMEOUT:g} s socket timeout) → "
            + "/".join(sorted(set(f.unguarded_errors))),
            str(len(f.unguarded)),
            f"{statistics.median(f.unguarded) * 1000:.1f}",
            f"{h.percentile(f.unguarded, 0.99) * 1000:.1f}",
            f"{max(f.unguarded) * 1000:.1f}",
            "—",
            "—",
        ],
    ]
    if f.default_client is not None:
        rows.append(
            [
                "unguarded, redis-py defaults",
                f"`Redis.get` (no socket timeout): {f.default_client_outcome}",
                "1",
                f">= {f.default_client * 1000:.0f}",
                "—",
                "—",
                "—",
                "—",
            ]
        )
    rows.append(
        [
            "tripping (guarded)",
            f"sequential GETs until the breaker opened: {len(f.trip_calls)}",
            str(len(f.trip_calls)),
            f"{statistics.median(f.trip_calls) * 1000:.1f}",
            "—",
            f"{max(f.trip_calls) * 1000:.1f}",
            "—",
            f"open after {f.time_to_open:.2f} s",
        ]
    )
    return h.markdown_table(
        [
            "Redis paused (SIGSTOP)",
            "call",
            "calls",
            "median ms",
            "p99 ms",
            "max ms",
            "target",
            "met",
        ],
        rows,
    )


# ------------------------------------------------------------------ main


def post_checks(
    guarded: AsyncRedisAdapter,
    db: bsql.AsyncDatabase,
    metered: Metered,
    with_metrics: tuple[AsyncRedisAdapter, bsql.AsyncDatabase],
    timed: list[Timed],
    rounds: int,
    warmup: int,
) -> list[str]:
    problems = []
    for adapter in (guarded, db, *with_metrics):
        snap = adapter.breaker.snapshot()
        if snap.state is not State.CLOSED or snap.total_failures or snap.total_rejected:
            problems.append(
                f"{adapter.name}: breaker {snap.state.value}, {snap.total_failures} failures, "
                f"{snap.total_rejected} rejections during throughput cells"
            )
    ops = guarded.stats.view()["operations"]
    for op, label in (("get", GET), ("set", SET)):
        batch = next(t.batch for t in timed if t.cell.scenario == label and not t.baseline)
        want = batch * (rounds + warmup)
        got = ops.get(op, {}).get("success", 0)
        if got != want:
            problems.append(f"redis adapter counted {got} successful {op}s, expected {want}")
        counted = metered.requests(with_metrics[0].name, "redis", op)
        if counted != want:
            problems.append(f"the metrics counted {counted} successful {op}s, expected {want}")
    pg_batch = next(t.batch for t in timed if t.cell.scenario == SELECT and not t.baseline)
    counted = metered.requests(with_metrics[1].name, "sql", "session")
    if counted != pg_batch * (rounds + warmup):
        problems.append(
            f"the metrics counted {counted} successful scalars, "
            f"expected {pg_batch * (rounds + warmup)}"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=25, help="recorded rounds (default 25)")
    p.add_argument("--warmup", type=int, default=2, help="discarded rounds (default 2)")
    p.add_argument("--redis-batch", type=int, default=3000, help="Redis ops per cell per round")
    p.add_argument("--pg-batch", type=int, default=600, help="SELECT 1 per cell per round")
    p.add_argument("--own-batch", type=int, default=20000, help="no-I/O calls per cell per round")
    p.add_argument("--guarded-calls", type=int, default=5000, help="rejected GETs timed")
    p.add_argument("--unguarded-calls", type=int, default=6, help="timed-out GETs timed")
    p.add_argument("--hang-cap", type=float, default=2.0, help="s to wait on a no-timeout GET")
    p.add_argument("--postgres-url", default=None, help="use this PostgreSQL (read-only)")
    p.add_argument("--quick", action="store_true", help="tiny numbers (smoke test)")
    p.add_argument("--json", type=Path, default=None, help="also write every sample here")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.redis_batch, args.pg_batch = 2, 1, 500, 100
        args.own_batch = 2000
        args.guarded_calls, args.unguarded_calls, args.hang_cap = 200, 1, 0.6

    info = h.machine_info(LIBRARIES)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    prefix = f"bench:adapter:{uuid.uuid4().hex[:8]}"
    with Servers() as servers:
        try:
            print("starting private redis-server and PostgreSQL ...", file=sys.stderr)
            servers.start_redis()
            servers.start_postgres(args.postgres_url)
        except h.SetupError as exc:
            print(f"adapter_overhead: {exc}", file=sys.stderr)
            return 2
        assert servers.postgres_url is not None
        pg_url = servers.postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        metered = Metered()
        raw, guarded, guarded_m = loop.run_until_complete(
            build_redis(servers.redis.url, prefix, metered)
        )
        engine_holder, engine = raw_pg_engine(pg_url)
        db = bsql.AsyncDatabase.from_url(pg_url, name="bench-database")
        db_m = metered.attach(
            bsql.AsyncDatabase.from_url(
                pg_url, name="bench-database-metrics", registry=metered.registry
            )
        )
        timed = build_cells(
            loop, raw, guarded, guarded_m, prefix, engine, db, db_m,
            redis_batch=args.redis_batch, pg_batch=args.pg_batch,
        )  # fmt: skip
        run_rounds(timed, rounds=args.rounds, warmup=args.warmup)
        own = own_cost_cells(loop)
        h.run_interleaved(own, rounds=args.rounds, batch=args.own_batch, warmup=args.warmup)
        problems = post_checks(
            guarded, db, metered, (guarded_m, db_m), timed, args.rounds, args.warmup
        )
        loop.run_until_complete(raw.aclose())
        loop.run_until_complete(guarded.aclose())
        loop.run_until_complete(guarded_m.aclose())
        loop.run_until_complete(engine_holder.aclose())
        loop.run_until_complete(db.aclose())
        loop.run_until_complete(db_m.aclose())
        print("time-to-fail: pausing the private redis-server ...", file=sys.stderr)
        fails = loop.run_until_complete(
            time_to_fail(
                servers.redis,
                guarded_calls=args.guarded_calls,
                unguarded_calls=args.unguarded_calls,
                hang_cap=args.hang_cap,
            )
        )
        if fails.rejections_counted != len(fails.guarded_open):
            problems.append(
                f"{len(fails.guarded_open)} guarded calls timed while open but the breaker "
                f"counted {fails.rejections_counted} rejections (a trial slipped in?)"
            )
        pg_note = servers.postgres_note
    loop.close()

    print(h.header_line(info))
    print()
    print(
        f"Throughput: {args.rounds} recorded + {args.warmup} warm-up rounds, interleaved; "
        f"{args.redis_batch} Redis ops / {args.pg_batch} SELECT 1 per cell per round; "
        f"private redis-server; {pg_note}."
    )
    print()
    print(throughput_table(timed))
    print()
    print(own_cost_table(own, timed))
    print()
    print(fail_table(fails))
    h.print_problems(problems)
    if args.json is not None:
        h.write_json(
            args.json,
            info,
            args,
            {
                "cells": [
                    {
                        "scenario": t.cell.scenario,
                        "label": t.cell.label,
                        "batch": t.batch,
                        "ns_per_op": t.cell.samples,
                        "paired_ratio": t.paired,
                        "cpu_ns_per_op": t.cpu,
                    }
                    for t in timed
                ],
                "own_cost": [
                    {"operation": c.scenario, "label": c.label, "ns_per_op": c.samples} for c in own
                ],
                "time_to_fail": {
                    "trip_calls_s": fails.trip_calls,
                    "time_to_open_s": fails.time_to_open,
                    "guarded_open_s": fails.guarded_open,
                    "unguarded_s": fails.unguarded,
                    "unguarded_errors": fails.unguarded_errors,
                    "default_client_s": fails.default_client,
                    "default_client_outcome": fails.default_client_outcome,
                },
                "problems": problems,
            },
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
