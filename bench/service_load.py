"""inventario under load: SQLite writes (issue 11 item 6) and the service's own overhead (item 7).

A benchmark, not a timed test: it prints Markdown tables and exits 0 whether or
not a target is met (1 only if the run is not what it claims to be: requests
failed, the stock does not add up, the disabled service's breakers are not
disabled, or the cache breaker never opened).

Every service is a real ``python -m inventario serve`` subprocess (uvicorn, one
process) on loopback with its own temporary ``VAR_DIR``; the load comes from
this process: in ``writes``, each client on its own keep-alive connection
(bench/_http1.py; ``--httpx``: one shared httpx client, whose CPU in this process
was a fifth of a core at 240 req/s, against a twentieth), in ``overhead`` an httpx
client (a bounded set of keep-alive connections). The CPU the service and the load
generator used during the load is printed (share of one core).

``--scenario writes`` (item 6): one service on its embedded default, SQLite
(no ``DATABASE_URL``, no Redis: ``make run``), ``--clients`` (16) paced clients
sending ``--rate`` (240) requests/s in all: a third ``POST
/products/{sku}/movements`` (``in`` or ``out``, 1 unit, on 50 products), the
rest reads (``GET /products/{sku}``, ``GET /products?limit=20``, ``GET
/products/{sku}/movements?limit=20``). A client that falls behind its schedule
sends at once (the lag is reported). Latency: send to end of response. Every
second ``/health`` is read: the levels the service put itself in are reported.
At the end the stock of every product must equal its start plus the deltas of
the movements answered 201, and never be negative. Targets: write p99 <= 50 ms,
no write over 1 s, reads unchanged.

``--scenario overhead`` (item 7): two services side by side, both on SQLite and
a private ``redis-server`` (databases 0 and 1; never the shared one): the
**brownout** one as configured and the **disabled** one with
``BROWNOUT_DISABLED=1``. Interleaved rounds (order alternated each round): for
``--cell-seconds`` s each, ``--concurrency`` closed-loop clients send ``GET
/products/{sku}`` (cache hits) or ``POST /products/{sku}/movements`` to one
service; requests/s per cell, the overhead is 1 - the median over rounds of the
paired ratio brownout / disabled. Target <= 5 %. Then the private Redis is
paused (SIGSTOP): once the brownout service's cache breaker reads ``open``,
``GET /products/{sku}`` is sent open-loop at ``--paused-rate`` requests/s for
``--paused-seconds`` s; target p99 <= 25 ms.

Run: ``.venv/bin/python bench/service_load.py --scenario writes|overhead|both [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
    from _http1 import Connection, HTTPError
    from service_latency import ADMIN_TOKEN, Service, service_state
except ImportError:  # imported as bench.service_load
    from bench._http1 import Connection, HTTPError
    from bench.service_latency import ADMIN_TOKEN, Service, service_state

    from bench import _harness as h

LIBRARIES = ("brownout", "fastapi", "uvicorn", "httpx", "sqlalchemy", "aiosqlite", "redis")
PRODUCTS = 50
START_STOCK = 10_000
WRITE_P99_MS = 50.0
WRITE_MAX_MS = 1000.0
OVERHEAD_MAX = 0.05
PAUSED_P99_MS = 25.0

READ_KINDS = ("GET /products/{sku}", "GET /products?limit=20", "GET /products/{sku}/movements")
WRITE_KIND = "POST /products/{sku}/movements"


#: /health shows breakers only with the admin token: the services get the one
#: service_latency's service_state sends (with a token of their own, every /health
#: read was a 403 and the cache breaker "never opened").


def make_service(variant: str, env: dict[str, str], var_dir: Path) -> Service:
    """An ``inventario serve`` on SQLite under ``var_dir`` (no DATABASE_URL), with ``env``."""
    svc = Service(variant, {**env, "ADMIN_TOKEN": ADMIN_TOKEN}, var_dir)
    for name in ("DATABASE_URL", "REDIS_URL", "BROWNOUT_DISABLED"):
        if name not in env:
            svc.env.pop(name, None)
    return svc


@dataclass
class Sample:
    kind: str
    latency: float  # s, send to end of response
    status: int  # 0: transport error or timeout
    lag: float = 0.0  # s between the scheduled instant and the send


def sku(i: int) -> str:
    return f"LOAD-{i:03d}"


def product_body(i: int) -> dict[str, Any]:
    return {
        "sku": sku(i),
        "name": f"Load product {i}",
        "category": ("tools", "garden", "kitchen")[i % 3],
        "price": "19.90",
        "cost": "10.00",
        "stock": START_STOCK,
        "min_stock": 5,
    }


async def seed(client: httpx.AsyncClient) -> None:
    for i in range(PRODUCTS):
        r = await client.post("/products", json=product_body(i))
        if r.status_code not in (200, 201):
            raise h.SetupError(f"seeding product {i}: HTTP {r.status_code} {r.text[:200]}")
    for i in range(PRODUCTS):  # fill the cache (when there is one)
        r = await client.get(f"/products/{sku(i)}")
        if r.status_code != 200:
            raise h.SetupError(f"reading product {i}: HTTP {r.status_code} {r.text[:200]}")


def movement(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.choice(("in", "out"))
    return f"/products/{sku(rng.randrange(PRODUCTS))}/movements", {
        "kind": kind,
        "quantity": 1,
        "reason": "load",
    }


async def send(
    client: httpx.AsyncClient, kind: str, rng: random.Random, limit: float
) -> tuple[int, dict[str, Any] | None]:
    """One request of ``kind``; (status, the JSON answer of a movement)."""
    try:
        if kind == WRITE_KIND:
            path, body = movement(rng)
            r = await client.post(path, json=body, timeout=limit)
            return r.status_code, (r.json() if r.status_code == 201 else None)
        if kind == READ_KINDS[0]:
            r = await client.get(f"/products/{sku(rng.randrange(PRODUCTS))}", timeout=limit)
        elif kind == READ_KINDS[1]:
            r = await client.get(f"/products?limit=20&offset={rng.randrange(3) * 10}")
        else:
            r = await client.get(
                f"/products/{sku(rng.randrange(PRODUCTS))}/movements?limit=20", timeout=limit
            )
        return r.status_code, None
    except httpx.HTTPError:
        return 0, None


def request_of(kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, JSON body) of one request of ``kind`` (the draws of :func:`send`)."""
    if kind == WRITE_KIND:
        path, body = movement(rng)
        return "POST", path, body
    if kind == READ_KINDS[0]:
        return "GET", f"/products/{sku(rng.randrange(PRODUCTS))}", None
    if kind == READ_KINDS[1]:
        return "GET", f"/products?limit=20&offset={rng.randrange(3) * 10}", None
    return "GET", f"/products/{sku(rng.randrange(PRODUCTS))}/movements?limit=20", None


