"""resilience4j's sliding-window metrics tests, translated to brownout's windows.

Sources (resilience4j-core): ``FixedSizeSlidingWindowMetricsTest`` (count
window), ``SlidingTimeWindowMetricsTest`` (time window, 1 s buckets) and the
Lincheck stress tests ``LockFreeFixedSizeSlidingWindowMetricsTest`` /
``LockFreeSlidingTimeWindowMetricsTest``. Their cases run against both of
resilience4j's implementations (synchronized, lock-free); brownout has one of
each, so each case is ported once.

brownout's windows are not a public class: they are read through a breaker
that never trips (``consecutive_failures=None``, no rate) and its
``snapshot()`` (``calls``, ``failures``, ``slow_calls``, ``failure_rate``,
``slow_rate``; successes are ``calls - failures``). resilience4j records an
outcome with a duration without time passing; here a call really lasts its
duration on the FakeClock and is recorded when it ends, so every call is
arranged to *end* at the instant resilience4j records it (calls that end at
the same instant overlap, as concurrent calls do). resilience4j labels a
call slow by hand; brownout calls it slow when it lasted at least
``slow_call_duration``, so each test picks a threshold that puts the peer's
durations on the peer's side. The split of slow calls into slow successes
and slow failures is read from the call events (brownout's snapshot has
only ``slow_calls``). resilience4j's window durations (total and average)
read as the snapshot's ``call_duration_sum`` / ``call_duration_count``,
which count over the breaker's lifetime.

``deliberate_difference``: rates are ``None`` (not 0) while the window is
empty; a call's slowness follows its measured duration; durations are
lifetime totals, so they differ once calls have slid out of the window.

Left out (``LEFT_OUT``): tests of resilience4j internals.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

from brownout import BreakerConfig, BreakerSnapshot, CallEvent, CircuitBreaker, Outcome
from brownout.testing import FakeClock
from tests.peers._peer import Permit

#: resilience4j window cases that do not apply to brownout, and why.
LEFT_OUT: dict[str, str] = {
    "FixedSizeSlidingWindowMetricsTest.testMoveHeadIndexByOne": "the ring buffer's head index "
    "(brownout's count window is a deque with maxlen; nothing to move by hand)",
    "SlidingTimeWindowMetricsTest.testMoveHeadIndexByOne": "the bucket ring's head index",
    "LockFreeFixedSizeSlidingWindowMetricsTest.modelCheckingTest": "@Ignore'd in resilience4j "
    "(Lincheck model checking, minutes long); the stress test is ported",
    "LockFreeSlidingTimeWindowMetricsTest.modelCheckingTest": "@Ignore'd in resilience4j",
    "SlidingWindowMetricsTest (6 cases)": "the earlier name of FixedSizeSlidingWindowMetricsTest, "
    "same cases and numbers",
}

deliberate = pytest.mark.deliberate_difference

MS = 0.001


class Boom(Exception):
    pass


def window(
    clock: FakeClock,
    *,
    size: int = 100,
    duration: float | None = None,
    slow: float | None = None,
) -> CircuitBreaker:
    """A breaker that never trips: only its window is exercised."""
    config = BreakerConfig(
        consecutive_failures=None,
        window_size=size,
        window_duration=duration,
        minimum_calls=1,
        slow_call_duration=slow,
    )
    return CircuitBreaker("metrics", config, clock=clock)


def record(
    cb: CircuitBreaker, clock: FakeClock, duration: float, *, error: bool = False
) -> BreakerSnapshot:
    """A call lasting ``duration`` seconds, from now; its outcome is recorded when it ends."""
    permit = Permit(cb)
    clock.advance(duration)
    if error:
        permit.error(Boom())
    else:
        permit.success()
    return cb.snapshot()


def ending_at(
    cb: CircuitBreaker, clock: FakeClock, at: float, duration: float, *, error: bool = False
) -> BreakerSnapshot:
    """A call lasting ``duration`` seconds that ends (is recorded) at ``at``."""
    clock.advance(max(0.0, at - duration - clock()))
    return record(cb, clock, duration, error=error)


def counts(snap: BreakerSnapshot) -> tuple[int, int, int]:
    """resilience4j's (total calls, successful calls, failed calls)."""
    return snap.calls, snap.calls - snap.failures, snap.failures


