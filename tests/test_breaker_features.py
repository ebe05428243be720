"""Issue 10's features: call_timeout, generators, shadow mode, timed open, half-open by rate,
live reconfiguration, lifetime totals; and what cancellation detection does and does not see."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
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
from brownout._state import TRANSITIONS
from brownout.testing import FakeClock


class Boom(Exception):
    """A dependency failure."""


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def swallow(cb: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        try:
            cb.call(fail)
        except (Boom, BreakerOpen):
            pass


def make(clock: FakeClock, **kw: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"consecutive_failures": 3, "open_for": 10.0}
    settings.update(kw)
    return CircuitBreaker("dep", BreakerConfig(**settings), clock=clock)


async def settle() -> None:
    """Let the loop callbacks that decide a cancellation's source run."""
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------- call_timeout


async def test_call_timeout_bounds_acall_and_records_a_timeout_failure() -> None:
    clock = FakeClock()
    cb = make(clock, call_timeout=0.001, slow_call_duration=0.1)
    events: list[CallEvent] = []
    cb.add_listener(on_call=events.append)

    async def hangs() -> None:
        clock.advance(0.5)
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match=r"call_timeout=0\.001 s"):
        await cb.acall(hangs)
    snap = cb.snapshot()
    assert (snap.total_failures, snap.total_slow, snap.consecutive_failures) == (1, 1, 1)
    assert snap.last_error is not None and "call_timeout" in snap.last_error
    assert events[-1].outcome is Outcome.FAILURE and events[-1].slow


async def test_call_timeout_passes_quick_calls_and_the_calls_own_timeout_error() -> None:
    cb = make(FakeClock(), call_timeout=timedelta(seconds=30))

    async def quick() -> str:
        return "ok"

    async def own_timeout() -> None:
        raise TimeoutError("socket read timed out")

    assert await cb.acall(quick) == "ok"
    with pytest.raises(TimeoutError, match="socket read"):
        await cb.acall(own_timeout)
    assert cb.snapshot().total_failures == 1


def test_call_timeout_does_not_bound_sync_calls() -> None:
    clock = FakeClock()
    cb = make(clock, call_timeout=0.001)

    def long() -> str:
        clock.advance(5)
        return "late but returned"

    assert cb.call(long) == "late but returned"
    assert cb.snapshot().total_failures == 0


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "1s"])
def test_call_timeout_is_validated(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="call_timeout"):
        BreakerConfig(call_timeout=bad)


# ----------------------------------------------------------- cancellation sources


async def test_wait_for_cancelled_from_outside_is_not_a_timeout() -> None:
    cb = make(FakeClock())
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    outer = asyncio.create_task(asyncio.wait_for(cb.acall(hangs), 60))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await settle()
    snap = cb.snapshot()
    assert (snap.total_failures, snap.total_ignored) == (0, 1)


async def test_timeout_is_recognised_through_nested_coroutines() -> None:
    cb = make(FakeClock())

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def handler() -> None:  # the breaker call is a few frames down
        await cb.acall(hangs)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler(), 0.001)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await handler()
    await settle()
    assert cb.snapshot().total_failures == 2


async def test_a_cancellation_awaiting_cleanup_is_decided_when_it_is_consumed() -> None:
    """The CancelledError stops at an ``await`` in a ``finally`` before reaching the timeout."""
    cb = make(FakeClock())

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def with_cleanup() -> None:
        try:
            await cb.acall(hangs)
        finally:
            for _ in range(10):  # longer than the loop iterations the breaker watches
                await asyncio.sleep(0)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await with_cleanup()
    await settle()
    # consumed after the breaker stopped watching: decided when the task ends (this test's)
    assert cb.snapshot().total_failures == 0
    task = asyncio.create_task(_timed_out_with_cleanup(cb, with_cleanup))
    await task
    await settle()
    assert cb.snapshot().total_failures == 1


async def _timed_out_with_cleanup(cb: CircuitBreaker, fn: Any) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await fn()


# --------------------------------------------------------------------- generators


def test_generator_one_admission_closed_early_is_a_success() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=1)
    swallow(cb, 3)
    clock.advance(10)

    @cb
    def rows() -> Iterator[int]:
        yield from range(100)

    it = rows()
    assert next(it) == 0
    assert next(it) == 1  # still the same admission: one probe
    with pytest.raises(BreakerOpen):
        next(rows())  # a second generator is a second call: no permit left
    it.close()  # closed early: a success, the probe closes the breaker
    assert cb.state is State.CLOSED


