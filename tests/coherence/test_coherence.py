"""CacheCoherence with a fake Redis adapter: durable journal, reconcile, triggers, manager holds."""

from __future__ import annotations

import asyncio
import doctest
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import brownout.coherence
from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State
from brownout.coherence import CacheCoherence, CoherenceError
from brownout.health import Component, DegradationManager, Feature, Level
from brownout.testing import FakeClock


class FakeRedis:
    """A Redis adapter stand-in: ``delete`` runs through ``breaker``; ``down`` makes it fail.

    ``fail_after`` lets that many DEL calls succeed, then fails (a Redis that dies
    mid-reconcile); ``during_delete`` runs inside a DEL (a concurrent write).
    """

    def __init__(self, breaker: CircuitBreaker | None = None) -> None:
        self.breaker = breaker or CircuitBreaker("redis", clock=FakeClock())
        self.down = False
        self.fail_after: int | None = None
        self.calls: list[tuple[object, ...]] = []
        self.deleted: list[object] = []
        self.during_delete: Any = None

    def _delete(self, *keys: object) -> int:
        self.calls.append(keys)
        if self.during_delete is not None:
            hook, self.during_delete = self.during_delete, None
            hook()
        if self.down:
            raise ConnectionRefusedError("Connection refused (fake)")
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise TimeoutError("Timeout reading from socket (fake)")
            self.fail_after -= 1
        self.deleted.extend(keys)
        return len(keys)

    def delete(self, *keys: object) -> int:
        return self.breaker.call(self._delete, *keys)


class AsyncFakeRedis(FakeRedis):
    async def delete(self, *keys: object) -> int:  # type: ignore[override]
        return await self.breaker.acall(self._adelete, *keys)

    async def _adelete(self, *keys: object) -> int:
        await asyncio.sleep(0)
        return self._delete(*keys)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        "redis",
        BreakerConfig(consecutive_failures=2, open_for=20.0, half_open_calls=1),
        clock=clock,
    )


@pytest.fixture
def redis(breaker: CircuitBreaker) -> FakeRedis:
    return FakeRedis(breaker)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "var" / "coherence.db"


