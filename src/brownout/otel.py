"""OpenTelemetry metrics for brownout (extra ``otel``: ``pip install 'brownout[otel]'``).

The same figures as :mod:`brownout.prometheus`, read from the same sources
(``brownout._metrics``) through OpenTelemetry *observable* instruments: the
breakers and adapters count in their own state on the path each call already
takes, and the SDK's reader calls the instruments' callbacks when it collects.
Nothing runs per guarded call or per adapter operation.

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
>>> from brownout import Registry
>>> reader = InMemoryMetricReader()
>>> metrics = OTelMetrics(MeterProvider(metric_readers=[reader]))
>>> breakers = Registry.with_defaults()
>>> detach = metrics.attach(breakers)
>>> breakers.get("redis").call(len, "abc")
3
>>> data = reader.get_metrics_data()
>>> "brownout_calls" in {m.name for rm in data.resource_metrics
...                      for sm in rm.scope_metrics for m in sm.metrics}
True

Instrument names are the Prometheus backend's names without ``_total`` (an
OpenTelemetry-to-Prometheus exporter adds it back to monotonic counters), with
the same attributes as its labels:

* breakers: ``brownout_breaker_state`` (gauge, ``breaker``, ``state``: 1 for the
  current state, 0 for the others), ``brownout_calls`` (``breaker``,
  ``outcome``), ``brownout_slow_calls``, ``brownout_calls_rejected``,
  ``brownout_breaker_transitions`` (``breaker``, ``from_state``, ``to_state``),
  ``brownout_breaker_trips`` (``breaker``, ``trigger``);
* adapters: ``brownout_dependency_requests`` (``dependency``, ``name``,
  ``operation``, ``outcome``), ``brownout_dependency_errors`` (``dependency``,
  ``name``, ``kind``), ``brownout_cache_hits`` / ``brownout_cache_misses``
  (``name``), ``brownout_s3_bytes`` (``name``, ``direction``),
  ``brownout_openai_tokens`` (``name``, ``model``, ``kind``), and the gauges
  ``brownout_pool_connections_in_use`` / ``brownout_pool_size`` (``dependency``,
  ``name``);
* overload guards (attached directly, or with their adapter or registry):
  ``brownout_bulkhead_in_use`` / ``_limit`` / ``_waiting`` (gauges),
  ``brownout_bulkhead_admitted`` / ``_rejections``, ``brownout_throttle_requests``
  / ``_rejections`` / ``_refusals`` and the gauge ``brownout_throttle_probability``,
  ``brownout_retry_budget_requests`` and ``brownout_retry_budget_retries``
  (``outcome``: ``made`` or ``refused``), the gauges ``brownout_bulkhead_peak_in_use``
  (a bulkhead built under the kill switch) and ``brownout_guard_disabled``
  (``guard``: ``bulkhead``, ``throttle``, ``retry_budget``); attribute ``name``,
  the guard's.

Durations: OpenTelemetry has no observable histogram, so the fixed-bucket
histograms are exported as three observable counters in Prometheus' own shape:
``brownout_call_duration_seconds_sum`` (unit ``s``), ``..._count`` and
``..._bucket`` (cumulative, with an ``le`` attribute: ``"0.0005"`` ...
``"10.0"``, ``"+Inf"``); likewise ``brownout_dependency_request_duration_seconds_*``
(attributes ``dependency``, ``name``, ``operation``).
"""

from __future__ import annotations

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised in a test by hiding the module
    raise ImportError(
        "brownout.otel needs opentelemetry-sdk: pip install 'brownout[otel]'"
    ) from exc

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, overload

from brownout import CircuitBreaker, Registry, State, __version__
from brownout._histogram import DURATION_BUCKETS, to_cumulative
from brownout._metrics import (
    AdapterReading,
    AdapterSource,
    BreakerReading,
    BreakerSource,
    adapter_counts,
    pool_figures,
)
from brownout.overload import AdaptiveThrottle, Bulkhead, RetryBudget
from brownout.overload._metrics import GUARD_METRICS, GuardSource

if TYPE_CHECKING:
    from brownout._adapter import Adapter

__all__ = ["OTelMetrics"]

logger = logging.getLogger("brownout.otel")

_STATES = tuple(State)
_LE = (*(repr(float(b)) for b in DURATION_BUCKETS), "+Inf")

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def _histogram_parts(
    key: dict[str, str], total: float, count: int, buckets: Sequence[int]
) -> tuple[Observation, Observation, list[Observation]]:
    return (
        Observation(total, key),
        Observation(count, key),
        [
            Observation(n, {**key, "le": le})
            for le, n in zip(_LE, to_cumulative(buckets), strict=True)
        ],
    )


