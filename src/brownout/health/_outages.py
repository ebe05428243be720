"""Outage history: when each component went down, root causes, incidents and recovery prediction.

No clock of its own: every method takes the caller's monotonic ``now``
(wall time is read only for the ``at`` of a recorded pattern, shown to people).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from brownout.health._model import Level

__all__ = ["OutageHistory"]


@dataclass
class _Incident:
    """From leaving OPTIMAL to coming back to it."""

    started: float
    worst: Level
    root_causes: set[str] = field(default_factory=set)


class OutageHistory:
    """Which components are down since when, what caused what, and how long recoveries took.

    ``depends(dependant, source)`` says whether ``dependant`` relies on ``source``: a
    dependant that goes down within ``window`` seconds after its source is recorded as
    a cascade of that source (root-cause attribution).

    >>> h = OutageHistory(lambda dependant, source: (source, dependant) == ("cache", "database"))
    >>> h.track(frozenset({"cache"}), now=0.0)
    >>> h.track(frozenset({"cache", "database"}), now=2.0)
    >>> h.cause("database"), h.roots()
    ('cache', ('cache',))
    >>> h.track(frozenset(), now=30.0)
    >>> h.durations("cache"), h.durations("database")
    ([30.0], [28.0])
    """

    def __init__(
        self,
        depends: Callable[[str, str], bool],
        *,
        window: float = 10.0,
        keep_outages: int = 20,
        keep_patterns: int = 20,
        keep_recoveries: int = 50,
    ) -> None:
        self._depends = depends
        self._window = window
        self._keep = keep_outages
        self._down_since: dict[str, float] = {}
        self._cause: dict[str, str] = {}
        self._outages: dict[str, list[float]] = {}
        self._patterns: deque[dict[str, Any]] = deque(maxlen=keep_patterns)
        self._incident: _Incident | None = None
        self._recoveries: deque[tuple[float, Level, frozenset[str]]] = deque(maxlen=keep_recoveries)

    # ------------------------------------------------------------ components

    def track(self, down: frozenset[str], *, now: float) -> None:
        """Record which components are down at ``now``: outages start and end here."""
        for name in down:
            if name in self._down_since:
                continue
            self._down_since[name] = now
            causes = []
            for other, since in self._down_since.items():
                if other == name or now - since > self._window:
                    continue
                if self._depends(name, other):
                    causes.append((since, self._cause.get(other, other)))
            if causes:
                self._cause[name] = min(causes)[1]
            earlier = sorted(
                (since, other)
                for other, since in self._down_since.items()
                if other != name and now - since <= self._window
            )
            if earlier:
                self._patterns.append(
                    {
                        "order": [o for _, o in earlier] + [name],
                        "offsets_s": [round(s - earlier[0][0], 3) for s, _ in earlier]
                        + [round(now - earlier[0][0], 3)],
                        "at": time.time(),
                    }
                )
        for name in list(self._down_since):
            if name not in down:
                since = self._down_since.pop(name)
                self._cause.pop(name, None)
                self._outages.setdefault(name, []).append(now - since)
                del self._outages[name][: -self._keep]

    def down_since(self, name: str) -> float | None:
        return self._down_since.get(name)

    @property
    def down_since_map(self) -> Mapping[str, float]:
        """Component -> when it went down, for the components down now (do not modify)."""
        return self._down_since

    @property
    def cause_map(self) -> Mapping[str, str]:
        """Component -> its root cause, for the cascades down now (do not modify)."""
        return self._cause

    def cause(self, name: str) -> str | None:
        """The root cause of ``name``'s outage when it is a cascade of another's."""
        return self._cause.get(name)

    def roots(self) -> tuple[str, ...]:
        """The components down now on their own account (not as a cascade), sorted."""
        return tuple(
            sorted({self._cause.get(n, n) for n in self._down_since if n not in self._cause})
        )

    def durations(self, name: str) -> list[float]:
        """Durations (s) of ``name``'s past outages, most recent last."""
        return list(self._outages.get(name, []))

    @property
    def patterns(self) -> list[dict[str, Any]]:
        """Recent failure orders: components that went down within the window of each other."""
        return list(self._patterns)

    # ------------------------------------------------------------- incidents

    def level_changed(self, frm: Level, to: Level, roots: Iterable[str], *, now: float) -> None:
        """An incident runs from leaving OPTIMAL to coming back; its duration feeds predictions."""
        if frm is Level.OPTIMAL:
            self._incident = _Incident(now, to, set(roots))
        elif self._incident is not None:
            self._incident.worst = max(self._incident.worst, to)
            self._incident.root_causes.update(roots)
        if to is Level.OPTIMAL and self._incident is not None:
            incident = self._incident
            self._recoveries.append(
                (now - incident.started, incident.worst, frozenset(incident.root_causes))
            )
            self._incident = None

    def predict_recovery(self, *, now: float) -> float | None:
        """Seconds until OPTIMAL: the median of past recoveries with the same root cause, else
        the same worst level, else all, less the time elapsed; ``None`` without history."""
        incident = self._incident
        if incident is None or not self._recoveries:
            return None
        elapsed = now - incident.started
        same_cause = [d for d, _, c in self._recoveries if c & incident.root_causes]
        same_level = [d for d, w, _ in self._recoveries if w == incident.worst]
        pool = same_cause or same_level or [d for d, _, _ in self._recoveries]
        return max(0.0, statistics.median(pool) - elapsed)


def impact_depends(
    impact: Mapping[tuple[str, str], float], depends_on: Mapping[str, frozenset[str]]
) -> Callable[[str, str], bool]:
    """``depends(dependant, source)`` from the impact table and the components' ``depends_on``."""

    def depends(dependant: str, source: str) -> bool:
        if impact.get((source, dependant), 0.0) > 0:
            return True
        return source in depends_on.get(dependant, frozenset())

    return depends