@pytest.fixture
def cc(redis: FakeRedis, journal: Path) -> Iterator[CacheCoherence]:
    c = CacheCoherence(redis, journal, batch_size=2)
    yield c
    c.close()


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(brownout.coherence, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------- recording


def test_invalidate_deletes_at_once_while_redis_answers(
    cc: CacheCoherence, redis: FakeRedis
) -> None:
    assert cc.invalidate("p:1", b"p:2") is True
    assert redis.deleted == ["p:1", b"p:2"]
    assert cc.pending() == 0
    assert cc.reads_allowed()


def test_keys_recorded_while_down_survive_close_and_reopen(redis: FakeRedis, journal: Path) -> None:
    redis.down = True
    with CacheCoherence(redis, journal) as cc:
        assert cc.invalidate("p:1", "p:2") is False
        assert cc.invalidate("p:3") is False
        assert cc.invalidate("p:1") is False  # twice: one entry
        assert cc.reads_allowed() is False
        assert cc.stats()["recorded_total"] == 4
    # a new process: the keys are still there, and reads stay off
    with CacheCoherence(redis, journal) as again:
        assert again.pending() == 3
        assert again.reads_allowed() is False
        assert sorted(again.pending_keys()) == [b"p:1", b"p:2", b"p:3"]


def test_the_journal_is_wal_with_full_sync(cc: CacheCoherence, journal: Path) -> None:
    assert cc._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_reads_stay_off_until_every_key_is_deleted(
    cc: CacheCoherence, redis: FakeRedis, breaker: CircuitBreaker
) -> None:
    redis.down = True
    cc.invalidate("a", "b", "c")
    report = cc.reconcile()  # Redis still down
    assert (report.deleted, report.remaining) == (0, 3)
    assert report.stopped is not None and "ConnectionRefusedError" in report.stopped
    assert cc.reads_allowed() is False
    assert (
        cc.reconcile().stopped == "BreakerOpen: circuit breaker 'redis' is open; retry after 20 s"
    )
    redis.down = False
    breaker.reset()
    report = cc.reconcile()
    assert (report.deleted, report.remaining, report.stopped) == (3, 0, None)
    assert sorted(map(bytes, redis.deleted)) == [b"a", b"b", b"c"]  # type: ignore[call-overload]
    assert [len(c) for c in redis.calls[-2:]] == [2, 1]  # batches of batch_size=2
    assert cc.reads_allowed() is True
    assert cc.stats()["reconciled_total"] == 3


def test_partial_reconcile_failure_keeps_the_remaining_keys(
    redis: FakeRedis, journal: Path, breaker: CircuitBreaker
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal, batch_size=2) as cc:
        cc.invalidate("k1", "k2", "k3", "k4", "k5")
        redis.down = False
        redis.fail_after = 1  # one batch goes through, then Redis dies again
        report = cc.reconcile()
        assert report.deleted == 2
        assert report.remaining == 3
        assert report.stopped is not None and "TimeoutError" in report.stopped
        assert cc.reads_allowed() is False
    with CacheCoherence(redis, journal, batch_size=2) as again:  # and after a restart
        assert again.pending_keys() == [b"k3", b"k4", b"k5"]
        redis.fail_after = None
        breaker.reset()
        assert again.reconcile().deleted == 3
        assert again.reads_allowed()


def test_a_key_invalidated_again_during_its_delete_stays_recorded(
    cc: CacheCoherence, redis: FakeRedis
) -> None:
    redis.down = True
    cc.invalidate("k")
    redis.down = False
    # a write records "k" again while the reconcile's DEL of "k" is in flight; the
    # next DEL (which would cover the new record) fails
    redis.during_delete = lambda: cc.record("k")
    redis.fail_after = 1
    report = cc.reconcile()
    assert report.stopped is not None
    assert cc.pending_keys() == [b"k"], report  # the first DEL does not cover it
    assert cc.reads_allowed() is False
    redis.fail_after = None
    cc.reconcile()
    assert cc.reads_allowed() is True
    assert redis.deleted == [b"k", b"k"]  # one DEL per reconcile


def test_an_error_that_is_not_an_outage_is_raised_and_nothing_recorded(
    journal: Path,
) -> None:
    class Forbidden(Exception):
        pass

    class AclRedis:
        def delete(self, *keys: object) -> int:
            raise Forbidden("NOPERM this user has no permissions to run the 'del' command")

    with CacheCoherence(AclRedis(), journal) as cc:
        with pytest.raises(Forbidden):
            cc.invalidate("k")
        assert cc.pending() == 0


def test_the_redis_adapters_error_table_decides_what_is_an_outage(journal: Path) -> None:
    pytest.importorskip("redis")
    import redis.exceptions as rex

    from brownout.redis import REDIS_ERRORS

    class TableRedis:
        errors = REDIS_ERRORS

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def delete(self, *keys: object) -> int:
            raise self.exc

    with CacheCoherence(TableRedis(rex.ConnectionError("gone")), journal) as cc:
        assert cc.invalidate("k") is False  # counts: recorded
    with CacheCoherence(TableRedis(rex.ResponseError("WRONGTYPE")), journal) as cc:
        with pytest.raises(rex.ResponseError):
            cc.invalidate("other")  # the caller's: raised
        assert cc.pending_keys() == [b"k"]


def test_breaker_open_rejections_are_recorded(
    cc: CacheCoherence, redis: FakeRedis, breaker: CircuitBreaker
) -> None:
    breaker.force_open()
    assert cc.invalidate("k") is False
    assert redis.calls == []  # never reached Redis
    assert cc.pending_keys() == [b"k"]


# ---------------------------------------------------------------------- bad input, bad files


@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        ((5,), TypeError, r"key #0 is int \(5\)"),
        (("ok", None), TypeError, r"key #1 is NoneType"),
        ((bytearray(b"x"),), TypeError, "must be str or bytes"),
        (("bad\udc80",), ValueError, "not valid UTF-8"),
    ],
)
def test_bad_keys_are_a_clear_error_and_touch_nothing(
    cc: CacheCoherence, redis: FakeRedis, keys: tuple[Any, ...], error: type, match: str
) -> None:
    for method in (cc.invalidate, cc.record):
        with pytest.raises(error, match=match):
            method(*keys)
    redis.down = True
    with pytest.raises(error, match=match):
        cc.invalidate(*keys)
    assert redis.calls == []  # validated before anything is sent
    assert cc.pending() == 0


async def test_bad_keys_async(journal: Path, breaker: CircuitBreaker) -> None:
    with (
        CacheCoherence(AsyncFakeRedis(breaker), journal) as cc,
        pytest.raises(TypeError, match="must be str or bytes"),
    ):
        await cc.ainvalidate(1.5)  # type: ignore[arg-type]


