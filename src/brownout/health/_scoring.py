"""Component scores: 0-100 from breaker state, success rate, latency, probe and credentials.

Pure functions of a :class:`ComponentInputs` value, so the rules can be read,
tested and explained in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from brownout._state import State

__all__ = ["ComponentInputs", "ComponentScore", "score_component"]

#: A half-open component scores at most this: it is being tried, not trusted.
HALF_OPEN_CAP = 50.0
#: A component whose last probe failed scores at most this.
PROBE_FAILED_CAP = 40.0
#: A component with a reported problem (``DegradationManager.set_problem``) scores at most this.
PROBLEM_CAP = 50.0
#: Each point of failure rate costs this many points (10 % failures => -30).
FAILURE_RATE_WEIGHT = 3.0
#: p95 latency may cost at most this many points (at 4x the target or slower).
LATENCY_MAX_PENALTY = 50.0
#: Saturation (e.g. a bulkhead's permits in use / limit) costs nothing up to this ...
SATURATION_KNEE = 0.8
#: ... and then up to this many points, linearly, at 1.0 (full) or above.
SATURATION_MAX_PENALTY = 40.0


@dataclass(frozen=True, slots=True)
class ComponentInputs:
    """What a component's score is computed from."""

    state: State | None  # breaker state, None without a breaker
    success_rate: float | None  # recent, None without samples
    p95: float | None  # seconds, None without samples
    latency_target: float
    probe_ok: bool | None  # last probe, None if never probed
    credentials_problem: str | None = None
    last_error: str | None = None  # redacted, shown in the explanation
    problems: tuple[str, ...] = ()  # reported by the application (work it cannot finish)
    #: how full the component's admission is, 0..1 (a bulkhead's in use / limit; above 1
    #: counts as 1); None: not reported. A saturated component answers, so it is never
    #: down for it, but it is close to queueing: it costs up to SATURATION_MAX_PENALTY.
    saturation: float | None = None


@dataclass(frozen=True, slots=True)
class ComponentScore:
    """A component's score, whether it is down, and why, in words."""

    score: float
    status: str  # "up", "degraded", "recovering", "down", "disabled"
    down: bool
    why: tuple[str, ...] = field(default_factory=tuple)


def score_component(inputs: ComponentInputs) -> ComponentScore:
    """Score one component.

    >>> from brownout import State
    >>> score_component(ComponentInputs(State.OPEN, 1.0, 0.01, 0.5, True)).score
    0.0
    >>> score_component(ComponentInputs(State.CLOSED, 0.9, 0.01, 0.5, True)).score
    70.0
    >>> score_component(ComponentInputs(State.CLOSED, 1.0, 0.01, 0.5, True, saturation=0.95)).why
    ('saturation 95% (-30)',)
    """
    if inputs.credentials_problem:
        return ComponentScore(
            0.0, "down", True, (f"credentials rejected: {inputs.credentials_problem}",)
        )
    state = inputs.state
    if state is State.OPEN or state is State.FORCED_OPEN:
        detail = f": {inputs.last_error}" if inputs.last_error else ""
        return ComponentScore(0.0, "down", True, (f"breaker {state.value}{detail}",))
    why: list[str] = []
    score = 100.0
    if inputs.success_rate is not None and inputs.success_rate < 1.0:
        penalty = min(100.0, (1.0 - inputs.success_rate) * 100.0 * FAILURE_RATE_WEIGHT)
        score -= penalty
        why.append(f"success rate {inputs.success_rate:.0%} (-{penalty:.0f})")
    if inputs.p95 is not None and inputs.p95 > inputs.latency_target:
        ratio = inputs.p95 / inputs.latency_target
        penalty = min(LATENCY_MAX_PENALTY, (ratio - 1.0) / 3.0 * LATENCY_MAX_PENALTY)
        score -= penalty
        why.append(
            f"p95 {inputs.p95 * 1000:.0f} ms over target {inputs.latency_target * 1000:.0f} ms "
            f"(-{penalty:.0f})"
        )
    saturation = inputs.saturation
    if saturation is not None and saturation > SATURATION_KNEE:
        full = min(1.0, saturation)
        penalty = (full - SATURATION_KNEE) / (1.0 - SATURATION_KNEE) * SATURATION_MAX_PENALTY
        score -= penalty
        why.append(f"saturation {saturation:.0%} (-{penalty:.0f})")
    if inputs.probe_ok is False and score > PROBE_FAILED_CAP:
        score = PROBE_FAILED_CAP
        why.append(f"last probe failed (capped at {PROBE_FAILED_CAP:.0f})")
    for problem in inputs.problems:
        if score > PROBLEM_CAP:
            score = PROBLEM_CAP
        why.append(f"{problem} (capped at {PROBLEM_CAP:.0f})")
    status = "up"
    if state is State.HALF_OPEN:
        status = "recovering"
        if score > HALF_OPEN_CAP:
            score = HALF_OPEN_CAP
        why.append(f"breaker half-open: probing (capped at {HALF_OPEN_CAP:.0f})")
    elif state is State.DISABLED:
        status = "disabled"
        why.append("breaker disabled: not guarded")
    score = max(0.0, round(score, 2))
    if status == "up" and score < 90:
        status = "degraded"
    if not why:
        why.append("healthy")
    return ComponentScore(score, status, False, tuple(why))
