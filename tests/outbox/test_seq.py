"""The intents' ``seq`` without ``AUTOINCREMENT``: no ``sqlite_sequence`` page written per
commit, no collision with a dead letter's ``seq``, FIFO per stream kept, and a journal made
with the old schema migrated with every intent and its order."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.outbox import Outbox

# The intents table as journals made before this change have it (the rest is unchanged).
_OLD_INTENTS = """
CREATE TABLE intents (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL UNIQUE,
    stream       TEXT NOT NULL,
    operation    TEXT NOT NULL,
    payload      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created      REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    not_before   REAL NOT NULL DEFAULT 0
);
CREATE INDEX intents_stream ON intents (stream, seq);
"""


def _intents_sql(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("SELECT sql FROM sqlite_master WHERE name = 'intents'").fetchone()[0])
    finally:
        db.close()


def test_a_new_journal_has_no_autoincrement_and_no_sqlite_sequence(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        first = box.submit("op", {"n": 1}, stream="A")
        second = box.submit("op", {"n": 2}, stream="A")
        assert second.seq == first.seq + 1
    assert "AUTOINCREMENT" not in _intents_sql(path).upper()
    db = sqlite3.connect(path)
    try:  # the table a commit wrote a page of, for AUTOINCREMENT's high-water mark
        assert (
            db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
            is None
        )
    finally:
        db.close()


def test_a_new_intent_never_takes_the_seq_of_a_dead_letter(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        a = box.submit("op", {"n": 1}, stream="A")
        assert box.mark_failed(a, "bad", final=True)  # the journal is empty again
        b = box.submit("op", {"n": 2}, stream="A")  # max(intents) + 1 would be a.seq
        assert b.seq > a.seq
        assert box.mark_failed(b, "bad too", final=True)
        assert [d.key for d in box.dead_letters()] == [a.key, b.key]
        # retried dead letters go to the end, above every seq still dead
        c = box.submit("op", {"n": 3}, stream="A")
        assert box.retry_dead(a.key) == 1
        assert [i.key for i in box.pending()] == [c.key, a.key]
        (retried,) = [i for i in box.pending() if i.key == a.key]
        assert retried.seq > b.seq
        assert box.mark_failed(retried, "still bad", final=True)
        assert {d.key for d in box.dead_letters()} == {a.key, b.key}


def test_a_seq_given_again_after_the_newest_is_applied_keeps_stream_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        a1 = box.submit("op", {"n": 1}, stream="A")
        b1 = box.submit("op", {"n": 1}, stream="B")
        box.mark_applied(b1)
        a2 = box.submit("op", {"n": 2}, stream="A")  # may reuse b1's seq: nothing keeps it
        assert a2.seq > a1.seq
        assert [i.key for i in box.batch()] == [a1.key, a2.key]
        assert box.status(b1.key) == "applied"


# submit to a stream, apply a stream's head, dead-letter a stream's head, retry all dead
_OPS = st.lists(
    st.tuples(st.sampled_from(["submit", "apply", "die", "retry"]), st.sampled_from("AB")),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_streams_stay_in_submit_order_whatever_is_applied_or_dead(
    ops: list[tuple[str, str]],
) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Outbox(Path(tmp) / "o.db", max_pending=10_000) as box,
    ):
        model: dict[str, list[str]] = {"A": [], "B": []}  # pending keys, in order
        dead: list[tuple[str, str]] = []  # (stream, key), in the order they died
        for op, stream in ops:
            if op == "submit":
                model[stream].append(box.submit("op", {}, stream=stream).key)
            elif op in ("apply", "die") and model[stream]:
                (head,) = [i for i in box.heads() if i.stream == stream]
                assert head.key == model[stream][0]
                model[stream].pop(0)
                if op == "apply":
                    box.mark_applied(head)
                else:
                    assert box.mark_failed(head, "bad", final=True)
                    dead.append((stream, head.key))
            elif op == "retry":
                retried = sorted(box.dead_letters(), key=lambda d: d.seq)
                assert box.retry_dead() == len(dead)
                for d in retried:  # back at the end of their stream, in seq order
                    model[d.stream].append(d.key)
                dead.clear()
            seqs = [i.seq for i in box.pending()] + [d.seq for d in box.dead_letters()]
            assert len(seqs) == len(set(seqs))
            for s in "AB":
                assert [i.key for i in box.pending() if i.stream == s] == model[s]
            assert sorted(d.key for d in box.dead_letters()) == sorted(k for _, k in dead)


def _old_journal(path: Path) -> list[tuple[int, str, str]]:
    """A journal made by the old code: intents in two streams with gaps in seq (some were
    applied), a dead letter, and sqlite_sequence's high-water mark above them all."""
    with Outbox(path):  # the other tables, as the current code makes them
        pass
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TABLE intents")
        db.executescript(_OLD_INTENTS)
        rows = [(3, "k3", "A"), (4, "k4", "B"), (7, "k7", "A"), (9, "k9", "B"), (10, "k10", "A")]
        for seq, key, stream in rows:
            db.execute(
                "INSERT INTO intents (seq, key, stream, operation, payload, digest, size, "
                "created, attempts, last_error) VALUES (?, ?, ?, 'op', ?, 'd', 10, 1.0, 1, 'e')",
                (seq, key, stream, f'{{"seq":{seq}}}'),
            )
        db.execute(
            "INSERT INTO dead (seq, key, stream, operation, payload, digest, created, attempts, "
            "reason, dead_at) VALUES (12, 'k12', 'A', 'op', '{}', 'd', 1.0, 3, 'bad', 2.0)"
        )
        db.execute("UPDATE sqlite_sequence SET seq = 14 WHERE name = 'intents'")
        assert "AUTOINCREMENT" in _intents_sql(path)
        return rows
    finally:
        db.close()