def test_a_corrupted_journal_is_a_clear_error_naming_the_file(
    redis: FakeRedis, journal: Path
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal) as cc:
        cc.invalidate("k")
    data = bytearray(journal.read_bytes())
    data[0:16] = b"this is garbage!"
    journal.write_bytes(bytes(data))
    with pytest.raises(CoherenceError, match="cannot be opened as a SQLite database") as info:
        CacheCoherence(redis, journal)
    assert str(journal) in str(info.value)
    assert "FLUSHDB" in str(info.value)
    assert journal.read_bytes() == bytes(data)  # left as it was


def test_a_sqlite_file_that_is_not_a_journal_is_refused(redis: FakeRedis, journal: Path) -> None:
    journal.parent.mkdir(parents=True)
    db = sqlite3.connect(journal)
    db.execute("CREATE TABLE pending (id INTEGER, payload TEXT)")
    db.close()
    with pytest.raises(CoherenceError, match="not a coherence journal") as info:
        CacheCoherence(redis, journal)
    assert str(journal) in str(info.value)


def test_a_journal_deleted_without_its_wal_is_refused(redis: FakeRedis, journal: Path) -> None:
    journal.parent.mkdir(parents=True)
    wal = journal.with_name(journal.name + "-wal")
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4096)  # a log with frames, no journal
    with pytest.raises(CoherenceError, match="write-ahead log") as info:
        CacheCoherence(redis, journal)
    assert str(journal) in str(info.value)
    assert not journal.exists()


def test_an_unusable_directory_is_a_clear_error(redis: FakeRedis, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CoherenceError, match="cannot create its directory"):
        CacheCoherence(redis, blocker / "sub" / "coherence.db")


def test_a_full_disk_is_a_clear_error_and_keeps_every_key(
    redis: FakeRedis, journal: Path, breaker: CircuitBreaker
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal) as cc:
        cc.invalidate("early")
        pages = cc._db.execute("PRAGMA page_count").fetchone()[0]
        cc._db.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
        with pytest.raises(CoherenceError, match="full") as info:
            for i in range(1000):
                cc.invalidate(f"late:{i}:" + "x" * 3000)
        assert str(journal) in str(info.value)
        # the key that could not be journaled is kept in memory: reads stay off
        assert cc.stats()["unjournaled"] == 1
        assert cc.reads_allowed() is False
        redis.down = False
        breaker.reset()
        report = cc.reconcile()
        assert report.remaining == 0
        assert any(
            str(k).startswith("late:") or bytes(k).startswith(b"late:") for k in redis.deleted
        )  # type: ignore[call-overload]
        assert cc.reads_allowed() is True
    with CacheCoherence(redis, journal) as again:
        assert again.pending() == 0


def test_a_key_that_could_not_be_journaled_alone_keeps_reads_off(
    redis: FakeRedis, journal: Path, breaker: CircuitBreaker
) -> None:
    with CacheCoherence(redis, journal) as cc:
        pages = cc._db.execute("PRAGMA page_count").fetchone()[0]
        cc._db.execute(f"PRAGMA max_page_count = {pages}")
        redis.down = True
        with pytest.raises(CoherenceError, match="full"):
            cc.invalidate("big:" + "x" * 20_000)
        assert cc._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
        assert cc.pending() == 1
        assert cc.reads_allowed() is False
        redis.down = False
        breaker.reset()
        assert cc.reconcile().deleted == 1
        assert cc.reads_allowed() is True


def test_overflow_keeps_reads_off_until_the_operator_clears_it(
    redis: FakeRedis, journal: Path, breaker: CircuitBreaker
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal, max_keys=3) as cc:
        cc.invalidate("a", "b", "c")
        with pytest.raises(CoherenceError, match="max_keys=3") as info:
            cc.invalidate("d")
        assert "FLUSHDB" in str(info.value)
        redis.down = False
        breaker.reset()
        assert cc.reconcile().remaining == 0
        assert cc.reads_allowed() is False  # "d" was never recorded: still unsafe
        assert cc.overflowed
    with CacheCoherence(redis, journal, max_keys=3) as again:  # durable
        assert again.overflowed and not again.reads_allowed()
        again.clear_overflow()
        assert again.reads_allowed()


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        CacheCoherence(FakeRedis(), "/tmp/never-created.db", batch_size=0)
    with pytest.raises(TypeError, match="delete"):
        CacheCoherence(object(), "/tmp/never-created.db")


