"""Breaker states and the whitelist of transitions between them."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """The state of a circuit breaker.

    ``CLOSED`` lets calls through and counts them; ``OPEN`` rejects them until
    the break is over; ``HALF_OPEN`` lets a fixed number of probes through;
    ``FORCED_OPEN`` (manual) rejects everything until reset; ``DISABLED``
    (manual) lets everything through and counts nothing.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


#: Every transition a breaker may make; anything else is a bug and raises.
TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.CLOSED, State.OPEN),  # a trip condition held
        (State.OPEN, State.HALF_OPEN),  # the break is over (or a probe succeeded)
        (State.HALF_OPEN, State.CLOSED),  # every probe succeeded
        (State.HALF_OPEN, State.OPEN),  # a probe failed, or half-open waited too long
        # a timed manual open (``force_open(duration=...)``) from the manual states
        (State.FORCED_OPEN, State.OPEN),
        (State.DISABLED, State.OPEN),
        # manual control, from anywhere to anywhere else
        *(
            (a, b)
            for a in State
            for b in (State.CLOSED, State.FORCED_OPEN, State.DISABLED)
            if a is not b
        ),
    }
)
