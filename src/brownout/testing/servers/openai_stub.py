"""A scriptable OpenAI-compatible HTTP server for tests and demos (stdlib only).

Serves ``POST /v1/chat/completions`` (also streamed), ``POST /v1/embeddings``,
``GET /v1/models`` and ``GET /v1/models/{id}`` well enough for the real ``openai`` SDK::

    stub = OpenAIStub().start()
    client = OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)
    stub.script(status=429, headers={"retry-after": "7"})   # the next request
    stub.script(content={"answer": 42})                      # then a JSON reply
    stub.hang(30)                                            # then a request that hangs
    stub.requests[-1].json                                   # what the client sent
    stub.reset()
    stub.close()

Without a script every request gets a valid default answer. Scripted rules are used in
order; each applies to ``times`` requests (``None``: until ``reset()``), optionally only
to one ``path``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from brownout.testing.servers._process import (
    LOOPBACK,
    Connections,
    serve_in_thread,
    stop_serving,
    track,
    untrack,
)

DEFAULT_CHAT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
DEFAULT_TEXT = "This is a reply from the brownout OpenAI stub."

Content = str | Mapping[str, Any] | list[Any] | Callable[[dict[str, Any]], Any]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
    504: ("server_error", None),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class Rule:
    """A scripted answer; see :meth:`OpenAIStub.script`."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content: Content | None = None
    delay: float = 0.0
    times: int | None = 1
    path: str | None = None
    drop: bool = False

    def matches(self, path: str) -> bool:
        return self.path is None or _norm(path) == _norm(self.path)


def _norm(path: str) -> str:
    path = "/" + path.split("?", 1)[0].strip("/")
    return path.removeprefix("/v1") or "/"


