"""Group commit: concurrent submits share one journal transaction (one fsync), and each
returns only once its own intent is committed."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout.outbox import IdempotencyConflict, Intent, Outbox, OutboxError, OutboxFull, new_key
from brownout.testing import aeventually
from brownout.testing.servers import wait_until

CHILD = Path(__file__).with_name("_group_child.py")


def count_commits(box: Outbox) -> list[str]:
    """Every COMMIT the outbox's connection runs from now on."""
    commits: list[str] = []
    box._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    return commits


def test_submits_from_threads_waiting_together_share_one_commit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    commits = count_commits(box)
    results: dict[int, Intent] = {}

    def submit(i: int) -> None:
        results[i] = box.submit("move", {"i": i}, stream=f"s{i % 3}")

    with box._lock:  # another write holds the journal: the submits queue up behind it
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(box._queue) == 8, timeout=10, what="8 queued submits")
        assert not results  # none returned before its intent was committed
    for t in threads:
        t.join(10)
    assert len(commits) == 1, commits  # eight intents, one transaction, one fsync
    assert sorted(results) == list(range(8))
    assert len({r.seq for r in results.values()}) == 8
    assert [i.payload["i"] for i in box.pending()] == sorted(results, key=lambda i: results[i].seq)
    box.close()


async def test_submits_from_asyncio_tasks_share_one_commit_off_the_loop(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    commits = count_commits(box)
    committed_in: set[int] = set()
    box.add_listener(
        lambda event: committed_in.add(threading.get_ident()) if event.kind == "submitted" else None
    )
    with box._lock:
        tasks = [
            asyncio.create_task(box.asubmit("move", {"i": i}, stream="s", idempotency_key=f"k{i}"))
            for i in range(16)
        ]
        # the loop must keep running while they queue (aeventually sleeps with asyncio)
        await aeventually(lambda: len(box._queue) == 16, timeout=10, what="the submits to queue")
        assert not any(t.done() for t in tasks)
    intents = await asyncio.gather(*tasks)
    assert len(commits) == 1, commits
    assert [i.key for i in intents] == [f"k{i}" for i in range(16)]
    assert threading.get_ident() not in committed_in  # the fsync never ran on the loop
    assert box.pending_count() == 16
    box.close()


def test_many_threads_submit_everything_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_pending=100_000)
    commits = count_commits(box)
    per, n = 60, 8

    def work(t: int) -> None:
        for j in range(per):
            box.submit("move", {"t": t, "j": j}, stream=f"t{t}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pending = box.pending(limit=10_000)
    assert len(pending) == per * n
    for t in range(n):  # each thread's intents in its own order
        assert [i.payload["j"] for i in pending if i.stream == f"t{t}"] == list(range(per))
    assert len(commits) <= per * n
    box.close()


def test_errors_in_a_group_stay_with_their_submit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_pending=3)
    box.submit("move", {"i": 0}, idempotency_key="taken")
    outcomes: dict[str, object] = {}

    def submit(name: str, payload: dict[str, int], key: str | None) -> None:
        try:
            outcomes[name] = box.submit("move", payload, idempotency_key=key).key
        except Exception as exc:
            outcomes[name] = type(exc)

    calls = [
        ("conflict", {"i": 99}, "taken"),  # same key, other payload
        ("same", {"i": 0}, "taken"),  # same key, same payload: the accepted intent
        ("a", {"i": 1}, "a"),
        ("b", {"i": 2}, "b"),
        ("full", {"i": 3}, "c"),  # the fourth pending intent: over max_pending=3
    ]
    with box._lock:
        for n, (name, payload, key) in enumerate(calls, 1):  # in order: one group, this order
            threading.Thread(target=submit, args=(name, payload, key)).start()
            wait_until(lambda n=n: len(box._queue) == n, timeout=10, what="the submit queued")
    wait_until(lambda: len(outcomes) == 5, timeout=10, what="every submit returned")
    assert outcomes == {
        "conflict": IdempotencyConflict,
        "same": "taken",
        "a": "a",
        "b": "b",
        "full": OutboxFull,
    }
    assert box.pending_count() == 3
    box.close()


