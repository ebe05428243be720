"""Unit tests of the circuit breaker; time moves only through FakeClock."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

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


class Boom(Exception):
    """A dependency failure."""


def fail() -> None:
    raise Boom("down")


def ok(value: int = 1) -> int:
    return value


def make(clock: FakeClock | None = None, **kw: object) -> CircuitBreaker:
    defaults: dict[str, object] = {"consecutive_failures": 3, "open_for": 10.0}
    defaults.update(kw)
    return CircuitBreaker("dep", BreakerConfig(**defaults), clock=clock or FakeClock())  # type: ignore[arg-type]


def fail_n(cb: CircuitBreaker, n: int, exc: type[Exception] = Boom) -> None:
    def raiser() -> None:
        raise exc("x")

    for _ in range(n):
        with pytest.raises(exc):
            cb.call(raiser)


# ----------------------------------------------------------------- tripping


def test_closed_passes_results_through() -> None:
    cb = make()
    assert cb.call(ok, 7) == 7
    assert cb.state is State.CLOSED
    snap = cb.snapshot()
    assert (snap.calls, snap.failures, snap.failure_rate) == (1, 0, 0.0)


def test_consecutive_failures_trip_and_success_resets_the_run() -> None:
    cb = make()
    fail_n(cb, 2)
    cb.call(ok)
    fail_n(cb, 2)
    assert cb.state is State.CLOSED
    fail_n(cb, 1)
    assert cb.state is State.OPEN
    snap = cb.snapshot()
    assert snap.trips == 1
    assert snap.retry_after == pytest.approx(10.0)
    assert snap.last_error == "Boom: x"


def test_open_rejects_without_calling_and_names_breaker_state_retry_after() -> None:
    clock = FakeClock()
    cb = make(clock)
    fail_n(cb, 3)
    clock.advance(4)
    called = []
    with pytest.raises(BreakerOpen) as info:
        cb.call(lambda: called.append(1))
    assert called == []
    assert info.value.name == "dep"
    assert info.value.state is State.OPEN
    assert info.value.retry_after == pytest.approx(6.0)
    assert "dep" in str(info.value) and "open" in str(info.value)
    assert cb.snapshot().total_rejected == 1


def test_failure_rate_over_count_window_respects_minimum_calls() -> None:
    cb = make(consecutive_failures=None, failure_rate=0.5, window_size=10, minimum_calls=4)
    fail_n(cb, 1)
    cb.call(ok)
    fail_n(cb, 1)  # 2/3 failed, but only 3 calls
    assert cb.state is State.CLOSED
    fail_n(cb, 1)  # 3/4 >= 0.5
    assert cb.state is State.OPEN


def test_count_window_forgets_old_calls() -> None:
    cb = make(consecutive_failures=None, failure_rate=0.5, window_size=4, minimum_calls=4)
    fail_n(cb, 1)
    for _ in range(4):
        cb.call(ok)
    snap = cb.snapshot()
    assert (snap.calls, snap.failures) == (4, 0)


def test_time_window_forgets_calls_older_than_the_window() -> None:
    clock = FakeClock()
    cb = make(
        clock,
        consecutive_failures=None,
        failure_rate=0.5,
        window_duration=10.0,
        window_bucket=1.0,
        minimum_calls=3,
    )
    fail_n(cb, 2)
    clock.advance(11)
    cb.call(ok)
    fail_n(cb, 1)
    assert cb.state is State.CLOSED  # the two old failures fell out: 1/2 calls
    assert cb.snapshot().calls == 2
    fail_n(cb, 1)
    assert cb.state is State.OPEN  # 2/3


def test_slow_call_rate_trips() -> None:
    clock = FakeClock()
    cb = make(
        clock,
        consecutive_failures=None,
        slow_call_rate=0.5,
        slow_call_duration=1.0,
        window_size=4,
        minimum_calls=2,
    )

    def slow() -> int:
        clock.advance(1.5)
        return 1

    cb.call(ok)
    cb.call(slow)
    assert cb.state is State.OPEN
    assert cb.snapshot().total_slow == 1


def test_failure_result_counts_returned_value_as_failure_but_returns_it() -> None:
    cb = make(consecutive_failures=2, failure_result=lambda r: r is None)
    assert cb.call(lambda: None) is None
    assert cb.call(lambda: None) is None
    assert cb.state is State.OPEN


# ----------------------------------------------------------- classification


def test_ignored_errors_pass_through_and_count_as_nothing() -> None:
    cb = make(ignore=(KeyError,))
    for _ in range(10):
        with pytest.raises(KeyError):
            cb.call({}.__getitem__, "missing")
    snap = cb.snapshot()
    assert cb.state is State.CLOSED
    assert (snap.calls, snap.failures, snap.total_ignored) == (0, 0, 10)


def test_predicates_in_record_and_ignore() -> None:
    cb = make(
        record=(lambda e: "fatal" in str(e),),
        ignore=(lambda e: "mine" in str(e),),
        consecutive_failures=1,
    )

    def raise_(msg: str) -> None:
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError):
        cb.call(raise_, "mine, fatal")  # ignore wins over record
    with pytest.raises(RuntimeError):
        cb.call(raise_, "harmless")  # not recorded: counts as a success
    assert cb.snapshot().failures == 0
    with pytest.raises(RuntimeError):
        cb.call(raise_, "fatal")
    assert cb.state is State.OPEN


def test_base_exceptions_never_count() -> None:
    cb = make(consecutive_failures=1)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupt)
    assert cb.state is State.CLOSED
    assert cb.snapshot().failures == 0


# --------------------------------------------------------------- half-open


def test_half_open_closes_after_all_probes_succeed() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=2)
    fail_n(cb, 3)
    clock.advance(10)
    assert cb.state is State.HALF_OPEN
    cb.call(ok)
    assert cb.state is State.HALF_OPEN
    cb.call(ok)
    assert cb.state is State.CLOSED
    assert cb.snapshot().calls == 0  # a fresh window after closing


def test_half_open_reopens_on_a_failed_probe() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=2)
    fail_n(cb, 3)
    clock.advance(10)
    cb.call(ok)
    fail_n(cb, 1)
    assert cb.state is State.OPEN
    assert cb.snapshot().retry_after == pytest.approx(10.0)


def test_half_open_admits_exactly_n_at_once() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=2)
    fail_n(cb, 3)
    clock.advance(10)
    cb.__enter__()
    cb.__enter__()
    with pytest.raises(BreakerOpen) as info:
        cb.__enter__()
    assert info.value.state is State.HALF_OPEN
    assert info.value.retry_after is None
    cb.__exit__(None, None, None)
    cb.__exit__(None, None, None)
    assert cb.state is State.CLOSED


def test_ignored_error_in_half_open_gives_the_permit_back() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=1, ignore=(KeyError,))
    fail_n(cb, 3)
    clock.advance(10)
    with pytest.raises(KeyError):
        cb.call({}.__getitem__, "k")
    assert cb.state is State.HALF_OPEN
    cb.call(ok)  # the permit is free again
    assert cb.state is State.CLOSED


def test_with_block_exit_through_base_exception_releases_permit() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=1)
    fail_n(cb, 3)
    clock.advance(10)
    with pytest.raises(GeneratorExit), cb:
        raise GeneratorExit
    with cb:
        pass
    assert cb.state is State.CLOSED


async def test_cancelled_probe_gives_the_permit_back() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=1)
    fail_n(cb, 3)
    clock.advance(10)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(cb.acall(hang))
    await started.wait()
    with pytest.raises(BreakerOpen):
        await cb.acall(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.snapshot().half_open_in_flight == 0
    await cb.acall(asyncio.sleep, 0)
    assert cb.state is State.CLOSED


def test_half_open_max_wait_reopens() -> None:
    clock = FakeClock()
    cb = make(clock, half_open_calls=1, half_open_max_wait=5.0)
    fail_n(cb, 3)
    clock.advance(10)
    cb.__enter__()  # a probe that never finishes
    clock.advance(5)
    assert cb.state is State.OPEN
    # the stale probe finishing later changes nothing
    cb.__exit__(None, None, None)
    assert cb.state is State.OPEN


def test_stale_outcome_from_an_earlier_state_is_not_counted() -> None:
    clock = FakeClock()
    cb = make(clock, consecutive_failures=1, half_open_calls=1)
    with pytest.raises(Boom), cb:  # admitted while CLOSED ...
        fail_n(cb, 1)  # ... meanwhile another call trips the breaker
        clock.advance(10)
        assert cb.state is State.HALF_OPEN
        raise Boom("late")
    assert cb.state is State.HALF_OPEN  # the late failure did not reopen it
    cb.call(ok)
    assert cb.state is State.CLOSED


# ----------------------------------------------------------------- break length


def test_open_for_grows_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    cb = make(clock, open_for=10.0, open_for_multiplier=2.0, open_for_max=25.0)
    fail_n(cb, 3)
    breaks = [cb.snapshot().open_for]
    for _ in range(3):
        clock.advance(30)
        fail_n(cb, 1)  # probe fails
        breaks.append(cb.snapshot().open_for)
    assert breaks == [10.0, 20.0, 25.0, 25.0]
    clock.advance(30)
    cb.call(ok)
    fail_n(cb, 3)
    assert cb.snapshot().open_for == 10.0  # closing resets the growth


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("slow down")
        self.retry_after = retry_after


def test_retry_after_attribute_sets_the_break() -> None:
    clock = FakeClock()
    cb = make(clock, consecutive_failures=1, open_for=10.0)
    with pytest.raises(Throttled):
        cb.call(lambda: (_ for _ in ()).throw(Throttled(42.0)))
    assert cb.snapshot().open_for == 42.0
    clock.advance(41)
    assert cb.state is State.OPEN
    clock.advance(1)
    assert cb.state is State.HALF_OPEN


def test_retry_after_hook_and_cap() -> None:
    clock = FakeClock()
    cb = make(clock, consecutive_failures=1, open_for_max=100.0, retry_after=lambda e: 1000.0)
    fail_n(cb, 1)
    assert cb.snapshot().open_for == 100.0


# ------------------------------------------------------------ shells, fallback


def test_decorator_sync_and_async_keep_metadata() -> None:
    cb = make()

    @cb
    def fetch(sku: str) -> str:
        """Doc."""
        return sku.upper()

    @cb
    async def afetch(sku: str) -> str:
        return sku * 2

    assert fetch("a") == "A"
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Doc."
    assert asyncio.run(afetch("b")) == "bb"
    assert asyncio.iscoroutinefunction(afetch)


async def test_async_paths_trip_and_reject() -> None:
    clock = FakeClock()
    cb = make(clock)

    async def afail() -> None:
        raise Boom("down")

    for _ in range(3):
        with pytest.raises(Boom):
            await cb.acall(afail)
    with pytest.raises(BreakerOpen):
        await cb.acall(afail)
    with pytest.raises(BreakerOpen):
        async with cb:
            pass
    clock.advance(10)
    async with cb:
        pass
    assert cb.state is State.CLOSED


def test_sync_fallback_on_failure_and_rejection_not_on_ignored() -> None:
    seen: list[BaseException] = []

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    cb = CircuitBreaker(
        "dep",
        BreakerConfig(consecutive_failures=1, ignore=(KeyError,)),
        clock=FakeClock(),
        fallback=fallback,
    )
    with pytest.raises(KeyError):
        cb.call({}.__getitem__, "k")
    assert cb.call(fail) == "cached"
    assert cb.call(ok) == "cached"  # rejected now
    assert isinstance(seen[0], Boom) and isinstance(seen[1], BreakerOpen)


async def test_async_fallback_may_be_a_coroutine() -> None:
    async def fallback(exc: BaseException) -> str:
        return f"fallback for {type(exc).__name__}"

    cb = CircuitBreaker(
        "dep", BreakerConfig(consecutive_failures=1), clock=FakeClock(), fallback=fallback
    )

    async def afail() -> str:
        raise Boom

    assert await cb.acall(afail) == "fallback for Boom"
    assert await cb.acall(afail) == "fallback for BreakerOpen"


# ------------------------------------------------------------ manual control


def test_manual_states() -> None:
    cb = make()
    cb.force_open()
    assert cb.state is State.FORCED_OPEN
    with pytest.raises(BreakerOpen) as info:
        cb.call(ok)
    assert info.value.state is State.FORCED_OPEN and info.value.retry_after is None
    cb.disable()
    fail_n(cb, 10)
    assert cb.state is State.DISABLED
    cb.reset()
    assert cb.state is State.CLOSED
    assert cb.snapshot().failures == 0


def test_half_open_early_only_from_open() -> None:
    cb = make()
    assert cb.half_open() is False
    fail_n(cb, 3)
    assert cb.half_open("probe ok") is True
    assert cb.state is State.HALF_OPEN


def test_kill_switch(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    cb = make()
    fail_n(cb, 20)
    assert cb.state is State.DISABLED
    assert cb.call(ok, 3) == 3
    cb.force_open()
    assert cb.state is State.DISABLED
    assert "BROWNOUT_DISABLED" in caplog.text


# ------------------------------------------------------------ events, logging


def test_listeners_see_transitions_with_reasons_and_call_outcomes() -> None:
    clock = FakeClock()
    cb = make(clock, ignore=(KeyError,), slow_call_duration=1.0)
    changes: list[StateChange] = []
    calls: list[CallEvent] = []
    unsubscribe = cb.add_listener(on_state_change=changes.append, on_call=calls.append)

    def slow() -> None:
        clock.advance(2)

    cb.call(slow)
    with pytest.raises(KeyError):
        cb.call({}.__getitem__, "k")
    fail_n(cb, 3)
    with pytest.raises(BreakerOpen):
        cb.call(ok)
    assert [c.outcome for c in calls] == [
        Outcome.SUCCESS,
        Outcome.IGNORED,
        Outcome.FAILURE,
        Outcome.FAILURE,
        Outcome.FAILURE,
        Outcome.REJECTED,
    ]
    assert calls[0].slow and calls[0].duration == 2.0
    assert isinstance(calls[2].error, Boom)
    (change,) = changes
    assert (change.from_state, change.to_state) == (State.CLOSED, State.OPEN)
    assert change.trigger == "consecutive_failures"
    assert "3 consecutive failures >= 3" in change.reason
    assert change.last_error == "Boom: x"
    assert change.open_for == 10.0
    unsubscribe()
    cb.reset()
    assert len(changes) == 1


def test_a_raising_listener_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    cb = make()

    def bad(_: object) -> None:
        raise RuntimeError("listener bug")

    cb.add_listener(on_state_change=bad, on_call=bad)
    assert cb.call(ok, 5) == 5
    fail_n(cb, 3)
    assert cb.state is State.OPEN
    assert "listener bug" in caplog.text


def test_every_transition_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="brownout")
    clock = FakeClock()
    cb = make(clock)
    fail_n(cb, 3)
    clock.advance(10)
    cb.call(ok)
    lines = [r.getMessage() for r in caplog.records if r.name == "brownout"]
    assert len(lines) == 3
    assert "closed -> open" in lines[0] and "3 consecutive failures" in lines[0]
    assert "Boom: x" in lines[0]
    assert "open -> half_open" in lines[1]
    assert "half_open -> closed" in lines[2]


def test_secrets_are_redacted_from_last_error() -> None:
    cb = make(consecutive_failures=1)

    def leak() -> None:
        raise ConnectionError("could not connect to postgresql://app:s3cr3t-pw@db/x")

    with pytest.raises(ConnectionError):
        cb.call(leak)
    snap = cb.snapshot()
    assert snap.last_error is not None and "s3cr3t-pw" not in snap.last_error
    assert "postgresql://app:***@db/x" in snap.last_error


def test_snapshot_is_immutable_and_serialisable() -> None:
    cb = make()
    snap = cb.snapshot()
    with pytest.raises(AttributeError):
        snap.state = State.OPEN  # type: ignore[misc]
    data = snap.to_dict()
    assert data["state"] == "closed" and data["name"] == "dep"


def test_durations_accept_timedelta() -> None:
    clock = FakeClock()
    cb = make(clock, open_for=timedelta(seconds=3))
    fail_n(cb, 3)
    clock.advance(timedelta(seconds=3))
    assert cb.state is State.HALF_OPEN


def test_failure_rate_is_checked_when_a_success_fills_the_window_to_minimum() -> None:
    cb = make(consecutive_failures=None, failure_rate=0.5, window_size=10, minimum_calls=4)
    fail_n(cb, 3)
    assert cb.state is State.CLOSED  # 3 calls < minimum
    cb.call(ok)  # 3/4 failed, and now the window holds enough calls
    assert cb.state is State.OPEN


def test_decorator_binds_as_a_method_and_stays_introspectable() -> None:
    import inspect

    cb = make()

    class Repo:
        def __init__(self) -> None:
            self.prefix = "p:"

        @cb
        def fetch(self, sku: str) -> str:
            return self.prefix + sku

        @cb
        async def afetch(self, sku: str) -> str:
            return self.prefix + sku * 2

    repo = Repo()
    assert repo.fetch("a") == "p:a"
    assert Repo.fetch(repo, "b") == "p:b"
    assert asyncio.run(repo.afetch("c")) == "p:cc"
    assert inspect.iscoroutinefunction(Repo.afetch)
    assert list(inspect.signature(Repo.fetch).parameters) == ["self", "sku"]
    fail_n(cb, 3)
    with pytest.raises(BreakerOpen):
        repo.fetch("a")


def test_configured_secrets_are_removed_from_kept_and_logged_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = make(consecutive_failures=1)
    cb.add_secrets("proj-key-NOT-SK-SHAPED-98765", None, "")

    def leak() -> None:
        raise RuntimeError("upstream said: bad key proj-key-NOT-SK-SHAPED-98765")

    with pytest.raises(RuntimeError):
        cb.call(leak)
    assert "NOT-SK-SHAPED" not in (cb.snapshot().last_error or "")
    assert "NOT-SK-SHAPED" not in caplog.text