def test_generator_rejected_at_first_next_and_return_value_kept() -> None:
    clock = FakeClock()
    cb = make(clock)

    @cb
    def produce() -> Iterator[int]:
        yield 1
        return 42  # the generator's return value must come through

    rows = produce()
    assert next(rows) == 1
    with pytest.raises(StopIteration) as stop:
        next(rows)
    assert stop.value.value == 42
    swallow(cb, 3)
    rows = produce()  # creating it admits nothing
    with pytest.raises(BreakerOpen):
        next(rows)
    assert cb.snapshot().total_successes == 1


async def test_async_generator_forwards_asend_and_athrow_and_counts_once() -> None:
    cb = make(FakeClock())
    seen: list[Any] = []

    @cb
    async def echo() -> AsyncIterator[Any]:
        value = None
        while True:
            try:
                value = yield value
                seen.append(value)
            except KeyError:
                value = "caught"

    agen = echo()
    assert await agen.asend(None) is None
    assert await agen.asend("a") == "a"
    assert await agen.athrow(KeyError("k")) == "caught"
    await agen.aclose()
    assert seen == ["a"]
    snap = cb.snapshot()
    assert (snap.total_successes, snap.total_failures) == (1, 0)


async def test_async_generator_cancelled_by_a_timeout_counts_as_timeout() -> None:
    cb = make(FakeClock())

    @cb
    async def stream() -> AsyncIterator[int]:
        yield 1
        await asyncio.Event().wait()
        yield 2  # pragma: no cover

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.001):
            async for _ in stream():
                pass
    await settle()
    assert cb.snapshot().total_failures == 1


# -------------------------------------------------------------------- shadow mode


def test_shadow_mode_transitions_but_never_rejects() -> None:
    clock = FakeClock()
    cb = make(clock, shadow=True)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    swallow(cb, 3)
    assert cb.state is State.OPEN  # the state it would be in
    assert changes[-1].to_state is State.OPEN and "shadow" in changes[-1].reason
    assert cb.call(ok) == "ok"  # ...but the call runs
    swallow(cb, 2)
    snap = cb.snapshot()
    assert snap.shadow
    assert snap.total_rejected == 3  # what it would have rejected
    assert (snap.total_failures, snap.total_successes) == (5, 1)
    assert snap.calls == 3  # would-be rejections stay out of the window
    clock.advance(10)
    assert cb.call(ok) == "ok"  # the probe it would have let through
    assert cb.state is State.CLOSED
    cb.force_open()
    assert cb.call(ok) == "ok"  # never rejects, not even forced open


async def test_set_shadow_switches_rejection_on_and_off() -> None:
    cb = make(FakeClock())
    swallow(cb, 3)
    with pytest.raises(BreakerOpen):
        cb.call(ok)
    cb.set_shadow(True)
    assert cb.call(ok) == "ok"

    async def aok() -> str:
        return "ok"

    assert await cb.acall(aok) == "ok"
    cb.set_shadow(False)
    with pytest.raises(BreakerOpen):
        cb.call(ok)
    with pytest.raises(TypeError):
        cb.set_shadow(1)  # type: ignore[arg-type]


# ---------------------------------------------------------------- timed manual open


def test_force_open_for_a_duration_half_opens_after_it() -> None:
    clock = FakeClock()
    cb = make(clock, open_for=1000.0)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    cb.force_open("maintenance", duration=timedelta(seconds=30))
    assert cb.state is State.OPEN
    assert changes[-1].trigger == "manual" and changes[-1].open_for == 30
    with pytest.raises(BreakerOpen) as info:
        cb.call(ok)
    assert info.value.retry_after == pytest.approx(30)
    assert cb.snapshot().trips == 0  # a manual open is not a trip
    clock.advance(30)
    assert cb.state is State.HALF_OPEN
    assert cb.call(ok) == "ok"
    assert cb.state is State.CLOSED


