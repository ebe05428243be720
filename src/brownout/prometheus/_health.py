"""Degradation metrics, fed by a :class:`~brownout.health.DegradationManager`.

One :class:`HealthMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`
(created on first use through ``PrometheusMetrics.group``). It follows one
manager through one listener (``manager.add_listener``, removed on detach):
every :class:`~brownout.health.Evaluation` refreshes the gauges, and one that
carries a :class:`~brownout.health.Transition` counts it and, when the level is
back to ``OPTIMAL``, observes how long the incident lasted.

Level labels are the level *names* (``OPTIMAL`` ... ``EMERGENCY``), as in
``/health`` and the ``X-Degradation-Level`` header; ``<namespace>_degradation_level``
carries the level's number (0 best, 4 worst) for alerting with ``>=``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from brownout.health import DegradationManager, Evaluation, Transition

__all__ = ["RECOVERY_BUCKETS", "HealthMetrics"]

logger = logging.getLogger("brownout.prometheus")

#: Histogram buckets (seconds) for incident durations: 5 s to 4 h.
RECOVERY_BUCKETS: tuple[float, ...] = (
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
)

_OPTIMAL = 0


class HealthMetrics:
    """The degradation metric group of one ``PrometheusMetrics``; see the module docstring.

    It follows at most one manager at a time (the metrics carry no manager
    label): attaching the same manager again is a no-op, attaching another
    while one is attached raises ``ValueError``.
    """

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._lock = threading.Lock()
        self._manager: DegradationManager | None = None
        self._token: object | None = None  # identifies the current attachment
        self._incident_started: float | None = None  # monotonic, while not OPTIMAL
        self._components: set[str] = set()
        self._pairs: tuple[tuple[str, str], ...] = ()

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=namespace, registry=registry)

        self.level = gauge(
            "degradation_level",
            "Current degradation level: 0 OPTIMAL, 1 DEGRADED, 2 LIMITED, 3 MINIMAL, 4 EMERGENCY.",
        )
        self.level_state = gauge(
            "degradation_level_state",
            "Current degradation level: 1 for the current level's name, 0 for the others.",
            ("level",),
        )
        self.transitions = Counter(
            "degradation_transitions",
            "Degradation level changes.",
            ("from_level", "to_level"),
            namespace=namespace,
            registry=registry,
        )
        self.score = gauge("health_score", "System health score, 0 (down) to 100 (healthy).")
        self.component_score = gauge(
            "component_health_score",
            "Health score of one component, 0 (down) to 100 (healthy).",
            ("component",),
        )
        self.expected_load = gauge(
            "cascade_expected_extra_load",
            "Expected extra load (fraction) on target while source is down; 0 otherwise.",
            ("source", "target"),
        )
        self.recovery = Histogram(
            "recovery_seconds",
            "Duration of degradation incidents: from leaving OPTIMAL to being back at OPTIMAL.",
            namespace=namespace,
            registry=registry,
            buckets=RECOVERY_BUCKETS,
        )
        self.feature = gauge(
            "feature_enabled",
            "Whether an optional feature is on (1) or off (0) at the current level.",
            ("feature",),
        )

    # ---------------------------------------------------------------- attach

    def attach_manager(self, manager: DegradationManager) -> Callable[[], None]:
        """Feed the metrics from ``manager``; returns a function that detaches it."""
        from brownout.health import Level

        token = object()
        with self._lock:
            if self._manager is manager:
                return _noop
            if self._manager is not None:
                raise ValueError(
                    "PrometheusMetrics already follows another DegradationManager; "
                    "detach it first or use a second PrometheusMetrics (another registry "
                    "or namespace)"
                )
            self._manager = manager
            self._token = token
            self._components = {c.name for c in manager.components if c.configured}
            self._pairs = tuple(
                sorted(
                    pair
                    for pair in manager.impact
                    if pair[0] in self._components and pair[1] in self._components
                )
            )
            self._incident_started = _incident_start(manager)

        def active() -> bool:
            return self._token is token

        def on_evaluation(evaluation: Evaluation) -> None:
            if active():
                self._update(manager, evaluation)
                if evaluation.transition is not None:
                    self._transition(evaluation.transition)

        # one listener for both (the manager's one shape): detach removes it
        unsubscribe = manager.add_listener(on_evaluation)
        for level in Level:
            self.level_state.labels(level.name)
        evaluation = manager.last_evaluation
        if evaluation is not None:
            self._update(manager, evaluation)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                if self._token is token:
                    self._token = None
                    self._manager = None
                    self._incident_started = None

        return detach

    # ------------------------------------------------------------- listeners

    def _update(self, manager: DegradationManager, evaluation: Evaluation) -> None:
        from brownout.health import Level

        level = evaluation.level
        self.level.set(int(level))
        for each in Level:
            self.level_state.labels(each.name).set(1.0 if each is level else 0.0)
        self.score.set(evaluation.score)
        for view in evaluation.components:
            if view.configured:
                self.component_score.labels(view.name).set(view.score)
        impact = manager.impact
        for source, target in self._pairs:
            load = impact[(source, target)] if source in evaluation.down else 0.0
            self.expected_load.labels(source, target).set(load)
        for feature in manager.features:
            try:
                on = manager.enabled(feature.name)
            except KeyError:  # not evaluated yet
                continue
            self.feature.labels(feature.name).set(1.0 if on else 0.0)

    def _transition(self, transition: Transition) -> None:
        frm, to = transition.from_level, transition.to_level
        self.transitions.labels(frm.name, to.name).inc()
        with self._lock:
            if int(frm) == _OPTIMAL:
                self._incident_started = transition.monotonic
                return
            if int(to) != _OPTIMAL:
                return
            started, self._incident_started = self._incident_started, None
        if started is not None:
            self.recovery.observe(max(0.0, transition.monotonic - started))


def _incident_start(manager: DegradationManager) -> float | None:
    """When the current incident began (monotonic), from the history; None at OPTIMAL."""
    if int(manager.level) == _OPTIMAL:
        return None
    for transition in reversed(manager.history):
        if int(transition.from_level) == _OPTIMAL:
            return transition.monotonic
    return None  # the start fell out of the history: this incident is not observed


def _noop() -> None:
    return None
