"""``AsyncDatabase.run_write``: a synchronous unit of work, on a SQLite file run whole in
one trip to the writer's thread; elsewhere over the pool with ``run_sync``."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from brownout import BreakerConfig, State
from brownout.sql import AsyncDatabase
from brownout.testing import aeventually
from tests.adapters.test_sql import CREATE, async_dbs, async_url, sqlite_url

__all__ = ["async_dbs", "async_url"]  # fixtures, imported to be used here


def add(conn: Connection, name: str, qty: int) -> int:
    conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": name, "q": qty})
    return int(conn.execute(text("SELECT COUNT(*) FROM items")).scalar_one())


async def test_run_write_commits_and_returns(
    async_dbs: Callable[..., AsyncDatabase], async_url: str
) -> None:
    """PostgreSQL (run_sync over asyncpg) and a SQLite file (the writer's thread): the
    unit's value comes back once its work is committed (another connection sees it)."""
    db = async_dbs(async_url)
    await db.execute("DROP TABLE IF EXISTS items")
    await db.execute("CREATE TABLE items (name TEXT UNIQUE NOT NULL, qty INTEGER)")
    assert await db.run_write(add, "a", 1) == 1
    assert await db.run_write(add, name="b", qty=2) == 2
    assert await db.scalar("SELECT SUM(qty) FROM items") == 3
    assert db.breaker.state is State.CLOSED


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the trips from the event loop to aiosqlite's thread."""
    hops: list[int] = []
    real = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(1)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return hops


async def test_one_trip_to_the_writer_thread_whatever_the_statements(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit of 40 statements costs the event loop as many trips to the driver's thread
    as a unit of one: the statements run there, not one round trip each."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)

    def many(conn: Connection, n: int, prefix: str) -> None:
        for i in range(n):
            conn.execute(
                text("INSERT INTO items (name, qty) VALUES (:n, 1)"), {"n": f"{prefix}{i}"}
            )
            conn.execute(text("SELECT qty FROM items WHERE name = :n"), {"n": f"{prefix}{i}"})

    await db.run_write(many, 1, "warm")  # connections opened, engines built
    hops = _count_hops(monkeypatch)
    await db.run_write(many, 1, "one")
    one = len(hops)
    hops.clear()
    await db.run_write(many, 20, "forty")
    assert len(hops) == one
    # the same 40 statements through write_session take a trip (or more) each
    hops.clear()
    async with db.write_session() as s:
        for i in range(20):
            await s.execute(text("INSERT INTO items (name, qty) VALUES (:n, 1)"), {"n": f"s{i}"})
            await s.execute(text("SELECT qty FROM items WHERE name = :n"), {"n": f"s{i}"})
    assert len(hops) > one + 40
    assert await db.scalar("SELECT COUNT(*) FROM items") == 1 + 1 + 20 + 20


async def test_a_unit_that_raises_leaves_nothing_and_the_others_commit(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """Units queued together share a transaction (one batch, one commit); one that raises
    half-way (after its first insert) is undone alone, to its savepoint: none of its rows
    stay, every other unit's rows do, and the breaker counts nothing (the caller's
    error)."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    writer = db._writer
    assert writer is not None

    def two_rows(conn: Connection, i: int) -> int:
        conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": f"a{i}", "q": i})
        if i % 4 == 0:
            raise ValueError(f"unit {i} gives up half-way")
        conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": f"b{i}", "q": i})
        return i

    # a unit on a free writer runs at once: one holds it while the 24 queue behind it
    running, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> None:
        running.set()
        release.wait(5)

    first = asyncio.ensure_future(db.run_write(held))
    await asyncio.to_thread(running.wait, 5)
    queued = [asyncio.ensure_future(db.run_write(two_rows, i)) for i in range(24)]
    await aeventually(
        lambda: writer._forming is not None and len(writer._forming.units) == 24,
        what="the 24 units waiting in one batch",
    )
    release.set()
    await first
    results = await asyncio.gather(*queued, return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, ValueError)]
    assert failed == list(range(0, 24, 4))  # unit 0 too: the first of the transaction
    assert [r for r in results if not isinstance(r, BaseException)] == [
        i for i in range(24) if i % 4
    ]
    rows = {row[0] for row in (await db.execute("SELECT name FROM items")).all()}
    assert rows == {f"{p}{i}" for i in range(24) if i % 4 for p in "ab"}
    # queued together: one transaction, one commit, with the 18 units that did not raise
    # (and the held unit's before it)
    assert (writer.batch_commits, writer.batch_units) == (2, 1 + 18)
    assert db.breaker.state is State.CLOSED
    assert "failure" not in db.stats.operations["session"]


async def test_a_database_failure_mid_unit_commits_nothing_of_its_transaction(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A failure of the database itself in the middle of a unit ends the shared
    transaction: every unit in it gets the error, none of their rows is kept, the
    failure is counted by each of them; the units of the batch after it start a new
    transaction and commit, and the writer goes on."""
    db = async_dbs(
        sqlite_url(tmp_path, is_async=True), config=BreakerConfig(consecutive_failures=9)
    )
    await db.execute(CREATE)
    started, gate = threading.Event(), threading.Event()

    def slow_first(conn: Connection, i: int) -> int:
        conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, :q)"), {"n": f"n{i}", "q": i})
        if i == 0:
            started.set()
            gate.wait(5)  # the others queue meanwhile: they form the next batch
        if i == 3:
            raise sa_exc.OperationalError(
                "INSERT", {}, sqlite3.OperationalError("disk I/O error (simulated)")
            )
        return i

    first = asyncio.ensure_future(db.run_write(slow_first, 0))
    await asyncio.to_thread(started.wait, 5)  # the first unit runs in the writer's thread
    rest = [asyncio.ensure_future(db.run_write(slow_first, i)) for i in range(1, 6)]
    writer = db._writer
    assert writer is not None
    await aeventually(
        lambda: writer._forming is not None and len(writer._forming.units) == 5,
        what="the five other units queued in one batch",
    )
    gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[0] == 0  # its batch committed before the failure
    assert all(isinstance(r, sa_exc.OperationalError) for r in results[1:4]), results
    # the units after the failure start a new transaction and commit
    assert results[4:] == [4, 5], results
    kept = {row[0] for row in (await db.execute("SELECT qty FROM items")).all()}
    assert kept == {0, 4, 5}
    assert db.stats.operations["session"]["failure"] == 3  # each unit hears it
    assert await db.run_write(add, "after", 9) == len(kept) + 1


async def test_concurrent_read_modify_write_loses_no_update(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """Many concurrent units reading a counter and writing it back, mixed with
    write_session units: one at a time, in arrival order, no lost update, and no
    'database is locked' although SQLite's busy timeout is tiny."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), sqlite_timeout=0.05, writer_wait=60)
    await db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    await db.execute("INSERT INTO counter VALUES (1, 0)")
    order: list[int] = []

    def bump(conn: Connection, i: int) -> int:
        order.append(i)
        n = int(conn.execute(text("SELECT n FROM counter WHERE id = 1")).scalar_one())
        conn.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
        return n

    async def bump_async(i: int) -> int:
        async with db.write_session() as s:
            order.append(i)
            n = int((await s.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one())
            await asyncio.sleep(0)
            await s.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
            return n

    seen = await asyncio.gather(
        *(bump_async(i) if i % 5 == 0 else db.run_write(bump, i) for i in range(60))
    )
    assert sorted(seen) == list(range(60))  # every unit read the one before it
    assert await db.scalar("SELECT n FROM counter") == 60
    assert order == list(range(60))
    assert db.breaker.state is State.CLOSED


async def test_a_cancelled_unit_is_undone(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A caller cancelled while its unit runs in the writer's thread: the thread finishes
    the function, then undoes its work (it was not released yet); the units after it
    commit."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    running, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> None:
        conn.execute(text("INSERT INTO items (name, qty) VALUES ('cancelled', 0)"))
        running.set()
        release.wait(5)

    unit = asyncio.ensure_future(db.run_write(held))
    await asyncio.to_thread(running.wait, 5)
    after = asyncio.ensure_future(db.run_write(add, "after", 1))
    unit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unit  # at once: the function is still running in the thread
    release.set()
    assert await after == 1
    assert [r[0] for r in (await db.execute("SELECT name FROM items")).all()] == ["after"]


async def test_units_arriving_during_a_batch_form_the_next_one_trip_and_commit_each(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a batch runs in the writer's thread, the units arriving wait together: the
    next batch takes them all, in one trip to the thread (statements, savepoints and
    commit: no trip per unit, no reset of the connection after it) and one commit. A
    unit waits for at most the batch running when it came and its own."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    writer = db._writer
    assert writer is not None
    await db.run_write(add, "warm", 0)  # the writer's connection opened
    running, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> str:
        conn.execute(text("INSERT INTO items (name, qty) VALUES ('held', 1)"))
        running.set()
        release.wait(5)
        return "held"

    hops = _count_hops(monkeypatch)
    commits = writer.batch_commits
    first = asyncio.ensure_future(db.run_write(held))
    await asyncio.to_thread(running.wait, 5)
    later = [asyncio.ensure_future(db.run_write(add, f"u{i}", i)) for i in range(10)]
    await aeventually(
        lambda: writer._forming is not None and len(writer._forming.units) == 10,
        what="the ten units waiting in one batch",
    )
    release.set()
    assert await first == "held"
    assert sorted(await asyncio.gather(*later)) == list(range(3, 13))  # COUNT(*) after each
    assert writer.batch_commits - commits == 2
    assert len(hops) == 2  # one trip per batch
    assert await db.scalar("SELECT COUNT(*) FROM items") == 12


async def test_a_unit_waiting_longer_than_writer_wait_gives_up_without_running(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A write_session unit holds the writer: a run_write unit waits ``writer_wait``, then
    raises the counted ``sqlalchemy.exc.TimeoutError`` and never runs, even once the
    writer is free again; the writer goes on."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), writer_wait=0.05)
    await db.execute(CREATE)
    ran: list[str] = []

    def late(conn: Connection) -> None:
        ran.append("late")
        conn.execute(text("INSERT INTO items (name, qty) VALUES ('late', 1)"))

    holding, free = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.write_session() as s:
            await s.execute(text("INSERT INTO items (name, qty) VALUES ('held', 1)"))
            holding.set()
            await free.wait()

    holder = asyncio.ensure_future(hold())
    await holding.wait()
    with pytest.raises(sa_exc.TimeoutError, match=r"writer stayed busy for 0\.05 s"):
        await db.run_write(late)
    free.set()
    await holder
    assert await db.run_write(add, "after", 1) == 2
    assert ran == []
    names = {r[0] for r in (await db.execute("SELECT name FROM items")).all()}
    assert names == {"held", "after"}
    assert db.stats.operations["session"]["failure"] == 1


async def test_a_unit_cancelled_before_its_batch_runs_is_not_run(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A caller cancelled while its unit waits for the writer: it leaves its batch (the
    function never runs); the other units of the batch run and commit."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    ran: list[str] = []

    def named(conn: Connection, name: str) -> str:
        ran.append(name)
        conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, 1)"), {"n": name})
        return name

    holding, free = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.write_session():
            holding.set()
            await free.wait()

    holder = asyncio.ensure_future(hold())
    await holding.wait()
    units = [asyncio.ensure_future(db.run_write(named, n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)  # all three queued in one batch
    units[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await units[1]
    free.set()
    await holder
    assert await units[0] == "a"
    assert await units[2] == "c"
    assert ran == ["a", "c"]
    assert [r[0] for r in (await db.execute("SELECT name FROM items ORDER BY id")).all()] == [
        "a",
        "c",
    ]


async def test_aclose_waits_for_the_last_batch_to_return_the_writer(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A unit is answered as soon as its batch committed, before the batch hands the
    writer's connection back: ``aclose`` right after waits for that, so nothing is left
    running on a disposed engine."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    writer = db._writer
    assert writer is not None
    assert await db.run_write(add, "last", 1) == 1
    await db.aclose()
    assert all(task.done() for task in writer._tasks)
    assert db.writer is not None
    assert db.writer.sync_engine.pool.checkedout() == 0


ACKNOWLEDGED = """
import asyncio, sys
from sqlalchemy import text
from brownout.sql import AsyncDatabase

def add(conn, name):
    conn.execute(text("INSERT INTO items (name, qty) VALUES (:n, 1)"), {"n": name})

async def main():
    db = AsyncDatabase.from_url(sys.argv[1])

    async def client(c):
        for i in range(1_000_000):
            await db.run_write(add, f"c{c}-{i}")
            print(f"c{c}-{i}", flush=True)  # answered: committed

    await asyncio.gather(*(client(c) for c in range(8)))

asyncio.run(main())
"""


def _answered_then_killed(url: str, wanted: int) -> list[str]:
    """Run ACKNOWLEDGED on ``url``, SIGKILL it once it printed ``wanted`` units; all it
    printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ACKNOWLEDGED), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    answered: list[str] = []
    try:
        while len(answered) < wanted:
            line = child.stdout.readline()
            assert line, child.stderr.read()[-2000:]
            answered.append(line.strip())
        child.kill()  # SIGKILL: no shutdown, the batch in flight is cut off
        rest, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return answered + rest.split()


async def test_every_answered_unit_survives_a_kill_9(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """Eight concurrent writers in a child process (batches of units sharing commits);
    the child prints each unit once ``run_write`` answered it and is killed -9 in the
    middle: every unit it printed is in the file afterwards."""
    url = sqlite_url(tmp_path, is_async=True)
    db = async_dbs(url)
    await db.execute(CREATE)
    await db.aclose()
    answered = await asyncio.to_thread(_answered_then_killed, url, 400)
    db = async_dbs(url)
    stored = {r[0] for r in (await db.execute("SELECT name FROM items")).all()}
    assert len(answered) >= 400
    assert not set(answered) - stored


CRASH = """
import asyncio, os, sys
from sqlalchemy import text
from brownout.sql import AsyncDatabase

def half(conn):
    conn.execute(text("UPDATE items SET qty = qty - 5 WHERE name = 'stock'"))
    conn.execute(text("INSERT INTO items (name, qty) VALUES ('movement', -5)"))
    os._exit(9)  # the process dies between the unit's statements and its commit

async def main():
    db = AsyncDatabase.from_url(sys.argv[1])
    await db.run_write(half)

asyncio.run(main())
"""


async def test_a_crash_in_the_middle_of_a_unit_leaves_nothing_half_written(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A process that dies inside a unit (after its update, before its commit): on the
    file afterwards, neither half of the unit is there."""
    url = sqlite_url(tmp_path, is_async=True)
    db = async_dbs(url)
    await db.execute(CREATE)
    await db.execute("INSERT INTO items (name, qty) VALUES ('stock', 100)")
    await db.aclose()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(CRASH), url],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    db = async_dbs(url)
    assert (await db.execute("SELECT name, qty FROM items ORDER BY id")).all() == [("stock", 100)]


async def test_sqlite_connections_are_not_pinged_at_checkout(
    async_dbs: Callable[..., AsyncDatabase], async_url: str
) -> None:
    """PostgreSQL connections are pinged when taken from the pool (one that died while
    idle is replaced); SQLite's, file handles in the process, are not: the ping was four
    round trips to aiosqlite's thread per checkout."""
    db = async_dbs(async_url)
    pings = [db.engine.sync_engine.pool._pre_ping]  # type: ignore[attr-defined]
    if db.writer is not None:
        pings.append(db.writer.sync_engine.pool._pre_ping)  # type: ignore[attr-defined]
    assert pings == [async_url.startswith("postgresql")] * len(pings)


async def test_run_read_reads_in_one_trip_and_commits_nothing(
    async_dbs: Callable[..., AsyncDatabase], async_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_read``: the function's value, from a pooled connection (both backends); on
    SQLite one trip to the connection's thread for the function, however many
    statements it runs; nothing it writes is kept."""
    db = async_dbs(async_url)
    await db.execute("DROP TABLE IF EXISTS items")
    await db.execute("CREATE TABLE items (name TEXT UNIQUE NOT NULL, qty INTEGER)")
    await db.run_write(add, "a", 1)

    def total(conn: Connection, times: int) -> int:
        return sum(
            int(conn.execute(text("SELECT SUM(qty) FROM items")).scalar_one()) for _ in range(times)
        )

    def sneaky(conn: Connection) -> None:
        conn.execute(text("INSERT INTO items (name, qty) VALUES ('sneaky', 5)"))

    assert await db.run_read(total, 1) == 1
    await db.run_read(sneaky)
    assert await db.scalar("SELECT COUNT(*) FROM items") == 1
    if async_url.startswith("sqlite"):
        hops = _count_hops(monkeypatch)
        await db.run_read(total, 1)
        one = len(hops)
        hops.clear()
        assert await db.run_read(total, 30) == 30
        assert len(hops) == one == 1  # the function (the rollback runs with it)
    assert db.breaker.state is State.CLOSED


class _Iterations:
    """Counts the event loop's iterations (``BaseEventLoop._run_once``) from its creation
    to its ``stop()``. On an otherwise idle loop each hop between the loop and a thread,
    each task start and each future's wake-up of a task costs one; under load each one
    waits for a whole iteration of everybody's work (several ms)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        if not hasattr(self.loop, "_run_once"):  # pragma: no cover - uvloop and such
            pytest.skip("this event loop does not let its iterations be counted")
        self.count = 0
        real = self.loop._run_once

        def counted() -> None:
            self.count += 1
            real()

        self.loop._run_once = counted  # type: ignore[attr-defined]

    def stop(self) -> int:
        del self.loop._run_once  # the class's method again
        return self.count


async def test_a_write_on_a_free_writer_costs_two_loop_iterations(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """``run_write`` on a free writer: the caller's own task takes the writer and hands
    the batch to the writer's thread at once (no task started for it, none for the trip),
    the thread's answer wakes it, and the connection goes back to the pool without a
    task of its own (SQLAlchemy's ``async with`` exit starts one and shields it: three
    more iterations). Nine iterations before, two now: the thread's answer, the
    caller's wake-up."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    await db.run_write(add, "warm", 0)  # the writer's connection opened
    writer = db._writer
    assert writer is not None
    iterations = _Iterations()
    try:
        assert await db.run_write(add, "one", 1) == 2
    finally:
        spent = iterations.stop()
    assert spent <= 2, spent
    assert not writer._tasks  # nothing left running after it
    assert db.writer is not None and db.writer.sync_engine.pool.checkedout() == 0
    assert db.stats.operations["session"]["success"] == 3  # CREATE, warm, one


async def test_the_batch_behind_a_batch_runs_in_its_task_without_waiting_for_its_own(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load the writer hands itself from batch to batch: the task that ran a batch
    answers its units and sends the batch waiting next to the thread in the same step,
    on the connection it holds (no wake-up of the next batch's task first, no checkout,
    no closing task): no loop iteration between a batch's answer from the thread and
    the next batch's trip to it (seven before). A caller's own task that took the free
    writer hands it on instead (its caller may be cancelled: others' units would not be
    answered): one iteration, the next batch's task waking. And the thread answers the
    units of a batch's task itself: their callers wake no later than that task (one
    iteration after it before)."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), writer_group=1)  # a batch a unit
    await db.execute(CREATE)
    writer = db._writer
    assert writer is not None
    await db.run_write(add, "warm", 0)
    gates = [(threading.Event(), threading.Event()) for _ in range(2)]

    def held(conn: Connection, which: int) -> int:
        running, release = gates[which]
        running.set()
        release.wait(5)
        return which

    iterations = _Iterations()
    marks: list[tuple[str, int]] = []
    real = aiosqlite.Connection._execute

    async def marked(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        marks.append(("trip", iterations.count))
        try:
            return await real(self, fn, *args, **kwargs)
        finally:
            marks.append(("answer", iterations.count))

    monkeypatch.setattr(aiosqlite.Connection, "_execute", marked)
    try:
        first = asyncio.ensure_future(db.run_write(held, 0))  # the writer is free
        await asyncio.to_thread(gates[0][0].wait, 5)
        second = asyncio.ensure_future(db.run_write(held, 1))  # waits: a task of its own
        woke: dict[int, int] = {}

        async def timed(i: int) -> int:
            value = await db.run_write(add, f"u{i}", i)
            woke[i] = iterations.count
            return value

        later = [asyncio.ensure_future(timed(i)) for i in range(3)]
        await aeventually(lambda: len(writer._pending) == 4, what="four batches waiting")
        gates[0][1].set()
        assert await first == 0
        await asyncio.to_thread(gates[1][0].wait, 5)  # the second batch in the thread
        gates[1][1].set()
        assert await second == 1
        assert sorted(await asyncio.gather(*later)) == list(range(2, 5))  # COUNT(*) after each
        # the callers may be answered before the batch's task wakes up for its last mark
        await aeventually(lambda: not writer._tasks, what="the batch tasks done")
    finally:
        iterations.stop()
    assert [kind for kind, _ in marks] == ["trip", "answer"] * 5  # one trip a batch
    at = [count for _, count in marks]
    gaps = [at[i + 1] - at[i] for i in range(1, len(at) - 1, 2)]  # answer -> next trip
    assert gaps == [1, 0, 0, 0], gaps
    answers = at[1::2]  # first, second, then the three later batches
    assert [woke[i] <= answers[2 + i] for i in range(3)] == [True] * 3, (woke, answers)
    assert (writer.batch_commits, writer.batch_units) == (6, 6)
    assert db.stats.operations["session"]["success"] == 7  # CREATE, warm, held twice, three


def _close_under_it(conn: Connection) -> None:
    """Closes the ``sqlite3`` connection itself under the unit: the rollback that should
    end its transaction fails, so the connection's state is not known."""
    dbapi = conn.connection.dbapi_connection
    getattr(dbapi, "_conn", dbapi).close()
    raise ValueError("the connection was closed under the unit")


async def test_a_broken_writer_connection_is_replaced(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A batch that leaves the writer's connection in a state not known (its rollback
    failed) drops it: the unit gets its error, the next batch opens a new connection and
    commits, and nothing is left checked out."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    assert db.writer is not None
    await db.run_write(add, "before", 1)
    pool = db.writer.sync_engine.pool
    opened: list[object] = []
    event.listen(db.writer.sync_engine, "connect", lambda dbapi, record: opened.append(dbapi))
    with pytest.raises(Exception):  # noqa: B017 - the unit's error or the lost transaction's
        await db.run_write(_close_under_it)
    assert pool.checkedout() == 0
    assert await db.run_write(add, "after", 2) == 2
    assert len(opened) == 1  # a new connection for the next batch
    assert pool.checkedout() == 0
    assert await db.scalar("SELECT SUM(qty) FROM items") == 3


async def test_a_read_costs_one_trip_and_two_loop_iterations(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_read`` on SQLite: the function and the rollback of what it began run in one
    trip to the pooled connection's thread; the connection goes back to the pool without
    the pool's rollback (a second trip) and without a closing task (three iterations):
    seven iterations before, two now. What the function wrote is not kept, and the
    connection it leaves is clean for the next read."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    await db.run_write(add, "a", 1)

    def sneaky_count(conn: Connection) -> int:
        conn.execute(text("INSERT INTO items (name, qty) VALUES ('sneaky', 5)"))
        return int(conn.execute(text("SELECT COUNT(*) FROM items")).scalar_one())

    assert await db.run_read(sneaky_count) == 2  # the pooled connection opened
    hops = _count_hops(monkeypatch)
    iterations = _Iterations()
    try:
        assert await db.run_read(sneaky_count) == 2  # the first sneaky row was not kept
    finally:
        spent = iterations.stop()
    assert (len(hops), spent) == (1, 2)
    assert db.engine.sync_engine.pool.checkedout() == 0
    assert await db.scalar("SELECT COUNT(*) FROM items") == 1


async def test_a_read_that_breaks_its_connection_drops_it(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase]
) -> None:
    """A read whose connection cannot be rolled back afterwards (closed under it): the
    caller gets the error, the connection is dropped, not handed to the next read."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True))
    await db.execute(CREATE)
    await db.run_write(add, "a", 1)
    pool = db.engine.sync_engine.pool
    assert pool.checkedin() == 1  # the one connection the reads take
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda dbapi, record: opened.append(dbapi))
    with pytest.raises(ValueError, match="closed under the unit"):
        await db.run_read(_close_under_it)
    assert pool.checkedout() == 0
    assert await db.run_read(lambda conn: conn.execute(text("SELECT 1")).scalar_one()) == 1
    assert len(opened) == 1  # a new connection: the broken one was dropped


async def test_reads_beyond_the_pool_close_their_overflow_connections(
    tmp_path: Path, async_dbs: Callable[..., AsyncDatabase], caplog: pytest.LogCaptureFixture
) -> None:
    """More concurrent reads than the pool keeps: the overflow connections are closed
    when returned (their aiosqlite threads stop), none fails to close, and the pool
    keeps its own."""
    db = async_dbs(sqlite_url(tmp_path, is_async=True), pool_size=2, max_overflow=10)
    await db.execute(CREATE)
    await db.run_write(add, "a", 1)
    threads = threading.active_count()
    started = asyncio.Event()
    inside: list[int] = []

    def slow(conn: Connection) -> int:
        inside.append(1)
        while len(inside) < 10 and not started.is_set():
            threading.Event().wait(0.01)  # until ten reads hold a connection each
        return int(conn.execute(text("SELECT COUNT(*) FROM items")).scalar_one())

    reads = [asyncio.ensure_future(db.run_read(slow)) for _ in range(10)]
    try:
        assert await asyncio.wait_for(asyncio.gather(*reads), 30) == [1] * 10
    finally:
        started.set()
    pool = db.engine.sync_engine.pool
    assert (pool.checkedout(), pool.checkedin()) == (0, 2), pool.status()
    assert not [r for r in caplog.records if "closing connection" in r.getMessage()]
    await aeventually(
        lambda: threading.active_count() <= threads + 1,  # the pool's second connection
        what="the overflow connections' threads stopped",
    )
