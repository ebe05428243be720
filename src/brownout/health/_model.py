"""The vocabulary of degradation: levels, their settings, components, features, rules."""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from brownout._breaker import CircuitBreaker

if TYPE_CHECKING:
    from brownout._adapter import Adapter
    from brownout._adapter_stats import ProbeResult

__all__ = [
    "DEFAULT_IMPACT",
    "DEFAULT_RULES",
    "DEFAULT_SETTINGS",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_WEIGHTS",
    "Component",
    "Feature",
    "Level",
    "LevelRule",
    "LevelSettings",
    "Probe",
]


class Level(enum.IntEnum):
    """Degradation levels, best to worst. Ordered: ``Level.LIMITED > Level.DEGRADED``.

    A larger value is a *worse* level: ``manager.level >= Level.LIMITED`` reads
    "at least as bad as LIMITED".
    """

    OPTIMAL = 0  # everything available
    DEGRADED = 1  # cache lost: reads go to the database
    LIMITED = 2  # AI lost: rule-based fallbacks
    MINIMAL = 3  # database in trouble: reads only, writes queued
    EMERGENCY = 4  # maintenance mode

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def for_score(
        cls, score: float, thresholds: tuple[float, float, float, float] = (90.0, 70.0, 50.0, 30.0)
    ) -> Level:
        """The level a score alone calls for.

        >>> Level.for_score(77.8)
        <Level.DEGRADED: 1>
        """
        for level, threshold in zip(cls, thresholds, strict=False):
            if score >= threshold:
                return level
        return cls.EMERGENCY


#: Lowest score of each level but the last (OPTIMAL >= 90, DEGRADED >= 70, ...).
DEFAULT_THRESHOLDS: tuple[float, float, float, float] = (90.0, 70.0, 50.0, 30.0)

#: Default component weights (renormalised over the components an application has).
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"database": 0.40, "cache": 0.20, "openai": 0.20, "s3": 0.10, "external_api": 0.10}
)

#: Expected extra load on a dependant while a component is down: (source, target) -> fraction.
DEFAULT_IMPACT: Mapping[tuple[str, str], float] = MappingProxyType(
    {("database", "cache"): 0.2, ("database", "s3"): 0.1, ("cache", "database"): 0.3}
)


@dataclass(frozen=True, slots=True)
class LevelSettings:
    """Resource settings an application applies at a level."""

    pool_multiplier: float
    cache_ttl: float  # seconds
    batch_multiplier: float
    request_timeout: float  # seconds
    max_retries: int
    retry_strategy: str  # "exponential", "linear", "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool_multiplier": self.pool_multiplier,
            "cache_ttl": self.cache_ttl,
            "batch_multiplier": self.batch_multiplier,
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_strategy": self.retry_strategy,
        }


#: Per-level settings of the service brownout was first built for.
DEFAULT_SETTINGS: Mapping[Level, LevelSettings] = MappingProxyType(
    {
        Level.OPTIMAL: LevelSettings(1.0, 3600, 1.0, 2.0, 3, "exponential"),
        Level.DEGRADED: LevelSettings(0.9, 1800, 0.8, 3.0, 2, "exponential"),
        Level.LIMITED: LevelSettings(0.75, 900, 0.5, 5.0, 1, "linear"),
        Level.MINIMAL: LevelSettings(0.5, 300, 0.25, 10.0, 0, "none"),
        Level.EMERGENCY: LevelSettings(0.2, 60, 0.1, 30.0, 0, "none"),
    }
)


@dataclass(frozen=True, slots=True)
class LevelRule:
    """A dependency rule: while ``down`` (and ``plus_any`` others) are down, at least ``level``.

    >>> LevelRule("database_down", frozenset({"database"}), Level.MINIMAL)
    ... # doctest: +ELLIPSIS
    LevelRule(name='database_down', ...)
    """

    name: str
    down: frozenset[str]
    level: Level
    plus_any: int = 0  # how many *other* components must be down as well
    alone: bool = False  # only when nothing else is down
    #: While the components the rule names are down or impaired (failing, held,
    #: half-open) and nothing else is down, they count through the rule only: they
    #: cost the level at most the rule's level, which is otherwise read from the
    #: other components' score (the score itself is unchanged). So "cache down alone
    #: => DEGRADED" means DEGRADED, not lower, even where the cache carries a large
    #: share of the weight (a service with only a database and a cache: cache down
    #: scores 66.7), and a failing cache costs no more than a lost one.
    replaces_score: bool = False

    def applies(self, down: frozenset[str]) -> bool:
        if not self.down <= down:
            return False
        others = len(down - self.down)
        if self.alone and others:
            return False
        return others >= self.plus_any

    def describe(self) -> str:
        names = " and ".join(sorted(self.down))
        extra = f" and {self.plus_any} more" if self.plus_any else ""
        only = " alone" if self.alone else ""
        return f"{names}{extra} down{only} => at least {self.level.name}"


#: The default dependency rules (rules naming an absent component never apply).
DEFAULT_RULES: tuple[LevelRule, ...] = (
    LevelRule("cache_down", frozenset({"cache"}), Level.DEGRADED, alone=True, replaces_score=True),
    LevelRule("openai_down", frozenset({"openai"}), Level.LIMITED),
    LevelRule("database_down", frozenset({"database"}), Level.MINIMAL),
    LevelRule("database_and_more_down", frozenset({"database"}), Level.EMERGENCY, plus_any=1),
)

#: A health probe: sync or async, returning a ProbeResult, a bool, or None (= ok); raising = failed.
Probe: TypeAlias = Callable[[], "ProbeResult | bool | Awaitable[ProbeResult | bool | None] | None"]


