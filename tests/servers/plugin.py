"""Pytest fixtures that start REAL private servers for the test suite.

Load with ``pytest_plugins = ("tests.servers.plugin",)`` in the root conftest (or
``pytest -p tests.servers.plugin``).

Session-scoped (shared, started on first use, revived after every test that killed,
stopped or paused them):

* ``redis_server`` -> :class:`RedisServer` (``url``: ``redis://127.0.0.1:PORT/0``)
* ``postgres_server`` -> :class:`PostgresServer`
  (``dsn``: ``postgresql://postgres@127.0.0.1:PORT/postgres``)
* ``s3_server`` -> :class:`S3Server` (moto; ``endpoint_url``, ``client_kwargs()``,
  ``client()``, path-style, region ``us-east-1``, credentials ``testing``/``testing``)

Per test:

* ``openai_stub`` -> :class:`OpenAIStub` (one server per session, reset for each test)
* ``fresh_database`` -> DSN (str) of a new empty database on ``postgres_server``
* ``fresh_bucket`` -> name (str) of a new empty bucket on ``s3_server``
* ``make_redis(**kwargs)`` / ``make_postgres(**kwargs)`` -> factories of private servers
  for destructive tests, closed after the test
* ``redis_proxy``, ``postgres_proxy``, ``s3_proxy``, ``openai_proxy`` ->
  :class:`~brownout.chaos.ThreadedFaultProxy` in front of the matching server
  (``proxy.host``/``proxy.port``; e.g. ``redis_server.url_for(port=redis_proxy.port)``)

A missing binary or package skips the test with the reason, or fails it when
``BROWNOUT_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from brownout.chaos import ThreadedFaultProxy
from brownout.testing.servers import postgres_unavailable, redis_unavailable, s3_unavailable
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.postgres import PostgresServer, find_pg_bin
from brownout.testing.servers.redis import RedisServer
from brownout.testing.servers.s3 import S3Server
from tests.servers._util import missing, require_binary, require_module

__all__ = [
    "OpenAIStub",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "missing",
    "require_binary",
    "require_module",
]

SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "make_redis",
        "redis_proxy",
        "postgres_server",
        "make_postgres",
        "postgres_proxy",
        "fresh_database",
        "s3_server",
        "s3_proxy",
        "fresh_bucket",
        "openai_stub",
        "openai_proxy",
    }
)

PROXY_LIFETIME = 600.0  # a per-test proxy never outlives a stuck test by much


class _Revivable(Protocol):
    def ensure_running(self) -> None: ...


class _Server(_Revivable, Protocol):
    def start(self) -> object: ...
    def close(self) -> None: ...


_session_servers: list[_Revivable] = []

S = TypeVar("S", bound=_Server)


@contextlib.contextmanager
def _shared(server: S) -> Iterator[S]:
    """``server`` started for the session: revived after every test, closed at the end."""
    try:
        server.start()
        _session_servers.append(server)
        yield server
    finally:
        with contextlib.suppress(ValueError):
            _session_servers.remove(server)
        server.close()


@contextlib.contextmanager
def _maker(new: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """``make(**kwargs)``: a started private server (``new(**kwargs)``) for one test, closed
    after it."""
    servers: list[S] = []

    def make(**kwargs: Any) -> S:
        server = new(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server with ``@pytest.mark.servers``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(autouse=True)
def _brownout_revive_session_servers() -> Iterator[None]:
    """After each test, undo kill()/stop()/pause() of the shared servers."""
    yield
    for server in list(_session_servers):
        server.ensure_running()


# -- requirements -----------------------------------------------------------------------


def _require_redis() -> None:
    if (reason := redis_unavailable()) is not None:
        missing(reason)


def _pg_bin() -> str:
    pg_bin = find_pg_bin()
    if (reason := postgres_unavailable(pg_bin)) is not None:
        missing(reason)
    assert pg_bin is not None  # postgres_unavailable() names what is missing otherwise
    return pg_bin


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A shared redis-server on a private port."""
    _require_redis()
    with _shared(RedisServer()) as server:
        yield server


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    """``make_redis(appendonly=False, extra_args=())`` -> a started private Redis."""
    _require_redis()
    with _maker(RedisServer) as make:
        yield make


class _Listening(Protocol):
    host: str
    port: int


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., ThreadedFaultProxy]]:
    """``make_proxy(server, max_lifetime=PROXY_LIFETIME)``: a started fault proxy in front
    of anything with a ``host`` and a ``port``, stopped after the test."""
    proxies: list[ThreadedFaultProxy] = []

    def make(server: _Listening, *, max_lifetime: float = PROXY_LIFETIME) -> ThreadedFaultProxy:
        proxy = ThreadedFaultProxy(server.host, server.port, max_lifetime=max_lifetime).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def redis_proxy(
    redis_server: RedisServer, make_proxy: Callable[..., ThreadedFaultProxy]
) -> ThreadedFaultProxy:
    return make_proxy(redis_server)


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A shared PostgreSQL cluster on a private port (superuser ``postgres``, trust auth)."""
    with _shared(PostgresServer(pg_bin=_pg_bin())) as server:
        yield server


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    dsn = postgres_server.create_database()
    yield dsn
    name = dsn.rsplit("/", 1)[1]
    postgres_server.ensure_running()
    with contextlib.suppress(Exception):
        postgres_server.drop_database(name)


@pytest.fixture
def make_postgres() -> Iterator[Callable[..., PostgresServer]]:
    """``make_postgres(settings=None)`` -> a started private PostgreSQL cluster."""
    with _maker(functools.partial(PostgresServer, pg_bin=_pg_bin())) as make:
        yield make


@pytest.fixture
def postgres_proxy(
    postgres_server: PostgresServer, make_proxy: Callable[..., ThreadedFaultProxy]
) -> ThreadedFaultProxy:
    return make_proxy(postgres_server)


# -- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A shared moto S3 server on a private port."""
    if (reason := s3_unavailable()) is not None:
        missing(reason)
    with _shared(S3Server()) as server:
        yield server


@pytest.fixture
def fresh_bucket(s3_server: S3Server) -> str:
    """The name of a new, empty bucket."""
    return s3_server.create_bucket()


@pytest.fixture
def s3_proxy(
    s3_server: S3Server, make_proxy: Callable[..., ThreadedFaultProxy]
) -> ThreadedFaultProxy:
    return make_proxy(s3_server)


# -- OpenAI -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _openai_stub_session() -> Iterator[OpenAIStub]:
    stub = OpenAIStub().start()
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def openai_stub(_openai_stub_session: OpenAIStub) -> Iterator[OpenAIStub]:
    """The OpenAI-compatible stub, with no scripts and no recorded requests."""
    _openai_stub_session.reset()
    yield _openai_stub_session
    _openai_stub_session.reset()


@pytest.fixture
def openai_proxy(
    openai_stub: OpenAIStub, make_proxy: Callable[..., ThreadedFaultProxy]
) -> ThreadedFaultProxy:
    return make_proxy(openai_stub)
