"""Prometheus metrics for brownout (extra ``prometheus``: ``pip install 'brownout[prometheus]'``).

Metrics are *pulled*: breakers and adapters count in their own plain state on
the path each call already takes, and the collectors here read it when
Prometheus scrapes (``brownout._metrics``). Attaching them installs no call
listener: a guarded call costs the same with metrics as without. They live in a
``CollectorRegistry`` of your choosing (a new private one by default, never the
global ``prometheus_client.REGISTRY`` unless you pass it):

>>> from brownout import Registry
>>> from brownout.prometheus import CONTENT_TYPE, PrometheusMetrics
>>> breakers = Registry.with_defaults()
>>> metrics = PrometheusMetrics()
>>> detach = metrics.attach(breakers)  # every breaker of the registry, present and future
>>> breakers.get("redis").call(len, "abc")
3
>>> metrics.registry.get_sample_value(
...     "brownout_calls_total", {"breaker": "redis", "outcome": "success"}
... )
1.0
>>> body = metrics.render()  # serve it at /metrics with Content-Type: CONTENT_TYPE

Breaker metrics (labels in braces; ``breaker`` is the breaker's name):

* ``brownout_breaker_state{breaker,state}`` gauge: 1 for the current state, 0
  for the others (read from ``breaker.state`` at each scrape; none for a
  breaker that was garbage-collected, whose counters stay);
* ``brownout_breaker_transitions_total{breaker,from_state,to_state}``;
* ``brownout_breaker_trips_total{breaker,trigger}``: transitions into ``open``,
  by ``StateChange.trigger``;
* ``brownout_calls_total{breaker,outcome}``: outcome is ``success``,
  ``failure``, ``ignored`` or ``rejected``;
* ``brownout_calls_rejected_total{breaker}``;
* ``brownout_slow_calls_total{breaker}``: calls at least ``slow_call_duration`` long;
* ``brownout_call_duration_seconds{breaker}`` histogram of the *timed* calls
  (successes and failures; a breaker on its untimed lock-free path times none).

Counts are the breaker's lifetime counts (``CircuitBreaker.totals()``); a
collected breaker's counts stay in its name's series and a new breaker of the
same name carries them on.

Degradation metrics (``metrics.attach(manager)``, a
:class:`~brownout.health.DegradationManager`; level labels are level names):

* ``brownout_degradation_level``: the level's number, 0 (OPTIMAL) to 4 (EMERGENCY);
* ``brownout_degradation_level_state{level}``: 1 for the current level, 0 for the others;
* ``brownout_degradation_transitions_total{from_level,to_level}``;
* ``brownout_health_score`` and ``brownout_component_health_score{component}`` (0-100);
* ``brownout_cascade_expected_extra_load{source,target}``: the expected extra
  load fraction on ``target`` while ``source`` is down, 0 otherwise;
* ``brownout_recovery_seconds`` histogram: incident durations, observed when
  the level is back to OPTIMAL;
* ``brownout_feature_enabled{feature}``: 1 on, 0 off.

Adapter metrics (``metrics.attach(adapter)``; ``dependency`` is the adapter's kind):

* ``brownout_dependency_requests_total{dependency,name,operation,outcome}``:
  outcome is ``success``, ``failure``, ``caller_error`` or ``rejected``;
* ``brownout_dependency_errors_total{dependency,name,kind}``: failures, by error kind;
* ``brownout_dependency_request_duration_seconds{dependency,name,operation}``
  histogram (rejections not observed);
* ``brownout_cache_hits_total{name}``, ``brownout_cache_misses_total{name}``;
* ``brownout_s3_bytes_total{name,direction}``: direction ``up`` or ``down``;
* ``brownout_openai_tokens_total{name,model,kind}``: kind ``prompt`` or ``completion``;
* ``brownout_pool_connections_in_use{dependency,name}`` and
  ``brownout_pool_size{dependency,name}``: read from ``adapter.extra_figures()``
  at each scrape, for adapters that report a pool.

Overload metrics (``metrics.attach(bulkhead)``, a throttle or a retry budget; an
adapter's guards and a registry's are attached with it; ``name`` is the guard's):

* gauges ``brownout_bulkhead_in_use{name}``, ``brownout_bulkhead_limit{name}``
  (an adaptive limit's current value), ``brownout_bulkhead_waiting{name}``;
* ``brownout_bulkhead_admitted_total{name}``, ``brownout_bulkhead_rejections_total{name}``,
  and for a bulkhead built under the kill switch ``brownout_bulkhead_peak_in_use{name}``;
* ``brownout_throttle_requests_total{name}``, ``brownout_throttle_rejections_total{name}``
  (shed locally), ``brownout_throttle_refusals_total{name}`` (refused by the
  dependency) and the gauge ``brownout_throttle_probability{name}``;
* ``brownout_retry_budget_requests_total{name}`` (first attempts) and
  ``brownout_retry_budget_retries_total{name,outcome}``: outcome ``made`` or
  ``refused`` (over the budget: not made);
* ``brownout_guard_disabled{name,guard}``: 1 for a guard built under the kill switch
  (``BROWNOUT_DISABLED=1``: it counts, never refuses), else 0; ``guard`` is
  ``bulkhead``, ``throttle`` or ``retry_budget``.

Outbox metrics (``metrics.attach(outbox)``, a :class:`~brownout.outbox.Outbox`;
``outbox`` is the journal file's stem): gauges read from ``outbox.stats()`` at
each scrape, counters and histograms fed by the outbox's listener:

* ``brownout_outbox_pending{outbox}``, ``brownout_outbox_pending_bytes{outbox}``,
  ``brownout_outbox_oldest_pending_age_seconds{outbox}`` (0 when empty),
  ``brownout_outbox_dead_letters_stored{outbox}``, and the bounds
  ``brownout_outbox_max_pending{outbox}``, ``brownout_outbox_max_bytes{outbox}``;
* ``brownout_outbox_submitted_total{outbox,operation}``,
  ``brownout_outbox_refused_total{outbox,reason}`` (reason ``full`` or ``error``),
  ``brownout_outbox_replayed_total{outbox,operation}``,
  ``brownout_outbox_dead_letters_total{outbox,operation}``, and what an operator
  did with them: ``brownout_outbox_dead_letters_retried_total{outbox,operation}``,
  ``brownout_outbox_dead_letters_discarded_total{outbox,operation}``;
* histograms ``brownout_outbox_submit_seconds{outbox}`` (until on disk),
  ``brownout_outbox_replay_seconds{outbox}`` (applying one intent) and
  ``brownout_outbox_queued_seconds{outbox}`` (from accepted to applied).

Shedding metrics (``metrics.attach(shedder)``, a :class:`~brownout.web.Shedder`;
``shedder`` label ``edge``), read from ``shedder.snapshot()`` at each scrape:
* ``brownout_requests_in_flight{shedder,criticality}``;
* ``brownout_requests_admitted_total{shedder,criticality}``;
* ``brownout_requests_shed_total{shedder,criticality,reason}``: reason
  ``overload`` or ``level``;
* ``brownout_requests_queued{shedder,criticality}`` (waiting for a slot) and
  ``brownout_requests_abandoned_total{shedder,criticality}`` (their client left first);
* ``brownout_queueing_delay_seconds{shedder}`` and ``brownout_shed_pressure{shedder}``.

Spool metrics (``metrics.attach(spool)``, a :class:`~brownout.spool.Spool`;
``spool`` is the directory's name):

* gauges ``brownout_spool_pending_files{spool}``, ``brownout_spool_pending_bytes{spool}``,
  ``brownout_spool_oldest_pending_age_seconds{spool}``,
  ``brownout_spool_failed_entries{spool}``, ``brownout_spool_failed_bytes{spool}``
  (entries the uploader gave up on, waiting for an operator),
  ``brownout_spool_quarantined_entries{spool}``, ``brownout_spool_max_files{spool}``,
  ``brownout_spool_max_bytes{spool}``, read from ``spool.stats()`` at each scrape;
* counters ``brownout_spool_spooled_total``, ``brownout_spool_spooled_bytes_total``,
  ``brownout_spool_uploaded_total``, ``brownout_spool_uploaded_bytes_total``,
  ``brownout_spool_upload_failures_total``, ``brownout_spool_gave_up_total``,
  ``brownout_spool_retargeted_total``, ``brownout_spool_discarded_total``,
  ``brownout_spool_quarantined_total``
  and histograms ``brownout_spool_put_seconds``, ``brownout_spool_upload_seconds``
  (label ``spool``).

Adapter figures are the adapters' lifetime figures (``AdapterStats.metrics()``),
also read at scrape time. Outbox and spool counters are still fed by their
listeners (one event per submit or upload, not per guarded call).

Extending: each family of metrics is a *group*, a class in a private module of
this package whose constructor takes ``(registry, namespace)`` and creates its
metrics there (breakers: ``_breakers.BreakerMetrics``). ``metrics.group(cls)``
creates the group on first use and returns the same instance afterwards, so
metrics are only registered for what is used, and each exists once per
``PrometheusMetrics``. Adapter (``_adapters.AdapterMetrics``) and degradation
(``_health.HealthMetrics``), outbox and spool (``_outbox``) metrics are groups too, fed through
:meth:`PrometheusMetrics.attach`; a new family is a new module with its group
class and a branch there. Shared helpers (``DURATION_BUCKETS``, ``full_name``)
are in ``_common.py``.
"""

