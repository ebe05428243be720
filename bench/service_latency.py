"""Service latency with Redis paused: inventario with brownout vs the same service unguarded.

Issue #6. A benchmark, not a timed test: it prints Markdown tables and exits 0
whether or not the target is met (1 only if the run is not what it claims to
be: the unguarded service's breakers are not disabled, or the guarded service's
cache breaker never opened).

Two ``inventario serve`` processes (uvicorn) run side by side on the same
throwaway PostgreSQL database (created on ``--postgres-admin-url``, dropped at
the end) and the same private ``redis-server`` (started on a free port with its
own directory, databases 0 and 1): the **brownout** one as configured, the
**unguarded** one with ``BROWNOUT_DISABLED=1`` (every breaker ``DISABLED``: calls
pass straight through to the client). Both get the same open-loop request mix
from httpx at ``--rate`` requests/s each, request for request at the same
instants, so that load and machine noise fall on both alike:

* 70 % ``GET /products/{sku}`` (50 products, read through the Redis cache),
* 10 % ``GET /products?limit=20``,
* 15 % ``GET /products/{sku}/movements?limit=20``,
*  5 % ``POST /products/{sku}/movements`` (``in``, 1 unit).

Phases: *healthy* (``--healthy`` s), then the private Redis is paused with
SIGSTOP (connections stay open, nothing is answered); *paused, tripping* lasts
until the brownout service's ``cache`` breaker reads ``open`` in its
``/health``; *paused, breaker open* (``--open`` s); then SIGCONT and *resumed*
(``--resumed`` s). A request belongs to the phase of the instant it was
scheduled; its latency runs from that instant (not from when the client got
round to sending it) to the end of the response, so a lagging load generator
shows up as latency rather than hiding it. Requests time out after
``--timeout`` s (counted as errors).

Target (issue #6): p99 of ``GET /products/{sku}`` with brownout <= 25 ms while
the breaker is open (the unguarded service waits for Redis socket timeouts).

Run: ``.venv/bin/python bench/service_latency.py [--rate R] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
except ImportError:  # imported as bench.service_latency
    from bench import _harness as h
from tools.stack import ServiceProcess  # the harness put the checkout on sys.path

LIBRARIES = ("brownout", "fastapi", "uvicorn", "httpx", "redis", "asyncpg")
#: /health shows the breakers only to the admin token: both services get this one.
ADMIN_TOKEN = "bench-service-latency"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TARGET_P99_MS = 25.0
PRODUCTS = 50
GUARDED = "brownout"
UNGUARDED = "unguarded (`BROWNOUT_DISABLED=1`)"
VARIANTS = (GUARDED, UNGUARDED)

HEALTHY = "1. healthy"
TRIPPING = "2. Redis paused, tripping"
OPEN = "3. Redis paused, breaker open"
RESUMED = "4. Redis resumed"
PHASES = (HEALTHY, TRIPPING, OPEN, RESUMED)

PRODUCT_GET = "GET /products/{sku}"
#: (kind, weight)
MIX = (
    (PRODUCT_GET, 70),
    ("GET /products?limit=20", 10),
    ("GET /products/{sku}/movements", 15),
    ("POST /products/{sku}/movements", 5),
)


@dataclass
class Sample:
    variant: str
    phase: str
    kind: str
    latency: float  # s, from the scheduled instant to the end of the response
    status: int  # HTTP status, 0 for a transport error or timeout
    error: str = ""
    at: float = 0.0  # the scheduled instant (time.monotonic())


@dataclass
class Timeline:
    started: float = 0.0
    paused_at: float = 0.0
    resumed_at: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)  # (s since start, what)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic() - self.started, what))


# ------------------------------------------------------------------ setup


@contextlib.asynccontextmanager
async def throwaway_database(admin_url: str) -> Any:
    """CREATE DATABASE bench_svc_<random> on ``admin_url``'s server; DROP ... (FORCE) at the end."""
    url = make_url(admin_url)
    name = f"bench_svc_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        shown = url.render_as_string(hide_password=True)
        raise h.SetupError(f"cannot connect to PostgreSQL at {shown}: {exc}") from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


