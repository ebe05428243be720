"""FaultProxy and ThreadedFaultProxy against a tiny echo server: every mode really behaves."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from brownout.chaos import FaultProxy, Mode, ProxyStats, ThreadedFaultProxy
from brownout.testing import aeventually

# Generous bounds for waiting on things that should happen; never asserted as speed.
EVENTUALLY = 10.0
SILENCE = 0.3  # how long "no answer" is watched for


# -- helpers ----------------------------------------------------------------------------


class EchoServer:
    """An asyncio echo server that closes its side on EOF."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), EVENTUALLY)
        await asyncio.sleep(0)


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port, max_lifetime=120) as p:
        yield p


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def assert_dropped(port: int) -> None:
    """A new connection is reset or closed by the proxy (the RST may even beat connect())."""
    try:
        async with connect(port) as (reader, writer):
            writer.write(b"hello")
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await writer.drain()
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), EVENTUALLY)
    except ConnectionResetError:
        pass


async def read_or_reset(reader: asyncio.StreamReader) -> bytes:
    """Read until EOF; a reset counts as EOF."""
    try:
        return await asyncio.wait_for(reader.read(), EVENTUALLY)
    except ConnectionResetError:
        return b""


# -- PASS -------------------------------------------------------------------------------


async def test_pass_forwards_both_ways(proxy: FaultProxy, echo: EchoServer) -> None:
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(5), EVENTUALLY) == b"hello"
        stats = proxy.stats
        assert stats.connections_total == 1
        assert stats.active == 1
        assert stats.bytes_up == 5
        assert stats.bytes_down == 5
    await aeventually(lambda: proxy.stats.active == 0, what="the connection to be closed")
    assert echo.connections == 1


async def test_pass_forwards_large_payload_and_half_close(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with connect(proxy.port) as (reader, writer):

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.read(), EVENTUALLY)  # until EOF
        await sender
    assert received == payload
    assert proxy.stats.bytes_up == len(payload)
    assert proxy.stats.bytes_down == len(payload)


async def test_address_properties(proxy: FaultProxy) -> None:
    assert proxy.host == "127.0.0.1"
    assert proxy.port > 0
    assert proxy.address == ("127.0.0.1", proxy.port)
    assert proxy.mode is Mode.PASS
    assert proxy.running


# -- LATENCY ----------------------------------------------------------------------------


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.LATENCY, upstream_delay=0.2, downstream_delay=0.1)
    assert proxy.upstream_delay == 0.2
    assert proxy.downstream_delay == 0.1
    async with connect(proxy.port) as (reader, writer):
        started = time.monotonic()
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), EVENTUALLY) == b"ping"
        elapsed = time.monotonic() - started
    assert elapsed >= 0.3 - 0.005


async def test_latency_applies_to_existing_connections_and_pass_removes_it(
    proxy: FaultProxy,
) -> None:
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"a"

        proxy.set_mode(Mode.LATENCY, upstream_delay=0.15)
        started = time.monotonic()
        writer.write(b"b")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"b"
        assert time.monotonic() - started >= 0.15 - 0.005

        proxy.set_mode(Mode.PASS)
        writer.write(b"c")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"c"
    assert proxy.stats.connections_total == 1


# -- BLACKHOLE --------------------------------------------------------------------------


async def test_blackhole_new_connection_never_answers(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.set_mode(Mode.BLACKHOLE)
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"anyone there?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), SILENCE)
        await aeventually(lambda: proxy.stats.bytes_up == 13, what="the proxy to read the bytes")
    assert proxy.stats.connections_total == 1
    assert proxy.stats.bytes_down == 0
    assert echo.connections == 0  # never reached the server


async def test_blackhole_stalls_existing_connection_until_pass(proxy: FaultProxy) -> None:
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"1"

        proxy.set_mode(Mode.BLACKHOLE)
        writer.write(b"2")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), SILENCE)

        proxy.set_mode(Mode.PASS)  # the stalled bytes flow again
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"2"


