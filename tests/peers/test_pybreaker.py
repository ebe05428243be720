"""pybreaker's test suite (danielfm/pybreaker, ``tests/pybreaker_test.py``), translated to brownout.

Each test is named after the pybreaker case it translates and keeps its
numbers (``fail_max`` → ``consecutive_failures``, ``reset_timeout`` →
``open_for``, ``success_threshold`` → ``half_open_calls``, pybreaker's
defaults 5 / 60 s where the case relies on them). ``fail_counter`` (failures
since the last success) reads as ``snapshot().consecutive_failures``;
``current_state`` as ``cb.state``. Time moves through a ``FakeClock``
where pybreaker sleeps.

Cases marked ``deliberate_difference`` test brownout's documented answer
where it differs from pybreaker's; the marker carries the reason. The
differences that recur:

* The call that trips the breaker raises its own error: brownout has no
  ``throw_new_error_on_trip=True`` mode (pybreaker's default), the caller
  sees what actually went wrong; only later calls get ``BreakerOpen``.
  A failing half-open probe likewise raises its own error.
* ``exclude=`` maps to ``ignore=``, which counts nothing; pybreaker counts
  an excluded error as a *success* (brownout's equivalent is leaving the
  error out of ``record=``: unrecorded errors count as successes).
* Configuration is a frozen ``BreakerConfig``: no setters, changes go
  through ``cb.reconfigure(config.replace(...))``.

Left out (``LEFT_OUT`` below, with the reason for each): pybreaker's state
storages (Redis, initial state from storage), tornado-only and private-API
cases, and the Redis re-runs of the storage mixin and the thread tests.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

#: pybreaker cases that do not apply to brownout, and why.
LEFT_OUT: dict[str, str] = {
    "test_default_state": "the initial state comes from a state storage; brownout has none "
    "(a breaker starts CLOSED, or DISABLED under BROWNOUT_DISABLED)",
    "test_no_tornado_raises": "tornado-only (`__pybreaker_call_async` without tornado installed)",
    "test_success_threshold_redis_storage": "Redis state storage; brownout keeps state in process",
    "test_create_new_state__bad_state": "private API (`_create_new_state`); brownout's whitelist "
    "of transitions is tested in tests/test_breaker.py",
    "test_notify_not_called_on_init": "mocks a private state class built from a state storage",
    "test_notify_called_on_state_change": "mocks a private state class and assigns `state`",
    "test_failure_count_not_reset_during_creation": "counter read from a state storage",
    "test_state_opened_at_not_reset_during_creation": "opened_at read from a state storage",
    "CircuitBreakerRedisTestCase: the 16 cases of the storage mixin again, test_namespace, "
    "test_fallback_state, test_missing_state, test_cluster_mode (20 cases)": "Redis state storage "
    "shared between processes; brownout's breakers are per process by design",
    "CircuitBreakerRedisConcurrencyTestCase (4 cases)": "the thread cases again against Redis "
    "storage; ported once, against brownout's in-process state",
}

deliberate = pytest.mark.deliberate_difference


def err() -> None:
    raise NotImplementedError


def suc() -> bool:
    return True


def breaker(
    clock: FakeClock | None = None,
    *,
    fail_max: int = 5,
    reset_timeout: float = 60.0,
    **kw: Any,
) -> CircuitBreaker:
    """A breaker configured like ``pybreaker.CircuitBreaker(fail_max=..., reset_timeout=...)``."""
    config = BreakerConfig(consecutive_failures=fail_max, open_for=reset_timeout, **kw)
    return CircuitBreaker("pybreaker", config, clock=clock or FakeClock())


def fail_counter(cb: CircuitBreaker) -> int:
    return cb.snapshot().consecutive_failures


def trip(cb: CircuitBreaker, fail_max: int) -> None:
    """``fail_max`` failing calls; each raises its own error, the last one opens the breaker."""
    for _ in range(fail_max):
        with pytest.raises(NotImplementedError):
            cb.call(err)
    assert cb.state is State.OPEN


# ------------------------------------------------- CircuitBreakerStorageBasedTestCase


def test_pybreaker_successful_call() -> None:
    cb = breaker()
    assert cb.call(suc)
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


def test_pybreaker_one_failed_call() -> None:
    cb = breaker()
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 1
    assert cb.state is State.CLOSED


def test_pybreaker_one_successful_call_after_failed_call() -> None:
    cb = breaker()
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 1
    assert cb.call(suc)
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


@deliberate("the call that trips the breaker raises its own error, not BreakerOpen")
def test_pybreaker_several_failed_calls_setting_absent() -> None:
    cb = breaker(fail_max=3)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    # pybreaker: CircuitBreakerError; brownout: the third failure's own error
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN


def test_pybreaker_throw_new_error_on_trip_false() -> None:
    cb = breaker(fail_max=3)
    for _ in range(3):
        with pytest.raises(NotImplementedError):
            cb.call(err)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):
        cb.call(err)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN


@deliberate("no throw_new_error_on_trip=True mode: the tripping call always raises its own error")
def test_pybreaker_throw_new_error_on_trip_true() -> None:
    cb = breaker(fail_max=3)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):  # the calls after the trip are rejected
        cb.call(err)


@deliberate(
    "the tripping call raises the original error itself (its traceback is the cause); "
    "later rejections carry no exception chain, the last error is in snapshot().last_error"
)
def test_pybreaker_traceback_in_circuitbreaker_error() -> None:
    cb = breaker(fail_max=3)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    try:
        cb.call(err)
        pytest.fail("the third failure should raise")
    except NotImplementedError:
        assert "NotImplementedError" in traceback.format_exc()
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen) as rejected:
        cb.call(err)
    assert rejected.value.__cause__ is None
    assert cb.snapshot().last_error == "NotImplementedError"


@deliberate("a failing half-open probe raises its own error, not BreakerOpen")
def test_pybreaker_failed_call_after_timeout() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=3, reset_timeout=0.5)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.state is State.CLOSED
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 3
    clock.advance(0.6)
    with pytest.raises(NotImplementedError):  # the probe ran and failed
        cb.call(err)
    # pybreaker's fail_counter 4: the three that tripped and the failed probe
    assert cb.snapshot().total_failures == 4
    assert cb.state is State.OPEN


@deliberate("the call that trips the breaker raises its own error, not BreakerOpen")
def test_pybreaker_successful_after_timeout() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=3, reset_timeout=1)
    calls: list[int] = []

    def counted_suc() -> bool:
        calls.append(1)
        return True

    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.state is State.CLOSED
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(BreakerOpen):
        cb.call(counted_suc)
    assert fail_counter(cb) == 3
    clock.advance(2)
    assert cb.call(counted_suc)
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED
    assert len(calls) == 1


@deliberate(
    "half_open() only ends a break (OPEN -> HALF_OPEN): from CLOSED it does nothing and "
    "returns False; and a failing probe raises its own error"
)
def test_pybreaker_failed_call_when_halfopen() -> None:
    cb = breaker()
    assert cb.half_open() is False
    assert cb.state is State.CLOSED
    trip(cb, 5)
    assert cb.half_open() is True
    assert cb.state is State.HALF_OPEN
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.state is State.OPEN
    assert cb.snapshot().total_failures == 5 + 1


@deliberate("half_open() only ends a break (OPEN -> HALF_OPEN): from CLOSED it returns False")
def test_pybreaker_successful_call_when_halfopen() -> None:
    cb = breaker()
    assert cb.half_open() is False
    trip(cb, 5)
    assert cb.half_open() is True
    assert cb.state is State.HALF_OPEN
    assert cb.call(suc)
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


@deliberate("the call that trips the breaker raises its own error; close() is reset()")
def test_pybreaker_close() -> None:
    cb = breaker(fail_max=3)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(BreakerOpen):
        cb.call(err)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN
    cb.reset()
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


def test_pybreaker_transition_events() -> None:
    events: list[str] = []

    def on_state_change(change: StateChange) -> None:
        assert change.breaker == "pybreaker"
        events.append(f"{change.from_state.value}->{change.to_state.value}")

    cb = breaker()
    cb.add_listener(on_state_change=on_state_change)
    assert cb.state is State.CLOSED
    cb.force_open(duration=60)  # pybreaker's open(): OPEN for reset_timeout, then half-open
    cb.half_open()
    assert cb.state is State.HALF_OPEN
    cb.reset()
    assert cb.state is State.CLOSED
    assert events == ["closed->open", "open->half_open", "half_open->closed"]


@deliberate(
    "no before_call hook: listeners see outcomes (CallEvent), not admissions; publishing "
    "every admission would cost the lock-free hot path"
)
def test_pybreaker_call_events() -> None:
    out: list[str] = []

    def on_call(event: CallEvent) -> None:
        assert event.breaker == "pybreaker"
        if event.outcome is Outcome.FAILURE:
            assert event.error is not None
        out.append(event.outcome.value)

    cb = breaker()
    cb.add_listener(on_call=on_call)
    assert cb.call(suc)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert out == ["success", "failure"]


def test_pybreaker_generator() -> None:
    cb = breaker()

    @cb
    def suc(value: bool) -> Iterator[bool]:
        "Docstring"
        yield value

    @cb
    def err_(value: bool) -> Iterator[bool]:
        "Docstring"
        x = yield value
        raise NotImplementedError(x)

    s = suc(True)
    e = err_(True)
    next(e)
    with pytest.raises(NotImplementedError):
        e.send(True)
    assert fail_counter(cb) == 1
    assert next(s)
    with pytest.raises((StopIteration, RuntimeError)):
        next(s)
    assert fail_counter(cb) == 0


def test_pybreaker_contextmanager() -> None:
    cb = breaker()

    class Foo:
        @contextmanager
        @cb
        def wrapper(self) -> Iterator[None]:
            try:
                yield
            except NotImplementedError:
                raise ValueError from None

        def foo(self) -> None:
            with self.wrapper():
                raise NotImplementedError

    with pytest.raises(ValueError):
        Foo().foo()
    assert fail_counter(cb) == 1  # the ValueError raised during iteration counts


# ------------------------------------------------- CircuitBreakerConfigurationTestCase


@deliberate(
    "brownout's break defaults to open_for=30 s (pybreaker: reset_timeout=60): a shorter "
    "first break, with open_for_multiplier for dependencies that stay down"
)
def test_pybreaker_default_params() -> None:
    cb = CircuitBreaker("pybreaker")
    config = cb.config
    assert fail_counter(cb) == 0
    assert config.open_for == 30.0
    assert config.consecutive_failures == 5
    assert cb.state is State.CLOSED
    assert config.ignore == ()


def test_pybreaker_new_with_custom_reset_timeout() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(open_for=30))
    assert fail_counter(cb) == 0
    assert cb.config.open_for == 30
    assert cb.config.consecutive_failures == 5
    assert cb.config.ignore == ()


def test_pybreaker_new_with_custom_fail_max() -> None:
    cb = breaker(fail_max=10)
    assert fail_counter(cb) == 0
    assert cb.config.open_for == 60
    assert cb.config.consecutive_failures == 10
    assert cb.config.ignore == ()


def test_pybreaker_new_with_custom_excluded_exceptions() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(ignore=[Exception]))
    assert fail_counter(cb) == 0
    assert cb.config.consecutive_failures == 5
    assert cb.config.ignore == (Exception,)


@deliberate(
    "BreakerConfig is frozen: no setters; cb.reconfigure(config.replace(...)) changes a live "
    "breaker (validated, published as a StateChange, counts kept)"
)
def test_pybreaker_fail_max_setter() -> None:
    cb = breaker()
    assert cb.config.consecutive_failures == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cb.config.consecutive_failures = 10  # type: ignore[misc]
    cb.reconfigure(cb.config.replace(consecutive_failures=10))
    assert cb.config.consecutive_failures == 10
    for _ in range(9):
        with pytest.raises(NotImplementedError):
            cb.call(err)
    assert cb.state is State.CLOSED


@deliberate("BreakerConfig is frozen: cb.reconfigure(config.replace(...)) instead of a setter")
def test_pybreaker_reset_timeout_setter() -> None:
    cb = breaker()
    assert cb.config.open_for == 60
    cb.reconfigure(cb.config.replace(open_for=30))
    assert cb.config.open_for == 30


def test_pybreaker_call_with_no_args() -> None:
    assert breaker().call(suc)


def test_pybreaker_call_with_args() -> None:
    def func(arg1: int, arg2: str) -> list[object]:
        return [arg1, arg2]

    assert breaker().call(func, 42, "abc") == [42, "abc"]


def test_pybreaker_call_with_kwargs() -> None:
    def func(**kwargs: int) -> dict[str, int]:
        return kwargs

    assert breaker().call(func, a=1, b=2) == {"a": 1, "b": 2}


async def test_pybreaker_call_async_with_no_args() -> None:
    async def func() -> bool:
        return True

    assert await breaker().acall(func)


async def test_pybreaker_call_async_with_args() -> None:
    async def func(arg1: int, arg2: str) -> list[object]:
        return [arg1, arg2]

    assert await breaker().acall(func, 42, "abc") == [42, "abc"]


async def test_pybreaker_call_async_with_kwargs() -> None:
    async def func(**kwargs: int) -> dict[str, int]:
        return kwargs

    assert await breaker().acall(func, a=1, b=2) == {"a": 1, "b": 2}


def test_pybreaker_add_listener() -> None:
    cb = breaker()
    first: list[CallEvent] = []
    second: list[CallEvent] = []
    cb.call(suc)
    cb.add_listener(on_call=first.append)
    cb.call(suc)
    cb.add_listener(on_call=second.append)
    cb.call(suc)
    assert (len(first), len(second)) == (2, 1)


def test_pybreaker_add_listeners() -> None:
    cb = breaker()
    first: list[CallEvent] = []
    second: list[StateChange] = []
    cb.add_listener(on_call=first.append, on_state_change=second.append)
    trip(cb, 5)
    assert len(first) == 5
    assert [c.to_state for c in second] == [State.OPEN]


def test_pybreaker_remove_listener() -> None:
    cb = breaker()
    first: list[CallEvent] = []
    unsubscribe = cb.add_listener(on_call=first.append)
    cb.call(suc)
    unsubscribe()
    cb.call(suc)
    assert len(first) == 1


@deliberate(
    "exclude= maps to ignore=, which counts nothing (the run of failures stays); pybreaker "
    "counts an excluded error as a success. brownout's equivalent of that is leaving the "
    "error out of record=: errors not recorded count as successes"
)
def test_pybreaker_excluded_exceptions() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(ignore=[LookupError]))

    def err_2() -> None:
        raise LookupError

    def err_3() -> None:
        raise KeyError

    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 1
    with pytest.raises(LookupError):
        cb.call(err_2)
    assert fail_counter(cb) == 1  # pybreaker: 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 2  # pybreaker: 1
    with pytest.raises(KeyError):  # a subclass of LookupError is ignored too
        cb.call(err_3)
    assert fail_counter(cb) == 2  # pybreaker: 0
    assert cb.snapshot().total_ignored == 2

    # pybreaker's semantics, spelled the brownout way
    as_success = CircuitBreaker(
        "pybreaker", BreakerConfig(record=[lambda e: not isinstance(e, LookupError)])
    )
    with pytest.raises(NotImplementedError):
        as_success.call(err)
    with pytest.raises(LookupError):
        as_success.call(err_2)
    assert fail_counter(as_success) == 0


class _TestException(Exception):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def _is_good(e: BaseException) -> bool:
    return type(e) is _TestException and e.value == "good"


@deliberate("an ignored error counts nothing (pybreaker: counts as a success)")
def test_pybreaker_excluded_callable_exceptions() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(ignore=[_is_good]))

    def err_1() -> None:
        raise _TestException("bad")

    def err_2() -> None:
        raise _TestException("good")

    with pytest.raises(_TestException):
        cb.call(err_1)
    assert fail_counter(cb) == 1
    with pytest.raises(_TestException):
        cb.call(err_2)
    assert fail_counter(cb) == 1  # pybreaker: 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 2  # pybreaker: 1


@deliberate("an ignored error counts nothing (pybreaker: counts as a success)")
def test_pybreaker_excluded_callable_and_types_exceptions() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(ignore=[_is_good, LookupError]))

    def err_1() -> None:
        raise _TestException("bad")

    def err_2() -> None:
        raise _TestException("good")

    def err_4() -> None:
        raise LookupError

    with pytest.raises(_TestException):
        cb.call(err_1)
    assert fail_counter(cb) == 1
    with pytest.raises(_TestException):
        cb.call(err_2)
    assert fail_counter(cb) == 1  # pybreaker: 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 2  # pybreaker: 1
    with pytest.raises(LookupError):
        cb.call(err_4)
    assert fail_counter(cb) == 2  # pybreaker: 0
    assert cb.snapshot().total_ignored == 2


@deliberate("BreakerConfig is frozen: ignore= is changed through cb.reconfigure()")
def test_pybreaker_add_excluded_exception() -> None:
    cb = breaker()
    assert cb.config.ignore == ()
    cb.reconfigure(cb.config.replace(ignore=(*cb.config.ignore, NotImplementedError)))
    assert cb.config.ignore == (NotImplementedError,)
    cb.reconfigure(cb.config.replace(ignore=(*cb.config.ignore, Exception)))
    assert cb.config.ignore == (NotImplementedError, Exception)


@deliberate("BreakerConfig is frozen: ignore= is changed through cb.reconfigure()")
def test_pybreaker_add_excluded_exceptions() -> None:
    cb = breaker()
    cb.reconfigure(cb.config.replace(ignore=(NotImplementedError, Exception)))
    assert cb.config.ignore == (NotImplementedError, Exception)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert fail_counter(cb) == 0


@deliberate("BreakerConfig is frozen: ignore= is changed through cb.reconfigure()")
def test_pybreaker_remove_excluded_exception() -> None:
    cb = breaker()
    cb.reconfigure(cb.config.replace(ignore=(NotImplementedError,)))
    assert cb.config.ignore == (NotImplementedError,)
    cb.reconfigure(
        cb.config.replace(ignore=tuple(e for e in cb.config.ignore if e is not NotImplementedError))
    )
    assert cb.config.ignore == ()


def test_pybreaker_decorator() -> None:
    cb = breaker()

    @cb
    def suc_(value: bool) -> bool:
        "Docstring"
        return value

    @cb
    def err_(value: bool) -> bool:
        "Docstring"
        raise NotImplementedError

    assert suc_.__doc__ == "Docstring"
    assert err_.__doc__ == "Docstring"
    assert suc_.__name__ == "suc_"
    assert err_.__name__ == "err_"
    with pytest.raises(NotImplementedError):
        err_(True)
    assert fail_counter(cb) == 1
    assert suc_(True)
    assert fail_counter(cb) == 0


async def test_pybreaker_decorator_call_future() -> None:
    cb = breaker()

    @cb
    async def suc_(value: bool) -> bool:
        "Docstring"
        return value

    @cb
    async def err_(value: bool) -> bool:
        "Docstring"
        raise NotImplementedError

    assert suc_.__doc__ == "Docstring"
    assert err_.__doc__ == "Docstring"
    assert suc_.__name__ == "suc_"
    assert err_.__name__ == "err_"
    with pytest.raises(NotImplementedError):
        await err_(True)
    assert fail_counter(cb) == 1
    assert await suc_(True)
    assert fail_counter(cb) == 0


@deliberate(
    "a breaker's name is fixed: it is the registry key, the log field and the metrics label"
)
def test_pybreaker_name() -> None:
    cb = CircuitBreaker("test_breaker")
    assert cb.name == "test_breaker"
    with pytest.raises(AttributeError):
        cb.name = "breaker_test"  # type: ignore[misc]
    assert cb.name == "test_breaker"


@deliberate("the call that trips the breaker raises its own error, not BreakerOpen")
def test_pybreaker_success_threshold_default_behavior() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=3, reset_timeout=0.1)
    assert cb.config.half_open_calls == 1
    trip(cb, 3)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.state is State.CLOSED


@deliberate(
    "the call that trips the breaker raises its own error; probes are admitted up to "
    "half_open_calls at once (pybreaker: one at a time until success_threshold)"
)
def test_pybreaker_success_threshold_multiple_successes_required() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=3, reset_timeout=0.1, half_open_calls=3)
    trip(cb, 3)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.state is State.HALF_OPEN
    assert cb.call(suc)
    assert cb.state is State.HALF_OPEN
    assert cb.call(suc)
    assert cb.state is State.CLOSED


@deliberate("the tripping call and the failing probe raise their own error, not BreakerOpen")
def test_pybreaker_success_threshold_failure_resets_counter() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=3, reset_timeout=0.1, half_open_calls=3)
    trip(cb, 3)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.state is State.HALF_OPEN
    assert cb.call(suc)
    assert cb.state is State.HALF_OPEN
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.state is State.OPEN
    # the next half-open period needs three fresh successes
    clock.advance(0.1)
    assert cb.call(suc)
    assert cb.call(suc)
    assert cb.state is State.HALF_OPEN


@deliberate("BreakerConfig is frozen: half_open_calls is changed through cb.reconfigure()")
def test_pybreaker_success_threshold_property() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(half_open_calls=5))
    assert cb.config.half_open_calls == 5
    cb.reconfigure(cb.config.replace(half_open_calls=10))
    assert cb.config.half_open_calls == 10


# ------------------------------------------------------ CircuitBreakerThreadsTestCase


@pytest.fixture
def _switch_often() -> Iterator[None]:
    """pybreaker widens its races with sleeps in mocked internals; we switch threads often."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _start_threads(target: Callable[[], None], n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.usefixtures("_switch_often")
