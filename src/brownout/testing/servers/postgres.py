"""A private PostgreSQL cluster on a free port with a private data dir.

``initdb`` runs once per process into a template that each cluster copies, so a
private cluster starts in well under a second. PostgreSQL refuses to run as root: as root,
the server runs as the ``postgres`` OS user, with its files chowned to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brownout.testing.servers._process import (
    LOOPBACK,
    ServerProcess,
    find_binary,
    make_temp_dir,
    track,
    untrack,
)

SUPERUSER = "postgres"


def find_pg_bin() -> str | None:
    """The directory holding ``initdb``/``postgres``: ``$BROWNOUT_PG_BIN``, the newest
    ``/usr/lib/postgresql/*/bin``, or the directory of ``initdb`` on PATH."""
    env = os.environ.get("BROWNOUT_PG_BIN")
    if env:
        return env if os.path.isfile(os.path.join(env, "postgres")) else None
    candidates = glob.glob("/usr/lib/postgresql/*/bin/postgres")

    def version(path: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(path).parent.parent.name)
        return 0.0

    if candidates:
        return os.path.dirname(max(candidates, key=version))
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def postgres_unavailable(pg_bin: str | None = None) -> str | None:
    """Why :class:`PostgresServer` cannot run here, or None.

    Checks the binaries (in ``pg_bin``, else :func:`find_pg_bin`) and, as root, the
    ``postgres`` OS user the server must run as.
    """
    pg_bin = pg_bin or find_pg_bin()
    if pg_bin is None:
        return (
            "PostgreSQL server binaries (initdb, postgres) not found: install the Debian "
            "package postgresql (or set BROWNOUT_PG_BIN to their directory)"
        )
    for tool in ("initdb", "postgres", "psql"):
        if find_binary(os.path.join(pg_bin, tool)) is None:
            return f"{tool} not found in {pg_bin}: incomplete PostgreSQL install"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root but there is no {SUPERUSER!r} OS user to run PostgreSQL as"
    return None


def _os_user() -> pwd.struct_passwd | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(SUPERUSER)  # KeyError when missing: see postgres_unavailable()


def _user_kwargs() -> dict[str, Any]:
    user = _os_user()
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_tree(path: Path) -> None:
    user = _os_user()
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


class _Template:
    """One initdb per process, copied into every cluster."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._pg_bin: str | None = None

    def get(self, pg_bin: str) -> Path:
        with self._lock:
            if self._dir is not None and self._pg_bin == pg_bin:
                return self._dir / "data"
            base = make_temp_dir("pg-template")
            _chown_tree(base)
            data = base / "data"
            result = subprocess.run(
                [
                    os.path.join(pg_bin, "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                cwd=base,
                timeout=120,
                check=False,
                **_user_kwargs(),
            )
            if result.returncode != 0:
                shutil.rmtree(base, ignore_errors=True)
                raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
            self._dir, self._pg_bin = base, pg_bin
            track(self)
            return data

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            untrack(self)


TEMPLATE = _Template()


class PostgresServer(ServerProcess):
    """A real PostgreSQL server; ``dsn`` is ``postgresql://postgres@127.0.0.1:PORT/postgres``.

    Authentication is ``trust``; durability is off (``fsync=off``) since the data is
    thrown away, but a ``kill()``/``start()`` still recovers committed data from the WAL.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to leave
    startup_timeout = 60.0

    def __init__(
        self,
        *,
        pg_bin: str,
        host: str = LOOPBACK,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.pg_bin = pg_bin
        self.user = SUPERUSER
        self.settings = {
            "listen_addresses": host,
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self._initialised = False

    # addresses
    @property
    def dsn(self) -> str:
        return self.dsn_for()

    @property
    def url(self) -> str:
        return self.dsn

    def dsn_for(
        self, dbname: str = "postgres", *, host: str | None = None, port: int | None = None
    ) -> str:
        """A DSN for ``dbname``, optionally through another address (a proxy)."""
        return f"postgresql://{self.user}@{host or self.host}:{port or self.port}/{dbname}"

    def sqlalchemy_url(self, dbname: str = "postgres", *, driver: str = "asyncpg") -> str:
        return self.dsn_for(dbname).replace("postgresql://", f"postgresql+{driver}://", 1)

    # process
    def _init_data(self) -> None:
        if self._initialised:
            return
        template = TEMPLATE.get(self.pg_bin)
        self.socket_dir.mkdir()
        shutil.copytree(template, self.data_dir, symlinks=True)
        _chown_tree(self.base_dir)
        self._initialised = True

    def start(self) -> None:
        self._init_data()
        super().start()

    def command(self) -> Sequence[str]:
        cmd = [
            os.path.join(self.pg_bin, "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
        ]  # fmt: skip
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def popen_kwargs(self) -> dict[str, Any]:
        return {"cwd": self.base_dir, **_user_kwargs()}

    def ready(self) -> bool:
        """Speak just enough of the wire protocol to see "ready for queries"."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                body = b"user\0" + self.user.encode() + b"\0database\0postgres\0\0"
                sock.sendall(struct.pack("!ii", len(body) + 8, 196608) + body)
                reply = sock.recv(1)
                ok = reply == b"R"  # authentication request/ok; "E" while starting up
                with contextlib.suppress(OSError):
                    sock.sendall(b"X\0\0\0\x04")
                return ok
        except OSError:
            return False

    # SQL through psql (no Python driver needed)
    def psql(self, sql: str, *, dbname: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` and return its unaligned output."""
        result = subprocess.run(
            [
                os.path.join(self.pg_bin, "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its DSN."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