async def test_async_with_closes_the_journal(redis: FakeRedis, journal: Path) -> None:
    """An async owner closes it with ``async with`` (awaiting aclose) like the adapters."""
    async with CacheCoherence(redis, journal) as cc:
        redis.down = True
        assert cc.invalidate("p:1") is False
    with pytest.raises(CoherenceError, match="closed"):
        cc.record("k")
    with CacheCoherence(redis, journal) as again:
        assert again.pending() == 1


def test_a_closed_journal_is_a_clear_error(cc: CacheCoherence, redis: FakeRedis) -> None:
    cc.close()
    with pytest.raises(CoherenceError, match="closed"):
        cc.record("k")


# ---------------------------------------------------------------------- triggers


def test_watch_reconciles_when_the_breaker_closes(
    cc: CacheCoherence, redis: FakeRedis, breaker: CircuitBreaker
) -> None:
    cc.watch(breaker)
    breaker.force_open()
    cc.invalidate("a", "b", "c")
    assert cc.pending() == 3
    breaker.reset()  # closes: a reconcile starts in a thread
    cc.wait_reconciled_sync(timeout=10)
    assert cc.pending() == 0
    assert cc.reads_allowed()
    assert cc.last_report is not None and cc.last_report.deleted == 3


def test_watch_reconciles_on_half_open_and_its_deletes_close_the_breaker(
    cc: CacheCoherence, redis: FakeRedis, breaker: CircuitBreaker, clock: FakeClock
) -> None:
    cc.watch(breaker)
    redis.down = True
    cc.invalidate("a")
    cc.invalidate("b")  # 2 failures: open
    assert breaker.state is State.OPEN
    redis.down = False
    clock.advance(20)
    assert breaker.state is State.HALF_OPEN  # the reconcile's DEL is the trial call
    cc.wait_reconciled_sync(timeout=10)
    assert cc.reads_allowed()
    assert breaker.state is State.CLOSED


def test_watch_at_start_deletes_keys_left_by_a_previous_process(
    redis: FakeRedis, journal: Path, breaker: CircuitBreaker
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal) as cc:
        cc.record("left")
    redis.down = False
    with CacheCoherence(redis, journal) as again:
        again.watch(breaker)  # closed breaker, keys pending: at once
        again.wait_reconciled_sync(timeout=10)
        assert again.reads_allowed()
        assert redis.deleted == [b"left"]


async def test_watch_async_adapter_reconciles_in_a_task(
    journal: Path, breaker: CircuitBreaker
) -> None:
    redis = AsyncFakeRedis(breaker)
    with CacheCoherence(redis, journal) as cc:
        cc.watch(breaker)
        breaker.force_open()
        assert await cc.ainvalidate("a") is False
        assert cc.pending() == 1
        breaker.reset()
        await cc.wait_reconciled()
        assert cc.reads_allowed()
        assert redis.deleted == [b"a"]


async def test_a_transition_in_another_thread_reconciles_on_the_loop(
    journal: Path, breaker: CircuitBreaker
) -> None:
    redis = AsyncFakeRedis(breaker)
    cc = CacheCoherence(redis, journal)
    try:
        cc.watch(breaker)
        breaker.force_open()
        await cc.ainvalidate("a")
        thread = threading.Thread(target=breaker.reset)
        thread.start()
        await asyncio.to_thread(thread.join)
        await cc.wait_reconciled()
        assert cc.reads_allowed()
    finally:
        await cc.aclose()