def test_pybreaker_fail_thread_safety() -> None:
    cb = breaker(fail_max=3000, reset_timeout=1)

    class SpecificException(Exception):
        pass

    @cb
    def err_() -> None:
        raise SpecificException

    def trigger_error() -> None:
        for _ in range(500):
            try:
                err_()
            except SpecificException:
                pass

    _start_threads(trigger_error, 3)
    assert fail_counter(cb) == 1500
    assert cb.snapshot().total_failures == 1500


@deliberate(
    "listeners run outside the breaker's lock, concurrently (pybreaker calls them under its "
    "lock): a listener keeping its own count must guard it; every success is delivered"
)
@pytest.mark.usefixtures("_switch_often")
def test_pybreaker_success_thread_safety() -> None:
    cb = breaker(fail_max=3000, reset_timeout=1)

    @cb
    def suc_() -> bool:
        return True

    lock = threading.Lock()
    successes = [0]

    def on_call(event: CallEvent) -> None:
        if event.outcome is Outcome.SUCCESS:
            with lock:
                successes[0] += 1

    cb.add_listener(on_call=on_call)

    def trigger_success() -> None:
        for _ in range(500):
            suc_()

    _start_threads(trigger_success, 3)
    assert successes[0] == 1500
    assert cb.snapshot().calls == 100  # the window keeps the last window_size=100