@pytest.mark.parametrize("start", ["forced_open", "disabled", "open"])
def test_timed_open_from_any_state(start: str) -> None:
    clock = FakeClock()
    cb = make(clock)
    if start == "forced_open":
        cb.force_open()
    elif start == "disabled":
        cb.disable()
    else:
        swallow(cb, 3)
    cb.force_open(duration=5)
    assert cb.snapshot().retry_after == pytest.approx(5)
    clock.advance(5)
    assert cb.state is State.HALF_OPEN
    assert (State.FORCED_OPEN, State.OPEN) in TRANSITIONS


@pytest.mark.parametrize("bad", [0, -3, float("nan")])
def test_timed_open_duration_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="force_open duration"):
        make(FakeClock()).force_open(duration=bad)


# ----------------------------------------------------------- half-open by rate


def rate_breaker(clock: FakeClock, **kw: Any) -> CircuitBreaker:
    cb = make(clock, half_open_calls=4, half_open_policy="rate", **kw)
    swallow(cb, 3)
    clock.advance(10)
    assert cb.state is State.HALF_OPEN
    return cb


def test_half_open_by_rate_closes_below_the_failure_rate() -> None:
    clock = FakeClock()
    cb = rate_breaker(clock, failure_rate=0.5)
    swallow(cb, 1)  # 1 of 4 probes fails: no decision yet
    assert cb.state is State.HALF_OPEN
    for _ in range(3):
        cb.call(ok)
    assert cb.state is State.CLOSED  # 25% < 50%


def test_half_open_by_rate_reopens_at_the_failure_rate() -> None:
    clock = FakeClock()
    cb = rate_breaker(clock, failure_rate=0.5)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    swallow(cb, 2)
    cb.call(ok)
    assert cb.state is State.HALF_OPEN
    cb.call(ok)
    assert cb.state is State.OPEN  # 50% >= 50%
    assert "failure rate 0.50 >= 0.50 over 4 probes" in changes[-1].reason


def test_half_open_by_rate_reopens_at_the_slow_rate() -> None:
    clock = FakeClock()
    cb = rate_breaker(clock, failure_rate=0.9, slow_call_rate=0.5, slow_call_duration=1.0)

    def slow() -> str:
        clock.advance(2)
        return "ok"

    cb.call(slow)
    cb.call(ok)
    cb.call(ok)
    assert cb.state is State.HALF_OPEN
    cb.call(slow)
    assert cb.state is State.OPEN


def test_half_open_by_rate_without_failure_rate_reopens_on_the_first_failure() -> None:
    clock = FakeClock()
    cb = rate_breaker(clock)  # failure_rate None: the "all" rule for failures
    cb.call(ok)
    swallow(cb, 1)
    assert cb.state is State.OPEN


def test_half_open_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="half_open_policy"):
        BreakerConfig(half_open_policy="most")  # type: ignore[arg-type]


# --------------------------------------------------------------------- reconfigure


def test_reconfigure_keeps_state_and_counts_and_publishes_an_event() -> None:
    clock = FakeClock()
    cb = make(clock, consecutive_failures=5)
    changes: list[StateChange] = []
    cb.add_listener(on_state_change=changes.append)
    cb.call(ok)
    swallow(cb, 2)
    cb.reconfigure(cb.config.replace(consecutive_failures=3, open_for=20.0))
    assert changes[-1].trigger == "reconfigured"
    assert changes[-1].from_state is changes[-1].to_state is State.CLOSED
    assert "consecutive_failures 5 -> 3" in changes[-1].reason
    snap = cb.snapshot()
    assert (snap.calls, snap.failures, snap.consecutive_failures) == (3, 2, 2)
    swallow(cb, 1)  # the third in a row trips under the new threshold
    assert cb.state is State.OPEN
    assert cb.snapshot().open_for == 20.0


def test_reconfigure_resizes_a_count_window_keeping_the_newest_calls() -> None:
    cb = make(FakeClock(), consecutive_failures=None, window_size=10, minimum_calls=5)
    swallow(cb, 2)
    for _ in range(4):
        cb.call(ok)
    cb.reconfigure(cb.config.replace(window_size=4, minimum_calls=4))
    assert (cb.snapshot().calls, cb.snapshot().failures) == (4, 0)
    cb.reconfigure(cb.config.replace(window_duration=60.0))  # another kind: starts empty
    assert cb.snapshot().calls == 0
    assert cb.snapshot().total_successes == 4


