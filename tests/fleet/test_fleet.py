"""Three inventario replicas behind haproxy, through a fault timeline under load (issue 13
item 3): nothing lost, nothing applied twice, no stale cached read, no 5xx from a replica
haproxy sent traffic to (with the database down, what the cache misses is read from
each replica's snapshot).

* haproxy (Debian's ``/usr/sbin/haproxy``) with a generated config: round robin, health
  checks on ``/health/ready``, and an ``X-Replica`` header naming the replica that
  answered; its view of each replica (UP/DOWN) is read from its stats socket (CSV)
  every 0.1 s during the run.
* 3 replicas, each ``inventario serve`` as a real child process with its own ``VAR_DIR``
  and port, on a private PostgreSQL, Redis and moto S3, each behind one fault proxy.
* Load: concurrent clients reading products and posting stock movements, each with its
  own ``Idempotency-Key``, retried with the same key until it is accepted (201 or 202).
* Timeline: Redis refused (writes are direct, their invalidations cannot reach Redis);
  Redis back, writes held while every replica's cached reads are checked against
  PostgreSQL; the database refused (writes queued, 202, on every replica); one replica
  ``kill -9``'ed and restarted on its ``VAR_DIR`` during that outage; everything back,
  until every accepted write is applied.

The figures (requests, writes accepted and applied, time to drain, stale reads) are
printed (``pytest -s``) and are the closing note's.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tools.stack import ServiceProcess, service_settings, settings_env

from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing import aeventually, eventually
from brownout.testing.servers import free_port
from tests.inventario.conftest import WIDGET
from tests.servers.plugin import PostgresServer, RedisServer, S3Server, missing

# the timeline is ~40 s, the replicas' start and the drain after it up to 2 minutes more
# on a loaded 2-core machine (the database breaker alone stays open 30 s after it is back)
pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(600)]

HAPROXY = "/usr/sbin/haproxy"
REPLICAS = 3
WORKERS = 2  # inventario serve --workers, per replica
CLIENTS = 6
PAUSE = 0.05  # a client's think time between a read and a write
DATABASE = "inventario"
READ_SKUS = 4  # products only read: cached before the outages
WRITE_SKUS = 4  # products whose stock moves (quantity 1 in: never refused)
STOCK = 100
ADMIN_TOKEN = f"fleet-admin-{uuid.uuid4().hex}"


def haproxy_binary() -> str:
    path = HAPROXY if os.access(HAPROXY, os.X_OK) else shutil.which("haproxy")
    if path is None:
        missing(f"{HAPROXY} not found: install the Debian package haproxy")
    assert path is not None
    return path


HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 1024

defaults
    mode http
    option redispatch
    retries 2
    timeout connect 1s
    timeout client 30s
    timeout server 30s

frontend inventario
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    http-response set-header X-Replica %s
    default-server inter 200ms fall 2 rise 2
{servers}
"""