def durations(snap: BreakerSnapshot) -> tuple[float, float]:
    """(total, average) duration of the calls, in seconds."""
    count = snap.call_duration_count
    return round(snap.call_duration_sum, 6), round(
        snap.call_duration_sum / count, 6
    ) if count else 0


class SlowSplit:
    """Slow successes and slow failures, from the call events."""

    def __init__(self, cb: CircuitBreaker) -> None:
        self.events: list[CallEvent] = []
        cb.add_listener(on_call=self.events.append)

    def slow(self, outcome: Outcome) -> int:
        return sum(1 for e in self.events if e.slow and e.outcome is outcome)


# --------------------------------------------------------- FixedSizeSlidingWindowMetricsTest


@deliberate("an empty window has no rate: failure_rate/slow_rate are None, not 0")
def test_r4j_fixed_size_check_initial_bucket_creation() -> None:
    snap = window(FakeClock(), size=5).snapshot()
    assert counts(snap) == (0, 0, 0)
    assert snap.slow_calls == 0
    assert snap.failure_rate is None  # resilience4j: 0
    assert snap.slow_rate is None


def test_r4j_fixed_size_record_success() -> None:
    clock = FakeClock()
    cb = window(clock, size=5, slow=1.0)
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.slow_calls == 0
    assert snap.failure_rate == 0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_fixed_size_record_error() -> None:
    clock = FakeClock()
    cb = window(clock, size=5, slow=1.0)
    snap = record(cb, clock, 100 * MS, error=True)
    assert counts(snap) == (1, 0, 1)
    assert snap.slow_calls == 0
    assert snap.failure_rate == 1.0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_fixed_size_record_slow_success() -> None:
    clock = FakeClock()
    cb = window(clock, size=5, slow=100 * MS)
    split = SlowSplit(cb)
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.slow_calls == 1
    assert (split.slow(Outcome.SUCCESS), split.slow(Outcome.FAILURE)) == (1, 0)
    assert snap.failure_rate == 0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_fixed_size_slow_calls_percentage() -> None:
    clock = FakeClock()
    cb = window(clock, size=5, slow=1.0)
    split = SlowSplit(cb)
    record(cb, clock, 10_000 * MS)
    record(cb, clock, 10_000 * MS, error=True)
    record(cb, clock, 100 * MS)
    record(cb, clock, 100 * MS)
    snap = record(cb, clock, 100 * MS)
    assert snap.calls == 5
    assert snap.calls - snap.failures == 4
    assert snap.slow_calls == 2
    assert (split.slow(Outcome.SUCCESS), split.slow(Outcome.FAILURE)) == (1, 1)
    assert snap.slow_rate == pytest.approx(0.40)
    assert durations(snap) == (20.3, 4.06)


@deliberate(
    "durations are lifetime totals (call_duration_sum/count), not per window: after the "
    "fifth call resilience4j's window holds 400 ms, the lifetime 500 ms"
)
def test_r4j_fixed_size_sliding_window_metrics() -> None:
    clock = FakeClock()
    cb = window(clock, size=4, slow=1.0)
    snap = record(cb, clock, 100 * MS, error=True)
    assert counts(snap) == (1, 0, 1)
    assert snap.failure_rate == 1.0
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (2, 1, 1)
    assert snap.failure_rate == 0.5
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (3, 2, 1)
    assert snap.failure_rate == pytest.approx(1 / 3)
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (4, 3, 1)
    assert snap.failure_rate == 0.25
    assert durations(snap) == (0.4, 0.1)
    snap = record(cb, clock, 100 * MS)  # the failure slides out
    assert counts(snap) == (4, 4, 0)
    assert snap.failure_rate == 0
    assert durations(snap) == (0.5, 0.1)  # resilience4j: (400 ms, 100 ms)


