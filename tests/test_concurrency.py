"""Concurrency: exact counts, exact half-open permits, no lock held across calls.

No wall-clock timing is asserted here: overlap is proven with barriers (two
calls are inside the guarded function at the same moment), not with sleeps.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State
from brownout.testing import FakeClock

THREADS = 8


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    """Make the interpreter switch threads very often, so races show up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def trip_to_half_open(cb: CircuitBreaker, clock: FakeClock, open_for: float) -> None:
    def boom() -> None:
        raise ConnectionError("down")

    while cb.state is not State.OPEN:
        with pytest.raises(ConnectionError):
            cb.call(boom)
    clock.advance(open_for)
    assert cb.state is State.HALF_OPEN


@pytest.mark.parametrize("permits", [1, 2, 3])
def test_threads_in_half_open_get_exactly_the_permits(permits: int) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "dep",
        BreakerConfig(consecutive_failures=1, open_for=5, half_open_calls=permits),
        clock=clock,
    )
    for _round in range(20):
        trip_to_half_open(cb, clock, 5)
        start = threading.Barrier(THREADS)
        admitted_inside = threading.Barrier(permits, timeout=10)
        release = threading.Event()
        admitted: list[int] = []
        rejected: list[int] = []

        def probe(i: int) -> None:
            start.wait()
            try:
                with cb:
                    admitted.append(i)
                    admitted_inside.wait()  # every admitted probe is inside at once
                    release.wait(10)
            except BreakerOpen:
                rejected.append(i)
                if len(rejected) == THREADS - permits:
                    release.set()

        threads = [threading.Thread(target=probe, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(admitted) == permits
        assert len(rejected) == THREADS - permits
        assert cb.state is State.CLOSED
        cb.force_open()
        cb.reset()


@pytest.mark.parametrize("permits", [1, 2])
async def test_tasks_in_half_open_get_exactly_the_permits(permits: int) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "dep",
        BreakerConfig(consecutive_failures=1, open_for=5, half_open_calls=permits),
        clock=clock,
    )
    trip_to_half_open(cb, clock, 5)
    gate = asyncio.Event()

    async def probe() -> str:
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(cb.acall(probe)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == permits
    assert sum(isinstance(r, BreakerOpen) for r in results) == 20 - permits
    assert cb.state is State.CLOSED


def test_counts_are_exact_under_threads() -> None:
    per_thread = 5_000
    cb = CircuitBreaker(
        "dep",
        BreakerConfig(consecutive_failures=None, window_size=THREADS * per_thread * 2),
        clock=FakeClock(),
    )
    barrier = threading.Barrier(THREADS)

    def boom() -> None:
        raise ValueError

    def work(i: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            if n % 5 == 0:
                try:
                    cb.call(boom)
                except ValueError:
                    pass
            else:
                cb.call(int)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = cb.snapshot()
    assert snap.calls == THREADS * per_thread
    assert snap.failures == THREADS * per_thread // 5
    assert snap.total_failures == THREADS * per_thread // 5


def test_counts_are_exact_with_listeners_under_threads() -> None:
    per_thread = 2_000
    cb = CircuitBreaker(
        "dep",
        BreakerConfig(consecutive_failures=None, window_size=THREADS * per_thread),
        clock=FakeClock(),
    )
    seen: list[object] = []
    cb.add_listener(on_call=seen.append)
    threads = [
        threading.Thread(target=lambda: [cb.call(int) for _ in range(per_thread)])
        for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cb.snapshot().calls == THREADS * per_thread
    assert len(seen) == THREADS * per_thread


def test_rejections_are_counted_exactly_under_threads() -> None:
    cb = CircuitBreaker("dep", BreakerConfig(open_for=1000), clock=FakeClock())
    cb.call(int)
    cb._manual(State.FORCED_OPEN, "test")  # forced: rejections on the locked path
    cb2 = CircuitBreaker("dep2", BreakerConfig(consecutive_failures=1, open_for=1000))
    with pytest.raises(ZeroDivisionError):
        cb2.call(lambda: 1 / 0)  # open: rejections on the lock-free path

    def hammer(target: CircuitBreaker) -> None:
        for _ in range(2_000):
            try:
                target.call(int)
            except BreakerOpen:
                pass

    threads = [threading.Thread(target=hammer, args=(b,)) for b in (cb, cb2) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cb.snapshot().total_rejected == 8_000
    assert cb2.snapshot().total_rejected == 8_000


def test_no_lock_is_held_while_the_guarded_function_runs() -> None:
    """Two threads are inside the same breaker's guarded call at the same time."""
    for listener in (False, True):
        cb = CircuitBreaker("dep", BreakerConfig(slow_call_duration=1.0 if listener else None))
        if listener:
            cb.add_listener(on_call=lambda e: None)
        both_inside = threading.Barrier(2, timeout=10)
        results: list[str] = []

        def work() -> None:
            results.append(cb.call(lambda: (both_inside.wait() and "ok") or "ok"))

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == ["ok", "ok"]  # a held lock would have broken the barrier


def test_no_lock_is_held_across_await() -> None:
    cb = CircuitBreaker("dep")

    async def main() -> list[int]:
        inside = 0
        peak = 0
        gate = asyncio.Event()

        async def work() -> int:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            if inside == 10:
                gate.set()
            await gate.wait()
            inside -= 1
            return peak

        return await asyncio.gather(*(cb.acall(work) for _ in range(10)))

    assert max(asyncio.run(main())) == 10


def test_listener_may_reenter_the_breaker() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("dep", BreakerConfig(consecutive_failures=1, open_for=1), clock=clock)
    states: list[State] = []
    cb.add_listener(on_state_change=lambda e: states.append(cb.snapshot().state))
    with pytest.raises(ZeroDivisionError):
        cb.call(lambda: 1 / 0)
    assert states == [State.OPEN]


@pytest.mark.parametrize("keep_more", [False, True])
def test_snapshots_while_threads_call_through_the_lock_free_path(keep_more: bool) -> None:
    """snapshot() reads the count window while other threads append to it without the
    lock: it must copy atomically, never iterate the live deque."""
    cfg = BreakerConfig(  # consecutive_failures > window_size: the window keeps more
        consecutive_failures=1000 if keep_more else 5,
        failure_rate=0.99,
        window_size=50,
        minimum_calls=10,
    )
    cb = CircuitBreaker("race", cfg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        while not stop.is_set():
            cb.call(int, 1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for _ in range(3000):
            try:
                cb.snapshot()
            except RuntimeError as exc:  # "deque mutated during iteration"
                errors.append(exc)
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert cb.snapshot().calls == 50
