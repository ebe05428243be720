"""``inventario serve --workers N`` (issue 13 item 1), with real processes.

Each test starts the supervisor as a child process; its workers are uvicorn's spawned
processes. Which worker answered is read from ``/about``'s ``pid`` (each request on a
new connection: the kernel hands connections to whichever worker accepts first).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing import eventually
from brownout.testing.servers import free_port, wait_until
from brownout.testing.servers.postgres import PostgresServer
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server
from inventario.app import STOP_SECONDS
from inventario.config import Settings
from tests.e2e.test_durability_e2e import movement_rows, stock_of
from tests.e2e.test_graceful_shutdown import begin_request, read_response, refuses_connections
from tests.inventario.conftest import WIDGET

HEARTBEAT = 0.2
DWELL = 0.5
SHUTDOWN = 3.0  # SHUTDOWN_TIMEOUT for the SIGTERM test


class Workers:
    """``inventario serve --workers N`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path, workers: int) -> None:
        self.port = free_port()
        self.env = env
        self.log = log
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        before = self.log.stat().st_size if self.log.exists() else 0  # an earlier run's
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inventario", "serve", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

        def alive() -> None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"inventario exited:\n{self.log.read_text()[-3000:]}")

        # every worker started (uvicorn logs it once per worker)
        eventually(
            lambda: (
                self.log.read_text()[before:].count("Application startup complete") >= self.workers
            ),
            timeout=90,
            what=f"{self.workers} workers to start",
            check=alive,
        )

    def about(self) -> dict[str, object]:
        with httpx.Client(timeout=10) as client:  # a new connection: any worker may take it
            doc: dict[str, object] = client.get(f"{self.url}/about").json()
            return doc

    def pids_answering(self, want: int) -> set[int]:
        """The worker pids seen answering, until ``want`` of them were (or 200 tries)."""
        seen: set[int] = set()
        for _ in range(200):
            pid = self.about()["pid"]
            assert isinstance(pid, int)
            seen.add(pid)
            if len(seen) >= want:
                break
        return seen

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def serve_workers(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    started: list[Workers] = []

    def make(workers: int = 2, **settings: str) -> Workers:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env["VAR_DIR"] = str(tmp_path / "var")
        env.update(settings)
        service = Workers(env, tmp_path / "service.log", workers)
        started.append(service)
        service.start()
        return service

    yield make
    for service in started:
        service.stop()


def lease_holder(path: Path) -> int | None:
    """The pid holding an ``flock`` on ``path`` (from /proc/locks), if any."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
            return int(fields[-4])
    return None


def shared_breakers(path: Path) -> set[tuple[str, str]]:
    """(name, state) of each breaker row the workers share through ``path``."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {(r[0], r[1]) for r in db.execute("SELECT name, state FROM breakers")}


def test_two_workers_both_serve_and_a_second_service_is_refused(
    serve_workers: Callable[..., Workers], tmp_path: Path
) -> None:
    service = serve_workers(2)  # the embedded defaults: SQLite under VAR_DIR
    assert service.proc is not None
    pids = service.pids_answering(2)
    assert len(pids) == 2, pids
    assert service.proc.pid not in pids  # the supervisor serves nothing itself
    # a write on one worker is read on the other (one database, one VAR_DIR)
    r = httpx.post(f"{service.url}/products", json={**WIDGET, "sku": "W-1"}, timeout=10)
    assert r.status_code == 201, r.text
    for _ in range(6):
        assert httpx.get(f"{service.url}/products/W-1", timeout=10).status_code == 200

    env = {**service.env, "PORT": str(free_port())}
    second = subprocess.run(
        [sys.executable, "-m", "inventario", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second
    assert f"another inventario (pid {service.proc.pid}) is already running" in second.stderr


def test_writes_queued_while_the_database_is_away_are_applied_once_by_two_workers(
    serve_workers: Callable[..., Workers],
    make_postgres: Callable[..., PostgresServer],
    tmp_path: Path,
) -> None:
    server = make_postgres()
    dsn = server.create_database("workers")
    sku = "WQ-1"
    service = serve_workers(
        2, DATABASE_URL=dsn, HEARTBEAT=str(HEARTBEAT), RECOVERY_DWELL=str(DWELL)
    )
    r = httpx.post(f"{service.url}/products", json={**WIDGET, "sku": sku, "stock": 0}, timeout=10)
    assert r.status_code == 201, r.text

    server.stop()  # writes are queued, by both workers, into the one outbox
    accepted: dict[str, int] = {}
    for i in range(40):
        key = f"wq-{i}"
        with httpx.Client(base_url=service.url, timeout=10) as client:  # any worker
            r = client.post(
                f"/products/{sku}/movements",
                json={"kind": "in", "quantity": 1 + i % 3, "reason": key},
                headers={"Idempotency-Key": key},
            )
        assert r.status_code == 202, r.text
        accepted[key] = 1 + i % 3
    assert service.about()["outbox"]["pending"] == 40  # type: ignore[index]
    # the workers share their breakers (HostShare, in VAR_DIR): the database's is open
    assert ("database", "open") in shared_breakers(tmp_path / "var" / "breakers.db")

    server.start()
    eventually(
        lambda: service.about()["outbox"]["pending"] == 0,  # type: ignore[index]
        timeout=60,
        what="the outbox drained",
    )
    assert movement_rows(server, "workers", sku) == dict.fromkeys(accepted, 1)
    assert stock_of(server, "workers", sku) == sum(accepted.values())
    assert service.about()["outbox"]["dead_letters"] == 0  # type: ignore[index]


def test_kill_9_of_the_draining_worker_loses_nothing_and_applies_nothing_twice(
    serve_workers: Callable[..., Workers],
    postgres_server: PostgresServer,
    postgres_proxy: ThreadedFaultProxy,
    tmp_path: Path,
) -> None:
    """The worker holding the outbox's drain lease is killed inside its replay
    transaction (held on a row lock); the other worker (or the one uvicorn starts in
    its place) takes the lease when the kernel drops it, and applies each write once.
    The database is cut at a fault proxy, so the row can be locked before it returns."""
    name = f"killed_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    sku = "WK-1"
    service = serve_workers(
        2,
        DATABASE_URL=postgres_server.dsn_for(name, port=postgres_proxy.port),
        HEARTBEAT=str(HEARTBEAT),
        RECOVERY_DWELL=str(DWELL),
    )
    r = httpx.post(f"{service.url}/products", json={**WIDGET, "sku": sku, "stock": 0}, timeout=10)
    assert r.status_code == 201, r.text
    postgres_proxy.set_mode(Mode.REFUSE)
    accepted: dict[str, int] = {}
    for i in range(20):
        key = f"wk-{i}"
        with httpx.Client(base_url=service.url, timeout=10) as client:
            r = client.post(
                f"/products/{sku}/movements",
                json={"kind": "in", "quantity": 1 + i % 4, "reason": key},
                headers={"Idempotency-Key": key},
            )
        assert r.status_code == 202, r.text
        accepted[key] = 1 + i % 4

    lease = tmp_path / "var" / "outbox.lease"
    with psycopg.connect(postgres_server.dsn_for(name)) as lock:  # not through the proxy
        lock.execute("SELECT stock FROM products WHERE sku = %s FOR UPDATE", (sku,))
        postgres_proxy.set_mode(Mode.PASS)

        # another connection, autocommit: pg_stat_activity is one snapshot per transaction
        watch = psycopg.connect(postgres_server.dsn_for(name), autocommit=True)

        def replay_waits() -> bool:
            row = watch.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
            return bool(row and row[0])

        try:
            eventually(replay_waits, timeout=60, what="a replay to wait on the row lock")
        finally:
            watch.close()
        holder = lease_holder(lease)
        assert service.proc is not None
        assert holder is not None and holder != service.proc.pid
        os.kill(holder, signal.SIGKILL)
        # the kernel ends the lease with the process
        eventually(lambda: lease_holder(lease) != holder, timeout=30, what="the lease freed")
        lock.rollback()
    eventually(
        lambda: service.about()["outbox"]["pending"] == 0,  # type: ignore[index]
        timeout=90,
        what="the outbox drained",
    )
    assert movement_rows(postgres_server, name, sku) == dict.fromkeys(accepted, 1)
    assert stock_of(postgres_server, name, sku) == sum(accepted.values())
    # uvicorn's supervisor replaced the killed worker: two serve again
    eventually(lambda: len(service.pids_answering(2)) == 2, timeout=60, what="two workers")
    assert holder not in service.pids_answering(2)


def test_invoices_spooled_by_two_workers_are_uploaded_once(
    serve_workers: Callable[..., Workers],
    s3_server: S3Server,
    fresh_bucket: str,
) -> None:
    """Invoices uploaded to both workers while no S3 is configured wait in the one spool
    directory; restarted with S3, both workers' uploaders start draining it at once, and
    each file is uploaded once: the bucket keeps every version of an object, and each has
    one. (S3 is absent rather than cut: an upload whose HEAD check an opening breaker
    interrupts is uploaded again, the same bytes to the same key, by design; that
    retry is not what this test is about.)"""
    s3 = s3_server.client()
    s3.put_bucket_versioning(Bucket=fresh_bucket, VersioningConfiguration={"Status": "Enabled"})
    service = serve_workers(2, HEARTBEAT=str(HEARTBEAT), RECOVERY_DWELL=str(DWELL))
    pids: set[object] = set()
    uploaded = 0
    # at least 12, and on until both workers took some (the kernel picks who accepts)
    while uploaded < 12 or (len(pids) < 2 and uploaded < 80):
        with httpx.Client(base_url=service.url, timeout=30) as client:
            body = f"ACME invoice {uploaded}\nW-1 Widget    {uploaded + 1} x 2.50\n".encode()
            name = f"invoice-{uploaded}.txt"
            r = client.post("/invoices", files={"file": (name, body, "text/plain")})
            assert r.status_code == 201, r.text
            pids.add(client.get("/about").json()["pid"])
        uploaded += 1
    assert len(pids) == 2, pids  # both workers spooled some
    assert service.about()["spool"]["files"] == uploaded  # type: ignore[index]
    service.stop()

    with_s3 = serve_workers(
        2,
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        S3_BUCKET=fresh_bucket,
        S3_REGION=s3_server.region,
        S3_ACCESS_KEY_ID=s3_server.access_key,
        S3_SECRET_ACCESS_KEY=s3_server.secret_key,
        HEARTBEAT=str(HEARTBEAT),
        RECOVERY_DWELL=str(DWELL),
    )
    eventually(
        lambda: with_s3.about()["spool"]["files"] == 0,  # type: ignore[index]
        timeout=90,
        what="the spool drained",
    )
    versions = s3.list_object_versions(Bucket=fresh_bucket).get("Versions", [])
    keys = [v["Key"] for v in versions]
    assert len(keys) == uploaded and len(set(keys)) == uploaded, keys  # each put once


def test_sigterm_to_the_supervisor_stops_every_worker_gracefully(
    serve_workers: Callable[..., Workers],
) -> None:
    """SIGTERM to the supervisor: new connections are refused, a request in flight on a
    worker finishes, every worker runs its shutdown, all within the bound."""
    service = serve_workers(2, SHUTDOWN_TIMEOUT=str(SHUTDOWN))
    assert service.proc is not None
    body = json.dumps({**WIDGET, "sku": "GRACE-W"}).encode()
    conn = begin_request(service.port, body)
    os.kill(service.proc.pid, signal.SIGTERM)
    wait_until(lambda: refuses_connections(service.port), timeout=20, what="listener closed")
    conn.sendall(body)
    status, payload = read_response(conn)
    conn.close()
    assert status == 201, payload
    code = service.proc.wait(timeout=SHUTDOWN + STOP_SECONDS + 20)
    assert code == 0, code
    log = service.log.read_text()
    assert log.count("Application shutdown complete") == 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def pid_alive(pid: int) -> bool:
    """``pid`` runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_stop_gracefully_when_their_supervisor_is_killed(
    serve_workers: Callable[..., Workers],
) -> None:
    """kill -9 of the supervisor: its workers stop as on SIGTERM (a request in flight
    finishes, each runs its shutdown) instead of serving on unsupervised, and a new
    service then starts on the same VAR_DIR."""
    service = serve_workers(2, SHUTDOWN_TIMEOUT=str(SHUTDOWN))
    assert service.proc is not None
    workers = service.pids_answering(2)
    assert len(workers) == 2, workers
    body = json.dumps({**WIDGET, "sku": "ORPHAN-W"}).encode()
    conn = begin_request(service.port, body)
    service.proc.kill()  # kill -9: no SIGTERM passed on by the supervisor
    service.proc.wait(10)
    conn.sendall(body)
    status, payload = read_response(conn)
    conn.close()
    assert status == 201, payload  # the request in flight finished
    eventually(
        lambda: not any(pid_alive(pid) for pid in workers),
        timeout=SHUTDOWN + STOP_SECONDS + 20,
        what="the orphaned workers to exit",
    )
    log = service.log.read_text()
    assert log.count("Application shutdown complete") == 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    service.start()  # no orphan holds workers.lock: the VAR_DIR is free again
    r = httpx.get(f"{service.url}/products/ORPHAN-W", timeout=10)
    assert r.status_code == 200, r.text


def test_a_new_service_is_refused_while_workers_of_an_earlier_one_still_run(
    tmp_path: Path,
) -> None:
    """A worker of a dead supervisor that is still stopping (it holds ``workers.lock``
    shared until it exits) keeps a new service off its VAR_DIR."""
    var = tmp_path / "var"
    var.mkdir()
    lock = os.open(var / "workers.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)  # what a live worker holds
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env["VAR_DIR"] = str(var)
    try:
        again = subprocess.run(
            [sys.executable, "-m", "inventario", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(lock)
    assert again.returncode == 2, again
    assert "workers of an earlier inventario still run on VAR_DIR" in again.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor_with_status_3(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "outbox.db").write_bytes(b"not a SQLite database" * 100)  # refused at start-up
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env["VAR_DIR"] = str(var)
    result = subprocess.run(
        [sys.executable, "-m", "inventario", "serve", "--port", str(free_port()),
         "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result
    assert "outbox journal" in result.stderr + result.stdout, result


def test_no_worker_serves_a_cached_read_while_another_workers_invalidation_is_pending(
    serve_workers: Callable[..., Workers],
    make_redis: Callable[..., RedisServer],
    make_proxy: Callable[..., ThreadedFaultProxy],
    tmp_path: Path,
) -> None:
    """A product is cached; Redis is cut; a rename is written to the database by one
    worker, whose DEL fails: the key is journaled in the shared coherence.db. Redis comes
    back still holding the old entry. Until that key is deleted, no worker may serve it:
    every read, on either worker, has the new name. (The breakers shared through
    breakers.db also order this case: here the recording worker owns the open breaker,
    so it reconciles before the other's closes. tests/test_shared_workers.py has the
    two-journal case that fails without the shared journal.)"""
    redis_py = pytest.importorskip("redis")
    redis = make_redis()
    proxy = make_proxy(redis)
    service = serve_workers(
        2,
        REDIS_URL=redis.url_for(port=proxy.port),
        HEARTBEAT=str(HEARTBEAT),
        RECOVERY_DWELL=str(DWELL),
    )
    sku = "WC-1"
    r = httpx.post(f"{service.url}/products", json={**WIDGET, "sku": sku}, timeout=10)
    assert r.status_code == 201, r.text

    def cached() -> bool:
        return httpx.get(f"{service.url}/products/{sku}", timeout=10).headers.get("x-cache") == (
            "hit"
        )

    eventually(cached, timeout=30, what="the product cached")

    proxy.set_mode(Mode.REFUSE)
    r = httpx.patch(f"{service.url}/products/{sku}", json={"name": "Renamed"}, timeout=30)
    assert r.status_code == 200, r.text
    journal = tmp_path / "var" / "coherence.db"
    with contextlib.closing(sqlite3.connect(journal)) as db:
        (pending,) = db.execute("SELECT COUNT(*) FROM pending").fetchone()
    assert pending == 1  # the DEL failed: journaled for later
    direct = redis_py.Redis.from_url(redis.url)  # straight to Redis, not through the proxy
    key = f"inventario:product:{sku}"

    def stale_in_redis() -> bool:
        value = direct.get(key)
        return value is not None and b"Renamed" not in value

    try:
        assert stale_in_redis()  # the old entry is still there
        proxy.set_mode(Mode.PASS)
        names: list[str] = []
        deadline = time.monotonic() + 60
        while stale_in_redis() and time.monotonic() < deadline:
            with httpx.Client(timeout=10) as client:  # a new connection: either worker
                names.append(client.get(f"{service.url}/products/{sku}").json()["name"])
        assert not stale_in_redis(), "never invalidated"
    finally:
        direct.close()
    for _ in range(10):  # and after: cached again, with the new name
        names.append(httpx.get(f"{service.url}/products/{sku}", timeout=10).json()["name"])
    assert set(names) == {"Renamed"}, names
