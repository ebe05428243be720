"""The degradation manager: component scores -> one score -> one level -> features and settings.

The manager gathers inputs and keeps state; the jobs live beside it:

* ``_inputs``: reading a component's breaker, adapter figures, probe and problems;
* ``_scoring``: one component's score (pure);
* ``_policy``: the level policy, score and rules -> target -> level with hysteresis (pure);
* ``_features``: the feature gates at a level (pure);
* ``_outages``: outage history, root causes, incidents, recovery prediction;
* ``_probing``: the health probes and the heartbeat task;
* ``_events``: the frozen events (``Evaluation``, ``Transition``, ``ComponentView``);
* ``_listeners``: who hears about each evaluation, sync or async;
* ``_explain``: ``explain()``'s document (pure);
* ``_checks``: validation of the arguments.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from brownout._clock import Clock, monotonic
from brownout._errors import UnknownFeature
from brownout._events import StateChange
from brownout._lifetime import AsyncResource, SyncResource
from brownout._state import State
from brownout.health._checks import (
    check_backoff,
    check_components,
    check_degrade_after,
    check_features,
    check_impact,
    check_levels_covered,
    check_non_negative,
    check_positive,
    check_recovery,
    check_rules,
    check_thresholds,
)
from brownout.health._events import ComponentView, Evaluation, Transition
from brownout.health._explain import explain
from brownout.health._features import FeatureGates
from brownout.health._inputs import read_inputs
from brownout.health._listeners import Listener, Listeners, OnTransition, TransitionHandler
from brownout.health._model import (
    DEFAULT_IMPACT,
    DEFAULT_RULES,
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    Component,
    Feature,
    Level,
    LevelRule,
    LevelSettings,
)
from brownout.health._outages import OutageHistory, impact_depends
from brownout.health._policy import (
    Hysteresis,
    LevelState,
    PolicyInput,
    decide,
    target_level,
)
from brownout.health._probing import HealthProbeFailed, Prober
from brownout.health._scoring import ComponentScore, score_component

__all__ = [
    "ComponentView",
    "DegradationManager",
    "Evaluation",
    "HealthProbeFailed",
    "Transition",
    "UnknownFeature",
]

logger = logging.getLogger("brownout.health")

#: The keys :meth:`DegradationManager.explain` has of its own (a section cannot take one).
_EXPLAIN_KEYS = frozenset(
    {
        "level", "score", "level_score", "decision", "trigger", "score_level", "rule_level",
        "rule", "thresholds", "hysteresis", "pinned", "components", "down", "cascade",
        "root_causes", "patterns", "features", "settings", "recent_transitions",
        "predicted_recovery_s",
    }
)  # fmt: skip

EvaluationListener = Listener  # the name before issue 12


class DegradationManager(SyncResource, AsyncResource):
    """Turns the health of an application's dependencies into one level, features and settings.

    >>> from brownout import CircuitBreaker
    >>> from brownout.testing import FakeClock
    >>> clock = FakeClock()
    >>> db, cache = CircuitBreaker("database", clock=clock), CircuitBreaker("cache", clock=clock)
    >>> manager = DegradationManager(
    ...     [
    ...         Component("database", breaker=db),  # weight 0.40 by default
    ...         Component("cache", breaker=cache),  # 0.20
    ...         Component("openai"),  # 0.20: no breaker, no probe: always healthy here
    ...         Component("s3"),  # 0.10
    ...     ],
    ...     features=[Feature("cache_read", requires={"cache"}, worst_level=Level.DEGRADED)],
    ...     clock=clock,
    ... )
    >>> manager.level, manager.enabled("cache_read")
    (<Level.OPTIMAL: 0>, True)
    >>> cache.force_open()
    >>> manager.level, manager.enabled("cache_read")
    (<Level.DEGRADED: 1>, False)

    It closes as every brownout resource does: ``async with manager:`` starts the
    heartbeat and probes and, on exit, :meth:`aclose` stops them and detaches the
    manager from its breakers; a manager that is never started needs only
    :meth:`close` (or ``with``), which detaches it.

    >>> with DegradationManager([Component("database", breaker=db)], clock=clock) as other:
    ...     other.level
    <Level.OPTIMAL: 0>

    See ``docs/degradation.md`` for the model and every default.
    """

    def __init__(
        self,
        components: Iterable[Component],
        features: Iterable[Feature] | None = None,
        *,
        rules: Sequence[LevelRule] = DEFAULT_RULES,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        impact: Mapping[tuple[str, str], float] = DEFAULT_IMPACT,
        settings: Mapping[Level, LevelSettings] = DEFAULT_SETTINGS,
        hysteresis_margin: float = 2.0,
        dwell: float = 10.0,
        degrade_after: int = 3,
        recovery: str = "step",
        cascade_window: float = 10.0,
        heartbeat: float = 30.0,
        probe_timeout: float = 2.0,
        probe_backoff: tuple[float, float] = (1.0, 60.0),
        history_size: int = 100,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._components = check_components(components)
        self._feature_list = check_features(features, {c.name for c in self._components})
        self._gates = FeatureGates(self._feature_list)
        self._thresholds = check_thresholds(thresholds)
        self._rules = check_rules(rules)
        self._impact = check_impact(impact)
        check_levels_covered(settings)
        self._settings = dict(settings)
        margin = check_non_negative("hysteresis_margin", hysteresis_margin)
        dwell = check_non_negative("dwell", dwell)
        window = check_non_negative("cascade_window", cascade_window)
        heartbeat = check_positive("heartbeat", heartbeat)
        probe_timeout = check_positive("probe_timeout", probe_timeout)
        self._hysteresis = Hysteresis(
            margin, dwell, check_degrade_after(degrade_after), check_recovery(recovery)
        )
        backoff = check_backoff(probe_backoff)
        self._clock: Clock = clock or monotonic

        self._lock = threading.Lock()
        self._pending: deque[tuple[str, bool]] = deque()
        self._state = LevelState(Level.OPTIMAL, self._clock())
        self._pin: tuple[Level, float, str] | None = None
        self._holds: dict[str, str] = {}
        self._problems: dict[str, dict[str, str]] = {}
        self._outages = OutageHistory(
            impact_depends(self._impact, {c.name: c.depends_on for c in self._components}),
            window=window,
        )
        self._history: deque[Transition] = deque(maxlen=history_size)
        self._prober = Prober(
            self._components,
            self.evaluate,
            clock=self._clock,
            heartbeat=heartbeat,
            timeout=probe_timeout,
            backoff=backoff,
            rng=rng or random.Random(),
        )
        self._probe_ok = self._prober.last_ok_map
        self._enabled = self._gates.enabled
        self._feature_reason = self._gates.reasons
        self._listeners = Listeners()
        self._last: Evaluation | None = None
        self._sections: dict[str, Callable[[], Any]] = {}
        # filled under the lock, emptied (logs, listeners) outside it
        self._queued: deque[Evaluation] = deque()
        self._unsubscribe: list[Callable[[], None]] = []
        for c in self._components:
            if c.breaker is not None and c.configured:
                self._unsubscribe.append(
                    c.breaker.add_listener(on_state_change=self._on_breaker_change)
                )
        self.evaluate("start")

    @property
    def heartbeat(self) -> float:
        """Seconds between two heartbeats (evaluations and healthy probes)."""
        return self._prober.heartbeat

    @heartbeat.setter
    def heartbeat(self, value: float) -> None:
        self._prober.heartbeat = check_positive("heartbeat", value)

    # ----------------------------------------------------------------- views

    @property
    def level(self) -> Level:
        return self._state.level

    @property
    def score(self) -> float:
        return self._last.score if self._last is not None else 100.0

    @property
    def settings(self) -> LevelSettings:
        """This level's resource settings: pool and batch sizes, cache TTL, timeout, retries."""
        return self._settings[self._state.level]

    @property
    def components(self) -> tuple[Component, ...]:
        return self._components

    @property
    def features(self) -> tuple[Feature, ...]:
        return self._feature_list

    @property
    def last_evaluation(self) -> Evaluation | None:
        return self._last

    @property
    def history(self) -> list[Transition]:
        return list(self._history)

    def settings_for(self, level: Level) -> LevelSettings:
        return self._settings[level]

    def enabled(self, name: str) -> bool:
        """Whether a feature is on now. Unknown names raise :class:`UnknownFeature`."""
        try:
            return self._enabled[name]
        except KeyError:
            raise UnknownFeature(
                f"unknown feature {name!r}; known: {sorted(self._enabled)}"
            ) from None

    def feature_reason(self, name: str) -> str:
        """Why a feature is on or off, in words."""
        self.enabled(name)
        return self._feature_reason[name]

    def component(self, name: str) -> Component:
        for c in self._components:
            if c.name == name:
                return c
        raise KeyError(f"unknown component {name!r}")

    def retry_after(self) -> float:
        """A sensible ``Retry-After`` (seconds) for answers refused at this level."""
        waits = []
        for c in self._components:
            if c.breaker is not None and c.configured:
                snap = c.breaker.snapshot()
                if snap.retry_after is not None:
                    waits.append(snap.retry_after)
        if waits:
            return max(1.0, min(waits))
        predicted = self.predict_recovery()
        return max(1.0, min(predicted, 60.0)) if predicted is not None else 5.0

    # ------------------------------------------------------------- listeners

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(evaluation)`` after every :class:`Evaluation`; returns an unsubscribe.

        The one listener shape of the manager (as the breaker's and the adapters'):
        one typed frozen event; ``evaluation.transition`` is set when the level
        changed. The callback runs outside the manager's lock, after the
        transition is logged; it may be async (its awaitable is scheduled on the
        running loop, else on the loop the manager was started on). One that
        raises is logged; it never stops the evaluation or the other listeners.

        >>> from brownout.health import Component, DegradationManager, Level
        >>> manager = DegradationManager([Component("database"), Component("cache")])
        >>> seen = []
        >>> unsubscribe = manager.add_listener(
        ...     lambda e: seen.append(e.transition.to_level.name) if e.transition else None
        ... )
        >>> manager.pin(Level.MINIMAL, duration=60)
        >>> unsubscribe()
        >>> manager.unpin()
        >>> seen
        ['MINIMAL']
        """
        return self._listeners.add(callback)

    def add_section(self, name: str, source: Callable[[], Any]) -> Callable[[], None]:
        """Show ``source()`` under ``name`` in :meth:`explain` (e.g. a shedder's or a
        bulkhead's ``snapshot``); returns a function that removes it.

        ``source`` is called at every ``explain()``; one that raises shows as
        ``{"error": "<exception type>"}`` (never its text).

        >>> from brownout.health import Component, DegradationManager
        >>> manager = DegradationManager([Component("database")])
        >>> remove = manager.add_section("shedding", lambda: {"in_flight": 3})
        >>> manager.explain()["shedding"]
        {'in_flight': 3}
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"add_section name must be an identifier, got {name!r}")
        if name in _EXPLAIN_KEYS or name in self._sections:
            raise ValueError(f"add_section: explain() already has a {name!r} section")
        if not callable(source):
            raise TypeError(f"add_section({name!r}) needs a callable, got {source!r}")
        self._sections[name] = source

        def remove() -> None:
            if self._sections.get(name) is source:
                del self._sections[name]

        return remove

    def on_transition(
        self, handler: TransitionHandler, *, level: Level | None = None
    ) -> Callable[[], None]:
        """Call ``handler(transition)`` (sync or async) on every change, or on entering ``level``.

        A thin alias of :meth:`add_listener` that passes on only the evaluations that
        changed the level, and their :class:`Transition`; returns the unsubscribe.
        A handler that raises is logged; it never stops the transition.
        """
        if not callable(handler):
            raise TypeError("on_transition needs a callable")
        return self.add_listener(OnTransition(handler, level))

    def _on_breaker_change(self, event: StateChange) -> None:
        self._pending.append(
            (
                f"breaker {event.breaker}: {event.from_state} -> {event.to_state}",
                event.to_state is State.OPEN or event.to_state is State.FORCED_OPEN,
            )
        )
        self._drain()

    def _drain(self) -> None:
        while self._pending:
            if not self._lock.acquire(blocking=False):
                return  # the thread evaluating now drains after it
            try:
                self._evaluate_pending_locked()
            finally:
                self._lock.release()
            self._after_evaluations()

    def _after_evaluations(self) -> None:
        while self._queued:
            self._listeners.publish(self._queued.popleft())

    # ------------------------------------------------------------ evaluation

    def evaluate(self, trigger: str = "manual", *, immediate: bool = False) -> Level:
        """Re-evaluate now; returns the level. Called on every breaker transition and heartbeat."""
        self._pending.append((trigger, immediate))
        with self._lock:
            self._evaluate_pending_locked()
        self._after_evaluations()
        self._drain()
        return self._state.level

    def _evaluate_pending_locked(self) -> None:
        while self._pending:
            triggers = []
            immediate = False
            while self._pending:
                trig, imm = self._pending.popleft()
                triggers.append(trig)
                immediate = immediate or imm
            self._evaluate_locked("; ".join(triggers), immediate)

    def _evaluate_locked(self, trigger: str, immediate: bool) -> None:
        now = self._clock()
        scored: list[tuple[Component, ComponentScore | None, float, str | None]] = []
        inputs: list[PolicyInput] = []
        for c in self._components:
            if not c.configured:
                scored.append((c, None, 0.0, None))
                continue
            component_inputs, bstate = read_inputs(
                c, self._probe_ok[c.name], self._problems.get(c.name, {}).values()
            )
            result = score_component(component_inputs)
            if c.name in self._holds and not result.down:
                result = ComponentScore(
                    min(result.score, 50.0),
                    "recovering",
                    False,
                    (*result.why, f"held: {self._holds[c.name]}"),
                )
            weight = float(c.weight or 0.0)
            scored.append((c, result, weight, bstate))
            inputs.append(PolicyInput(c.name, weight, result.score, result.down))
        target = target_level(inputs, self._rules, self._thresholds)
        outages = self._outages
        outages.track(target.down, now=now)
        down_since = outages.down_since_map
        cause = outages.cause_map
        views = [
            ComponentView(
                c.name, False, 0.0, 0.0, "absent", False, ("not configured",), None, None, None
            )
            if result is None
            else ComponentView(
                c.name,
                True,
                weight,
                result.score,
                result.status,
                result.down,
                result.why,
                bstate,
                down_since.get(c.name),
                cause.get(c.name),
            )
            for c, result, weight, bstate in scored
        ]
        pin = self._pin
        if pin is not None and now >= pin[1]:
            self._pin = pin = None
        current = self._state
        decision = decide(
            target,
            current,
            now=now,
            immediate=immediate,
            pin=None if pin is None else (pin[0], pin[2]),
            hysteresis=self._hysteresis,
            thresholds=self._thresholds,
        )
        self._state = state = decision.state
        transition = None
        if state.level is not current.level:
            transition = self._transition_locked(
                current.level, state.level, target.score, decision.text, now
            )
        evaluation = Evaluation(
            now,
            trigger,
            target.score,
            target.score_level,
            target.rule_level,
            target.rule,
            target.target,
            state.level,
            decision.text,
            tuple(views),
            target.down,
            state.bad,
            target.level_score,
            transition,
        )
        self._last = evaluation
        self._gates.update(state.level, views)
        self._queued.append(evaluation)

    def _transition_locked(
        self, frm: Level, to: Level, score: float, reason: str, now: float
    ) -> Transition:
        roots = self._outages.roots()
        transition = Transition(frm, to, score, reason, time.time(), now, roots)
        self._history.append(transition)
        self._outages.level_changed(frm, to, roots, now=now)
        return transition

    # ---------------------------------------------------------------- control

    def pin(self, level: Level, *, duration: float, reason: str = "pinned by operator") -> None:
        """Hold the level at ``level`` for ``duration`` seconds, whatever the score."""
        if not isinstance(level, Level):
            raise TypeError(f"pin: level must be a Level, got {level!r}")
        check_positive("pin duration", duration)
        with self._lock:
            self._pin = (level, self._clock() + duration, reason)
        self.evaluate(f"pin {level.name}")

    def unpin(self) -> None:
        with self._lock:
            self._pin = None
        self.evaluate("unpin")

    @property
    def pinned(self) -> tuple[Level, float, str] | None:
        """(level, seconds left, reason) while pinned."""
        pin = self._pin
        if pin is None:
            return None
        left = pin[1] - self._clock()
        return (pin[0], left, pin[2]) if left > 0 else None

    def hold(self, component: str, reason: str) -> None:
        """Keep ``component`` "recovering" (its features off) until :meth:`release`."""
        self.component(component)
        with self._lock:
            self._holds[component] = reason
        self.evaluate(f"hold {component}: {reason}")

    def release(self, component: str) -> None:
        with self._lock:
            self._holds.pop(component, None)
        self.evaluate(f"release {component}")

    def set_problem(self, component: str, source: str, problem: str | None) -> None:
        """Report (or, with ``None``, clear) a problem of ``component`` its breaker cannot
        see: work the application cannot finish through it (uploads its bucket refuses).

        While any is reported the component is "degraded" with each problem in its
        ``why``, its score capped at :data:`~brownout.health._scoring.PROBLEM_CAP` (it
        answers, so it is not down). ``source`` names the reporter: one problem per
        source. Re-evaluates only when something changed.

        >>> from brownout.health import Component, DegradationManager
        >>> manager = DegradationManager([Component("s3"), Component("database")])
        >>> manager.set_problem("s3", "spool", "2 uploads refused: NoSuchBucket")
        >>> view = {v.name: v for v in manager.last_evaluation.components}["s3"]
        >>> view.status, view.score, view.why
        ('degraded', 50.0, ('2 uploads refused: NoSuchBucket (capped at 50)',))
        >>> manager.set_problem("s3", "spool", None)
        >>> {v.name: v for v in manager.last_evaluation.components}["s3"].status
        'up'
        """
        self.component(component)
        with self._lock:
            current = self._problems.get(component, {})
            if current.get(source) == problem:
                return
            updated = dict(current)
            if problem is None:
                updated.pop(source, None)
            else:
                updated[source] = problem
            if updated:
                self._problems[component] = updated
            else:
                self._problems.pop(component, None)
        what = f"problem of {component} ({source})"
        self.evaluate(f"{what}: {problem}" if problem is not None else f"{what} cleared")

    def problems(self, component: str) -> dict[str, str]:
        """The problems reported for ``component`` (source -> problem)."""
        return dict(self._problems.get(component, {}))

    # ----------------------------------------------------------------- explain

    def explain(self) -> dict[str, Any]:
        """Why the level is what it is: inputs, the deciding rule or threshold, cascades.

        The document is built by :func:`brownout.health._explain.explain`; the
        manager hands it its last evaluation and the configuration behind it.
        """
        evaluation = self._last
        assert evaluation is not None
        return (
            explain(
                evaluation,
                impact=self._impact,
                thresholds=self._thresholds,
                hysteresis=self._hysteresis,
                level_held=self._clock() - self._state.since,
                pinned=self.pinned,
                patterns=self._outages.patterns,
                features=[
                    (f.name, self._enabled[f.name], self._feature_reason[f.name])
                    for f in self._feature_list
                ],
                settings=self.settings,
                recent=list(self._history)[-10:],
                predicted_recovery=self.predict_recovery(),
            )
            | self._section_values()
        )

    def _section_values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, source in list(self._sections.items()):
            try:
                out[name] = source()
            except Exception as exc:  # a section must never break explain()
                logger.exception("explain(): section %r failed", name)
                out[name] = {"error": type(exc).__name__}
        return out

    def expected_load(self) -> dict[tuple[str, str], float]:
        """Impact fractions currently in effect: (source down, target) -> expected extra load."""
        evaluation = self._last
        if evaluation is None:
            return {}
        return {k: v for k, v in self._impact.items() if k[0] in evaluation.down}

    @property
    def impact(self) -> dict[tuple[str, str], float]:
        return dict(self._impact)

    # -------------------------------------------------------------- prediction

    def predict_recovery(self) -> float | None:
        """Seconds until OPTIMAL, predicted from past recoveries; ``None`` without history."""
        return self._outages.predict_recovery(now=self._clock())

    def component_outages(self, name: str) -> list[float]:
        """Durations (s) of the component's past outages (most recent last)."""
        return self._outages.durations(name)

    # ------------------------------------------------------------- probing loop

    async def tick(self) -> None:
        """Run the probes that are due, then evaluate (what the heartbeat does)."""
        await self._prober.tick()

    def next_probe_in(self) -> float:
        return self._prober.next_in()

    async def start(self) -> None:
        """Start the heartbeat and probing task (idempotent)."""
        self._listeners.loop = asyncio.get_running_loop()
        await self._prober.start()

    async def stop(self) -> None:
        """Stop the heartbeat task and wait for it, and for the async listeners still running.

        The manager stays attached to its breakers (it still evaluates on their
        transitions); :meth:`aclose` also detaches it.
        """
        await self._prober.stop()
        await self._listeners.aclose()

    def close(self) -> None:
        """Detach from the breakers: their transitions no longer reach this manager.

        The sync half of :meth:`aclose`, for a manager that was never started (its
        only resources are then its breaker subscriptions); idempotent.
        """
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()

    async def aclose(self) -> None:
        """Stop the heartbeat and the async listeners, then detach from the breakers.

        Idempotent; ``async with manager:`` starts the manager and calls this on exit.
        """
        try:
            await self.stop()
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        """``async with manager:`` starts it (:meth:`start`); leaving the block closes it."""
        await self.start()
        return self

    def probe_state(self, name: str) -> dict[str, Any]:
        return self._prober.state(name)