async def test_cancelled_invalidation_is_recorded(journal: Path, breaker: CircuitBreaker) -> None:
    started = asyncio.Event()

    class SlowRedis:
        async def delete(self, *keys: object) -> int:
            started.set()
            await asyncio.sleep(3600)
            return 0

    with CacheCoherence(SlowRedis(), journal) as cc:
        task = asyncio.create_task(cc.ainvalidate("k"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cc.pending_keys() == [b"k"]


def test_sync_and_async_misuse_is_a_clear_error(journal: Path, breaker: CircuitBreaker) -> None:
    with CacheCoherence(AsyncFakeRedis(breaker), journal) as cc:
        with pytest.raises(TypeError, match="await ainvalidate"):
            cc.invalidate("k")
        with pytest.raises(TypeError, match="await areconcile"):
            cc.reconcile()


async def test_areconcile_over_a_sync_adapter(cc: CacheCoherence, redis: FakeRedis) -> None:
    redis.down = True
    await cc.ainvalidate("a", "b", "c")
    redis.down = False
    report = await cc.areconcile()
    assert (report.deleted, report.remaining) == (3, 0)


# ---------------------------------------------------------------------- degradation manager


def _manager(clock: FakeClock, breaker: CircuitBreaker) -> DegradationManager:
    return DegradationManager(
        [Component("database"), Component("cache", breaker=breaker)],
        [Feature("cache_read", {"cache"}, Level.DEGRADED)],
        clock=clock,
        dwell=0.0,
        recovery="direct",
    )


def _cache_view(manager: DegradationManager) -> dict[str, Any]:
    (view,) = [c for c in manager.explain()["components"] if c["name"] == "cache"]
    return view


def test_manager_holds_the_cache_until_the_keys_are_deleted(
    clock: FakeClock, breaker: CircuitBreaker, redis: FakeRedis, journal: Path
) -> None:
    manager = _manager(clock, breaker)
    assert manager.enabled("cache_read")
    with CacheCoherence(redis, journal, manager=manager) as cc:
        redis.down = True
        cc.invalidate("a")
        cc.invalidate("b")  # the breaker opens
        assert breaker.state is State.OPEN
        assert not manager.enabled("cache_read")
        redis.down = False
        breaker.reset()  # Redis is back and the breaker closed, keys not deleted yet
        assert breaker.state is State.CLOSED
        view = _cache_view(manager)
        assert view["status"] == "recovering"
        assert any("held: invalidating" in why for why in view["why"])
        assert not manager.enabled("cache_read")
        assert manager.feature_reason("cache_read") == "cache recovering"
        cc.reconcile()
        assert _cache_view(manager)["status"] == "up"
        assert manager.enabled("cache_read")
        manager.evaluate()
        assert manager.level is Level.OPTIMAL


def test_keys_from_a_previous_process_hold_the_manager_at_once(
    clock: FakeClock, breaker: CircuitBreaker, redis: FakeRedis, journal: Path
) -> None:
    redis.down = True
    with CacheCoherence(redis, journal) as cc:
        cc.record("stale")
    manager = _manager(clock, breaker)
    redis.down = False
    with CacheCoherence(redis, journal, manager=manager):
        assert _cache_view(manager)["status"] == "recovering"
        assert not manager.enabled("cache_read")


async def test_the_heartbeat_retries_a_reconcile_that_stopped(
    clock: FakeClock, breaker: CircuitBreaker, redis: FakeRedis, journal: Path
) -> None:
    manager = _manager(clock, breaker)
    with CacheCoherence(redis, journal, manager=manager) as cc:
        cc.watch(breaker)
        redis.down = True
        cc.invalidate("a")  # one failure: the breaker stays closed, no transition will come
        assert breaker.state is State.CLOSED
        cc.wait_reconciled_sync(timeout=10)
        assert not cc.reads_allowed()
        redis.down = False
        await manager.tick()  # the heartbeat
        cc.wait_reconciled_sync(timeout=10)
        assert cc.reads_allowed()
        assert redis.deleted == [b"a"]
        view = _cache_view(manager)  # released (its score still counts the failed DEL)
        assert view["status"] != "recovering"
        assert not any("held" in why for why in view["why"])


def test_an_overflow_holds_with_its_own_reason(
    clock: FakeClock, breaker: CircuitBreaker, redis: FakeRedis, journal: Path
) -> None:
    manager = _manager(clock, breaker)
    with CacheCoherence(redis, journal, manager=manager, max_keys=1) as cc:
        redis.down = True
        with pytest.raises(CoherenceError):
            cc.invalidate("a", "b")
        assert any("overflowed" in why for why in _cache_view(manager)["why"])
        cc.clear_overflow()
        assert _cache_view(manager)["status"] != "recovering"


def test_an_unknown_component_is_refused(
    clock: FakeClock, breaker: CircuitBreaker, redis: FakeRedis, journal: Path
) -> None:
    with pytest.raises(ValueError, match="no component 'redis-cache'"):
        CacheCoherence(redis, journal, manager=_manager(clock, breaker), component="redis-cache")


def test_breaker_open_error_is_an_outage_for_plain_objects(journal: Path) -> None:
    class Rejecting:
        def delete(self, *keys: object) -> int:
            raise BreakerOpen("redis", State.OPEN, 3.0)

    with CacheCoherence(Rejecting(), journal) as cc:
        assert cc.invalidate("k") is False


# ---------------------------------------------------------------------- max_wait: a slow Redis


class GatedRedis:
    """An async adapter stand-in whose DELs wait until ``release()`` (a slow Redis);
    ``fail`` makes a released DEL fail as an outage."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent = asyncio.Event()
        self.started = 0
        self.deleted: list[object] = []
        self.cancelled = 0
        self.fail = False

    async def delete(self, *keys: object) -> int:
        self.started += 1
        self.sent.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise TimeoutError("Timeout reading from socket (fake)")
        self.deleted.extend(keys)
        return len(keys)

    def release(self) -> None:
        self.gate.set()


async def test_a_del_past_max_wait_is_recorded_and_the_write_answered(journal: Path) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        assert await cc.ainvalidate("p:1") is False  # not answered within the wait
        assert cc.pending_keys() == [b"p:1"]
        assert not cc.reads_allowed()
        assert redis.started == 1 and redis.deleted == []  # still on its way
        redis.release()  # Redis answers, late
        await cc.wait_reconciled()
        assert redis.deleted == ["p:1"]
        assert cc.pending() == 0  # the late DEL dropped the key it deleted
        assert cc.reads_allowed()


async def test_a_del_answered_within_max_wait_records_nothing(journal: Path) -> None:
    redis = GatedRedis()
    redis.release()
    async with CacheCoherence(redis, journal, max_wait=3600.0) as cc:
        assert await cc.ainvalidate("p:1") is True
        assert redis.deleted == ["p:1"]
        assert cc.pending() == 0
        assert cc.stats()["recorded_total"] == 0


async def test_a_failed_del_within_max_wait_is_recorded_at_once(
    journal: Path, breaker: CircuitBreaker
) -> None:
    redis = AsyncFakeRedis(breaker)
    redis.down = True
    async with CacheCoherence(redis, journal, max_wait=3600.0) as cc:
        assert await cc.ainvalidate("p:1") is False
        assert cc.pending_keys() == [b"p:1"]
        assert not cc._late  # nothing left in the background


async def test_a_late_del_that_fails_leaves_the_key_for_the_reconcile(journal: Path) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        assert await cc.ainvalidate("p:1") is False
        redis.fail = True
        redis.release()
        await cc.wait_reconciled()
        assert cc.pending_keys() == [b"p:1"]  # still stale in Redis as far as we know
        redis.fail = False
        report = await cc.areconcile()
        assert (report.deleted, report.remaining) == (1, 0)
        assert cc.reads_allowed()


async def test_a_key_recorded_again_after_its_late_del_was_sent_stays_recorded(
    journal: Path,
) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        assert await cc.ainvalidate("p:1") is False  # write 1: its DEL is late
        cc.record("p:1")  # write 2 invalidates it again (say Redis refused that DEL)
        redis.release()  # write 1's DEL lands: it says nothing of write 2
        await cc.wait_reconciled()
        assert cc.pending_keys() == [b"p:1"]
        assert not cc.reads_allowed()


async def test_late_dels_in_the_background_are_bounded(journal: Path) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        cc.max_background_deletes = 2
        for key in ("a", "b", "c"):
            assert await cc.ainvalidate(key) is False
        assert len(cc._late) == 2
        await asyncio.sleep(0)  # the cancelled DEL unwinds
        assert redis.cancelled == 1  # the third one: cancelled, not left dangling
        assert cc.pending() == 3  # every key recorded
        redis.release()
        await cc.wait_reconciled()
        assert cc.pending_keys() == [b"c"]  # the two late DELs dropped theirs


async def test_close_cancels_the_late_dels_and_keeps_their_keys(journal: Path) -> None:
    redis = GatedRedis()
    cc = CacheCoherence(redis, journal, max_wait=0.0)
    assert await cc.ainvalidate("p:1") is False
    await cc.aclose()
    assert redis.cancelled == 1
    with CacheCoherence(redis, journal) as again:
        assert again.pending_keys() == [b"p:1"]


async def test_cancelled_while_waiting_within_max_wait_is_recorded(journal: Path) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=3600.0) as cc:
        task = asyncio.create_task(cc.ainvalidate("k"))
        await redis.sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cc.pending_keys() == [b"k"]
        redis.release()  # its DEL was not left dangling: it finishes in the background
        await cc.wait_reconciled()
        assert redis.deleted == ["k"]


async def test_a_late_del_does_not_hold_the_manager_unless_it_fails(
    clock: FakeClock, breaker: CircuitBreaker, journal: Path
) -> None:
    """A Redis that answers late is slow, not recovering: the manager is held (the cache
    "recovering", its features off) only for keys the late DEL did not delete."""
    manager = _manager(clock, breaker)
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, manager=manager, max_wait=0.0) as cc:
        assert await cc.ainvalidate("p:1") is False
        assert not cc.reads_allowed()  # cached reads are off all the same
        assert _cache_view(manager)["status"] == "up"
        redis.release()
        await cc.wait_reconciled()
        assert cc.reads_allowed()
        assert _cache_view(manager)["status"] == "up"

        redis.gate = asyncio.Event()
        redis.fail = True
        assert await cc.ainvalidate("p:2") is False
        assert _cache_view(manager)["status"] == "up"
        redis.release()  # that DEL fails: p:2 may be stale in Redis
        await cc.wait_reconciled()
        view = _cache_view(manager)
        assert view["status"] == "recovering"
        assert any("held: invalidating" in why for why in view["why"])
        assert not manager.enabled("cache_read")
        redis.fail = False
        await cc.areconcile()
        assert _cache_view(manager)["status"] == "up"
        assert manager.enabled("cache_read")


async def test_a_cancelled_late_del_holds_the_manager(
    clock: FakeClock, breaker: CircuitBreaker, journal: Path
) -> None:
    manager = _manager(clock, breaker)
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, manager=manager, max_wait=0.0) as cc:
        cc.max_background_deletes = 0  # every late DEL is cancelled
        assert await cc.ainvalidate("p:1") is False
        await asyncio.sleep(0)
        assert redis.cancelled == 1
        assert _cache_view(manager)["status"] == "recovering"


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan"), "0.02", True])
def test_bad_max_wait_is_a_clear_error(bad: object, journal: Path) -> None:
    with pytest.raises(ValueError, match="max_wait"):
        CacheCoherence(GatedRedis(), journal, max_wait=bad)  # type: ignore[arg-type]


async def test_late_dels_record_and_drop_their_keys_in_few_transactions(journal: Path) -> None:
    """Writes late at once share a transaction (one fsync) to record their keys, and the
    keys their DELs deleted are dropped together too (a group commit)."""
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        batches: list[tuple[int, int]] = []
        commit = cc._commit_batch

        def spy(records: Any, drops: Any) -> Any:
            batches.append((sum(len(raw) for raw, _ in records), len(drops)))
            return commit(records, drops)

        cc._commit_batch = spy  # type: ignore[method-assign]
        keys = [f"p:{i}" for i in range(20)]
        results = await asyncio.gather(*(cc.ainvalidate(k) for k in keys))
        assert results == [False] * 20
        assert sorted(cc.pending_keys()) == sorted(k.encode() for k in keys)
        assert len(batches) <= 2 and sum(r for r, _ in batches) == 20
        batches.clear()
        redis.release()
        await cc.wait_reconciled()
        assert cc.pending() == 0
        assert len(batches) <= 2 and sum(d for _, d in batches) == 20


async def test_after_a_late_del_the_next_writes_do_not_wait_for_a_second(
    journal: Path, clock: FakeClock
) -> None:
    """Redis is slow: each write would wait the whole max_wait for nothing; for
    ``slow_backoff`` seconds after a late DEL they do not wait at all."""
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=3600.0, clock=clock) as cc:
        cc._slow_until = clock() + 1.0  # as a late DEL leaves it (a 3600 s wait cannot)
        assert await cc.ainvalidate("p:1") is False  # did not wait the hour
        assert cc.pending_keys() == [b"p:1"]
        clock.advance(1.0)
        task = asyncio.create_task(cc.ainvalidate("p:2"))
        await redis.sent.wait()
        await asyncio.sleep(0)
        assert not task.done()  # waits again (up to max_wait) once the second is over
        redis.release()
        assert await task is True
        await cc.wait_reconciled()


async def test_a_late_del_starts_the_no_wait_second(journal: Path, clock: FakeClock) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0, clock=clock) as cc:
        assert await cc.ainvalidate("p:1") is False
        assert cc._slow_until == clock() + cc.slow_backoff
        redis.release()
        await cc.wait_reconciled()
