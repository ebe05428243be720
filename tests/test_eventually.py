"""brownout.testing.eventually / aeventually: the one wait-for-background-work helper."""

from __future__ import annotations

import itertools

import pytest

from brownout.testing import aeventually, eventually
from brownout.testing.servers import wait_until


def test_predicate_passes_after_some_tries_and_result_is_returned() -> None:
    calls = itertools.count(1)
    assert eventually(lambda: next(calls) >= 3, interval=0.001) is True
    assert next(calls) == 4  # tried exactly three times


def test_truthy_result_is_returned() -> None:
    values = iter([0, "", "row"])
    assert eventually(lambda: next(values), interval=0.001) == "row"


def test_assertion_function_passes_when_it_stops_raising() -> None:
    calls = itertools.count(1)

    def third_time() -> None:
        assert next(calls) >= 3, "not yet"

    assert eventually(third_time, interval=0.001) is None
    assert next(calls) == 4


def test_timeout_reraises_the_last_assertion_with_what_and_cause() -> None:
    def never() -> None:
        assert 1 + 1 == 3, "arithmetic still broken"

    with pytest.raises(AssertionError) as info:
        eventually(never, timeout=0, what="arithmetic")
    message = str(info.value)
    assert message.startswith("timed out after 0s waiting for arithmetic (1 tries)")
    assert "last assertion: arithmetic still broken" in message
    assert isinstance(info.value.__cause__, AssertionError)
    assert isinstance(info.value, TimeoutError)


def test_timeout_names_the_condition_and_its_last_result() -> None:
    def queue_length() -> int:
        return 0

    with pytest.raises(AssertionError, match=r"queue_length\(\).*last returned 0"):
        eventually(queue_length, timeout=0)


def test_other_exceptions_propagate_at_once() -> None:
    calls = itertools.count(1)

    def broken() -> bool:
        next(calls)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        eventually(broken, timeout=5)
    assert next(calls) == 2


def test_check_gives_up_early() -> None:
    def dead() -> None:
        raise RuntimeError("the child exited")

    with pytest.raises(RuntimeError, match="child exited"):
        eventually(lambda: False, timeout=5, check=dead)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": -1}, "timeout must be >= 0 seconds, got -1"),
        ({"timeout": float("nan")}, "timeout must be >= 0 seconds, got nan"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        eventually(lambda: True, **kwargs)


def test_wait_until_is_the_same_helper() -> None:
    assert wait_until is eventually
    with pytest.raises(TimeoutError, match="waiting for the port"):
        wait_until(lambda: False, timeout=0, what="the port")


async def test_aeventually_awaits_coroutine_conditions() -> None:
    calls = itertools.count(1)

    async def third_time() -> str:
        assert next(calls) >= 3
        return "ok"

    assert await aeventually(third_time, interval=0.001) == "ok"


async def test_aeventually_plain_predicate_and_failure() -> None:
    assert await aeventually(lambda: 5) == 5
    with pytest.raises(AssertionError, match=r"waiting for nothing \(1 tries\).*returned False"):
        await aeventually(lambda: False, timeout=0, what="nothing")
    with pytest.raises(ValueError, match="interval must be > 0"):
        await aeventually(lambda: True, interval=-1)
