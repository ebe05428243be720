"""Issue 10's findings, each reproduced on every path a call can take through a breaker.

Paths: ``cb.call``, the sync decorator, ``with cb:``, ``cb.acall``, the async
decorator, ``async with cb:``; each on the lock-free fast path (no listener)
and on the instrumented path (a call listener attached), where it matters.
These tests use only the API that existed before issue 10, so they show the
bugs on the code before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from brownout import BreakerConfig, CallEvent, CircuitBreaker, Outcome, State
from brownout.testing import FakeClock


class Boom(Exception):
    """A dependency failure."""


def fail() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


SYNC_PATHS = ("call", "decorator", "with")
ASYNC_PATHS = ("acall", "decorator", "async with")


def run(cb: CircuitBreaker, path: str, fn: Callable[[], Any]) -> Any:
    if path == "call":
        return cb.call(fn)
    if path == "decorator":
        return cb(fn)()
    with cb:
        return fn()


async def arun(cb: CircuitBreaker, path: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    if path == "acall":
        return await cb.acall(fn)
    if path == "decorator":

        async def guarded() -> Any:  # a coroutine function, as the decorator needs
            return await fn()

        return await cb(guarded)()
    async with cb:
        return await fn()


def swallow(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Boom:
        pass


def breaker(clock: FakeClock, listener: bool, **kw: Any) -> tuple[CircuitBreaker, list[CallEvent]]:
    settings: dict[str, Any] = {"consecutive_failures": 5, "open_for": 60.0}
    settings.update(kw)
    cb = CircuitBreaker("dep", BreakerConfig(**settings), clock=clock)
    events: list[CallEvent] = []
    if listener:
        cb.add_listener(on_call=events.append)
    return cb, events


# ------------------------------------------------- 1. a disabled breaker counts nothing


def disabled(how: str, monkeypatch: pytest.MonkeyPatch, listener: bool) -> tuple[Any, ...]:
    if how == "kill switch":
        monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    cb, events = breaker(FakeClock(), listener)
    if how == "disable()":
        cb.disable()
    assert cb.state is State.DISABLED
    return cb, events


def assert_counted_nothing(cb: CircuitBreaker, events: list[CallEvent]) -> None:
    snap = cb.snapshot()
    assert (snap.total_failures, snap.total_ignored, snap.total_slow) == (0, 0, 0)
    assert snap.last_error is None and snap.last_failure_at is None
    assert events == []


@pytest.mark.parametrize("listener", [False, True], ids=["fast", "listener"])
@pytest.mark.parametrize("how", ["disable()", "kill switch"])
@pytest.mark.parametrize("path", SYNC_PATHS)
def test_disabled_breaker_counts_no_sync_call(
    path: str, how: str, listener: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb, events = disabled(how, monkeypatch, listener)
    for _ in range(3):
        with pytest.raises(Boom):
            run(cb, path, fail)
        assert run(cb, path, ok) == "ok"
    assert_counted_nothing(cb, events)


@pytest.mark.parametrize("listener", [False, True], ids=["fast", "listener"])
@pytest.mark.parametrize("how", ["disable()", "kill switch"])
@pytest.mark.parametrize("path", ASYNC_PATHS)
async def test_disabled_breaker_counts_no_async_call(
    path: str, how: str, listener: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb, events = disabled(how, monkeypatch, listener)

    async def afail() -> None:
        raise Boom("down")

    async def aok() -> str:
        return "ok"

    for _ in range(3):
        with pytest.raises(Boom):
            await arun(cb, path, afail)
        assert await arun(cb, path, aok) == "ok"
    assert_counted_nothing(cb, events)


def test_disabled_breaker_grows_no_prometheus_series(monkeypatch: pytest.MonkeyPatch) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from brownout.prometheus import PrometheusMetrics

    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    registry = prometheus_client.CollectorRegistry()
    cb, _ = breaker(FakeClock(), False)
    PrometheusMetrics(registry).attach(cb)
    for _ in range(3):
        swallow(lambda: cb.call(fail))
    value = registry.get_sample_value(
        "brownout_calls_total", {"breaker": "dep", "outcome": "failure"}
    )
    assert not value  # None (no series) or 0


# ------------------------------- 2. a stale success does not land in a later period


def stale_story(cb: CircuitBreaker, clock: FakeClock) -> str:
    """Run inside a call admitted while CLOSED: trip, half-open, close, four more failures."""
    for _ in range(5):
        swallow(lambda: cb.call(fail))
    assert cb.state is State.OPEN
    clock.advance(60)
    assert cb.call(ok) == "ok"  # the probe closes the breaker
    assert cb.state is State.CLOSED
    for _ in range(4):
        swallow(lambda: cb.call(fail))
    return "late"  # the stale call succeeds now, in the new period


def assert_fifth_failure_trips(cb: CircuitBreaker) -> None:
    assert cb.snapshot().consecutive_failures == 4
    swallow(lambda: cb.call(fail))
    assert cb.state is State.OPEN


@pytest.mark.parametrize(
    "kw", [{}, {"listener": True}, {"slow_call_duration": 30.0}], ids=["fast", "listener", "timed"]
)
@pytest.mark.parametrize("path", SYNC_PATHS)
def test_stale_sync_success_does_not_reset_a_later_run(path: str, kw: dict[str, Any]) -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, **{"listener": False, **kw})
    assert run(cb, path, lambda: stale_story(cb, clock)) == "late"
    assert_fifth_failure_trips(cb)


@pytest.mark.parametrize(
    "kw", [{}, {"listener": True}, {"slow_call_duration": 30.0}], ids=["fast", "listener", "timed"]
)
@pytest.mark.parametrize("path", ASYNC_PATHS)
async def test_stale_async_success_does_not_reset_a_later_run(
    path: str, kw: dict[str, Any]
) -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, **{"listener": False, **kw})

    async def slow_llm_call() -> str:
        await asyncio.sleep(0)
        return stale_story(cb, clock)

    assert await arun(cb, path, slow_llm_call) == "late"
    assert_fifth_failure_trips(cb)


# ----------- 3. a time window without a consecutive-failure threshold reports the run


@pytest.mark.parametrize("listener", [False, True], ids=["no listener", "listener"])
def test_time_window_reports_the_true_run_of_consecutive_failures(listener: bool) -> None:
    cb, _ = breaker(
        FakeClock(),
        listener,
        consecutive_failures=None,
        failure_rate=1.0,
        minimum_calls=1000,
        window_duration=60.0,
    )
    cb.call(ok)
    for n in range(1, 8):
        swallow(lambda: cb.call(fail))
        assert cb.snapshot().consecutive_failures == n
    cb.call(ok)
    assert cb.snapshot().consecutive_failures == 0


async def test_time_window_run_counts_async_failures_too() -> None:
    cb, _ = breaker(FakeClock(), False, consecutive_failures=None, window_duration=60.0)

    async def afail() -> None:
        raise Boom("down")

    for _ in range(4):
        with pytest.raises(Boom):
            await cb.acall(afail)
    assert cb.snapshot().consecutive_failures == 4


# ------------------------------------ 4. the caller's own timeout counts as a failure


async def hang_after(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)  # the call "ran" this long on the breaker's clock
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    "kw", [{}, {"listener": True}, {"slow_call_duration": 0.01}], ids=["fast", "listener", "timed"]
)
@pytest.mark.parametrize("path", ASYNC_PATHS)
@pytest.mark.parametrize("limit", ["asyncio.timeout", "asyncio.wait_for"])
async def test_the_callers_timeout_counts_as_a_failure(
    limit: str, path: str, kw: dict[str, Any]
) -> None:
    clock = FakeClock()
    cb, events = breaker(clock, **{"listener": False, "consecutive_failures": 10, **kw})
    for _ in range(3):
        with pytest.raises(TimeoutError):
            if limit == "asyncio.timeout":
                async with asyncio.timeout(0):
                    await arun(cb, path, lambda: hang_after(clock, 0.5))
            else:
                await asyncio.wait_for(arun(cb, path, lambda: hang_after(clock, 0.5)), 0.001)
    for _ in range(5):  # the decision may be taken in a loop callback
        await asyncio.sleep(0)
    snap = cb.snapshot()
    assert snap.total_failures == 3
    assert snap.consecutive_failures == 3
    assert snap.last_error is not None and snap.last_error.startswith("TimeoutError")
    if "slow_call_duration" in kw:
        assert snap.total_slow == 3
    if events:
        assert [e.outcome for e in events] == [Outcome.FAILURE] * 3
        assert all(isinstance(e.error, TimeoutError) for e in events)


async def test_ten_timed_out_calls_trip_a_slow_call_rate_breaker() -> None:
    """The issue's example: slow_call_duration=0.01, slow_call_rate=0.5."""
    clock = FakeClock()
    cb, _ = breaker(
        clock,
        False,
        consecutive_failures=None,
        slow_call_duration=0.01,
        slow_call_rate=0.5,
        minimum_calls=10,
        window_size=10,
    )
    for _ in range(10):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cb.acall(hang_after, clock, 0.05), 0.001)
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert cb.state is State.OPEN
    assert cb.snapshot().total_slow == 10


