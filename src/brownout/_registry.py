"""Named breakers for one application: created once, listed, observed together."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from brownout._breaker import BreakerSnapshot, CallListener, CircuitBreaker, StateListener
from brownout._clock import Clock
from brownout._config import BreakerConfig
from brownout.overload._guards import GuardPreset, Guards

__all__ = ["PRESETS", "Registry"]

#: The per-dependency defaults of the service brownout was first built for
#: (consecutive failures / open seconds / half-open probes).
PRESETS: Mapping[str, BreakerConfig] = MappingProxyType(
    {
        "openai": BreakerConfig(consecutive_failures=5, open_for=60.0, half_open_calls=2),
        "database": BreakerConfig(consecutive_failures=3, open_for=30.0, half_open_calls=1),
        "redis": BreakerConfig(consecutive_failures=5, open_for=20.0, half_open_calls=2),
        "s3": BreakerConfig(consecutive_failures=5, open_for=30.0, half_open_calls=2),
    }
)


class Registry:
    """A set of named breakers sharing a clock, presets and listeners.

    There is no global registry: the application creates one (e.g. in its
    FastAPI lifespan) and passes it along.

    >>> registry = Registry.with_defaults()
    >>> registry.get("redis").config.open_for
    20.0
    >>> registry.get("redis") is registry.get("redis")
    True
    """

    def __init__(
        self,
        presets: Mapping[str, BreakerConfig] | None = None,
        *,
        default: BreakerConfig | None = None,
        clock: Clock | None = None,
        guards: Mapping[str, GuardPreset] | None = None,
    ) -> None:
        presets = dict(presets or {})
        for key, cfg in presets.items():
            if not isinstance(cfg, BreakerConfig):
                raise TypeError(
                    f"Registry presets[{key!r}] must be a BreakerConfig, got {type(cfg).__name__}"
                )
        self._presets = presets
        guard_presets = dict(guards or {})
        for key, preset in guard_presets.items():
            if not isinstance(preset, GuardPreset):
                raise TypeError(
                    f"Registry guards[{key!r}] must be a GuardPreset, got {type(preset).__name__}"
                )
        self._guard_presets = guard_presets
        self._guards: dict[str, Guards] = {}
        self._built: set[str] = set()  # names whose preset was looked at
        self._default = default if default is not None else BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        # (on_state_change, on_call, unsubscribe functions of the breakers it was added to)
        self._listeners: list[
            tuple[StateListener | None, CallListener | None, list[Callable[[], None]]]
        ] = []

    @classmethod
    def with_defaults(
        cls, *, clock: Clock | None = None, guards: Mapping[str, GuardPreset] | None = None
    ) -> Registry:
        """A registry with the :data:`PRESETS` (``openai``, ``database``, ``redis``, ``s3``)."""
        return cls(PRESETS, clock=clock, guards=guards)

    def guards(self, name: str, *, kind: str | None = None) -> Guards:
        """The overload guards of dependency ``name``: built once from its ``guards=``
        preset, or else from the preset of ``kind`` (an adapter's kind: ``redis``,
        ``s3``, ``sql``, ``openai``), the same objects for every adapter of that name; a
        guard an adapter registered with :meth:`add_guards` wins over the preset's;
        no guard at all when there is neither.

        >>> from brownout.overload import GuardPreset
        >>> registry = Registry(guards={"redis": GuardPreset(bulkhead=20, max_wait=0.05)})
        >>> registry.guards("redis").bulkhead.limit, registry.guards("s3").bulkhead
        (20, None)
        >>> registry.guards("redis").bulkhead is registry.guards("redis").bulkhead
        True
        """
        with self._lock:
            found = self._guards.get(name, Guards())
            if name not in self._built:
                self._built.add(name)
                preset = self._guard_presets.get(name)
                if preset is None and kind is not None:
                    preset = self._guard_presets.get(kind)
                if preset is not None:
                    built = preset.build(name, self._clock)
                    found = Guards(
                        found.bulkhead or built.bulkhead,
                        found.throttle or built.throttle,
                        found.retry_budget or built.retry_budget,
                    )
                    self._guards[name] = found
            return found

    def add_guards(self, name: str, guards: Guards) -> None:
        """Register guards made elsewhere (an adapter's ``bulkhead=`` etc.), so that the
        metrics collectors that read the registry find them; a guard the registry
        already has under ``name`` is kept unless ``guards`` names another."""
        with self._lock:
            old = self._guards.get(name, Guards())
            self._guards[name] = Guards(
                guards.bulkhead or old.bulkhead,
                guards.throttle or old.throttle,
                guards.retry_budget or old.retry_budget,
            )

    @property
    def guard_presets(self) -> Mapping[str, GuardPreset]:
        """The ``guards=`` presets, by dependency name or adapter kind (read-only)."""
        return MappingProxyType(self._guard_presets)

    def all_guards(self) -> dict[str, Guards]:
        """Every dependency's guards built or registered so far, by name (for metrics)."""
        with self._lock:
            return dict(self._guards)

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker called ``name``, created on first use.

        Its config is ``config``, else the preset of that name, else the
        registry's default. Asking again with a *different* config raises
        ``ValueError`` rather than silently returning a breaker configured
        otherwise.
        """
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is not None:
                if config is not None and config != breaker.config:
                    raise ValueError(
                        f"Registry.get({name!r}): a breaker of that name already exists "
                        "with another config"
                    )
                return breaker
            cfg = config or self._presets.get(name) or self._default
            breaker = CircuitBreaker(name, cfg, clock=self._clock)
            self._subscribe_locked(breaker)
            self._breakers[name] = breaker
            return breaker

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register a breaker made elsewhere (its name must be free)."""
        with self._lock:
            if breaker.name in self._breakers:
                raise ValueError(f"Registry.add: a breaker named {breaker.name!r} already exists")
            self._subscribe_locked(breaker)
            self._breakers[breaker.name] = breaker
        return breaker

    def add_listener(
        self,
        *,
        on_state_change: StateListener | None = None,
        on_call: CallListener | None = None,
    ) -> Callable[[], None]:
        """Subscribe to every breaker in the registry, present and future.

        The breaker's listener shape (see :mod:`brownout._events`): returns a
        function that unsubscribes from all of them.
        """
        if on_state_change is None and on_call is None:
            raise ValueError("add_listener needs on_state_change= and/or on_call=")
        for label, fn in (("on_state_change", on_state_change), ("on_call", on_call)):
            if fn is not None and not callable(fn):  # refused now, not at the next add()
                raise TypeError(f"Registry.add_listener {label} must be callable, got {fn!r}")
        unsubscribers: list[Callable[[], None]] = []
        entry = (on_state_change, on_call, unsubscribers)
        with self._lock:
            self._listeners.append(entry)
            for breaker in self._breakers.values():
                unsubscribers.append(
                    breaker.add_listener(on_state_change=on_state_change, on_call=on_call)
                )

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._listeners:
                    self._listeners.remove(entry)
                for undo in unsubscribers:
                    undo()
                unsubscribers.clear()

        return unsubscribe

    def _subscribe_locked(self, breaker: CircuitBreaker) -> None:
        for on_state_change, on_call, unsubscribers in self._listeners:
            unsubscribers.append(
                breaker.add_listener(on_state_change=on_state_change, on_call=on_call)
            )

    def names(self) -> list[str]:
        with self._lock:
            return list(self._breakers)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        with self._lock:
            return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        """Every breaker's snapshot, by name."""
        return {breaker.name: breaker.snapshot() for breaker in self}

    def for_each(self, fn: Callable[[CircuitBreaker], object]) -> None:
        for breaker in self:
            fn(breaker)