from __future__ import annotations

try:
    import prometheus_client
except ImportError as exc:  # pragma: no cover - exercised in a test by hiding the module
    raise ImportError(
        "brownout.prometheus needs prometheus-client: pip install 'brownout[prometheus]'"
    ) from exc

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from prometheus_client import CollectorRegistry

from brownout import CircuitBreaker, Registry
from brownout.overload import AdaptiveThrottle, Bulkhead, Guards, RetryBudget
from brownout.prometheus._breakers import BreakerMetrics
from brownout.prometheus._common import DURATION_BUCKETS
from brownout.prometheus._overload import OverloadMetrics

if TYPE_CHECKING:
    from brownout._adapter import Adapter
    from brownout.health import DegradationManager
    from brownout.outbox import Outbox
    from brownout.spool import Spool
    from brownout.web import Shedder

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "PrometheusMetrics"]

#: The ``Content-Type`` of :meth:`PrometheusMetrics.render`'s output (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

G = TypeVar("G")


class PrometheusMetrics:
    """brownout's Prometheus metrics, in one ``CollectorRegistry``.

    ``registry`` defaults to a new private ``CollectorRegistry``; pass
    ``prometheus_client.REGISTRY`` to use the global one. ``namespace``
    prefixes every metric name (``""`` for none). Two instances with separate
    registries never clash; two on the same registry with the same namespace
    do (prometheus_client refuses duplicate names).

    >>> from brownout import CircuitBreaker
    >>> metrics = PrometheusMetrics()
    >>> cb = CircuitBreaker("s3")
    >>> detach = metrics.attach(cb)
    >>> metrics.registry.get_sample_value(
    ...     "brownout_breaker_state", {"breaker": "s3", "state": "closed"}
    ... )
    1.0
    >>> detach()
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "brownout"
    ) -> None:
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                "PrometheusMetrics registry must be a prometheus_client.CollectorRegistry, "
                f"got {type(registry).__name__}"
            )
        if not isinstance(namespace, str):
            raise TypeError(f"PrometheusMetrics namespace must be a str, got {namespace!r}")
        self._registry = registry if registry is not None else CollectorRegistry()
        self._namespace = namespace
        self._lock = threading.Lock()
        self._groups: dict[Callable[[CollectorRegistry, str], Any], Any] = {}

    @property
    def registry(self) -> CollectorRegistry:
        """The ``CollectorRegistry`` the metrics are registered in."""
        return self._registry

    @property
    def namespace(self) -> str:
        return self._namespace

    def group(self, factory: Callable[[CollectorRegistry, str], G]) -> G:
        """The metric group ``factory(registry, namespace)`` builds, created on first use.

        Later calls with the same ``factory`` return the same object; this is
        how the modules of this package add their metrics (see the module
        docstring).
        """
        with self._lock:
            try:
                group: G = self._groups[factory]
            except KeyError:
                group = self._groups[factory] = factory(self._registry, self._namespace)
            return group

    @overload
    def attach(self, target: CircuitBreaker) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Registry) -> Callable[[], None]: ...

    @overload
    def attach(self, target: DegradationManager) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Adapter) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Outbox) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Bulkhead | AdaptiveThrottle | RetryBudget) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Spool) -> Callable[[], None]: ...

    @overload
    def attach(self, target: Shedder) -> Callable[[], None]: ...

    def attach(
        self,
        target: CircuitBreaker
        | Registry
        | DegradationManager
        | Adapter
        | Outbox
        | Spool
        | Shedder
        | Bulkhead
        | AdaptiveThrottle
        | RetryBudget,
    ) -> Callable[[], None]:
        """Feed the metrics from a breaker, a registry, a degradation manager, an adapter,
        an outbox or a spool; returns a function that detaches it.

        For a :class:`~brownout.Registry` the breakers it creates later are
        covered too (read from the next scrape on). Attaching a breaker (or a
        registry) again, or a breaker already covered through an attached
        registry, changes nothing: each breaker is counted once.

        For a :class:`~brownout.health.DegradationManager` it feeds the
        ``degradation_*``, ``health_score``, ``component_health_score``,
        ``cascade_expected_extra_load``, ``recovery_seconds`` and
        ``feature_enabled`` metrics (one manager per ``PrometheusMetrics``);
        for an :class:`~brownout.adapter.Adapter` the ``dependency_*``,
        ``cache_*``, ``s3_bytes``, ``openai_tokens`` and ``pool_*`` metrics.
        For a :class:`~brownout.outbox.Outbox` the ``outbox_*`` metrics, for a
        :class:`~brownout.spool.Spool` the ``spool_*`` ones (several of each,
        told apart by the file or directory name); for a
        :class:`~brownout.web.Shedder` the ``requests_in_flight``,
        ``requests_admitted_total``, ``requests_shed_total``,
        ``queueing_delay_seconds`` and ``shed_pressure`` metrics.
        Attaching any of these again is a no-op.
        For a :class:`~brownout.overload.Bulkhead`, an
        :class:`~brownout.overload.AdaptiveThrottle` or a
        :class:`~brownout.overload.RetryBudget` the ``bulkhead_*``, ``throttle_*``
        and ``retry_budget_*`` metrics; an adapter's guards and a registry's (when
        it has ``guards=`` presets) are attached with the adapter or the registry.
        The breakers of a manager's components or of an adapter are *not*
        attached by this: attach them (or their registry) as well.
        """
        if isinstance(target, CircuitBreaker):
            return self.group(BreakerMetrics).attach_breaker(target)
        if isinstance(target, Registry):
            detach = self.group(BreakerMetrics).attach_registry(target)
            if target.guard_presets or target.all_guards():
                registry = target
                also = self.group(OverloadMetrics).source.attach(
                    registry, lambda: registry.all_guards().values()
                )
                return _both(detach, also)
            return detach
        if isinstance(target, Bulkhead | AdaptiveThrottle | RetryBudget):
            return self.group(OverloadMetrics).source.attach_guard(target)
        # imported here: the core stays importable without these modules loaded
        from brownout._adapter import Adapter
        from brownout.health import DegradationManager

        if isinstance(target, DegradationManager):
            from brownout.prometheus._health import HealthMetrics

            return self.group(HealthMetrics).attach_manager(target)
        if isinstance(target, Adapter):
            from brownout.prometheus._adapters import AdapterMetrics

            detach = self.group(AdapterMetrics).attach_adapter(target)
            guards = target.guards
            if guards != Guards():
                also = self.group(OverloadMetrics).source.attach(target, lambda: (guards,))
                return _both(detach, also)
            return detach
        from brownout.outbox import Outbox
        from brownout.spool import Spool
        from brownout.web._shedding import Shedder

        if isinstance(target, Shedder):
            from brownout.prometheus._shedding import SheddingMetrics

            return self.group(SheddingMetrics).attach_shedder(target)
        if isinstance(target, Outbox):
            from brownout.prometheus._outbox import OutboxMetrics

            return self.group(OutboxMetrics).attach_outbox(target)
        if isinstance(target, Spool):
            from brownout.prometheus._outbox import SpoolMetrics

            return self.group(SpoolMetrics).attach_spool(target)
        raise TypeError(
            "PrometheusMetrics.attach needs a CircuitBreaker or a Registry (or a "
            "DegradationManager, an Adapter, an Outbox or a Spool), got "
            f"{type(target).__name__}"
        )

    def render(self) -> bytes:
        """The registry's metrics in the Prometheus text format; serve with :data:`CONTENT_TYPE`."""
        return prometheus_client.generate_latest(self._registry)

    def __repr__(self) -> str:
        return f"<PrometheusMetrics namespace={self._namespace!r}>"


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def detach() -> None:
        first()
        second()

    return detach
