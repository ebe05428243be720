"""The pieces ``inventario serve --workers N`` builds on, each with two instances standing in
for two worker processes (an ``flock`` belongs to an open file, so two instances in one
process conflict as two processes do): the drain lease, the shared spool, the shared
coherence journal. tests/e2e/test_workers.py runs them in real processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from brownout import CircuitBreaker
from brownout._lease import FileLease
from brownout.coherence import CacheCoherence
from brownout.outbox import Intent, Outbox, Replayer
from brownout.spool import Spool, SpoolError, SpoolUploader
from brownout.testing import FakeClock
from tests.coherence.test_coherence import FakeRedis

# ------------------------------------------------------------------ the lease


def test_a_lease_held_by_a_process_killed_with_sigkill_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "drain.lease"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from brownout._lease import FileLease; "
         f"lease = FileLease({str(path)!r}); assert lease.try_acquire(); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        mine = FileLease(path)
        assert not mine.try_acquire()  # the other process holds it
        child.kill()
        child.wait(10)
        assert mine.try_acquire()  # the kernel ended it with the process: no timeout
        mine.close()
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


# ------------------------------------------------------------------ the outbox


class SlowApplier:
    """Applies by recording the key; each apply waits for ``gate`` (a drain in progress)."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, intent: Intent) -> None:
        self.entered.set()
        await self.gate.wait()
        self.applied.append(intent.key)


async def test_two_replayers_sharing_a_lease_drain_one_at_a_time(tmp_path: Path) -> None:
    a_box, b_box = Outbox(tmp_path / "outbox.db"), Outbox(tmp_path / "outbox.db")
    try:
        for n in range(6):
            (a_box if n % 2 else b_box).submit(
                "move", {"n": n}, stream="S", idempotency_key=f"k{n}"
            )
        apply = SlowApplier()
        a, b = Replayer(a_box, apply), Replayer(b_box, apply)
        a.share(tmp_path / "outbox.lease")
        b.share(tmp_path / "outbox.lease")
        first = asyncio.create_task(a.drain())
        await apply.entered.wait()  # a is draining
        report = await b.drain()
        assert report.busy and report.applied == 0  # b skipped its turn
        apply.gate.set()
        assert (await first).applied == 6
        assert apply.applied == [f"k{n}" for n in range(6)]  # FIFO, each once
        assert b_box.pending_count() == 0
        assert (await b.drain()).busy is False  # the lease is free again
    finally:
        a_box.close()
        b_box.close()


async def test_a_busy_drain_tries_again_soon_rather_than_a_heartbeat_later(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "outbox.db")
    try:
        replayer = Replayer(box, SlowApplier(), heartbeat=30.0)
        replayer.share(tmp_path / "outbox.lease")
        other = FileLease(tmp_path / "outbox.lease")
        assert other.try_acquire()
        assert await replayer._cycle() == 1.0  # BUSY_WAIT, not the 30 s heartbeat
        other.release()
        assert await replayer._cycle() == 30.0
        other.close()
    finally:
        box.close()


# ------------------------------------------------------------------ the spool


def test_shared_spools_see_each_others_entries_and_refuse_an_unshared_one(
    tmp_path: Path,
) -> None:
    a = Spool(tmp_path / "spool", shared=True)
    b = Spool(tmp_path / "spool", shared=True)
    try:
        a.put("bucket", "one.pdf", b"1")
        b.put("bucket", "two.pdf", b"22")
        assert (
            {e.key for e in a.entries()} == {e.key for e in b.entries()} == {"one.pdf", "two.pdf"}
        )
        assert b.get("bucket", "one.pdf") == b"1"
        assert a.stats()["files"] == 2 and a.stats()["bytes"] == 3
        entry = a.entry("bucket", "two.pdf")
        assert entry is not None and b.remove(entry)  # b removes what a sees
        assert a.entry("bucket", "two.pdf") is None
        assert not a.remove(entry)  # already gone: not an error
        with pytest.raises(SpoolError, match="in use by another Spool"):
            Spool(tmp_path / "spool")  # not shared: refused while the workers hold it
    finally:
        a.close()
        b.close()
    with Spool(tmp_path / "spool"), pytest.raises(SpoolError, match="in use by another"):
        Spool(tmp_path / "spool", shared=True)  # an unshared one holds it: refused at once


def test_a_read_of_an_entry_another_worker_just_uploaded_does_not_quarantine_it(
    tmp_path: Path,
) -> None:
    a = Spool(tmp_path / "spool", shared=True)
    b = Spool(tmp_path / "spool", shared=True)
    try:
        a.put("bucket", "x.pdf", b"payload")
        seen = b.entry("bucket", "x.pdf")
        assert seen is not None
        assert a.remove(a.entry("bucket", "x.pdf"))  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            b.read(seen)
        assert b.quarantined() == []
    finally:
        a.close()
        b.close()


