"""A worker that accepts writes into the outbox and replays them into PostgreSQL.

Run by tests/outbox/test_crash.py, which kills it with SIGKILL at random
moments and starts it again. It may also kill itself right after a database
commit and before the journal update (``--crash-after-commit P``), the one
moment an exactly-once design must survive.

Protocol on stdout: ``ACCEPTED <key>`` once a submit returned (the intent is
durable), ``CRASH-AFTER-COMMIT <key>`` just before killing itself there,
``DONE`` when every write is accepted and the journal is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys

from sqlalchemy import text

from brownout.outbox import Intent, Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--outbox", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--crash-after-commit", type=float, default=0.0)
    args = p.parse_args()
    rng = random.Random(args.seed + os.getpid())

    def maybe_die(intent: Intent) -> None:
        if rng.random() < args.crash_after_commit:
            print(f"CRASH-AFTER-COMMIT {intent.key}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    db = AsyncDatabase.from_url(args.dsn)
    box = Outbox(args.outbox)
    applier = SqlApplier(db, after_commit=maybe_die)

    @applier.handler("move")
    async def move(session: object, payload: dict[str, object]) -> None:
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO moves (ikey, stream, n) VALUES (:k, :s, :n)"), payload
        )

    await applier.ensure_schema()
    replayer = Replayer(box, applier)
    for i in range(args.total):
        key = f"w-{i}"
        if box.status(key) is None:
            box.submit(
                "move",
                {"k": key, "s": f"s{i % 3}", "n": i},
                stream=f"s{i % 3}",
                idempotency_key=key,
            )
        print(f"ACCEPTED {key}", flush=True)
        if rng.random() < 0.3:
            await replayer.drain(limit=rng.randint(1, 4))
    while box.pending_count():
        await replayer.drain()
    print("DONE", flush=True)
    box.close()
    await db.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