@pytest.mark.usefixtures("_switch_often")
def test_pybreaker_half_open_thread_safety() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=1, reset_timeout=0.01)
    half_opened: list[StateChange] = []
    cb.add_listener(
        on_state_change=lambda c: half_opened.append(c) if c.to_state is State.HALF_OPEN else None
    )
    with pytest.raises(NotImplementedError):
        cb.call(err)
    clock.advance(0.01)
    start = threading.Barrier(5)

    @cb
    def err_() -> None:
        raise Exception

    def trigger_failure() -> None:
        start.wait()
        try:
            err_()
        except Exception:
            pass

    _start_threads(trigger_failure, 5)
    assert len(half_opened) == 1
    assert cb.state is State.OPEN


@pytest.mark.usefixtures("_switch_often")
def test_pybreaker_fail_max_thread_safety() -> None:
    cb = breaker(fail_max=3000, reset_timeout=1)

    @cb
    def err_() -> None:
        raise Exception

    def trigger_error() -> None:
        for _ in range(2000):
            try:
                err_()
            except Exception:
                pass

    _start_threads(trigger_error, 3)
    assert cb.state is State.OPEN
    assert fail_counter(cb) == cb.config.consecutive_failures == 3000


# ------------------------------------------------ CircuitBreakerContextManagerTestCase


