"""fabfuel/circuitbreaker's test suite (``tests/test_unit.py``, ``tests/test_functional.py``).

Each test is named after the circuitbreaker case it translates and keeps its
numbers: ``failure_threshold`` → ``consecutive_failures``,
``recovery_timeout`` → ``open_for`` (the defaults agree: 5 failures, 30 s),
``expected_exception`` → ``record``. ``failure_count`` reads as
``snapshot().consecutive_failures`` (``total_failures`` once a half-open
probe has failed: circuitbreaker keeps counting across the break),
``open_remaining`` as ``snapshot().retry_after``, ``last_failure`` as
``snapshot().last_error``. The functional cases run sync and async, as in
circuitbreaker's own ``sync_or_async`` fixture; time moves through a
``FakeClock`` where circuitbreaker sleeps.

Cases marked ``deliberate_difference`` test brownout's documented answer
where it differs; the marker carries the reason. The recurring ones: the
fallback receives the exception (not the call's arguments); ``last_error``
stays after a success; there is no global ``CircuitBreakerMonitor`` (an
explicit ``Registry``) and no configuration by subclassing (a
``BreakerConfig``, shared through a ``Registry`` default); a wrong type in
the configuration is a ``TypeError``.

Left out (``LEFT_OUT``): ``tests/test_functional_async.py``, an older copy
of the async half of ``test_functional.py`` (same cases, same numbers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from unittest.mock import Mock

import pytest

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry, State
from brownout.testing import FakeClock

#: circuitbreaker cases that do not apply to brownout, and why.
LEFT_OUT: dict[str, str] = {
    "tests/test_functional_async.py (6 cases)": "an older copy of the async half of "
    "tests/test_functional.py, whose cases (run sync and async) are ported here",
}

deliberate = pytest.mark.deliberate_difference


class FooError(Exception):
    def __init__(self, val: object = None) -> None:
        super().__init__(val)
        self.val = val


class BarError(Exception):
    pass


def is_failure(config: BreakerConfig, exc: Exception) -> bool:
    """circuitbreaker's ``is_failure``: whether a call raising ``exc`` is recorded as a failure."""
    cb = CircuitBreaker("probe", config)

    def raiser() -> None:
        raise exc

    with pytest.raises(type(exc)):
        cb.call(raiser)
    return cb.snapshot().total_failures == 1


# ------------------------------------------------------------------------ test_unit.py


@deliberate("str() of a breaker is its repr, with the state; the name is cb.name")
def test_circuitbreaker__str__() -> None:
    cb = CircuitBreaker("Foobar")
    assert cb.name == "Foobar"
    assert str(cb) == "<CircuitBreaker 'Foobar' closed>"


@deliberate(
    "BreakerOpen's message names the breaker, its state and the seconds until a probe; "
    "no failure count and no last error (errors may carry secrets; the redacted last "
    "error is in snapshot().last_error)"
)
def test_circuitbreaker_error__str__() -> None:
    cb = CircuitBreaker("Foobar", BreakerConfig(consecutive_failures=1), clock=FakeClock())

    def boom() -> None:
        raise BarError

    with pytest.raises(BarError):
        cb.call(boom)
    with pytest.raises(BreakerOpen) as rejected:
        cb.call(boom)
    assert str(rejected.value) == "circuit breaker 'Foobar' is open; retry after 30 s"
    assert cb.snapshot().last_error == "BarError"


def test_circuitbreaker_should_save_last_exception_on_failure_call() -> None:
    cb = CircuitBreaker("Foobar")
    func = Mock(side_effect=OSError)
    with pytest.raises(OSError):
        cb.call(func)
    assert cb.snapshot().last_error == "OSError"


@deliberate(
    "last_error is the last *recorded* error and stays after a success: an operator "
    "looking at a flapping dependency still sees what failed (last_failure_at says when)"
)
def test_circuitbreaker_should_clear_last_exception_on_success_call() -> None:
    cb = CircuitBreaker("Foobar", clock=FakeClock())
    with pytest.raises(OSError):
        cb.call(Mock(side_effect=OSError))
    assert cb.snapshot().last_error == "OSError"
    cb.call(lambda: True)
    snap = cb.snapshot()
    assert snap.last_error == "OSError"  # circuitbreaker: None
    assert snap.consecutive_failures == 0
    assert snap.last_failure_at == 0.0


