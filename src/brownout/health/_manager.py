"""The degradation manager: component scores -> one score -> one level -> features and settings."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brownout._aio import cancel_and_wait
from brownout._clock import Clock, monotonic
from brownout._errors import BreakerOpen
from brownout._events import StateChange
from brownout._redact import redact
from brownout._state import State
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
    seed_features,
)
from brownout.health._scoring import ComponentInputs, ComponentScore, score_component

__all__ = [
    "ComponentView",
    "DegradationManager",
    "Evaluation",
    "Transition",
    "UnknownFeature",
]

logger = logging.getLogger("brownout.health")

TransitionHandler = Callable[["Transition"], object]
EvaluationListener = Callable[["Evaluation"], object]


class HealthProbeFailed(Exception):
    """A health probe run as a half-open breaker's trial call failed (counts as a failure)."""


class UnknownFeature(KeyError):
    """``manager.enabled(name)`` was asked about a feature it does not know (a typo?)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown feature"


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
    """Everything one evaluation computed, and the decision it took."""

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

    def component(self, name: str) -> ComponentView:
        for view in self.components:
            if view.name == name:
                return view
        raise KeyError(name)


@dataclass
class _Incident:
    started: float
    worst: Level
    root_causes: set[str] = field(default_factory=set)


@dataclass
class _ProbeState:
    next_at: float = 0.0
    failures: int = 0
    last_ok: bool | None = None
    last_error: str | None = None
    last_at: float | None = None


class DegradationManager:
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
        self._components: tuple[Component, ...] = tuple(components)
        names = [c.name for c in self._components]
        if len(set(names)) != len(names):
            raise ValueError(f"DegradationManager: component names must be unique, got {names}")
        for c in self._components:
            if not isinstance(c, Component):
                raise TypeError(f"DegradationManager: components must be Component, got {c!r}")
        present = [c for c in self._components if c.configured]
        if present and sum(c.weight or 0.0 for c in present) <= 0:
            raise ValueError(
                "DegradationManager: the configured components' weights are all zero; "
                "at least one weight must be > 0"
            )
        known = set(names)
        self._feature_list = self._check_features(features, known)
        self._feature_requires = [(f, tuple(sorted(f.requires))) for f in self._feature_list]
        self._thresholds = _check_thresholds(thresholds)
        self._rules = tuple(rules)
        for rule in self._rules:
            if not isinstance(rule, LevelRule):
                raise TypeError(f"DegradationManager.rules entries must be LevelRule, got {rule!r}")
        self._impact = dict(impact)
        for (src, dst), frac in self._impact.items():
            if not isinstance(frac, int | float) or not 0 <= frac <= 1:
                raise ValueError(
                    f"DegradationManager.impact[({src!r}, {dst!r})] must be in [0, 1], got {frac!r}"
                )
        missing = [lvl for lvl in Level if lvl not in settings]
        if missing:
            raise ValueError(f"DegradationManager.settings lacks levels {missing}")
        self._settings = dict(settings)
        _check_non_negative("hysteresis_margin", hysteresis_margin)
        _check_non_negative("dwell", dwell)
        _check_non_negative("cascade_window", cascade_window)
        _check_positive("heartbeat", heartbeat)
        _check_positive("probe_timeout", probe_timeout)
        if (
            isinstance(degrade_after, bool)
            or not isinstance(degrade_after, int)
            or degrade_after < 1
        ):
            raise ValueError(
                f"DegradationManager.degrade_after must be an int >= 1, got {degrade_after!r}"
            )
        if recovery not in ("step", "direct"):
            raise ValueError(
                f"DegradationManager.recovery must be 'step' or 'direct', got {recovery!r}"
            )
        if probe_backoff[0] <= 0 or probe_backoff[1] < probe_backoff[0]:
            raise ValueError(
                "DegradationManager.probe_backoff must be (base > 0, cap >= base), "
                f"got {probe_backoff!r}"
            )
        self._margin = float(hysteresis_margin)
        self._dwell = float(dwell)
        self._degrade_after = degrade_after
        self._recovery = recovery
        self._window = float(cascade_window)
        self.heartbeat = float(heartbeat)
        self._probe_timeout = float(probe_timeout)
        self._backoff = probe_backoff
        self._clock: Clock = clock or monotonic
        self._rng = rng or random.Random()

        self._lock = threading.Lock()
        self._pending: deque[tuple[str, bool]] = deque()
        self._level = Level.OPTIMAL
        self._level_since = self._clock()
        self._bad = 0
        self._better_since: float | None = None
        self._pin: tuple[Level, float, str] | None = None
        self._holds: dict[str, str] = {}
        self._problems: dict[str, dict[str, str]] = {}
        self._down_since: dict[str, float] = {}
        self._cause: dict[str, str] = {}
        self._outages: dict[str, list[float]] = {}
        self._history: deque[Transition] = deque(maxlen=history_size)
        self._patterns: deque[dict[str, Any]] = deque(maxlen=20)
        self._incident: _Incident | None = None
        self._recoveries: deque[tuple[float, Level, frozenset[str]]] = deque(maxlen=50)
        self._probes: dict[str, _ProbeState] = {c.name: _ProbeState() for c in self._components}
        self._enabled: dict[str, bool] = {}
        self._feature_reason: dict[str, str] = {}
        self._handlers: list[tuple[Level | None, TransitionHandler]] = []
        self._eval_listeners: tuple[EvaluationListener, ...] = ()
        self._last: Evaluation | None = None
        # filled under the lock, emptied (listeners, handlers, logs) outside it
        self._queued_transitions: deque[Transition] = deque()
        self._queued_evaluations: deque[Evaluation] = deque()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        for c in self._components:
            if c.breaker is not None and c.configured:
                self._unsubscribe.append(
                    c.breaker.add_listener(on_state_change=self._on_breaker_change)
                )
        self.evaluate("start")

    # ----------------------------------------------------------------- checks

    @staticmethod
    def _check_features(features: Iterable[Feature] | None, known: set[str]) -> tuple[Feature, ...]:
        if features is None:
            # the seed's matrix: requirements on dependencies this application does not
            # have make a feature off ("not configured"), they are not typos
            return seed_features()
        out = tuple(features)
        seen: set[str] = set()
        for feature in out:
            if not isinstance(feature, Feature):
                raise TypeError(f"DegradationManager: features must be Feature, got {feature!r}")
            if feature.name in seen:
                raise ValueError(f"DegradationManager: feature {feature.name!r} is defined twice")
            seen.add(feature.name)
            unknown = feature.requires - known
            if unknown:
                raise ValueError(
                    f"Feature {feature.name!r} requires unknown component(s) {sorted(unknown)}; "
                    f"known components: {sorted(known)} (declare an absent one with "
                    "Component(name, configured=False))"
                )
        return out

    # ----------------------------------------------------------------- views

    @property
    def level(self) -> Level:
        return self._level

    @property
    def score(self) -> float:
        return self._last.score if self._last is not None else 100.0

    @property
    def settings(self) -> LevelSettings:
        """This level's resource settings: pool and batch sizes, cache TTL, timeout, retries."""
        return self._settings[self._level]

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

    def on_transition(self, handler: TransitionHandler, *, level: Level | None = None) -> None:
        """Call ``handler(transition)`` (sync or async) on every change, or on entering ``level``.

        A handler that raises is logged; it never stops the transition.
        """
        if not callable(handler):
            raise TypeError("on_transition needs a callable")
        self._handlers.append((level, handler))

    def add_listener(self, on_evaluation: EvaluationListener) -> Callable[[], None]:
        """Receive every :class:`Evaluation` (metrics backends use this)."""
        self._eval_listeners = (*self._eval_listeners, on_evaluation)

        def unsubscribe() -> None:
            self._eval_listeners = tuple(f for f in self._eval_listeners if f is not on_evaluation)

        return unsubscribe

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

    # ------------------------------------------------------------ evaluation

    def evaluate(self, trigger: str = "manual", *, immediate: bool = False) -> Level:
        """Re-evaluate now; returns the level. Called on every breaker transition and heartbeat."""
        self._pending.append((trigger, immediate))
        with self._lock:
            self._evaluate_pending_locked()
        self._after_evaluations()
        self._drain()
        return self._level

    def _evaluate_pending_locked(self) -> None:
        while self._pending:
            triggers = []
            immediate = False
            while self._pending:
                trig, imm = self._pending.popleft()
                triggers.append(trig)
                immediate = immediate or imm
            self._evaluate_locked("; ".join(triggers), immediate)

    def _inputs(self, c: Component) -> tuple[ComponentInputs, str | None]:
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
        probe = self._probes[c.name].last_ok
        problems = tuple(self._problems.get(c.name, {}).values())
        return (
            ComponentInputs(
                state, success, p95, c.latency_target, probe, credentials, last_error, problems
            ),
            state.value if state is not None else None,
        )

    def _evaluate_locked(self, trigger: str, immediate: bool) -> None:
        now = self._clock()
        scored: list[tuple[Component, ComponentScore | None, float, str | None]] = []
        total_w = 0.0
        weighted = 0.0
        down: set[str] = set()
        for c in self._components:
            if not c.configured:
                scored.append((c, None, 0.0, None))
                continue
            inputs, bstate = self._inputs(c)
            result: ComponentScore = score_component(inputs)
            if c.name in self._holds and not result.down:
                result = ComponentScore(
                    min(result.score, 50.0),
                    "recovering",
                    False,
                    (*result.why, f"held: {self._holds[c.name]}"),
                )
            if result.down:
                down.add(c.name)
            weight = float(c.weight or 0.0)
            total_w += weight
            weighted += weight * result.score
            scored.append((c, result, weight, bstate))
        score = round(weighted / total_w, 2) if total_w else 100.0
        frozen_down = frozenset(down)
        self._track_outages(frozen_down, now)
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
                self._down_since.get(c.name),
                self._cause.get(c.name),
            )
            for c, result, weight, bstate in scored
        ]

        rule_level = Level.OPTIMAL
        rule_text: str | None = None
        for rule in self._rules:
            if rule.applies(frozen_down) and rule.level > rule_level:
                rule_level = rule.level
                rule_text = rule.describe()
        score_level = self._level_for(score)
        level_score = score
        score_text = f"score {score:.1f}"
        # LevelRule.replaces_score: the components such a rule names, impaired or down
        # while nothing else is down, cost the level at most the rule's level; the
        # level is then read from the other components' score.
        impaired = {c.name for c, r, _, _ in scored if r is not None and (r.down or r.score < 100)}
        covered: set[str] = set()
        cap = Level.OPTIMAL
        for rule in self._rules:
            if rule.replaces_score and rule.down & impaired and frozen_down <= rule.down:
                covered |= rule.down
                cap = max(cap, rule.level)
        if covered:
            rest = [
                (w, r.score) for c, r, w, _ in scored if r is not None and c.name not in covered
            ]
            rest_w = sum(w for w, _ in rest)
            rest_score = round(sum(w * v for w, v in rest) / rest_w, 2) if rest_w else 100.0
            bounded = max(self._level_for(rest_score), min(score_level, cap))
            if bounded < score_level:
                names = ", ".join(sorted(covered))
                score_text += (
                    f" ({rest_score:.1f} without {names}, which may cost at most {cap.name})"
                )
                score_level, level_score = bounded, rest_score
        target = max(score_level, rule_level)
        if score_level >= rule_level:
            why_target = f"{score_text} => {score_level.name}"
        else:
            why_target = f"rule {rule_text}"

        current = self._level
        new = current
        pin = self._pin
        if pin is not None and now >= pin[1]:
            self._pin = pin = None
        if pin is not None:
            new = pin[0]
            decision = f"pinned at {pin[0].name} ({pin[2]})"
            self._bad = 0
            self._better_since = None
        elif target > current:
            self._better_since = None
            self._bad += 1
            if immediate or self._bad >= self._degrade_after:
                new = target
                decision = f"degrade to {target.name}: {why_target}" + (
                    " (a breaker opened)" if immediate else f" ({self._bad} bad evaluations)"
                )
                self._bad = 0
            else:
                decision = (
                    f"hold {current.name}: {why_target}, bad evaluation "
                    f"{self._bad}/{self._degrade_after}"
                )
        elif target < current:
            self._bad = 0
            if self._better_since is None:
                self._better_since = now
            candidate = Level(current - 1) if self._recovery == "step" else target
            held = now - self._level_since
            better_for = now - self._better_since
            needed = self._threshold_of(candidate) + self._margin
            if held < self._dwell or better_for < self._dwell:
                decision = (
                    f"hold {current.name}: recovering ({why_target}), level held {held:.1f} s, "
                    f"better for {better_for:.1f} s; both must reach {self._dwell:g} s"
                )
            elif level_score < needed:
                decision = (
                    f"hold {current.name}: {score_text} < {needed:g} "
                    f"({candidate.name} threshold + margin {self._margin:g})"
                )
            else:
                new = candidate
                decision = f"recover to {candidate.name}: {why_target}"
        else:
            self._bad = 0
            self._better_since = None
            decision = f"stay {current.name}: {why_target}"

        evaluation = Evaluation(
            now,
            trigger,
            score,
            score_level,
            rule_level,
            rule_text,
            target,
            new,
            decision,
            tuple(views),
            frozen_down,
            self._bad,
            level_score,
        )
        self._last = evaluation
        if new is not current:
            self._transition_locked(current, new, score, decision, now)
        self._update_features_locked(views)
        self._queued_evaluations.append(evaluation)

    def _level_for(self, score: float) -> Level:
        return Level.for_score(score, self._thresholds)

    def _threshold_of(self, level: Level) -> float:
        return self._thresholds[level] if level < Level.EMERGENCY else 0.0

    def _track_outages(self, down: frozenset[str], now: float) -> None:
        for name in down:
            if name in self._down_since:
                continue
            self._down_since[name] = now
            # root-cause attribution: a dependant failing soon after what it depends on
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
                del self._outages[name][:-20]

    def _depends(self, dependant: str, source: str) -> bool:
        if self._impact.get((source, dependant), 0.0) > 0:
            return True
        return any(c.name == dependant and source in c.depends_on for c in self._components)

    def _transition_locked(
        self, frm: Level, to: Level, score: float, reason: str, now: float
    ) -> None:
        self._level = to
        self._level_since = now
        roots = tuple(
            sorted({self._cause.get(n, n) for n in self._down_since if n not in self._cause})
        )
        transition = Transition(frm, to, score, reason, time.time(), now, roots)
        self._history.append(transition)
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
        self._queued_transitions.append(transition)

    def _update_features_locked(self, views: Sequence[ComponentView]) -> None:
        by_name = {v.name: v for v in views}
        level = self._level
        for feature, requires in self._feature_requires:
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
            self._enabled[feature.name] = on
            self._feature_reason[feature.name] = reason or "available"

    def _after_evaluations(self) -> None:
        while self._queued_evaluations:
            evaluation = self._queued_evaluations.popleft()
            for listener in self._eval_listeners:
                try:
                    listener(evaluation)
                except Exception:
                    logger.exception("degradation: evaluation listener %r raised", listener)
        while self._queued_transitions:
            transition = self._queued_transitions.popleft()
            log = logger.warning if transition.to_level > transition.from_level else logger.info
            log(
                "degradation level %s -> %s (score %.1f): %s",
                transition.from_level.name,
                transition.to_level.name,
                transition.score,
                transition.reason,
            )
            for level, handler in self._handlers:
                if level is not None and level is not transition.to_level:
                    continue
                self._run_handler(handler, transition)

    def _run_handler(self, handler: TransitionHandler, transition: Transition) -> None:
        try:
            result = handler(transition)
        except Exception:
            logger.exception("degradation: transition handler %r raised", handler)
            return
        if inspect.isawaitable(result):
            self._schedule(result, handler)

    def _schedule(self, awaitable: Awaitable[Any], handler: object) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception:
                logger.exception("degradation: transition handler %r raised", handler)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            task = loop.create_task(guarded())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        else:
            coro = guarded()
            coro.close()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            logger.warning("degradation: async handler %r skipped: no running event loop", handler)

    # ---------------------------------------------------------------- control

    def pin(self, level: Level, *, duration: float, reason: str = "pinned by operator") -> None:
        """Hold the level at ``level`` for ``duration`` seconds, whatever the score."""
        if not isinstance(level, Level):
            raise TypeError(f"pin: level must be a Level, got {level!r}")
        _check_positive("pin duration", duration)
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

    # -------------------------------------------------------------- prediction

    def predict_recovery(self) -> float | None:
        """Seconds until OPTIMAL, predicted from past recoveries; ``None`` without history."""
        incident = self._incident
        if incident is None or not self._recoveries:
            return None
        elapsed = self._clock() - incident.started
        same_cause = [d for d, _, c in self._recoveries if c & incident.root_causes]
        same_level = [d for d, w, _ in self._recoveries if w == incident.worst]
        pool = same_cause or same_level or [d for d, _, _ in self._recoveries]
        return max(0.0, statistics.median(pool) - elapsed)

    def component_outages(self, name: str) -> list[float]:
        """Durations (s) of the component's past outages (most recent last)."""
        return list(self._outages.get(name, []))

    # ----------------------------------------------------------------- explain

    def explain(self) -> dict[str, Any]:
        """Why the level is what it is: inputs, the deciding rule or threshold, cascades."""
        evaluation = self._last
        assert evaluation is not None
        cascade = []
        for (src, dst), frac in sorted(self._impact.items()):
            if src in evaluation.down and any(
                v.name == dst and v.configured for v in evaluation.components
            ):
                cascade.append(
                    {
                        "source": src,
                        "target": dst,
                        "expected_extra_load": frac,
                        "text": f"{src} down: expect +{frac:.0%} load on {dst}",
                    }
                )
        root_causes = [
            {"component": v.name, "cascade_of": v.root_cause}
            for v in evaluation.components
            if v.root_cause is not None
        ]
        pin = self.pinned
        return {
            "level": evaluation.level.name,
            "score": evaluation.score,
            "level_score": evaluation.level_score,
            "decision": evaluation.decision,
            "trigger": evaluation.trigger,
            "score_level": evaluation.score_level.name,
            "rule_level": evaluation.rule_level.name,
            "rule": evaluation.rule,
            "thresholds": dict(zip([lvl.name for lvl in Level], self._thresholds, strict=False)),
            "hysteresis": {
                "pending_bad_evaluations": evaluation.pending_degrade,
                "degrade_after": self._degrade_after,
                "margin": self._margin,
                "dwell_s": self._dwell,
                "level_held_s": round(self._clock() - self._level_since, 3),
                "recovery": self._recovery,
            },
            "pinned": None
            if pin is None
            else {"level": pin[0].name, "seconds_left": pin[1], "reason": pin[2]},
            "components": [v.to_dict() for v in evaluation.components],
            "down": sorted(evaluation.down),
            "cascade": cascade,
            "root_causes": root_causes,
            "patterns": list(self._patterns),
            "features": {
                f.name: {"enabled": self._enabled[f.name], "reason": self._feature_reason[f.name]}
                for f in self._feature_list
            },
            "settings": self.settings.to_dict(),
            "recent_transitions": [t.to_dict() for t in list(self._history)[-10:]],
            "predicted_recovery_s": self.predict_recovery(),
        }

    def expected_load(self) -> dict[tuple[str, str], float]:
        """Impact fractions currently in effect: (source down, target) -> expected extra load."""
        evaluation = self._last
        if evaluation is None:
            return {}
        return {k: v for k, v in self._impact.items() if k[0] in evaluation.down}

    @property
    def impact(self) -> dict[tuple[str, str], float]:
        return dict(self._impact)

    # ------------------------------------------------------------- probing loop

    async def tick(self) -> None:
        """Run the probes that are due, then evaluate (what the heartbeat does)."""
        now = self._clock()
        due = [
            c
            for c in self._components
            if c.configured and c.probe is not None and self._probes[c.name].next_at <= now
        ]
        if due:
            await asyncio.gather(*(self._probe(c) for c in due))
        self.evaluate("heartbeat")

    async def _run_probe(self, c: Component) -> tuple[bool, str | None]:
        """Run ``c``'s probe once: (ok, redacted error)."""
        assert c.probe is not None
        try:
            result: Any = c.probe()
            if inspect.isawaitable(result):
                async with asyncio.timeout(self._probe_timeout):  # see brownout._aio
                    result = await result
            ok = result is None or result is True or bool(getattr(result, "ok", False))
            if not ok:
                return False, getattr(result, "error", None) or "probe returned failure"
        except TimeoutError:
            return False, f"probe timed out after {self._probe_timeout:g} s"
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}")
        return True, None

    async def _probe(self, c: Component) -> None:
        state = self._probes[c.name]
        ran: list[tuple[bool, str | None]] = []
        if c.breaker is not None and c.breaker.state is State.HALF_OPEN:
            # A half-open component's features are off, so the application may send it
            # no trial call at all: the probe is one (through the breaker), and enough
            # good probes close the breaker, a failed one reopens it.
            async def trial() -> None:
                ran.append(await self._run_probe(c))
                if not ran[-1][0]:
                    raise HealthProbeFailed(f"health probe of {c.name} failed: {ran[-1][1]}")

            with contextlib.suppress(BreakerOpen, HealthProbeFailed):
                await c.breaker.acall(trial)  # BreakerOpen: real calls hold every trial slot
        ok, error = ran[0] if ran else await self._run_probe(c)
        now = self._clock()
        state.last_ok, state.last_error, state.last_at = ok, error, now
        breaker = c.breaker
        is_open = breaker is not None and breaker.state is State.OPEN
        if ok:
            state.failures = 0
            state.next_at = now + self.heartbeat
            if is_open and breaker is not None:
                breaker.half_open(f"health probe of {c.name} succeeded")
        else:
            state.failures += 1
            base, cap = self._backoff
            delay = min(cap, base * 2 ** (state.failures - 1))
            # full jitter on the upper half: spreads probes of many instances
            state.next_at = now + delay * (0.5 + self._rng.random() / 2)

    def next_probe_in(self) -> float:
        now = self._clock()
        dues = [
            self._probes[c.name].next_at - now
            for c in self._components
            if c.configured and c.probe is not None
        ]
        return max(0.05, min([self.heartbeat, *dues]))

    async def start(self) -> None:
        """Start the heartbeat and probing task (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="brownout-degradation-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("degradation: heartbeat failed")
            await asyncio.sleep(self.next_probe_in())

    async def stop(self) -> None:
        """Stop the heartbeat task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for t in list(self._background):
            t.cancel()

    def close(self) -> None:
        """Detach from the breakers (after :meth:`stop`)."""
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()

    def probe_state(self, name: str) -> dict[str, Any]:
        state = self._probes[name]
        return {
            "ok": state.last_ok,
            "error": state.last_error,
            "failures": state.failures,
            "next_in_s": max(0.0, state.next_at - self._clock()),
        }


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(t) for t in thresholds)
    if len(values) != 4:
        raise ValueError(
            f"DegradationManager.thresholds must be 4 numbers (OPTIMAL, DEGRADED, LIMITED, "
            f"MINIMAL lower bounds), got {len(values)}"
        )
    if not all(0 < v <= 100 for v in values):
        raise ValueError(f"DegradationManager.thresholds must be in (0, 100], got {values}")
    if not all(a > b for a, b in itertools.pairwise(values)):
        raise ValueError(f"DegradationManager.thresholds must be strictly decreasing, got {values}")
    a, b, c, d = values
    return (a, b, c, d)


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"DegradationManager.{name} must be a number >= 0, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"DegradationManager.{name} must be a number > 0, got {value!r}")
