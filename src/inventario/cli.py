"""The ``inventario`` command: its parser and ``main``, and ``inventario serve`` (the
checks before listening, the workers). ``status`` is :mod:`inventario.cli_status`;
``outbox`` and ``spool`` are :mod:`inventario.cli_outbox` and :mod:`inventario.cli_spool`;
``demo`` says where it moved."""

from __future__ import annotations

import argparse
import errno
import fcntl
import math
import os
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from brownout import redact
from inventario import __version__
from inventario.cli_status import error_reason as _reason
from inventario.cli_status import seconds_arg, status_command
from inventario.config import ConfigError, load_settings

__all__ = ["build_parser", "main"]


class StartupError(Exception):
    """``inventario serve`` cannot start; the message names the problem and what to do."""


def _check_var_dir(var_dir: Path) -> None:
    """Create ``VAR_DIR`` if needed and prove a file can be written there."""
    shown = var_dir.absolute()  # "var" alone does not say where
    try:
        var_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=var_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        what = "not writable" if isinstance(exc, PermissionError) else "not usable"
        raise StartupError(
            f"VAR_DIR {shown} is {what} ({_reason(exc)}): set VAR_DIR to a directory "
            "this user can write, or fix its permissions"
        ) from None


def _lock_var_dir(var_dir: Path) -> int:
    """Hold ``VAR_DIR/serve.lock`` for the life of the process: one service per VAR_DIR.

    The outbox, the spool and the coherence journal under ``VAR_DIR`` belong to one
    service (its one process, or the workers of its supervisor, which holds this lock);
    a second service would fail deep inside start-up. The lock goes with the process,
    even on kill -9, so a stale file never blocks a restart.
    """
    path = var_dir / "serve.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"VAR_DIR {var_dir.absolute()} is not usable: cannot open {path.name} ({_reason(exc)})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(
            f"another inventario (pid {holder}) is already running on VAR_DIR "
            f"{var_dir.absolute()}: stop it first, or give this one its own VAR_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _refuse_orphaned_workers(var_dir, fd)
    return fd  # never closed: the lock lasts as long as the process


#: Each worker of ``serve --workers N`` holds a shared lock on this file in ``VAR_DIR``.
WORKERS_LOCK = "workers.lock"


def _refuse_orphaned_workers(var_dir: Path, serve_fd: int) -> None:
    """Refuse to start while workers of a previous service still run on ``VAR_DIR``.

    A supervisor killed with kill -9 releases ``serve.lock`` at once, but its workers
    live on while they stop gracefully (:func:`stop_with_supervisor`: up to
    ``SHUTDOWN_TIMEOUT`` + 10 s, finishing requests and flushing the journals); a new
    service beside them would double the workers on the journals meanwhile.
    """
    try:
        fd = os.open(var_dir / WORKERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return  # the workers report it themselves
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(serve_fd)
        raise StartupError(
            f"workers of an earlier inventario still run on VAR_DIR {var_dir.absolute()} "
            f"(their supervisor is gone): stop them first (`fuser {WORKERS_LOCK}` in "
            "VAR_DIR lists them)"
        ) from None
    finally:
        os.close(fd)  # closing releases the probe lock at once


#: ``prctl`` option: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


def stop_with_supervisor() -> str:
    """(In a worker.) Stop gracefully, as on SIGTERM, when the supervisor dies.

    A supervisor killed with kill -9 cannot pass SIGTERM on; without this its workers
    would serve on, unsupervised. On Linux the kernel sends SIGTERM on the parent's death
    (``prctl(PR_SET_PDEATHSIG)``: the supervisor spawns every worker from its main thread,
    whose exit is what it watches); elsewhere a daemon thread checks ``os.getppid()``
    every second. A supervisor already gone before this ran is caught too (the parent
    is no longer the one that spawned us). Returns which of the two is used.
    """
    import multiprocessing
    import signal
    import threading

    parent = multiprocessing.parent_process()
    spawner = parent.pid if parent is not None else os.getppid()
    how = "watchdog"
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                how = "pdeathsig"
        except (OSError, AttributeError):
            pass
    if how == "watchdog":

        def watch() -> None:
            while os.getppid() == spawner:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="supervisor-watchdog", daemon=True).start()
    elif os.getppid() != spawner:  # died before the prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
    return how


def hold_worker_lock(var_dir: Path) -> None:
    """(In a worker.) Hold a shared lock on ``VAR_DIR/workers.lock`` while it lives."""
    fd = os.open(var_dir / WORKERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # never closed: the lock goes with the process


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the banner so a busy port is reported first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and accepted ones inherit 0 from a socket made without it; without
    # TCP_NODELAY each keep-alive response written in two parts waited ~40 ms for the
    # client's delayed ACK (Nagle): every request after a connection's first
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # as uvicorn does: a restart may rebind while old connections sit in TIME_WAIT
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another inventario or another "
                "program): stop it, or choose another port with --port or PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"not allowed to listen on port {port} of {host} (ports below 1024 need "
                "privileges): choose another port with --port or PORT"
            ) from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(
                f"cannot listen on {host}: not an address of this machine ({_reason(exc)}): "
                "choose another with --host or HOST"
            ) from None
        raise StartupError(
            f"cannot listen on {host}:{port} ({_reason(exc)}): check --host/HOST and --port/PORT"
        ) from None
    return sock


def _serve(args: argparse.Namespace) -> int:
    try:
        overrides: dict[str, Any] = {}
        if args.host is not None:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        if args.workers is not None:
            overrides["workers"] = args.workers
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"inventario: {exc}", file=sys.stderr)
        return 2
    try:
        _check_var_dir(settings.var_dir)
        _lock_var_dir(settings.var_dir)
        sock = _bind(settings.host, settings.port)
    except StartupError as exc:
        print(f"inventario serve: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return _serve_workers(settings, sock, args.log_level)
    # imported after the checks: a refusal comes at once, not after seconds of imports
    import uvicorn

    from inventario.app import create_app

    try:
        app = create_app(settings, freeze_gc=True)
    except ConfigError as exc:  # what only the app can check (ROUTE_CRITICALITY's routes)
        sock.close()
        print(f"inventario: {exc}", file=sys.stderr)
        return 2
    print(
        f"inventario on http://{settings.host}:{settings.port}  "
        f"(status page: http://{settings.host}:{settings.port}/status)",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # SIGTERM: stop accepting, let in-flight requests finish for this long, then the
        # lifespan's shutdown flushes the journals (inventario.app bounds that too)
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    # uvicorn logged why the application did not start (its lifespan failed)
    return 0 if server.started else 3


def _serve_workers(settings: Any, sock: socket.socket, log_level: str) -> int:
    """``--workers N``: uvicorn's supervisor runs N worker processes on ``sock``.

    The supervisor (this process) holds ``serve.lock`` and the bound socket; each worker
    builds the application from the environment (:func:`worker_app`), which carries the
    options given on the command line.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    # the workers are spawned (a fresh interpreter each): they read these
    os.environ["HOST"] = settings.host
    os.environ["PORT"] = str(settings.port)
    os.environ["WORKERS"] = str(settings.workers)
    os.environ["VAR_DIR"] = str(settings.var_dir.absolute())
    print(
        f"inventario on http://{settings.host}:{settings.port} with {settings.workers} workers  "
        f"(status page: http://{settings.host}:{settings.port}/status)",
        flush=True,
    )
    config = uvicorn.Config(
        f"{__name__}:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
    )
    supervisor = _supervisor_class()(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return 3 if failed else 0


def _supervisor_class() -> Any:
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's, except that SIGTERM / SIGINT close the supervisor's copy of the
        listening socket first: once the workers close theirs, new connections are
        refused at once (as with one process), not queued for no one."""

        def handle_term(self) -> None:
            self._stop_listening()
            super().handle_term()

        def handle_int(self) -> None:
            self._stop_listening()
            super().handle_int()

        def _stop_listening(self) -> None:
            for sock in self.sockets:
                sock.close()

    return Supervisor


def worker_app() -> Any:
    """(In each worker of ``serve --workers N``.) The application, from the environment."""
    from inventario.app import create_app

    stop_with_supervisor()
    settings = load_settings()
    hold_worker_lock(settings.var_dir)
    # the workers open the journals (SQLite files set to WAL, the shared spool, the
    # breakers' file) one at a time: N processes creating the same files at the same
    # instant is a race SQLite's busy timeout does not always cover
    opening = os.open(
        settings.var_dir / "startup.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
    )
    try:
        fcntl.flock(opening, fcntl.LOCK_EX)  # milliseconds per worker
        return create_app(settings, freeze_gc=True)
    except Exception as exc:
        # uvicorn's status for "failed while starting": its supervisor then stops,
        # rather than starting the same failure again and again
        from uvicorn.config import STARTUP_FAILURE

        reason = redact(str(exc), *settings.secrets())
        print(f"inventario serve: a worker cannot start: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None
    finally:
        os.close(opening)  # releases the lock


def _demo(args: argparse.Namespace) -> int:
    print(
        "inventario demo: the demo is not part of the service any more; from a checkout "
        "of the repository run `make demo` (or `python -m tools.demo --quick`)",
        file=sys.stderr,
    )
    return 2


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

_SERVE = """\
Run the service with uvicorn, configured by the environment variables below
(README: "Configuring inventario"); with none set it runs on an embedded SQLite
database under VAR_DIR, without cache, S3 or AI.

Before listening it checks that VAR_DIR is writable, that no other inventario
runs on the same VAR_DIR and that the port is free. If one fails it prints one
line saying what is wrong and what to do, and exits with status 2 (status 3:
the application failed while starting; uvicorn logged why)."""


def _settings_epilog() -> str:
    """Every environment variable with its default, from the settings model itself."""
    from inventario.config import Settings

    lines = ["environment variables (default in brackets):"]
    for name, field in Settings.model_fields.items():
        text = str(field.description or "")
        if field.default is not None:
            text += f" [{field.default}]"
        elif "unset" not in text and "default" not in text:
            text += " [unset]"
        lines += textwrap.wrap(
            text,
            width=79,
            initial_indent=f"  {name.upper():<26} ",
            subsequent_indent=" " * 29,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``inventario`` argument parser: every option has help text and a default."""
    parser = argparse.ArgumentParser(
        prog="inventario",
        description="inventario: a retail inventory service that degrades gracefully "
        "instead of failing. Run `inventario COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"inventario {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of (each has its --help):"
    )
    serve = sub.add_parser(
        "serve",
        help="run the service (embedded defaults when unconfigured)",
        description=_SERVE,
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: the HOST variable, else 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="TCP port to listen on (default: the PORT variable, else 8000)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes, 1-64 (default: the WORKERS variable, else 1: one process); "
        "they share VAR_DIR, the port and their circuit breakers",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=_LOG_LEVELS,
        metavar="LEVEL",
        help=f"uvicorn's log level, one of {', '.join(_LOG_LEVELS)} (default: info)",
    )
    serve.set_defaults(func=_serve)
    status = sub.add_parser(
        "status",
        help="level, score, components, breakers, features",
        description="Print the level, score, components (breakers, success rate, p95), "
        "backlogs, features and recent transitions of a running inventario; error texts, "
        "adapter settings and failure reasons with its admin token. Exit status: 0 when the "
        "service answered, 2 when it could not be reached, refused the token or is not "
        "inventario.",
    )
    status.add_argument(
        "url",
        nargs="?",
        default="http://127.0.0.1:8000",
        help="the service's base URL; host:port is enough (default: http://127.0.0.1:8000)",
    )
    status.add_argument(
        "--timeout",
        type=seconds_arg,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for an answer, more than 0 and less than 3600 (default: 5)",
    )
    status.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="the service's admin token, sent as 'Authorization: Bearer' for the details: "
        "error texts, adapter settings, the reasons of dead letters and failed uploads "
        "(default: the ADMIN_TOKEN variable; without either, or with --token '', what "
        "anyone may see)",
    )
    status.set_defaults(func=status_command)
    demo = sub.add_parser(
        "demo",
        help="moved: from a checkout, run `make demo`",
        description="The demo moved out of the service into the repository's tools/demo.py: "
        "from a checkout, run `make demo` (or `python -m tools.demo`). This command only "
        "says so (exit status 2).",
    )
    demo.set_defaults(func=_demo)
    # they build on this module's helpers
    from inventario.cli_outbox import add_outbox_commands
    from inventario.cli_spool import add_spool_commands

    add_outbox_commands(sub)
    add_spool_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``inventario`` command line; the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "func", None) is not _demo:  # demo: says where it went
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