def test_a_journal_error_fails_every_submit_of_the_group_and_writes_none(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            box.submit("move", {"i": i})
        except Exception as exc:
            errors.append(exc)

    def refuse_commit(action: int, *args: object) -> int:
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_INSERT else sqlite3.SQLITE_OK

    with box._lock:
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(box._queue) == 4, timeout=10, what="4 queued submits")
        box._db.set_authorizer(refuse_commit)
    for t in threads:
        t.join(10)
    box._db.set_authorizer(None)
    assert len(errors) == 4 and all("submit failed" in str(e) for e in errors), errors
    assert box.pending_count() == 0
    assert box.submit("move", {"i": 9}).seq > 0  # and the outbox goes on
    box.close()


@pytest.mark.slow
def test_kill_9_during_group_commits_loses_no_acknowledged_intent(tmp_path: Path) -> None:
    """A child submits from 8 threads and prints each key once submit returned; it is
    killed at random moments (mid-group, mid-fsync...). Every key it printed is in the
    journal afterwards, and nothing is there twice."""
    journal = tmp_path / "o.db"
    acknowledged: set[str] = set()
    rng = random.Random(11)
    for run in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(journal), f"r{run}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(rng.randint(50, 400))]
        proc.kill()  # while the 8 threads keep submitting: mid-group, mid-fsync...
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -9
        lines += out.splitlines()
        keys = {line.split()[1] for line in lines if line.startswith("ACK ")}
        assert len(keys) >= 50
        acknowledged |= keys
        box = Outbox(journal, max_pending=1_000_000)
        stored = [i.key for i in box.pending(limit=1_000_000)]
        box.close()
        assert len(stored) == len(set(stored))
        missing = acknowledged - set(stored)
        assert not missing, f"{len(missing)} acknowledged intents lost, e.g. {sorted(missing)[:3]}"


