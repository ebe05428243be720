"""The manager's events: what one evaluation saw and decided (frozen, typed).

:class:`Evaluation` is what every listener of a
:class:`~brownout.health.DegradationManager` gets; its ``transition`` is set when
that evaluation changed the level; :class:`ComponentView` is one component in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brownout.health._model import Level

__all__ = ["ComponentView", "Evaluation", "Transition"]


@dataclass(frozen=True, slots=True)
class Transition:
    """The level changed."""

    from_level: Level
    to_level: Level
    score: float
    reason: str
    at: float  # wall-clock seconds since the epoch
    monotonic: float
    root_causes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_level.name,
            "to": self.to_level.name,
            "score": self.score,
            "reason": self.reason,
            "at": self.at,
            "root_causes": list(self.root_causes),
        }


@dataclass(frozen=True, slots=True)
class ComponentView:
    """One component at one evaluation."""

    name: str
    configured: bool
    weight: float
    score: float
    status: str
    down: bool
    why: tuple[str, ...]
    breaker_state: str | None
    down_since: float | None  # monotonic
    root_cause: str | None  # set when this component's failure is a cascade of another's

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "configured": self.configured,
            "weight": self.weight,
            "score": self.score,
            "status": self.status,
            "down": self.down,
            "why": list(self.why),
            "breaker_state": self.breaker_state,
            "cascade_of": self.root_cause,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything one evaluation computed, and the decision it took: the manager's event.

    ``transition`` is set when this evaluation changed the level.
    """

    at: float  # monotonic
    trigger: str
    score: float
    score_level: Level
    rule_level: Level
    rule: str | None
    target: Level
    level: Level
    decision: str
    components: tuple[ComponentView, ...]
    down: frozenset[str]
    pending_degrade: int
    level_score: float  # the score the level is read from (see LevelRule.replaces_score)
    transition: Transition | None = None

    def component(self, name: str) -> ComponentView:
        for view in self.components:
            if view.name == name:
                return view
        raise KeyError(name)