@deliberate(
    "the fallback receives the exception (BreakerOpen when rejected, or the recorded "
    "error): one fallback serves call(), acall(), the decorator and every signature"
)
def test_circuitbreaker_should_call_fallback_function_if_open() -> None:
    fallback = Mock(return_value=True)
    func = Mock(return_value=False)
    cb = CircuitBreaker("WithFallback", fallback=fallback)
    decorated_func = cb(func)
    cb.force_open()
    decorated_func()
    fallback.assert_called_once()
    (exc,) = fallback.call_args.args
    assert isinstance(exc, BreakerOpen)
    assert exc.name == "WithFallback"


def test_circuitbreaker_should_not_call_function_if_open() -> None:
    fallback = Mock(return_value=True)
    func = Mock(return_value=False)
    cb = CircuitBreaker("WithFallback", fallback=fallback)
    decorated_func = cb(func)
    cb.force_open()
    assert decorated_func() == fallback.return_value
    assert not func.called


@deliberate(
    "the fallback receives the exception, not the call's arguments (a fallback that needs "
    "them is a closure, or wraps the call itself)"
)
def test_circuitbreaker_call_fallback_function_with_parameters() -> None:
    fallback = Mock(return_value=True)
    cb = CircuitBreaker("with_fallback", fallback=fallback)

    def mocked_function(*args: object, **kwargs: object) -> None:
        pass

    func_decorated = cb(mocked_function)
    cb.force_open()
    func_decorated("test2", test="test")
    fallback.assert_called_once()
    assert isinstance(fallback.call_args.args[0], BreakerOpen)
    assert fallback.call_args.kwargs == {}


@deliberate(
    "no module-level decorator that creates a hidden breaker per function: the decorator is "
    "an explicit breaker instance (@cb), which the application can share, name and observe"
)
def test_circuitbreaker_circuit_decorator_without_args() -> None:
    cb = CircuitBreaker("function")

    @cb
    def function() -> bool:
        return True

    assert function()
    assert cb.snapshot().calls == 1


def test_circuitbreaker_circuit_decorator_with_args() -> None:
    def function_fallback(exc: BaseException) -> bool:
        return True

    config = BreakerConfig(consecutive_failures=10, open_for=20, record=KeyError)
    cb = CircuitBreaker("foobar", config, fallback=function_fallback)
    assert is_failure(config, KeyError())
    assert not is_failure(config, Exception())
    assert not is_failure(config, FooError())
    assert cb.config.consecutive_failures == 10
    assert cb.config.open_for == 20
    assert cb.name == "foobar"
    cb.force_open()
    assert cb.call(lambda: False) is True  # the fallback answers


def test_circuitbreaker_breaker_expected_exception_is_predicate() -> None:
    def is_four_foo(thrown: BaseException) -> bool:
        return isinstance(thrown, FooError) and thrown.val == 4

    config = BreakerConfig(record=[is_four_foo])
    assert is_failure(config, FooError(4))
    assert not is_failure(config, FooError(2))


def test_circuitbreaker_breaker_default_constructor_traps_Exception() -> None:
    config = BreakerConfig()
    assert is_failure(config, Exception())
    assert is_failure(config, FooError())


def test_circuitbreaker_breaker_expected_exception_is_custom_exception() -> None:
    config = BreakerConfig(record=FooError)
    assert is_failure(config, FooError())
    assert not is_failure(config, Exception())


def test_circuitbreaker_breaker_constructor_expected_exception_is_exception_list() -> None:
    config = BreakerConfig(record=(FooError, BarError))
    assert is_failure(config, FooError())
    assert is_failure(config, BarError())
    assert not is_failure(config, Exception())


@deliberate("a wrong type in the configuration raises TypeError (circuitbreaker: ValueError)")
def test_circuitbreaker_constructor_mistake_name_bytes() -> None:
    with pytest.raises(TypeError, match="record must be a sequence of exception types"):
        BreakerConfig(consecutive_failures=10, open_for=20, record=b"foobar")  # type: ignore[arg-type]


@deliberate("a wrong type in the configuration raises TypeError (circuitbreaker: ValueError)")
def test_circuitbreaker_constructor_mistake_name_unicode() -> None:
    with pytest.raises(TypeError, match="record must be a sequence of exception types"):
        BreakerConfig(consecutive_failures=10, open_for=20, record="foobar")  # type: ignore[arg-type]


@deliberate("a wrong type in the configuration raises TypeError (circuitbreaker: ValueError)")
def test_circuitbreaker_constructor_mistake_expected_exception() -> None:
    class Widget:
        pass

    with pytest.raises(TypeError, match="got the class Widget"):
        BreakerConfig(consecutive_failures=10, open_for=20, record=Widget)  # type: ignore[arg-type]


