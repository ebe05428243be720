"""Events a breaker publishes to its listeners."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from brownout._state import State


class Outcome(enum.StrEnum):
    """How one guarded call ended, as the breaker counted it."""

    SUCCESS = "success"  # returned (or raised an error that is not recorded)
    FAILURE = "failure"  # raised a recorded error, or returned a failure result
    IGNORED = "ignored"  # raised an ignored error or was cancelled: counted as nothing
    REJECTED = "rejected"  # not let through: the breaker was open


class CallEvent(NamedTuple):
    """One guarded call's outcome.

    ``duration`` is in seconds (0.0 for rejections); ``slow`` is true when the
    call took at least the configured ``slow_call_duration``; ``error`` is the
    exception the call raised, if any. (A named tuple: it is built once per
    call while listeners are attached, and tuples are the cheapest immutable
    record Python has.)
    """

    breaker: str
    outcome: Outcome
    duration: float
    slow: bool
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A breaker moved from one state to another.

    ``reason`` says why in words a person reads in a log ("failure rate 0.60
    >= 0.50 over 20 calls"); ``trigger`` is a short stable tag
    ("consecutive_failures", "failure_rate", "slow_call_rate", "retry_after",
    "open_for_elapsed", "probes_succeeded", "probe_failed",
    "half_open_timeout", "manual"); ``last_error`` is the redacted text of the
    last recorded error, if any.
    """

    breaker: str
    from_state: State
    to_state: State
    reason: str
    trigger: str
    at: float
    open_for: float | None = None
    last_error: str | None = None
