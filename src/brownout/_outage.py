"""Telling an outage from a caller error, for the components that keep work for later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brownout._errors import BreakerOpen, DependencyError, Overloaded


def default_is_outage(
    adapter: Any, *, not_ready: Callable[[BaseException], object] | None = None
) -> Callable[[BaseException], bool]:
    """Whether an error from ``adapter`` means "the dependency is failing" (keep the work
    and retry later) rather than the caller's mistake: the one classifier of the outbox's
    replayer, the spool's uploader and cache coherence.

    ``BreakerOpen`` always is, and so is a guard's local refusal (:class:`Overloaded`:
    a full bulkhead, the throttle; the call was not made, the work is not at fault); so
    is an error ``not_ready(exc)`` calls true (the outbox's
    :class:`~brownout.outbox.SqlApplier`: a table is missing, the schema is not created
    yet); otherwise the adapter's error table (``adapter.errors``) decides, and for an
    object without one (a fake, a bare client, ``None``) any ``OSError`` (connection
    errors, timeouts, socket errors) is.
    """
    errors = getattr(adapter, "errors", None)

    def is_outage(exc: BaseException) -> bool:
        if isinstance(exc, BreakerOpen | Overloaded):
            return True
        if not_ready is not None and not_ready(exc):
            return True
        if errors is None:
            return isinstance(exc, OSError)
        if isinstance(exc, DependencyError):  # re-raised with a secret scrubbed: use its kind
            return any(rule.counts for rule in errors.rules if rule.kind == exc.kind)
        return bool(errors.counts(exc))

    return is_outage