def example_from_schema(schema: Any) -> Any:
    """A small value that satisfies simple JSON schemas (for json_schema replies)."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_from_schema(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {name: example_from_schema(sub) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind == "string":
        return ""
    if kind == "integer":
        return 0
    if kind == "number":
        return 0.0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def _tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return max(1, len(text) // 4)


def _embedding(item: Any, dims: int) -> list[float]:
    seed = hashlib.sha256(repr(item).encode()).digest()
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    vec = values[:dims]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "brownout-openai-stub/1.0"
    timeout = 30  # idle keep-alive connections go away by themselves
    server: _StubHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.stub._connections.add(self.connection)

    def finish(self) -> None:
        self.server.stub._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.server.stub._dispatch(self)

    def do_POST(self) -> None:
        self.server.stub._dispatch(self)

    def do_DELETE(self) -> None:
        self.server.stub._dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stub: OpenAIStub) -> None:
        self.stub = stub
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients going away mid-request are expected here


class OpenAIStub:
    """See the module docstring."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        models: Iterable[str] = (DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL),
        embedding_dimensions: int = 8,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.models = list(models)
        self.embedding_dimensions = embedding_dimensions
        self.default_content: Content | None = None
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[RecordedRequest] = []
        self._release = threading.Event()
        self._closing = threading.Event()
        self._connections = Connections()
        self._server: _StubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._closing.clear()
        self._server = _StubHTTPServer((self.host, self._requested_port), self)
        self._requested_port = self._server.server_address[1]
        self._thread = serve_in_thread(self._server, "openai-stub", poll_interval=0.05)
        track(self)
        return self

    def close(self) -> None:
        """Stop serving; hanging requests are released, open connections dropped."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self._closing.set()
        self._release.set()
        stop_serving(server, thread, self._connections)
        deadline = time.monotonic() + 5
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        untrack(self)

    stop = close

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        return self._requested_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: pass it to ``OpenAI(base_url=...)``."""
        return self.base_url_for()

    @property
    def url(self) -> str:
        return self.base_url

    def base_url_for(self, *, host: str | None = None, port: int | None = None) -> str:
        """The base URL through another address (a proxy)."""
        return f"http://{host or self.host}:{port or self.port}/v1"

    # -- scripting ----------------------------------------------------------------------

    def script(
        self,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        content: Content | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        path: str | None = None,
    ) -> Rule:
        """Queue the answer for the next matching request(s).

        * ``status``: HTTP status; non-2xx without ``body`` gets an OpenAI-style error body.
        * ``headers``: extra response headers, e.g. ``{"retry-after": "7"}``.
        * ``body``: the whole response body (dict/list as JSON, str or bytes as is).
        * ``content``: only the assistant message content of a default chat completion
          (a str, or a dict/list sent as a JSON string, or ``fn(request_json)``).
        * ``delay``: seconds to wait before answering (released early by ``reset()``).
        * ``times``: how many requests this rule answers (``None``: all, until reset).
        * ``path``: only requests to this endpoint, e.g. ``"/chat/completions"``.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times!r}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        rule = Rule(
            status=status,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            body=body,
            content=content,
            delay=delay,
            times=times,
            path=path,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def hang(self, seconds: float, *, times: int | None = 1, path: str | None = None) -> Rule:
        """The next request(s) get no answer for ``seconds`` (then the default answer)."""
        return self.script(delay=seconds, times=times, path=path)

    def disconnect(self, *, times: int | None = 1, path: str | None = None) -> Rule:
        """The next request(s) are answered by closing the connection, no response."""
        rule = self.script(times=times, path=path)
        rule.drop = True
        return rule

    def reset(self) -> None:
        """Forget scripts and recorded requests; release hanging requests."""
        with self._lock:
            self._rules.clear()
            self._requests.clear()
            self._release.set()
            self._release = threading.Event()
        self.default_content = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received since the last reset, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def pending_rules(self) -> int:
        with self._lock:
            return len(self._rules)

    def _take_rule(self, path: str) -> tuple[Rule | None, threading.Event]:
        with self._lock:
            release = self._release
            for index, rule in enumerate(self._rules):
                if rule.matches(path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            del self._rules[index]
                    return rule, release
            return None, release

    # -- serving ------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            received_at=time.time(),
        )
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            number = self._counter
        rule, release = self._take_rule(handler.path)
        if (
            rule is not None
            and rule.delay > 0
            and (release.wait(rule.delay) or self._closing.is_set())
        ):
            handler.close_connection = True  # released by reset()/close(): no answer
            return
        if rule is not None and rule.drop:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            status, headers, payload = self._respond(request, rule, number)
        except Exception as exc:  # a broken script: answer 500 rather than hang
            status, headers, payload = 500, {}, self._error_body(500, f"stub error: {exc!r}")
        self._send(handler, status, headers, payload, number)

    def _send(
        self,
        handler: _Handler,
        status: int,
        headers: Mapping[str, str],
        payload: Any,
        number: int,
    ) -> None:
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = json.dumps(payload).encode()
        out = {
            "content-type": "application/json",
            "x-request-id": f"req_stub_{number}",
            "openai-processing-ms": "1",
        }
        out.update(headers)
        out["content-length"] = str(len(data))
        try:
            handler.send_response(status)
            for name, value in out.items():
                handler.send_header(name, value)
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    def _respond(
        self, request: RecordedRequest, rule: Rule | None, number: int
    ) -> tuple[int, dict[str, str], Any]:
        status = rule.status if rule else 200
        headers = dict(rule.headers) if rule else {}
        if rule is not None and rule.body is not None:
            return status, headers, rule.body
        if not 200 <= status < 300:
            return status, headers, self._error_body(status)
        content = rule.content if rule is not None and rule.content is not None else None
        path = _norm(request.path)
        method = request.method
        payload = request.json if isinstance(request.json, dict) else {}
        if method == "POST" and path == "/chat/completions":
            return self._chat(payload, content, number, headers)
        if method == "POST" and path == "/embeddings":
            return status, headers, self._embeddings(payload)
        if method == "GET" and path == "/models":
            return (
                status,
                headers,
                {"object": "list", "data": [self._model(m) for m in self.models]},
            )
        if method == "GET" and path.startswith("/models/"):
            model = path.removeprefix("/models/")
            if model in self.models:
                return status, headers, self._model(model)
            return 404, headers, self._error_body(404, f"The model '{model}' does not exist")
        return 404, headers, self._error_body(404, f"no stub route for {method} {request.path}")

    @staticmethod
    def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
        kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "error", None))
        return {
            "error": {
                "message": message or f"brownout stub error {status}",
                "type": kind,
                "param": None,
                "code": code,
            }
        }

    @staticmethod
    def _model(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "brownout"}

    def _content_for(self, payload: dict[str, Any], content: Content | None) -> str:
        chosen = content if content is not None else self.default_content
        if callable(chosen):
            chosen = chosen(payload)
        if chosen is None:
            fmt = payload.get("response_format") or {}
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind == "json_schema":
                schema = (fmt.get("json_schema") or {}).get("schema")
                return json.dumps(example_from_schema(schema))
            if kind == "json_object":
                return "{}"
            return DEFAULT_TEXT
        if isinstance(chosen, str):
            return chosen
        return json.dumps(chosen)

    def _chat(
        self, payload: dict[str, Any], content: Content | None, number: int, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        text = self._content_for(payload, content)
        model = str(payload.get("model") or DEFAULT_CHAT_MODEL)
        created = int(time.time())
        ident = f"chatcmpl-stub{number}"
        usage = {
            "prompt_tokens": _tokens(payload.get("messages", [])),
            "completion_tokens": _tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not payload.get("stream"):
            return (
                200,
                headers,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_brownout_stub",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_brownout_stub",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        events: list[Any] = [chunk({"role": "assistant", "content": ""}, None)]
        pieces = [text[i : i + 16] for i in range(0, len(text), 16)]
        events += [chunk({"content": piece}, None) for piece in pieces]
        events.append(chunk({}, "stop"))
        options = payload.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            last = chunk({}, None)
            last["choices"] = []
            last["usage"] = usage
            events.append(last)
        stream = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return 200, {"content-type": "text/event-stream", **headers}, stream

    def _embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        raw = payload.get("input", "")
        if isinstance(raw, str) or (raw and isinstance(raw, list) and isinstance(raw[0], int)):
            items: list[Any] = [raw]
        else:
            items = list(raw) if isinstance(raw, list) else [raw]
        dims = int(payload.get("dimensions") or self.embedding_dimensions)
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector = _embedding(item, dims)
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_tokens(item) for item in items)
        return {
            "object": "list",
            "data": data,
            "model": str(payload.get("model") or DEFAULT_EMBEDDING_MODEL),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