class Service(ServiceProcess):
    """One variant's ``python -m inventario serve``: :class:`tools.stack.ServiceProcess`
    (the stack builder the demo and the tests use) with the bench's admin token."""

    def __init__(self, variant: str, env: dict[str, str], var_dir: Path) -> None:
        super().__init__({**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN, **env}, var_dir=var_dir)
        self.variant = variant
        self.base = self.url

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._proc

    def start(self) -> None:
        """Start and wait until ``/health/live`` answers (a SetupError with the log if not)."""
        try:
            super().start()
        except Exception as exc:
            raise h.SetupError(
                f"{self.variant} service did not start: {exc}; log {self.log_path}:\n"
                f"{self.log_tail(20)}"
            ) from exc

    async def wait_ready(self) -> None:
        """Nothing left to wait for: :meth:`start` returns once the service answers."""


# ------------------------------------------------------------------ load


def product_body(i: int) -> dict[str, Any]:
    return {
        "sku": f"BENCH-{i:03d}",
        "name": f"Bench product {i}",
        "category": ("tools", "garden", "kitchen")[i % 3],
        "price": "19.90",
        "cost": "10.00",
        "stock": 1000,
        "min_stock": 5,
    }


async def seed(clients: dict[str, httpx.AsyncClient]) -> None:
    """Create the products (through the brownout service) and warm both caches."""
    guarded = clients[GUARDED]
    for i in range(PRODUCTS):
        r = await guarded.post("/products", json=product_body(i))
        if r.status_code not in (200, 201):
            raise h.SetupError(f"seeding product {i}: HTTP {r.status_code} {r.text[:200]}")
    for client in clients.values():
        for i in range(PRODUCTS):
            r = await client.get(f"/products/BENCH-{i:03d}")
            if r.status_code != 200:
                raise h.SetupError(f"warming the cache: HTTP {r.status_code} {r.text[:200]}")


def request_for(kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
    sku = f"BENCH-{rng.randrange(PRODUCTS):03d}"
    if kind == PRODUCT_GET:
        return "GET", f"/products/{sku}", None
    if kind == "GET /products?limit=20":
        return "GET", f"/products?limit=20&offset={rng.randrange(3) * 10}", None
    if kind == "GET /products/{sku}/movements":
        return "GET", f"/products/{sku}/movements?limit=20", None
    body = {"kind": "in", "quantity": 1, "reason": "bench"}
    return "POST", f"/products/{sku}/movements", body


class Load:
    """Open-loop load: one request per variant every 1/rate s, tagged with the current phase."""

    def __init__(
        self, clients: dict[str, httpx.AsyncClient], rate: float, timeout: float, seed: int
    ) -> None:
        self.clients = clients
        self.rate = rate
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.phase = HEALTHY
        self.samples: list[Sample] = []
        self.lags: list[float] = []  # s between the scheduled instant and the send
        self.in_flight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._kinds = [kind for kind, _ in MIX]
        self._weights = [weight for _, weight in MIX]

    async def _one(
        self, variant: str, phase: str, kind: str, scheduled: float, req: tuple[str, str, Any]
    ) -> None:
        method, path, body = req
        self.lags.append(time.monotonic() - scheduled)
        status, error = 0, ""
        try:
            r = await self.clients[variant].request(method, path, json=body, timeout=self.timeout)
            status = r.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        except asyncio.CancelledError:  # still unanswered when the run ended: an error too
            self.samples.append(
                Sample(
                    variant, phase, kind, time.monotonic() - scheduled, 0, "unfinished", scheduled
                )
            )
            raise
        self.samples.append(
            Sample(variant, phase, kind, time.monotonic() - scheduled, status, error, scheduled)
        )

    async def run(self) -> None:
        interval = 1.0 / self.rate
        start = time.monotonic()
        for i in itertools.count():
            scheduled = start + i * interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            kind = self.rng.choices(self._kinds, self._weights)[0]
            req = request_for(kind, self.rng)
            for variant in VARIANTS:
                task = asyncio.create_task(self._one(variant, self.phase, kind, scheduled, req))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def stop(self) -> None:
        self._stop.set()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=self.timeout + 5)
        left = list(self.in_flight)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


