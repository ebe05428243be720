"""Instruction counts of one Redis GET or SET, raw redis-py vs the adapter, for callgrind.

Wall-clock figures on a shared machine are noise; instruction counts are not. Run
each variant at two loop lengths and divide the difference by the difference in
calls, which cancels the interpreter's start-up, imports and connection set-up::

    redis-server --port 6399 --save '' --appendonly no &     # a private server
    for v in raw adapter metrics; do for n in 2000 4000; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/adapter_callgrind.py $v get $n \\
        --url redis://127.0.0.1:6399/0 2>&1 | grep refs
    done; done

Variants: ``raw`` (``redis.asyncio.Redis``, built with the adapter's
``client_settings()``), ``adapter`` (``AsyncRedisAdapter``), ``metrics``
(``AsyncRedisAdapter`` with metrics attached as inventario attaches them: its
breaker in a ``Registry``, a ``PrometheusMetrics`` attached to the registry and
to the adapter). Without ``--url`` the client is an in-memory fake that answers
at once (the adapter's own work only). One task, sequential awaits; only the
client process is counted (the server runs outside valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

VALUE = b"x" * 100


class FakeRedis:
    """An in-memory stand-in for ``redis.asyncio.Redis``: answers at once, no I/O."""

    async def get(self, key: str) -> bytes:
        return VALUE

    async def set(self, key: str, value: bytes, **options: Any) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def run(variant: str, op: str, n: int, url: str | None) -> None:
    import redis.asyncio as aredis

    from brownout import Registry
    from brownout.prometheus import PrometheusMetrics
    from brownout.redis import AsyncRedisAdapter

    client: Any
    if url is None:
        client = FakeRedis()
    else:
        client = aredis.Redis.from_url(url, **AsyncRedisAdapter.client_settings())
    target: Any = client
    metrics = None
    if variant == "adapter":
        target = AsyncRedisAdapter(client, name="cg")
    elif variant == "metrics":
        registry = Registry.with_defaults()
        metrics = PrometheusMetrics()
        metrics.attach(registry)
        target = AsyncRedisAdapter(client, name="cg-m", registry=registry)
        metrics.attach(target)
    elif variant != "raw":
        raise SystemExit(f"unknown variant {variant!r}: raw, adapter or metrics")
    await client.set("cg:key", VALUE)  # a hit for GET; the connection made before the loop
    if op == "get":
        for _ in range(n):
            await target.get("cg:key")
    elif op == "set":
        for _ in range(n):
            await target.set("cg:key", VALUE)
    else:
        raise SystemExit(f"unknown operation {op!r}: get or set")
    if metrics is not None:
        metrics.render()  # the scrape reads what the calls counted
    await client.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("variant", choices=("raw", "adapter", "metrics"))
    p.add_argument("op", choices=("get", "set"))
    p.add_argument("n", type=int)
    p.add_argument("--url", help="a Redis server (default: an in-memory fake client)")
    args = p.parse_args(argv)
    asyncio.run(run(args.variant, args.op, args.n, args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
