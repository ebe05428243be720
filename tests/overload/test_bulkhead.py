"""Bulkhead: fixed and adaptive limits, bounded waits in threads and in asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from brownout import BrownoutError
from brownout.overload import Bulkhead, BulkheadFull, Gradient2, Overloaded, Permit
from brownout.testing import FakeClock


class Recorder:
    """A LimitPolicy that records its samples and keeps a settable limit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.samples: list[tuple[float, int, bool]] = []
        self.times: list[float] = []

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        self.samples.append((rtt, inflight, dropped))
        self.times.append(now)
        return self._limit


def test_fixed_limit_admits_up_to_the_limit_then_refuses() -> None:
    clock = FakeClock()
    bh = Bulkhead("redis", limit=2, clock=clock)
    a = bh.try_acquire()
    b = bh.try_acquire()
    assert a is not None
    assert b is not None
    assert bh.in_use == 2
    assert bh.saturation == 1.0
    assert bh.try_acquire() is None
    with pytest.raises(BulkheadFull) as info:
        bh.acquire().__enter__()
    err = info.value
    assert isinstance(err, Overloaded)
    assert isinstance(err, BrownoutError)
    assert err.name == "redis"
    assert err.retry_after is None  # nothing released yet: no hold time known
    assert str(err) == "'redis' bulkhead is full"
    clock.advance(0.25)
    a.release()
    a.release()  # idempotent
    assert bh.in_use == 1
    c = bh.try_acquire()
    assert c is not None
    with pytest.raises(BulkheadFull) as info:
        bh.call(len, "x")
    assert info.value.retry_after == pytest.approx(0.25)  # the mean hold time
    b.release()
    c.release()
    snap = bh.snapshot()
    assert (snap.in_use, snap.admitted, snap.rejected, snap.waited) == (0, 3, 2, 0)
    assert snap.to_dict()["limit"] == 2
    assert snap.saturation == 0.0


def test_with_releases_on_error_and_reports_drops() -> None:
    policy = Recorder(3)
    clock = FakeClock()
    bh = Bulkhead("db", limit=policy, clock=clock)
    with pytest.raises(TimeoutError), bh.acquire():
        clock.advance(1.5)
        raise TimeoutError
    with pytest.raises(KeyError), bh.acquire():
        raise KeyError("x")
    with bh.acquire():
        with bh.acquire() as inner:
            assert isinstance(inner, Permit)
            assert inner.held
            clock.advance(0.5)
        assert not inner.held
    assert bh.in_use == 0
    # (rtt, calls in flight when admitted, dropped)
    assert policy.samples == [(1.5, 1, True), (0.0, 1, False), (0.5, 2, False), (0.5, 1, False)]
    assert policy.times == [1.5, 1.5, 2.0, 2.0]


def test_adaptive_limit_is_read_from_the_policy() -> None:
    policy = Recorder(3)
    bh = Bulkhead("db", limit=policy)
    assert bh.limit == 3
    assert bh.policy is policy
    policy._limit = 1
    with bh.acquire():
        pass
    assert bh.limit == 1
    assert bh.snapshot().adaptive