def test_a_leader_waits_for_the_submitters_seen_lately_then_writes_them_in_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 8 threads the groups used to alternate in halves: the submits a commit just
    returned came back a moment after the next leader had started alone."""
    from brownout.outbox import _journal

    monkeypatch.setattr(_journal, "_MAX_GATHER", 60.0)  # no deadline in this test
    box = Outbox(tmp_path / "o.db")
    commits = count_commits(box)
    box._siblings, box._commit_seconds = 3, 3600.0  # three submitters were seen at once
    threads = [
        threading.Thread(target=box.submit, args=("move", {"i": i}), kwargs={"stream": "s"})
        for i in range(3)
    ]
    threads[0].start()
    wait_until(lambda: box._gathering, timeout=10, what="the leader waiting for the others")
    assert commits == []
    for n, thread in enumerate(threads[1:], start=2):
        thread.start()
        wait_until(lambda n=n: len(box._queue) >= n or not box._queue, timeout=10, what="queued")
    for thread in threads:
        thread.join(10)
    assert len(commits) == 1 and box.pending_count() == 3
    box.close()


def test_a_leader_waits_at_most_its_deadline_and_then_expects_fewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brownout.outbox import _journal

    monkeypatch.setattr(_journal, "_MAX_GATHER", 0.05)
    box = Outbox(tmp_path / "o.db")
    box._siblings, box._commit_seconds = 8, 3600.0
    box.submit("move", {"i": 0})  # alone: written once the 0.05 s are over
    assert box._siblings == 1 and box.pending_count() == 1  # so the next one never waits
    box.close()


def wal_frames(db: sqlite3.Connection) -> int:
    """Frames in the write-ahead log (pages written, each fsynced with its commit)."""
    busy, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    return int(frames)


def test_a_group_commit_writes_a_few_pages_not_one_per_intent(tmp_path: Path) -> None:
    """A group commit cost ~2.2 ms with 8 threads where a 4 KiB write + fsync costs
    0.42 ms: each intent of a group dirtied a random leaf of the key index (uuid4 keys)
    and one of the (stream, seq) index, so a commit of 7 intents wrote ~14 pages to the
    log (strace: 28.7 pwrite64 per commit). Keys made now sort by time (UUIDv7), the
    stream index is gone: a group of 64 intents into a journal of 4,000 writes a few."""
    box = Outbox(tmp_path / "o.db", max_pending=10_000)

    def fill(t: int) -> None:
        for i in range(250):
            box.submit("move", {"t": t, "i": i}, stream=f"s{i % 50}")

    fillers = [threading.Thread(target=fill, args=(t,)) for t in range(16)]
    for t in fillers:
        t.start()
    for t in fillers:
        t.join()
    assert box.pending_count() == 4000
    with box._lock:
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert wal_frames(box._db) == 0
        threads = [
            threading.Thread(target=box.submit, args=("move", {"n": i}), kwargs={"stream": f"s{i}"})
            for i in range(64)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: len(box._queue) == 64, timeout=10, what="64 submits queued")
        groups = box._groups
    for t in threads:
        t.join()
    assert box._groups == groups + 1  # one commit
    frames = wal_frames(box._db)
    assert 0 < frames <= 12, frames
    box.close()


def test_keys_made_by_the_outbox_are_uuid7_in_time_order(tmp_path: Path) -> None:
    import uuid

    box = Outbox(tmp_path / "o.db")
    keys = [box.submit("move", {"i": i}).key for i in range(20)]
    assert keys == sorted(keys) and len(set(keys)) == 20
    assert {uuid.UUID(k).version for k in keys} == {7}
    assert all(len(k) == 32 for k in keys)
    box.close()


def test_keys_keep_their_order_within_a_millisecond_and_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uuid

    from brownout.outbox import _journal

    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(_journal.time, "time_ns", lambda: now[0])
    keys = [new_key() for _ in range(500)]  # all in one millisecond
    now[0] -= 5_000_000_000  # the wall clock stepped back 5 s
    keys += [new_key() for _ in range(500)]
    assert keys == sorted(keys) and len(set(keys)) == 1000
    assert {(uuid.UUID(k).version, uuid.UUID(k).variant) for k in keys} == {(7, uuid.RFC_4122)}


def test_a_journal_made_with_the_stream_index_loses_it_and_keeps_its_intents(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    a = box.submit("move", {"i": 1}, stream="a")
    box._db.execute("CREATE INDEX intents_stream ON intents (stream, seq)")  # as before
    box.close()
    box = Outbox(path)
    names = [r[0] for r in box._db.execute("SELECT name FROM sqlite_master WHERE type='index'")]
    assert "intents_stream" not in names
    assert [i.key for i in box.heads()] == [a.key]
    box.close()


def test_one_key_twice_in_one_group_is_one_intent_and_a_changed_payload_conflicts(
    tmp_path: Path,
) -> None:
    """The group's rows go in with one executemany after every check: a key repeated
    within the group is found among the group's own rows, not only in the journal."""
    box = Outbox(tmp_path / "o.db")
    outcomes: dict[str, object] = {}

    def submit(name: str, payload: dict[str, int], key: str) -> None:
        try:
            outcomes[name] = box.submit("move", payload, idempotency_key=key)
        except Exception as exc:
            outcomes[name] = type(exc)

    calls = [
        ("first", {"i": 1}, "k"),
        ("again", {"i": 1}, "k"),  # the same request repeated: the intent of the first
        ("changed", {"i": 2}, "k"),  # the same key, another payload
        ("other", {"i": 3}, "other"),
    ]
    with box._lock:
        for n, (name, payload, key) in enumerate(calls, 1):
            threading.Thread(target=submit, args=(name, payload, key)).start()
            wait_until(lambda n=n: len(box._queue) == n, timeout=10, what="the submit queued")
        groups = box._groups
    wait_until(lambda: len(outcomes) == 4, timeout=10, what="every submit returned")
    assert box._groups == groups + 1
    first, again = outcomes["first"], outcomes["again"]
    assert isinstance(first, Intent) and isinstance(again, Intent)
    assert (again.seq, again.key, again.payload) == (first.seq, "k", {"i": 1})
    assert outcomes["changed"] is IdempotencyConflict
    assert isinstance(outcomes["other"], Intent) and outcomes["other"].seq == first.seq + 1
    assert [(i.key, i.payload) for i in box.pending()] == [("k", {"i": 1}), ("other", {"i": 3})]
    box.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_the_stored_body_is_json_dumps_sorted_and_compact(payload: object) -> None:
    """The journal keeps ``json.dumps(payload, sort_keys=True, separators=(",", ":"))``
    (its digest identifies a request across versions): the encoder made once must
    write exactly that, and decode back to what json.loads gives."""
    from brownout.outbox import _journal

    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert _journal._encode(payload) == expected
    assert _journal._raw_decode(expected)[0] == json.loads(expected)


