"""Events a breaker publishes to its listeners, and the one listener shape of brownout.

The convention
--------------
Everything in brownout that publishes events takes listeners the same way::

    unsubscribe = source.add_listener(callback)   # callback(event) -> ignored
    ...
    unsubscribe()                                 # idempotent; later events are not seen

* ``callback`` takes **one** argument, an **immutable, typed** event: a frozen
  dataclass, or a ``NamedTuple`` where the event is built on a hot path
  (:class:`CallEvent`, the adapters' ``OperationEvent``). Its return value is
  ignored (an async publisher, the degradation manager, schedules an awaitable).
* ``add_listener`` returns a zero-argument callable that removes the listener,
  never ``None``; a non-callable is refused with a ``TypeError`` at once.
* Listeners run after the publisher's locks are released, in the thread or task
  that caused the event. One that raises is logged and affects neither the
  publisher nor the other listeners.
* A publisher of several kinds of events where listening to one kind costs what
  listening to another does not names the kind by keyword, with the same return:
  ``CircuitBreaker.add_listener(on_state_change=..., on_call=...)`` (a call
  listener takes the breaker off its lock-free fast path; a state listener does
  not), and ``Registry.add_listener`` likewise for all its breakers, present and
  future.
* Event classes live beside their publisher; this module holds the ones several
  modules share (the breaker's events, read by the registry, the manager, the
  journals and the metrics backends).
* Metrics backends follow the same rule one level up:
  ``backend.attach(target) -> detach`` (``brownout.prometheus``, ``brownout.otel``).

Who publishes what:

=============================================  ==========================================
``CircuitBreaker.add_listener`` / ``Registry``  :class:`StateChange`, :class:`CallEvent`
``Adapter.add_listener`` (redis, s3, sql, ...)  ``brownout.adapter.OperationEvent``
``DegradationManager.add_listener``             ``Evaluation`` (``.transition`` when the
                                                level changed; ``on_transition`` is an alias)
``Outbox`` / ``Spool`` / ``CacheCoherence``     their journal events
=============================================  ==========================================
"""

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
