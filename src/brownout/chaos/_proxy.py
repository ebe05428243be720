"""A TCP proxy that injects network faults between a client and a real server.

The proxy is meant for tests and demos: put it between a client library and a real server
(Redis, PostgreSQL, an HTTP API), point the client at the proxy and switch :class:`Mode` at
run time to make the server slow, silent, reset-happy or unreachable, without touching
either side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["FaultProxy", "Mode", "ProxyStats", "ThreadedFaultProxy"]

_log = logging.getLogger("brownout.chaos")

_T = TypeVar("_T")

_CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64
_ACCEPT_BATCH = 64
_BACKLOG = 128


class Mode(enum.StrEnum):
    """What the proxy does with traffic.

    * ``PASS``: forward bytes both ways untouched.
    * ``LATENCY``: forward, but hold every chunk for ``upstream_delay`` (client to server)
      or ``downstream_delay`` (server to client) seconds.
    * ``BLACKHOLE``: accept connections and never answer: bytes on new connections are read
      and dropped, existing connections stall (nothing moves either way until the mode
      changes). Connections opened during the blackhole are reset when it ends.
    * ``RESET``: reset existing connections and every new one (RST where the OS allows).
    * ``REFUSE``: reset existing connections and stop listening, so new connections are
      refused; leaving ``REFUSE`` listens again on the same port.
    """

    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    REFUSE = "refuse"

    @classmethod
    def _missing_(cls, value: object) -> Mode | None:
        if isinstance(value, str):  # Mode("PASS") as well as Mode("pass")
            lowered = value.lower()
            for member in cls:
                if member.value == lowered:
                    return member
        return None


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters.

    ``connections_total`` counts every connection the proxy accepted (including those it
    reset or rejected at once), ``active`` those open now, ``bytes_up`` the bytes received
    from clients (also those dropped by a blackhole), ``bytes_down`` the bytes received
    from the upstream server, ``rejected`` the connections refused because
    ``max_connections`` were open.
    """

    connections_total: int = 0
    active: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    rejected: int = 0


