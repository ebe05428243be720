"""A private redis-server on a free port with a private data dir."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from brownout.testing.servers._process import LOOPBACK, ServerProcess, find_binary


def redis_unavailable(binary: str = "redis-server") -> str | None:
    """Why :class:`RedisServer` cannot run here (no ``redis-server``), or None."""
    if find_binary(binary) is None:
        return f"{binary} not found: install the Debian package redis-server"
    return None


class RedisServer(ServerProcess):
    """A real ``redis-server``; ``url`` is ``redis://127.0.0.1:PORT/0``.

    With ``appendonly=True`` every write is fsynced to the AOF so data survives ``kill()``;
    otherwise data survives ``stop()``/``restart()`` through the RDB dump only.
    """

    name = "redis"

    def __init__(
        self,
        *,
        binary: str = "redis-server",
        host: str = LOOPBACK,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(host=host, port=port)
        self.binary = binary
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)

    @property
    def url(self) -> str:
        return self.url_for()

    def url_for(self, db: int = 0, *, host: str | None = None, port: int | None = None) -> str:
        """The URL of database ``db``, optionally through another address (a proxy)."""
        return f"redis://{host or self.host}:{port or self.port}/{db}"

    def command(self) -> Sequence[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.base_dir),
            "--dbfilename", "dump.rdb",
            "--save", "" if self.appendonly else "3600 1",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def _request(self, payload: bytes, timeout: float = 1.0) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(payload)
            return sock.recv(4096)

    def ready(self) -> bool:
        try:
            return self._request(b"PING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    def flushall(self) -> None:
        """Empty every database (raw protocol: no client library needed)."""
        reply = self._request(b"FLUSHALL\r\n", timeout=10.0)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")