@pytest.mark.parametrize("bad", [float("nan"), {"x": [float("inf")]}, {1: object()}])
def test_the_encoder_made_once_refuses_what_json_dumps_refuses(bad: object) -> None:
    from brownout.outbox import _journal

    with pytest.raises((TypeError, ValueError)):
        _journal._encode(bad)


def committer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("brownout-outbox-")]


async def test_asubmits_queue_from_the_loop_and_one_committer_thread_writes_them(
    tmp_path: Path,
) -> None:
    """An asubmit used to wait in a thread of its own (64 at most), each waking the loop
    when it returned: 8 tasks put 1.5-1.9 intents in a commit on tmpfs, at 2.6 thread
    switches per intent. Now they queue from the loop and one thread commits."""
    box = Outbox(tmp_path / "o.db", max_pending=1000)
    commits = count_commits(box)
    with box._lock:
        tasks = [
            asyncio.create_task(box.asubmit("move", {"i": i}, stream=f"s{i % 4}"))
            for i in range(64)
        ]
        await aeventually(lambda: len(box._queue) == 64, timeout=10, what="the submits to queue")
        assert len(committer_threads()) == 1
    intents = await asyncio.gather(*tasks)
    assert len(commits) == 1
    assert [i.payload["i"] for i in intents] == list(range(64))
    assert [i.seq for i in intents] == sorted(i.seq for i in intents)
    assert [i.key for i in box.pending(limit=100)] == [i.key for i in intents]
    box.close()
    assert committer_threads() == []


