"""The one builder of a local inventario stack: private servers, fault proxies, the service.

Used by the demo (``tools/demo.py``), the service benchmarks (``bench/service_latency.py``,
``bench/service_load.py``) and the end-to-end tests, so that "start a Redis, a PostgreSQL,
moto S3 and an OpenAI stub, each behind a :class:`~brownout.chaos.ThreadedFaultProxy`, and
inventario configured to reach them through the proxies" is written once:

* :class:`ServiceProcess`: ``python -m inventario serve`` in a child process on a free
  port with a private ``VAR_DIR`` (a :class:`~brownout.testing.servers.ServerProcess`:
  ``start()`` waits until ``/health/live`` answers, ``stop()`` is a graceful shutdown).
* :func:`service_settings`: the inventario settings (as ``load_settings`` keyword
  arguments) that reach each running dependency through its proxy; :func:`settings_env`
  turns them into the environment of a child process.
* :class:`Stack`: starts whatever dependencies can start here (a missing binary or package
  is recorded in :attr:`Dependency.missing`, not raised), their proxies and the service;
  :meth:`Stack.close` removes everything.

It lives beside the demo, outside the published wheel: it is for a checkout (tests,
benchmarks, the demo), and it starts servers no deployment wants started by its service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from brownout.chaos import ThreadedFaultProxy
from brownout.testing.servers import (
    OpenAIStub,
    PostgresServer,
    RedisServer,
    S3Server,
    ServerProcess,
    find_pg_bin,
    postgres_unavailable,
    redis_unavailable,
    s3_unavailable,
)
from brownout.testing.servers._process import tail
from brownout.testing.servers.postgres import TEMPLATE

__all__ = [
    "BUCKET",
    "DATABASE",
    "DEPENDENCIES",
    "Dependency",
    "ServiceProcess",
    "Stack",
    "service_settings",
    "settings_env",
]

DATABASE = "inventario"
BUCKET = "inventario-demo"
#: The dependencies in start order, with their labels.
DEPENDENCIES: tuple[tuple[str, str], ...] = (
    ("redis", "redis-server"),
    ("database", "PostgreSQL"),
    ("s3", "moto S3"),
    ("openai", "OpenAI stub"),
)


class ServiceProcess(ServerProcess):
    """``python -m inventario serve`` in a child process with a private ``VAR_DIR``.

    ``env`` is the child's whole environment (``VAR_DIR`` is set from ``var_dir``, by
    default a directory in the process's private data dir). ``stop()`` sends SIGINT, on
    which uvicorn shuts down gracefully (the lifespan closes the runtime).
    """

    name = "inventario"
    startup_timeout = 90.0
    stop_timeout = 15.0
    stop_signal = signal.SIGINT

    def __init__(self, env: Mapping[str, str], *, var_dir: Path | None = None) -> None:
        super().__init__()
        self.env = dict(env)
        self.var_dir = var_dir if var_dir is not None else self.base_dir / "var"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> Sequence[str]:
        return [
            sys.executable, "-m", "inventario", "serve",
            "--host", self.host, "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip

    def popen_kwargs(self) -> dict[str, Any]:
        env = {**self.env, "VAR_DIR": str(self.var_dir), "PYTHONUNBUFFERED": "1"}
        return {"env": env, "cwd": self.base_dir}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health/live", timeout=1.0) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


@dataclass
class Dependency:
    """One dependency of the stack: its server, its proxy, or why it is missing."""

    name: str
    label: str
    server: Any = None
    proxy: ThreadedFaultProxy | None = None
    missing: str | None = None

    @property
    def available(self) -> bool:
        return self.missing is None and self.proxy is not None


def fault_proxy(host: str, port: int) -> ThreadedFaultProxy:
    """A started proxy in front of ``host:port`` that never ends connections by age."""
    return ThreadedFaultProxy(host, port, max_lifetime=None, connect_timeout=2.0).start()


def service_settings(
    *,
    redis: tuple[RedisServer, ThreadedFaultProxy | None] | None = None,
    database: tuple[PostgresServer, ThreadedFaultProxy | None, str] | None = None,
    s3: tuple[S3Server, ThreadedFaultProxy | None, str] | None = None,
    openai: tuple[OpenAIStub, ThreadedFaultProxy | None, str] | None = None,
) -> dict[str, Any]:
    """inventario's settings (``load_settings`` keywords) for the dependencies given.

    Each is reached through its proxy: ``redis=(server, proxy)``,
    ``database=(server, proxy, dbname)``, ``s3=(server, proxy, bucket)``,
    ``openai=(stub, proxy, api_key)``; a proxy of ``None`` reaches the server directly.
    A dependency left out is not configured (the service runs without it, or on its
    embedded default).
    """

    def port(proxy: ThreadedFaultProxy | None) -> int | None:
        return None if proxy is None else proxy.port

    settings: dict[str, Any] = {}
    if redis is not None:
        server, proxy = redis
        settings["redis_url"] = server.url_for(port=port(proxy))
    if database is not None:
        pg, proxy, dbname = database
        settings["database_url"] = pg.dsn_for(dbname, port=port(proxy))
    if s3 is not None:
        moto, proxy, bucket = s3
        settings.update(
            s3_endpoint_url=moto.endpoint_url_for(port=port(proxy)),
            s3_bucket=bucket,
            s3_region=moto.region,
            s3_access_key_id=moto.access_key,
            s3_secret_access_key=moto.secret_key,
        )
    if openai is not None:
        stub, proxy, api_key = openai
        settings.update(openai_api_key=api_key, openai_base_url=stub.base_url_for(port=port(proxy)))
    return settings


def settings_env(
    settings: Mapping[str, Any], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A child's environment: ``base`` (default ``os.environ``) without any inventario
    setting, plus ``settings`` as the upper-case variables inventario reads."""
    from inventario.config import Settings

    ours = {name.upper() for name in Settings.model_fields}
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k.upper() not in ours}
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


