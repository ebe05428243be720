"""Nothing accepted is lost: every write answered 202 is applied exactly once.

Two ways to lose one, each on a private PostgreSQL cluster started by the suite:

* the database does not exist yet when the service starts (the late-database test):
  writes are queued, ``createdb`` happens, the service creates its schema by itself
  and applies the queue;
* the service is killed with SIGKILL while writes are queued and again while they are
  replayed (the kill -9 test): the restarted service applies each exactly once.

"Exactly once" is read from PostgreSQL itself: one movement row per accepted key,
and the stock equal to the sum of the accepted movements.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from brownout.testing import aeventually, eventually
from brownout.testing.servers import free_port
from brownout.testing.servers.postgres import PostgresServer
from inventario.app import create_app
from inventario.config import Settings, load_settings
from tests.inventario.conftest import WIDGET, running

HEARTBEAT = 0.2
DWELL = 0.5


def movement_rows(server: PostgresServer, database: str, sku: str) -> dict[str, int]:
    """Reason -> how many movement rows carry it, straight from PostgreSQL (the tests
    give each write its idempotency key as its reason)."""
    out = server.psql(
        f"SELECT reason, COUNT(*) FROM movements WHERE sku = '{sku}' GROUP BY reason",
        dbname=database,
    )
    return {k: int(n) for k, n in (line.split("|") for line in out.splitlines() if line)}


def stock_of(server: PostgresServer, database: str, sku: str) -> int | None:
    out = server.psql(f"SELECT stock FROM products WHERE sku = '{sku}'", dbname=database)
    return int(out.strip()) if out.strip() else None


async def test_late_database_every_accepted_write_is_applied_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Started before ``createdb``, PostgreSQL the only dependency configured."""
    database = f"late_{uuid.uuid4().hex[:12]}"
    settings = load_settings(
        var_dir=tmp_path / "var",
        database_url=postgres_server.dsn_for(database),
        heartbeat=HEARTBEAT,
        recovery_dwell=DWELL,
    )
    sku = f"LATE-{uuid.uuid4().hex[:6].upper()}"
    accepted: dict[str, int] = {}  # key -> delta, for every 201/202 movement
    app = create_app(settings)
    try:
        async with running(app) as client:
            r = await client.post("/products", json={**WIDGET, "sku": sku, "stock": 0})
            assert r.status_code == 202, r.text
            assert "database" in r.json()["detail"]
            create_key = r.headers["Idempotency-Key"]
            for i in range(12):
                key = f"late-{i}"
                r = await client.post(
                    f"/products/{sku}/movements",
                    json={"kind": "in", "quantity": i + 1, "reason": key},
                    headers={"Idempotency-Key": key},
                )
                # PostgreSQL alone configured and missing: the outbox takes the write
                assert r.status_code == 202, r.text
                accepted[key] = i + 1
            assert (await client.get("/writes/late-0")).json()["status"] == "pending"
            # a price change is a write like the others (pricing_update needs the database)
            r = await client.patch(
                f"/products/{sku}", json={"price": "7.25"}, headers={"Idempotency-Key": "price"}
            )
            assert r.status_code == 202, r.text

            postgres_server.create_database(database)

            async def all_applied() -> bool:
                for key in (create_key, *accepted, "price"):
                    status = (await client.get(f"/writes/{key}")).json()
                    if status["status"] == "dead":  # final: fail now, do not wait it out
                        pytest.fail(f"a write went dead: {status}")
                    if status["status"] != "applied":
                        return False
                return True

            await aeventually(
                all_applied, timeout=30, interval=0.1, what="every accepted write applied"
            )

            # the service recovers by itself, and answers directly again
            async def optimal() -> None:
                health = (await client.get("/health")).json()
                if health["level"] != "OPTIMAL":
                    await client.get(f"/products/{sku}")  # traffic the breakers see
                assert health["level"] == "OPTIMAL", health

            await aeventually(optimal, timeout=30, interval=0.1, what="the level back to OPTIMAL")
            r = await client.post(
                f"/products/{sku}/movements",
                json={"kind": "in", "quantity": 100, "reason": "direct"},
            )
            assert r.status_code == 201, r.text
            about = (await client.get("/about")).json()
            assert about["outbox"]["dead_letters"] == 0, about
        rows = movement_rows(postgres_server, database, sku)
        assert rows == {**dict.fromkeys(accepted, 1), "direct": 1}
        assert stock_of(postgres_server, database, sku) == sum(accepted.values()) + 100
        price = postgres_server.psql(
            f"SELECT price FROM products WHERE sku = '{sku}'", dbname=database
        )
        assert price.strip() == "7.25", price
        print(f"late database: accepted {len(accepted) + 2} (202), applied {len(accepted) + 2}")
    finally:
        postgres_server.ensure_running()
        postgres_server.drop_database(database)


