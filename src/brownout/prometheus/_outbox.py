"""Backlog metrics of the outbox and the spool (``brownout.outbox``, ``brownout.spool``).

One :class:`OutboxMetrics` and one :class:`SpoolMetrics` per
:class:`~brownout.prometheus.PrometheusMetrics` (created on first use through
``PrometheusMetrics.group``). Each has two halves:

* **gauges read at scrape time** by a custom collector: ``outbox.stats()`` /
  ``spool.stats()`` of every attached journal or spool (the backlog, its age,
  the spool's failed entries, the bounds), so they are right even when nothing
  happened since the last scrape and after a restart;
* **counters and histograms fed by listeners** (``Outbox.add_listener``,
  ``Spool.add_listener``): what this process did since it started (intents
  accepted, refused, replayed, dead-lettered; uploads spooled, uploaded, failed,
  quarantined) and how long it took.

The ``outbox`` label is the journal file's stem (``var/outbox.db`` gives
``outbox``), the ``spool`` label the spool directory's name; two attached
journals (or spools) with the same label are reported by the first one
attached. A closed outbox or spool is skipped at scrape time; a failing
``stats()`` is logged and skipped, it never fails the scrape.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from brownout._journal_base import JournalEvent
from brownout.prometheus._common import DURATION_BUCKETS, full_name

if TYPE_CHECKING:
    from brownout.outbox import Outbox
    from brownout.spool import Spool

__all__ = ["WAIT_BUCKETS", "OutboxMetrics", "SpoolMetrics"]

logger = logging.getLogger("brownout.prometheus")

#: Histogram buckets (seconds) for how long an intent waited in the outbox: 0.1 s to 1 day.
WAIT_BUCKETS: tuple[float, ...] = (
    0.1,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)

#: Histogram buckets (seconds) for one spooled upload (bigger bodies than a database call).
UPLOAD_BUCKETS: tuple[float, ...] = (*DURATION_BUCKETS, 30.0, 60.0)

Listener = Callable[[str, Mapping[str, Any]], object]


class _Source(Protocol):
    """An outbox or a spool: it reports events to listeners and has ``stats()``."""

    def add_listener(self, listener: Callable[[JournalEvent], object]) -> Callable[[], None]: ...

    def stats(self) -> Mapping[str, Any]: ...


T = TypeVar("T", bound=_Source)

#: (stats key, metric name, help) of the outbox gauges read at scrape time.
_OUTBOX_GAUGES = (
    ("pending", "outbox_pending", "Intents accepted and not yet applied."),
    ("pending_bytes", "outbox_pending_bytes", "Payload bytes of the pending intents."),
    (
        "oldest_pending_age_s",
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest pending intent (0 when nothing is pending).",
    ),
    ("dead_letters", "outbox_dead_letters_stored", "Dead letters waiting to be retried."),
    ("max_pending", "outbox_max_pending", "Bound on pending intents (submit refuses beyond)."),
    ("max_bytes", "outbox_max_bytes", "Bound on pending payload bytes (submit refuses beyond)."),
)

#: The same for a spool.
_SPOOL_GAUGES = (
    ("files", "spool_pending_files", "Uploads spooled on disk, waiting for object storage."),
    ("bytes", "spool_pending_bytes", "Payload bytes of the spooled uploads."),
    (
        "oldest_age_s",
        "spool_oldest_pending_age_seconds",
        "Age of the oldest spooled upload (0 when nothing is spooled).",
    ),
    (
        "failed",
        "spool_failed_entries",
        "Spooled uploads their destination refused for good (no such bucket, access denied): "
        "kept, waiting for an operator to retry, retarget or discard them.",
    ),
    ("failed_bytes", "spool_failed_bytes", "Payload bytes of the failed spooled uploads."),
    (
        "quarantined",
        "spool_quarantined_entries",
        "Corrupted entries moved to quarantine/ (never uploaded; inspect them).",
    ),
    ("max_files", "spool_max_files", "Bound on spooled uploads (put refuses beyond)."),
    ("max_bytes", "spool_max_bytes", "Bound on spooled payload bytes (put refuses beyond)."),
)


def _figure(value: Any) -> float:
    if value is None:  # an empty backlog has no oldest entry
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


class _Tracked(Generic[T]):
    """The attached objects of one kind, weakly, in attach order, with their label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()
        self._next = 0

    def add(self, item: T, label: str) -> bool:
        """Track ``item``; False if it already is."""
        with self._lock:
            if item in self._items:
                return False
            self._items[item] = (self._next, label)
            self._next += 1
            return True

    def remove(self, item: T) -> None:
        with self._lock:
            self._items.pop(item, None)

    def items(self) -> list[tuple[T, str]]:
        with self._lock:
            pairs = list(self._items.items())
        pairs.sort(key=lambda pair: pair[1][0])
        return [(item, label) for item, (_, label) in pairs]

    def listen(self, item: T, label: str, on_event: Listener) -> Callable[[], None]:
        """Track ``item`` and pass its events to ``on_event`` until the returned function
        detaches it (nothing happens for an item already tracked)."""
        if not self.add(item, label):
            return _noop
        attached = True

        def listener(event: JournalEvent) -> None:
            if attached:
                on_event(event.kind, event.fields)

        unsubscribe = item.add_listener(listener)

        def detach() -> None:
            nonlocal attached
            attached = False  # an event being delivered meanwhile is not counted
            unsubscribe()
            self.remove(item)

        return detach