def test_a_worker_starting_leaves_a_live_writers_temp_file_and_drops_a_dead_ones(
    tmp_path: Path,
) -> None:
    a = Spool(tmp_path / "spool", shared=True)
    objects = tmp_path / "spool" / "objects"
    live, dead = objects / ".tmp-live", objects / ".tmp-dead"
    dead.write_bytes(b"left by a writer that died")
    with live.open("wb") as writing:
        fcntl.flock(writing.fileno(), fcntl.LOCK_EX)  # as Spool's writer holds it
        b = Spool(tmp_path / "spool", shared=True)  # a worker starting meanwhile
        assert live.exists()
        assert not dead.exists()
    a.close()
    b.close()


async def test_two_uploaders_sharing_a_lease_upload_each_entry_once(tmp_path: Path) -> None:
    a = Spool(tmp_path / "spool", shared=True)
    b = Spool(tmp_path / "spool", shared=True)
    s3 = FakeS3()
    try:
        for n in range(5):
            (a if n % 2 else b).put(None, f"k{n}", b"x" * n)
        up_a, up_b = SpoolUploader(a, s3), SpoolUploader(b, s3)
        up_a.share(tmp_path / "spool.lease")
        up_b.share(tmp_path / "spool.lease")
        results = await asyncio.gather(up_a.drain(), up_b.drain(), up_a.drain(), up_b.drain())
        assert sum(r.uploaded for r in results) == 5
        assert sorted(s3.puts) == [f"k{n}" for n in range(5)]  # each once
        assert a.entries() == b.entries() == []
    finally:
        a.close()
        b.close()


class FakeS3:
    """The calls :class:`SpoolUploader` makes, in memory; each upload yields to the loop."""

    bucket = "bucket"

    def __init__(self) -> None:
        self.breaker = CircuitBreaker("s3", clock=FakeClock())
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.puts: list[str] = []

    async def upload(self, key: str, data: bytes, **kwargs: Any) -> None:
        await asyncio.sleep(0.01)
        self.puts.append(key)
        self.objects[key] = (bytes(data), dict(kwargs.get("metadata") or {}))

    async def head(self, key: str, **kwargs: Any) -> Any:
        body, metadata = self.objects[key]
        return SimpleNamespace(size=len(body), metadata=metadata, etag=None)


# ------------------------------------------------------------------ coherence


def test_a_key_one_worker_recorded_stops_cached_reads_in_every_worker(tmp_path: Path) -> None:
    redis = FakeRedis()
    a = CacheCoherence(redis, tmp_path / "coherence.db", shared=True)
    b = CacheCoherence(redis, tmp_path / "coherence.db", shared=True)
    try:
        assert a.reads_allowed() and b.reads_allowed()
        redis.down = True
        assert a.invalidate("product:1") is False  # recorded by a
        assert not b.reads_allowed()  # b sees it: no stale read from b either
        assert b.pending_keys() == [b"product:1"]
        redis.down = False
        report = b.reconcile()  # flushed by b
        assert report.deleted == 1 and redis.deleted == [b"product:1"]
        assert a.reads_allowed() and b.reads_allowed()
        assert a.reconcile().deleted == 0  # not deleted twice
    finally:
        a.close()
        b.close()


def test_a_read_never_waits_for_the_journal_a_record_is_using(tmp_path: Path) -> None:
    """A record may wait up to SQLite's busy timeout for another process's write lock;
    a shared journal's reads_allowed (on the event loop, every cached read) must not
    wait with it: it answers "no" (read from the database) at once."""
    coherence = CacheCoherence(FakeRedis(), tmp_path / "coherence.db", shared=True)
    try:
        busy, release = threading.Event(), threading.Event()

        def hold() -> None:
            with coherence._lock:  # as a record waiting for the write lock holds it
                busy.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        busy.wait(10)
        assert coherence.reads_allowed() is False
        release.set()
        t.join(10)
        assert coherence.reads_allowed() is True
    finally:
        coherence.close()


def test_reconciles_of_two_workers_take_turns(tmp_path: Path) -> None:
    redis = FakeRedis()
    a = CacheCoherence(redis, tmp_path / "coherence.db", shared=True)
    b = CacheCoherence(redis, tmp_path / "coherence.db", shared=True)
    try:
        a.record(*(f"k{n}" for n in range(10)))
        turn = a._lease
        assert turn is not None and turn.try_acquire()  # a's turn, as in its reconcile
        done: list[int] = []
        t = threading.Thread(target=lambda: done.append(b.reconcile().deleted))
        t.start()
        t.join(0.3)
        assert t.is_alive() and redis.deleted == []  # b waits for its turn
        turn.release()
        t.join(10)
        assert done == [10]
        assert sorted(redis.deleted) == sorted(f"k{n}".encode() for n in range(10))
        assert a.reads_allowed() and a.pending() == 0
    finally:
        a.close()
        b.close()


def test_unshared_spool_and_coherence_are_unchanged(tmp_path: Path) -> None:
    """The defaults stay one-process: a second Spool is refused at once."""
    with Spool(tmp_path / "spool"), pytest.raises(SpoolError):
        Spool(tmp_path / "spool", shared=True)
    assert not os.path.exists(tmp_path / "coherence.db.lease")
