"""brownout: circuit breakers and graceful, level-by-level degradation for Python services.

>>> from brownout import CircuitBreaker, BreakerConfig
>>> cb = CircuitBreaker("redis", BreakerConfig(consecutive_failures=5, open_for=20.0))
>>> cb.call(len, "abc")
3
"""

from brownout._breaker import BreakerSnapshot, BreakerTotals, CircuitBreaker, kill_switch_active
from brownout._clock import Clock, Duration
from brownout._config import BreakerConfig, ErrorMatcher, retry_after_attribute
from brownout._errors import BreakerOpen, BrownoutError
from brownout._events import CallEvent, Outcome, StateChange
from brownout._redact import redact
from brownout._registry import PRESETS, Registry
from brownout._state import TRANSITIONS, State

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerOpen",
    "BreakerSnapshot",
    "BreakerTotals",
    "BrownoutError",
    "CallEvent",
    "CircuitBreaker",
    "Clock",
    "Duration",
    "ErrorMatcher",
    "Outcome",
    "Registry",
    "State",
    "StateChange",
    "kill_switch_active",
    "redact",
    "retry_after_attribute",
]