def test_a_journal_of_the_old_schema_is_rebuilt_keeping_every_intent_and_its_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    rows = _old_journal(path)
    with Outbox(path) as box:
        pending = box.pending()
        assert [(i.seq, i.key, i.stream) for i in pending] == rows
        assert [i.payload for i in pending] == [{"seq": s} for s, _, _ in rows]
        assert all(i.attempts == 1 and i.last_error == "e" for i in pending)
        assert [i.key for i in box.heads()] == ["k3", "k4"]
        assert [d.key for d in box.dead_letters()] == ["k12"]
        new = box.submit("op", {"n": 1}, stream="A")
        assert new.seq == 13  # above every intent and the dead letter
        assert [i.key for i in box.batch() if i.stream == "A"] == ["k3", "k7", "k10", new.key]
        assert box.stats()["pending"] == len(rows) + 1
    assert "AUTOINCREMENT" not in _intents_sql(path).upper()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "intents_rebuilt" not in names
        assert db.execute("SELECT * FROM sqlite_sequence").fetchall() == []
    finally:
        db.close()
    with Outbox(path) as again:  # opened again: nothing more to do, nothing lost
        assert len(again.pending()) == len(rows) + 1


def test_a_rebuild_starts_from_a_clean_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    rows = _old_journal(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:  # a leftover table of the rebuild's name (of another shape) is not copied into
        db.execute("CREATE TABLE intents_rebuilt (x)")
    finally:
        db.close()
    with Outbox(path) as box:
        assert [(i.seq, i.key, i.stream) for i in box.pending()] == rows


def test_a_seq_given_by_another_connection_is_not_given_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as service, Outbox(path) as cli:  # e.g. the CLI retrying a dead letter
        a = service.submit("op", {"n": 1}, stream="A")
        b = cli.submit("op", {"n": 2}, stream="A")
        assert cli.mark_failed(b, "bad", final=True)
        c = service.submit("op", {"n": 3}, stream="A")
        assert a.seq < b.seq < c.seq
        assert cli.retry_dead() == 1
        d = service.submit("op", {"n": 4}, stream="A")
        assert [i.key for i in service.pending()] == [a.key, c.key, b.key, d.key]
