"""Waiting for background work in tests: :func:`eventually` and :func:`aeventually`.

A condition is either a predicate (``lambda: box.stats()["pending"] == 0``) or an
assertion function (``def applied(): assert box.status(key) == "applied"``). It has
passed when it returns without raising :class:`AssertionError` and its result is
truthy or ``None`` (what an assertion function returns); a falsy result other than
``None`` or an :class:`AssertionError` means "not yet". Any other exception is a bug in
the test or the code under test and propagates at once.

These wait on real time (background threads, child processes, sockets). Time that code
reads from an injected clock is moved with :class:`~brownout.testing.FakeClock` instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["aeventually", "eventually"]

T = TypeVar("T")

_DEFAULT_TIMEOUT = 10.0
_DEFAULT_INTERVAL = 0.02


class _EventuallyFailed(AssertionError, TimeoutError):
    """A condition did not pass in time (private: catch it as either base).

    A test failure, not a library error (so not a ``BrownoutError``): an
    :class:`AssertionError` and, for callers that waited with
    ``brownout.testing.servers.wait_until`` before, a :class:`TimeoutError`.
    When the condition last failed with an :class:`AssertionError`, that error is the
    ``__cause__`` and its message is part of this one.
    """


def _validate(timeout: float, interval: float) -> None:
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(f"eventually: timeout must be >= 0 seconds, got {timeout!r}")
    if not interval > 0:
        raise ValueError(f"eventually: interval must be > 0 seconds, got {interval!r}")


def _describe(condition: Callable[..., object], what: str | None) -> str:
    if what:
        return what
    name = getattr(condition, "__qualname__", None) or repr(condition)
    return f"{name}()"


def _failure(
    what: str, timeout: float, tries: int, result: object, error: AssertionError | None
) -> _EventuallyFailed:
    head = f"timed out after {timeout:g}s waiting for {what} ({tries} tries)"
    if error is not None:
        detail = str(error) or type(error).__name__
        failed = _EventuallyFailed(f"{head}; last assertion: {detail}")
        failed.__cause__ = error
        return failed
    return _EventuallyFailed(f"{head}; the condition last returned {result!r}")


def _passed(result: object) -> bool:
    return result is None or bool(result)


# Deliberate twins, not a hot path: eventually() and aeventually() repeat the polling loop
# (time.sleep against await asyncio.sleep, and aeventually awaits a coroutine condition);
# the validation, the description and the failure message are written once above.


def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = _DEFAULT_TIMEOUT,
    interval: float = _DEFAULT_INTERVAL,
    what: str | None = None,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``condition`` every ``interval`` seconds until it passes; return its result.

    Raises an :class:`AssertionError` (also a :class:`TimeoutError`) when it has not
    passed after ``timeout`` seconds (it is tried once more at the deadline), naming
    ``what`` (default: the condition's name) and carrying the last assertion message or
    result. ``check``, called before
    each try, may raise to give up early (e.g. "the child process exited")::

        eventually(lambda: box.stats()["pending"] == 0, what="the replay")
        row = eventually(lambda: fetch_row(key))   # returns the first truthy row
    """
    _validate(timeout, interval)
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        if check is not None:
            check()
        tries += 1
        error: AssertionError | None = None
        result: object = None
        try:
            value = condition()
        except AssertionError as exc:
            error = exc
        else:
            if _passed(value):
                return value
            result = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(_describe(condition, what), timeout, tries, result, error)
        time.sleep(min(interval, remaining))


async def aeventually(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = _DEFAULT_TIMEOUT,  # noqa: ASYNC109  # a polling deadline, like eventually()
    interval: float = _DEFAULT_INTERVAL,
    what: str | None = None,
    check: Callable[[], None] | None = None,
) -> T:
    """:func:`eventually` for async tests: sleeps with :func:`asyncio.sleep`, so the loop
    keeps running, and ``condition`` may be a coroutine function (its result is awaited)::

        await aeventually(lambda: proxy.connections == 0, what="the pool to close")
        await aeventually(status_is_ok)     # async def status_is_ok(): assert ...
    """
    _validate(timeout, interval)
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        if check is not None:
            check()
        tries += 1
        error: AssertionError | None = None
        result: object = None
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except AssertionError as exc:
            error = exc
        else:
            if _passed(value):
                return value
            result = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(_describe(condition, what), timeout, tries, result, error)
        await asyncio.sleep(min(interval, remaining))