def test_a_lowered_limit_admits_nobody_until_enough_calls_finished() -> None:
    policy = Recorder(3)
    bh = Bulkhead("db", limit=policy)
    held = [bh.try_acquire() for _ in range(3)]
    policy._limit = 1
    held[0].release()  # type: ignore[union-attr]
    assert bh.limit == 1
    assert bh.saturation == 2.0
    assert bh.try_acquire() is None
    held[1].release()  # type: ignore[union-attr]
    assert bh.try_acquire() is None
    held[2].release()  # type: ignore[union-attr]
    assert bh.try_acquire() is not None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"limit": 0}, "Bulkhead.limit must be an integer >= 1"),
        ({"limit": True}, "Bulkhead.limit"),
        ({"limit": 2.5}, "Bulkhead.limit"),
        ({"max_wait": -1}, "Bulkhead.max_wait must be >= 0"),
        ({"max_wait": float("inf")}, "Bulkhead.max_wait"),
        ({"max_waiting": -1}, "Bulkhead.max_waiting must be an integer >= 0"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Bulkhead("x", **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_bad_types_are_named() -> None:
    with pytest.raises(ValueError, match=r"Bulkhead.name"):
        Bulkhead("")
    with pytest.raises(TypeError, match=r"Bulkhead.max_wait"):
        Bulkhead("x", max_wait="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Bulkhead.drop_on"):
        Bulkhead("x", drop_on=TimeoutError)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Bulkhead.acquire: timeout"):
        Bulkhead("x").acquire(timeout=-2)
    assert Bulkhead("x", max_wait=timedelta(milliseconds=20)).max_wait == 0.02


# -- waiting in threads ------------------------------------------------------------------


def test_a_thread_waits_for_a_permit_and_gets_it_on_release() -> None:
    bh = Bulkhead("s3", limit=1, max_wait=60)
    first = bh.try_acquire()
    assert first is not None
    got = threading.Event()

    def waiter() -> None:
        with bh.acquire():
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    while bh.waiting == 0:
        threading.Event().wait(0.001)
    assert not got.is_set()
    assert bh.try_acquire() is None  # a late-comer does not overtake the queue
    first.release()
    t.join(30)
    assert got.is_set()
    snap = bh.snapshot()
    assert (snap.in_use, snap.waiting, snap.admitted, snap.waited, snap.rejected) == (0, 0, 2, 1, 0)


def test_a_thread_is_refused_when_its_wait_runs_out() -> None:
    bh = Bulkhead("s3", limit=1, max_wait=60)
    held = bh.try_acquire()
    with pytest.raises(BulkheadFull), bh.acquire(timeout=0.01):
        pass
    assert (bh.waiting, bh.in_use, bh.snapshot().rejected) == (0, 1, 1)
    assert held is not None
    held.release()
    assert bh.in_use == 0


def test_the_queue_is_bounded_by_max_waiting() -> None:
    bh = Bulkhead("s3", limit=1, max_wait=60, max_waiting=0)
    held = bh.try_acquire()
    with pytest.raises(BulkheadFull):
        bh.call(len, "x")  # refused at once: no room in the queue, no wait
    assert held is not None
    held.release()


def test_threads_never_exceed_the_limit() -> None:
    bh = Bulkhead("db", limit=3, max_wait=60, max_waiting=100)
    lock = threading.Lock()
    running = 0
    peak = 0

    def work() -> None:
        nonlocal running, peak
        for _ in range(200):
            with bh.acquire():
                with lock:
                    running += 1
                    peak = max(peak, running)
                with lock:
                    running -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert peak <= 3
    snap = bh.snapshot()
    assert (snap.in_use, snap.waiting, snap.admitted, snap.rejected) == (0, 0, 1600, 0)


# -- waiting in asyncio ------------------------------------------------------------------


async def test_coroutines_wait_in_order_and_are_granted_on_release() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=60, max_waiting=3)
    order: list[int] = []
    gate = asyncio.Event()

    async def call(i: int) -> None:
        async with bh.acquire():
            order.append(i)
            await gate.wait()

    tasks = [asyncio.create_task(call(i)) for i in range(4)]
    await until(lambda: bh.waiting == 3)
    assert order == [0]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert bh.snapshot().waited == 3
    assert bh.in_use == 0


async def test_a_coroutine_is_refused_when_its_wait_runs_out() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=0.01)
    held = bh.try_acquire()
    with pytest.raises(BulkheadFull):
        await bh.acall(asyncio.sleep, 0)
    assert (bh.waiting, bh.in_use) == (0, 1)
    assert held is not None
    held.release()
    assert await bh.acall(asyncio.sleep, 0, "done") == "done"


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=60)
    held = bh.try_acquire()
    task = asyncio.create_task(bh.acall(asyncio.sleep, 0))
    await until(lambda: bh.waiting == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (bh.waiting, bh.in_use) == (0, 1)
    assert held is not None
    held.release()
    assert bh.in_use == 0


async def test_a_waiter_cancelled_after_its_grant_passes_the_permit_on() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=60, max_waiting=2)
    held = bh.try_acquire()
    assert held is not None
    first = asyncio.create_task(bh.acall(asyncio.sleep, 0, "first"))
    second = asyncio.create_task(bh.acall(asyncio.sleep, 0, "second"))
    await until(lambda: bh.waiting == 2)
    held.release()  # grants ``first`` (marked under the lock, woken later) ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "second"
    assert (bh.in_use, bh.waiting) == (0, 0)


async def test_a_release_from_another_thread_wakes_a_coroutine() -> None:
    bh = Bulkhead("redis", limit=1, max_wait=60)
    held = bh.try_acquire()
    assert held is not None
    task = asyncio.create_task(bh.acall(asyncio.sleep, 0, "woken"))
    await until(lambda: bh.waiting == 1)
    t = threading.Thread(target=held.release)
    t.start()
    assert await task == "woken"
    t.join()
    assert bh.in_use == 0


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the tasks reached their wait)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def _rounds(bh: Bulkhead, clock: FakeClock, latency: float, seconds: float) -> None:
    """Keep the bulkhead full of calls that each take ``latency`` for ``seconds``."""
    for _ in range(round(seconds / latency)):
        permits = [bh.try_acquire() for _ in range(bh.limit)]
        clock.advance(latency)
        for p in permits:
            assert p is not None
            p.release()


def test_adaptive_bulkhead_shrinks_when_the_dependency_slows_and_recovers() -> None:
    clock = FakeClock()
    bh = Bulkhead("redis", limit=Gradient2(initial_limit=20), clock=clock)
    _rounds(bh, clock, 0.010, 20)  # steady 10 ms: busy, so the limit grows
    grown = bh.limit
    assert grown > 30
    _rounds(bh, clock, 0.200, 30)  # the dependency slows to 200 ms for 30 s
    assert bh.limit <= 10
    assert bh.max_waiting is None  # the queue's bound is the (now smaller) limit
    _rounds(bh, clock, 0.010, 20)  # latency back to normal: the limit grows again
    assert bh.limit > 20