def _house_registry(config: BreakerConfig) -> Registry:
    """brownout's answer to a CircuitBreaker subclass: a registry whose default config is ours."""
    return Registry(default=config)


@deliberate(
    "configuration is a BreakerConfig, not class attributes of a subclass; a house default "
    "is shared through Registry(default=...)"
)
def test_circuitbreaker_advanced_usage_circuitbreaker_subclass() -> None:
    registry = _house_registry(BreakerConfig(record=FooError))
    config = registry.get("mybreaker").config
    assert not is_failure(config, Exception())
    assert is_failure(config, FooError())


@deliberate("configuration is a BreakerConfig shared through Registry(default=...)")
def test_circuitbreaker_advanced_usage_circuitbreaker_subclass_with_list() -> None:
    config = _house_registry(BreakerConfig(record=(FooError, BarError))).get("mybreaker").config
    assert not is_failure(config, Exception())
    assert is_failure(config, FooError())
    assert is_failure(config, BarError())


@deliberate("configuration is a BreakerConfig shared through Registry(default=...)")
def test_circuitbreaker_advanced_usage_circuitbreaker_subclass_with_predicate() -> None:
    def is_foo_4(thrown: BaseException) -> bool:
        return isinstance(thrown, FooError) and thrown.val == 4

    config = _house_registry(BreakerConfig(record=[is_foo_4])).get("breaker").config
    assert not is_failure(config, Exception())
    assert not is_failure(config, FooError())
    assert is_failure(config, FooError(4))


@deliberate("configuration is a BreakerConfig shared through Registry(default=...)")
def test_circuitbreaker_advanced_usage_circuitbreaker_default_expected_exception() -> None:
    config = _house_registry(BreakerConfig(consecutive_failures=1)).get("nervous").config
    assert config.consecutive_failures == 1
    assert is_failure(config, Exception())


# ------------------------------------------------------------------ test_functional.py


@pytest.fixture(params=[True, False], ids=["async", "sync"])
def is_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def remote_call_return_value() -> object:
    return object()


@pytest.fixture
def mock_remote_call(remote_call_return_value: object) -> Mock:
    return Mock(return_value=remote_call_return_value)


Runner = Callable[[], Awaitable[Any]]


def guard(cb: CircuitBreaker, is_async: bool, body: Callable[[], Any]) -> Runner:
    """``body`` decorated with ``cb`` as a sync or async function; awaiting the result runs it."""
    if is_async:

        @cb
        async def async_function() -> Any:
            return body()

        return async_function

    @cb
    def sync_function() -> Any:
        return body()

    async def run() -> Any:
        return sync_function()

    return run


def circuit(name: str, clock: FakeClock | None = None, **config: Any) -> CircuitBreaker:
    return CircuitBreaker(name, BreakerConfig(**config), clock=clock or FakeClock())


async def test_circuitbreaker_circuit_pass_through(
    is_async: bool, mock_remote_call: Mock, remote_call_return_value: object
) -> None:
    run = guard(circuit("circuit_success"), is_async, mock_remote_call)
    assert await run() is remote_call_return_value


@deliberate(
    "no global CircuitBreakerMonitor: breakers live in an explicit Registry the application "
    "creates and passes along (no module-level state shared by every import)"
)
async def test_circuitbreaker_monitor(is_async: bool) -> None:
    registry = Registry()
    registry.get("circuit_success")
    failure = registry.get("circuit_failure", BreakerConfig(consecutive_failures=1))
    registry.get("circuit_generator_failure", BreakerConfig(consecutive_failures=1))
    registry.get("threshold_1", BreakerConfig(consecutive_failures=1))
    registry.get("threshold_2", BreakerConfig(consecutive_failures=2, open_for=1))
    registry.get("threshold_3", BreakerConfig(consecutive_failures=3, open_for=1))

    def states() -> list[State]:
        return [snap.state for snap in registry.snapshot().values()]

    assert all(state is State.CLOSED for state in states())
    assert len(registry) == 6
    assert states().count(State.CLOSED) == 6
    assert states().count(State.OPEN) == 0

    def raise_io() -> None:
        raise OSError

    with pytest.raises(IOError):
        await guard(failure, is_async, raise_io)()
    assert not all(state is State.CLOSED for state in states())
    assert len(registry) == 6
    assert states().count(State.CLOSED) == 5
    assert states().count(State.OPEN) == 1