@dataclass(slots=True)
class Component:
    """One dependency the service relies on.

    ``weight`` defaults to :data:`DEFAULT_WEIGHTS` for the well-known names
    (else 0.1). ``latency_target`` is the p95 latency (seconds) at which the
    component counts as fully fast. ``configured=False`` declares a known
    dependency that this deployment does not have: it is left out of the score
    and the features that need it are off. ``required_for_ready`` makes
    ``/health/ready`` fail while it is down.

    ``adapter`` (a :class:`brownout.adapter.Adapter`) supplies success rate,
    p95 latency and credentials problems; ``Component.of(adapter)`` fills
    breaker and probe from it.

    ``saturation``: a callable read at each evaluation, how full the component's
    admission is (0..1, e.g. ``lambda: bulkhead.saturation``); above 0.8 it costs
    the score up to 40 points at 1.0 (see ``brownout.health._scoring``).
    """

    name: str
    breaker: CircuitBreaker | None = None
    probe: Probe | None = None
    weight: float | None = None
    latency_target: float = 0.5
    adapter: Adapter | None = None
    configured: bool = True
    required_for_ready: bool = False
    depends_on: frozenset[str] = field(default_factory=frozenset)
    saturation: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Component.name must be a non-empty string, got {self.name!r}")
        if self.weight is None:
            self.weight = DEFAULT_WEIGHTS.get(self.name, 0.1)
        if (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, int | float)
            or not math.isfinite(self.weight)
            or self.weight < 0
        ):
            raise ValueError(
                f"Component({self.name!r}).weight must be a finite number >= 0, got {self.weight!r}"
            )
        if not self.latency_target > 0:
            raise ValueError(
                f"Component({self.name!r}).latency_target must be > 0 seconds, "
                f"got {self.latency_target!r}"
            )
        if self.breaker is None and self.adapter is not None:
            self.breaker = self.adapter.breaker
        if self.probe is not None and not callable(self.probe):
            raise TypeError(f"Component({self.name!r}).probe must be callable")
        if self.saturation is not None and not callable(self.saturation):
            raise TypeError(
                f"Component({self.name!r}).saturation must be a callable returning 0..1, "
                f"got {self.saturation!r}"
            )
        self.depends_on = frozenset(self.depends_on)

    @classmethod
    def of(cls, adapter: Adapter, name: str | None = None, **kwargs: Any) -> Component:
        """A component wired to an adapter: its breaker, its async probe and its figures,
        and its bulkhead's saturation (unless ``saturation=`` is given)."""
        bulkhead = adapter.guards.bulkhead
        if bulkhead is not None and kwargs.get("saturation") is None:
            # the bulkhead's in_use / limit, read at each evaluation
            kwargs["saturation"] = functools.partial(getattr, bulkhead, "saturation")
        return cls(
            name or adapter.name,
            breaker=adapter.breaker,
            probe=adapter.aprobe,
            adapter=adapter,
            **kwargs,
        )


@dataclass(frozen=True, slots=True)
class Feature:
    """An optional capability: on while every component in ``requires`` is available
    and the level is no worse than ``worst_level``.

    ``description`` says what the feature is ("searches, reports"); ``when_off``
    what the service's users live with while it is off, in plain words
    ("searches and reports are off", "writes are being queued"): the status page's
    line for each level is made of these (see :func:`~brownout.health.level_impacts`).
    """

    name: str
    requires: frozenset[str] = frozenset()
    worst_level: Level = Level.EMERGENCY
    description: str = ""
    when_off: str = ""

    def __init__(
        self,
        name: str,
        requires: Iterable[str] = (),
        worst_level: Level = Level.EMERGENCY,
        description: str = "",
        when_off: str = "",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Feature.name must be a non-empty string, got {name!r}")
        if isinstance(requires, str):
            requires = (requires,)
        if not isinstance(worst_level, Level):
            raise TypeError(f"Feature({name!r}).worst_level must be a Level, got {worst_level!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "requires", frozenset(requires))
        object.__setattr__(self, "worst_level", worst_level)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "when_off", when_off)


def seed_features() -> tuple[Feature, ...]:
    """The feature matrix of the service brownout was first built for."""
    return (
        Feature("cache_read", {"cache"}, Level.DEGRADED, "serve reads from the cache"),
        Feature("cache_write", {"cache"}, Level.DEGRADED, "populate the cache"),
        Feature("database_write", {"database"}, Level.LIMITED, "direct database writes"),
        Feature("complex_queries", {"database"}, Level.DEGRADED, "reports, searches, joins"),
        Feature("batch_processing", {"database"}, Level.DEGRADED, "background batch jobs"),
        Feature("ai_enhancement", {"openai"}, Level.DEGRADED, "AI-enriched responses"),
        Feature("ai_recommendations", {"openai"}, Level.DEGRADED, "AI recommendations"),
        Feature("ai_pricing", {"openai"}, Level.DEGRADED, "AI price suggestions"),
        Feature("ai_invoice_extraction", {"openai"}, Level.LIMITED, "read invoices with an LLM"),
        Feature("inventory_write", set(), Level.MINIMAL, "stock movements (queued if needed)"),
        Feature("pricing_update", {"database"}, Level.LIMITED, "change prices"),
        Feature("order_processing", {"database"}, Level.LIMITED, "take orders"),
        Feature("file_upload", set(), Level.MINIMAL, "uploads (spooled if S3 is down)"),
        Feature("health_status", set(), Level.EMERGENCY, "health, status and metrics"),
        Feature("read_only_database", {"database"}, Level.MINIMAL, "read-only database access"),
    )