async def send_on(
    conn: Connection, kind: str, rng: random.Random, limit: float
) -> tuple[int, dict[str, Any] | None]:
    """:func:`send` on one client's own keep-alive connection (bench/_http1.py)."""
    method, path, body = request_of(kind, rng)
    try:
        r = await conn.request(method, path, json_body=body, within=limit)
    except HTTPError:
        return 0, None
    return r.status_code, (r.json() if kind == WRITE_KIND and r.status_code == 201 else None)


def summary(samples: list[Sample], kinds: tuple[str, ...]) -> list[str]:
    sel = [s for s in samples if s.kind in kinds]
    if not sel:
        return ["0", "—", "—", "—", "—", "—"]
    lat = [s.latency * 1000 for s in sel]
    statuses = Counter(s.status for s in sel)
    shown = ", ".join(f"{k or 'err'}: {v}" for k, v in sorted(statuses.items()))
    return [
        str(len(sel)),
        f"{statistics.median(lat):.1f}",
        f"{h.percentile(lat, 0.99):.1f}",
        f"{h.percentile(lat, 0.999):.1f}",
        f"{max(lat):.1f}",
        shown,
    ]


# ------------------------------------------------------------------ item 6: writes


async def watch_levels(client: httpx.AsyncClient, seen: Counter[str], every: float = 1.0) -> None:
    while True:
        state = await service_state(client)
        seen[state.level] += 1
        await asyncio.sleep(every)