@deliberate(
    "slowness follows the measured duration: all of resilience4j's calls last 100 ms, two "
    "labelled slow and three not; here the slow ones last 100 ms with slow_call_duration="
    "100 ms and the others 99 ms"
)
def test_r4j_fixed_size_sliding_window_metrics_with_slow_calls() -> None:
    clock = FakeClock()
    cb = window(clock, size=2, slow=100 * MS)
    fast = 99 * MS
    snap = record(cb, clock, 100 * MS, error=True)
    assert (snap.calls, snap.slow_calls, snap.failures) == (1, 1, 1)
    assert snap.failure_rate == 1.0
    snap = record(cb, clock, 100 * MS)
    assert (snap.calls, snap.slow_calls, snap.failures) == (2, 2, 1)
    assert snap.failure_rate == 0.5
    snap = record(cb, clock, fast)  # the slow failure slides out
    assert (snap.calls, snap.slow_calls, snap.failures) == (2, 1, 0)
    assert snap.failure_rate == 0
    snap = record(cb, clock, fast)
    assert (snap.calls, snap.slow_calls, snap.failures) == (2, 0, 0)
    snap = record(cb, clock, fast)
    assert (snap.calls, snap.slow_calls, snap.failures) == (2, 0, 0)
    assert snap.failure_rate == 0


# ----------------------------------------------------------- SlidingTimeWindowMetricsTest


@deliberate("an empty window has no rate: failure_rate/slow_rate are None, not 0")
def test_r4j_sliding_time_check_initial_bucket_creation() -> None:
    snap = window(FakeClock(), duration=5).snapshot()
    assert counts(snap) == (0, 0, 0)
    assert snap.slow_calls == 0
    assert snap.failure_rate is None  # resilience4j: 0


