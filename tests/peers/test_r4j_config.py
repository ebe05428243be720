"""resilience4j's ``CircuitBreakerConfigTest``, translated to ``BreakerConfig``.

Each test is named after the Java case (``zeroMaxFailuresShouldFail`` →
``test_r4j_zero_max_failures_should_fail``) and keeps its numbers, converted
to brownout's units: rates are fractions in (0, 1] (resilience4j: percent),
durations seconds. resilience4j's builder ``custom().x(...).build()`` is
``BreakerConfig(x=...)``; ``from(base)...`` is ``base.replace(...)``;
``IllegalArgumentException`` is ``ValueError`` (or ``TypeError`` for a wrong
type). Exception classes: Java's ``Exception`` / ``RuntimeException`` /
``Error`` become Python ``Exception`` subclasses of the same shape (a Python
``BaseException`` that is not an ``Exception`` never counts in brownout).

Cases marked ``deliberate_difference`` test brownout's answer where it
differs on purpose (the marker says why): other defaults, a misconfiguration
is an error rather than silently adjusted, ``0`` is not "unlimited".

Left out (``LEFT_OUT``): options brownout does not have by design, each with
the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from brownout import BreakerConfig, CircuitBreaker, State
from brownout.testing import FakeClock

#: resilience4j config cases that do not apply to brownout, and why.
LEFT_OUT: dict[str, str] = {
    "transitionToStateAfterWaitDurationNullShouldFail": "no transitionToStateAfterWaitDuration "
    "option: a half-open period that times out always reopens (see "
    "shouldSetClosedStateTransitionToStateAfterWaitDuration)",
    "transitionToStateAfterWaitDurationHalfOpenShouldFail": "the same option's validation",
    "shouldSetWritableStackTraces": "Java-only: whether CallNotPermittedException fills in its "
    "stack trace (BreakerOpen is cheap by construction: lazy message, C-level init)",
    "shouldSetSlidingWindowSynchronizationStrategyToLockFree": "Java-only choice of window "
    "implementation; brownout's count window is lock-free on the success path always",
    "shouldCreateWaitIntervalPredicate": "an arbitrary IntervalFunction for the break; "
    "brownout's break is open_for * open_for_multiplier**(n-1) capped by open_for_max "
    "(ported: test_r4j_should_transition_to_half_open_after_wait_interval)",
    "shouldNotUseWitIntervalFunctionInOpenStateAndWaitDurationInOpenStateTogether": "the "
    "IntervalFunction option again (one way to set the break: no conflict to detect)",
    "testOverrideIntervalFunction": "the IntervalFunction option again",
}

deliberate = pytest.mark.deliberate_difference


# Java's exception shapes, as Python Exception subclasses
class JavaException(Exception):
    pass


class RuntimeExc(JavaException):
    pass


class Error(Exception):
    """Java's java.lang.Error (a Throwable that is not an Exception), for the predicates."""


class ExtendsException(JavaException):
    pass


class ExtendsRuntimeException(RuntimeExc):
    pass


class ExtendsExtendsException(ExtendsException):
    pass


class BusinessException(JavaException):
    pass


class ExtendsError(Error):
    pass


def outcome(config: BreakerConfig, exc: Exception) -> str:
    """How a call raising ``exc`` is counted: "failure", "ignored" or "success"."""
    cb = CircuitBreaker("r4j", config)

    def raiser() -> None:
        raise exc

    with pytest.raises(type(exc)):
        cb.call(raiser)
    snap = cb.snapshot()
    if snap.total_failures:
        return "failure"
    return "ignored" if snap.total_ignored else "success"


def is_recorded(config: BreakerConfig, exc: Exception) -> bool:
    return outcome(config, exc) == "failure"


def is_ignored(config: BreakerConfig, exc: Exception) -> bool:
    return outcome(config, exc) == "ignored"


# ---------------------------------------------------------------------------- validation


def test_r4j_zero_max_failures_should_fail() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        BreakerConfig(failure_rate=0)


def test_r4j_zero_wait_interval_should_fail() -> None:
    with pytest.raises(ValueError, match="open_for"):
        BreakerConfig(open_for=timedelta(milliseconds=0))


def test_r4j_zero_slow_call_duration_threshold_should_fail() -> None:
    with pytest.raises(ValueError, match="slow_call_duration"):
        BreakerConfig(slow_call_duration=timedelta(milliseconds=0))


def test_r4j_zero_permitted_number_of_calls_in_half_open_state_should_fail() -> None:
    with pytest.raises(ValueError, match="half_open_calls"):
        BreakerConfig(half_open_calls=0)


def test_r4j_zero_sliding_window_size_should_fail() -> None:
    with pytest.raises(ValueError, match="window_size"):
        BreakerConfig(window_size=0, minimum_calls=1)


