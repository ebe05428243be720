"""Feature gates: which features are on at a level, given each component's view (pure).

A feature is on while every component it requires is configured, neither down
nor "recovering", and the level is no worse than the feature's ``worst_level``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from brownout.health._events import ComponentView
from brownout.health._model import Feature, Level

__all__ = ["FeatureGates"]


class FeatureGates:
    """The features' on/off and why, recomputed only when an input that matters changed.

    Features read only the level and each component's availability: most
    evaluations (heartbeats, a breaker's half-open -> closed) change neither, so
    :meth:`update` returns at once for them.
    """

    __slots__ = ("_features", "_key", "enabled", "reasons")

    def __init__(self, features: Iterable[Feature]) -> None:
        self._features = tuple((f, tuple(sorted(f.requires))) for f in features)
        self._key: tuple[Level, list[tuple[bool, bool, bool]]] | None = None
        #: name -> on; name -> why, in words ("available", "cache down", ...)
        self.enabled: dict[str, bool] = {}
        self.reasons: dict[str, str] = {}

    def update(self, level: Level, views: Sequence[ComponentView]) -> None:
        key = (level, [(v.configured, v.down, v.status == "recovering") for v in views])
        if key == self._key:
            return
        self._key = key
        by_name = {v.name: v for v in views}
        for feature, requires in self._features:
            reason = ""
            on = True
            for req in requires:
                view = by_name.get(req)
                if view is None or not view.configured:
                    on, reason = False, f"{req} not configured"
                    break
                if view.down or view.status == "recovering":
                    on, reason = False, f"{req} {'down' if view.down else 'recovering'}"
                    break
            if on and level > feature.worst_level:
                on = False
                reason = f"level {level.name} is worse than {feature.worst_level.name}"
            self.enabled[feature.name] = on
            self.reasons[feature.name] = reason or "available"