async def paced_client(
    client: httpx.AsyncClient | Connection,
    rng: random.Random,
    rate: float,
    until: float,
    limit: float,
    samples: list[Sample],
    moved: Counter[str],
) -> None:
    """Requests at ``rate``/s on a fixed schedule (a third movements); late: send at once.
    ``client``: this client's own connection (or, to compare, a shared httpx client)."""
    interval = 1.0 / rate
    scheduled = time.monotonic() + rng.random() * interval
    try:
        while scheduled < until:
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = WRITE_KIND if rng.random() < 1 / 3 else rng.choice(READ_KINDS)
            sent = time.monotonic()
            if isinstance(client, Connection):
                status, answer = await send_on(client, kind, rng, limit)
            else:
                status, answer = await send(client, kind, rng, limit)
            samples.append(Sample(kind, time.monotonic() - sent, status, sent - scheduled))
            if answer is not None:
                moved[answer["sku"]] += int(answer["delta"])
            scheduled += interval
    finally:
        if isinstance(client, Connection):
            client.close()


async def writes_scenario(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="brownout-bench-load-") as tmp:
        svc = make_service("sqlite", {}, Path(tmp) / "svc")  # make run's defaults
        svc.start()
        try:
            await svc.wait_ready()
            limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=svc.base, limits=limits, timeout=10.0) as client:
                await seed(client)
                samples: list[Sample] = []
                moved: Counter[str] = Counter()
                levels: Counter[str] = Counter()
                watcher = asyncio.create_task(watch_levels(client, levels))
                url = httpx.URL(svc.base)
                assert svc.proc is not None
                load_before = os.getloadavg()[0]
                cpu_before = cpu_seconds(svc.proc.pid), time.process_time()
                started = time.monotonic()
                until = started + args.seconds
                per_client = args.rate / args.clients
                await asyncio.gather(
                    *(
                        paced_client(
                            client if args.httpx else Connection(url.host, url.port or 80),
                            random.Random(args.seed * 1000 + i),
                            per_client,
                            until,
                            args.timeout,
                            samples,
                            moved,
                        )
                        for i in range(args.clients)
                    )
                )
                elapsed = time.monotonic() - started
                load_after = os.getloadavg()[0]
                cpu_used = (
                    cpu_seconds(svc.proc.pid) - cpu_before[0],
                    time.process_time() - cpu_before[1],
                )
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                final = await service_state(client)
                wrong = []
                for i in range(PRODUCTS):
                    product = (await client.get(f"/products/{sku(i)}")).json()
                    expected = START_STOCK + moved[sku(i)]
                    if product["stock"] != expected or product["stock"] < 0:
                        wrong.append(f"{sku(i)}: stock {product['stock']}, expected {expected}")
                if wrong:
                    problems.append("stock does not add up: " + "; ".join(wrong[:5]))
        finally:
            svc.stop()
    failed = [s for s in samples if s.status == 0 or s.status >= 500]
    if failed:
        problems.append(f"{len(failed)} requests failed (transport error or 5xx)")
    writes = [s.latency * 1000 for s in samples if s.kind == WRITE_KIND]
    lags = [s.lag * 1000 for s in samples]
    return {
        "samples": samples,
        "elapsed": elapsed,
        "levels": dict(levels),
        "final": str(final),
        "load": (load_before, load_after),
        "cpu": (cpu_used[0] / elapsed, cpu_used[1] / elapsed),
        "write_p99": h.percentile(writes, 0.99) if writes else float("nan"),
        "write_max": max(writes) if writes else float("nan"),
        "lag_p99": h.percentile(lags, 0.99) if lags else float("nan"),
    }


