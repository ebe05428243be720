"""SIGTERM (issue 13 item 4): stop accepting, finish in-flight requests, flush the journals,
exit within a bound; what is still queued stays in ``VAR_DIR`` for the next start.

Each test runs ``inventario serve`` as a child process on its embedded default and sends
it a real SIGTERM. An in-flight request is made observable without sleeping: it is sent
with ``Expect: 100-continue``, and the server answers ``100 Continue`` only once the
application has started reading its body.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from brownout.outbox import Outbox
from brownout.testing.servers import free_port, wait_until
from inventario.app import STOP_SECONDS
from inventario.config import Settings
from tests.e2e.test_durability_e2e import ServiceProcess
from tests.inventario.conftest import WIDGET

SHUTDOWN = 3.0  # SHUTDOWN_TIMEOUT for these tests: seconds in-flight requests get


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def make(**settings: str) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update({"VAR_DIR": str(tmp_path / "var"), "SHUTDOWN_TIMEOUT": str(SHUTDOWN)})
        env.update(settings)
        service = ServiceProcess(env, tmp_path / "service.log")
        started.append(service)
        service.start()
        return service

    yield make
    for service in started:
        service.stop()


def begin_request(port: int, body: bytes) -> socket.socket:
    """Send a POST /products's headers and wait until the application reads its body."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(
        b"POST /products HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    interim = conn.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return conn


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def exited_gracefully(service: ServiceProcess, code: int) -> None:
    """uvicorn re-raises the SIGTERM it caught once its shutdown is complete, so the
    process ends "killed by SIGTERM" (as the supervisor asked), after the lifespan ran."""
    assert code in (0, -signal.SIGTERM), code
    log = service.log.read_text()
    assert "Application shutdown complete" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def terminate(service: ServiceProcess) -> float:
    assert service.proc is not None
    started = time.monotonic()
    os.kill(service.proc.pid, signal.SIGTERM)
    return started


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(
    serve: Callable[..., ServiceProcess],
) -> None:
    service = serve()
    body = json.dumps({**WIDGET, "sku": "GRACE-1"}).encode()
    conn = begin_request(service.port, body)
    terminate(service)
    # the listening socket closes: new connections are refused while the request runs
    wait_until(lambda: refuses_connections(service.port), timeout=10, what="listener closed")
    assert service.proc is not None and service.proc.poll() is None  # still serving it
    conn.sendall(body)
    status, payload = read_response(conn)
    conn.close()
    assert status == 201, payload
    exited_gracefully(service, service.proc.wait(timeout=SHUTDOWN + STOP_SECONDS + 10))


def test_a_request_that_never_ends_does_not_hold_the_exit(
    serve: Callable[..., ServiceProcess],
) -> None:
    service = serve()
    conn = begin_request(service.port, b"{}")  # the body never comes
    started = terminate(service)
    assert service.proc is not None
    service.proc.wait(timeout=SHUTDOWN + STOP_SECONDS + 10)
    took = time.monotonic() - started
    conn.close()
    # it waited for the request (SHUTDOWN_TIMEOUT), then gave up on it
    assert took >= SHUTDOWN - 0.5, took


def test_writes_queued_at_sigterm_stay_in_var_dir_for_the_next_start(
    serve: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # a PostgreSQL that is not there: writes are queued in the outbox (202)
    down = f"postgresql+asyncpg://inventario@127.0.0.1:{free_port()}/inventario"
    service = serve(DATABASE_URL=down)
    answers = [
        httpx.post(f"{service.url}/products", json={**WIDGET, "sku": f"Q-{i}"}, timeout=10)
        for i in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    terminate(service)
    assert service.proc is not None
    exited_gracefully(service, service.proc.wait(timeout=SHUTDOWN + STOP_SECONDS + 10))
    outbox = Outbox(tmp_path / "var" / "outbox.db")
    try:
        assert outbox.stats()["pending"] == 3
    finally:
        outbox.close()
    # the next start on the same VAR_DIR has them, still queued
    again = serve(DATABASE_URL=down)
    about = httpx.get(f"{again.url}/about", timeout=10).json()
    assert about["outbox"]["pending"] == 3, about