@deliberate("the block that trips the breaker raises its own error, not BreakerOpen")
def test_pybreaker_calling() -> None:
    class TestError(Exception):
        pass

    clock = FakeClock()
    cb = breaker(clock, fail_max=2, reset_timeout=0.01)
    called: list[int] = []

    def do_raise() -> None:
        with cb:
            raise TestError

    def do_succeed() -> None:
        with cb:
            called.append(1)

    with pytest.raises(TestError):
        do_raise()
    with pytest.raises(TestError):  # pybreaker: CircuitBreakerError
        do_raise()
    assert fail_counter(cb) == 2
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):
        do_succeed()
    assert called == []
    clock.advance(0.01)
    do_succeed()
    assert called == [1]
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


# ------------------------------------------------------ CircuitBreakerAsyncioTestCase


async def test_pybreaker_acall_success_closed() -> None:
    cb = breaker()

    async def ok() -> int:
        return 42

    assert await cb.acall(ok) == 42
    assert fail_counter(cb) == 0
    assert cb.state is State.CLOSED


async def test_pybreaker_acall_with_args() -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    assert await breaker().acall(add, 40, 2) == 42


async def test_pybreaker_acall_with_kwargs() -> None:
    async def merge(**kwargs: int) -> dict[str, int]:
        return kwargs

    assert await breaker().acall(merge, a=1, b=2) == {"a": 1, "b": 2}