def print_writes(args: argparse.Namespace, r: dict[str, Any]) -> None:
    samples: list[Sample] = r["samples"]
    print(
        f"### writes on SQLite: {args.clients} clients, {args.rate:g} req/s target, "
        f"{args.seconds:g} s; achieved {len(samples) / r['elapsed']:.0f} req/s; "
        f"client lag p99 {r['lag_p99']:.1f} ms; load average {r['load'][0]:.2f} before, "
        f"{r['load'][1]:.2f} after; CPU (share of one core) service {r['cpu'][0]:.0%}, "
        f"load generator {r['cpu'][1]:.0%}" + (" (one shared httpx client)" if args.httpx else "")
    )
    print()
    headers = ["requests", "n", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "statuses"]
    rows = [
        ["writes (movements)", *summary(samples, (WRITE_KIND,))],
        ["reads (all)", *summary(samples, READ_KINDS)],
        *[[kind, *summary(samples, (kind,))] for kind in READ_KINDS],
    ]
    print(h.markdown_table(headers, rows))
    print()
    met_p99 = "yes" if r["write_p99"] <= WRITE_P99_MS else "**no**"
    met_max = "yes" if r["write_max"] <= WRITE_MAX_MS else "**no**"
    print(
        f"Targets: write p99 {r['write_p99']:.1f} ms <= {WRITE_P99_MS:g} ms: {met_p99}; "
        f"write max {r['write_max']:.1f} ms <= {WRITE_MAX_MS:g} ms: {met_max}. Levels seen "
        f"on /health (one read a second): {r['levels']}; at the end: {r['final']}."
    )
    print()


# ------------------------------------------------------------------ item 7: overhead

GUARDED = "brownout"
DISABLED = "disabled"


async def closed_loop(
    client: httpx.AsyncClient, kind: str, concurrency: int, seconds: float, seed: int
) -> tuple[float, int, int]:
    """``concurrency`` clients back to back for ``seconds``: (requests/s, requests, failures)."""
    until = time.monotonic() + seconds
    done = 0
    failed = 0

    async def worker(i: int) -> None:
        nonlocal done, failed
        rng = random.Random(seed * 100 + i)
        while time.monotonic() < until:
            status, _ = await send(client, kind, rng, 10.0)
            done += 1
            if not 200 <= status < 300:
                failed += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - started), done, failed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def overhead_scenario(args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # server CPU ms per request
    ratios: dict[str, list[float]] = {READ_KINDS[0]: [], WRITE_KIND: []}
    cpu_ratios: dict[str, list[float]] = {READ_KINDS[0]: [], WRITE_KIND: []}
    paused: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        redis_server = stack.enter_context(h.private_redis())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="brownout-bench-ovh-")))
        envs = {
            GUARDED: {"REDIS_URL": redis_server.url_for(0), "BROWNOUT_DISABLED": ""},
            DISABLED: {"REDIS_URL": redis_server.url_for(1), "BROWNOUT_DISABLED": "1"},
        }
        clients: dict[str, httpx.AsyncClient] = {}
        pids: dict[str, int] = {}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        for variant, env in envs.items():
            svc = make_service(variant, env, tmp / variant)
            stack.callback(svc.stop)
            svc.start()
            await svc.wait_ready()
            assert svc.proc is not None
            pids[variant] = svc.proc.pid
            client = httpx.AsyncClient(base_url=svc.base, limits=limits, timeout=10.0)
            stack.push_async_callback(client.aclose)
            await seed(client)
            clients[variant] = client
        state = await service_state(clients[DISABLED])
        if state.breaker != "disabled":
            problems.append(f"the disabled service's {state}")
        state = await service_state(clients[GUARDED])
        if state.breaker != "closed":
            problems.append(f"the brownout service's {state}")
        for variant, client in clients.items():
            hit = await client.get(f"/products/{sku(0)}")
            if hit.headers.get("x-cache") != "hit":
                problems.append(f"{variant}: GET /products/{{sku}} is not a cache hit")
        cells = [(kind, v) for kind in ratios for v in (GUARDED, DISABLED)]
        for rnd in range(args.warmup + args.rounds):
            order = cells if rnd % 2 == 0 else [(k, v) for k, v in reversed(cells)]
            got: dict[tuple[str, str], tuple[float, float]] = {}
            for kind, variant in order:
                before = cpu_seconds(pids[variant])
                rps, done, failed = await closed_loop(
                    clients[variant], kind, args.concurrency, args.cell_seconds, rnd
                )
                used = cpu_seconds(pids[variant]) - before
                if failed:
                    problems.append(f"{failed} of the {kind} to {variant} failed (round {rnd})")
                got[(kind, variant)] = (rps, used * 1000 / max(done, 1))
            if rnd < args.warmup:
                continue
            for key, (rps, ms) in got.items():
                rates.setdefault(key, []).append(rps)
                cpu.setdefault(key, []).append(ms)
            for kind in ratios:
                ratios[kind].append(got[(kind, GUARDED)][0] / got[(kind, DISABLED)][0])
                cpu_ratios[kind].append(got[(kind, GUARDED)][1] / got[(kind, DISABLED)][1])
        # its own client: requests stuck on Redis while the breaker trips must not queue
        # the following ones behind a full connection pool in this process
        wide = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=clients[GUARDED].base_url, limits=wide) as c:
            paused = await paused_phase(args, redis_server, c, problems)
    return {"rates": rates, "cpu": cpu, "ratios": ratios, "cpu_ratios": cpu_ratios, **paused}


