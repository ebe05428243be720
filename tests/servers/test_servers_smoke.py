"""The private servers really work, through the real client libraries and through proxies."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing.servers.openai_stub import OpenAIStub, example_from_schema
from brownout.testing.servers.postgres import PostgresServer
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server
from tests.servers._util import REQUIRE_ENV, missing, require_binary, require_module

# -- requirement helper -----------------------------------------------------------------


def test_missing_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no frobnicator"):
        missing("no frobnicator")
    with pytest.raises(pytest.skip.Exception, match="definitely-not-a-binary"):
        require_binary("definitely-not-a-binary-xyz", "install it")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_xyz"):
        require_module("no_such_module_xyz")


def test_missing_fails_when_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no frobnicator"):
        missing("no frobnicator")


# -- Redis ------------------------------------------------------------------------------


def _redis(url: str, **kwargs: Any) -> Any:
    redis = require_module("redis")
    return redis.Redis.from_url(url, **kwargs)


def test_redis_roundtrip(redis_server: RedisServer) -> None:
    with _redis(redis_server.url) as client:
        client.set("smoke", "1")
        assert client.get("smoke") == b"1"
        client.delete("smoke")


def test_redis_through_proxy(redis_server: RedisServer, redis_proxy: ThreadedFaultProxy) -> None:
    redis = require_module("redis")
    url = redis_server.url_for(port=redis_proxy.port)
    with _redis(url, socket_timeout=5, socket_connect_timeout=5) as client:
        client.set("via-proxy", "yes")
        assert client.get("via-proxy") == b"yes"
        stats = redis_proxy.stats
        assert stats.connections_total >= 1
        assert stats.bytes_up > 0
        assert stats.bytes_down > 0

        redis_proxy.set_mode(Mode.REFUSE)
        client.connection_pool.disconnect()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.get("via-proxy")
        redis_proxy.set_mode(Mode.PASS)
        assert client.get("via-proxy") == b"yes"


async def test_redis_asyncio_through_blackholed_proxy(
    redis_server: RedisServer, redis_proxy: ThreadedFaultProxy
) -> None:
    redis = require_module("redis")
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url_for(port=redis_proxy.port), socket_timeout=0.5)
    try:
        assert await client.ping()
        redis_proxy.set_mode(Mode.BLACKHOLE)
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.ping()
    finally:
        await client.aclose()


def test_private_redis_pause_kill_restart(make_redis: Callable[..., RedisServer]) -> None:
    redis = require_module("redis")
    server = make_redis(appendonly=True)
    with _redis(server.url, socket_timeout=1.0, socket_connect_timeout=1.0) as client:
        client.set("k", "v")

        server.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.get("k")
        server.resume()
        client.connection_pool.disconnect()
        assert client.get("k") == b"v"

        port = server.port
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.get("k")
        server.start()
        assert server.port == port
        assert client.get("k") == b"v"  # appendonly: survived SIGKILL


def test_session_redis_is_revived_after_a_test_kills_it(redis_server: RedisServer) -> None:
    # the autouse fixture restarts it after this test; the next test would notice otherwise
    redis_server.kill()
    assert not redis_server.running


def test_session_redis_was_revived(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.ready()


# -- PostgreSQL -------------------------------------------------------------------------


def test_postgres_select_1_psycopg(postgres_server: PostgresServer) -> None:
    psycopg = require_module("psycopg", "psycopg[binary]")
    assert postgres_server.dsn == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(postgres_server.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


async def test_postgres_fresh_database_asyncpg(fresh_database: str) -> None:
    asyncpg = require_module("asyncpg")
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (7)")
        assert await conn.fetchval("SELECT x FROM t") == 7
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_postgres_through_proxy(
    postgres_server: PostgresServer, postgres_proxy: ThreadedFaultProxy
) -> None:
    asyncpg = require_module("asyncpg")
    dsn = postgres_server.dsn_for(port=postgres_proxy.port)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert postgres_proxy.stats.connections_total == 1

    postgres_proxy.set_mode(Mode.REFUSE)
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=2)
    assert postgres_proxy.stats.connections_total == 1


def test_private_postgres_kill_restart_keeps_data(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    psycopg = require_module("psycopg", "psycopg[binary]")
    server = make_postgres()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=2) as conn:
        server.pause()
        done = threading.Event()
        result: list[Any] = []

        def query() -> None:
            try:
                result.append(conn.execute("SELECT 1").fetchone())
            except Exception as exc:  # pragma: no cover - reported by the assert below
                result.append(exc)
            done.set()

        thread = threading.Thread(target=query, daemon=True)
        thread.start()
        assert not done.wait(0.3)  # the backend is stopped too
        server.resume()
        assert done.wait(10)
        thread.join(10)
        assert result == [(1,)]

    server.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn, connect_timeout=2).close()
    server.start()
    with psycopg.connect(server.dsn) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


# -- S3 ---------------------------------------------------------------------------------


def test_s3_put_get(s3_server: S3Server, fresh_bucket: str) -> None:
    client = s3_server.client()
    try:
        client.put_object(Bucket=fresh_bucket, Key="a/b.txt", Body=b"hello")
        body = client.get_object(Bucket=fresh_bucket, Key="a/b.txt")["Body"]
        with body:
            assert body.read() == b"hello"
    finally:
        client.close()


def test_s3_through_proxy_and_stop_start(
    s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    botocore_exceptions = require_module("botocore.exceptions")
    client = s3_server.client(
        port=s3_proxy.port, retries={"max_attempts": 1}, connect_timeout=5, read_timeout=5
    )
    try:
        client.put_object(Bucket=fresh_bucket, Key="k", Body=b"v")
        assert s3_proxy.stats.connections_total >= 1

        s3_server.stop()
        with pytest.raises(botocore_exceptions.EndpointConnectionError):
            s3_server.client().list_buckets()
        with pytest.raises(  # the proxy accepts, then resets: upstream is gone
            (botocore_exceptions.ConnectionError, botocore_exceptions.HTTPClientError)
        ):
            client.get_object(Bucket=fresh_bucket, Key="k")
        s3_server.start()

        body = client.get_object(Bucket=fresh_bucket, Key="k")["Body"]
        with body:
            assert body.read() == b"v"  # moto's data survives stop/start
    finally:
        client.close()


# -- OpenAI -----------------------------------------------------------------------------


def _openai(base_url: str, **kwargs: Any) -> Any:
    openai = require_module("openai")
    return openai.OpenAI(base_url=base_url, api_key="sk-test-brownout", **kwargs)


def test_openai_chat_completion(openai_stub: OpenAIStub) -> None:
    with _openai(openai_stub.base_url, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.total_tokens > 0
    [request] = openai_stub.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-brownout"
    assert request.json["messages"] == [{"role": "user", "content": "hi"}]


def test_openai_scripted_429_with_retry_after(openai_stub: OpenAIStub) -> None:
    openai = require_module("openai")
    openai_stub.script(status=429, headers={"retry-after": "7"})
    with _openai(openai_stub.base_url, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "7"
        # the script was used up: the next call succeeds
        assert client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}]
        ).choices
    assert len(openai_stub.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_name"),
    [(500, "InternalServerError"), (401, "AuthenticationError"), (400, "BadRequestError")],
)
def test_openai_scripted_errors(openai_stub: OpenAIStub, status: int, error_name: str) -> None:
    openai = require_module("openai")
    openai_stub.script(status=status, times=None)
    with _openai(openai_stub.base_url, max_retries=0) as client:
        for _ in range(2):
            with pytest.raises(getattr(openai, error_name)):
                client.models.list()


def test_openai_json_content(openai_stub: OpenAIStub) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
        "required": ["label", "score"],
    }
    with _openai(openai_stub.base_url, max_retries=0) as client:
        default = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "classify"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "c", "schema": schema, "strict": True},
            },
        )
        assert json.loads(default.choices[0].message.content) == {"label": "", "score": 0.0}

        openai_stub.script(content={"label": "spam", "score": 0.9})
        scripted = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "classify"}],
            response_format={"type": "json_object"},
        )
        assert json.loads(scripted.choices[0].message.content) == {"label": "spam", "score": 0.9}
    assert example_from_schema({"type": "array"}) == []


def test_openai_streaming(openai_stub: OpenAIStub) -> None:
    openai_stub.script(content="streamed text that is longer than one chunk")
    with _openai(openai_stub.base_url, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed text that is longer than one chunk"
    assert chunks[-1].usage is not None


def test_openai_embeddings_and_models(openai_stub: OpenAIStub) -> None:
    with _openai(openai_stub.base_url, max_retries=0) as client:
        floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert [len(d.embedding) for d in floats.data] == [8, 8]
        b64 = client.embeddings.create(
            model="text-embedding-3-small", input="a", encoding_format="base64", dimensions=4
        )
        assert isinstance(b64.data[0].embedding, str | list)
        models = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in models


def test_openai_hang_times_out_and_reset_releases(openai_stub: OpenAIStub) -> None:
    openai = require_module("openai")
    openai_stub.hang(60)
    with _openai(openai_stub.base_url, max_retries=0, timeout=10) as client:
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.3).models.list()
        openai_stub.reset()  # releases the hanging handler at once
        assert [m.id for m in client.models.list()]


def test_openai_disconnect(openai_stub: OpenAIStub) -> None:
    openai = require_module("openai")
    openai_stub.disconnect()
    with _openai(openai_stub.base_url, max_retries=0) as client:
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        assert client.models.list()


def test_openai_through_proxy(openai_stub: OpenAIStub, openai_proxy: ThreadedFaultProxy) -> None:
    openai = require_module("openai")
    base_url = openai_stub.base_url_for(port=openai_proxy.port)
    with _openai(base_url, max_retries=0, timeout=10) as client:
        assert client.models.list()
        openai_proxy.set_mode(Mode.BLACKHOLE)
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.5).models.list()
        openai_proxy.set_mode(Mode.REFUSE)
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        openai_proxy.set_mode(Mode.PASS)
        assert client.models.list()


def test_openai_stub_close_does_not_block_on_hanging_requests() -> None:
    stub = OpenAIStub().start()
    stub.hang(120)
    with socket.create_connection((stub.host, stub.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        closed = threading.Event()

        def close() -> None:
            stub.close()
            closed.set()

        closer = threading.Thread(target=close)
        closer.start()
        assert closed.wait(15)
        closer.join()
        try:
            assert sock.recv(1024) == b""  # dropped without an answer
        except ConnectionResetError:
            pass  # or reset: either way, no answer