def test_reconfigure_trips_on_the_next_outcome_under_a_lower_rate() -> None:
    cb = make(FakeClock(), consecutive_failures=None, failure_rate=0.9, minimum_calls=4)
    swallow(cb, 2)
    for _ in range(2):
        cb.call(ok)
    cb.reconfigure(cb.config.replace(failure_rate=0.5))
    assert cb.state is State.CLOSED  # reconfiguring does not trip by itself
    cb.call(ok)  # 2 of 5 failed = 40%: not yet
    assert cb.state is State.CLOSED
    swallow(cb, 1)  # 3 of 6 = 50%
    assert cb.state is State.OPEN


def test_reconfigure_in_half_open_decides_when_enough_probes_are_done() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=3)
    swallow(cb, 3)
    clock.advance(10)
    cb.call(ok)
    assert cb.state is State.HALF_OPEN
    cb.reconfigure(cb.config.replace(half_open_calls=1))
    assert cb.state is State.CLOSED


def test_reconfigure_applies_shadow_and_refuses_other_types() -> None:
    cb = make(FakeClock())
    cb.reconfigure(cb.config.replace(shadow=True))
    assert cb.shadow and cb.snapshot().shadow
    with pytest.raises(TypeError):
        cb.reconfigure({"shadow": True})  # type: ignore[arg-type]


# ------------------------------------------------------------------------ totals


@pytest.mark.parametrize("listener", [False, True])
def test_lifetime_totals_count_successes_and_timed_durations(listener: bool) -> None:
    clock = FakeClock()
    cb = make(clock, slow_call_duration=100.0 if listener else None)
    if listener:
        cb.add_listener(on_call=lambda e: None)

    def takes(seconds: float) -> str:
        clock.advance(seconds)
        return "ok"

    for _ in range(2000):  # more than one fold of the lock-free duration buffer
        cb.call(takes, 0.5)
    swallow(cb, 3)  # trips: a new period for the window, not for the totals
    clock.advance(10)
    cb.call(ok)
    snap = cb.snapshot()
    assert snap.total_successes == 2001
    if listener:  # timed calls
        assert snap.call_duration_count == 2004
        assert snap.call_duration_sum == pytest.approx(1000.0)
    else:  # the untimed fast path leaves durations out
        assert snap.call_duration_count == 1  # the half-open probe is timed


async def test_totals_count_async_and_stale_successes() -> None:
    clock = FakeClock()
    cb = make(clock)

    async def aok() -> str:
        return "ok"

    async def outlives_its_period() -> str:
        swallow(cb, 3)
        clock.advance(10)
        cb.call(ok)  # closes: a new period
        return "late"

    assert await cb.acall(aok) == "ok"
    assert await cb.acall(outlives_its_period) == "late"
    snap = cb.snapshot()
    assert snap.total_successes == 3
    assert snap.calls == 0  # neither the probe nor the stale success is in the new window


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11's wait_for runs an inner task")
async def test_wait_for_with_timeout_zero_never_starts_the_call() -> None:
    cb = make(FakeClock())
    started = False

    async def never() -> None:
        nonlocal started
        started = True

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cb.acall(never), 0)
    await settle()
    assert not started and cb.snapshot().total_failures == 0


# ------------------------------------------------------- acall misused by the caller


@pytest.mark.parametrize("listener", [False, True], ids=["fast", "listener"])
async def test_acall_refuses_generator_functions_without_counting_them(listener: bool) -> None:
    cb = make(FakeClock(), consecutive_failures=1)
    if listener:
        cb.add_listener(on_call=lambda e: None)

    def rows() -> Iterator[int]:
        yield 1

    async def arows() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"'.*rows' is a generator function: decorate it"):
        await cb.acall(rows)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is an async generator function"):
        await cb.acall(arows)  # type: ignore[arg-type]

    async def one(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="positional argument"):
        await cb.acall(one, 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        await cb.acall(len, "abc")  # type: ignore[arg-type]

    async def dependency_type_error() -> None:
        raise TypeError("the server sent a field of the wrong type")

    snap = cb.snapshot()
    assert (snap.state, snap.total_failures, snap.total_ignored) == (State.CLOSED, 0, 4)
    with pytest.raises(TypeError, match="wrong type"):
        await cb.acall(dependency_type_error)
    assert cb.state is State.OPEN  # a TypeError from inside the call still counts