class OTelMetrics:
    """brownout's metrics as OpenTelemetry observable instruments on one ``Meter``.

    ``meter_provider`` defaults to the global one
    (``opentelemetry.metrics.get_meter_provider()``); ``namespace`` prefixes
    every instrument name (``""`` for none). Attach breakers, registries and
    adapters as with :class:`brownout.prometheus.PrometheusMetrics`.
    """

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, namespace: str = "brownout"
    ) -> None:
        if not isinstance(namespace, str):
            raise TypeError(f"OTelMetrics namespace must be a str, got {namespace!r}")
        provider = (
            meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
        )
        self._meter: Meter = provider.get_meter("brownout", __version__)
        self._ns = namespace
        self._breakers = BreakerSource()
        self._adapters = AdapterSource()
        self._guards = GuardSource()
        self._breaker_instruments()
        self._adapter_instruments()
        self._overload_instruments()

    @property
    def meter(self) -> Meter:
        return self._meter

    # ---------------------------------------------------------------- attach

    @overload
    def attach(self, target: CircuitBreaker) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Registry) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Adapter) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Bulkhead | AdaptiveThrottle | RetryBudget) -> Callable[[], None]: ...

    def attach(
        self,
        target: CircuitBreaker | Registry | Adapter | Bulkhead | AdaptiveThrottle | RetryBudget,
    ) -> Callable[[], None]:
        """Read a breaker, every breaker of a registry (present and future), an adapter
        or an overload guard at each collection (an adapter's guards and a registry's
        with it). Returns a function that detaches it; attaching again changes nothing."""
        if isinstance(target, CircuitBreaker):
            return self._breakers.attach_breaker(target)
        if isinstance(target, Registry):
            registry = target
            return _both(
                self._breakers.attach_registry(target),
                self._guards.attach(registry, lambda: registry.all_guards().values()),
            )
        if isinstance(target, Bulkhead | AdaptiveThrottle | RetryBudget):
            return self._guards.attach_guard(target)
        from brownout._adapter import Adapter

        if isinstance(target, Adapter):
            guards = target.guards
            return _both(
                self._adapters.attach_adapter(target),
                self._guards.attach(target, lambda: (guards,)),
            )
        raise TypeError(
            "OTelMetrics.attach needs a CircuitBreaker, a Registry or an Adapter (or an "
            f"overload guard), got {type(target).__name__}"
        )

    # ----------------------------------------------------------- instruments

    def _name(self, name: str) -> str:
        return f"{self._ns}_{name}" if self._ns else name

    def _counter(self, name: str, doc: str, callback: Callback, unit: str = "") -> None:
        self._meter.create_observable_counter(
            self._name(name), callbacks=[callback], unit=unit, description=doc
        )

    def _gauge(self, name: str, doc: str, callback: Callback) -> None:
        self._meter.create_observable_gauge(self._name(name), callbacks=[callback], description=doc)

    def _read_breakers(self) -> list[BreakerReading]:
        return self._breakers.read()

    def _read_adapters(self) -> list[AdapterReading]:
        return self._adapters.read()

    def _breaker_instruments(self) -> None:
        def state(_: CallbackOptions) -> Iterable[Observation]:
            for r in self._read_breakers():
                if r.state is not None:
                    for s in _STATES:
                        yield Observation(
                            1 if s is r.state else 0, {"breaker": r.name, "state": s.value}
                        )

        def calls(_: CallbackOptions) -> Iterable[Observation]:
            for r in self._read_breakers():
                t = r.totals
                for outcome, n in (
                    ("success", t.successes),
                    ("failure", t.failures),
                    ("ignored", t.ignored),
                    ("rejected", t.rejected),
                ):
                    yield Observation(n, {"breaker": r.name, "outcome": outcome})

        def slow(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(r.totals.slow, {"breaker": r.name}) for r in self._read_breakers()]

        def rejected(_: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(r.totals.rejected, {"breaker": r.name}) for r in self._read_breakers()
            ]

        def transitions(_: CallbackOptions) -> Iterable[Observation]:
            for r in self._read_breakers():
                for (frm, to), n in r.transitions.items():
                    yield Observation(
                        n, {"breaker": r.name, "from_state": frm.value, "to_state": to.value}
                    )

        def trips(_: CallbackOptions) -> Iterable[Observation]:
            for r in self._read_breakers():
                for trigger, n in r.trips.items():
                    yield Observation(n, {"breaker": r.name, "trigger": trigger})

        def durations(part: int) -> Callback:
            def read(_: CallbackOptions) -> Iterable[Observation]:
                out: list[Observation] = []
                for r in self._read_breakers():
                    t = r.totals
                    parts = _histogram_parts(
                        {"breaker": r.name}, t.duration_sum, t.duration_count, t.duration_buckets
                    )
                    chosen = parts[part]
                    out.extend(chosen if isinstance(chosen, list) else [chosen])
                return out

            return read

        self._gauge(
            "breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            state,
        )
        self._counter(
            "calls",
            "Calls through a circuit breaker, by outcome (success, failure, ignored, rejected).",
            calls,
        )
        self._counter("slow_calls", "Calls that took at least slow_call_duration.", slow)
        self._counter("calls_rejected", "Calls rejected because the breaker was open.", rejected)
        self._counter("breaker_transitions", "Circuit breaker state transitions.", transitions)
        self._counter(
            "breaker_trips", "Transitions into the open state, by what tripped the breaker.", trips
        )
        what = "timed calls let through a circuit breaker"
        self._counter(
            "call_duration_seconds_sum", f"Total duration of the {what}.", durations(0), "s"
        )
        self._counter("call_duration_seconds_count", f"Number of {what}.", durations(1))
        self._counter(
            "call_duration_seconds_bucket",
            f"Cumulative count of {what} by upper bound (le, seconds).",
            durations(2),
        )

    def _overload_instruments(self) -> None:
        def read_metric(key: str, labels: tuple[str, ...]) -> Callback:
            def read(_: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(value, dict(zip(labels, values, strict=True)))
                    for values, value in self._guards.read()[key]
                ]

            return read

        for m in GUARD_METRICS:
            if m.counter:
                self._counter(m.key, m.doc, read_metric(m.key, m.labels))
            else:
                self._gauge(m.key, m.doc, read_metric(m.key, m.labels))

    def _adapter_instruments(self) -> None:
        def counts(key: str) -> Callback:
            labels = {
                "dependency_requests": ("dependency", "name", "operation", "outcome"),
                "dependency_errors": ("dependency", "name", "kind"),
                "cache_hits": ("name",),
                "cache_misses": ("name",),
                "s3_bytes": ("name", "direction"),
                "openai_tokens": ("name", "model", "kind"),
            }[key]

            def read(_: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(n, dict(zip(labels, values, strict=True)))
                    for reading in self._read_adapters()
                    for values, n in adapter_counts(reading)[key]
                ]

            return read

        def durations(part: int) -> Callback:
            def read(_: CallbackOptions) -> Iterable[Observation]:
                out: list[Observation] = []
                for r in self._read_adapters():
                    for operation, timed in r.figures.durations.items():
                        key = {"dependency": r.kind, "name": r.name, "operation": operation}
                        chosen = _histogram_parts(key, timed.sum, timed.count, timed.buckets)[part]
                        out.extend(chosen if isinstance(chosen, list) else [chosen])
                return out

            return read

        def pool(key: str) -> Callback:
            def read(_: CallbackOptions) -> Iterable[Observation]:
                out = []
                seen: set[tuple[str, str]] = set()
                for adapter in self._adapters.adapters():
                    labels = (adapter.kind, adapter.name)
                    if labels in seen:
                        continue
                    seen.add(labels)
                    try:
                        value = pool_figures(adapter).get(key)
                    except Exception:  # a collection must not fail because of one adapter
                        logger.exception(
                            "brownout.otel: extra_figures() of adapter %r failed", adapter.name
                        )
                        continue
                    if value is not None:
                        out.append(Observation(value, {"dependency": labels[0], "name": labels[1]}))
                return out

            return read

        self._counter(
            "dependency_requests",
            "Operations of a dependency adapter, by outcome (success, failure, caller_error, "
            "rejected).",
            counts("dependency_requests"),
        )
        self._counter(
            "dependency_errors",
            "Failed operations of a dependency adapter (counted against it), by error kind.",
            counts("dependency_errors"),
        )
        self._counter("cache_hits", "Cache lookups that found the key.", counts("cache_hits"))
        self._counter(
            "cache_misses", "Cache lookups that did not find the key.", counts("cache_misses")
        )
        self._counter(
            "s3_bytes", "Bytes moved to (up) and from (down) object storage.", counts("s3_bytes")
        )
        self._counter(
            "openai_tokens",
            "Tokens used by LLM calls, by model and kind (prompt, completion).",
            counts("openai_tokens"),
        )
        what = "dependency operations (rejected operations excluded)"
        self._counter(
            "dependency_request_duration_seconds_sum",
            f"Total duration of {what}.",
            durations(0),
            "s",
        )
        self._counter(
            "dependency_request_duration_seconds_count", f"Number of {what}.", durations(1)
        )
        self._counter(
            "dependency_request_duration_seconds_bucket",
            f"Cumulative count of {what} by upper bound (le, seconds).",
            durations(2),
        )
        self._gauge(
            "pool_connections_in_use",
            "Connections of the pool checked out now.",
            pool("pool_in_use"),
        )
        self._gauge(
            "pool_size", "Size of the connection pool (its configured maximum).", pool("pool_size")
        )

    def __repr__(self) -> str:
        return f"<OTelMetrics namespace={self._ns!r}>"


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def detach() -> None:
        first()
        second()

    return detach
