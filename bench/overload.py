"""inventario flooded while Redis is slow: protection on vs ``BROWNOUT_DISABLED=1`` (issue 14, 8).

A benchmark, not a timed test: it prints Markdown tables and exits 0 whether or
not a target is met (1 only if the run is not what it claims to be: a service
did not start, the disabled service kept some of its protection, or the
protected one was built under the kill switch).

Two real ``python -m inventario serve`` subprocesses (uvicorn, one process
each) on the embedded SQLite database and a private ``redis-server`` (databases
0 and 1; never the shared one), each reaching Redis through its own fault
proxy (:class:`brownout.chaos.ThreadedFaultProxy`): the **protected** one as
configured (priority shedding with its queue, Redis admission, cache reads and
invalidations that wait at most ``CACHE_READ_WAIT`` / ``CACHE_INVALIDATE_WAIT``
for Redis) and the **disabled** one with ``BROWNOUT_DISABLED=1``: the kill
switch takes all of that out of the path (docs/overload.md, "Kill switch"):
breakers disabled, no shedding, the Redis bulkhead admits every call, a product
read waits for Redis as long as its client's timeout allows and a write for
its ``DEL``: what a service without brownout does. What stays in both is the
degradation level with its feature gates (the same for both: a level's
decisions, not a guard) and the cache coherence journal (correctness). The
run checks each service's ``explain()`` (``kill_switch``) says so. The
services run one after the other, never at once
(so they do not share the CPU), in ``--rounds`` rounds, alternating which goes
first.

Each phase: the proxy passes; ``--base`` (20) closed-loop clients for
``--seconds`` give what the service serves when healthy; then the proxy holds
every chunk to Redis for ``--redis-latency`` (0.2 s) and ``--factor`` (10) x
``--base`` clients send back to back, for ``--settle`` (10) s unmeasured (the
adaptive limits and the level adapt, as they would in a long incident), then
for ``--seconds`` measured: 20 % ``POST
/products/{sku}/movements`` (critical), 60 % ``GET /products/{sku}``
(default), 20 % ``GET /reports/low-stock`` and ``GET
/products/{sku}/price-suggestion`` (sheddable). A 503 refusal comes back in
microseconds and a closed-loop client would send again at once, so a client
that gets a 503 waits its ``Retry-After`` capped at ``--backoff`` (0.1 s),
as a client honouring it would (less, so the flood stays a flood). A client gives up on
a request after ``--client-timeout`` (default: ``--slo``, 1 s: a later answer is of no
use to it, as for a user who reloads or an upstream with a deadline), closes its
connection and sends its next request on a new one; such a request counts as "other".
The service does not learn of it until it writes the answer, so an unprotected one keeps
working for clients that have left (the collapse the protection is for). ``--client-timeout
10`` gives the patient clients of earlier runs.

Figures per variant: **goodput** (2xx answers within ``--slo`` (1 s) per
second, all classes), and per class the requests, 2xx, 503, other failures,
p50/p99 of the 2xx. Targets: protected critical p99 <= 100 ms, protected
goodput >= 2x the disabled one.

Run: ``.venv/bin/python bench/overload.py [--quick]``; ``--also SHED_MAX_QUEUE_WAIT=0``
adds a protected variant with other settings to the same run (an A/B of a setting).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

try:  # run as a script: bench/ is sys.path[0]
    import _harness as h
    from _http1 import Connection, HTTPError
    from service_latency import ADMIN
    from service_load import PRODUCTS, cpu_seconds, make_service, seed, sku
except ImportError:  # imported as bench.overload
    from bench._http1 import Connection, HTTPError
    from bench.service_latency import ADMIN
    from bench.service_load import PRODUCTS, cpu_seconds, make_service, seed, sku

    from bench import _harness as h

from brownout.chaos import Mode, ThreadedFaultProxy

LIBRARIES = ("brownout", "fastapi", "uvicorn", "httpx", "aiosqlite", "redis")
CRITICAL_P99_MS = 100.0
GOODPUT_RATIO = 2.0
CLASSES = ("critical", "default", "sheddable")
#: What the disabled service must have built unguarded (its explain()'s ``kill_switch``).
UNPROTECTED = frozenset(
    {"breaker:redis", "bulkhead:redis", "shedding", "cache_read_wait", "cache_invalidate_wait"}
)


@dataclass
class Sample:
    cls: str
    latency: float  # s
    status: int  # 0: transport error or timeout


def request(rng: random.Random) -> tuple[str, str, str, dict[str, Any] | None]:
    """(class, method, path, body) of the mix."""
    x = rng.random()
    item = sku(rng.randrange(PRODUCTS))
    if x < 0.2:
        body = {"kind": rng.choice(("in", "out")), "quantity": 1, "reason": "load"}
        return "critical", "POST", f"/products/{item}/movements", body
    if x < 0.8:
        return "default", "GET", f"/products/{item}", None
    if x < 0.9:
        return "sheddable", "GET", "/reports/low-stock", None
    return "sheddable", "GET", f"/products/{item}/price-suggestion", None


async def flood(
    base: str, clients: int, seconds: float, backoff: float, seed_: int, patience: float = 10.0
) -> tuple[list[Sample], float]:
    """``clients`` closed-loop clients, each on its own keep-alive connection (bench._http1:
    httpx's pool cost ~10 ms of this process's CPU per request at 200 clients, so the
    client, not the service, was the bottleneck)."""
    samples: list[Sample] = []
    until = time.monotonic() + seconds
    url = httpx.URL(base)
    host, port = url.host, url.port or 80

    async def worker(i: int) -> None:
        rng = random.Random(seed_ * 1000 + i)
        conn = Connection(host, port)
        try:
            while time.monotonic() < until:
                cls, method, path, body = request(rng)
                start = time.perf_counter()
                try:
                    r = await conn.request(method, path, json_body=body, within=patience)
                    status = r.status_code
                    retry = r.headers.get("retry-after")
                except HTTPError:
                    status, retry = 0, None
                samples.append(Sample(cls, time.perf_counter() - start, status))
                if status == 503:
                    await asyncio.sleep(min(backoff, float(retry or backoff)))
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return samples, time.monotonic() - started


def class_rows(samples: list[Sample], elapsed: float, slo: float) -> tuple[list[list[str]], float]:
    rows = []
    for cls in CLASSES:
        sel = [s for s in samples if s.cls == cls]
        ok = [s.latency * 1000 for s in sel if 200 <= s.status < 300]
        shed = sum(1 for s in sel if s.status == 503)
        other = len(sel) - len(ok) - shed
        p50 = h.percentile(ok, 0.5) if ok else float("nan")
        p99 = h.percentile(ok, 0.99) if ok else float("nan")
        rows.append(
            [cls, str(len(sel)), str(len(ok)), str(shed), str(other), f"{p50:.1f}", f"{p99:.1f}"]
        )
    good = sum(1 for s in samples if 200 <= s.status < 300 and s.latency <= slo)
    return rows, good / elapsed


async def phase(
    variant: str, env: dict[str, str], redis_port: int, db: int, args: argparse.Namespace,
    round_: int, problems: list[str],
) -> dict[str, Any]:  # fmt: skip
    with ThreadedFaultProxy("127.0.0.1", redis_port) as proxy:
        var_dir = Path(tempfile.mkdtemp(prefix=f"bench-overload-{variant}-"))
        svc = make_service(
            variant, {**env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}"}, var_dir
        )
        svc.start()
        try:
            async with httpx.AsyncClient(base_url=svc.base) as client:  # seed, /health
                await seed(client)
                healthy, healthy_s = await flood(svc.base, args.base, args.seconds, 0.0, round_)
                proxy.set_mode(Mode.LATENCY, upstream_delay=args.redis_latency)
                if args.settle > 0:  # the same flood, not measured: limits and level adapt
                    await flood(
                        svc.base, args.base * args.factor, args.settle, args.backoff, round_ + 3
                    )
                cpu0, own0 = cpu_seconds(svc.proc.pid) if svc.proc else 0.0, time.process_time()
                samples, elapsed = await flood(
                    svc.base,
                    args.base * args.factor,
                    args.seconds,
                    args.backoff,
                    round_ + 7,
                    args.client_timeout,
                )
                service_cpu = (cpu_seconds(svc.proc.pid) - cpu0) / elapsed if svc.proc else 0.0
                client_cpu = (time.process_time() - own0) / elapsed
                proxy.set_mode(Mode.PASS)
                health = (await client.get("/health", headers=ADMIN)).json()
        finally:
            svc.stop()
    rows, goodput = class_rows(samples, elapsed, args.slo)
    healthy_ok = sum(1 for s in healthy if 200 <= s.status < 300)
    shed = health.get("explanation", {}).get("shedding", {})
    off = set(health.get("explanation", {}).get("kill_switch", {}).get("off") or ())
    if variant == "disabled":
        if shed.get("disabled") is not True:
            problems.append("the disabled service's shedder is not disabled (BROWNOUT_DISABLED=1)")
        kept = UNPROTECTED - off
        if kept:
            problems.append(f"the disabled service kept {sorted(kept)} (BROWNOUT_DISABLED=1)")
    elif off:
        problems.append(f"the {variant} service was built under the kill switch: {sorted(off)}")
    return {
        "variant": variant,
        "rows": rows,
        "goodput": goodput,
        "healthy_rps": healthy_ok / healthy_s,
        "critical_p99": float(rows[0][6]),
        "level": health.get("level"),
        "peak_in_flight": shed.get("peak_in_flight"),
        "peak_queued": shed.get("peak_queued"),
        "waited": sum((shed.get("waited") or {}).values()),
        "service_cpu": service_cpu,
        "client_cpu": client_cpu,
    }


async def run(args: argparse.Namespace, problems: list[str]) -> list[dict[str, Any]]:
    results = []
    with h.private_redis() as redis:
        variants = [("protected", {}, 0), ("disabled", {"BROWNOUT_DISABLED": "1"}, 1)]
        for i, extra in enumerate(args.also):  # more protected variants, for an A/B in one run
            env = dict(item.split("=", 1) for item in extra.split(","))
            variants.append((f"protected {extra}", env, 2 + i))
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for name, env, db in order:
                print(f"round {r + 1}: {name} ...", file=sys.stderr)
                results.append(await phase(name, env, redis.port, db, args, r, problems))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=int, default=20, help="clients the healthy service serves")
    p.add_argument("--factor", type=int, default=10, help="overload: factor x base clients")
    p.add_argument("--seconds", type=float, default=20.0, help="each load phase")
    p.add_argument("--settle", type=float, default=10.0, help="overload before measuring (s)")
    p.add_argument("--redis-latency", type=float, default=0.2, help="added by the proxy (s)")
    p.add_argument("--backoff", type=float, default=0.1, help="max wait after a 503 (s)")
    p.add_argument("--slo", type=float, default=1.0, help="goodput: 2xx within this (s)")
    p.add_argument(
        "--client-timeout",
        type=float,
        default=None,
        help="a client gives up on a request after this (s), closes its connection and sends "
        "its next one (default: --slo, a reply later than that is no use to it)",
    )
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="VAR=VALUE[,VAR=VALUE]",
        help="one more protected variant with these settings (e.g. SHED_MAX_QUEUE_WAIT=0), "
        "measured in the same run; the targets compare 'protected' and 'disabled' only",
    )
    p.add_argument("--quick", action="store_true", help="--seconds 8 --settle 8")
    args = p.parse_args(argv)
    for extra in args.also:
        if not all("=" in item and item.split("=", 1)[0] for item in extra.split(",")):
            p.error(f"--also {extra!r}: expected VAR=VALUE[,VAR=VALUE]")
    if args.client_timeout is None:
        args.client_timeout = args.slo
    if args.quick:
        args.seconds = 8.0
        args.settle = min(args.settle, 8.0)
    info = h.machine_info(LIBRARIES)
    problems: list[str] = []
    try:
        results = asyncio.run(run(args, problems))
    except h.SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    print(h.header_line(info))
    print()
    print(
        f"{args.base * args.factor} closed-loop clients ({args.factor} x {args.base}), Redis "
        f"+{args.redis_latency * 1000:.0f} ms per chunk through the fault proxy, "
        f"{args.settle:.0f} s unmeasured then {args.seconds:.0f} s measured per phase; "
        f"goodput: 2xx within {args.slo:.1f} s per second; a client gives up after "
        f"{args.client_timeout:g} s"
    )
    print()
    for r in results:
        print(
            f"**{r['variant']}**: goodput {r['goodput']:.0f}/s (healthy, {args.base} clients: "
            f"{r['healthy_rps']:.0f}/s); level at the end {r['level']}; peak in flight "
            f"{r['peak_in_flight']}, peak waiting for a slot {r['peak_queued']} (admitted "
            f"after waiting: {r['waited']}); CPU used (of one core) by the service "
            f"{r['service_cpu']:.0%}, by this client {r['client_cpu']:.0%} (the client near "
            "100 %: it is the bottleneck; both far below it with latencies in seconds: the "
            "machine is busy)"
        )
        print()
        print(
            h.markdown_table(
                ["class", "requests", "2xx", "503", "other", "p50 ms", "p99 ms"], r["rows"]
            )
        )
        print()
    prot = [r for r in results if r["variant"] == "protected"]
    dis = [r for r in results if r["variant"] == "disabled"]
    if prot and dis:
        ratio = sum(r["goodput"] for r in prot) / max(1e-9, sum(r["goodput"] for r in dis))
        worst = max(r["critical_p99"] for r in prot)
        print(
            f"protected critical p99 {worst:.1f} ms (target <= {CRITICAL_P99_MS:.0f}): "
            f"{'met' if worst <= CRITICAL_P99_MS else 'missed'}; goodput protected / disabled "
            f"{ratio:.2f}x (target >= {GOODPUT_RATIO:.0f}x): "
            f"{'met' if ratio >= GOODPUT_RATIO else 'missed'}"
        )
    h.print_problems(problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
