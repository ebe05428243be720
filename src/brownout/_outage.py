"""Telling an outage from a caller error, for the components that keep work for later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brownout._adapter import DependencyError
from brownout._errors import BreakerOpen


def default_is_outage(adapter: Any) -> Callable[[BaseException], bool]:
    """Whether an error from ``adapter`` means "the dependency is failing" (keep the work
    and retry later) rather than the caller's mistake.

    ``BreakerOpen`` always is; otherwise the adapter's error table (``adapter.errors``)
    decides, and for an object without one (a fake, a bare client) any ``OSError``
    (connection errors, timeouts, socket errors) is.
    """
    errors = getattr(adapter, "errors", None)

    def is_outage(exc: BaseException) -> bool:
        if isinstance(exc, BreakerOpen):
            return True
        if errors is None:
            return isinstance(exc, OSError)
        if isinstance(exc, DependencyError):  # re-raised with a secret scrubbed: use its kind
            return any(rule.counts for rule in errors.rules if rule.kind == exc.kind)
        return bool(errors.counts(exc))

    return is_outage
