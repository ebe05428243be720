"""What metrics backends read at scrape time: breakers and adapters, counted in their own state.

Metrics are pulled, never pushed per call (``DESIGN.md``). A breaker counts
its calls in its own plain state on the path the call already takes (the
lock-free success counter, a list of durations folded into a fixed-bucket
histogram now and then) and an adapter in its :class:`~brownout.adapter.AdapterStats`
log; nothing is installed on the call path when metrics are attached. A
backend (``brownout.prometheus``, ``brownout.otel``) owns one
:class:`BreakerSource` and one :class:`AdapterSource`, attaches breakers,
registries and adapters to them, and calls ``read()`` when it is scraped.

The only listener a source installs is a *state* listener (transitions are
rare), for the transition and trip counters. Each breaker *name* is fed by one
breaker at a time (attached directly or through an attached registry), so a
breaker reachable twice is counted once. Counts are lifetime counts: a
breaker's calls made before it was attached are in them, as in its snapshot.
A breaker that is garbage-collected leaves its final counts behind (through
:meth:`~brownout.CircuitBreaker.when_collected`), so the series of its name
never goes down, and a new breaker of that name carries it on. Likewise for an
adapter: the source holds its stats (not the adapter) and keeps what they
counted once the adapter is gone.

Stdlib only: the core stays importable without any metrics library.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from brownout._adapter_stats import AdapterStats, DurationFigures, MetricFigures
from brownout._breaker import BreakerTotals, CircuitBreaker
from brownout._events import StateChange
from brownout._histogram import DURATION_BUCKETS
from brownout._registry import Registry
from brownout._state import State

if TYPE_CHECKING:
    from brownout._adapter import Adapter

__all__ = [
    "AdapterReading",
    "AdapterSource",
    "BreakerReading",
    "BreakerSource",
    "adapter_counts",
    "add_figures",
    "add_totals",
    "pool_figures",
]

logger = logging.getLogger("brownout.metrics")

ZERO_TOTALS = BreakerTotals(0, 0, 0, 0, 0, 0.0, 0, (0,) * (len(DURATION_BUCKETS) + 1))


def _noop() -> None:
    return None


def add_totals(a: BreakerTotals, b: BreakerTotals) -> BreakerTotals:
    """The sum of two breakers' totals (a collected breaker's and its successor's)."""
    return BreakerTotals(
        a.successes + b.successes,
        a.failures + b.failures,
        a.ignored + b.ignored,
        a.rejected + b.rejected,
        a.slow + b.slow,
        a.duration_sum + b.duration_sum,
        a.duration_count + b.duration_count,
        tuple(x + y for x, y in zip(a.duration_buckets, b.duration_buckets, strict=True)),
    )


class BreakerReading(NamedTuple):
    """One breaker name at a scrape: its state (``None`` when no breaker of that name is
    alive any more), its lifetime totals, and its transitions and trips."""

    name: str
    state: State | None
    totals: BreakerTotals
    transitions: dict[tuple[State, State], int]
    trips: dict[str, int]


class _Claim:
    """The breaker (weakly) that feeds one name, who attached it, and its collection hook."""

    __slots__ = ("breaker", "source", "token", "unhook")

    def __init__(
        self, source: object, breaker: CircuitBreaker, token: object, unhook: Callable[[], None]
    ) -> None:
        self.source = source
        self.breaker = weakref.ref(breaker)
        self.token = token
        self.unhook = unhook


