"""A minimal HTTP/1.1 keep-alive client for load generators (one connection per client).

Why not httpx: driving 200 concurrent clients from one process, httpx's
``AsyncClient`` spent ~10 ms of CPU per request (its pool walks every
connection and every queued request on each assignment), so a bench of 200
clients saturated its own core at ~90 requests/s and the requests waited in
the client, not in the service under test. This client does one
``write`` and reads the status line, the headers and a ``Content-Length``
(or chunked) body: tens of microseconds per request.

Not a general client: no TLS, no redirects, no proxies; a response is read
whole; a connection the server closed is opened again on the next request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HTTPError(Exception):
    """The request got no complete HTTP response (connection refused or lost, timeout, garbage)."""


class Response:
    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers  # names lower-cased
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection to ``host:port``; requests on it are sent one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        within: float = 10.0,
    ) -> Response:
        """The response; :class:`HTTPError` if none came whole within ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                return await self._request(method, path, json_body, headers)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # TimeoutError: OSError
            self.close()
            raise HTTPError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _request(
        self, method: str, path: str, json_body: Any, headers: dict[str, str] | None
    ) -> Response:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        body = b"" if json_body is None else json.dumps(json_body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if json_body is not None:
            lines.append("Content-Type: application/json")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        reader = self._reader
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        hdrs: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        if "content-length" in hdrs:
            data = await reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            data = b"".join(chunks)
        elif status in (204, 304) or 100 <= status < 200:
            data = b""
        else:  # delimited by the close
            data = await reader.read()
            hdrs["connection"] = "close"
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return Response(status, hdrs, data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