@dataclass(frozen=True)
class ServiceState:
    """What a service's ``/health`` says about its cache."""

    breaker: str
    level: str
    cache_read: str  # "on", or "off (<reason>)"

    def __str__(self) -> str:
        return f"cache breaker {self.breaker}, level {self.level}, cache_read {self.cache_read}"


async def service_state(client: httpx.AsyncClient) -> ServiceState:
    try:
        doc = (await client.get("/health", headers=ADMIN, timeout=5.0)).json()
    except (httpx.HTTPError, ValueError) as exc:
        return ServiceState(f"unknown ({type(exc).__name__})", "?", "?")
    breaker = "no cache component"
    for component in doc.get("components", []):
        if component.get("name") == "cache":
            breaker = str((component.get("breaker") or {}).get("state", "unknown"))
    feature = (doc.get("features") or {}).get("cache_read") or {}
    read = "on" if feature.get("enabled") else f"off ({feature.get('reason', '?')})"
    return ServiceState(breaker, str(doc.get("level", "?")), read)


async def watch(
    clients: dict[str, httpx.AsyncClient], timeline: Timeline, every: float = 1.0
) -> None:
    """Note every change of each service's cache breaker, level and cache_read feature."""
    last: dict[str, ServiceState] = {}
    while True:
        for variant, client in clients.items():
            state = await service_state(client)
            if last.get(variant) != state:
                last[variant] = state
                timeline.note(f"{variant}: {state}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------ report


def latency_cells(lat: list[float]) -> list[str]:
    """Count, p50 and p99 of latencies in ms (for the per-variant columns)."""
    if not lat:
        return ["0", "—", "—"]
    return [str(len(lat)), f"{statistics.median(lat):.1f}", f"{h.percentile(lat, 0.99):.1f}"]


def summary_rows(samples: list[Sample], kinds: set[str] | None) -> list[list[str]]:
    rows = []
    for phase in PHASES:
        for variant in VARIANTS:
            sel = [
                s
                for s in samples
                if s.phase == phase and s.variant == variant and (kinds is None or s.kind in kinds)
            ]
            if not sel:
                rows.append([phase, variant, "0", "—", "—", "—", "—", "—", "—"])
                continue
            lat = [s.latency * 1000 for s in sel]
            ok = sum(1 for s in sel if 200 <= s.status < 300)
            http_err = sum(1 for s in sel if s.status >= 400)
            transport = sum(1 for s in sel if s.status == 0)
            met = "—"
            if phase == OPEN and variant == GUARDED and kinds == {PRODUCT_GET}:
                met = "yes" if h.percentile(lat, 0.99) <= TARGET_P99_MS else "**no**"
            rows.append(
                [
                    phase,
                    variant,
                    str(len(sel)),
                    f"{statistics.median(lat):.1f}",
                    f"{h.percentile(lat, 0.99):.1f}",
                    f"{max(lat):.1f}",
                    f"{ok} / {http_err} / {transport}",
                    f"<= {TARGET_P99_MS:g} ms" if met != "—" else "—",
                    met,
                ]
            )
    return rows


def window_rows(samples: list[Sample], timeline: Timeline, width: float) -> list[list[str]]:
    """``GET /products/{sku}`` in windows of ``width`` s from the pause to after the resume."""
    rows = []
    start = timeline.paused_at
    end = timeline.resumed_at + width
    lo = start
    while lo < end:
        hi = lo + width
        cells = [f"{lo - start:+.0f} to {hi - start:+.0f} s"]
        for variant in VARIANTS:
            lat = [
                s.latency * 1000
                for s in samples
                if s.variant == variant and s.kind == PRODUCT_GET and lo <= s.at < hi
            ]
            cells += latency_cells(lat)
        rows.append(cells)
        lo = hi
    return rows


def kind_rows(samples: list[Sample]) -> list[list[str]]:
    """Every request kind, healthy vs breaker open: what each path costs on this machine."""
    rows = []
    for kind, _ in MIX:
        for phase in (HEALTHY, OPEN):
            cells = [kind, phase]
            for variant in VARIANTS:
                lat = [
                    s.latency * 1000
                    for s in samples
                    if s.variant == variant and s.kind == kind and s.phase == phase
                ]
                cells += latency_cells(lat)
            rows.append(cells)
    return rows


#: The columns of :func:`latency_cells`, for each variant in turn.
VARIANT_HEADERS = [
    f"{variant} {column}"
    for variant in ("brownout", "unguarded")
    for column in ("n", "p50 ms", "p99 ms")
]
KIND_HEADERS = ["request", "phase", *VARIANT_HEADERS]
WINDOW_HEADERS = ["since the pause", *VARIANT_HEADERS]

HEADERS = [
    "phase",
    "variant",
    "requests",
    "p50 ms",
    "p99 ms",
    "max ms",
    "ok / HTTP err / timeout+transport",
    "target p99",
    "met",
]


# ------------------------------------------------------------------ main


async def run(args: argparse.Namespace) -> tuple[list[Sample], Load, Timeline, list[str]]:
    problems: list[str] = []
    timeline = Timeline()
    services: list[Service] = []
    async with contextlib.AsyncExitStack() as stack:  # closed in reverse order
        redis_server = stack.enter_context(h.private_redis())
        db_url = await stack.enter_async_context(throwaway_database(args.postgres_admin_url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="brownout-bench-svc-")))
        envs = {
            GUARDED: {"REDIS_URL": redis_server.url_for(0), "BROWNOUT_DISABLED": ""},
            UNGUARDED: {"REDIS_URL": redis_server.url_for(1), "BROWNOUT_DISABLED": "1"},
        }
        for variant in VARIANTS:  # one after the other: both create the schema
            env = {"DATABASE_URL": db_url, **envs[variant]}
            name = "guarded" if variant == GUARDED else "unguarded"
            svc = Service(variant, env, tmp / name)
            services.append(svc)
            stack.callback(svc.stop)
            svc.start()
            await svc.wait_ready()
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        clients = {
            s.variant: httpx.AsyncClient(base_url=s.base, limits=limits, timeout=10.0)
            for s in services
        }
        for client in clients.values():
            stack.push_async_callback(client.aclose)
        await seed(clients)
        state = await service_state(clients[UNGUARDED])
        if state.breaker != "disabled":
            problems.append(f"the unguarded service's {state}")
        samples, load = await drive(args, clients, redis_server, timeline, problems)
    return samples, load, timeline, problems