class BreakerSource:
    """The breakers one metrics backend reads; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, _Claim] = {}
        self._registries: weakref.WeakKeyDictionary[Registry, object] = weakref.WeakKeyDictionary()
        self._retired: dict[str, BreakerTotals] = {}
        # (name, claim token, final totals) of collected breakers: appended by the breaker's
        # finalizer, which may run in any thread at any moment (even while this thread
        # holds self._lock), so it only appends; the next read folds them in
        self._collected: deque[tuple[str, object, BreakerTotals]] = deque()
        self._states: dict[str, State] = {}  # the last state seen, by name
        self._transitions: dict[str, dict[tuple[State, State], int]] = {}
        self._trips: dict[str, dict[str, int]] = {}

    # ---------------------------------------------------------------- attach

    def attach_breaker(self, breaker: CircuitBreaker) -> Callable[[], None]:
        """Read ``breaker`` at every scrape; returns a function that detaches it.

        A no-op (returning a no-op) if a live breaker of that name is already
        read, this one or another (then a warning is logged).
        """
        name = breaker.name
        source = object()
        with self._lock:
            self._fold_collected_locked()
            claim = self._claims.get(name)
            other = claim.breaker() if claim is not None else None
            if other is not None:
                if other is not breaker:
                    logger.warning(
                        "brownout metrics: another breaker named %r is already attached; "
                        "%r is not counted",
                        name,
                        breaker,
                    )
                return _noop
            self._claim_locked(name, source, breaker)
        unsubscribe = breaker.add_listener(on_state_change=self._listener(source, None))
        self._note_state(name, breaker)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                claim = self._claims.get(name)
                if claim is not None and claim.source is source:
                    del self._claims[name]
                    claim.unhook()

        return detach

    def attach_registry(self, registry: Registry) -> Callable[[], None]:
        """Read every breaker of ``registry``, present and future; returns a function that
        detaches it (its breakers are then read no more, unless attached otherwise).

        A no-op (returning a no-op) if ``registry`` is already attached.
        """
        source = object()
        with self._lock:
            if registry in self._registries:
                return _noop
            self._registries[registry] = source
        ref = weakref.ref(registry)

        def resolve(name: str) -> CircuitBreaker | None:
            reg = ref()
            return reg.get(name) if reg is not None and name in reg else None

        unsubscribe = registry.add_listener(on_state_change=self._listener(source, resolve))
        for breaker in registry:
            if self._adopt(breaker, source):
                self._note_state(breaker.name, breaker)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                reg = ref()
                if reg is not None and self._registries.get(reg) is source:
                    del self._registries[reg]
                for name, claim in list(self._claims.items()):
                    if claim.source is source:
                        del self._claims[name]
                        claim.unhook()

        return detach

    # ------------------------------------------------------------- internals

    def _claim_locked(self, name: str, source: object, breaker: CircuitBreaker) -> None:
        token = object()
        collected = self._collected

        def on_collected(_: str, final: BreakerTotals) -> None:
            collected.append((name, token, final))

        unhook = breaker.when_collected(on_collected)
        self._claims[name] = _Claim(source, breaker, token, unhook)

    def _fold_collected_locked(self) -> None:
        collected = self._collected
        while collected:
            name, token, final = collected.popleft()
            before = self._retired.get(name)
            self._retired[name] = final if before is None else add_totals(before, final)
            claim = self._claims.get(name)
            if claim is not None and claim.token is token:
                del self._claims[name]

    def _adopt(self, breaker: CircuitBreaker, source: object) -> bool:
        """Let ``source`` feed ``breaker``'s name unless a live breaker does; True if it does."""
        name = breaker.name
        with self._lock:
            self._fold_collected_locked()
            claim = self._claims.get(name)
            if claim is not None:
                current = claim.breaker()
                if current is not None:
                    return current is breaker and claim.source is source
                del self._claims[name]
            self._claim_locked(name, source, breaker)
            return True

    def _listener(
        self, source: object, resolve: Callable[[str], CircuitBreaker | None] | None
    ) -> Callable[[StateChange], None]:
        def on_state_change(event: StateChange) -> None:
            name = event.breaker
            with self._lock:
                claim = self._claims.get(name)
                owned = claim is not None and claim.source is source
            if not owned:
                breaker = resolve(name) if resolve is not None else None
                if breaker is None or not self._adopt(breaker, source):
                    return
            frm, to = event.from_state, event.to_state
            with self._lock:
                self._states[name] = to
                if frm is to:  # reconfigured, or a new manual deadline
                    return
                per = self._transitions.setdefault(name, {})
                per[(frm, to)] = per.get((frm, to), 0) + 1
                if to is State.OPEN and event.trigger != "manual":  # a timed open
                    trips = self._trips.setdefault(name, {})
                    trips[event.trigger] = trips.get(event.trigger, 0) + 1

        return on_state_change

    def _note_state(self, name: str, breaker: CircuitBreaker) -> State:
        state = breaker.state  # outside our lock: reading it may publish a transition to us
        with self._lock:
            self._states[name] = state
        return state

    # ---------------------------------------------------------------- reading

    def read(self) -> list[BreakerReading]:
        """Every breaker name's state and counts now (due transitions are applied first)."""
        with self._lock:
            registries = list(self._registries.items())
        for registry, source in registries:
            for breaker in registry:
                self._adopt(breaker, source)
        with self._lock:
            self._fold_collected_locked()
            live = {name: claim.breaker() for name, claim in self._claims.items()}
            names = list(dict.fromkeys([*live, *self._retired]))
        out = []
        for name in names:
            current = live.get(name)
            state: State | None = None
            totals = ZERO_TOTALS
            if current is not None:
                totals = current.totals()
                try:
                    state = self._note_state(name, current)
                except Exception:  # a scrape must not fail because one breaker misbehaved
                    logger.exception("brownout metrics: refreshing breaker states failed")
                    state = self._states.get(name)
            with self._lock:
                retired = self._retired.get(name)
                transitions = dict(self._transitions.get(name, {}))
                trips = dict(self._trips.get(name, {}))
            if retired is not None:
                totals = add_totals(retired, totals)
            out.append(BreakerReading(name, state, totals, transitions, trips))
        return out


