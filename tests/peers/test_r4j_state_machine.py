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
``transitionToOpenState()`` is ``force_open(duration=5)`` (OPEN for the 5 s
break, then half-open as after a trip); ``transitionToHalfOpenState()`` is
``cb.half_open()``; ``transitionToMetricsOnlyState()`` is
``set_shadow(True)``; ``transitionToDisabledState()`` is ``disable()``;
``transitionToForcedOpenState()`` is ``force_open()``; ``reset()`` is
``reset()``. resilience4j's metrics (failure rate, successful, buffered,
failed, not-permitted calls) read as ``snapshot()``'s ``failure_rate``,
``calls - failures``, ``calls``, ``failures`` and ``total_rejected``.

``deliberate_difference`` marks what brownout answers differently on purpose:

* the window's failure rate is reported as soon as the window has calls
  (``minimum_calls`` only gates the trip decision; resilience4j reports -1
  below its minimum);
* the snapshot keeps the window that tripped the breaker until it closes,
  does not show half-open probes in the window figures, and counts
  rejections over the breaker's lifetime (resilience4j starts fresh
  metrics in every state, and its half-open metrics are the probes);
* ``half_open()`` from ``CLOSED`` returns ``False`` instead of raising;
* shadow mode is a switch, not a state: the breaker transitions as it would
  (and publishes it) but never rejects; resilience4j's ``METRICS_ONLY`` stays
  in its state and publishes "rate exceeded" events instead;