async def test_connections_opened_in_blackhole_are_reset_when_it_ends(proxy: FaultProxy) -> None:
    proxy.set_mode(Mode.BLACKHOLE)
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"x")
        await aeventually(lambda: proxy.stats.active == 1, what="the blackholed connection")
        proxy.set_mode(Mode.PASS)
        assert await read_or_reset(reader) == b""
    await aeventually(lambda: proxy.stats.active == 0, what="the sink to be closed")
    # and new connections work again
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"ok")
        assert await asyncio.wait_for(reader.readexactly(2), EVENTUALLY) == b"ok"


# -- RESET ------------------------------------------------------------------------------


async def test_reset_kills_existing_connection(proxy: FaultProxy) -> None:
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"1"
        proxy.set_mode(Mode.RESET)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), EVENTUALLY)
    await aeventually(lambda: proxy.stats.active == 0, what="the connection to be dropped")


async def test_reset_new_connections_get_rst(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.set_mode(Mode.RESET)
    for _ in range(3):
        await assert_dropped(proxy.port)
    assert proxy.stats.connections_total == 3
    assert proxy.stats.active == 0
    assert echo.connections == 0
    proxy.set_mode(Mode.PASS)
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"back")
        assert await asyncio.wait_for(reader.readexactly(4), EVENTUALLY) == b"back"


# -- REFUSE -----------------------------------------------------------------------------


async def test_refuse_then_pass_relistens_on_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    async with connect(port) as (reader, writer):
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"1"
        proxy.set_mode(Mode.REFUSE)
        assert await read_or_reset(reader) == b""  # existing connection dropped too

    before = proxy.stats
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert proxy.stats.connections_total == before.connections_total  # saw nothing
    assert proxy.stats.bytes_up == before.bytes_up

    proxy.set_mode(Mode.PASS)
    assert proxy.port == port
    async with connect(port) as (reader, writer):
        writer.write(b"2")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"2"


async def test_refuse_before_start_never_listens(echo: EchoServer) -> None:
    p = FaultProxy("127.0.0.1", echo.port)
    p.set_mode(Mode.REFUSE)
    await p.start()
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", p.port)
        p.set_mode("pass")
        async with connect(p.port) as (reader, writer):
            writer.write(b"z")
            assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"z"
    finally:
        await p.stop()


# -- stats, bounds, lifecycle -----------------------------------------------------------


async def test_stats_snapshot_and_reset(proxy: FaultProxy) -> None:
    for i in range(3):
        async with connect(proxy.port) as (reader, writer):
            writer.write(b"ab")
            assert await asyncio.wait_for(reader.readexactly(2), EVENTUALLY) == b"ab"
        await aeventually(lambda: proxy.stats.active == 0, what=f"connection {i} to close")
    snapshot = proxy.stats
    assert snapshot == ProxyStats(connections_total=3, active=0, bytes_up=6, bytes_down=6)
    proxy.reset_stats()
    assert proxy.stats == ProxyStats()
    assert snapshot.connections_total == 3  # snapshots do not change


async def test_max_connections_rejects_extra(echo: EchoServer) -> None:
    async with (
        FaultProxy("127.0.0.1", echo.port, max_connections=1) as p,
        connect(p.port) as (reader, writer),
    ):
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"1"
        await assert_dropped(p.port)
        assert p.stats.rejected == 1
        assert p.stats.connections_total == 2


async def test_max_lifetime_stops_the_proxy(echo: EchoServer) -> None:
    p = FaultProxy("127.0.0.1", echo.port, max_lifetime=0.05)
    await p.start()
    await asyncio.wait_for(p.wait_stopped(), EVENTUALLY)
    assert not p.running
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", p.port)
    await p.stop()  # idempotent


async def test_stop_closes_open_connections(echo: EchoServer) -> None:
    p = FaultProxy("127.0.0.1", echo.port)
    await p.start()
    async with connect(p.port) as (reader, writer):
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), EVENTUALLY) == b"1"
        await p.stop()
        assert await read_or_reset(reader) == b""
    assert p.stats.active == 0
    with pytest.raises(RuntimeError):
        p.set_mode(Mode.PASS)
    with pytest.raises(RuntimeError):
        await p.start()