def test_r4j_zero_sliding_window_size_should_fail2() -> None:
    with pytest.raises(ValueError, match="window_size"):
        BreakerConfig(window_size=0)


def test_r4j_zero_minimum_number_of_calls_should_fail() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerConfig(window_size=2, minimum_calls=0)


def test_r4j_zero_minimum_number_of_calls_should_fai2l() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerConfig(minimum_calls=0)


def test_r4j_zero_failure_rate_threshold_should_fail() -> None:
    with pytest.raises(ValueError, match=re.escape("failure_rate must be in (0, 1]")):
        BreakerConfig(failure_rate=0)


def test_r4j_zero_slow_call_rate_threshold_should_fail() -> None:
    with pytest.raises(ValueError, match=re.escape("slow_call_rate must be in (0, 1]")):
        BreakerConfig(slow_call_rate=0, slow_call_duration=60)


def test_r4j_failure_rate_threshold_above_hundred_should_fail() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        BreakerConfig(failure_rate=1.01)


def test_r4j_slow_call_rate_threshold_above_hundred_should_fail() -> None:
    with pytest.raises(ValueError, match="slow_call_rate"):
        BreakerConfig(slow_call_rate=1.01, slow_call_duration=60)


def test_r4j_max_wait_duration_in_half_open_state_less_than_second_should_fail() -> None:
    with pytest.raises(ValueError, match="half_open_max_wait"):
        BreakerConfig(half_open_max_wait=timedelta(milliseconds=-1))


# ------------------------------------------------------------------------------ settings


@deliberate(
    "other defaults: trip on 5 consecutive failures (works at any traffic; resilience4j: "
    "50 % over 100 calls, which a low-traffic dependency never reaches), a 30 s break "
    "(60 s), one probe (10), minimum 10 calls (100) and no slow-call trip until a "
    "slow_call_duration is chosen (resilience4j: 100 % slower than 60 s)"
)
def test_r4j_should_set_default_settings() -> None:
    config = BreakerConfig()
    assert config.failure_rate is None
    assert config.consecutive_failures == 5
    assert config.half_open_calls == 1
    assert config.window_size == 100
    assert config.window_duration is None  # count-based, as resilience4j's default
    assert config.minimum_calls == 10
    assert config.open_for == 30.0
    assert config.record == (Exception,)
    assert config.slow_call_rate is None
    assert config.slow_call_duration is None
    assert config.half_open_max_wait is None  # resilience4j: 0 = wait forever


def test_r4j_should_set_failure_rate_threshold() -> None:
    assert BreakerConfig(failure_rate=0.25).failure_rate == 0.25


def test_r4j_should_set_failure_rate_threshold_as_a_float_greater_than_zero() -> None:
    assert BreakerConfig(failure_rate=0.005).failure_rate == 0.005


def test_r4j_should_set_wait_duration_in_half_open_state() -> None:
    config = BreakerConfig(half_open_max_wait=timedelta(milliseconds=1000))
    assert config.half_open_max_wait == timedelta(seconds=1)


@deliberate(
    "a half-open period whose probes did not finish within half_open_max_wait always "
    "reopens; it cannot be configured to close (no answer is not evidence of health)"
)
def test_r4j_should_set_closed_state_transition_to_state_after_wait_duration() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "r4j", BreakerConfig(consecutive_failures=1, open_for=5, half_open_max_wait=1), clock=clock
    )
    with pytest.raises(ConnectionError):
        cb.call(_refused)
    clock.advance(5)
    assert cb.state is State.HALF_OPEN
    clock.advance(1)
    assert cb.state is State.OPEN


def test_r4j_should_set_open_state_transition_to_state_after_wait_duration() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        "r4j", BreakerConfig(consecutive_failures=1, open_for=5, half_open_max_wait=1), clock=clock
    )
    with pytest.raises(ConnectionError):
        cb.call(_refused)
    clock.advance(5)
    with cb:  # a probe that has not finished when the max wait is over
        clock.advance(1)
        assert cb.state is State.OPEN


def _refused() -> None:
    raise ConnectionError("refused")


@deliberate(
    "slow_call_rate needs an explicit slow_call_duration (no 60 s default: what is slow "
    "depends on the dependency)"
)
def test_r4j_should_set_slow_call_rate_threshold() -> None:
    with pytest.raises(ValueError, match="slow_call_duration is required"):
        BreakerConfig(slow_call_rate=0.25)
    assert BreakerConfig(slow_call_rate=0.25, slow_call_duration=60).slow_call_rate == 0.25


