"""Breaker metrics, fed by :class:`~brownout.CircuitBreaker` listeners.

One :class:`BreakerMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`
(created on first use through ``PrometheusMetrics.group``). It subscribes to
breakers (``CircuitBreaker.add_listener``) and registries
(``Registry.add_listener``, which covers breakers created later) and turns
their events into the ``<namespace>_breaker_*`` / ``<namespace>_call*``
metrics listed in ``brownout.prometheus``.

Each breaker *name* is fed by exactly one source (a directly attached breaker
or an attached registry), so a breaker reachable twice (attached twice, or
attached on its own and through its registry) is still counted once. The
state gauge is a custom collector: it reads ``breaker.state`` of every tracked
breaker before each scrape, so a break that is over shows as ``half_open``
even when no call came by to notice.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from brownout import CallEvent, CircuitBreaker, Outcome, Registry, State, StateChange
from brownout.prometheus._common import DURATION_BUCKETS, full_name

__all__ = ["BreakerMetrics"]

logger = logging.getLogger("brownout.prometheus")

_REJECTED = Outcome.REJECTED
_STATES = tuple(State)


def _noop() -> None:
    return None


class _Claim:
    """Who feeds one breaker name: a source token and (weakly) the breaker, if known."""

    __slots__ = ("breaker", "source")

    def __init__(self, source: object, breaker: CircuitBreaker | None) -> None:
        self.source = source
        self.breaker = weakref.ref(breaker) if breaker is not None else None

    def alive(self) -> bool:
        return self.breaker is None or self.breaker() is not None


class _Series:
    """The labelled children of one breaker, cached so the per-call path skips ``labels()``."""

    __slots__ = ("calls", "duration", "rejected", "slow")

    def __init__(self, metrics: BreakerMetrics, name: str) -> None:
        self.calls = {o: metrics.calls.labels(name, o.value) for o in Outcome}
        self.slow = metrics.slow_calls.labels(name)
        self.rejected = metrics.rejected.labels(name)
        self.duration = metrics.duration.labels(name)


class _StateCollector:
    """``<namespace>_breaker_state{breaker,state}``: 1 for the current state, 0 for the others."""

    def __init__(self, owner: BreakerMetrics, name: str) -> None:
        self._owner = owner
        self._name = name

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self._name,
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            labels=("breaker", "state"),
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        try:
            self._owner.refresh()
        except Exception:  # a scrape must not fail because one breaker misbehaved
            logger.exception("brownout.prometheus: refreshing breaker states failed")
        family = self._family()
        for breaker, current in self._owner.states().items():
            for state in _STATES:
                family.add_metric((breaker, state.value), 1.0 if state is current else 0.0)
        return [family]


class BreakerMetrics:
    """The breaker metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, _Claim] = {}
        self._series: dict[str, _Series] = {}
        self._states: dict[str, State] = {}
        self._from_events: set[str] = set()  # names whose state a StateChange has set
        self._breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
        self._registries: weakref.WeakKeyDictionary[Registry, object] = weakref.WeakKeyDictionary()

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        registry.register(_StateCollector(self, full_name(namespace, "breaker_state")))
        self.calls = counter(
            "calls",
            "Calls through a circuit breaker, by outcome (success, failure, ignored, rejected).",
            ("breaker", "outcome"),
        )
        self.slow_calls = counter(
            "slow_calls",
            "Calls that took at least the breaker's slow_call_duration.",
            ("breaker",),
        )
        self.rejected = counter(
            "calls_rejected",
            "Calls rejected because the breaker was open.",
            ("breaker",),
        )
        self.transitions = counter(
            "breaker_transitions",
            "Circuit breaker state transitions.",
            ("breaker", "from_state", "to_state"),
        )
        self.trips = counter(
            "breaker_trips",
            "Transitions into the open state, by what tripped the breaker.",
            ("breaker", "trigger"),
        )
        self.duration = Histogram(
            "call_duration_seconds",
            "Duration of calls let through a circuit breaker (rejections excluded).",
            ("breaker",),
            namespace=namespace,
            registry=registry,
            buckets=DURATION_BUCKETS,
        )

    # ---------------------------------------------------------------- attach

    def attach_breaker(self, breaker: CircuitBreaker) -> Callable[[], None]:
        """Feed the metrics from ``breaker``; returns a function that detaches it.

        A no-op (returning a no-op) if a live breaker of that name is already
        fed, by this breaker or through an attached registry.
        """
        name = breaker.name
        source = object()
        with self._lock:
            claim = self._claims.get(name)
            if claim is not None and claim.alive():
                other = claim.breaker() if claim.breaker is not None else None
                if other is not None and other is not breaker:
                    logger.warning(
                        "brownout.prometheus: another breaker named %r is already attached; "
                        "%r is not counted",
                        name,
                        breaker,
                    )
                return _noop
            self._claim_locked(name, source, breaker)
            self._breakers.add(breaker)

        def owns(name: str) -> bool:
            claim = self._claims.get(name)
            return claim is not None and claim.source is source

        on_state_change, on_call = self._listeners(owns)
        unsubscribe = breaker.add_listener(on_state_change=on_state_change, on_call=on_call)
        self._sync_state(name, breaker)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                if owns(name):
                    del self._claims[name]
                    self._states.pop(name, None)
                    self._from_events.discard(name)
                self._breakers.discard(breaker)

        return detach

    def attach_registry(self, registry: Registry) -> None:
        """Feed the metrics from every breaker of ``registry``, present and future."""
        source = object()
        with self._lock:
            if registry in self._registries:
                return
            self._registries[registry] = source
        ref = weakref.ref(registry)

        def resolve(name: str) -> CircuitBreaker | None:
            reg = ref()
            return reg.get(name) if reg is not None and name in reg else None

        def owns(name: str) -> bool:
            claim = self._claims.get(name)
            if claim is not None:
                if claim.source is source:
                    return True
                if claim.alive():
                    return False
            return self._adopt(name, source, resolve(name))

        on_state_change, on_call = self._listeners(owns)
        registry.add_listener(on_state_change=on_state_change, on_call=on_call)
        for breaker in registry:
            self._adopt(breaker.name, source, breaker)

    # ------------------------------------------------------------- listeners

    def _listeners(
        self, owns: Callable[[str], bool]
    ) -> tuple[Callable[[StateChange], None], Callable[[CallEvent], None]]:
        series = self._series

        def on_call(event: CallEvent) -> None:
            name = event.breaker
            if not owns(name):
                return
            s = series.get(name) or self._new_series(name)
            outcome = event.outcome
            s.calls[outcome].inc()
            if outcome is _REJECTED:
                s.rejected.inc()
                return
            if event.slow:
                s.slow.inc()
            s.duration.observe(event.duration)

        def on_state_change(event: StateChange) -> None:
            name = event.breaker
            if not owns(name):
                return
            with self._lock:  # the gauge first: it must not depend on the counters working
                self._states[name] = event.to_state
                self._from_events.add(name)
            if event.from_state is event.to_state:  # reconfigured, or a new manual deadline
                return
            self.transitions.labels(name, event.from_state.value, event.to_state.value).inc()
            if event.to_state is State.OPEN and event.trigger != "manual":  # a timed open
                self.trips.labels(name, event.trigger).inc()

        return on_state_change, on_call

    # ---------------------------------------------------------------- claims

    def _claim_locked(self, name: str, source: object, breaker: CircuitBreaker | None) -> None:
        self._claims[name] = _Claim(source, breaker)
        self._from_events.discard(name)
        if name not in self._series:
            self._series[name] = _Series(self, name)

    def _adopt(self, name: str, source: object, breaker: CircuitBreaker | None) -> bool:
        """Let ``source`` feed ``name`` unless another live source does; True if it feeds it."""
        with self._lock:
            claim = self._claims.get(name)
            if claim is not None and claim.source is source:
                return True
            if claim is not None and claim.alive():
                return False
            self._claim_locked(name, source, breaker)
        if breaker is not None:
            self._sync_state(name, breaker)
        return True

    def _new_series(self, name: str) -> _Series:
        with self._lock:
            s = self._series.get(name)
            if s is None:
                s = self._series[name] = _Series(self, name)
            return s

    def _sync_state(self, name: str, breaker: CircuitBreaker) -> None:
        """Record ``breaker.state`` unless StateChange events already govern the gauge."""
        state = breaker.state  # outside our lock: reading it may publish a transition to us
        with self._lock:
            claim = self._claims.get(name)
            if claim is None or claim.breaker is None or claim.breaker() is not breaker:
                return
            if name not in self._from_events:
                self._states[name] = state

    # ---------------------------------------------------------------- scrape

    def refresh(self) -> None:
        """Read every tracked breaker's state (applying due transitions); run before a scrape."""
        with self._lock:
            breakers = list(self._breakers)
            registries = list(self._registries.items())
        for breaker in breakers:
            self._sync_state(breaker.name, breaker)
        for registry, source in registries:
            for breaker in registry:
                if self._adopt(breaker.name, source, breaker):
                    self._sync_state(breaker.name, breaker)

    def states(self) -> dict[str, State]:
        """The current state of every tracked breaker, by name."""
        with self._lock:
            return dict(self._states)
