"""Shared plumbing for the private servers: ports, waiting, cleanup, child processes,
in-process server threads."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from brownout.testing._eventually import eventually

LOOPBACK = "127.0.0.1"


# -- finding programs -------------------------------------------------------------------


def find_binary(name: str) -> str | None:
    """The path of executable ``name`` (a name on PATH or an absolute path), or None."""
    if os.path.isabs(name):
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return shutil.which(name)


# -- ports and waiting ------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# The servers wait for start-up with the test suite's helper; ``wait_until`` is its old,
# still public name (on timeout it raises a TimeoutError, as before).
wait_until = eventually


# -- cleanup safety net -----------------------------------------------------------------


class Closeable(Protocol):
    def close(self) -> None: ...


_live: dict[int, Closeable] = {}
_live_lock = threading.Lock()


def track(resource: Closeable) -> None:
    with _live_lock:
        _live[id(resource)] = resource


def untrack(resource: Closeable) -> None:
    with _live_lock:
        _live.pop(id(resource), None)


@atexit.register
def _close_everything() -> None:
    with _live_lock:
        resources = list(_live.values())
        _live.clear()
    for resource in resources:
        with contextlib.suppress(Exception):
            resource.close()


_OWNER_FILE = ".brownout-owner-pid"
_swept = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_dirs() -> None:
    """Remove data dirs left behind by runs that were SIGKILLed (owner pid gone)."""
    global _swept
    if _swept:
        return
    _swept = True
    root = Path(tempfile.gettempdir())
    for path in root.glob("brownout-*"):
        try:
            owner = int((path / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def make_temp_dir(prefix: str) -> Path:
    """A private (0700) temp dir, marked with our pid so a later run can sweep it."""
    _sweep_stale_dirs()
    path = Path(tempfile.mkdtemp(prefix=f"brownout-{prefix}-"))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


# -- in-process servers -----------------------------------------------------------------


class Connections:
    """The open connections of an in-process server, added and discarded by its request
    handler, so that stopping the server can drop keep-alive clients too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)

    def discard(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)

    def __len__(self) -> int:
        return len(self._open)

    def drop_all(self) -> None:
        """Shut every open connection down (its handler then sees the end and finishes)."""
        with self._lock:
            connections = list(self._open)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def serve_in_thread(
    server: socketserver.BaseServer, name: str, *, poll_interval: float = 0.5
) -> threading.Thread:
    """Run ``server.serve_forever`` in a started daemon thread."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def stop_serving(
    server: socketserver.BaseServer, thread: threading.Thread | None, connections: Connections
) -> None:
    """Stop a server run by :func:`serve_in_thread` so that its endpoint really goes away:
    no more accepts, the listening socket closed, open connections dropped, thread joined."""
    server.shutdown()
    server.server_close()
    connections.drop_all()
    if thread is not None:
        thread.join(10)


# -- child server processes -------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _pdeathsig_prefix() -> list[str]:
    """Make a child die with its parent even if the parent is SIGKILLed.

    The parent-death signal fires when the *thread* that forked exits, so it is only used
    for processes started from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class ServerProcess:
    """A real server in a child process on a private port with a private data dir.

    ``start()``/``restart()`` keep the port and the data; ``kill()`` is SIGKILL; ``stop()``
    is a clean shutdown; ``pause()``/``resume()`` are SIGSTOP/SIGCONT of the whole process
    group; ``close()`` kills it and removes its data for good.
    """

    name = "server"
    stop_signal: signal.Signals = signal.SIGTERM
    startup_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, *, host: str = LOOPBACK, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.base_dir = make_temp_dir(self.name)
        self.log_path = self.base_dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._closed = False
        self._lock = threading.RLock()
        track(self)

    # to implement
    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def ready(self) -> bool:
        raise NotImplementedError

    # state
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # control
    def start(self) -> None:
        """Start (again) on the same port with the same data; waits until it serves."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self.running:
                return
            self._proc = None
            self._paused = False
            with open(self.log_path, "ab") as log:
                log.write(f"--- starting: {' '.join(self.command())}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    [*_pdeathsig_prefix(), *self.command()],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: pause/kill hit all of it
                    **self.popen_kwargs(),
                )
            try:
                wait_until(
                    self.ready,
                    timeout=self.startup_timeout,
                    what=f"{self.name} on {self.host}:{self.port}",
                    check=self._check_alive,
                )
            except BaseException:
                self.kill()
                raise

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {proc.returncode} while starting on port "
                f"{self.port}; log {self.log_path}:\n{tail(self.log_path)}"
            )

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the server, its process group and every descendant.

        Descendants are looked up too because some servers (PostgreSQL) put each child in
        a session of its own. The parent is stopped first so it cannot fork meanwhile.
        """
        proc = self._proc
        if proc is None:
            return
        order = [signal.SIGSTOP] if sig in (signal.SIGKILL, signal.SIGSTOP) else []
        for first in order:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, first)
        children = _descendants(proc.pid)
        # SIGCONT: children first, the parent last
        targets = [*children, proc.pid] if sig == signal.SIGCONT else [proc.pid, *children]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered."""
        with self._lock:
            if not self.running:
                raise RuntimeError(f"cannot pause {self!r}")
            self._signal_group(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause` (a no-op otherwise)."""
        with self._lock:
            if self._paused:
                self._signal_group(signal.SIGCONT)
                self._paused = False

    def kill(self) -> None:
        """SIGKILL the server and all its children (a crash: no clean shutdown)."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self.resume()
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self.stop_timeout)
            self._proc = None

    def stop(self) -> None:
        """Clean shutdown (SIGKILL if it takes longer than ``stop_timeout``)."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self.resume()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self.stop_signal)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(self.stop_timeout)
            self._signal_group(signal.SIGKILL)  # leftovers of the group, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self.stop_timeout)
            self._proc = None

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start`: same port, same data."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Undo a fault: resume if paused, start if stopped or killed."""
        with self._lock:
            if self._closed:
                return
            self.resume()
            if not self.running:
                self.start()

    def close(self) -> None:
        """Kill the server and delete its data. Final."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.kill()
            finally:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                untrack(self)