@deliberate("no before_call hook: listeners see outcomes, not admissions")
async def test_pybreaker_acall_listener_callbacks() -> None:
    cb = breaker()
    outcomes: list[Outcome] = []
    cb.add_listener(on_call=lambda e: outcomes.append(e.outcome))

    async def ok() -> int:
        return 1

    async def bad() -> None:
        raise ValueError("x")

    assert await cb.acall(ok) == 1
    with pytest.raises(ValueError):
        await cb.acall(bad)
    assert outcomes == [Outcome.SUCCESS, Outcome.FAILURE]


@deliberate("the call that trips the breaker raises its own error, not BreakerOpen")
async def test_pybreaker_acall_failures_open_circuit() -> None:
    cb = breaker(fail_max=3)

    async def aerr() -> None:
        raise NotImplementedError

    for _ in range(3):
        with pytest.raises(NotImplementedError):
            await cb.acall(aerr)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN


async def test_pybreaker_acall_throw_new_error_on_trip_false() -> None:
    cb = breaker(fail_max=3)

    async def aerr() -> None:
        raise NotImplementedError

    for _ in range(3):
        with pytest.raises(NotImplementedError):
            await cb.acall(aerr)
    assert fail_counter(cb) == 3
    assert cb.state is State.OPEN


async def test_pybreaker_acall_open_raises_until_timeout() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=1, reset_timeout=60)

    async def aerr() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await cb.acall(aerr)
    assert cb.state is State.OPEN
    clock.advance(59)
    with pytest.raises(BreakerOpen, match="retry after") as rejected:
        await cb.acall(aerr)
    assert rejected.value.retry_after == pytest.approx(1.0)


