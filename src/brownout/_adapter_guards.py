"""An adapter's overload guards (bulkhead, adaptive throttle) around its operations.

An adapter given a bulkhead or a throttle gets guarded versions of its four ways
of running an operation (``_run``, ``_arun``, ``_command``, ``_acommand``) as
*instance* attributes, which shadow the class's methods. An adapter without
them keeps the class's methods untouched: the lean per-command path costs
nothing more when the options are not set.

Around each operation, in this order:

1. the throttle's ``admit()`` (may raise :class:`~brownout.Throttled`);
2. a bulkhead permit (may wait up to the bulkhead's ``max_wait``, then raise
   :class:`~brownout.BulkheadFull`);
3. the operation through the breaker, as without guards.

A rejection by either guard is recorded as a ``rejected`` operation (as a
breaker's) and raised: a :class:`~brownout.BrownoutError` with ``retry_after``.
The throttle counts the call accepted unless the dependency failed it (an error
the adapter's table counts against the dependency: a 429, a timeout, a refused
connection; a caller's 400 is an answer) or the breaker refused it. The permit
is released with ``dropped=True`` (for an adaptive limit) when the call timed
out or was throttled by the dependency.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from brownout._errors import BreakerOpen, DependencyError, Overloaded

if TYPE_CHECKING:
    from brownout._adapter import Adapter
    from brownout.overload import Guards, Permit

__all__ = ["aguarded", "guarded", "install_guards"]

#: error kinds that tell an adaptive limit the dependency is queueing
_DROP_KINDS = frozenset({"timeout", "throttled"})


def install_guards(adapter: Adapter, guards: Guards) -> None:
    """Wrap ``adapter``'s operations in ``guards`` (nothing to do without a bulkhead
    or a throttle: a retry budget acts on the client's own retries)."""
    if guards.bulkhead is None and guards.throttle is None:
        return
    cls = type(adapter)
    # instance attributes shadow the class's methods for this adapter only
    vars(adapter).update(
        _run=_wrap_run(adapter, cls._run),
        _arun=_wrap_arun(adapter, cls._arun),
        _command=_wrap_command(adapter, cls._command),
        _acommand=_wrap_acommand(adapter, cls._acommand),
    )


def _outcome(adapter: Adapter, exc: BaseException | None) -> tuple[bool, bool]:
    """(refused by the dependency, dropped) for the throttle and an adaptive limit."""
    if exc is None:
        return False, False
    if isinstance(exc, BreakerOpen):
        return True, False
    if isinstance(exc, DependencyError):  # a copy scrubbed of a secret: its kind is kept
        kind: str | None = exc.kind
        counts = True
    elif isinstance(exc, Exception):
        rule = adapter.errors.classify(exc)
        kind, counts = rule.kind, rule.counts
    else:  # cancelled or interrupted: neither an answer nor a refusal
        return False, False
    return counts, kind in _DROP_KINDS


def _admit(adapter: Adapter, operation: str) -> Permit | None:
    """Pass the throttle and take a permit; a rejection is recorded and raised."""
    guards = adapter.guards
    try:
        if guards.throttle is not None:
            guards.throttle.admit()
        if guards.bulkhead is None:
            return None
        try:
            return guards.bulkhead.acquire().__enter__()
        except Overloaded:
            if guards.throttle is not None:
                guards.throttle.refused()  # not sent: it earns the throttle nothing
            raise
    except Overloaded:
        adapter._emit(operation, "rejected", 0.0, None, None)
        raise


async def _aadmit(adapter: Adapter, operation: str) -> Permit | None:
    guards = adapter.guards
    try:
        if guards.throttle is not None:
            guards.throttle.admit()
        if guards.bulkhead is None:
            return None
        permit = guards.bulkhead.acquire()
        if permit._try_now():  # a free permit of a fixed limit: no coroutine to await
            return permit
        try:
            return await permit.__aenter__()
        except Overloaded:
            if guards.throttle is not None:
                guards.throttle.refused()
            raise
    except Overloaded:
        adapter._emit(operation, "rejected", 0.0, None, None)
        raise


