"""resilience4j's ``CircuitBreakerStateMachineTest``, translated to brownout.

Each test is named after the Java case (``shouldOpenAfterFailureRateThresholdExceeded``
→ ``test_r4j_should_open_after_failure_rate_threshold_exceeded``) and keeps its
numbers. The shared setup is resilience4j's: failure rate 50 %, 4 calls in
half-open, slow calls ≥ 4 s, slow-call rate 50 %, at most 1 s in half-open, a
20 s time window evaluated from 5 calls, a 5 s break, ``NumberFormatException``
ignored (Python's ``ValueError``, which ``int("x")`` raises), and no
consecutive-failure trip (resilience4j has none).

resilience4j's tests drive the breaker by hand (``tryAcquirePermission()``,
``onSuccess(duration)``, ``onError(duration, e)``, ``releasePermission()``);
brownout's public protocol for that is the context manager, used here through
``tests.peers._peer.Permit`` (one admitted call, finished later). A call's
duration is real time on the FakeClock: a 5 s slow call advances it by 5 s.
``transitionToOpenState()`` is done the way a breaker opens in production,
by failing calls; ``transitionToHalfOpenState()`` is ``cb.half_open()``;
``transitionToForcedOpenState()`` is ``force_open()``; ``reset()`` is
``reset()``. resilience4j's metrics (failure rate, successful, buffered,
failed, not-permitted calls) read as ``snapshot()``'s ``failure_rate``,
``calls - failures``, ``calls``, ``failures`` and ``total_rejected``.

``deliberate_difference`` marks what brownout answers differently on purpose:

* the window's failure rate is reported as soon as the window has calls
  (``minimum_calls`` only gates the trip decision; resilience4j reports -1
  below its minimum);
* the snapshot keeps the window that tripped the breaker until it closes,
  and counts rejections over the breaker's lifetime (resilience4j starts
  fresh metrics on every transition);
* ``half_open()`` from ``CLOSED`` returns ``False`` instead of raising.
"""

from __future__ import annotations

from typing import Any

import pytest

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State, StateChange
from brownout.testing import FakeClock
from tests.peers._peer import Permit, try_acquire

#: resilience4j state-machine cases that do not apply to brownout, and why.
LEFT_OUT: dict[str, str] = {}

deliberate = pytest.mark.deliberate_difference


class RuntimeExc(Exception):
    """Java's RuntimeException: recorded."""