async def paused_phase(
    args: argparse.Namespace, redis_server: Any, client: httpx.AsyncClient, problems: list[str]
) -> dict[str, Any]:
    """SIGSTOP the private Redis under open-loop ``GET /products/{sku}`` load; the samples
    scheduled once ``/health`` shows the cache breaker open are the measured ones."""
    samples: list[tuple[float, float]] = []  # (scheduled, ms; inf for a failure)
    opened_at: float | None = None
    redis_server.pause()
    paused_at = time.monotonic()
    try:
        load = asyncio.create_task(
            open_loop_gets(client, args.paused_rate, args.paused_seconds + 30, samples)
        )
        deadline = paused_at + 30
        while (state := await service_state(client)).breaker != "open":
            if time.monotonic() > deadline:
                problems.append(f"the cache breaker did not open ({state})")
                break
            await asyncio.sleep(0.1)
        else:
            opened_at = time.monotonic()
            await asyncio.sleep(args.paused_seconds)
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
    finally:
        redis_server.resume()
    measured = [ms for at, ms in samples if opened_at is not None and at >= opened_at]
    return {
        "paused": measured,
        "tripped_after": None if opened_at is None else opened_at - paused_at,
        "tripping": [ms for at, ms in samples if opened_at is None or at < opened_at],
    }


async def open_loop_gets(
    client: httpx.AsyncClient, rate: float, seconds: float, out: list[tuple[float, float]]
) -> None:
    """``GET /products/{sku}`` every 1/rate s for ``seconds`` (or until cancelled); latency
    from the scheduled instant (a lagging generator shows as latency); failures: inf."""
    rng = random.Random(7)
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, path: str) -> None:
        try:
            r = await client.get(path, timeout=10.0)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        out.append((scheduled, (time.monotonic() - scheduled) * 1000 if ok else float("inf")))

    start = time.monotonic()
    try:
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled, f"/products/{sku(rng.randrange(50))}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        if tasks:  # let the requests in flight finish (they are measured)
            await asyncio.wait(set(tasks), timeout=15)


