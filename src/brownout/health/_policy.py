"""The level policy: component scores -> one score -> a target level -> the level, with hysteresis.

Pure functions of their inputs: no clock (the time is an argument), no I/O, no
state of their own. :class:`~brownout.health.DegradationManager` gathers the
inputs (breakers, adapters, probes, holds, problems) and keeps the state this
module returns; here is only the decision, so it can be read, explained and
tested with Hypothesis in one place (``tests/health/test_policy.py``).

Two steps:

* :func:`target_level`: where the components say the level should be, from the
  weighted score and the dependency rules (:class:`~brownout.health.LevelRule`).
* :func:`decide`: where the level goes from where it is, given that target: a
  pin wins; degrading waits for ``degrade_after`` bad evaluations unless a
  breaker opened; recovering waits for the dwell and needs the margin above the
  threshold, one level at a time (``recovery="step"``) or straight to the target.

>>> from brownout.health import Level
>>> target = target_level(
...     [PolicyInput("database", 0.4, 0.0, True), PolicyInput("cache", 0.2, 100.0, False)]
... )
>>> target.score, target.score_level.name, target.target.name, target.why
(33.33, 'MINIMAL', 'MINIMAL', 'score 33.3 => MINIMAL')
>>> d = decide(target, LevelState(Level.OPTIMAL, since=0.0), now=1.0)
>>> d.level.name, d.text
('OPTIMAL', 'hold OPTIMAL: score 33.3 => MINIMAL, bad evaluation 1/3')
>>> decide(target, d.state, now=2.0, immediate=True).text
'degrade to MINIMAL: score 33.3 => MINIMAL (a breaker opened)'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import NamedTuple

from brownout.health._model import DEFAULT_RULES, DEFAULT_THRESHOLDS, Level, LevelRule

__all__ = [
    "Hysteresis",
    "LevelState",
    "PolicyDecision",
    "PolicyInput",
    "Target",
    "decide",
    "target_level",
]


class PolicyInput(NamedTuple):
    """One configured component as the policy sees it: its weight, score and whether it is down."""

    name: str
    weight: float
    score: float  # 0-100
    down: bool

    @property
    def impaired(self) -> bool:
        """Down, or scoring under 100 (failing, slow, half-open, held, problem reported)."""
        return self.down or self.score < 100


# PolicyInput, Target, LevelState and PolicyDecision are NamedTuples (immutable, typed):
# one of each per evaluation, and a frozen dataclass costs a setattr per field to build
# (bench/degradation.py --baseline measures evaluate()).


class Target(NamedTuple):
    """Where the components say the level should be, and why."""

    score: float  # the weighted score of every component
    score_level: Level  # the level the score calls for (bounded by replacing rules)
    rule_level: Level  # the worst level a dependency rule demands (OPTIMAL: none)
    rule: str | None  # that rule, in words
    target: Level  # the worse of score_level and rule_level
    level_score: float  # the score the level is read from (see LevelRule.replaces_score)
    down: frozenset[str]
    score_text: str  # "score 66.7", and what a replacing rule changed
    why: str  # why the target: "score 66.7 => DEGRADED" or "rule ..."


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """How eagerly the level follows its target (see ``docs/degradation.md``)."""

    margin: float = 2.0  # recover only this many points above the threshold
    dwell: float = 10.0  # seconds the level, and the better target, must have held
    degrade_after: int = 3  # consecutive bad evaluations before degrading
    recovery: str = "step"  # "step": one level at a time; "direct": to the target


class LevelState(NamedTuple):
    """The level and the hysteresis counters: what :func:`decide` reads and returns."""

    level: Level
    since: float  # when the level was entered (the caller's monotonic time)
    bad: int = 0  # consecutive evaluations that asked for a worse level
    better_since: float | None = None  # since when the target has been better


class PolicyDecision(NamedTuple):
    state: LevelState  # the new state (``state.level`` is the new level)
    text: str  # the decision in words, shown by ``explain()``

    @property
    def level(self) -> Level:
        return self.state.level


_LEVELS = tuple(Level)


def level_for(score: float, thresholds: tuple[float, float, float, float]) -> Level:
    """:meth:`Level.for_score` without iterating the enum class (slow) on every evaluation."""
    for level, threshold in zip(_LEVELS, thresholds, strict=False):
        if score >= threshold:
            return level
    return Level.EMERGENCY


def threshold_of(level: Level, thresholds: tuple[float, float, float, float]) -> float:
    """The lowest score of ``level`` (0 for EMERGENCY)."""
    return thresholds[level] if level < Level.EMERGENCY else 0.0


def _weighted(components: Iterable[PolicyInput], without: Set[str] = frozenset()) -> float:
    total_w = 0.0
    weighted = 0.0
    for c in components:
        if c.name not in without:
            total_w += c.weight
            weighted += c.weight * c.score
    return round(weighted / total_w, 2) if total_w else 100.0


def target_level(
    components: Sequence[PolicyInput],
    rules: Sequence[LevelRule] = DEFAULT_RULES,
    thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS,
) -> Target:
    """The level the configured ``components`` call for: the weighted score's level, made
    worse by any dependency rule that applies (rules naming absent components never apply).

    A rule with ``replaces_score`` bounds what the components it names cost: while they
    are impaired and nothing else is down, the level is read from the other components'
    score, and they cost it at most the rule's level.
    """
    score = _weighted(components)
    down = frozenset([c.name for c in components if c.down])
    rule_level = Level.OPTIMAL
    rule_text: str | None = None
    for rule in rules:
        if rule.applies(down) and rule.level > rule_level:
            rule_level = rule.level
            rule_text = rule.describe()
    score_level = level_for(score, thresholds)
    level_score = score
    score_text = f"score {score:.1f}"
    impaired: set[str] | None = None
    covered: set[str] = set()
    cap = Level.OPTIMAL
    for rule in rules:
        if not rule.replaces_score or not down <= rule.down:
            continue
        if impaired is None:
            impaired = {c.name for c in components if c.down or c.score < 100}
        if rule.down & impaired:
            covered |= rule.down
            cap = max(cap, rule.level)
    if covered:
        rest_score = _weighted(components, covered)
        bounded = max(level_for(rest_score, thresholds), min(score_level, cap))
        if bounded < score_level:
            names = ", ".join(sorted(covered))
            score_text += f" ({rest_score:.1f} without {names}, which may cost at most {cap.name})"
            score_level, level_score = bounded, rest_score
    target = max(score_level, rule_level)
    if score_level >= rule_level:
        why = f"{score_text} => {score_level.name}"
    else:
        why = f"rule {rule_text}"
    return Target(
        score, score_level, rule_level, rule_text, target, level_score, down, score_text, why
    )


def decide(
    target: Target,
    state: LevelState,
    *,
    now: float,
    immediate: bool = False,
    pin: tuple[Level, str] | None = None,
    hysteresis: Hysteresis = Hysteresis(),  # frozen: a shared default is safe
    thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS,
) -> PolicyDecision:
    """The next level from ``state`` towards ``target`` at time ``now``.

    ``immediate``: a breaker opened, so degrade at once. ``pin``: (level, reason) of an
    operator's pin still in force; it wins over everything and resets the counters.
    """
    current = state.level
    if pin is not None:
        return PolicyDecision(
            _moved(state, pin[0], now, 0, None), f"pinned at {pin[0].name} ({pin[1]})"
        )
    goal = target.target
    if goal > current:
        bad = state.bad + 1
        if immediate or bad >= hysteresis.degrade_after:
            how = " (a breaker opened)" if immediate else f" ({bad} bad evaluations)"
            return PolicyDecision(
                _moved(state, goal, now, 0, None),
                f"degrade to {goal.name}: {target.why}{how}",
            )
        return PolicyDecision(
            LevelState(current, state.since, bad, None),
            f"hold {current.name}: {target.why}, bad evaluation {bad}/{hysteresis.degrade_after}",
        )
    if goal < current:
        better_since = now if state.better_since is None else state.better_since
        candidate = Level(current - 1) if hysteresis.recovery == "step" else goal
        held = now - state.since
        better_for = now - better_since
        needed = threshold_of(candidate, thresholds) + hysteresis.margin
        waiting = LevelState(current, state.since, 0, better_since)
        if held < hysteresis.dwell or better_for < hysteresis.dwell:
            return PolicyDecision(
                waiting,
                f"hold {current.name}: recovering ({target.why}), level held {held:.1f} s, "
                f"better for {better_for:.1f} s; both must reach {hysteresis.dwell:g} s",
            )
        if target.level_score < needed:
            return PolicyDecision(
                waiting,
                f"hold {current.name}: {target.score_text} < {needed:g} "
                f"({candidate.name} threshold + margin {hysteresis.margin:g})",
            )
        return PolicyDecision(
            _moved(state, candidate, now, 0, better_since),
            f"recover to {candidate.name}: {target.why}",
        )
    if state.bad or state.better_since is not None:
        state = LevelState(current, state.since, 0, None)
    return PolicyDecision(state, f"stay {current.name}: {target.why}")


def _moved(
    state: LevelState, level: Level, now: float, bad: int, better_since: float | None
) -> LevelState:
    """``state`` at ``level``: a change of level restarts the dwell."""
    since = state.since if level is state.level else now
    return LevelState(level, since, bad, better_since)