* a second timed ``force_open()`` publishes its new deadline (OPEN → OPEN).
"""

from __future__ import annotations

from typing import Any

import pytest

from brownout import (
    BreakerConfig,
    BreakerOpen,
    CallEvent,
    CircuitBreaker,
    Outcome,
    State,
    StateChange,
)
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
    """``transitionToOpenState()``: OPEN for the configured break, then half-open."""
    cb.force_open(duration=cb.config.open_for)
    assert cb.state is State.OPEN


def fail_until_open(cb: CircuitBreaker, clock: FakeClock) -> None:
    """Open the breaker the production way: failing calls (a trip, which the backoff counts)."""
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
    transition_to_open(cb, clock)
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
    "total_rejected counts over the breaker's lifetime (resilience4j: fresh metrics, its "
    "not-permitted count back to 0, in every state)"
)
def test_r4j_should_transition_to_half_open_after_wait_duration(
    cb: CircuitBreaker, clock: FakeClock
) -> None:
    transition_to_open(cb, clock)
    assert metrics(cb) == RESET
    assert cb.state is State.OPEN
    assert try_acquire(cb) is None
    clock.advance(3)
    assert cb.state is State.OPEN  # the 5 s break is not over
    assert try_acquire(cb) is None
    assert metrics(cb) == (None, 0, 0, 0, 2)
    clock.advance(3)
    assert try_acquire(cb) is not None
    assert cb.state is State.HALF_OPEN
    assert metrics(cb) == (None, 0, 0, 0, 2)  # resilience4j: (-1, 0, 0, 0, 0)
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
    fail_until_open(cb, clock)
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
    "in half-open the snapshot's window figures do not show the probes (in flight: "
    "half_open_in_flight; done: the lifetime totals); resilience4j's metrics are the probes"
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
    assert metrics(cb) == RESET
    for _ in range(3):
        on_success(cb, clock)
        assert cb.state is State.HALF_OPEN
    assert metrics(cb) == RESET  # resilience4j: (-1, 3, 3, 0, 0)
    assert cb.snapshot().total_successes == 3
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


def test_r4j_should_disable_circuit_breaker() -> None:
    clock = FakeClock()
    cb = setup(clock)
    events: list[CallEvent] = []
    cb.add_listener(on_call=events.append)
    cb.disable()
    assert cb.state is State.DISABLED
    assert metrics(cb) == RESET
    assert try_acquire(cb) is not None
    on_success(cb, clock)
    on_error(cb, clock)
    on_error(cb, clock)
    on_error(cb, clock)
    Permit(cb).error(RuntimeExc())
    assert metrics(cb) == RESET
    snap = cb.snapshot()
    assert snap.total_failures == snap.total_successes == 0
    assert snap.last_error is None
    assert events == []  # resilience4j publishes no call events while disabled


def half_open_by_rate(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    """transitionToOpenState() + transitionToHalfOpenState(), probes decided by their rate."""
    cb = setup(clock, half_open_policy="rate", **overrides)
    cb.force_open(duration=5)
    assert cb.half_open()
    assert cb.state is State.HALF_OPEN
    return cb


def reopened_by(cb: CircuitBreaker) -> list[StateChange]:
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    return changes


@deliberate(
    "probes are decided by their rate with half_open_policy='rate' (the default, 'all', "
    "reopens on the first failed probe); their figures are in the StateChange, not in the "
    "snapshot's window figures (resilience4j shows the probes as the metrics)"
)
def test_r4j_should_transition_back_to_open_state_when_failure_rate_is_above_threshold() -> None:
    clock = FakeClock()
    cb = half_open_by_rate(clock)
    changes = reopened_by(cb)
    assert metrics(cb) == RESET
    on_error(cb, clock)
    on_error(cb, clock)
    on_success(cb, clock)
    assert cb.state is State.HALF_OPEN
    on_error(cb, clock)
    assert cb.state is State.OPEN
    (change,) = changes
    assert change.trigger == "probe_failed"
    assert "failure rate 0.75 >= 0.50 over 4 probes" in change.reason
    assert metrics(cb) == RESET  # resilience4j: (75, 1, 4, 3, 0)


@deliberate(
    "probe figures are in the StateChange, not in the snapshot's window figures; and the "
    "1 s half-open limit of the setup is lifted: here a 5 s probe really takes 5 s"
)
def test_r4j_should_transition_back_to_open_state_when_slow_call_rate_is_above_threshold() -> None:
    clock = FakeClock()
    cb = half_open_by_rate(clock, half_open_max_wait=None)
    changes = reopened_by(cb)
    on_success(cb, clock, 5)
    on_success(cb, clock, 5)
    on_success(cb, clock, 5)
    on_success(cb, clock, 1)
    assert cb.state is State.OPEN
    (change,) = changes
    assert "slow-call rate 0.75 >= 0.50 over 4 probes" in change.reason
    snap = cb.snapshot()
    assert snap.total_slow == 3
    assert snap.total_failures == 0


@deliberate(
    "the window's failure rate is reported as soon as it has calls (resilience4j: -1 below "
    "minimumNumberOfCalls)"
)
def test_r4j_should_transition_back_to_closed_state_when_failure_is_below_threshold() -> None:
    clock = FakeClock()
    cb = half_open_by_rate(clock)
    assert metrics(cb) == RESET
    on_error(cb, clock)
    on_success(cb, clock)
    on_success(cb, clock)
    on_success(cb, clock)
    assert try_acquire(cb) is not None
    assert cb.state is State.CLOSED  # 1 of 4 probes failed: 25 %
    assert metrics(cb) == RESET
    on_success(cb, clock)
    assert metrics(cb) == (0.0, 1, 1, 0, 0)  # resilience4j: (-1, 1, 1, 0, 0)


@deliberate(
    "in half-open the snapshot's window figures do not show the probes (resilience4j: the "
    "probes are the metrics)"
)
def test_r4j_should_release_permission_when_exception_ignored() -> None:
    clock = FakeClock()
    cb = half_open_by_rate(clock)
    for _ in range(3):
        on_success(cb, clock)
        assert cb.state is State.HALF_OPEN
        assert metrics(cb) == RESET  # resilience4j: (-1, n, n, 0, 0)
    permit = try_acquire(cb)
    assert permit is not None
    permit.error(ValueError("not a number"))  # ignored: the permit is released
    assert cb.state is State.HALF_OPEN
    assert cb.snapshot().half_open_in_flight == 0
    on_error(cb, clock)
    assert cb.state is State.CLOSED  # 1 of 4: 25 %
    assert metrics(cb) == RESET


@deliberate(
    "shadow mode is a switch, not a state: turning it on keeps the state and the window "
    "(resilience4j's METRICS_ONLY state starts fresh metrics)"
)
def test_r4j_should_reset_metrics_after_metrics_only_state_transition() -> None:
    clock = FakeClock()
    cb = setup(clock)
    on_success(cb, clock)
    on_success(cb, clock)
    assert metrics(cb)[1] == 2
    cb.set_shadow(True)
    assert cb.shadow
    assert cb.snapshot().shadow
    assert cb.state is State.CLOSED
    assert metrics(cb)[1] == 2  # resilience4j: 0


@deliberate(
    "shadow mode makes the transitions the breaker would make and publishes them (the state "
    "shows the would-be state), but never rejects: a would-be rejection runs, counts in "
    "total_rejected and the lifetime totals, and stays out of the window. resilience4j's "
    "METRICS_ONLY stays in its state and publishes only 'rate exceeded' events"
)
def test_r4j_should_record_metrics_in_metrics_only_state() -> None:
    clock = FakeClock()
    cb = setup(clock)
    cb.set_shadow(True)
    assert try_acquire(cb) is not None
    assert cb.state is State.CLOSED  # resilience4j: METRICS_ONLY
    assert metrics(cb) == RESET
    outcomes: list[Outcome] = []
    changes: list[StateChange] = []
    cb.add_listener(on_call=lambda e: outcomes.append(e.outcome), on_state_change=changes.append)

    for n in (1, 2, 3):
        on_error(cb, clock)
        assert outcomes.count(Outcome.FAILURE) == n
        assert cb.state is State.CLOSED
        assert metrics(cb) == (100.0, 0, n, n, 0)  # resilience4j: (-1, 0, n, n, 0)
    on_success(cb, clock)
    assert outcomes.count(Outcome.SUCCESS) == 1
    assert metrics(cb) == (75.0, 1, 4, 3, 0)  # resilience4j: (-1, 1, 4, 3, 0)
    on_success(cb, clock)
    assert outcomes.count(Outcome.SUCCESS) == 2

    assert [(c.to_state, c.trigger) for c in changes] == [(State.OPEN, "failure_rate")]
    assert cb.state is State.OPEN  # the state it would be in; resilience4j: METRICS_ONLY
    assert metrics(cb) == (60.0, 2, 5, 3, 0)

    on_error(cb, clock)  # would be rejected: runs, and is counted as such
    assert outcomes.count(Outcome.FAILURE) == 4
    assert len(changes) == 1
    assert metrics(cb) == (60.0, 2, 5, 3, 1)
    assert cb.snapshot().total_failures == 4


@deliberate(
    "a trip is one transition with one trigger (the first condition that held), not one "
    "event per exceeded rate; both rates are in the snapshot"
)
def test_r4j_should_publish_each_event_once_in_metric_only_state() -> None:
    clock = FakeClock()
    cb = setup(clock)
    cb.set_shadow(True)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    permits = [Permit(cb) for _ in range(5)]  # five 5 s calls, recorded at one instant
    clock.advance(5)
    for permit in permits:
        permit.error(RuntimeExc())
    assert [(c.to_state, c.trigger) for c in changes] == [(State.OPEN, "failure_rate")]
    snap = cb.snapshot()
    assert snap.failure_rate == 1.0
    assert snap.slow_rate == 1.0


def _in_every_state(clock: FakeClock) -> list[tuple[str, CircuitBreaker]]:
    closed = setup(clock)
    opened = setup(clock)
    opened.force_open(duration=5)
    half = setup(clock)
    half.force_open(duration=5)
    half.half_open()
    forced = setup(clock)
    forced.force_open()
    disabled = setup(clock)
    disabled.disable()
    shadow = setup(clock)
    shadow.set_shadow(True)
    return [
        ("closed", closed),
        ("open", opened),
        ("half_open", half),
        ("forced_open", forced),
        ("disabled", disabled),
        ("shadow", shadow),
    ]


def test_r4j_all_circuit_breaker_states_allow_transition_to_metrics_only_mode() -> None:
    clock = FakeClock()
    for label, cb in _in_every_state(clock):
        state = cb.state
        cb.set_shadow(True)
        assert cb.shadow, label
        assert cb.state is state, label


def test_r4j_all_circuit_breaker_states_allow_transition_to_its_own_state() -> None:
    clock = FakeClock()
    again = {
        "closed": lambda cb: cb.reset(),
        "open": lambda cb: cb.force_open(duration=5),
        "half_open": lambda cb: cb.half_open(),
        "forced_open": lambda cb: cb.force_open(),
        "disabled": lambda cb: cb.disable(),
        "shadow": lambda cb: cb.set_shadow(True),
    }
    for label, cb in _in_every_state(clock):
        state, shadow = cb.state, cb.shadow
        again[label](cb)
        assert (cb.state, cb.shadow) == (state, shadow), label


@deliberate(
    "a second timed force_open() sets a new deadline for the break and publishes it (OPEN -> "
    "OPEN, so the log shows who extended it); shadow mode is a switch, logged, not a "
    "transition"
)
def test_r4j_circuit_breaker_does_not_publish_state_transition_events_for_internal_transitions() -> (  # noqa: E501 - the peer's name
    None
):
    clock = FakeClock()
    cb = setup(clock)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)

    cb.force_open(duration=5)
    assert len(changes) == 1
    cb.force_open(duration=5)
    assert len(changes) == 2  # resilience4j: 1
    assert (changes[-1].from_state, changes[-1].to_state) == (State.OPEN, State.OPEN)

    cb.half_open()
    assert len(changes) == 3
    cb.half_open()
    assert len(changes) == 3

    cb.disable()
    assert len(changes) == 4
    cb.disable()
    assert len(changes) == 4

    cb.set_shadow(True)  # resilience4j: a transition to METRICS_ONLY
    assert len(changes) == 4
    cb.set_shadow(True)
    assert len(changes) == 4

    cb.reset()
    assert len(changes) == 5
    cb.reset()
    assert len(changes) == 5