def setup(clock: FakeClock, **overrides: Any) -> CircuitBreaker:
    """resilience4j's ``setUp()``."""
    config: dict[str, Any] = {
        "consecutive_failures": None,
        "failure_rate": 0.5,
        "half_open_calls": 4,
        "slow_call_duration": 4,
        "slow_call_rate": 0.5,
        "half_open_max_wait": 1,
        "window_duration": 20,
        "minimum_calls": 5,
        "open_for": 5,
        "ignore": (ValueError,),
    }
    config.update(overrides)
    return CircuitBreaker("testName", BreakerConfig(**config), clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cb(clock: FakeClock) -> CircuitBreaker:
    return setup(clock)


def on_success(cb: CircuitBreaker, clock: FakeClock, seconds: float = 0.0) -> None:
    """``tryAcquirePermission()`` then ``onSuccess(seconds)``."""
    permit = Permit(cb)
    clock.advance(seconds)
    permit.success()


def on_error(
    cb: CircuitBreaker, clock: FakeClock, seconds: float = 0.0, exc: Exception | None = None
) -> None:
    """``tryAcquirePermission()`` then ``onError(seconds, exc)``."""
    permit = Permit(cb)
    clock.advance(seconds)
    permit.error(exc if exc is not None else RuntimeExc())


def transition_to_open(cb: CircuitBreaker, clock: FakeClock) -> None:
    """``transitionToOpenState()``, the production way: failing calls."""
    while cb.state is State.CLOSED:
        on_error(cb, clock)
    assert cb.state is State.OPEN


def metrics(cb: CircuitBreaker) -> tuple[float | None, int, int, int, int]:
    """resilience4j's (failure rate, successful, buffered, failed, not permitted)."""
    snap = cb.snapshot()
    rate = None if snap.failure_rate is None else round(snap.failure_rate * 100, 4)
    return rate, snap.calls - snap.failures, snap.calls, snap.failures, snap.total_rejected


RESET = (None, 0, 0, 0, 0)  # resilience4j's assertThatMetricsAreReset: rate -1, all zero


def test_r4j_should_return_the_correct_name(cb: CircuitBreaker) -> None:
    assert cb.name == "testName"


def test_r4j_should_throw_call_not_permitted_exception_when_state_is_open(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    with pytest.raises(BreakerOpen):
        Permit(cb)
    assert cb.snapshot().total_rejected == 1


def test_r4j_should_throw_call_not_permitted_exception_when_state_is_forced_open(
    cb: CircuitBreaker,
) -> None:
    cb.force_open()
    with pytest.raises(BreakerOpen):
        Permit(cb)
    assert cb.snapshot().total_rejected == 1


def test_r4j_should_increase_counter_on_release_permission(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    cb.half_open()
    permits = [try_acquire(cb) for _ in range(4)]
    assert all(p is not None for p in permits)
    assert try_acquire(cb) is None
    assert try_acquire(cb) is None
    # releasePermission(): the call ends counting nothing (an ignored error)
    released = permits.pop()
    assert released is not None
    released.error(ValueError("not a number"))
    assert try_acquire(cb) is not None


def test_r4j_should_throw_call_not_permitted_exception_when_not_further_test_calls_are_permitted(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    cb.half_open()
    for _ in range(4):
        assert try_acquire(cb) is not None
    with pytest.raises(BreakerOpen):
        Permit(cb)
    assert cb.snapshot().total_rejected == 1


def test_r4j_should_only_permit_four_calls_in_half_open_state(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    assert metrics(cb) == RESET
    transition_to_open(cb, clock)
    cb.half_open()
    assert cb.state is State.HALF_OPEN
    probes = [try_acquire(cb) for _ in range(4)]
    assert all(p is not None for p in probes)
    assert try_acquire(cb) is None
    assert try_acquire(cb) is None
    # transitionToOpenState() from half-open: a probe fails
    first = probes[0]
    assert first is not None
    first.error(RuntimeExc())
    assert cb.state is State.OPEN
    cb.half_open()
    for _ in range(4):
        assert try_acquire(cb) is not None
    assert try_acquire(cb) is None
    assert try_acquire(cb) is None


def test_r4j_should_open_after_failure_rate_threshold_exceeded2(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    on_success(cb, clock)
    clock.advance(1)
    on_success(cb, clock)
    clock.advance(1)
    on_success(cb, clock)
    clock.advance(1)
    on_error(cb, clock)
    clock.advance(1)
    on_error(cb, clock)
    assert cb.state is State.CLOSED  # 2 of 5 failed: 40 %
    clock.advance(1)
    assert cb.state is State.CLOSED
    on_error(cb, clock)
    assert cb.state is State.OPEN  # 3 of 6: 50 %


@deliberate(
    "the window's failure rate is reported as soon as it has calls (resilience4j: -1 below "
    "minimumNumberOfCalls); minimum_calls gates the trip the same way"
)
def test_r4j_should_open_after_failure_rate_threshold_exceeded(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    assert try_acquire(cb) is not None
    assert cb.state is State.CLOSED
    assert metrics(cb) == RESET
    rate_exceeded: list[StateChange] = []
    cb.add_listener(
        on_state_change=lambda c: rate_exceeded.append(c) if c.trigger == "failure_rate" else None
    )

    on_error(cb, clock)
    assert cb.state is State.CLOSED
    assert metrics(cb) == (100.0, 0, 1, 1, 0)  # resilience4j: (-1, 0, 1, 1, 0)
    on_error(cb, clock)
    assert cb.state is State.CLOSED
    assert metrics(cb) == (100.0, 0, 2, 2, 0)  # resilience4j: (-1, 0, 2, 2, 0)
    on_error(cb, clock)
    assert cb.state is State.CLOSED
    assert metrics(cb) == (100.0, 0, 3, 3, 0)  # resilience4j: (-1, 0, 3, 3, 0)
    on_success(cb, clock)
    assert cb.state is State.CLOSED
    assert metrics(cb) == (75.0, 1, 4, 3, 0)  # resilience4j: (-1, 1, 4, 3, 0)
    on_success(cb, clock)

    assert cb.state is State.OPEN
    snap = cb.snapshot()
    assert snap.calls == 5
    assert snap.failures == 3
    assert snap.failure_rate == pytest.approx(0.60)
    assert metrics(cb) == (60.0, 2, 5, 3, 0)
    assert len(rate_exceeded) == 1

    assert try_acquire(cb) is None
    assert metrics(cb) == (60.0, 2, 5, 3, 1)


def test_r4j_should_open_after_slow_call_rate_threshold_exceeded(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    assert cb.state is State.CLOSED
    assert metrics(cb) == RESET
    on_error(cb, clock, 5)  # slow
    assert cb.state is State.CLOSED
    on_success(cb, clock, 5)  # slow
    assert cb.state is State.CLOSED
    on_error(cb, clock, 0.1)
    assert cb.state is State.CLOSED
    on_success(cb, clock, 0.1)
    assert cb.state is State.CLOSED
    on_success(cb, clock, 5)  # slow: 3 of 5, and 15.2 s fit the 20 s window

    assert cb.state is State.OPEN
    snap = cb.snapshot()
    assert snap.calls == 5
    assert snap.slow_calls == 3
    assert snap.slow_rate == pytest.approx(0.60)


def test_r4j_should_open_after_slow_call_rate_threshold_exceeded_using_mock_clock(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    assert cb.state is State.CLOSED
    assert metrics(cb) == RESET

    @cb
    def consumer(seconds: int) -> None:
        clock.advance(seconds)

    expected = [(5, 1, 1), (5, 2, 2), (1, 3, 2), (1, 4, 2)]
    for seconds, calls, slow in expected:
        consumer(seconds)
        snap = cb.snapshot()
        assert (snap.calls, snap.slow_calls) == (calls, slow)
        assert cb.state is State.CLOSED
    consumer(5)
    assert cb.state is State.OPEN
    snap = cb.snapshot()
    assert (snap.calls, snap.slow_calls) == (5, 3)
    assert snap.slow_rate == pytest.approx(0.60)


@deliberate(
    "the snapshot keeps the window that tripped the breaker until it closes, and "
    "total_rejected counts over the breaker's lifetime (resilience4j: fresh metrics in "
    "every state)"
)
def test_r4j_should_transition_to_half_open_after_wait_duration(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    assert metrics(cb) == (100.0, 0, 5, 5, 0)  # resilience4j: reset
    assert cb.state is State.OPEN
    assert try_acquire(cb) is None
    clock.advance(3)
    assert cb.state is State.OPEN  # the 5 s break is not over
    assert try_acquire(cb) is None
    assert metrics(cb) == (100.0, 0, 5, 5, 2)  # resilience4j: (-1, 0, 0, 0, 2)
    clock.advance(3)
    assert try_acquire(cb) is not None
    assert cb.state is State.HALF_OPEN
    assert metrics(cb) == (100.0, 0, 5, 5, 2)  # resilience4j: reset
    assert cb.snapshot().half_open_in_flight == 1


@deliberate(
    "the snapshot keeps the window that tripped the breaker until it closes, and "
    "total_rejected counts over the breaker's lifetime"
)
def test_r4j_should_transition_to_half_open_after_wait_interval(clock: FakeClock) -> None:
    # IntervalFunction.ofExponentialBackoff(5000 ms): 5 s, then x1.5 per further opening
    cb = CircuitBreaker(
        "testName",
        BreakerConfig(
            consecutive_failures=None,
            failure_rate=0.5,
            window_size=5,
            minimum_calls=5,
            half_open_calls=4,
            open_for=5,
            open_for_multiplier=1.5,
            record=[lambda e: not isinstance(e, ValueError)],
        ),
        clock=clock,
    )
    transition_to_open(cb, clock)
    assert cb.state is State.OPEN
    assert try_acquire(cb) is None
    clock.advance(3)
    assert cb.state is State.OPEN
    assert try_acquire(cb) is None
    assert metrics(cb) == (100.0, 0, 5, 5, 2)  # resilience4j: (-1, 0, 0, 0, 2)
    clock.advance(3)
    probe = try_acquire(cb)
    assert probe is not None
    assert cb.state is State.HALF_OPEN

    probe.error(RuntimeExc())  # transitionToOpenState(): the second opening, 7.5 s
    clock.advance(6)
    assert cb.state is State.OPEN
    assert try_acquire(cb) is None
    clock.advance(5)
    assert try_acquire(cb) is not None
    assert cb.state is State.HALF_OPEN


@deliberate(
    "the window's failure rate is reported as soon as it has calls (resilience4j: -1 below "
    "minimumNumberOfCalls)"
)
def test_r4j_should_reset_metrics(cb: CircuitBreaker, clock: FakeClock) -> None:
    assert cb.state is State.CLOSED
    assert metrics(cb) == RESET
    on_success(cb, clock)
    on_error(cb, clock)
    assert metrics(cb) == (50.0, 1, 2, 1, 0)  # resilience4j: (-1, 1, 2, 1, 0)
    cb.reset()
    assert metrics(cb) == RESET


def test_r4j_should_force_open_circuit_breaker(cb: CircuitBreaker, clock: FakeClock) -> None:
    cb.force_open()
    assert cb.state is State.FORCED_OPEN
    assert try_acquire(cb) is None
    clock.advance(6)
    assert try_acquire(cb) is None
    assert cb.state is State.FORCED_OPEN  # no half-open after the 5 s break
    assert metrics(cb) == (None, 0, 0, 0, 2)


@deliberate(
    "in half-open the snapshot's window figures are still those of the window that tripped "
    "the breaker (probes are counted in half_open_in_flight), cleared when it closes"
)
def test_r4j_should_ignore_exceptions_and_then_transition_to_closed(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    cb.half_open()
    assert cb.state is State.HALF_OPEN
    for _ in range(4):
        permit = try_acquire(cb)
        assert permit is not None
        permit.error(ValueError("not a number"))  # ignored: the permit is released
        assert cb.state is State.HALF_OPEN
    assert metrics(cb) == (100.0, 0, 5, 5, 0)  # resilience4j: reset
    for _ in range(3):
        on_success(cb, clock)
        assert cb.state is State.HALF_OPEN
    assert metrics(cb) == (100.0, 0, 5, 5, 0)  # resilience4j: (-1, 3, 3, 0, 0)
    on_success(cb, clock)
    assert cb.state is State.CLOSED
    assert metrics(cb) == RESET


@deliberate(
    "half_open() from CLOSED is a no-op that returns False, not an error: a health check may "
    "signal recovery at any time"
)
def test_r4j_should_not_allow_transition_from_closed_to_half_open(cb: CircuitBreaker) -> None:
    assert cb.half_open() is False
    assert cb.state is State.CLOSED


def test_r4j_should_reset_to_closed_state(cb: CircuitBreaker, clock: FakeClock) -> None:
    transition_to_open(cb, clock)
    cb.reset()
    assert cb.state is State.CLOSED


def test_r4j_should_reset_closed_state(cb: CircuitBreaker, clock: FakeClock) -> None:
    on_success(cb, clock)
    on_success(cb, clock)
    snap = cb.snapshot()
    assert snap.calls - snap.failures == 2
    cb.reset()
    assert cb.state is State.CLOSED
    snap = cb.snapshot()
    assert snap.calls - snap.failures == 0


def test_r4j_circuit_breaker_transitions_to_open_after_wait_duration_in_half_open_state(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    cb.half_open()
    assert cb.state is State.HALF_OPEN
    clock.advance(2)  # maxWaitDurationInHalfOpenState is 1 s
    assert cb.state is State.OPEN