async def test_asubmit_errors_stay_with_their_task_and_a_cancelled_one_is_still_written(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.db", max_pending=3)
    await box.asubmit("move", {"i": 0}, idempotency_key="taken")
    with box._lock:
        conflict = asyncio.create_task(box.asubmit("move", {"i": 9}, idempotency_key="taken"))
        same = asyncio.create_task(box.asubmit("move", {"i": 0}, idempotency_key="taken"))
        cancelled = asyncio.create_task(box.asubmit("move", {"i": 1}, idempotency_key="gone"))
        ok = asyncio.create_task(box.asubmit("move", {"i": 2}, idempotency_key="ok"))
        full = asyncio.create_task(box.asubmit("move", {"i": 3}, idempotency_key="full"))
        await aeventually(lambda: len(box._queue) == 5, timeout=10, what="the submits to queue")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    with pytest.raises(IdempotencyConflict):
        await conflict
    assert (await same).key == "taken"
    assert (await ok).key == "ok"
    with pytest.raises(OutboxFull):
        await full
    # cancelled while queued: still written (the caller asks again with its key)
    assert box.status("gone") == "pending"
    assert box.pending_count() == 3
    box.close()


class HeldCommit:
    """Holds the next COMMIT of ``box`` (in the leader's thread, the lock held) until
    ``release()``: submits queue behind that group meanwhile."""

    def __init__(self, box: Outbox) -> None:
        self.reached, self.gate = threading.Event(), threading.Event()
        box._db.set_trace_callback(self.trace)

    def trace(self, sql: str) -> None:
        if sql == "COMMIT" and not self.gate.is_set():
            self.reached.set()
            self.gate.wait(10)

    def release(self) -> None:
        self.gate.set()


async def test_the_lead_moves_between_submit_threads_and_the_committer_thread(
    tmp_path: Path,
) -> None:
    """The committer thread hands the lead to a submit() that queued (it writes the
    next group in its own thread); a submit() leaving only asubmits queued starts the
    committer thread. Each intent is announced by the thread that committed it."""
    box = Outbox(tmp_path / "o.db")
    written_by: dict[str, str] = {}
    box.add_listener(
        lambda e: (
            written_by.__setitem__(e.get("operation"), threading.current_thread().name)
            if e.kind == "submitted"
            else None
        )
    )

    def submit(operation: str) -> None:
        threading.current_thread().name = operation
        box.submit(operation, {})

    held = HeldCommit(box)
    a0 = asyncio.create_task(box.asubmit("a0", {}))
    await aeventually(held.reached.is_set, timeout=10, what="the committer at its COMMIT")
    t0 = threading.Thread(target=submit, args=("t0",))
    t0.start()
    a1 = asyncio.create_task(box.asubmit("a1", {}))
    await aeventually(lambda: len(box._queue) == 2, timeout=10, what="two queued behind it")
    held.release()
    await asyncio.gather(a0, a1)
    await asyncio.to_thread(t0.join, 10)
    assert written_by["a0"].startswith("brownout-outbox-commit")
    assert written_by["t0"] == written_by["a1"] == "t0"  # t0 led the next group

    held = HeldCommit(box)
    t1 = threading.Thread(target=submit, args=("t1",))
    t1.start()
    await aeventually(held.reached.is_set, timeout=10, what="t1 at its COMMIT")
    later = [asyncio.create_task(box.asubmit(f"b{i}", {})) for i in range(3)]
    await aeventually(lambda: len(box._queue) == 3, timeout=10, what="asubmits queued")
    held.release()
    await asyncio.gather(*later)
    await asyncio.to_thread(t1.join, 10)
    assert written_by["t1"] == "t1"
    assert {written_by[f"b{i}"] for i in range(3)} == {"brownout-outbox-commit_0"}
    assert box.pending_count() == 7
    box.close()


async def test_asubmit_after_close_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    await box.asubmit("move", {"i": 1})
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        await box.asubmit("move", {"i": 2})


async def test_a_submit_handed_the_lead_behind_more_than_a_group_writes_until_its_own_is_done(
    tmp_path: Path,
) -> None:
    """The committer hands the lead to the oldest submit() queued, which may come after
    more than _MAX_GROUP asubmits: it writes groups until its own intent is in one."""
    from brownout.outbox import _journal

    box = Outbox(tmp_path / "o.db", max_pending=10_000)
    outcome: list[object] = []

    def submit() -> None:
        try:
            outcome.append(box.submit("sync", {}))
        except BaseException as exc:  # an AssertionError here was the bug
            outcome.append(exc)

    held = HeldCommit(box)
    first = asyncio.create_task(box.asubmit("first", {}))
    await aeventually(held.reached.is_set, timeout=10, what="the committer at its COMMIT")
    n = _journal._MAX_GROUP + 20
    many = [asyncio.create_task(box.asubmit("many", {"i": i})) for i in range(n)]
    await aeventually(lambda: len(box._queue) == n, timeout=10, what="asubmits queued")
    thread = threading.Thread(target=submit)
    thread.start()
    await aeventually(lambda: len(box._queue) == n + 1, timeout=10, what="the submit queued")
    held.release()
    # before the fix the lead stayed taken with asubmits queued: they hung
    await asyncio.wait_for(asyncio.gather(first, *many), timeout=30)
    await asyncio.to_thread(thread.join, 10)
    assert len(outcome) == 1 and isinstance(outcome[0], Intent), outcome
    assert outcome[0].seq == n + 2  # after "first" and the n asubmits
    assert box.pending_count() == n + 2
    box.close()
