"""Batched replay into a real database (SQLite file, private PostgreSQL): many intents per
transaction, each applied once, FIFO per stream, and a bad intent isolated from its batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from brownout.outbox import Intent, Outbox, Replayer, SqlApplier
from brownout.sql import AsyncDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    else:
        dsn: str = request.getfixturevalue("fresh_database")
        url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    database = AsyncDatabase.from_url(url)
    async with database.session() as s:
        await s.execute(
            text(
                "CREATE TABLE moves (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
                "n INTEGER NOT NULL, ikey TEXT NOT NULL UNIQUE)"
            )
        )
    yield database
    await database.aclose()


def make_applier(db: AsyncDatabase, poison: set[int] | None = None) -> SqlApplier:
    applier = SqlApplier(db)
    poison = poison if poison is not None else set()

    @applier.handler("move")
    async def move(session: object, payload: dict[str, object]) -> None:
        # a row first, then the failure: a half-applied intent must leave nothing behind
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO moves (id, stream, n, ikey) VALUES (:id, :s, :n, :k)"), payload
        )
        if payload["id"] in poison:
            raise ValueError(f"intent {payload['id']} is bad")

    return applier


def submit(box: Outbox, i: int, stream: str) -> Intent:
    payload = {"id": i, "s": stream, "n": i, "k": f"key-{i}"}
    return box.submit("move", payload, stream=stream, idempotency_key=f"key-{i}")


async def rows(db: AsyncDatabase) -> list[tuple[int, str, int]]:
    async with db.session() as s:
        result = await s.execute(text("SELECT id, stream, n FROM moves ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in result]


def count_commits(db: AsyncDatabase) -> list[int]:
    commits: list[int] = []
    writes = db.writer if db.writer is not None else db.engine  # SQLite files: the writer
    event.listen(writes.sync_engine, "commit", lambda conn: commits.append(1))
    return commits


pytestmark = pytest.mark.servers


async def test_many_intents_share_one_transaction_each_once_in_stream_order(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    for i in range(300):
        submit(box, i, f"s{i % 7}")
    commits = count_commits(db)
    report = await Replayer(box, applier, batch_size=100).drain()
    assert report.applied == 300 and report.failed == 0
    assert len(commits) == 3  # three batches of 100, one transaction each
    got = await rows(db)
    assert [r[0] for r in got] == list(range(300))  # each once
    applied = await db.scalar(text("SELECT COUNT(*) FROM brownout_applied"))
    assert applied == 300  # the keys, committed with the effects
    assert box.pending_count() == 0 and box.counters()["replayed"] == 300
    box.close()


async def test_a_bad_intent_is_isolated_and_its_stream_waits_behind_it(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db", max_attempts=2)
    applier = make_applier(db, poison={7})
    await applier.ensure_schema()
    streams = {i: f"s{i % 3}" for i in range(30)}  # 7 is in s1
    for i, stream in streams.items():
        submit(box, i, stream)
    replayer = Replayer(box, applier, batch_size=30, backoff=(3600, 3600))
    report = await replayer.drain()
    # the rest of the batch is applied: s0 and s2 whole, s1 up to the bad intent
    assert report.failed == 1 and report.dead == 0
    assert report.errors and "intent 7 is bad" in report.errors[0]
    expected = sorted(i for i, s in streams.items() if s != "s1" or i < 7)
    assert [r[0] for r in await rows(db)] == expected
    assert report.applied == len(expected)
    (bad, *behind) = box.pending()
    assert bad.key == "key-7" and bad.attempts == 1 and "intent 7 is bad" in (bad.last_error or "")
    assert [i.key for i in behind] == [f"key-{i}" for i in range(10, 30, 3)]
    # retried (no backoff now): dead-lettered alone, then its stream goes on in order
    report = await replayer.drain()
    assert report.applied == 0 and report.failed == 0  # it waits for its backoff
    await _expire_backoff(box)
    report = await replayer.drain()
    assert report.dead == 1 and report.applied == len(behind)
    assert [d.key for d in box.dead_letters()] == ["key-7"]
    got = await rows(db)
    assert [r[0] for r in got if r[1] == "s1"] == [i for i in range(1, 30, 3) if i != 7]
    assert len(got) == 29 and box.pending_count() == 0
    box.close()


async def _expire_backoff(box: Outbox) -> None:
    with box._tx("test: end the backoff") as conn:
        conn.execute("UPDATE intents SET not_before = 0")


async def test_a_crash_mid_batch_applies_nothing_twice(tmp_path: Path, db: AsyncDatabase) -> None:
    """Killed inside a batch's transaction (nothing of it committed), then right after a
    commit and before the journal update: the replay applies each intent once."""
    box = Outbox(tmp_path / "o.db")
    applier = make_applier(db)
    await applier.ensure_schema()
    for i in range(40):
        submit(box, i, f"s{i % 4}")
    calls = {"n": 0}
    inner = applier._handlers["move"]

    async def dies_at_the_25th(session: object, payload: object) -> None:
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt("simulated kill inside the batch transaction")
        await inner(session, payload)  # type: ignore[arg-type]

    applier.register("move", dies_at_the_25th)
    with pytest.raises(KeyboardInterrupt):
        await Replayer(box, applier, batch_size=40).drain()
    assert await rows(db) == [] and box.pending_count() == 40  # rolled back whole

    applier.register("move", inner)
    armed = {"on": True}

    def dies_after_commit(intent: Intent) -> None:
        if armed["on"]:
            armed["on"] = False
            raise KeyboardInterrupt("simulated kill between commit and journal update")

    applier._after_commit = dies_after_commit
    with pytest.raises(KeyboardInterrupt):
        await Replayer(box, applier, batch_size=16).drain()
    assert len(await rows(db)) == 16 and box.pending_count() == 40  # journal not updated
    report = await Replayer(box, applier, batch_size=16).drain()
    assert report.applied == 40
    got = await rows(db)
    assert [r[0] for r in got] == list(range(40))  # once each
    for s in range(4):
        assert [r[2] for r in sorted(got) if r[1] == f"s{s}"] == list(range(s, 40, 4))
    box.close()


async def test_an_outage_mid_batch_keeps_the_rest_waiting(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db", max_attempts=1)
    applier = make_applier(db)
    await applier.ensure_schema()
    for i in range(10):
        submit(box, i, f"s{i % 2}")
    inner = applier._handlers["move"]

    async def outage_at_4(session: object, payload: dict[str, object]) -> None:
        if payload["id"] == 4:
            raise ConnectionResetError("the database went away")
        await inner(session, payload)

    applier.register("move", outage_at_4)
    report = await Replayer(box, applier, batch_size=10).drain()
    assert report.stopped is not None and "went away" in report.stopped
    assert report.failed == report.dead == 0 and not box.dead_letters()
    assert box.pending_count() == 10 - report.applied
    assert all(i.attempts == 0 for i in box.pending())
    applier.register("move", inner)
    report = await Replayer(box, applier).drain()
    assert [r[0] for r in await rows(db)] == list(range(10))
    box.close()


async def test_a_batch_handler_takes_a_run_in_one_call_and_a_bad_row_is_found_by_bisection(
    tmp_path: Path, db: AsyncDatabase
) -> None:
    box = Outbox(tmp_path / "o.db", max_attempts=1)
    applier = SqlApplier(db)
    calls: list[int] = []

    @applier.batch_handler("move")
    async def moves(session: object, payloads: list[dict[str, object]]) -> None:
        calls.append(len(payloads))
        await session.execute(  # type: ignore[attr-defined]
            text("INSERT INTO moves (id, stream, n, ikey) VALUES (:id, :s, :n, :k)"), payloads
        )

    await applier.ensure_schema()
    async with db.session() as s:  # a row in the way: intent 21's insert violates the key
        await s.execute(text("INSERT INTO moves (id, stream, n, ikey) VALUES (21, 'x', 0, 'x')"))
    for i in range(64):
        submit(box, i, f"s{i % 4}")
    report = await Replayer(box, applier, batch_size=64).drain()
    assert calls[0] == 64  # the whole batch in one call (one executemany)
    assert len(calls) <= 1 + 2 * 7 + 3  # then halves down to the bad row, not 64 tries
    assert report.dead == 1 and [d.key for d in box.dead_letters()] == ["key-21"]
    got = await rows(db)
    assert [r[0] for r in got if r[1] != "x"] == [i for i in range(64) if i != 21]
    assert box.pending_count() == 0
    box.close()


async def test_the_applied_key_check_probes_the_index_on_postgresql(fresh_database: str) -> None:
    """The drain of 100,000 intents into PostgreSQL ran at 162/s (SQLite: 4,367/s): the
    check of a batch's keys, ``key IN ($1, ..., $500)``, ran as a sequential scan under
    the prepared statement's generic plan (the table never analysed), every row compared
    with every key: 4-5 s a batch at 50,000 applied keys. Here the statement the applier
    sends is planned generic against 20,000 unanalysed keys, and must probe the index."""
    db = AsyncDatabase.from_url(fresh_database.replace("postgresql://", "postgresql+asyncpg://"))
    applier = SqlApplier(db)

    @applier.handler("move")
    async def move(session: object, payload: object) -> None:
        pass

    await applier.ensure_schema()
    async with db.session() as s:
        await s.execute(text("ALTER TABLE brownout_applied SET (autovacuum_enabled = off)"))
        await s.execute(
            text(
                "INSERT INTO brownout_applied (key, operation, applied_at) "
                "SELECT 'old-' || i, 'move', 0 FROM generate_series(1, 20000) AS i"
            )
        )
    sent: list[tuple[str, object]] = []

    def capture(_c: object, _k: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "brownout_applied" in statement:
            sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    intents = [Intent(i, f"new-{i}", f"s{i % 5}", "move", {}, 0.0) for i in range(200)]
    intents.append(Intent(200, "old-7", "s0", "move", {}, 0.0))  # applied before: skipped
    outcomes = await applier.apply_batch(intents)
    assert outcomes == [True] * 201
    [(statement, parameters)] = sent

    def literal(value: object) -> str:
        if isinstance(value, list | tuple):
            return "ARRAY[" + ",".join(literal(v) for v in value) + "]::varchar[]"
        assert isinstance(value, str) and "'" not in value
        return f"'{value}'"

    values = parameters if isinstance(parameters, list | tuple) else [parameters]
    async with db.session() as s:
        await s.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await s.execute(text(f"PREPARE seen_check AS {statement}"))
        plan = "\n".join(
            row[0]
            for row in await s.execute(
                text(f"EXPLAIN EXECUTE seen_check({', '.join(literal(v) for v in values)})")
            )
        )
        await s.execute(text("DEALLOCATE seen_check"))
    await db.aclose()
    assert "Seq Scan on brownout_applied" not in plan, plan
    assert "brownout_applied_pkey" in plan, plan