# ------------------------------------------------------------------ adapters


class AdapterReading(NamedTuple):
    """The adapters of one (kind, name) at a scrape: their summed figures, and the first
    live one (for ``extra_figures()``: pool gauges), ``None`` once all are gone."""

    kind: str
    name: str
    figures: MetricFigures
    adapter: Adapter | None


def add_figures(a: MetricFigures, b: MetricFigures) -> MetricFigures:
    """The sum of two adapters' figures (two adapters of one kind and name)."""
    operations = {op: dict(counts) for op, counts in a.operations.items()}
    for op, counts in b.operations.items():
        mine = operations.setdefault(op, {})
        for outcome, n in counts.items():
            mine[outcome] = mine.get(outcome, 0) + n
    durations = {op: timed.copy() for op, timed in a.durations.items()}
    for op, timed in b.durations.items():
        mine_d = durations.setdefault(op, DurationFigures())
        mine_d.sum += timed.sum
        mine_d.count += timed.count
        mine_d.buckets = [x + y for x, y in zip(mine_d.buckets, timed.buckets, strict=True)]
    tokens = {model: dict(t) for model, t in a.tokens_by_model.items()}
    for model, t in b.tokens_by_model.items():
        mine_t = tokens.setdefault(model, {})
        for kind, n in t.items():
            mine_t[kind] = mine_t.get(kind, 0) + n
    return MetricFigures(
        operations,
        durations,
        _sum_counts(a.errors, b.errors),
        _sum_counts(a.totals, b.totals),
        tokens,
    )


def _sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return out


