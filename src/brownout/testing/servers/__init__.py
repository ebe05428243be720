"""Real private servers for tests and demos: Redis, PostgreSQL, moto S3, an OpenAI stub.

Each runs on a free loopback port with a private data dir, can be stopped, killed,
paused and restarted, and is cleaned up at interpreter exit at the latest::

    from brownout.testing.servers import RedisServer, redis_unavailable

    if (reason := redis_unavailable()) is None:
        server = RedisServer()
        server.start()
        ...
        server.close()

Only the standard library is needed to import this package; :class:`S3Server` imports
moto and boto3 when it starts.
"""

from __future__ import annotations

from brownout.testing.servers._process import (
    LOOPBACK,
    ServerProcess,
    find_binary,
    free_port,
    make_temp_dir,
    port_open,
    wait_until,
)
from brownout.testing.servers.openai_stub import OpenAIStub, RecordedRequest, Rule
from brownout.testing.servers.postgres import PostgresServer, find_pg_bin, postgres_unavailable
from brownout.testing.servers.redis import RedisServer, redis_unavailable
from brownout.testing.servers.s3 import S3Server, s3_unavailable

__all__ = [
    "LOOPBACK",
    "OpenAIStub",
    "PostgresServer",
    "RecordedRequest",
    "RedisServer",
    "Rule",
    "S3Server",
    "ServerProcess",
    "find_binary",
    "find_pg_bin",
    "free_port",
    "make_temp_dir",
    "port_open",
    "postgres_unavailable",
    "redis_unavailable",
    "s3_unavailable",
    "wait_until",
]
