"""The outbox journal: durable, bounded, ordered, idempotent; bad input writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from brownout.outbox import (
    IdempotencyConflict,
    Outbox,
    OutboxCorrupted,
    OutboxError,
    OutboxFull,
)


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    b = Outbox(tmp_path / "outbox.db", max_attempts=2)
    yield b  # type: ignore[misc]
    b.close()


def test_submit_is_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        intent = box.submit("stock.move", {"sku": "A", "delta": 3}, stream="A")
    with Outbox(path) as again:
        (pending,) = again.pending()
        assert pending.key == intent.key
        assert pending.payload == {"sku": "A", "delta": 3}
        assert again.status(intent.key) == "pending"


def test_journal_uses_wal_and_full_sync(box: Outbox) -> None:
    db = sqlite3.connect(box.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_heads_are_fifo_per_stream_and_streams_are_independent(box: Outbox) -> None:
    a1 = box.submit("op", {"n": 1}, stream="A")
    b1 = box.submit("op", {"n": 1}, stream="B")
    box.submit("op", {"n": 2}, stream="A")
    assert [i.key for i in box.heads()] == [a1.key, b1.key]
    box.mark_applied(a1)
    heads = box.heads()
    assert [i.payload for i in heads] == [{"n": 1}, {"n": 2}]
    assert box.status(a1.key) == "applied"
    assert box.stats()["replayed_total"] == 1


def test_idempotency_key_same_body_returns_the_same_intent(box: Outbox) -> None:
    first = box.submit("op", {"x": 1}, idempotency_key="k-1")
    again = box.submit("op", {"x": 1}, idempotency_key="k-1")
    assert again.key == first.key and again.seq == first.seq
    assert box.pending_count() == 1
    box.mark_applied(first)
    assert box.submit("op", {"x": 1}, idempotency_key="k-1").key == "k-1"  # applied: no new
    assert box.pending_count() == 0


def test_idempotency_key_with_another_body_is_a_conflict(box: Outbox) -> None:
    box.submit("op", {"x": 1}, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict, match="different payload"):
        box.submit("op", {"x": 2}, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict, match="different operation"):
        box.submit("other", {"x": 1}, idempotency_key="k-1")
    assert box.pending_count() == 1


def test_full_by_items_and_bytes_writes_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_pending=2, max_bytes=10_000) as box:
        box.submit("op", {"n": 1})
        box.submit("op", {"n": 2})
        with pytest.raises(OutboxFull, match="max_pending=2") as info:
            box.submit("op", {"n": 3})
        assert info.value.retry_after > 0
        assert box.pending_count() == 2
    with Outbox(tmp_path / "b.db", max_bytes=50) as box:
        box.submit("op", {"pad": "x" * 20})
        with pytest.raises(OutboxFull, match="max_bytes=50"):
            box.submit("op", {"pad": "y" * 20})
        assert box.pending_count() == 1


def test_payload_that_is_not_json_is_refused_before_anything_is_written(box: Outbox) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        box.submit("op", {"when": object()})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        box.submit("op", {"x": float("nan")})
    with pytest.raises(ValueError, match="operation"):
        box.submit("", {})
    assert box.pending_count() == 0


def test_caller_errors_dead_letter_after_max_attempts_and_can_be_retried(box: Outbox) -> None:
    blocked = box.submit("op", {"n": 1}, stream="A")
    behind = box.submit("op", {"n": 2}, stream="A")
    assert box.mark_failed(blocked, "ValueError: bad", backoff=0) is False
    assert box.mark_failed(blocked, "ValueError: bad", backoff=0) is True
    assert [i.key for i in box.heads()] == [behind.key]  # the stream is not blocked
    (dead,) = box.dead_letters()
    assert dead.key == blocked.key and dead.attempts == 2 and dead.reason == "ValueError: bad"
    assert box.status(blocked.key) == "dead"
    assert box.retry_dead(blocked.key) == 1
    assert box.status(blocked.key) == "pending"
    assert box.stats()["dead_letter_total"] == 1


def test_backoff_delays_a_failed_intent(tmp_path: Path) -> None:
    now = [1000.0]
    with Outbox(tmp_path / "o.db", clock=lambda: now[0]) as box:
        intent = box.submit("op", {}, stream="A")
        box.mark_failed(intent, "oops", backoff=30)
        assert box.heads() == []
        now[0] += 30
        assert [i.key for i in box.heads()] == [intent.key]
        assert box.oldest_age() == 30


def test_a_corrupted_journal_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        box.submit("op", {"keep": "me"})
    data = bytearray(path.read_bytes())
    data[0:16] = b"this is garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupted, match="not a readable SQLite database"):
        Outbox(path)
    assert path.read_bytes() == bytes(data)


def test_full_disk_is_a_clear_error_and_keeps_what_was_accepted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        accepted = [box.submit("op", {"n": i}).key for i in range(5)]
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
        with pytest.raises(OutboxError, match="full"):
            for i in range(1000):
                box.submit("op", {"pad": "z" * 4000, "n": i})
    with Outbox(path) as again:
        keys = {i.key for i in again.pending()}
        assert set(accepted) <= keys


def test_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_pending must be an int >= 1"):
        Outbox("/tmp/never.db", max_pending=0)


def test_a_final_failure_dead_letters_at_once(box: Outbox) -> None:
    intent = box.submit("op", {"n": 1})
    assert box.mark_failed(intent, "not enough stock", backoff=0, final=True) is True
    assert box.status(intent.key) == "dead"


def test_an_operator_can_list_retry_and_discard_dead_letters(box: Outbox) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    box.add_listener(lambda event: events.append((event.kind, dict(event.fields))))
    one = box.submit("op", {"n": 1}, stream="A", idempotency_key="one")
    two = box.submit("op", {"n": 2}, stream="B", idempotency_key="two")
    three = box.submit("op", {"n": 3}, stream="C", idempotency_key="three")
    for intent in (one, two, three):
        assert box.mark_failed(intent, "SkuTaken: W-1 exists", final=True) is True
    assert box.dead_letter("two") is not None and box.dead_letter("nope") is None
    assert box.retry_dead("one") == 1 and box.status("one") == "pending"
    assert box.retry_dead("one") == 0  # not dead any more: nothing to do
    assert box.discard_dead("two") == 1
    assert box.status("two") == "discarded"
    assert box.dead_letter("two") is None
    # a discarded key stays used: the same request again is not a new write
    again = box.submit("op", {"n": 2}, stream="B", idempotency_key="two")
    assert again.seq == 0 and box.status("two") == "discarded"
    assert box.discard_dead() == 1  # all that are left: three
    stats = box.stats()
    assert stats["dead_letters"] == 0 and stats["discarded_total"] == 2
    assert stats["retried_total"] == 1
    assert [e for e, _ in events if e in ("retried", "discarded")] == [
        "retried",
        "discarded",
        "discarded",
    ]


def test_the_newest_applied_keys_are_kept_up_to_done_retention(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", done_retention=3)
    intents = [box.submit("op", {"i": i}, idempotency_key=f"k{i}") for i in range(5)]
    box.mark_applied_many(intents[:2])
    box.mark_applied_many(intents[2:])
    assert [box.status(f"k{i}") for i in range(5)] == [None, None, *["applied"] * 3]
    assert box.counters()["replayed"] == 5
    box.close()


def test_a_batch_is_oldest_first_and_a_waiting_stream_gives_none(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", clock=lambda: 1000.0)
    for i in range(6):
        box.submit("op", {"i": i}, stream="ab"[i % 2], idempotency_key=f"k{i}")
    (head_a, *_) = box.batch()
    box.mark_failed(head_a, "try later", backoff=60)  # stream a waits 60 s
    assert [i.key for i in box.batch()] == ["k1", "k3", "k5"]
    assert [i.key for i in box.batch(limit=2)] == ["k1", "k3"]
    assert [i.key for i in box.batch(now=1061)] == [f"k{i}" for i in range(6)]
    box.close()


def test_listeners_take_one_frozen_event_and_unsubscribe(tmp_path: Path) -> None:
    import dataclasses

    from brownout.outbox import JournalEvent

    box = Outbox(tmp_path / "o.db")
    seen: list[JournalEvent] = []
    unsubscribe = box.add_listener(seen.append)
    box.submit("move", {"n": 1})
    unsubscribe()
    unsubscribe()  # idempotent
    box.submit("move", {"n": 2})
    assert [(e.source, e.kind, e.get("operation")) for e in seen] == [
        ("outbox", "submitted", "move")
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].kind = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        seen[0].fields["operation"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError, match="must be callable"):
        box.add_listener("not a function")  # type: ignore[arg-type]
    box.close()


def test_a_listener_of_the_old_shape_still_works_with_a_deprecation_warning(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db")
    seen: list[tuple[str, str]] = []
    with pytest.warns(DeprecationWarning, match="JournalEvent"):
        box.add_listener(lambda kind, fields: seen.append((kind, fields["operation"])))
    box.submit("move", {"n": 1})
    assert seen == [("submitted", "move")]
    box.close()


def test_marking_many_applied_spans_statements_and_counts_each_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brownout.outbox import _journal

    monkeypatch.setattr(_journal, "_KEYS_PER_STATEMENT", 5)
    box = Outbox(tmp_path / "o.db")
    intents = [box.submit("move", {"i": i}, stream=f"s{i % 3}") for i in range(13)]
    box.mark_applied(intents[0])
    replayed: list[str] = []
    box.add_listener(lambda e: replayed.append(e.get("operation")) if e.kind == "replayed" else 0)
    box.mark_applied_many([*intents, intents[6]])  # 3 statements; one applied, one twice
    assert box.pending_count() == 0
    assert box.counters()["replayed"] == 13
    assert len(replayed) == 12
    assert {box.status(i.key) for i in intents} == {"applied"}
    box.close()


def test_a_batch_reads_past_a_waiting_stream_longer_than_its_window(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", clock=lambda: 1000.0, max_pending=1000)
    for i in range(600):  # stream a first: more rows than one read of the journal takes
        box.submit("op", {"i": i}, stream="a", idempotency_key=f"a{i:03d}")
    for i in range(5):
        box.submit("op", {"i": i}, stream="b", idempotency_key=f"b{i}")
    (head_a,) = box.batch(limit=1)
    box.mark_failed(head_a, "try later", backoff=60)  # the 600 of a wait behind it
    assert [i.key for i in box.batch(limit=3)] == ["b0", "b1", "b2"]
    assert [i.key for i in box.batch(limit=500)] == [f"b{i}" for i in range(5)]
    assert len(box.batch(limit=500, now=1061)) == 500
    box.close()