def print_overhead(args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(
        f"### overhead: brownout vs `BROWNOUT_DISABLED=1`, {args.concurrency} closed-loop "
        f"clients, {args.cell_seconds:g} s per cell, {args.rounds} rounds "
        f"(+{args.warmup} warm-up), interleaved (order reversed every other round)"
    )
    print()
    headers = [
        "request",
        "brownout req/s",
        "disabled req/s",
        "req/s ratio (median of rounds)",
        "overhead (req/s)",
        "server CPU ms/req brownout / disabled",
        "overhead (CPU/req)",
        "met (<= 5 %)",
    ]
    rows = []
    for kind, ratios in r["ratios"].items():
        ratio = statistics.median(ratios)
        cpu_ratio = statistics.median(r["cpu_ratios"][kind])
        overhead = 1 - ratio
        rows.append(
            [
                kind,
                f"{statistics.median(r['rates'][(kind, GUARDED)]):.0f}",
                f"{statistics.median(r['rates'][(kind, DISABLED)]):.0f}",
                f"{ratio:.3f} ({min(ratios):.2f}-{max(ratios):.2f})",
                f"{overhead:+.1%}",
                f"{statistics.median(r['cpu'][(kind, GUARDED)]):.2f} / "
                f"{statistics.median(r['cpu'][(kind, DISABLED)]):.2f}",
                f"{cpu_ratio - 1:+.1%}",
                "yes" if overhead <= OVERHEAD_MAX else "**no**",
            ]
        )
    print(h.markdown_table(headers, rows))
    print()
    paused = r["paused"]
    if r["tripped_after"] is not None:
        after = r["tripped_after"]
        print(f"Redis paused (SIGSTOP): the cache breaker read open {after:.1f} s later.")
    if paused:
        finite = [x for x in paused if x != float("inf")]
        p99 = h.percentile(paused, 0.99)
        print(
            f"Breaker open: `GET /products/{{sku}}` at {args.paused_rate:g} req/s open loop for "
            f"{args.paused_seconds:g} s: n {len(paused)}, failed {len(paused) - len(finite)}, "
            f"p50 {statistics.median(paused):.1f} ms, p99 {p99:.1f} ms, max {max(paused):.1f} "
            f"ms; target p99 <= {PAUSED_P99_MS:g} ms: "
            f"{'yes' if p99 <= PAUSED_P99_MS else '**no**'}"
        )
    tripping = r["tripping"]
    if tripping:
        print(
            f"While tripping (before the breaker read open): n {len(tripping)}, p50 "
            f"{statistics.median(tripping):.1f} ms, max {max(tripping):.1f} ms."
        )
    print()


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--scenario", choices=("writes", "overhead", "both"), default="both")
    p.add_argument("--clients", type=int, default=16, help="writes: paced clients (16)")
    p.add_argument("--rate", type=float, default=240.0, help="writes: requests/s in all (240)")
    p.add_argument("--seconds", type=float, default=30.0, help="writes: s of load (30)")
    p.add_argument("--timeout", type=float, default=10.0, help="s per request")
    p.add_argument("--concurrency", type=int, default=8, help="overhead: clients per cell (8)")
    p.add_argument("--cell-seconds", type=float, default=3.0, help="overhead: s per cell (3)")
    p.add_argument("--rounds", type=int, default=7, help="overhead: recorded rounds (7)")
    p.add_argument("--warmup", type=int, default=1, help="overhead: discarded rounds (1)")
    p.add_argument("--paused-rate", type=float, default=30.0, help="req/s with Redis paused (30)")
    p.add_argument("--paused-seconds", type=float, default=10.0, help="s with Redis paused")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument(
        "--httpx",
        action="store_true",
        help="writes: one shared httpx client instead of a connection per client (to compare)",
    )
    p.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.cell_seconds, args.rounds, args.warmup = 5.0, 1.0, 2, 0
        args.paused_seconds = 3.0
    info = h.machine_info(LIBRARIES)
    problems: list[str] = []
    results: dict[str, Any] = {}
    try:
        if args.scenario in ("writes", "both"):
            results["writes"] = asyncio.run(writes_scenario(args, problems))
        if args.scenario in ("overhead", "both"):
            results["overhead"] = asyncio.run(overhead_scenario(args, problems))
    except h.SetupError as exc:
        print(f"service_load: {exc}", file=sys.stderr)
        return 2
    print(h.header_line(info))
    print()
    if "writes" in results:
        print_writes(args, results["writes"])
    if "overhead" in results:
        print_overhead(args, results["overhead"])
    h.print_problems(problems)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
