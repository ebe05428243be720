"""bench/_http1.py, the load generators' HTTP/1.1 client: framing, keep-alive, errors."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from bench._http1 import Connection, HTTPError


class Server:
    """A raw asyncio server answering each request with the next canned response."""

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = responses
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:  # closed whatever ends the handler (a test's loop may cancel it at teardown)
            while self.responses:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                reply = self.responses.pop(0)
                writer.write(reply)
                await writer.drain()
                delimited = b"Content-Length" in reply or b"chunked" in reply
                if b"Connection: close" in reply or not delimited:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def serve(responses: list[bytes]) -> tuple[Server, asyncio.Server, int]:
    srv = Server(responses)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return srv, server, port


def ok(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}"
        "Content-Type: application/json\r\n\r\n"
    ).encode() + body


async def test_keep_alive_reuses_one_connection_and_sends_the_json_body() -> None:
    srv, server, port = await serve([ok(b'{"a": 1}'), ok(b"[2]", "Retry-After: 3\r\n")])
    async with server:
        conn = Connection("127.0.0.1", port)
        r1 = await conn.request("POST", "/x", json_body={"q": 1})
        r2 = await conn.request("GET", "/y")
        conn.close()
    assert (r1.status_code, r1.json()) == (200, {"a": 1})
    assert (r2.json(), r2.headers["retry-after"]) == ([2], "3")
    assert srv.connections == 1
    first = srv.requests[0].decode()
    assert first.startswith("POST /x HTTP/1.1\r\n")
    assert "content-type: application/json" in first.lower()
    assert json.loads(first.split("\r\n\r\n", 1)[1]) == {"q": 1}
    assert srv.requests[1].decode().startswith("GET /y HTTP/1.1\r\n")


async def test_chunked_and_close_delimited_bodies_and_reconnect_after_close() -> None:
    chunked = (
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close"
    srv, server, port = await serve([chunked, closing, ok(b"1")])
    async with server:
        conn = Connection("127.0.0.1", port)
        r1 = await conn.request("GET", "/a")
        r2 = await conn.request("GET", "/b")
        r3 = await conn.request("GET", "/c")
        conn.close()
    assert (r1.status_code, r1.body) == (503, b"abcde")
    assert (r2.status_code, r2.body) == (200, b"until-close")
    assert (r3.status_code, r3.body) == (200, b"1")
    assert srv.connections == 2  # the close was honoured: a new connection for /c


async def test_refused_connection_and_garbage_and_timeout_are_http_errors() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(HTTPError, match="GET /z"):
        await Connection("127.0.0.1", free).request("GET", "/z")

    _, server, port = await serve([b"SMTP ready\r\n\r\n"])
    async with server:
        with pytest.raises(HTTPError, match=r"not an HTTP/1\.x status line"):
            await Connection("127.0.0.1", port).request("GET", "/")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers
        finally:  # also when the loop cancels it at teardown: no writer left unclosed
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        conn = Connection("127.0.0.1", port)
        with pytest.raises(HTTPError, match="TimeoutError"):
            await conn.request("GET", "/slow", within=0.05)
        assert conn._writer is None  # the half-used connection is dropped