def test_r4j_sliding_time_record_success() -> None:
    clock = FakeClock()
    cb = window(clock, duration=5, slow=1.0)
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.slow_calls == 0
    assert snap.failure_rate == 0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_sliding_time_record_error() -> None:
    clock = FakeClock()
    cb = window(clock, duration=5, slow=1.0)
    snap = record(cb, clock, 100 * MS, error=True)
    assert counts(snap) == (1, 0, 1)
    assert snap.slow_calls == 0
    assert snap.failure_rate == 1.0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_sliding_time_record_slow_success() -> None:
    clock = FakeClock()
    cb = window(clock, duration=5, slow=100 * MS)
    split = SlowSplit(cb)
    snap = record(cb, clock, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.slow_calls == 1
    assert (split.slow(Outcome.SUCCESS), split.slow(Outcome.FAILURE)) == (1, 0)
    assert snap.failure_rate == 0
    assert durations(snap) == (0.1, 0.1)


def test_r4j_sliding_time_slow_calls_percentage() -> None:
    # resilience4j records all five at one instant; two of them lasted 10 s, longer than
    # the 5 s window, so here they overlap and all end at t = 10 s.
    clock = FakeClock()
    cb = window(clock, duration=5, slow=1.0)
    split = SlowSplit(cb)
    slow_success, slow_error = Permit(cb), Permit(cb)
    clock.advance(9.9)
    fast = [Permit(cb) for _ in range(3)]
    clock.advance(0.1)
    slow_success.success()
    slow_error.error(Boom())
    for permit in fast:
        permit.success()
    snap = cb.snapshot()
    assert snap.calls == 5
    assert snap.calls - snap.failures == 4
    assert snap.slow_calls == 2
    assert (split.slow(Outcome.SUCCESS), split.slow(Outcome.FAILURE)) == (1, 1)
    assert snap.slow_rate == pytest.approx(0.40)
    assert durations(snap) == (20.3, 4.06)


@deliberate(
    "durations are lifetime totals, not per window: when the window has emptied, "
    "resilience4j's total duration is 0, the lifetime total still 1.2 s"
)
def test_r4j_should_clear_sliding_time_window_metrics() -> None:
    # resilience4j's instants (s): error 0.0 (100 ms), success 0.1 (100 ms),
    # slow error 0.8 (1000 ms: it started at -0.2, before the first call ended)
    clock = FakeClock(start=-0.2)
    cb = window(clock, duration=5, slow=1.0)
    slow_error = Permit(cb)
    snap = ending_at(cb, clock, 0.0, 100 * MS, error=True)
    assert counts(snap) == (1, 0, 1)
    assert snap.failure_rate == 1.0
    snap = ending_at(cb, clock, 0.1, 100 * MS)
    assert counts(snap) == (2, 1, 1)
    assert snap.failure_rate == 0.5
    clock.advance(0.7)
    slow_error.error(Boom())
    snap = cb.snapshot()
    assert counts(snap) == (3, 1, 2)
    assert snap.slow_calls == 1
    assert durations(snap) == (1.2, 0.4)
    clock.advance(4)
    snap = cb.snapshot()
    assert counts(snap) == (3, 1, 2)
    assert snap.slow_calls == 1
    clock.advance(1)  # 5.8 s: every bucket of the first second has expired
    snap = cb.snapshot()
    assert counts(snap) == (0, 0, 0)
    assert snap.slow_calls == 0
    assert durations(snap) == (1.2, 0.4)  # resilience4j: (0, 0)
    snap = ending_at(cb, clock, 5.9, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.failure_rate == 0
    snap = ending_at(cb, clock, 10.9, 100 * MS)
    assert counts(snap) == (1, 1, 0)
    assert snap.slow_calls == 0
    assert snap.failure_rate == 0


@deliberate(
    "durations are lifetime totals, not per window (resilience4j: 500 ms once the first "
    "second's calls have expired; lifetime: 800 ms)"
)
def test_r4j_sliding_time_sliding_time_window_metrics() -> None:
    clock = FakeClock(start=-0.1)  # each 100 ms call ends at resilience4j's instant
    cb = window(clock, duration=5, slow=1.0)
    timeline = [
        (0.0, True, (1, 0, 1)),
        (0.1, False, (2, 1, 1)),
        (0.2, False, (3, 2, 1)),
        (1.2, False, (4, 3, 1)),
        (2.2, False, (5, 4, 1)),
        (3.2, True, (6, 4, 2)),
        (4.2, False, (7, 5, 2)),
        (5.2, False, (5, 4, 1)),  # the first second's bucket has expired
        (6.2, False, (5, 4, 1)),
        (11.2, False, (1, 1, 0)),
    ]
    for at, error, expected in timeline:
        snap = ending_at(cb, clock, at, 100 * MS, error=error)
        assert counts(snap) == expected, at
    assert durations(cb.snapshot()) == (1.0, 0.1)  # resilience4j: (100 ms, 100 ms)


# ----------------------------------------------------------------- the lock-free variants


@pytest.fixture
def _switch_often() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _stress(cb: CircuitBreaker, threads: int, ops: int, size: int | None) -> int:
    """Records and snapshots from several threads; every snapshot must be consistent."""
    failures = [0] * threads
    problems: list[str] = []
    start = threading.Barrier(threads)

    def boom() -> None:
        raise Boom

    def worker(i: int) -> None:
        rng = random.Random(i)
        start.wait()
        for _ in range(ops):
            roll = rng.random()
            if roll < 0.4:
                cb.call(int)
            elif roll < 0.7:
                failures[i] += 1
                try:
                    cb.call(boom)
                except Boom:
                    pass
            else:
                snap = cb.snapshot()
                if not 0 <= snap.failures <= snap.calls:
                    problems.append(f"failures {snap.failures} > calls {snap.calls}")
                if size is not None and snap.calls > size:
                    problems.append(f"{snap.calls} calls in a window of {size}")
                if snap.calls and snap.failure_rate != snap.failures / snap.calls:
                    problems.append(f"rate {snap.failure_rate} != {snap.failures}/{snap.calls}")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert problems == []
    return sum(failures)


@pytest.mark.usefixtures("_switch_often")
def test_r4j_lock_free_fixed_size_sliding_window_metrics_stress_test() -> None:
    cb = window(FakeClock(), size=5)
    failed = _stress(cb, threads=4, ops=2000, size=5)
    snap = cb.snapshot()
    assert snap.calls == 5
    assert snap.total_failures == failed


@pytest.mark.usefixtures("_switch_often")
def test_r4j_lock_free_sliding_time_window_metrics_stress_test() -> None:
    clock = FakeClock()
    cb = window(clock, duration=10)
    ticking = threading.Event()

    def tick() -> None:  # resilience4j advances its clock by 1-1.25 s every 10 ms
        rng = random.Random(0)
        while not ticking.wait(0.01):
            clock.advance(1 + rng.random() * 0.25)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        failed = _stress(cb, threads=4, ops=2000, size=None)
    finally:
        ticking.set()
        ticker.join()
    assert cb.snapshot().total_failures == failed
