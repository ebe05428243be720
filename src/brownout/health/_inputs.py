"""Reading one component's inputs: its breaker, its adapter's figures, probe, problems.

The only place where the health package reads the live objects a
:class:`~brownout.health.Component` points to; what it returns is plain data
that :func:`~brownout.health.score_component` scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from brownout._state import State
from brownout.health._model import Component
from brownout.health._scoring import ComponentInputs

__all__ = ["read_inputs"]

logger = logging.getLogger("brownout.health")


def read_saturation(c: Component) -> float | None:
    """``c.saturation()``, or ``None`` (logged) when it raises or is not a number >= 0."""
    assert c.saturation is not None
    try:
        value = float(c.saturation())
    except Exception:
        logger.exception("degradation: saturation of %s could not be read", c.name)
        return None
    if not value >= 0 or value == float("inf"):  # also NaN
        logger.warning("degradation: saturation of %s is %r, not a number >= 0", c.name, value)
        return None
    return value


def read_inputs(
    c: Component, probe: bool | None, problems: Iterable[str]
) -> tuple[ComponentInputs, str | None]:
    """``c``'s inputs now, and its breaker's state value (``None`` without a breaker).

    ``probe`` is the last probe's result (``None``: never probed); ``problems``
    those the application reported (:meth:`DegradationManager.set_problem`).
    """
    success: float | None = None
    p95: float | None = None
    credentials: str | None = None
    state: State | None = None
    last_error: str | None = None
    if c.breaker is not None:
        state, calls, failures, last_error = c.breaker.summary()
        if calls and c.adapter is None:
            success = 1.0 - failures / calls
    if c.adapter is not None:
        stats = c.adapter.stats
        # the last 100 counted calls of the last minute: figures age after an outage
        success, p95, _ = stats.window(100)
        credentials = stats.credentials_problem
        last_error = stats.last_error or last_error
    saturation = None if c.saturation is None else read_saturation(c)
    return (
        ComponentInputs(
            state,
            success,
            p95,
            c.latency_target,
            probe,
            credentials,
            last_error,
            tuple(problems),
            saturation,
        ),
        state.value if state is not None else None,
    )