class _StatsCollector:
    """Gauges read from ``stats()`` of every tracked object at scrape time."""

    def __init__(
        self,
        tracked: _Tracked[Any],
        namespace: str,
        label: str,
        gauges: tuple[tuple[str, str, str], ...],
    ) -> None:
        self._tracked = tracked
        self._label = label
        self._gauges = tuple((key, full_name(namespace, name), doc) for key, name, doc in gauges)

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(name, doc, labels=(self._label,)) for _, name, doc in self._gauges
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        seen: set[str] = set()
        for item, label in self._tracked.items():
            if label in seen or getattr(item, "closed", False):
                continue
            try:
                stats = item.stats()
                values = [_figure(stats[key]) for key, _, _ in self._gauges]
            except Exception:  # a scrape must not fail because one journal misbehaved
                logger.exception("brownout.prometheus: stats() of %r failed", item)
                continue
            seen.add(label)
            for family, value in zip(families, values, strict=True):
                family.add_metric((label,), value)
        return list(families)


def _noop() -> None:
    return None


class OutboxMetrics:
    """The outbox metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._outboxes: _Tracked[Outbox] = _Tracked()

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(
                name, doc, ("outbox",), namespace=namespace, registry=registry, buckets=buckets
            )

        registry.register(_StatsCollector(self._outboxes, namespace, "outbox", _OUTBOX_GAUGES))
        self.submitted = counter(
            "outbox_submitted", "Intents accepted (durably on disk).", ("outbox", "operation")
        )
        self.refused = counter(
            "outbox_refused",
            "Intents refused by submit: reason full (at a bound: the client got a 503) "
            "or error (disk or journal error).",
            ("outbox", "reason"),
        )
        self.replayed = counter(
            "outbox_replayed", "Intents applied by the replayer.", ("outbox", "operation")
        )
        self.dead = counter(
            "outbox_dead_letters",
            "Intents moved to the dead letters (given up after caller errors).",
            ("outbox", "operation"),
        )
        self.retried = counter(
            "outbox_dead_letters_retried",
            "Dead letters an operator sent back to the journal to be tried again.",
            ("outbox", "operation"),
        )
        self.discarded = counter(
            "outbox_dead_letters_discarded",
            "Dead letters an operator gave up on for good (their payload deleted).",
            ("outbox", "operation"),
        )
        self.submit_seconds = histogram(
            "outbox_submit_seconds",
            "Duration of a submit, until the intent is on disk (fsync included).",
            DURATION_BUCKETS,
        )
        self.replay_seconds = histogram(
            "outbox_replay_seconds",
            "Duration of applying one intent to the database (handler and commit).",
            DURATION_BUCKETS,
        )
        self.queued_seconds = histogram(
            "outbox_queued_seconds",
            "How long an intent waited in the outbox, from accepted to applied.",
            WAIT_BUCKETS,
        )

    def attach_outbox(self, outbox: Outbox) -> Callable[[], None]:
        """Feed the metrics from ``outbox``; returns a function that detaches it."""
        label = outbox.path.stem or outbox.path.name
        submit_seconds = self.submit_seconds.labels(label)
        replay_seconds = self.replay_seconds.labels(label)
        queued_seconds = self.queued_seconds.labels(label)
        for reason in ("full", "error"):
            self.refused.labels(label, reason)

        def on_event(event: str, fields: Mapping[str, Any]) -> None:
            operation = str(fields.get("operation", ""))
            if event == "submitted":
                self.submitted.labels(label, operation).inc()
                submit_seconds.observe(fields.get("seconds", 0.0))
            elif event == "refused":
                self.refused.labels(label, str(fields.get("reason", "error"))).inc()
            elif event == "replayed":
                self.replayed.labels(label, operation).inc()
                replay_seconds.observe(fields.get("seconds", 0.0))
                if "waited" in fields:
                    queued_seconds.observe(fields["waited"])
            elif event == "dead":
                self.dead.labels(label, operation).inc()
            elif event == "retried":
                self.retried.labels(label, operation).inc()
            elif event == "discarded":
                self.discarded.labels(label, operation).inc()

        return self._outboxes.listen(outbox, label, on_event)


class SpoolMetrics:
    """The spool metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._spools: _Tracked[Spool] = _Tracked()

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ("spool",), namespace=namespace, registry=registry)

        registry.register(_StatsCollector(self._spools, namespace, "spool", _SPOOL_GAUGES))
        self.spooled = counter("spool_spooled", "Uploads written to the spool (on disk).")
        self.spooled_bytes = counter("spool_spooled_bytes", "Payload bytes written to the spool.")
        self.uploaded = counter(
            "spool_uploaded", "Spooled uploads sent to object storage, verified and removed."
        )
        self.uploaded_bytes = counter(
            "spool_uploaded_bytes", "Payload bytes of the spooled uploads sent and verified."
        )
        self.failed = counter(
            "spool_upload_failures",
            "Failed attempts to upload a spooled entry (caller errors, failed verification); "
            "the entry is kept.",
        )
        self.quarantined = counter(
            "spool_quarantined", "Corrupted entries moved to quarantine/ by this process."
        )
        self.gave_up = counter(
            "spool_gave_up",
            "Spooled uploads marked failed (their destination refused them for good, or "
            "max_attempts was reached).",
        )
        self.retargeted = counter(
            "spool_retargeted", "Spooled uploads sent to another bucket by an operator."
        )
        self.discarded = counter(
            "spool_discarded", "Spooled uploads deleted without uploading, by an operator."
        )
        self.put_seconds = Histogram(
            "spool_put_seconds",
            "Duration of writing one upload to the spool (fsyncs included).",
            ("spool",),
            namespace=namespace,
            registry=registry,
            buckets=UPLOAD_BUCKETS,
        )
        self.upload_seconds = Histogram(
            "spool_upload_seconds",
            "Duration of uploading and verifying one spooled entry.",
            ("spool",),
            namespace=namespace,
            registry=registry,
            buckets=UPLOAD_BUCKETS,
        )

    def attach_spool(self, spool: Spool) -> Callable[[], None]:
        """Feed the metrics from ``spool``; returns a function that detaches it."""
        label = spool.directory.name or str(spool.directory)
        series = {
            "spooled": self.spooled.labels(label),
            "spooled_bytes": self.spooled_bytes.labels(label),
            "uploaded": self.uploaded.labels(label),
            "uploaded_bytes": self.uploaded_bytes.labels(label),
            "failed": self.failed.labels(label),
            "quarantined": self.quarantined.labels(label),
            "gave_up": self.gave_up.labels(label),
            "retargeted": self.retargeted.labels(label),
            "discarded": self.discarded.labels(label),
        }
        put_seconds = self.put_seconds.labels(label)
        upload_seconds = self.upload_seconds.labels(label)

        def on_event(event: str, fields: Mapping[str, Any]) -> None:
            if event == "spooled":
                series["spooled"].inc()
                series["spooled_bytes"].inc(fields.get("size", 0))
                put_seconds.observe(fields.get("seconds", 0.0))
            elif event == "uploaded":
                series["uploaded"].inc()
                series["uploaded_bytes"].inc(fields.get("size", 0))
                upload_seconds.observe(fields.get("seconds", 0.0))
            elif event == "failed":
                series["failed"].inc()
                if fields.get("gave_up"):
                    series["gave_up"].inc()
            elif event in ("quarantined", "retargeted", "discarded"):
                series[event].inc()

        return self._spools.listen(spool, label, on_event)