@deliberate("slow_call_rate needs an explicit slow_call_duration")
def test_r4j_should_set_slow_call_rate_threshold_as_float_greater_than_zero() -> None:
    with pytest.raises(ValueError, match="slow_call_duration is required"):
        BreakerConfig(slow_call_rate=0.005)
    assert BreakerConfig(slow_call_rate=0.005, slow_call_duration=60).slow_call_rate == 0.005


def test_r4j_should_set_slow_call_duration_threshold() -> None:
    assert BreakerConfig(slow_call_duration=timedelta(seconds=1)).slow_call_duration == (
        timedelta(seconds=1)
    )


def test_r4j_should_set_low_failure_rate_threshold() -> None:
    assert BreakerConfig(failure_rate=0.00001).failure_rate == 0.00001


def test_r4j_should_set_count_based_sliding_window_size() -> None:
    config = BreakerConfig(window_size=1000, minimum_calls=1000)
    assert config.window_size == 1000
    assert config.window_duration is None


def test_r4j_should_set_permitted_number_of_calls_in_half_open_state() -> None:
    assert BreakerConfig(half_open_calls=100).half_open_calls == 100


@deliberate(
    "minimum_calls above a count window's size is refused with a ValueError, not silently "
    "lowered: the configuration says what the breaker does"
)
def test_r4j_should_reduce_minimum_number_of_calls_to_sliding_window_size() -> None:
    with pytest.raises(ValueError, match=re.escape("minimum_calls must be <= window_size (5)")):
        BreakerConfig(window_size=5, minimum_calls=6)


def test_r4j_should_set_sliding_window_to_count_based() -> None:
    config = BreakerConfig(window_size=5, minimum_calls=3)
    assert config.minimum_calls == 3
    assert config.window_size == 5
    assert config.window_duration is None


def test_r4j_should_set_sliding_window_to_time_based() -> None:
    # resilience4j's default window size (100) read as seconds
    assert BreakerConfig(window_duration=100).window_duration == 100


def test_r4j_should_set_sliding_window_size() -> None:
    assert BreakerConfig(window_size=1000).window_size == 1000


@deliberate(
    "minimum_calls above the count window's size (default 100) is refused: the rates "
    "could never be evaluated"
)
def test_r4j_should_set_minimum_number_of_calls() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerConfig(minimum_calls=1000)
    assert BreakerConfig(minimum_calls=1000, window_size=1000).minimum_calls == 1000


@deliberate(
    "no half-open limit is None; 0 is refused as a mistake (resilience4j: 0 = wait forever)"
)
def test_r4j_max_wait_duration_in_half_open_state_equal_zero_should_pass() -> None:
    with pytest.raises(ValueError, match="half_open_max_wait"):
        BreakerConfig(half_open_max_wait=0)
    assert BreakerConfig(half_open_max_wait=None).half_open_max_wait is None


def test_r4j_should_allow_high_minimum_number_of_calls_when_sliding_window_is_time_based() -> None:
    config = BreakerConfig(window_duration=10, minimum_calls=100)
    assert config.minimum_calls == 100
    assert config.window_duration == 10


def test_r4j_should_set_wait_interval() -> None:
    assert BreakerConfig(open_for=timedelta(seconds=1)).open_for == timedelta(seconds=1)


# ----------------------------------------------------------------- record / ignore errors


def _message_is(text: str) -> Callable[[BaseException], bool]:
    return lambda e: str(e) == text


def test_r4j_should_use_custom_record_exception_predicate() -> None:
    config = BreakerConfig(record=[_message_is("test")])
    assert is_recorded(config, Error("test"))
    assert not is_recorded(config, Error("fail"))
    assert is_recorded(config, RuntimeExc("test"))
    assert not is_recorded(config, Error())
    assert not is_recorded(config, RuntimeExc())


def test_r4j_should_use_custom_ignore_exception_predicate() -> None:
    config = BreakerConfig(ignore=[_message_is("ignore")])
    assert is_ignored(config, Error("ignore"))
    assert not is_ignored(config, Error("fail"))
    assert is_ignored(config, RuntimeExc("ignore"))
    assert not is_ignored(config, Error())
    assert not is_ignored(config, RuntimeExc())


def test_r4j_should_use_ignore_exceptions_to_build_predicate() -> None:
    config = BreakerConfig(ignore=(RuntimeExc, ExtendsExtendsException, BusinessException))
    assert not is_ignored(config, JavaException())
    assert not is_ignored(config, ExtendsError())
    assert not is_ignored(config, ExtendsException())
    assert is_ignored(config, BusinessException())
    assert is_ignored(config, RuntimeExc())
    assert is_ignored(config, ExtendsRuntimeException())
    assert is_ignored(config, ExtendsExtendsException())


