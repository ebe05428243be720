"""brownout: circuit breakers and graceful, level-by-level degradation for Python services.

>>> from brownout import CircuitBreaker, BreakerConfig
>>> cb = CircuitBreaker("redis", BreakerConfig(consecutive_failures=5, open_for=20.0))
>>> cb.call(len, "abc")
3
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from brownout._breaker import BreakerSnapshot, BreakerTotals, CircuitBreaker, kill_switch_active
from brownout._config import BreakerConfig, retry_after_attribute
from brownout._errors import BreakerOpen, BrownoutError, CallTimeout
from brownout._events import CallEvent, Outcome, StateChange
from brownout._redact import redact
from brownout._registry import PRESETS, Registry
from brownout._state import State

__all__ = [
    "PRESETS",
    "BreakerConfig",
    "BreakerOpen",
    "BreakerSnapshot",
    "BreakerTotals",
    "BrownoutError",
    "CallEvent",
    "CallTimeout",
    "CircuitBreaker",
    "Outcome",
    "Registry",
    "State",
    "StateChange",
    "kill_switch_active",
    "redact",
    "retry_after_attribute",
]

if TYPE_CHECKING:
    __version__: str

#: Names the root exported before issue 12 that are not its API, with what to use
#: instead. Still importable from here (with a DeprecationWarning) so that code
#: written against the old root keeps running.
_DEPRECATED = {
    "TRANSITIONS": (
        "brownout._state",
        "it is the breaker's internal whitelist of state changes (docs/breaker.md lists them)",
    ),
    "Clock": ("brownout._clock", "a clock is any Callable[[], float] returning monotonic seconds"),
    "Duration": ("brownout._clock", "a duration is float seconds or a datetime.timedelta"),
    "ErrorMatcher": (
        "brownout._config",
        "a matcher is an exception class or a Callable[[BaseException], bool]",
    ),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # Read from the installed distribution's metadata: pyproject.toml is the one
        # place the version is written. Lazily, and once: importlib.metadata takes
        # longer to import than the rest of the core.
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("brownout")
        except PackageNotFoundError:  # pragma: no cover - an uninstalled source tree
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    if name in _DEPRECATED:
        import importlib
        import warnings

        module, instead = _DEPRECATED[name]
        warnings.warn(
            f"brownout.{name} is deprecated and will be removed from the package root: {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'brownout' has no attribute {name!r}")
