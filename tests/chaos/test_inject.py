"""FaultInjector: rates with a seed, fake sleeping, fresh errors, sync and async wrappers."""

from __future__ import annotations

import inspect

import pytest

from brownout.chaos import FaultInjector


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def add(a: int, b: int = 0) -> int:
    """Adds."""
    return a + b


async def async_add(a: int, b: int = 0) -> int:
    """Adds, asynchronously."""
    return a + b


def run_pattern(injector: FaultInjector, n: int) -> list[bool]:
    wrapped = injector.wrap(add)
    pattern = []
    for i in range(n):
        try:
            wrapped(i)
        except ConnectionError:
            pattern.append(True)
        else:
            pattern.append(False)
    return pattern


def test_rate_with_seed_is_reproducible() -> None:
    a = run_pattern(FaultInjector(ConnectionError, rate=0.3, seed=7), 1000)
    b = run_pattern(FaultInjector(ConnectionError, rate=0.3, seed=7), 1000)
    c = run_pattern(FaultInjector(ConnectionError, rate=0.3, seed=8), 1000)
    assert a == b
    assert a != c
    assert 200 < sum(a) < 400


def test_rate_zero_and_one() -> None:
    assert not any(run_pattern(FaultInjector(ConnectionError, rate=0.0, seed=1), 200))
    assert all(run_pattern(FaultInjector(ConnectionError, rate=1.0), 200))


def test_counts() -> None:
    injector = FaultInjector(ConnectionError, rate=0.5, seed=3)
    pattern = run_pattern(injector, 100)
    assert injector.calls == 100
    assert injector.faults == sum(pattern)
    injector.reset_counts()
    assert (injector.calls, injector.faults) == (0, 0)


def test_latency_uses_injected_sleep_and_then_calls_through() -> None:
    clock = FakeClock()
    wrapped = FaultInjector(latency=2.5, sleep=clock.sleep).wrap(add)
    assert wrapped(1, b=2) == 3
    assert clock.sleeps == [2.5]


def test_latency_then_error() -> None:
    clock = FakeClock()
    wrapped = FaultInjector(TimeoutError("slow"), latency=1.0, sleep=clock.sleep).wrap(add)
    with pytest.raises(TimeoutError, match="slow"):
        wrapped(1)
    assert clock.sleeps == [1.0]


def test_error_instance_is_never_reraised_itself() -> None:
    template = ConnectionError("backend down")
    wrapped = FaultInjector(template).wrap(add)
    seen = []
    for _ in range(2):
        with pytest.raises(ConnectionError) as info:
            wrapped(1)
        seen.append(info.value)
    assert seen[0] is not template
    assert seen[1] is not template
    assert seen[0] is not seen[1]
    assert all(e.args == ("backend down",) for e in seen)
    assert template.__traceback__ is None


class RichError(Exception):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def test_error_instance_with_keyword_only_init_is_copied() -> None:
    template = RichError("rate limited", status=429)
    with pytest.raises(RichError) as info:
        FaultInjector(template).wrap(add)(1)
    assert info.value is not template
    assert info.value.args == ("rate limited",)
    assert info.value.status == 429


def test_error_class_and_factory() -> None:
    with pytest.raises(ConnectionResetError, match=r"brownout\.chaos"):
        FaultInjector(ConnectionResetError).wrap(add)(1)
    with pytest.raises(OSError, match="made"):
        FaultInjector(lambda: OSError("made")).wrap(add)(1)


def test_no_error_only_delays() -> None:
    clock = FakeClock()
    injector = FaultInjector(rate=1.0, sleep=clock.sleep)
    assert injector.wrap(add)(2, 3) == 5
    assert clock.sleeps == []  # no latency configured: nothing to sleep
    assert injector.faults == 1


def test_enabled_switch() -> None:
    injector = FaultInjector(ConnectionError)
    wrapped = injector.wrap(add)
    injector.enabled = False
    assert wrapped(1) == 1
    assert injector.calls == 0
    injector.enabled = True
    with pytest.raises(ConnectionError):
        wrapped(1)
    assert FaultInjector(ConnectionError, enabled=False).wrap(add)(4) == 4


def test_wrapper_keeps_metadata() -> None:
    wrapped = FaultInjector(rate=0.0).wrap(add)
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Adds."
    assert wrapped.__wrapped__ is add  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(add)


async def test_async_wrapper_with_async_fake_sleep() -> None:
    clock = FakeClock()
    injector = FaultInjector(
        ConnectionError("down"), latency=3.0, async_sleep=clock.async_sleep, sleep=clock.sleep
    )
    wrapped = injector.wrap(async_add)
    assert inspect.iscoroutinefunction(wrapped)
    with pytest.raises(ConnectionError, match="down"):
        await wrapped(1, 2)
    assert clock.sleeps == [3.0]
    injector.enabled = False
    assert await wrapped(1, 2) == 3


async def test_async_wrapper_falls_back_to_sync_fake_sleep() -> None:
    clock = FakeClock()
    wrapped = FaultInjector(latency=0.5, sleep=clock.sleep).wrap(async_add)
    assert await wrapped(2) == 2
    assert clock.sleeps == [0.5]


async def test_async_wrapper_awaits_awaitable_sleep_result() -> None:
    clock = FakeClock()
    wrapped = FaultInjector(latency=0.25, sleep=clock.async_sleep).wrap(async_add)
    assert await wrapped(5) == 5
    assert clock.sleeps == [0.25]


async def test_async_wrapper_with_real_sleep_zero_latency() -> None:
    wrapped = FaultInjector(ValueError("bad"), rate=1.0).wrap(async_add)
    with pytest.raises(ValueError, match="bad"):
        await wrapped(1)


def test_inject_hook() -> None:
    injector = FaultInjector(KeyError("k"), rate=1.0)
    with pytest.raises(KeyError):
        injector.inject()
    injector.enabled = False
    injector.inject()


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"rate": 1.5}, ValueError, "rate"),
        ({"rate": -0.1}, ValueError, "rate"),
        ({"latency": -1.0}, ValueError, "latency"),
        ({"latency": float("nan")}, ValueError, "latency"),
        ({"error": 42}, TypeError, "error"),
        ({"sleep": 3}, TypeError, "sleep"),
    ],
)
def test_validation(kwargs: dict[str, object], exc: type[Exception], field: str) -> None:
    with pytest.raises(exc, match=field):
        FaultInjector(**kwargs)  # type: ignore[arg-type]


def test_factory_returning_non_exception_is_an_error() -> None:
    injector = FaultInjector(lambda: "oops")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factory"):
        injector.wrap(add)(1)