def test_r4j_should_use_record_exceptions_to_build_predicate() -> None:
    config = BreakerConfig(record=(RuntimeExc, ExtendsExtendsException))
    assert not is_recorded(config, JavaException())
    assert not is_recorded(config, ExtendsError())
    assert not is_recorded(config, ExtendsException())
    assert not is_recorded(config, BusinessException())
    assert is_recorded(config, RuntimeExc())
    assert is_recorded(config, ExtendsRuntimeException())
    assert is_recorded(config, ExtendsExtendsException())


def test_r4j_should_create_combined_record_exception_predicate() -> None:
    config = BreakerConfig(record=[_message_is("test"), RuntimeExc, ExtendsExtendsException])
    assert not is_recorded(config, JavaException())
    assert is_recorded(config, JavaException("test"))
    assert not is_recorded(config, ExtendsError())
    assert not is_recorded(config, ExtendsException())
    assert is_recorded(config, ExtendsException("test"))
    assert not is_recorded(config, BusinessException())
    assert is_recorded(config, RuntimeExc())
    assert is_recorded(config, ExtendsRuntimeException())
    assert is_recorded(config, ExtendsExtendsException())


class AccessBanException(Exception):
    def __init__(self, banned_for: float) -> None:
        super().__init__(f"banned for {banned_for} s")
        self.banned_for = banned_for


def test_r4j_should_create_transition_check_function() -> None:
    # resilience4j: transitionOnResult(ifFailedWith(AccessBan).thenOpenUntil(bannedUntil));
    # brownout: the retry_after hook reads the break from the error (seconds from now)
    def banned_for(e: BaseException) -> float | None:
        return e.banned_for if isinstance(e, AccessBanException) else None

    clock = FakeClock()
    config = BreakerConfig(consecutive_failures=1, retry_after=banned_for)
    cb = CircuitBreaker("r4j", config, clock=clock)

    def banned() -> None:
        raise AccessBanException(120.0)

    with pytest.raises(AccessBanException):
        cb.call(banned)
    snap = cb.snapshot()
    assert snap.state is State.OPEN
    assert snap.open_for == 120.0
    clock.advance(119.9)
    assert cb.state is State.OPEN
    clock.advance(0.1)
    assert cb.state is State.HALF_OPEN


def test_r4j_should_create_current_time_function() -> None:
    instant = 1_196_676_930.0  # resilience4j's fixed clock, as seconds

    def fixed_clock() -> float:
        return instant

    cb = CircuitBreaker("r4j", BreakerConfig(), clock=fixed_clock)
    assert cb.clock is fixed_clock
    assert cb.clock() == instant


def test_r4j_should_create_combined_ignore_exception_predicate() -> None:
    config = BreakerConfig(
        ignore=[
            _message_is("ignore"),
            BusinessException,
            ExtendsExtendsException,
            ExtendsRuntimeException,
        ]
    )
    assert not is_ignored(config, JavaException())
    assert is_ignored(config, JavaException("ignore"))
    assert not is_ignored(config, ExtendsError())
    assert not is_ignored(config, ExtendsException())
    assert is_ignored(config, ExtendsException("ignore"))
    assert is_ignored(config, BusinessException())
    assert not is_ignored(config, RuntimeExc())
    assert is_ignored(config, ExtendsRuntimeException())
    assert is_ignored(config, ExtendsExtendsException())


def test_r4j_should_builder_create_config_every_time() -> None:
    base = BreakerConfig(minimum_calls=3)
    config1 = base.replace(window_size=5)
    config2 = config1.replace(window_size=3)
    assert config2.window_size == 3
    assert config1.window_size == 5


@deliberate(
    "no automaticTransitionFromOpenToHalfOpenEnabled: brownout has no timer thread, a break "
    "that is over reads as HALF_OPEN the next time the breaker is used or read"
)
def test_r4j_should_use_base_config_and_overwrite_properties() -> None:
    base = BreakerConfig(
        open_for=100,
        window_duration=1000,
        half_open_calls=100,
        failure_rate=0.2,
    )
    extended = base.replace(open_for=20)
    assert extended.failure_rate == 0.2
    assert extended.open_for == 20
    assert extended.window_duration == 1000
    assert extended.half_open_calls == 100
    assert not hasattr(extended, "automatic_transition")


@deliberate(
    "repr() lists brownout's fields (no automaticTransition... or synchronization strategy: "
    "no timer thread, one window implementation)"
)
def test_r4j_test_to_string() -> None:
    config = BreakerConfig(window_size=5, record=[RuntimeExc], window_duration=5)
    result = repr(config)
    assert result.startswith("BreakerConfig(")
    assert "window_size=5" in result
    assert "record=(<class 'tests.peers.test_r4j_config.RuntimeExc'>,)" in result
    assert "window_duration=5" in result
    assert "automatic" not in result
    assert result.endswith(")")