# -- kill -9 ----------------------------------------------------------------------------


class ServiceProcess:
    """``inventario serve`` as a child process (so that it can be SIGKILLed)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inventario", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        def alive() -> None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"inventario exited:\n{self.log.read_text()[-3000:]}")

        eventually(up, timeout=30, what="inventario to answer", check=alive)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def make(settings: dict[str, str]) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update(settings)
        service = ServiceProcess(env, tmp_path / "service.log")
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


def test_kill_9_every_accepted_write_is_applied_once(
    tmp_path: Path,
    make_postgres: Callable[..., PostgresServer],
    service_process: Callable[[dict[str, str]], ServiceProcess],
) -> None:
    """SIGKILL right after the last write answered 202 (PostgreSQL stopped), and again in
    the middle of the replay (its transaction held on a row lock). The window between
    the replay's commit and the journal update is tests/outbox/test_crash.py's. (Each
    start of the service costs seconds of imports here: three starts.)"""
    server = make_postgres()
    dsn = server.create_database("killed")
    sku = "KILL-1"
    settings = {
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": dsn,
        "HEARTBEAT": str(HEARTBEAT),
        "RECOVERY_DWELL": str(DWELL),
    }
    service = service_process(settings)
    service.start()
    r = httpx.post(f"{service.url}/products", json={**WIDGET, "sku": sku, "stock": 0})
    assert r.status_code == 201, r.text

    server.stop()  # the database goes away; writes are queued
    accepted: dict[str, int] = {}
    answered: dict[str, Any] = {}
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for i in range(30):
            key = f"k9-{i}"
            r = client.post(
                f"/products/{sku}/movements",
                json={"kind": "in", "quantity": 1 + i % 4, "reason": key},
                headers={"Idempotency-Key": key},
            )
            answered[key] = r.status_code
            if r.status_code in (201, 202):
                accepted[key] = 1 + i % 4
        service.kill9()  # right after the last 202: nothing flushed on exit
        assert set(answered.values()) == {202}, answered

        # the database is back, with the product's row locked: the restarted service's
        # replay transaction waits on it, uncommitted, and is killed right there
        server.start()
        with psycopg.connect(server.dsn_for("killed")) as lock:
            lock.execute("SELECT stock FROM products WHERE sku = %s FOR UPDATE", (sku,))
            service.start()

            def replay_waits() -> bool:
                row = lock.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = 'killed' "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()
                return bool(row and row[0])

            eventually(replay_waits, timeout=60, what="the replay to wait on the row lock")
            service.kill9()
            lock.rollback()
        committed_at_kill = len(movement_rows(server, "killed", sku))
        assert committed_at_kill == 0  # the killed transaction left nothing

        service.start()

        def drained() -> dict[str, Any]:
            outbox: dict[str, Any] = client.get("/about").json()["outbox"]
            assert not outbox["pending"], outbox
            return outbox

        outbox = eventually(drained, timeout=60, interval=0.05, what="the outbox drained")
        assert outbox["dead_letters"] == 0, outbox
    rows = movement_rows(server, "killed", sku)
    assert rows == dict.fromkeys(accepted, 1)
    assert stock_of(server, "killed", sku) == sum(accepted.values())
    print(
        f"kill -9: accepted {len(accepted)} (202), applied {len(rows)} once each; killed "
        "right after the last 202, and again inside the replay's open transaction"
    )
