"""Helpers shared by the ports of the peers' test suites (see ``tests/peers/__init__``)."""

from __future__ import annotations

import contextvars

from brownout import BreakerOpen, CircuitBreaker


class Permit:
    """One admitted call whose outcome the test reports later.

    resilience4j's tests drive the breaker by hand: ``tryAcquirePermission()``,
    then ``onSuccess`` / ``onError`` or ``releasePermission()``, with several
    permissions held at once. brownout's public protocol for that is the
    context manager (``with cb:``): entering admits the call, leaving reports
    its outcome. Each permit enters in a context of its own, so permits can be
    finished in any order (``with`` blocks nest; held permits need not).
    """

    __slots__ = ("_cb", "_ctx")

    def __init__(self, cb: CircuitBreaker) -> None:
        self._cb = cb
        self._ctx = contextvars.copy_context()
        self._ctx.run(cb.__enter__)

    def success(self) -> None:
        """The call returned."""
        self._ctx.run(self._cb.__exit__, None, None, None)

    def error(self, exc: BaseException) -> None:
        """The call raised ``exc`` (counted as its class is configured: record / ignore)."""
        self._ctx.run(self._cb.__exit__, type(exc), exc, exc.__traceback__)


def try_acquire(cb: CircuitBreaker) -> Permit | None:
    """resilience4j's ``tryAcquirePermission()``: a permit, or ``None`` when rejected."""
    try:
        return Permit(cb)
    except BreakerOpen:
        return None