class AdapterSource:
    """The adapters one metrics backend reads; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: weakref.WeakKeyDictionary[Adapter, int] = weakref.WeakKeyDictionary()
        # attach order -> (the adapter, weakly; its stats; kind; name)
        self._entries: dict[int, tuple[weakref.ref[Adapter], AdapterStats, str, str]] = {}
        self._next = itertools.count()
        self._retired: dict[tuple[str, str], MetricFigures] = {}

    def attach_adapter(self, adapter: Adapter) -> Callable[[], None]:
        """Read ``adapter`` at every scrape; returns a function that detaches it.

        Attaching an adapter that is already attached changes nothing (and
        returns a no-op).
        """
        with self._lock:
            if adapter in self._ids:
                return _noop
            n = self._ids[adapter] = next(self._next)
            self._entries[n] = (weakref.ref(adapter), adapter.stats, adapter.kind, adapter.name)

        def detach() -> None:
            with self._lock:
                self._entries.pop(n, None)
                self._ids.pop(adapter, None)

        return detach

    def adapters(self) -> list[Adapter]:
        """The attached adapters still alive, in attach order."""
        with self._lock:
            refs = [entry[0] for entry in self._entries.values()]
        return [a for a in (ref() for ref in refs) if a is not None]

    def read(self) -> list[AdapterReading]:
        """Every attached (kind, name)'s figures now."""
        with self._lock:
            entries = list(self._entries.items())
        merged: dict[tuple[str, str], tuple[MetricFigures, Adapter | None]] = {}
        gone: list[tuple[int, tuple[str, str], MetricFigures]] = []
        for n, (ref, stats, kind, name) in entries:
            figures = stats.metrics()
            adapter = ref()
            key = (kind, name)
            if adapter is None:  # collected: what it counted stays
                gone.append((n, key, figures))
                continue
            before = merged.get(key)
            if before is None:
                merged[key] = (figures, adapter)
            else:
                merged[key] = (add_figures(before[0], figures), before[1])
        with self._lock:
            for n, key, figures in gone:
                if self._entries.pop(n, None) is not None:
                    before_r = self._retired.get(key)
                    self._retired[key] = (
                        figures if before_r is None else add_figures(before_r, figures)
                    )
            retired = dict(self._retired)
        out = []
        for key in dict.fromkeys([*merged, *retired]):
            figures_live, adapter_live = merged.get(key, (None, None))
            base = retired.get(key)
            if figures_live is None:
                assert base is not None
                figures = base
            else:
                figures = figures_live if base is None else add_figures(base, figures_live)
            out.append(AdapterReading(key[0], key[1], figures, adapter_live))
        return out


def adapter_counts(
    reading: AdapterReading,
) -> dict[str, list[tuple[tuple[str, ...], int]]]:
    """An adapter reading's counters by metric (the name without namespace and ``_total``),
    as (label values, value) pairs: what every backend exports, computed once here.

    ``dependency_requests`` (dependency, name, operation, outcome), ``dependency_errors``
    (dependency, name, kind), ``cache_hits`` / ``cache_misses`` (name; for adapters that
    count lookups), ``s3_bytes`` (name, direction; S3 adapters), ``openai_tokens`` (name,
    model, kind; ``unknown`` for calls that named no model).
    """
    dependency, name, figs = reading.kind, reading.name, reading.figures
    out: dict[str, list[tuple[tuple[str, ...], int]]] = {
        "dependency_requests": [
            ((dependency, name, operation, outcome), n)
            for operation, per in figs.operations.items()
            for outcome, n in per.items()
        ],
        "dependency_errors": [((dependency, name, kind), n) for kind, n in figs.errors.items()],
        "cache_hits": [],
        "cache_misses": [],
        "s3_bytes": [],
        "openai_tokens": [],
    }
    totals = figs.totals
    if "cache_hits" in totals or "cache_misses" in totals:
        out["cache_hits"].append(((name,), totals.get("cache_hits", 0)))
        out["cache_misses"].append(((name,), totals.get("cache_misses", 0)))
    if dependency == "s3":
        for key, direction in (("bytes_sent", "up"), ("bytes_received", "down")):
            if key in totals:
                out["s3_bytes"].append(((name, direction), totals[key]))
    known = {"prompt": 0, "completion": 0}
    for model, per_kind in figs.tokens_by_model.items():
        for kind in ("prompt", "completion"):
            n = per_kind.get(kind, 0)
            known[kind] += n
            if n:
                out["openai_tokens"].append(((name, model, kind), n))
    for kind in ("prompt", "completion"):  # tokens of calls that named no model
        unknown = totals.get(f"{kind}_tokens", 0) - known[kind]
        if unknown > 0:
            out["openai_tokens"].append(((name, "unknown", kind), unknown))
    return out


def pool_figures(adapter: Adapter) -> dict[str, float]:
    """``pool_in_use`` / ``pool_size`` from ``adapter.extra_figures()``, where it reports them
    as numbers (raises what ``extra_figures()`` raises)."""
    figures = adapter.extra_figures()
    out = {}
    for key in ("pool_in_use", "pool_size"):
        value = figures.get(key)
        if not isinstance(value, bool) and isinstance(value, int | float):
            out[key] = float(value)
    return out