async def drive(
    args: argparse.Namespace,
    clients: dict[str, httpx.AsyncClient],
    redis_server: Any,
    timeline: Timeline,
    problems: list[str],
) -> tuple[list[Sample], Load]:
    load = Load(clients, args.rate, args.timeout, args.seed)
    timeline.started = time.monotonic()
    runner = asyncio.create_task(load.run())
    watcher = asyncio.create_task(watch(clients, timeline))
    guarded = clients[GUARDED]
    try:
        timeline.note("load started")
        await asyncio.sleep(args.healthy)
        redis_server.pause()
        timeline.paused_at = time.monotonic()
        load.phase = TRIPPING
        timeline.note("redis-server paused (SIGSTOP)")
        deadline = time.monotonic() + args.trip_limit
        while (state := await service_state(guarded)).breaker != "open":
            if time.monotonic() > deadline:
                problems.append(f"the brownout service's cache breaker did not open ({state})")
                break
            await asyncio.sleep(0.1)
        load.phase = OPEN
        timeline.note(f"phase 3 starts: {GUARDED} reads {state}")
        await asyncio.sleep(args.open)
        redis_server.resume()
        timeline.resumed_at = time.monotonic()
        load.phase = RESUMED
        timeline.note("redis-server resumed (SIGCONT)")
        await asyncio.sleep(args.resumed)
        timeline.note("load stopped")
    finally:
        redis_server.resume()
        await load.stop()
        for task in (runner, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return load.samples, load


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--rate", type=float, default=50.0, help="requests/s to EACH service (default 50)"
    )
    p.add_argument("--healthy", type=float, default=20.0, help="s of load before the pause")
    p.add_argument("--open", type=float, default=30.0, help="s measured with the breaker open")
    p.add_argument("--resumed", type=float, default=15.0, help="s of load after SIGCONT")
    p.add_argument("--trip-limit", type=float, default=30.0, help="s to wait for the breaker")
    p.add_argument("--timeout", type=float, default=10.0, help="s per request")
    p.add_argument("--window", type=float, default=5.0, help="s per row of the window table")
    p.add_argument("--seed", type=int, default=6, help="random seed of the request mix")
    p.add_argument(
        "--postgres-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="where the throwaway database is created (and dropped)",
    )
    p.add_argument("--quick", action="store_true", help="short phases (smoke test)")
    p.add_argument("--json", type=Path, default=None, help="also write every sample here")
    args = p.parse_args(argv)
    if args.quick:
        args.rate, args.healthy, args.open, args.resumed = 20.0, 3.0, 4.0, 2.0
        args.window = 2.0

    info = h.machine_info(LIBRARIES)
    load_before = os.getloadavg()
    try:
        samples, load, timeline, problems = asyncio.run(run(args))
    except h.SetupError as exc:
        print(f"service_latency: {exc}", file=sys.stderr)
        return 2
    load_after = os.getloadavg()

    print(h.header_line(info))
    print()
    lag99 = h.percentile(load.lags, 0.99) * 1000 if load.lags else float("nan")
    print(
        f"{args.rate:g} req/s to each service (open loop, same requests at the same instants); "
        f"phases: healthy {args.healthy:g} s, tripping (until the breaker opened), breaker "
        f"open {args.open:g} s, resumed {args.resumed:g} s; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; generator send lag p99 "
        f"{lag99:.1f} ms."
    )
    print()
    print(f"`{PRODUCT_GET}`:")
    print()
    print(h.markdown_table(HEADERS, summary_rows(samples, {PRODUCT_GET})))
    print()
    print("Whole mix:")
    print()
    print(h.markdown_table(HEADERS, summary_rows(samples, None)))
    print()
    print("By request kind, healthy vs breaker open:")
    print()
    print(h.markdown_table(KIND_HEADERS, kind_rows(samples)))
    print()
    print(
        f"`{PRODUCT_GET}` by {args.window:g} s window from the pause "
        f"(SIGCONT at {timeline.resumed_at - timeline.paused_at:+.1f} s):"
    )
    print()
    print(h.markdown_table(WINDOW_HEADERS, window_rows(samples, timeline, args.window)))
    print()
    print("Timeline (s since the load started):")
    print()
    for t, what in timeline.events:
        print(f"- {t:6.1f} s: {what}")
    h.print_problems(problems)
    if args.json is not None:
        h.write_json(
            args.json,
            info,
            args,
            {
                "load_average": {"before": load_before, "after": load_after},
                "timeline": timeline.events,
                "started": timeline.started,
                "paused_at": timeline.paused_at,
                "resumed_at": timeline.resumed_at,
                "samples": [s.__dict__ for s in samples],
                "problems": problems,
            },
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