async def test_upstream_down_resets_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with FaultProxy("127.0.0.1", dead_port) as p, connect(p.port) as (reader, writer):
        writer.write(b"hello")
        assert await read_or_reset(reader) == b""
    assert p.stats.connections_total == 1


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["upstream_delay", "downstream_delay"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_bad_delay_names_the_field(field: str, value: float) -> None:
    p = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError, match=field):
        p.set_mode(Mode.LATENCY, **{field: value})
    assert p.mode is Mode.PASS


def test_delay_with_other_mode_is_rejected() -> None:
    p = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError, match="LATENCY"):
        p.set_mode(Mode.PASS, upstream_delay=1.0)


def test_mode_names_are_case_insensitive() -> None:
    assert Mode("BLACKHOLE") is Mode.BLACKHOLE
    assert Mode("latency") is Mode.LATENCY


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError):
        FaultProxy("127.0.0.1", 1).set_mode("flaky")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"upstream_port": 0}, "upstream_port"),
        ({"upstream_port": 70000}, "upstream_port"),
        ({"listen_port": -1}, "listen_port"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_lifetime": -1.0}, "max_lifetime"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"upstream_host": ""}, "upstream_host"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"upstream_host": "127.0.0.1", "upstream_port": 1, **kwargs}
    with pytest.raises(ValueError, match=field):
        FaultProxy(**args)  # type: ignore[arg-type]


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = FaultProxy("127.0.0.1", 1).port


# -- ThreadedFaultProxy -----------------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                sock.sendall(data)


class _EchoTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def sync_echo_port() -> Iterator[int]:
    server = _EchoTCPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(EVENTUALLY)


def _roundtrip(port: int, payload: bytes, timeout: float = EVENTUALLY) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_threaded_proxy_modes(sync_echo_port: int) -> None:
    with ThreadedFaultProxy("127.0.0.1", sync_echo_port, max_lifetime=120) as p:
        port = p.port
        assert _roundtrip(port, b"hello") == b"hello"
        assert p.stats.connections_total == 1

        p.set_mode(Mode.LATENCY, upstream_delay=0.1)
        started = time.monotonic()
        assert _roundtrip(port, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.1 - 0.005

        p.set_mode(Mode.BLACKHOLE)
        with pytest.raises(TimeoutError):
            _roundtrip(port, b"void", timeout=SILENCE)

        p.set_mode(Mode.REFUSE)
        before = p.stats
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=EVENTUALLY).close()
        assert p.stats.connections_total == before.connections_total

        p.set_mode(Mode.PASS)
        assert p.port == port
        assert _roundtrip(port, b"again") == b"again"
        assert p.mode is Mode.PASS

        with pytest.raises(ValueError, match="downstream_delay"):
            p.set_mode(Mode.LATENCY, downstream_delay=-1)
    assert not p.running
    p.stop()  # idempotent


def test_threaded_proxy_start_error_is_raised(sync_echo_port: int) -> None:
    with ThreadedFaultProxy("127.0.0.1", sync_echo_port) as first:
        second = ThreadedFaultProxy("127.0.0.1", sync_echo_port, listen_port=first.port)
        with pytest.raises(OSError):
            second.start()
        second.stop()


def test_threaded_proxy_mode_switching_from_many_threads(sync_echo_port: int) -> None:
    with ThreadedFaultProxy("127.0.0.1", sync_echo_port) as p:
        modes = [Mode.PASS, Mode.RESET, Mode.BLACKHOLE, Mode.REFUSE, Mode.LATENCY]
        errors: list[BaseException] = []

        def flip(offset: int) -> None:
            try:
                for i in range(20):
                    p.set_mode(modes[(i + offset) % len(modes)])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=flip, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(EVENTUALLY)
        assert errors == []
        p.set_mode(Mode.PASS)
        assert _roundtrip(p.port, b"still fine") == b"still fine"
