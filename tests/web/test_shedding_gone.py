"""A request whose client closes its connection while it waits for a slot leaves the
shedder's queue: it is never served (nobody would read the answer) and is counted as
abandoned. Unit tests on the shedder and the ASGI middleware, then uvicorn over real
sockets."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from typing import Any

import pytest

from brownout.testing import FakeClock
from brownout.web import Criticality, Shedder, SheddingMiddleware

CRITICAL, DEFAULT = Criticality.CRITICAL, Criticality.DEFAULT
LONG = 3600.0


def queued(max_in_flight: int = 1) -> Shedder:
    return Shedder(max_in_flight=max_in_flight, max_queue_wait=LONG, clock=FakeClock())


@pytest.mark.parametrize("criticality", [DEFAULT, CRITICAL])
async def test_a_waiter_whose_client_is_gone_leaves_the_queue_unserved(
    criticality: Criticality,
) -> None:
    shedder = queued()
    assert await shedder.acquire(DEFAULT) is None  # the one slot is taken
    gone = asyncio.Event()
    task = asyncio.create_task(shedder.acquire(criticality, gone.wait))
    await asyncio.sleep(0)
    assert shedder.queued == 1
    gone.set()
    decision = await task
    assert decision is not None and decision.reason == "gone"
    assert shedder.queued == 0 and shedder.in_flight == 1
    snap = shedder.snapshot()
    assert snap["abandoned"][criticality.value] == 1
    assert snap["shed"][criticality.value] == {"overload": 0, "level": 0}  # not a refusal
    shedder.release(DEFAULT)
    assert shedder.in_flight == 0  # the abandoned one took no slot


async def test_the_watch_is_stopped_once_the_request_is_admitted() -> None:
    shedder = queued()
    assert await shedder.acquire(DEFAULT) is None
    watching: list[asyncio.Task[Any]] = []

    async def gone() -> None:
        watching.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.Event().wait()

    task = asyncio.create_task(shedder.acquire(DEFAULT, gone))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    shedder.release(DEFAULT)
    assert await task is None
    await asyncio.sleep(0)
    assert watching and watching[0].cancelled()
    assert shedder.snapshot()["abandoned"]["default"] == 0


async def test_the_watch_is_not_started_when_the_request_does_not_wait() -> None:
    shedder = queued(max_in_flight=2)
    calls = 0

    async def gone() -> None:
        nonlocal calls
        calls += 1

    assert await shedder.acquire(DEFAULT, gone) is None
    assert calls == 0


def _http_app(seen: list[Any], hold: asyncio.Event | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append((scope["path"], message))
        if hold is not None and scope["path"] == "/hold":
            await hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _discard(message: Any) -> None:
    pass


async def _no_body() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _holding(middleware: SheddingMiddleware, send: Any = _discard) -> asyncio.Task[None]:
    """A ``GET /hold`` in flight (the app holds it): it takes the one slot."""
    first = asyncio.create_task(
        middleware({"type": "http", "method": "GET", "path": "/hold"}, _no_body, send)
    )
    await asyncio.sleep(0.01)
    return first


async def test_middleware_drops_a_queued_request_whose_client_disconnects() -> None:
    seen: list[Any] = []
    hold = asyncio.Event()
    shedder = queued()
    middleware = SheddingMiddleware(_http_app(seen, hold), shedder, lambda m, p: DEFAULT)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    first = await _holding(middleware, send)
    disconnected = asyncio.Event()
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        await disconnected.wait()
        return {"type": "http.disconnect"}

    second = asyncio.create_task(
        middleware({"type": "http", "method": "POST", "path": "/queued"}, receive, send)
    )
    await asyncio.sleep(0.01)
    assert shedder.queued == 1
    disconnected.set()
    await second
    hold.set()
    await first
    await middleware.aclose()
    assert [path for path, _ in seen] == ["/hold"]  # the queued one never reached the app
    assert shedder.snapshot()["abandoned"]["default"] == 1
    assert sum(1 for m in sent if m["type"] == "http.response.start") == 1


async def test_middleware_hands_the_body_it_read_while_waiting_to_the_app() -> None:
    seen: list[Any] = []
    hold = asyncio.Event()
    shedder = queued()
    middleware = SheddingMiddleware(_http_app(seen, hold), shedder, lambda m, p: DEFAULT)

    first = await _holding(middleware)
    body = {"type": "http.request", "body": b'{"quantity": 1}', "more_body": False}
    given = [body]

    async def receive() -> Any:
        if given:
            return given.pop(0)
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    second = asyncio.create_task(
        middleware({"type": "http", "method": "POST", "path": "/queued"}, receive, _discard)
    )
    await asyncio.sleep(0.01)
    assert shedder.queued == 1 and not given  # the watch read the body
    hold.set()
    await asyncio.gather(first, second)
    await middleware.aclose()
    assert seen[-1] == ("/queued", body)  # the app got it all the same
    assert shedder.snapshot()["abandoned"]["default"] == 0


async def test_a_streamed_body_is_not_read_further_while_waiting() -> None:
    seen: list[Any] = []
    hold = asyncio.Event()
    shedder = queued()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            await hold.wait()
        else:
            parts = []
            while True:
                message = await receive()
                parts.append(message["body"])
                if not message.get("more_body"):
                    break
            seen.append(b"".join(parts))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = SheddingMiddleware(app, shedder, lambda m, p: DEFAULT)
    reads = 0
    chunks = [b"a" * 10, b"b" * 10]

    async def receive() -> Any:
        nonlocal reads
        reads += 1
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    first = await _holding(middleware)
    second = asyncio.create_task(
        middleware({"type": "http", "method": "POST", "path": "/upload"}, receive, _discard)
    )
    await asyncio.sleep(0.01)
    assert reads == 1  # one message read, then only waiting
    hold.set()
    await asyncio.gather(first, second)
    await middleware.aclose()
    assert seen == [b"a" * 10 + b"b" * 10]


# ------------------------------------------------------------------ uvicorn, real sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uvicorn_a_client_that_hangs_up_while_queued_is_never_served() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    seen: list[str] = []
    release = threading.Event()
    shedder = Shedder(max_in_flight=1, max_queue_wait=30.0)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        seen.append(scope["path"])
        if scope["path"] == "/hold":
            await asyncio.to_thread(release.wait)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = _free_port()
    config = uvicorn.Config(
        SheddingMiddleware(app, shedder, lambda m, p: DEFAULT),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        holder = socket.create_connection(("127.0.0.1", port))
        holder.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        while seen != ["/hold"]:
            assert time.monotonic() < deadline, "the first request was not served"
            time.sleep(0.01)
        quitter = socket.create_connection(("127.0.0.1", port))
        quitter.sendall(b"GET /quit HTTP/1.1\r\nHost: x\r\n\r\n")
        while shedder.queued != 1:
            assert time.monotonic() < deadline, "the second request did not queue"
            time.sleep(0.01)
        quitter.close()  # the client gives up while its request waits
        while shedder.snapshot()["abandoned"]["default"] != 1:
            assert time.monotonic() < deadline, "the hang-up was not seen"
            time.sleep(0.01)
        assert shedder.queued == 0
        release.set()
        assert holder.recv(1024).startswith(b"HTTP/1.1 200")
        holder.close()
        stayer = socket.create_connection(("127.0.0.1", port))
        stayer.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stayer.recv(1024).startswith(b"HTTP/1.1 200")
        stayer.close()
        assert seen == ["/hold", "/after"]  # /quit never reached the application
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


async def test_a_watch_that_fails_is_retrieved_and_the_request_keeps_its_place() -> None:
    """``gone`` raising (a server whose ``receive()`` fails) is not the client leaving:
    the request keeps waiting for its slot and is served, and the watch's exception is
    retrieved (no "Task exception was never retrieved" logged when it is collected)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        shedder = queued()
        assert await shedder.acquire(DEFAULT) is None

        async def gone() -> None:
            raise RuntimeError("receive failed")

        task = asyncio.create_task(shedder.acquire(DEFAULT, gone))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and shedder.queued == 1  # still waiting for its slot
        shedder.release(DEFAULT)
        assert await task is None  # served
        assert shedder.snapshot()["abandoned"]["default"] == 0
        del task
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))]


async def test_prometheus_counts_the_queued_and_the_abandoned_by_class() -> None:
    """docs/overload.md and brownout.prometheus promise
    ``brownout_requests_queued{shedder,criticality}`` (waiting now) and
    ``brownout_requests_abandoned_total{shedder,criticality}`` (client gone first)."""
    from brownout.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()
    shedder = queued()
    metrics.attach(shedder)

    def sample(name: str, criticality: str) -> float | None:
        labels = {"shedder": "edge", "criticality": criticality}
        return metrics.registry.get_sample_value(f"brownout_{name}", labels)

    assert await shedder.acquire(DEFAULT) is None
    gone = asyncio.Event()
    task = asyncio.create_task(shedder.acquire(DEFAULT, gone.wait))
    await asyncio.sleep(0)
    assert sample("requests_queued", "default") == 1.0
    assert sample("requests_queued", "critical") == 0.0
    assert sample("requests_abandoned_total", "default") == 0.0
    gone.set()
    decision = await task
    assert decision is not None and decision.reason == "gone"
    assert sample("requests_queued", "default") == 0.0
    assert sample("requests_abandoned_total", "default") == 1.0
    assert sample("requests_abandoned_total", "sheddable") == 0.0
