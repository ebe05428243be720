"""The admin request ``inventario outbox`` and ``inventario spool`` share, against a stub.

One helper (:func:`inventario.cli_admin.admin_call`) for both command groups: the
same token handling and the same one-line message for each way a call can fail.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from inventario.cli_admin import admin_call
from inventario.cli_outbox import OutboxCommandError
from inventario.cli_outbox import _call as outbox_call
from inventario.cli_spool import SpoolCommandError
from inventario.cli_spool import _call as spool_call

TOKEN = "cli-admin-t0ken"
#: path -> (status, content type, body) the stub answers
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/ok": (200, "application/json", b'{"done": 1}'),
    "/gone": (404, "application/problem+json", b'{"status": 404, "detail": "not found"}'),
    "/denied": (403, "application/problem+json", b'{"status": 403}'),
    "/clash": (409, "application/problem+json", b'{"status": 409, "detail": "not dead"}'),
    "/fields": (422, "application/json", b'{"detail": [{"msg": "ids: too many"}]}'),
    "/html": (200, "text/html", b"<html></html>"),
    "/list": (200, "application/json", b"[1, 2]"),
}


class _Stub(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None, bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.seen.append((self.path, self.headers.get("authorization"), self.rfile.read(length)))
        status, ctype, body = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _args(url: str) -> argparse.Namespace:
    return argparse.Namespace(url=url, timeout=5.0)


def test_an_answer_is_its_json_and_the_token_is_sent(
    stub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    _Stub.seen.clear()
    assert admin_call(_args(stub), "POST", "/ok", {"all": True}, part="outbox") == {"done": 1}
    (seen,) = _Stub.seen
    assert seen == ("/ok", f"Bearer {TOKEN}", b'{"all": true}')


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/gone", "has no {part} admin endpoints: is ADMIN_TOKEN set on the service"),
        ("/denied", "refused the admin token (HTTP 403): set ADMIN_TOKEN"),
        ("/clash", "/clash: HTTP 409: not dead"),
        ("/fields", "/fields: HTTP 422: ids: too many"),
        ("/html", "/html did not answer JSON"),
        ("/list", "/list answered an unexpected document"),
    ],
)
@pytest.mark.parametrize(
    ("call", "error", "part"),
    [(outbox_call, OutboxCommandError, "outbox"), (spool_call, SpoolCommandError, "spool")],
    ids=["outbox", "spool"],
)
def test_both_command_groups_fail_alike_with_one_line_that_says_why(
    stub: str,
    monkeypatch: pytest.MonkeyPatch,
    call: object,
    error: type[Exception],
    part: str,
    path: str,
    message: str,
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    with pytest.raises(error) as caught:
        call(_args(stub), "GET", path)  # type: ignore[operator]
    text = str(caught.value)
    assert message.format(part=part) in text and "\n" not in text and TOKEN not in text


@pytest.mark.parametrize("part", ["outbox", "spool"])
def test_without_a_token_or_a_service_it_says_so(
    monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    with pytest.raises(Exception, match=f"set ADMIN_TOKEN .*the {part} is read and changed"):
        admin_call(_args("127.0.0.1:9"), "GET", "/ok", part=part)
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    with pytest.raises(Exception, match=r"cannot reach http://127\.0\.0\.1:9"):
        admin_call(_args("127.0.0.1:9"), "GET", "/ok", part=part)
