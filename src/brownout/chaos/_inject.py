"""In-process fault injection into any callable, sync or async."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

__all__ = ["ErrorSpec", "FaultInjector"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

ErrorSpec = BaseException | type[BaseException] | Callable[[], BaseException]
"""What :class:`FaultInjector` raises: an exception instance (a fresh copy is raised each
time), an exception class (instantiated each time) or a factory returning an exception."""

_DEFAULT_MESSAGE = "fault injected by brownout.chaos"


def _fresh_copy(template: BaseException) -> BaseException:
    """A new exception of the same type and args as ``template``, never ``template``."""
    cls = type(template)
    try:
        clone = cls(*template.args)
    except Exception:
        # A constructor with keyword-only or different arguments: build it without
        # calling __init__ and copy the state over.
        clone = cls.__new__(cls, *template.args)
        clone.args = template.args
    if type(clone) is not cls:
        clone = cls.__new__(cls, *template.args)
        clone.args = template.args
    for key, value in vars(template).items():
        if key not in vars(clone):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(clone, key, value)
    return clone


class FaultInjector:
    """Makes calls slow and/or failing with a given probability.

    Every call to a wrapped function draws once: with probability ``rate`` the call is
    faulted, which means it first sleeps ``latency`` seconds (if > 0) and then raises a
    fresh ``error`` (if given) instead of calling the function. With ``error=None`` a
    faulted call is only delayed, then runs normally.

    Example::

        injector = FaultInjector(ConnectionError("db down"), rate=0.3, seed=42)
        fetch = injector.wrap(fetch)          # same signature, sync or async
        injector.enabled = False              # switch it off at run time

        # unit tests with a fake clock: no real sleeping
        slow = FaultInjector(latency=2.0, sleep=fake_clock.sleep)

    ``sleep`` replaces :func:`time.sleep` for sync callables; for coroutine functions
    ``async_sleep`` replaces :func:`asyncio.sleep`, and if only ``sleep`` is given it is
    used there too (its result is awaited when it is awaitable). With ``seed`` the draws
    are reproducible. ``calls`` and ``faults`` count wrapped calls and faulted ones.
    Thread-safe.
    """

    def __init__(
        self,
        error: ErrorSpec | None = None,
        rate: float = 1.0,
        latency: float = 0.0,
        seed: int | None = None,
        sleep: Callable[[float], object] | None = None,
        async_sleep: Callable[[float], Awaitable[object]] | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        if error is not None and not (
            isinstance(error, BaseException)
            or (isinstance(error, type) and issubclass(error, BaseException))
            or callable(error)
        ):
            raise TypeError(
                f"error must be an exception, an exception class or a factory, got {error!r}"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"rate must be a number between 0 and 1, got {rate!r}")
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise TypeError(f"latency must be a number of seconds, got {latency!r}")
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency!r}")
        if sleep is not None and not callable(sleep):
            raise TypeError(f"sleep must be callable, got {sleep!r}")
        if async_sleep is not None and not callable(async_sleep):
            raise TypeError(f"async_sleep must be callable, got {async_sleep!r}")
        self.error = error
        self.rate = float(rate)
        self.latency = float(latency)
        self.enabled = enabled
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._calls = 0
        self._faults = 0

    @property
    def calls(self) -> int:
        """Calls that went through a wrapper while enabled."""
        return self._calls

    @property
    def faults(self) -> int:
        """Calls that were faulted (delayed and/or failed)."""
        return self._faults

    def reset_counts(self) -> None:
        """Zero :attr:`calls` and :attr:`faults`."""
        with self._lock:
            self._calls = 0
            self._faults = 0

    def make_error(self) -> BaseException | None:
        """A fresh exception to raise for one faulted call (``None`` without ``error``)."""
        error = self.error
        if error is None:
            return None
        if isinstance(error, BaseException):
            return _fresh_copy(error)
        if isinstance(error, type) and issubclass(error, BaseException):
            exc_type: type[BaseException] = error
            try:
                return exc_type(_DEFAULT_MESSAGE)
            except TypeError:
                return exc_type()
        made = error()
        if not isinstance(made, BaseException):
            raise TypeError(f"the error factory returned {made!r}, not an exception")
        return made

    def _draw(self) -> bool:
        """Whether this call is faulted; counts it."""
        if not self.enabled:
            return False
        with self._lock:
            self._calls += 1
            rate = self.rate
            hit = rate >= 1.0 or (rate > 0.0 and self._random.random() < rate)
            if hit:
                self._faults += 1
        return hit

    def inject(self) -> None:
        """Draw once and apply the fault here (a hook to call inside sync code)."""
        if not self._draw():
            return
        if self.latency > 0:
            (self._sleep or time.sleep)(self.latency)
        error = self.make_error()
        if error is not None:
            raise error

    async def ainject(self) -> None:
        """Draw once and apply the fault here (a hook to await inside async code)."""
        if not self._draw():
            return
        if self.latency > 0:
            if self._async_sleep is not None:
                await self._async_sleep(self.latency)
            elif self._sleep is not None:
                result = self._sleep(self.latency)
                if inspect.isawaitable(result):
                    await result
            else:
                await asyncio.sleep(self.latency)
        error = self.make_error()
        if error is not None:
            raise error

    @overload
    def wrap(
        self, fn: Callable[_P, Coroutine[Any, Any, _R]]
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...

    @overload
    def wrap(self, fn: Callable[_P, _R]) -> Callable[_P, _R]: ...

    def wrap(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Return ``fn`` with faults injected; an async wrapper for coroutine functions.

        Usable as a decorator::

            @injector.wrap
            async def get_user(user_id: int) -> User: ...
        """
        if not callable(fn):
            raise TypeError(f"wrap() needs a callable, got {fn!r}")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                await self.ainject()
                return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            self.inject()
            return fn(*args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return (
            f"FaultInjector(error={self.error!r}, rate={self.rate}, latency={self.latency}, "
            f"enabled={self.enabled})"
        )
