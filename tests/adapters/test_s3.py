"""brownout.s3 against moto's S3 server (the ``s3_server`` fixtures), sync and async.

Faults come from the real network: the fault proxy (blackhole, reset, latency), a
stopped or paused moto server, and, for throttling, a tiny HTTP server answering
``503 SlowDown`` with ``Retry-After`` over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from brownout import BreakerConfig, BreakerOpen, State
from brownout.adapter import DependencyError, OperationEvent
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.s3 import (
    S3_ERRORS,
    AsyncS3Adapter,
    ObjectInfo,
    S3Adapter,
    _parse_retry_after,
    client_config,
)
from brownout.testing import aeventually, eventually
from brownout.testing.servers.s3 import S3Server

SECRET = "brownout-S3cr3t-Key/xyz+42"  # moto accepts any credentials
ACCESS = "AKIABROWNOUTTEST"

FAST = BreakerConfig(consecutive_failures=3, open_for=0.5, half_open_calls=1)


def _kwargs(endpoint_url: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": ACCESS,
        "aws_secret_access_key": SECRET,
        # short enough that a blackholed or paused server fails fast, long enough that a
        # healthy moto answers the first request on a loaded 2-core machine (0.3 s was not)
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
    }


def sync_adapter(endpoint_url: str, bucket: str, **options: Any) -> S3Adapter:
    options.setdefault("config", FAST)
    settings = _kwargs(endpoint_url)
    for name in ("connect_timeout", "read_timeout"):
        if name in options:
            settings[name] = options.pop(name)
    return S3Adapter.create(bucket, **settings, **options)


def async_adapter(endpoint_url: str, bucket: str, **options: Any) -> AsyncS3Adapter:
    options.setdefault("config", FAST)
    settings = _kwargs(endpoint_url)
    for name in ("connect_timeout", "read_timeout"):
        if name in options:
            settings[name] = options.pop(name)
    return AsyncS3Adapter.create(bucket, **settings, **options)


@pytest.fixture
def sync_s3(s3_server: S3Server, fresh_bucket: str) -> Iterator[S3Adapter]:
    with sync_adapter(s3_server.endpoint_url, fresh_bucket) as s3:
        yield s3


@pytest.fixture
async def async_s3(s3_server: S3Server, fresh_bucket: str) -> AsyncIterator[AsyncS3Adapter]:
    async with async_adapter(s3_server.endpoint_url, fresh_bucket) as s3:
        yield s3


@pytest.fixture
def private_s3() -> Iterator[S3Server]:
    """A second moto endpoint (same in-process data) that tests may stop or pause."""
    server = S3Server()
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_proxy(
    private_s3: S3Server, make_proxy: Callable[..., ThreadedFaultProxy]
) -> ThreadedFaultProxy:
    return make_proxy(private_s3, max_lifetime=120)


# ------------------------------------------------------------------ 1. normal operation


def test_sync_round_trip_of_every_operation(sync_s3: S3Adapter) -> None:
    events: list[OperationEvent] = []
    sync_s3.add_listener(events.append)
    etag = sync_s3.upload(
        "docs/a.txt", b"hello", content_type="text/plain", metadata={"owner": "me"}
    )
    assert etag and '"' not in etag
    assert sync_s3.upload("docs/b.bin", io.BytesIO(b"--world")) is not None

    info = sync_s3.head("docs/a.txt")
    assert (info.key, info.size, info.etag, info.content_type) == (
        "docs/a.txt",
        5,
        etag,
        "text/plain",
    )
    assert info.metadata == {"owner": "me"} and info.last_modified is not None

    assert sync_s3.download("docs/b.bin") == b"--world"
    sink = io.BytesIO()
    assert sync_s3.download_to("docs/a.txt", sink) == 5 and sink.getvalue() == b"hello"

    assert sync_s3.copy("docs/a.txt", "docs/c.txt") == etag
    assert sync_s3.download("docs/c.txt") == b"hello"
    listed = list(sync_s3.list("docs/"))
    assert [o.key for o in listed] == ["docs/a.txt", "docs/b.bin", "docs/c.txt"]
    assert isinstance(listed[0], ObjectInfo) and listed[0].size == 5

    sync_s3.delete("docs/c.txt")
    assert [o.key for o in sync_s3.list("docs/c")] == []

    ops = [(e.operation, e.outcome, e.key, e.bytes_sent, e.bytes_received) for e in events]
    assert ops == [
        ("upload", "success", "docs/a.txt", 5, 0),
        ("upload", "success", "docs/b.bin", 7, 0),
        ("head", "success", "docs/a.txt", 0, 0),
        ("download", "success", "docs/b.bin", 0, 7),
        ("download_to", "success", "docs/a.txt", 0, 5),
        ("copy", "success", "docs/c.txt", 0, 0),
        ("download", "success", "docs/c.txt", 0, 5),
        ("list", "success", "docs/", 0, 0),
        ("delete", "success", "docs/c.txt", 0, 0),
        ("list", "success", "docs/c", 0, 0),
    ]
    health = sync_s3.health()
    assert health["kind"] == "s3" and health["breaker"]["state"] == "closed"
    assert health["bytes_up"] == 12 and health["bytes_down"] == 17
    assert health["totals"] == {"bytes_sent": 12, "bytes_received": 17}
    assert health["recent"][3]["key"] == "docs/b.bin" and health["recent"][3]["bytes"] == 7
    assert health["pool_size"] == 10 and health["pool_in_use"] == 0
    assert sync_s3.probe().ok


async def test_async_round_trip_of_every_operation(async_s3: AsyncS3Adapter) -> None:
    events: list[OperationEvent] = []
    async_s3.add_listener(events.append)
    etag = await async_s3.upload(
        "docs/a.txt", b"hello", content_type="text/plain", metadata={"owner": "me"}
    )
    assert await async_s3.upload("docs/b.bin", io.BytesIO(b"--world")) is not None

    info = await async_s3.head("docs/a.txt")
    assert (info.size, info.etag, info.content_type, info.metadata) == (
        5,
        etag,
        "text/plain",
        {"owner": "me"},
    )
    assert await async_s3.download("docs/b.bin") == b"--world"

    class AsyncSink:
        def __init__(self) -> None:
            self.data = b""

        async def write(self, chunk: bytes) -> int:
            self.data += chunk
            return len(chunk)

    sink = AsyncSink()
    assert await async_s3.download_to("docs/a.txt", sink) == 5 and sink.data == b"hello"
    plain = io.BytesIO()
    assert await async_s3.download_to("docs/b.bin", plain) == 7

    assert await async_s3.copy("docs/a.txt", "docs/c.txt") == etag
    assert [o.key async for o in async_s3.list("docs/")] == [
        "docs/a.txt",
        "docs/b.bin",
        "docs/c.txt",
    ]
    await async_s3.delete("docs/c.txt")
    assert [o.key async for o in async_s3.list("docs/c")] == []

    assert [(e.operation, e.bytes_sent, e.bytes_received) for e in events] == [
        ("upload", 5, 0),
        ("upload", 7, 0),
        ("head", 0, 0),
        ("download", 0, 7),
        ("download_to", 0, 5),
        ("download_to", 0, 7),
        ("copy", 0, 0),
        ("list", 0, 0),
        ("delete", 0, 0),
        ("list", 0, 0),
    ]
    health = async_s3.health()
    assert health["bytes_up"] == 12 and health["bytes_down"] == 19
    assert health["pool_size"] == 10 and health["pool_in_use"] == 0
    assert (await async_s3.aprobe()).ok


def test_list_follows_pagination_one_guarded_call_per_page(sync_s3: S3Adapter) -> None:
    for i in range(7):
        sync_s3.upload(f"p/{i}", b"x")
    keys = [o.key for o in sync_s3.list("p/", page_size=3)]
    assert keys == [f"p/{i}" for i in range(7)]
    assert sync_s3.stats.operations["list"] == {"success": 3}
    # lazily: stopping after the first page fetched one page only
    first = next(iter(sync_s3.list("p/", page_size=3)))
    assert first.key == "p/0" and sync_s3.stats.operations["list"] == {"success": 4}


async def test_async_list_follows_pagination(async_s3: AsyncS3Adapter) -> None:
    for i in range(7):
        await async_s3.upload(f"p/{i}", b"x")
    keys = [o.key async for o in async_s3.list("p/", page_size=2)]
    assert keys == [f"p/{i}" for i in range(7)]
    assert async_s3.stats.operations["list"] == {"success": 4}


async def test_async_client_lifetime(s3_server: S3Server, fresh_bucket: str) -> None:
    s3 = async_adapter(s3_server.endpoint_url, fresh_bucket)
    assert s3.client is None  # opened on first use
    await s3.upload("k", b"v")
    assert s3.client is not None
    await s3.aclose()
    await s3.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await s3.download("k")


async def test_async_close_is_a_deprecated_alias_of_aclose(
    s3_server: S3Server, fresh_bucket: str
) -> None:
    s3 = async_adapter(s3_server.endpoint_url, fresh_bucket)
    await s3.open()
    with pytest.warns(DeprecationWarning, match=r"aclose\(\)"):
        await s3.close()
    assert s3.client is None
    with pytest.raises(RuntimeError, match="closed"):
        await s3.download("k")


async def test_async_context_manager_closes_the_owned_client(
    s3_server: S3Server, fresh_bucket: str
) -> None:
    async with async_adapter(s3_server.endpoint_url, fresh_bucket) as s3:
        await s3.upload("k", b"v")
    assert s3.client is None
    with pytest.raises(RuntimeError, match="closed"):
        await s3.download("k")


def test_sync_context_manager_closes_the_owned_client(
    s3_server: S3Server, fresh_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []
    with sync_adapter(s3_server.endpoint_url, fresh_bucket) as s3:
        s3.upload("k", b"v")
        monkeypatch.setattr(s3.client, "close", lambda: closed.append(True))
    assert closed == [True]


async def test_async_adapter_with_a_client_passed_in(
    s3_server: S3Server, fresh_bucket: str
) -> None:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    kwargs = s3_server.client_kwargs()
    async with session.create_client("s3", config=client_config(), **kwargs) as client:
        s3 = AsyncS3Adapter(client, fresh_bucket)
        await s3.upload("k", b"v")
        await s3.aclose()  # not ours: left open
        assert await s3.download("k") == b"v"


async def test_async_adapter_owning_a_client_passed_in_closes_it(
    s3_server: S3Server, fresh_bucket: str
) -> None:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    kwargs = s3_server.client_kwargs()
    client = await session.create_client("s3", config=client_config(), **kwargs).__aenter__()
    closed: list[bool] = []
    real_close = client.close

    async def close() -> None:
        closed.append(True)
        await real_close()

    client.close = close
    async with AsyncS3Adapter(client, fresh_bucket, owns_client=True) as s3:
        await s3.upload("k", b"v")
    assert closed == [True]
    await s3.aclose()  # idempotent
    assert closed == [True]


def test_sync_adapter_with_a_client_passed_in(s3_server: S3Server, fresh_bucket: str) -> None:
    client = s3_server.client()
    try:
        s3 = S3Adapter(client, fresh_bucket, name="media")
        s3.upload("k", b"v")
        s3.close()  # not ours: left open
        assert s3.download("k") == b"v"
        # the signing secret of a client passed in is scrubbed too
        assert s3_server.secret_key in s3._secrets
    finally:
        client.close()


def test_client_config_defaults_and_override() -> None:
    from botocore.config import Config

    cfg = client_config()
    assert (cfg.connect_timeout, cfg.read_timeout) == (1.0, 5.0)
    assert cfg.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert cfg.s3 == {"addressing_style": "path"}
    mine = client_config(override=Config(retries={"total_max_attempts": 3}, read_timeout=9))
    assert mine.retries == {"total_max_attempts": 3} and mine.read_timeout == 9


def test_upload_rejects_text_before_any_request(sync_s3: S3Adapter) -> None:
    with pytest.raises(TypeError, match="encode"):
        sync_s3.upload("k", "text")  # type: ignore[arg-type]
    assert sync_s3.stats.operations == {}


def test_non_seekable_stream_is_read_then_uploaded(sync_s3: S3Adapter) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(b"streamed")

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b: Any) -> int:
            chunk = self._data.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    sync_s3.upload("pipe", Pipe())
    assert sync_s3.download("pipe") == b"streamed"
    assert sync_s3.stats.totals["bytes_sent"] == 8


# ------------------------------------------------------------------ 3. caller errors


def _caller_errors_sync(s3: S3Adapter) -> None:
    with pytest.raises(ClientError) as info:
        s3.download("missing")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as info:
        s3.head("missing")
    assert info.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as info:
        s3.upload("k", b"v", bucket="brownout-no-such-bucket")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    with pytest.raises(ClientError):
        s3.copy("missing", "dst")


def test_caller_errors_never_trip(sync_s3: S3Adapter) -> None:
    for _ in range(10):
        _caller_errors_sync(sync_s3)
    assert sync_s3.breaker.state is State.CLOSED
    ops = sync_s3.stats.operations
    assert all(set(counts) == {"caller_error"} for counts in ops.values()), ops
    assert {r["error_kind"] for r in sync_s3.stats.recent} == {"not_found"}
    assert sync_s3.health()["last_error"] is None


async def test_async_caller_errors_never_trip(async_s3: AsyncS3Adapter) -> None:
    for _ in range(10):
        with pytest.raises(ClientError):
            await async_s3.download("missing")
        with pytest.raises(ClientError):
            await async_s3.head("missing")
        with pytest.raises(ClientError):
            await async_s3.download("k", bucket="brownout-no-such-bucket")
    assert async_s3.breaker.state is State.CLOSED
    assert async_s3.stats.operations["download"] == {"caller_error": 20}


def test_a_failing_local_file_does_not_count_against_s3(sync_s3: S3Adapter) -> None:
    sync_s3.upload("k", b"data")

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raise OSError(28, "No space left on device")

    for _ in range(5):
        with pytest.raises(OSError, match="No space"):
            sync_s3.download_to("k", Full())
    assert sync_s3.breaker.state is State.CLOSED
    assert sync_s3.stats.operations["download_to"] == {"caller_error": 5}


def test_error_table_has_a_reason_for_every_rule() -> None:
    rows = S3_ERRORS.rows()
    assert all(why for *_, why in rows)
    kinds = {kind for _, _, kind, _ in rows}
    assert {"throttled", "server", "timeout", "connection", "not_found", "auth"} <= kinds


def _client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "GetObject")


@pytest.mark.parametrize(
    ("code", "status", "counts", "kind"),
    [
        ("SlowDown", 503, True, "throttled"),
        ("503", 503, True, "throttled"),
        ("Throttling", 400, True, "throttled"),
        ("RequestLimitExceeded", 400, True, "throttled"),
        ("InternalError", 500, True, "server"),
        ("ServiceUnavailable", 503, True, "server"),
        ("502", 502, True, "server"),
        ("504", 504, True, "server"),
        ("RequestTimeout", 400, True, "timeout"),
        ("NoSuchKey", 404, False, "not_found"),
        ("404", 404, False, "not_found"),
        ("NoSuchBucket", 404, False, "not_found"),
        ("AccessDenied", 403, False, "auth"),
        ("403", 403, False, "auth"),
        ("InvalidRequest", 400, False, "caller"),
        ("400", 400, False, "caller"),
    ],
)
def test_client_error_classification(code: str, status: int, counts: bool, kind: str) -> None:
    rule = S3_ERRORS.classify(_client_error(code, status))
    assert (rule.counts, rule.kind) == (counts, kind)


def test_retry_after_parsing() -> None:
    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after(" 1.5 ") == 1.5
    assert _parse_retry_after("0") is None and _parse_retry_after("soon") is None
    future = time.time() + 120
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(future))
    assert 100 < (_parse_retry_after(date) or 0) <= 121


# ------------------------------------------------------------------ 2. outages


FAULTS = ["stopped", "paused", "blackhole", "reset"]


def _apply(fault: str, server: S3Server, proxy: ThreadedFaultProxy) -> None:
    if fault == "stopped":
        server.stop()
    elif fault == "paused":
        server.pause()
    elif fault == "blackhole":
        proxy.set_mode(Mode.BLACKHOLE)
    else:
        proxy.set_mode(Mode.RESET)


@pytest.mark.parametrize("fault", FAULTS)
def test_outage_opens_the_breaker_and_rejections_stay_off_the_network(
    fault: str, private_s3: S3Server, private_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = private_s3.endpoint_url_for(port=private_proxy.port)
    with sync_adapter(url, fresh_bucket, secrets=["unused-secret"]) as s3:
        s3.upload("k", b"v")
        _apply(fault, private_s3, private_proxy)
        failures: list[Exception] = []
        for _ in range(3):
            with pytest.raises(Exception) as info:
                s3.download("k")
            failures.append(info.value)
        assert not any(isinstance(f, BreakerOpen) for f in failures)
        assert s3.breaker.state is State.OPEN
        kinds = [r["error_kind"] for r in list(s3.stats.recent)[-3:]]
        assert set(kinds) <= {"connection", "timeout"}, kinds

        before = private_proxy.stats
        for _ in range(5):
            with pytest.raises(BreakerOpen):
                s3.download("k")
            with pytest.raises(BreakerOpen):
                list(s3.list())
        after = private_proxy.stats
        assert (after.connections_total, after.bytes_up) == (
            before.connections_total,
            before.bytes_up,
        )
        assert s3.stats.operations["download"]["rejected"] == 5
        assert s3.health()["breaker"]["state"] == "open"
        private_s3.resume()


@pytest.mark.parametrize("fault", FAULTS)
async def test_async_outage_opens_the_breaker_and_rejections_stay_off_the_network(
    fault: str, private_s3: S3Server, private_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = private_s3.endpoint_url_for(port=private_proxy.port)
    async with async_adapter(url, fresh_bucket) as s3:
        await s3.upload("k", b"v")
        _apply(fault, private_s3, private_proxy)
        for _ in range(3):
            with pytest.raises(Exception) as info:
                await s3.head("k")
            assert not isinstance(info.value, BreakerOpen)
        assert s3.breaker.state is State.OPEN
        kinds = {r["error_kind"] for r in s3.stats.recent if r["outcome"] == "failure"}
        assert kinds <= {"connection", "timeout"}, kinds

        before = private_proxy.stats
        for _ in range(5):
            with pytest.raises(BreakerOpen):
                await s3.upload("k", b"v")
        after = private_proxy.stats
        assert (after.connections_total, after.bytes_up) == (
            before.connections_total,
            before.bytes_up,
        )
        private_s3.resume()


# ------------------------------------------------------------------ 4. latency


SLOW = BreakerConfig(
    consecutive_failures=None,
    slow_call_rate=0.5,
    slow_call_duration=0.15,
    window_size=4,
    minimum_calls=4,
    open_for=5,
)


def test_latency_trips_a_slow_call_breaker(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    with sync_adapter(url, fresh_bucket, config=SLOW, read_timeout=3) as s3:
        s3.upload("k", b"v")
        s3_proxy.set_mode(Mode.LATENCY, downstream_delay=0.25)
        for _ in range(3):
            assert s3.download("k") == b"v"  # slow, but they succeed
        assert s3.breaker.state is State.OPEN
        with pytest.raises(BreakerOpen):
            s3.head("k")


async def test_async_latency_trips_a_slow_call_breaker(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    async with async_adapter(url, fresh_bucket, config=SLOW, read_timeout=3) as s3:
        await s3.upload("k", b"v")
        s3_proxy.set_mode(Mode.LATENCY, downstream_delay=0.25)
        for _ in range(3):
            assert await s3.download("k") == b"v"
        assert s3.breaker.state is State.OPEN
        with pytest.raises(BreakerOpen):
            await s3.head("k")


# ------------------------------------------------------------------ 5. recovery


def test_recovery_closes_the_breaker_and_no_connection_leaks(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    with sync_adapter(url, fresh_bucket) as s3:
        s3.upload("k", b"v")
        baseline = s3.extra_figures()["pool_in_use"]
        s3_proxy.set_mode(Mode.BLACKHOLE)
        for _ in range(3):
            with pytest.raises((ConnectTimeoutError, ReadTimeoutError)):
                s3.download("k")
        assert s3.breaker.state is State.OPEN
        s3_proxy.set_mode(Mode.PASS)
        eventually(lambda: s3.breaker.state is State.HALF_OPEN, what="half-open")
        assert s3.download("k") == b"v"  # the half-open probe
        assert s3.breaker.state is State.CLOSED
        for i in range(5):
            s3.upload(f"after/{i}", b"x")
        assert len(list(s3.list("after/"))) == 5
        assert s3.extra_figures()["pool_in_use"] == baseline == 0
        assert s3.probe().ok


async def test_async_recovery_closes_the_breaker_and_no_connection_leaks(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    async with async_adapter(url, fresh_bucket) as s3:
        await s3.upload("k", b"v")
        baseline = s3.extra_figures()["pool_in_use"]
        s3_proxy.set_mode(Mode.RESET)
        for _ in range(3):
            with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
                await s3.download("k")
        assert s3.breaker.state is State.OPEN
        s3_proxy.set_mode(Mode.PASS)
        await aeventually(lambda: s3.breaker.state is State.HALF_OPEN, what="half-open")
        assert await s3.download("k") == b"v"
        assert s3.breaker.state is State.CLOSED
        await asyncio.gather(*(s3.upload(f"after/{i}", b"x") for i in range(5)))
        sink = io.BytesIO()
        await s3.download_to("after/0", sink)
        assert s3.extra_figures()["pool_in_use"] == baseline == 0
        assert (await s3.aprobe()).ok


# ------------------------------------------------------------------ 6. throttling


class _ScriptedS3Handler(http.server.BaseHTTPRequestHandler):
    """Answers every request with one scripted S3 error (503 SlowDown + Retry-After: 7)."""

    protocol_version = "HTTP/1.1"
    status = 503
    reason = "Slow Down"
    code = "SlowDown"
    headers_out: ClassVar[dict[str, str]] = {"Retry-After": "7"}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
            + self.code.encode()
            + b"</Code><Message>scripted</Message><RequestId>brownout</RequestId></Error>"
        )
        self.send_response(self.status, self.reason)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _AccessDeniedHandler(_ScriptedS3Handler):
    status = 403
    reason = "Forbidden"
    code = "AccessDenied"
    headers_out: ClassVar[dict[str, str]] = {}


@contextlib.contextmanager
def _scripted(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def slowdown_endpoint() -> Iterator[str]:
    """A real HTTP endpoint answering ``503 SlowDown`` with ``Retry-After: 7``.

    Moto never throttles. Rather than a botocore ``before-send`` hook (which
    would skip the HTTP stack, the header parsing and the error parsing that
    real throttling goes through), this is a scripted server on the wire: the
    client sends a real request and parses a real 503 answer with its XML error
    body and headers, exactly as from S3.
    """
    with _scripted(_ScriptedS3Handler) as url:
        yield url


THROTTLE = BreakerConfig(consecutive_failures=1, open_for=0.5)


def test_slowdown_retry_after_sets_the_break(slowdown_endpoint: str) -> None:
    with sync_adapter(slowdown_endpoint, "bucket", config=THROTTLE) as s3:
        with pytest.raises(ClientError) as info:
            s3.download("k")
        assert info.value.response["Error"]["Code"] == "SlowDown"
        assert getattr(info.value, "retry_after", None) == 7.0
        assert s3.stats.recent[-1]["error_kind"] == "throttled"
        snap = s3.breaker.snapshot()
        assert snap.state is State.OPEN and snap.open_for == pytest.approx(7.0)
        with pytest.raises(BreakerOpen) as rejected:
            s3.download("k")
        assert rejected.value.retry_after is not None and rejected.value.retry_after > 5


async def test_async_slowdown_retry_after_sets_the_break(slowdown_endpoint: str) -> None:
    async with async_adapter(slowdown_endpoint, "bucket", config=THROTTLE) as s3:
        with pytest.raises(ClientError) as info:
            await s3.upload("k", b"payload")
        assert getattr(info.value, "retry_after", None) == 7.0
        assert s3.breaker.snapshot().open_for == pytest.approx(7.0)
        with pytest.raises(BreakerOpen):
            await s3.head("k")


async def test_head_503_without_body_is_throttling(slowdown_endpoint: str) -> None:
    async with async_adapter(slowdown_endpoint, "bucket", config=THROTTLE) as s3:
        with pytest.raises(ClientError) as info:
            await s3.head("k")
        assert info.value.response["Error"]["Code"] == "503"
        assert s3.stats.recent[-1]["error_kind"] == "throttled"
        assert s3.breaker.snapshot().open_for == pytest.approx(7.0)


def test_access_denied_never_trips_and_flags_credentials() -> None:
    """Moto accepts any credentials, so a scripted server answers 403 AccessDenied."""
    with (
        _scripted(_AccessDeniedHandler) as url,
        sync_adapter(url, "bucket", config=THROTTLE) as s3,
    ):
        for _ in range(5):
            with pytest.raises(ClientError) as info:
                s3.download("k")
            assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert s3.breaker.state is State.CLOSED
        assert s3.stats.recent[-1]["error_kind"] == "auth"
        problem = s3.health()["credentials_problem"]
        assert problem and "AccessDenied" in problem and SECRET not in problem


# ------------------------------------------------------------------ probes


def test_probe_has_its_own_timeout_and_bypasses_the_breaker(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    # 1 s, not less: on a loaded 2-core machine moto's first answer alone can take 0.2 s
    with sync_adapter(url, fresh_bucket, probe_timeout=1.0, read_timeout=5) as s3:
        s3.breaker.force_open()
        assert s3.probe().ok
        s3_proxy.set_mode(Mode.BLACKHOLE)
        result = s3.probe()
        assert not result.ok and result.error and "timed out after 1 s" in result.error
        assert s3.health()["last_probe"]["ok"] is False
        s3_proxy.set_mode(Mode.PASS)


async def test_async_probe_timeout_and_missing_bucket(
    s3_proxy: ThreadedFaultProxy, s3_server: S3Server
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    async with async_adapter(url, "brownout-no-such-bucket", probe_timeout=1.0) as s3:
        result = await s3.aprobe()
        assert not result.ok and result.error and "404" in result.error
        s3_proxy.set_mode(Mode.BLACKHOLE)
        result = await s3.aprobe()
        # the probe's own timeout or botocore's read timeout, whichever comes first
        assert not result.ok and result.error
        assert "timed out" in result.error or "ReadTimeoutError" in result.error
        s3_proxy.set_mode(Mode.PASS)


# ------------------------------------------------------------------ 7. secrets


def test_secret_key_never_shows(
    caplog: pytest.LogCaptureFixture,
    private_s3: S3Server,
    fresh_bucket: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with sync_adapter(private_s3.endpoint_url, fresh_bucket) as s3:
        assert SECRET in s3._secrets
        s3.upload("k", b"v")
        with pytest.raises(ClientError) as info:
            s3.download("missing")
        texts.append(str(info.value))
        private_s3.stop()
        for _ in range(4):
            with pytest.raises(Exception) as failure:
                s3.download("k")
            texts.append(repr(failure.value))
        texts.append(str(s3.probe()))
        texts.append(repr(s3.health()))
        texts.append(repr(s3))
    assert all(SECRET not in text for text in texts)
    assert SECRET not in caplog.text
    assert caplog.records  # botocore did log at DEBUG


async def test_async_secret_key_never_shows(
    caplog: pytest.LogCaptureFixture, private_s3: S3Server, fresh_bucket: str
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with async_adapter(private_s3.endpoint_url, fresh_bucket) as s3:
        assert SECRET in s3._secrets
        await s3.upload("k", b"v")
        private_s3.stop()
        for _ in range(4):
            with pytest.raises(Exception) as failure:
                await s3.download("k")
            texts.append(repr(failure.value))
        texts.append(str(await s3.aprobe()))
        texts.append(repr(s3.health()))
    assert all(SECRET not in text for text in texts)
    assert SECRET not in caplog.text


def test_an_error_carrying_the_secret_is_scrubbed(sync_s3: S3Adapter) -> None:
    def leak(**_: Any) -> None:
        raise OSError(f"cannot sign with {SECRET}")

    with pytest.raises(DependencyError) as info:
        sync_s3._run("download", leak)
    assert SECRET not in str(info.value) and info.value.kind == "connection"
    assert SECRET not in repr(sync_s3.health())


# ------------------------------------------------------------------ packaging


def test_missing_client_library_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "import brownout, brownout.adapter\n"
        "assert 'boto3' not in sys.modules and 'aiobotocore' not in sys.modules\n"
        "sys.modules['boto3'] = None\n"
        "try:\n"
        "    import brownout.s3\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'brownout[s3]'" in out.stdout


def test_docstring_examples() -> None:
    import doctest

    import brownout.s3

    result = doctest.testmod(brownout.s3, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_repr_and_health_shape(sync_s3: S3Adapter) -> None:
    assert repr(sync_s3) == "<S3Adapter 's3' breaker=closed>"
    health = sync_s3.health()
    assert health["bucket"] == sync_s3.bucket and health["bytes_up"] == 0
    with contextlib.suppress(Exception):
        sync_s3.close()