class Stack:
    """The private servers, their fault proxies and (optionally) the service.

    ``start()`` starts each dependency it can and says what it started (or why not) on
    ``out``; with ``service=True`` it then starts :class:`ServiceProcess` configured
    with ``settings`` plus the dependencies' :func:`service_settings`. ``close()`` (or
    leaving the ``with`` block) stops the service, the proxies and the servers and
    deletes their data.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
        service: bool = True,
        ai_answer: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.out = out
        self.settings = dict(settings or {})
        self.with_service = service
        self.ai_answer = ai_answer
        self.deps: dict[str, Dependency] = {n: Dependency(n, label) for n, label in DEPENDENCIES}
        self.service: ServiceProcess | None = None
        self._closeables: list[Callable[[], None]] = []
        self.api_key = f"sk-stack-{uuid.uuid4().hex}"
        # /health's details (breakers, why, transitions) need the admin token
        self.admin_token = f"stack-admin-{uuid.uuid4().hex}"

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        starters = {
            "redis": self._start_redis,
            "database": self._start_postgres,
            "s3": self._start_s3,
            "openai": self._start_openai,
        }
        for name, dep in self.deps.items():
            if dep.missing is None:
                try:
                    starters[name](dep)
                except Exception as exc:
                    dep.missing = f"failed to start: {type(exc).__name__}: {exc}"
            if dep.available:
                assert dep.proxy is not None
                where = ""
                if isinstance(dep.server, ServerProcess):
                    where = f" (pid {dep.server.pid}, data {dep.server.base_dir})"
                self._say(
                    f"  {name:<9} {dep.label} on {dep.proxy.upstream_host}:"
                    f"{dep.proxy.upstream_port}{where}, fault proxy on :{dep.proxy.port}"
                )
            else:
                self._say(f"  {name:<9} NOT STARTED: {dep.missing}")
        if not self.with_service:
            return
        self.service = ServiceProcess(settings_env(self.service_settings()))
        self._closeables.insert(0, self.service.close)
        self.service.start()
        self._say(
            f"  service   {self.service.url} (pid {self.service.pid}, data "
            f"{self.service.base_dir}); status page {self.service.url}/status"
        )

    def _keep(self, close: Callable[[], None]) -> None:
        self._closeables.append(close)

    def _start_redis(self, dep: Dependency) -> None:
        dep.missing = redis_unavailable()
        if dep.missing:
            return
        server = RedisServer()
        self._keep(server.close)
        server.start()
        dep.server = server
        dep.proxy = fault_proxy(server.host, server.port)
        self._keep(dep.proxy.stop)

    def _start_postgres(self, dep: Dependency) -> None:
        pg_bin = find_pg_bin()
        dep.missing = postgres_unavailable(pg_bin)
        if dep.missing or pg_bin is None:
            return
        server = PostgresServer(pg_bin=pg_bin)
        self._keep(server.close)
        self._keep(TEMPLATE.close)  # the initdb copied into the cluster
        server.start()
        server.create_database(DATABASE)
        dep.server = server
        dep.label = f"PostgreSQL ({pg_bin})"
        dep.proxy = fault_proxy(server.host, server.port)
        self._keep(dep.proxy.stop)

    def _start_s3(self, dep: Dependency) -> None:
        dep.missing = s3_unavailable()
        if dep.missing:
            return
        server = S3Server()
        self._keep(server.close)
        server.start()
        server.create_bucket(BUCKET)
        dep.server = server
        dep.proxy = fault_proxy(server.host, server.port)
        self._keep(dep.proxy.stop)

    def _start_openai(self, dep: Dependency) -> None:
        stub = OpenAIStub().start()
        self._keep(stub.close)
        if self.ai_answer is not None:
            stub.default_content = self.ai_answer
        dep.server = stub
        dep.proxy = fault_proxy(stub.host, stub.port)
        self._keep(dep.proxy.stop)

    def service_settings(self) -> dict[str, Any]:
        """The service's settings: ``settings`` plus every started dependency's."""
        deps = self.deps

        def up(name: str) -> Dependency | None:
            return deps[name] if deps[name].available else None

        redis, db, s3, ai = up("redis"), up("database"), up("s3"), up("openai")
        return {
            "admin_token": self.admin_token,
            **self.settings,
            **service_settings(
                redis=(redis.server, redis.proxy) if redis and redis.proxy else None,
                database=(db.server, db.proxy, DATABASE) if db and db.proxy else None,
                s3=(s3.server, s3.proxy, BUCKET) if s3 and s3.proxy else None,
                openai=(ai.server, ai.proxy, self.api_key) if ai and ai.proxy else None,
            ),
        }

    def service_log_tail(self, lines: int = 40) -> str:
        return "" if self.service is None else self.service.log_tail(lines)

    def close(self) -> None:
        """Stop the service, the proxies and the servers; delete their data."""
        for close in self._closeables:
            with contextlib.suppress(Exception):
                close()
        self._closeables.clear()