async def test_pybreaker_acall_recovery_after_reset_timeout() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=1, reset_timeout=0.01)

    async def aerr() -> None:
        raise NotImplementedError

    async def ok() -> bool:
        return True

    with pytest.raises(NotImplementedError):
        await cb.acall(aerr)
    assert cb.state is State.OPEN
    clock.advance(0.02)
    assert await cb.acall(ok)
    assert cb.state is State.CLOSED
    assert fail_counter(cb) == 0


@deliberate("an ignored error counts nothing (pybreaker: counts as a success)")
async def test_pybreaker_acall_excluded_exceptions() -> None:
    cb = CircuitBreaker("pybreaker", BreakerConfig(ignore=[LookupError]))

    async def err_sys() -> None:
        raise NotImplementedError

    async def err_biz() -> None:
        raise LookupError

    with pytest.raises(NotImplementedError):
        await cb.acall(err_sys)
    assert fail_counter(cb) == 1
    with pytest.raises(LookupError):
        await cb.acall(err_biz)
    assert fail_counter(cb) == 1  # pybreaker: 0
    assert cb.snapshot().total_ignored == 1


async def test_pybreaker_acall_rejects_sync_generator() -> None:
    cb = breaker()

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        await cb.acall(gen)  # type: ignore[arg-type]
    assert fail_counter(cb) == 0
    assert cb.snapshot().total_failures == 0
    assert cb.state is State.CLOSED


async def test_pybreaker_acall_rejects_async_generator() -> None:
    cb = breaker()

    async def agen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(TypeError, match="async generator function"):
        await cb.acall(agen)
    assert fail_counter(cb) == 0
    assert cb.snapshot().total_failures == 0
    assert cb.state is State.CLOSED


@deliberate("the tripping call and the failing probe raise their own error, not BreakerOpen")
async def test_pybreaker_acall_half_open_failure_raises_circuit_breaker_error() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=1, reset_timeout=0.01)

    async def aerr() -> None:
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        await cb.acall(aerr)
    clock.advance(0.02)
    with pytest.raises(NotImplementedError):
        await cb.acall(aerr)
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):
        await cb.acall(aerr)


async def test_pybreaker_acall_half_open_failure_reopens_with_original_error() -> None:
    clock = FakeClock()
    cb = breaker(clock, fail_max=1, reset_timeout=0.01)

    async def aerr() -> None:
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        await cb.acall(aerr)
    clock.advance(0.02)
    with pytest.raises(NotImplementedError):
        await cb.acall(aerr)
    assert cb.state is State.OPEN