def _check_delay(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    delay = float(value)
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return delay


def _check_port(name: str, value: int, *, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ValueError(f"{name} must be between {low} and 65535, got {value!r}")
    return value


def _set_rst(sock: socket.socket | None) -> None:
    """Make the next close of ``sock`` send a RST instead of a FIN (SO_LINGER 0)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _abort_writer(writer: asyncio.StreamWriter | None, *, rst: bool) -> None:
    if writer is None:
        return
    if rst:
        _set_rst(writer.get_extra_info("socket"))
    writer.transport.abort()


class _Connection:
    __slots__ = ("client", "sink", "task", "upstream")

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self.task = task
        self.client: asyncio.StreamWriter | None = None
        self.upstream: asyncio.StreamWriter | None = None
        self.sink = False

    def abort(self, *, rst: bool) -> None:
        _abort_writer(self.client, rst=rst)
        _abort_writer(self.upstream, rst=rst)
        if self.task is not None and not self.task.done():
            self.task.cancel()


class FaultProxy:
    """An asyncio TCP proxy with switchable faults.

    Example::

        proxy = FaultProxy("127.0.0.1", 6379)
        await proxy.start()
        client = redis.asyncio.Redis(host=proxy.host, port=proxy.port)
        proxy.set_mode(Mode.LATENCY, upstream_delay=0.2)   # every command is 200 ms slower
        proxy.set_mode(Mode.REFUSE)                         # connection refused
        proxy.set_mode(Mode.PASS)                           # back to normal, same port
        assert proxy.stats.connections_total >= 1
        await proxy.stop()

    All methods must be called from the event loop the proxy was started in; use
    :class:`ThreadedFaultProxy` from synchronous code or other threads. The proxy is
    bounded: at most ``max_connections`` connections are open at once (more are reset) and
    it stops by itself after ``max_lifetime`` seconds (``None``: never).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_connections: int = 1000,
        max_lifetime: float | None = 3600.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(upstream_host, str) or not upstream_host:
            raise ValueError(f"upstream_host must be a non-empty str, got {upstream_host!r}")
        if not isinstance(listen_host, str) or not listen_host:
            raise ValueError(f"listen_host must be a non-empty str, got {listen_host!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if max_lifetime is not None:
            max_lifetime = _check_delay("max_lifetime", max_lifetime)
            if max_lifetime == 0:
                raise ValueError("max_lifetime must be > 0 seconds or None")
        connect_timeout = _check_delay("connect_timeout", connect_timeout)
        if connect_timeout == 0:
            raise ValueError("connect_timeout must be > 0 seconds")
        self.upstream_host = upstream_host
        self.upstream_port = _check_port("upstream_port", upstream_port, allow_zero=False)
        self._listen_host = listen_host
        self._port = _check_port("listen_port", listen_port, allow_zero=True)
        self._max_connections = max_connections
        self._max_lifetime = max_lifetime
        self._connect_timeout = connect_timeout

        self._mode = Mode.PASS
        self._upstream_delay = 0.0
        self._downstream_delay = 0.0
        self._connections_total = 0
        self._active = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._rejected = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._lifetime_handle: asyncio.TimerHandle | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._state = "new"  # new -> running -> stopped

    # -- properties ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the proxy listens on."""
        return self._listen_host

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started when ``listen_port=0``)."""
        if self._port == 0:
            raise RuntimeError("the proxy has no port yet: call start() first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to point clients at."""
        return (self.host, self.port)

    @property
    def mode(self) -> Mode:
        """The current :class:`Mode`."""
        return self._mode

    @property
    def upstream_delay(self) -> float:
        """Seconds added to client-to-server traffic in ``LATENCY`` mode."""
        return self._upstream_delay

    @property
    def downstream_delay(self) -> float:
        """Seconds added to server-to-client traffic in ``LATENCY`` mode."""
        return self._downstream_delay

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (or the end of ``max_lifetime``)."""
        return self._state == "running"

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters (see :class:`ProxyStats`)."""
        return ProxyStats(
            connections_total=self._connections_total,
            active=self._active,
            bytes_up=self._bytes_up,
            bytes_down=self._bytes_down,
            rejected=self._rejected,
        )

    def reset_stats(self) -> None:
        """Zero the cumulative counters (``active`` keeps counting open connections)."""
        self._connections_total = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._rejected = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind the listening socket and start accepting connections."""
        if self._state != "new":
            raise RuntimeError(f"the proxy cannot be started twice (it is {self._state})")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._flowing = asyncio.Event()
        self._stopped = asyncio.Event()
        if self._mode is not Mode.BLACKHOLE:
            self._flowing.set()
        self._open_listener()
        self._state = "running"
        if self._mode is Mode.REFUSE:
            self._close_listener()
        if self._max_lifetime is not None:
            self._lifetime_handle = loop.call_later(self._max_lifetime, self._expire)
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection. Safe to call more than once."""
        if self._state == "new":
            self._state = "stopped"
            return
        if self._state == "stopped":
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._state = "stopped"
        if self._lifetime_handle is not None:
            self._lifetime_handle.cancel()
            self._lifetime_handle = None
        self._close_listener()
        for conn in list(self._connections):
            conn.abort(rst=False)
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports' connection_lost callbacks run so that sockets are closed.
        for _ in range(3):
            await asyncio.sleep(0)
        assert self._stopped is not None
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Wait until the proxy has stopped (by :meth:`stop` or ``max_lifetime``)."""
        if self._stopped is None:
            raise RuntimeError("the proxy was never started")
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _expire(self) -> None:
        self._lifetime_handle = None
        _log.warning("fault proxy on port %s reached max_lifetime, stopping", self._port)
        assert self._loop is not None
        self._stop_task = self._loop.create_task(self.stop())

    # -- modes --------------------------------------------------------------------------

    def set_mode(
        self,
        mode: Mode | str,
        *,
        upstream_delay: float = 0.0,
        downstream_delay: float = 0.0,
    ) -> None:
        """Switch the fault mode; takes effect at once for new and existing connections.

        Delays are only meaningful with ``Mode.LATENCY``::

            proxy.set_mode(Mode.LATENCY, upstream_delay=0.2, downstream_delay=0.0)
            proxy.set_mode("refuse")

        Raises ``ValueError`` for an unknown mode, a negative or non-finite delay (naming
        the field) or a delay given with another mode, and ``OSError`` if leaving
        ``REFUSE`` cannot listen on the port again.
        """
        new_mode = Mode(mode)
        up = _check_delay("upstream_delay", upstream_delay)
        down = _check_delay("downstream_delay", downstream_delay)
        if new_mode is not Mode.LATENCY and (up or down):
            raise ValueError(
                f"upstream_delay/downstream_delay only apply to Mode.LATENCY, not {new_mode!r}"
            )
        if self._state == "stopped":
            raise RuntimeError("the proxy is stopped")
        old_mode = self._mode
        self._mode = new_mode
        self._upstream_delay = up
        self._downstream_delay = down
        if self._state != "running":
            return  # applied by start()
        assert self._flowing is not None
        if new_mode is Mode.BLACKHOLE:
            self._flowing.clear()
        else:
            self._flowing.set()
        if old_mode is Mode.BLACKHOLE and new_mode is not Mode.BLACKHOLE:
            for conn in list(self._connections):
                if conn.sink:
                    conn.abort(rst=True)
        if new_mode in (Mode.RESET, Mode.REFUSE):
            for conn in list(self._connections):
                conn.abort(rst=True)
        if new_mode is Mode.REFUSE:
            self._close_listener()
        elif self._listener is None:
            self._open_listener()

    # -- listening ----------------------------------------------------------------------

    def _open_listener(self) -> None:
        assert self._loop is not None
        family = socket.AF_INET6 if ":" in self._listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._listen_host, self._port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._on_accept)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._listener = sock

    def _close_listener(self) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        sock.close()

    def _on_accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            listener = self._listener
            if listener is None:
                return
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave it in the backlog
                _log.warning("fault proxy accept failed: %s", exc)
                return
            self._connections_total += 1
            if self._mode is Mode.RESET:
                _set_rst(sock)
                sock.close()
                continue
            if self._active >= self._max_connections:
                self._rejected += 1
                _set_rst(sock)
                sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._active += 1
            assert self._loop is not None
            task = self._loop.create_task(self._handle(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- connections --------------------------------------------------------------------

    async def _handle(self, sock: socket.socket) -> None:
        conn = _Connection(asyncio.current_task())
        self._connections.add(conn)
        graceful = False
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=_CHUNK)
            except OSError:
                return
            conn.client = writer
            if self._mode in (Mode.RESET, Mode.REFUSE):
                return
            if self._mode is Mode.BLACKHOLE:
                conn.sink = True
                await self._sink(reader)
                graceful = True
                return
            try:
                # not wait_for: 3.11's can swallow stop()'s cancellation (brownout._aio)
                async with asyncio.timeout(self._connect_timeout):
                    up_reader, up_writer = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port, limit=_CHUNK
                    )
            except (OSError, TimeoutError):
                return  # upstream unreachable: the client sees a reset
            conn.upstream = up_writer
            with contextlib.suppress(OSError):
                up_writer.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer, upstream=True))
                group.create_task(self._pipe(up_reader, writer, upstream=False))
            graceful = True
        except* (OSError, EOFError):
            pass  # one side went away: abort both below
        except* Exception:
            _log.exception("fault proxy connection failed")
        finally:
            self._connections.discard(conn)
            self._active -= 1
            if graceful:
                for w in (conn.client, conn.upstream):
                    if w is not None:
                        w.close()
            else:
                conn.task = None
                conn.abort(rst=self._state != "stopped")
            if conn.client is None:
                sock.close()

    async def _sink(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            self._bytes_up += len(data)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Copy ``src`` to ``dst``, holding chunks for the current latency."""
        assert self._flowing is not None
        flowing = self._flowing
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)

        async def read_side() -> None:
            while True:
                await flowing.wait()
                data = await src.read(_CHUNK)
                if upstream:
                    self._bytes_up += len(data)
                else:
                    self._bytes_down += len(data)
                delay = 0.0
                if self._mode is Mode.LATENCY:
                    delay = self._upstream_delay if upstream else self._downstream_delay
                await queue.put((loop.time() + delay, data))
                if not data:
                    return

        async def write_side() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await flowing.wait()
                if not data:
                    if dst.can_write_eof() and not dst.transport.is_closing():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()

        async with asyncio.TaskGroup() as group:
            group.create_task(read_side())
            group.create_task(write_side())


class ThreadedFaultProxy:
    """A :class:`FaultProxy` running its own event loop in a daemon thread.

    For synchronous code and synchronous pytest fixtures; every method is thread-safe and
    returns once the change took effect::

        with ThreadedFaultProxy("127.0.0.1", redis_port) as proxy:
            client = redis.Redis(host=proxy.host, port=proxy.port)
            proxy.set_mode(Mode.BLACKHOLE)
            ...
            proxy.set_mode(Mode.PASS)
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_connections: int = 1000,
        max_lifetime: float | None = 3600.0,
        connect_timeout: float = 10.0,
        call_timeout: float = 10.0,
    ) -> None:
        self._proxy = FaultProxy(
            upstream_host,
            upstream_port,
            listen_host=listen_host,
            listen_port=listen_port,
            max_connections=max_connections,
            max_lifetime=max_lifetime,
            connect_timeout=connect_timeout,
        )
        self._call_timeout = _check_delay("call_timeout", call_timeout)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def upstream_host(self) -> str:
        return self._proxy.upstream_host

    @property
    def upstream_port(self) -> int:
        return self._proxy.upstream_port

    @property
    def host(self) -> str:
        """The address the proxy listens on."""
        return self._proxy.host

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self._proxy.port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to point clients at."""
        return self._proxy.address

    @property
    def mode(self) -> Mode:
        """The current :class:`Mode`."""
        return self._proxy.mode

    @property
    def running(self) -> bool:
        """True while the proxy thread serves connections."""
        return self._proxy.running

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters (see :class:`ProxyStats`)."""
        return self._call(lambda: self._proxy.stats)

    def reset_stats(self) -> None:
        """Zero the cumulative counters."""
        self._call(self._proxy.reset_stats)

    def set_mode(
        self,
        mode: Mode | str,
        *,
        upstream_delay: float = 0.0,
        downstream_delay: float = 0.0,
    ) -> None:
        """Like :meth:`FaultProxy.set_mode`; returns once the mode is in effect."""
        self._call(
            lambda: self._proxy.set_mode(
                mode, upstream_delay=upstream_delay, downstream_delay=downstream_delay
            )
        )

    def start(self) -> Self:
        """Start the thread and its proxy; returns once the proxy listens."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the proxy cannot be started twice")
            self._thread = threading.Thread(
                target=self._run, name="brownout-fault-proxy", daemon=True
            )
            self._thread.start()
        if not self._ready.wait(self._call_timeout):
            raise TimeoutError("the fault proxy thread did not start in time")
        if self._start_error is not None:
            self._thread.join(self._call_timeout)
            raise self._start_error
        return self

    def stop(self) -> None:
        """Stop the proxy and join its thread. Safe to call more than once."""
        with self._lock:
            thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have just closed
                future = asyncio.run_coroutine_threadsafe(self._proxy.stop(), loop)
                with contextlib.suppress(concurrent.futures.CancelledError):
                    future.result(self._call_timeout)
        thread.join(self._call_timeout)
        if thread.is_alive():
            raise TimeoutError("the fault proxy thread did not stop in time")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        try:
            await self._proxy.start()
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._proxy.wait_stopped()

    def _call(self, fn: Callable[[], _T]) -> _T:
        loop, thread = self._loop, self._thread
        if (
            loop is None
            or thread is None
            or not thread.is_alive()
            or threading.current_thread() is thread
        ):
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop closed meanwhile
            return fn()
        return future.result(self._call_timeout)
