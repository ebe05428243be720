"""``explain()``: why the level is what it is, as a JSON-ready document (pure).

The manager hands in its last :class:`~brownout.health._events.Evaluation` and the
configuration that shaped it; this module only puts them in words and numbers:
inputs, the deciding rule or threshold, hysteresis, cascades, features, settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from brownout.health._events import Evaluation, Transition
from brownout.health._model import Level, LevelSettings
from brownout.health._policy import Hysteresis

__all__ = ["expected_cascade", "explain"]


def expected_cascade(
    evaluation: Evaluation, impact: Mapping[tuple[str, str], float]
) -> list[dict[str, Any]]:
    """The extra load expected on each configured dependant of a component that is down."""
    configured = {v.name for v in evaluation.components if v.configured}
    return [
        {
            "source": src,
            "target": dst,
            "expected_extra_load": frac,
            "text": f"{src} down: expect +{frac:.0%} load on {dst}",
        }
        for (src, dst), frac in sorted(impact.items())
        if src in evaluation.down and dst in configured
    ]


def explain(
    evaluation: Evaluation,
    *,
    impact: Mapping[tuple[str, str], float],
    thresholds: Sequence[float],
    hysteresis: Hysteresis,
    level_held: float,
    pinned: tuple[Level, float, str] | None,
    patterns: list[dict[str, Any]],
    features: Iterable[tuple[str, bool, str]],
    settings: LevelSettings,
    recent: Sequence[Transition],
    predicted_recovery: float | None,
) -> dict[str, Any]:
    """The document :meth:`DegradationManager.explain` returns (see ``docs/degradation.md``).

    ``features`` are (name, enabled, reason); ``recent`` the last transitions,
    oldest first; ``level_held`` the seconds the level has held.
    """
    return {
        "level": evaluation.level.name,
        "score": evaluation.score,
        "level_score": evaluation.level_score,
        "decision": evaluation.decision,
        "trigger": evaluation.trigger,
        "score_level": evaluation.score_level.name,
        "rule_level": evaluation.rule_level.name,
        "rule": evaluation.rule,
        "thresholds": dict(zip([lvl.name for lvl in Level], thresholds, strict=False)),
        "hysteresis": {
            "pending_bad_evaluations": evaluation.pending_degrade,
            "degrade_after": hysteresis.degrade_after,
            "margin": hysteresis.margin,
            "dwell_s": hysteresis.dwell,
            "level_held_s": round(level_held, 3),
            "recovery": hysteresis.recovery,
        },
        "pinned": None
        if pinned is None
        else {"level": pinned[0].name, "seconds_left": pinned[1], "reason": pinned[2]},
        "components": [v.to_dict() for v in evaluation.components],
        "down": sorted(evaluation.down),
        "cascade": expected_cascade(evaluation, impact),
        "root_causes": [
            {"component": v.name, "cascade_of": v.root_cause}
            for v in evaluation.components
            if v.root_cause is not None
        ],
        "patterns": patterns,
        "features": {name: {"enabled": on, "reason": why} for name, on, why in features},
        "settings": settings.to_dict(),
        "recent_transitions": [t.to_dict() for t in recent],
        "predicted_recovery_s": predicted_recovery,
    }