async def test_circuitbreaker_threshold_hit_prevents_consequent_calls(
    is_async: bool, mock_remote_call: Mock
) -> None:
    mock_remote_call.side_effect = OSError("Connection refused")
    cb = circuit("threshold_1", consecutive_failures=1)
    run = guard(cb, is_async, mock_remote_call)
    assert cb.state is State.CLOSED
    with pytest.raises(IOError):
        await run()
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):
        await run()
    mock_remote_call.assert_called_once_with()


async def test_circuitbreaker_recover_half_open(is_async: bool, mock_remote_call: Mock) -> None:
    clock = FakeClock()
    cb = circuit("threshold_3", clock, consecutive_failures=3, open_for=1)
    run = guard(cb, is_async, mock_remote_call)

    def open_remaining() -> float | None:
        return cb.snapshot().retry_after

    assert cb.state is State.CLOSED
    assert await run()
    mock_remote_call.side_effect = OSError("Connection refused")

    with pytest.raises(IOError):
        await run()
    assert cb.state is State.CLOSED
    assert cb.snapshot().consecutive_failures == 1
    with pytest.raises(IOError):
        await run()
    assert cb.state is State.CLOSED
    assert cb.snapshot().consecutive_failures == 2
    with pytest.raises(IOError):
        await run()
    assert cb.state is State.OPEN
    assert cb.snapshot().consecutive_failures == 3
    assert 0 < open_remaining() <= 1  # type: ignore[operator]

    for _ in range(2):  # rejected without calling the function
        with pytest.raises(BreakerOpen):
            await run()
        assert cb.state is State.OPEN
        assert cb.snapshot().total_failures == 3
        assert 0 < open_remaining() <= 1  # type: ignore[operator]

    clock.advance(1)
    assert cb.state is State.HALF_OPEN
    assert open_remaining() is None  # circuitbreaker: negative

    with pytest.raises(IOError):  # the probe runs and fails
        await run()
    assert cb.state is State.OPEN
    assert cb.snapshot().total_failures == 4
    assert 0 < open_remaining() <= 1  # type: ignore[operator]
    with pytest.raises(BreakerOpen):
        await run()


async def test_circuitbreaker_reopens_after_successful_calls(
    is_async: bool, mock_remote_call: Mock
) -> None:
    clock = FakeClock()
    cb = circuit("threshold_2", clock, consecutive_failures=2, open_for=1)
    run = guard(cb, is_async, mock_remote_call)

    def failure_count() -> int:
        return cb.snapshot().consecutive_failures

    assert cb.name == "threshold_2"
    assert cb.state is State.CLOSED
    assert failure_count() == 0
    assert await run()

    mock_remote_call.side_effect = OSError("Connection refused")
    with pytest.raises(IOError):
        await run()
    assert cb.state is State.CLOSED
    assert failure_count() == 1
    with pytest.raises(IOError):
        await run()
    assert cb.state is State.OPEN
    assert failure_count() == 2
    assert 0 < cb.snapshot().retry_after <= 1  # type: ignore[operator]
    with pytest.raises(BreakerOpen):
        await run()
    assert failure_count() == 2

    mock_remote_call.side_effect = None
    with pytest.raises(BreakerOpen):  # the break is not over yet
        await run()
    assert cb.state is State.OPEN
    assert failure_count() == 2

    clock.advance(1)
    assert cb.state is State.HALF_OPEN
    assert failure_count() == 2
    assert await run()
    assert cb.state is State.CLOSED
    assert failure_count() == 0
    assert await run()
    assert await run()
    assert await run()


async def test_circuitbreaker_handles_generator_functions(
    is_async: bool, mock_remote_call: Mock
) -> None:
    cb = circuit("circuit_generator_failure", consecutive_failures=1)
    if is_async:

        @cb
        async def agen() -> AsyncIterator[int]:
            mock_remote_call()
            yield 1
            raise OSError

        async def iterate() -> list[int]:
            return [x async for x in agen()]
    else:

        @cb
        def gen() -> Iterator[int]:
            mock_remote_call()
            yield 1
            raise OSError

        async def iterate() -> list[int]:
            return list(gen())

    assert cb.state is State.CLOSED
    with pytest.raises(IOError):
        await iterate()
    assert cb.state is State.OPEN
    with pytest.raises(BreakerOpen):
        await iterate()
    mock_remote_call.assert_called_once_with()