class HAProxy:
    """haproxy in the foreground on a private port, with its stats socket."""

    def __init__(self, workdir: Path, backends: dict[str, int]) -> None:
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port} check" for name, port in backends.items()
        )
        self.config.write_text(
            HAPROXY_CONFIG.format(socket=self.socket, port=self.port, servers=servers)
        )
        self.log = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, binary: str) -> None:
        check = subprocess.run(
            [binary, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        eventually(lambda: self.socket.exists(), timeout=10.0, what="haproxy's stats socket")

    def states(self) -> dict[str, str]:
        """Each replica's status as haproxy sees it (``UP``, ``DOWN``, ``UP 1/2``, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Answer:
    at: float
    phase: str
    what: str  # "read" | "write" | "check"
    status: int  # 0: no HTTP answer (connection error)
    replica: str | None
    detail: str = ""  # a 5xx's level and body
    source: str = ""  # X-Cache: hit, miss, snapshot (the replica's copy: database down)


@dataclass
class Run:
    """What the clients saw, and haproxy's view of the replicas over time."""

    phase: str = "warm"
    writes_on: bool = True
    stop: bool = False
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # key -> 201 | 202
    queued_by: set[str] = field(default_factory=set)  # replicas that answered 202
    states: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    checked: int = 0

    def was_up(self, replica: str, at: float) -> bool:
        """haproxy had ``replica`` UP at the last poll before ``at`` and the first after."""
        before = [s for t, s in self.states if t <= at]
        after = [s for t, s in self.states if t >= at]
        if not before or not after:
            return False
        return all(s.get(replica, "").startswith("UP") for s in (before[-1], after[0]))


@dataclass
class Fleet:
    haproxy: HAProxy
    replicas: dict[str, ServiceProcess]
    redis: ThreadedFaultProxy
    database: ThreadedFaultProxy
    postgres: PostgresServer

    def sql(self, query: str) -> list[list[str]]:
        out = self.postgres.psql(query, dbname=DATABASE)
        return [line.split("|") for line in out.splitlines() if line]


@pytest.fixture
def fleet(
    tmp_path: Path,
    make_redis: Callable[..., RedisServer],
    make_postgres: Callable[..., PostgresServer],
    s3_server: S3Server,
    fresh_bucket: str,
) -> Iterator[Fleet]:
    binary = haproxy_binary()
    redis = make_redis()
    postgres = make_postgres()
    postgres.create_database(DATABASE)
    with contextlib.ExitStack() as stack:
        proxies = {}
        for name, (host, port) in {
            "redis": (redis.host, redis.port),
            "database": (postgres.host, postgres.port),
            "s3": (s3_server.host, s3_server.port),
        }.items():
            proxies[name] = stack.enter_context(
                ThreadedFaultProxy(host, port, max_lifetime=None, connect_timeout=2.0)
            )
        settings = {
            **service_settings(
                redis=(redis, proxies["redis"]),
                database=(postgres, proxies["database"], DATABASE),
                s3=(s3_server, proxies["s3"], fresh_bucket),
            ),
            "heartbeat": 0.5,
            "recovery_dwell": 1.0,
            "shutdown_timeout": 5.0,
            "workers": WORKERS,
            "admin_token": ADMIN_TOKEN,
        }
        env = settings_env(settings)
        replicas = {}
        for i in range(1, REPLICAS + 1):
            replica = ServiceProcess(env)
            stack.callback(replica.close)
            replicas[f"r{i}"] = replica
        for replica in replicas.values():
            replica.start()
        haproxy = HAProxy(tmp_path, {name: r.port for name, r in replicas.items()})
        stack.callback(haproxy.stop)
        haproxy.start(binary)
        yield Fleet(haproxy, replicas, proxies["redis"], proxies["database"], postgres)


async def client_loop(
    http: httpx.AsyncClient, run: Run, n: int, read_skus: list[str], write_skus: list[str]
) -> None:
    """One client: a read, then (while writes are on) a movement retried with its key."""
    i = 0
    while not run.stop:
        i += 1
        sku = read_skus[(n + i) % len(read_skus)]
        await request(http, run, "read", "GET", f"/products/{sku}")
        await asyncio.sleep(PAUSE)
        if not run.writes_on:
            continue
        key = f"fleet-{n}-{i}-{uuid.uuid4().hex[:8]}"
        sku = write_skus[(n * 7 + i) % len(write_skus)]
        body = {"kind": "in", "quantity": 1, "reason": "fleet"}
        for _ in range(200):  # a client keeps its key until the write is accepted
            r = await request(
                http, run, "write", "POST", f"/products/{sku}/movements", json=body, key=key
            )
            if r is not None and r.status_code in (200, 201, 202):
                # 200: a retry of a write applied meanwhile (its answer replayed)
                run.accepted[key] = r.status_code
                if r.status_code == 202:
                    run.queued_by.add(r.headers.get("X-Replica", "?"))
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"write {key} was never accepted")


async def request(
    http: httpx.AsyncClient,
    run: Run,
    what: str,
    method: str,
    url: str,
    *,
    json: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response | None:
    headers = {"Idempotency-Key": key} if key else {}
    try:
        r = await http.request(method, url, json=json, headers=headers)
    except httpx.TransportError:
        run.answers.append(Answer(time.monotonic(), run.phase, what, 0, None))
        return None
    detail = ""
    if r.status_code >= 500:
        detail = f"{r.headers.get('X-Degradation-Level')} {r.text[:300]}"
    run.answers.append(
        Answer(
            time.monotonic(),
            run.phase,
            what,
            r.status_code,
            r.headers.get("X-Replica"),
            detail,
            r.headers.get("X-Cache", ""),
        )
    )
    return r


async def poll_haproxy(fleet: Fleet, run: Run) -> None:
    while not run.stop:
        states = await asyncio.to_thread(fleet.haproxy.states)
        run.states.append((time.monotonic(), states))
        await asyncio.sleep(0.1)


async def check_cached_reads(fleet: Fleet, run: Run, skus: list[str]) -> None:
    """Every replica, for every product written during the Redis outage: reads until one
    is answered from the cache; any answer older than PostgreSQL is a stale read."""
    truth = {
        sku: int(stock)
        for sku, stock in fleet.sql(
            "SELECT sku, stock FROM products WHERE sku IN ("
            + ", ".join(f"'{s}'" for s in skus)
            + ")"
        )
    }
    async with httpx.AsyncClient(timeout=10.0) as http:
        for name, replica in fleet.replicas.items():
            for sku in skus:

                async def cached(replica: ServiceProcess = replica, sku: str = sku) -> None:
                    r = await http.get(f"{replica.url}/products/{sku}")
                    assert r.status_code == 200, r.text
                    run.checked += 1
                    if r.json()["stock"] != truth[sku]:
                        run.stale.append(
                            f"{name} {sku}: {r.headers.get('X-Cache')} stock "
                            f"{r.json()['stock']}, PostgreSQL {truth[sku]}"
                        )
                    assert r.headers.get("X-Cache") == "hit"

                what = f"a cached read of {sku} on {name}"
                try:
                    await aeventually(cached, timeout=45.0, what=what)
                except AssertionError as exc:
                    why = await diagnose(http, replica)
                    raise AssertionError(f"{exc}; {name}: {why}") from None


async def diagnose(http: httpx.AsyncClient, replica: ServiceProcess) -> str:
    """A replica's level, breakers and cache features, as its ``/health`` tells them."""
    r = await http.get(f"{replica.url}/health", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    body = r.json()
    breakers = {c["name"]: (c["breaker"] or {}).get("state") for c in body["components"]}
    features = {n: f["reason"] for n, f in body["features"].items() if n.startswith("cache")}
    return f"level {body['level']}, breakers {breakers}, features {features}"


async def wait_up(fleet: Fleet, names: list[str]) -> None:
    def up() -> None:
        states = fleet.haproxy.states()
        assert all(states.get(n, "").startswith("UP") for n in names), states

    await aeventually(lambda: asyncio.to_thread(up), timeout=30.0, what="replicas UP")


async def test_fleet_survives_the_fault_timeline_under_load(fleet: Fleet) -> None:
    run = Run()
    names = list(fleet.replicas)
    await wait_up(fleet, names)
    tag = uuid.uuid4().hex[:6].upper()
    read_skus = [f"R{tag}-{i}" for i in range(READ_SKUS)]
    write_skus = [f"W{tag}-{i}" for i in range(WRITE_SKUS)]
    async with httpx.AsyncClient(base_url=fleet.haproxy.url, timeout=15.0) as http:
        for sku in read_skus + write_skus:
            r = await http.post("/products", json={**WIDGET, "sku": sku, "stock": STOCK})
            assert r.status_code == 201, (r.status_code, r.headers.get("X-Replica"), r.text)
        # every product cached (Redis will keep these values through its outage)
        await check_cached_reads(fleet, run, read_skus + write_skus)
        assert run.stale == []

        poller = asyncio.create_task(poll_haproxy(fleet, run))
        clients = [
            asyncio.create_task(client_loop(http, run, n, read_skus, write_skus))
            for n in range(CLIENTS)
        ]
        started = time.monotonic()
        try:
            run.phase = "all up"
            await asyncio.sleep(2.0)

            run.phase = "redis down"
            fleet.redis.set_mode(Mode.REFUSE)
            await asyncio.sleep(4.0)

            run.phase = "redis back"
            run.writes_on = False  # the products' values hold still while they are checked
            await asyncio.sleep(0.5)  # writes in flight finish
            fleet.redis.set_mode(Mode.PASS)
            await check_cached_reads(fleet, run, write_skus)
            run.writes_on = True

            run.phase = "database down"
            fleet.database.set_mode(Mode.REFUSE)
            await asyncio.sleep(3.0)
            run.phase = "replica killed"
            victim = fleet.replicas[names[-1]]
            # SIGKILL to the supervisor and its workers: what is queued stays in its VAR_DIR
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(victim.start)  # same port, same VAR_DIR
            run.phase = "database down, replica restarted"
            await wait_up(fleet, names)
            await asyncio.sleep(2.0)

            run.phase = "all back"
            fleet.database.set_mode(Mode.PASS)
            back = time.monotonic()
            await asyncio.sleep(3.0)
        finally:
            run.stop = True
            results = await asyncio.gather(*clients, return_exceptions=True)
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for result in results:
            if isinstance(result, BaseException):
                raise result
        load_seconds = time.monotonic() - started

        keys = list(run.accepted)
        quoted = ", ".join(f"'{k}'" for k in keys)

        def applied() -> int:
            return int(fleet.sql(f"SELECT count(*) FROM idempotency WHERE key IN ({quoted})")[0][0])

        await aeventually(
            lambda: asyncio.to_thread(lambda: applied() == len(keys)),
            timeout=90.0,
            what="every accepted write applied",
        )
        drained = time.monotonic() - back

    # accepted = applied, exactly once: one movement per key, stock moved by one each
    movements = fleet.sql(
        "SELECT count(*) FROM movements WHERE reason = 'fleet' AND sku IN ("
        + ", ".join(f"'{s}'" for s in write_skus)
        + ")"
    )
    stock = fleet.sql(
        "SELECT sum(stock) FROM products WHERE sku IN ("
        + ", ".join(f"'{s}'" for s in write_skus)
        + ")"
    )
    statuses = Counter(run.accepted.values())
    answers = Counter((a.what, a.status) for a in run.answers)
    # haproxy itself answers 502/503 (no X-Replica) or drops the connection only for the
    # requests in flight on the replica killed
    dropped = [a for a in run.answers if a.status == 0 or (a.status >= 500 and not a.replica)]
    # no 5xx from a replica that haproxy had UP: with the database down a read the cache
    # cannot answer is answered from the replica's snapshot (X-Cache: snapshot), every
    # product of the run being known to it (docs/operations.md, "Running several")
    bad = [a for a in run.answers if a.status >= 500 and a.replica and run.was_up(a.replica, a.at)]
    snapshot_reads = Counter(a.replica for a in run.answers if a.source == "snapshot")
    figures = {
        "seconds under load": round(load_seconds, 1),
        "requests": len(run.answers),
        "writes accepted": len(keys),
        "accepted 201": statuses[201],
        "accepted 202 (queued)": statuses[202],
        "accepted 200 (retry of an applied write)": statuses[200],
        "writes applied": applied(),
        "movements": int(movements[0][0]),
        "replicas that queued": sorted(run.queued_by),
        "drain seconds (database back -> all applied)": round(drained, 1),
        "cached reads checked": run.checked,
        "stale reads": len(run.stale),
        "5xx from a replica haproxy had UP": len(bad),
        "reads answered from the snapshot (by replica)": dict(sorted(snapshot_reads.items())),
        "requests dropped with the killed replica": len(dropped),
        "answers": dict(sorted(answers.items())),
    }
    print("\nfleet figures:")
    for name, value in figures.items():
        print(f"  {name}: {value}")

    assert run.stale == []
    assert applied() == len(keys)
    assert movements == [[str(len(keys))]]
    assert stock == [[str(STOCK * WRITE_SKUS + len(keys))]]
    assert statuses[202] > 0 and statuses[201] > 0
    assert run.queued_by >= set(names), run.queued_by  # queued on every replica
    assert bad == [], [(a.phase, a.what, a.status, a.replica, a.detail) for a in bad[:5]]
    # the restarted replica cannot show its cache coherent while the database is down:
    # its reads were the snapshot's (the case that was a 503 before it)
    assert snapshot_reads[names[-1]] > 0, snapshot_reads
    assert {a.phase for a in dropped} <= {"replica killed"}, dropped[:5]
    assert len(dropped) <= CLIENTS
    async with httpx.AsyncClient(timeout=10.0) as http:
        for replica in fleet.replicas.values():
            r = await http.get(f"{replica.url}/about")
            assert r.json()["outbox"]["pending"] == 0