def _settle(adapter: Adapter, permit: Permit | None, exc: BaseException | None) -> None:
    if exc is None:  # the common case first: an answer
        throttle = adapter.guards.throttle
        if throttle is not None:
            throttle.accepted()
        if permit is not None:
            permit.__exit__(None, None, None)
        return
    refused, dropped = _outcome(adapter, exc)
    throttle = adapter.guards.throttle
    if throttle is not None and isinstance(exc, Exception):
        if refused:
            throttle.refused()
        else:
            throttle.accepted()
    if permit is not None:
        permit.release(dropped=dropped)


# The four wrappers below are sync/async twins on purpose (a def and an async def cannot
# be one function, and each one is on a guarded adapter's per-call path); what they share
# (admission, settling) is in _admit/_aadmit and _settle.
def _wrap_run(adapter: Adapter, inner: Callable[..., Any]) -> Callable[..., Any]:
    def run(operation: str, *args: Any, **kwargs: Any) -> Any:
        permit = _admit(adapter, operation)
        try:
            result = inner(adapter, operation, *args, **kwargs)
        except BaseException as exc:
            _settle(adapter, permit, exc)
            raise
        _settle(adapter, permit, None)
        return result

    return run


def _wrap_arun(adapter: Adapter, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def arun(operation: str, *args: Any, **kwargs: Any) -> Any:
        permit = await _aadmit(adapter, operation)
        try:
            result = await inner(adapter, operation, *args, **kwargs)
        except BaseException as exc:
            _settle(adapter, permit, exc)
            raise
        _settle(adapter, permit, None)
        return result

    return arun


def _wrap_command(adapter: Adapter, inner: Callable[..., Any]) -> Callable[..., Any]:
    guards = adapter.guards
    bulkhead = guards.bulkhead if guards.throttle is None else None

    def command(fn: Any, args: tuple[Any, ...], operation: str, *rest: Any) -> Any:
        permit: Permit | None
        if bulkhead is not None:
            permit = bulkhead.acquire()
            if not permit._try_now():
                permit = _admit(adapter, operation)
        else:
            permit = _admit(adapter, operation)
        try:
            result = inner(adapter, fn, args, operation, *rest)
        except BaseException as exc:
            _settle(adapter, permit, exc)
            raise
        _settle(adapter, permit, None)
        return result

    return command


def _wrap_acommand(adapter: Adapter, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    guards = adapter.guards
    bulkhead = guards.bulkhead if guards.throttle is None else None

    async def acommand(fn: Any, args: tuple[Any, ...], operation: str, *rest: Any) -> Any:
        permit: Permit | None
        if bulkhead is not None:  # a bulkhead alone: try its lock-free path inline
            permit = bulkhead.acquire()
            if not permit._try_now():
                permit = await _aadmit(adapter, operation)
        else:
            permit = await _aadmit(adapter, operation)
        try:
            result = await inner(adapter, fn, args, operation, *rest)
        except BaseException as exc:
            _settle(adapter, permit, exc)
            raise
        _settle(adapter, permit, None)
        return result

    return acommand


class _Guarded:
    """``with`` / ``async with`` around one unit of work (a SQL transaction): the same
    admission and settlement as the wrapped operations above."""

    __slots__ = ("_adapter", "_operation", "_permit")

    def __init__(self, adapter: Adapter, operation: str) -> None:
        self._adapter = adapter
        self._operation = operation
        self._permit: Any = None

    def __enter__(self) -> None:
        self._permit = _admit(self._adapter, self._operation)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        _settle(self._adapter, self._permit, exc)

    async def __aenter__(self) -> None:
        self._permit = await _aadmit(self._adapter, self._operation)

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        _settle(self._adapter, self._permit, exc)


_UNGUARDED = contextlib.nullcontext()


def guarded(adapter: Adapter, operation: str) -> contextlib.AbstractContextManager[None]:
    """The adapter's guards around a block (a no-op object when it has none)."""
    guards = adapter.guards
    if guards.bulkhead is None and guards.throttle is None:
        return _UNGUARDED
    return _Guarded(adapter, operation)


def aguarded(adapter: Adapter, operation: str) -> contextlib.AbstractAsyncContextManager[None]:
    """:func:`guarded` for ``async with`` (the bulkhead's wait is in the event loop)."""
    guards = adapter.guards
    if guards.bulkhead is None and guards.throttle is None:
        return _UNGUARDED
    return _Guarded(adapter, operation)