@pytest.mark.parametrize("path", ASYNC_PATHS)
async def test_other_cancellations_count_nothing_and_return_the_permit(path: str) -> None:
    clock = FakeClock()
    cb, events = breaker(clock, True, half_open_calls=1)
    for _ in range(5):
        swallow(lambda: cb.call(fail))
    clock.advance(60)
    assert cb.state is State.HALF_OPEN
    started = asyncio.Event()

    async def probe() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(arun(cb, path, probe))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    snap = cb.snapshot()
    assert snap.total_failures == 5 and snap.half_open_in_flight == 0
    assert events[-1].outcome is Outcome.IGNORED
    assert cb.call(ok) == "ok"  # the permit came back: the next probe is let through
    assert cb.state is State.CLOSED


# ------------------------------------ 5. generators are guarded while they are iterated


def test_an_error_while_iterating_a_decorated_generator_counts() -> None:
    cb, _ = breaker(FakeClock(), False, consecutive_failures=2)

    @cb
    def rows() -> Iterator[int]:
        yield 1
        raise Boom("connection lost mid-stream")

    for _ in range(2):
        with pytest.raises(Boom):
            list(rows())
    assert cb.snapshot().total_failures == 2
    assert cb.state is State.OPEN


async def test_an_error_while_iterating_a_decorated_async_generator_counts() -> None:
    cb, _ = breaker(FakeClock(), False, consecutive_failures=2)

    @cb
    async def rows() -> AsyncIterator[int]:
        yield 1
        raise Boom("connection lost mid-stream")

    for _ in range(2):
        with pytest.raises(Boom):
            [row async for row in rows()]
    assert cb.snapshot().total_failures == 2
    assert cb.state is State.OPEN
