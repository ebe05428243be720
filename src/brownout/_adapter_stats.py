"""What an adapter's operations leave behind: events for listeners, and :class:`AdapterStats`.

Every operation is one record appended to its adapter's :class:`AdapterStats`
log (and, when the adapter has listeners, one :class:`OperationEvent`). The
log is folded into the figures health pages read (success rate, latency,
recent operations, bytes, hits, tokens) and into the lifetime figures metrics
read at scrape time (:meth:`AdapterStats.metrics`).

Stdlib only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any, Final, NamedTuple

from brownout._histogram import add_batch
from brownout._histogram import empty as _empty_histogram

__all__ = [
    "AdapterStats",
    "DurationFigures",
    "Figures",
    "MetricFigures",
    "OperationEvent",
    "ProbeResult",
]


class OperationEvent(NamedTuple):
    """One adapter operation, as published to the adapter's listeners.

    ``outcome`` is ``success``, ``failure`` (counted against the dependency),
    ``caller_error`` (the caller's mistake, not counted) or ``rejected`` (the
    breaker was open). Figures not relevant to an operation are zero/None.
    """

    dependency: str  # the adapter's kind: "redis", "s3", "sql", "openai"
    name: str  # the adapter's (and its breaker's) name
    operation: str
    outcome: str
    duration: float
    error_kind: str | None = None
    key: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The result of one health probe."""

    ok: bool
    latency: float
    error: str | None = None  # redacted
    at: float = 0.0  # wall-clock time (for people)


@dataclass(slots=True)
class Figures:
    """What an operation adds to the adapter's figures (filled in by the adapter)."""

    key: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


#: One operation in :class:`AdapterStats`' log: the fields of its :class:`OperationEvent`
#: after ``dependency`` and ``name``, then its stamp on the adapter's clock, its wall-clock
#: time and its (redacted) error text. Flat and made of atoms only: the garbage collector
#: stops tracking such a tuple at its first pass, so pending records cost it nothing.
#: Built by :func:`record_of` (and, inline, by the adapter's lean per-command path);
#: read through the field positions below, never through bare numbers.
_Record = tuple[
    str,  # OPERATION
    str,  # OUTCOME
    float,  # DURATION
    str | None,  # ERROR_KIND
    str | None,  # KEY
    int,  # BYTES_SENT
    int,  # BYTES_RECEIVED
    int,  # CACHE_HITS
    int,  # CACHE_MISSES
    str | None,  # MODEL
    int,  # PROMPT_TOKENS
    int,  # COMPLETION_TOKENS
    float,  # STAMP (the adapter's clock)
    float | None,  # WALL: wall-clock time; None: derived from the stamp when read
    str | None,  # ERROR: the redacted error text
]

# The record's fields by position: module constants rather than a class, so that naming a
# field costs nothing per operation (a record stays a plain tuple, built in one step).
OPERATION: Final = 0
OUTCOME: Final = 1
DURATION: Final = 2
ERROR_KIND: Final = 3
KEY: Final = 4
BYTES_SENT: Final = 5
BYTES_RECEIVED: Final = 6
CACHE_HITS: Final = 7
CACHE_MISSES: Final = 8
MODEL: Final = 9
PROMPT_TOKENS: Final = 10
COMPLETION_TOKENS: Final = 11
STAMP: Final = 12
WALL: Final = 13
ERROR: Final = 14
#: ``record[:EVENT_FIELDS]`` are the :class:`OperationEvent` fields after dependency and name.
EVENT_FIELDS: Final = 12


def record_of(
    operation: str,
    outcome: str,
    duration: float,
    error_kind: str | None,
    figs: Figures,
    stamp: float,
    wall: float | None,
    error: str | None,
) -> _Record:
    """The record of one operation (everywhere but the lean per-command path)."""
    return (
        operation,
        outcome,
        duration,
        error_kind,
        figs.key,
        figs.bytes_sent,
        figs.bytes_received,
        figs.cache_hits,
        figs.cache_misses,
        figs.model,
        figs.prompt_tokens,
        figs.completion_tokens,
        stamp,
        wall,
        error,
    )


_wall = time.time


def _recent_entry(record: _Record, offset: float) -> dict[str, Any]:
    """The record for people; ``offset`` turns a stamp into wall-clock time."""
    wall = record[WALL]
    return {
        "at": wall if wall is not None else record[STAMP] + offset,
        "operation": record[OPERATION],
        "key": record[KEY],
        "outcome": record[OUTCOME],
        "latency_ms": round(record[DURATION] * 1000, 3),
        "bytes": record[BYTES_SENT] + record[BYTES_RECEIVED],
        "error_kind": record[ERROR_KIND],
    }


class DurationFigures:
    """The durations of one operation's counted calls, for metrics: sum, count, buckets.

    ``buckets`` are per bucket of ``brownout._histogram.DURATION_BUCKETS`` (not
    cumulative; the last slot counts those above the largest bound). Updated by
    :class:`AdapterStats` when it folds its log, under its lock.
    """

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0
        self.buckets = _empty_histogram()

    def copy(self) -> DurationFigures:
        other = DurationFigures()
        other.sum, other.count, other.buckets = self.sum, self.count, list(self.buckets)
        return other


class MetricFigures(NamedTuple):
    """A copy of what an adapter's metrics read at scrape time (:meth:`AdapterStats.metrics`).

    ``operations``: counts per operation and outcome; ``durations``: per
    operation, the calls that were not rejected; ``errors``: failures (counted
    against the dependency) per error kind; ``totals`` and ``tokens_by_model``
    as the properties of the same names.
    """

    operations: dict[str, dict[str, int]]
    durations: dict[str, DurationFigures]
    errors: dict[str, int]
    totals: dict[str, int]
    tokens_by_model: dict[str, dict[str, int]]


class AdapterStats:
    """Rolling figures of one adapter, for ``health()`` and status pages. Thread-safe.

    Recording an operation is one append of a tuple to a log, without a lock
    (``list.append`` is atomic): an adapter's operations stay cheap. The log is
    folded into the figures, under the lock, whenever they are read (every
    attribute below, :meth:`view`, :meth:`window`, :meth:`p95`) and whenever
    more than :attr:`drain_after` records are pending, so the figures are exact
    (every operation counted once, in order) and the log's memory is bounded.

    ``operations`` (per operation, per outcome counts), ``totals`` (bytes, hits,
    misses, tokens), ``tokens_by_model``, ``last_error``/``last_error_at`` and
    ``outcomes``/``latencies``/``stamps`` (the last ``latency_samples`` counted
    outcomes) are the live figures; ``recent`` is a copy of the last
    ``recent_size`` operations as dicts.
    """

    #: Pending records are folded in by the operation that finds more than this many.
    #: Kept under the garbage collector's first threshold (700 new objects), so that
    #: the pending records alone never set off a collection.
    drain_after: int = 256

    def __init__(
        self,
        latency_samples: int = 512,
        recent_size: int = 50,
        horizon: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.latency_samples = latency_samples
        self.recent_size = recent_size
        #: Outcomes older than this (seconds, on ``clock``) no longer count in
        #: :meth:`window`: after an outage the figures recover with time, not only
        #: with traffic.
        self.horizon = horizon
        self.clock = clock
        self.drain_after = type(self).drain_after
        self.last_probe: ProbeResult | None = None
        self.credentials_problem: str | None = None
        self._lock = threading.Lock()
        self._log: list[_Record] = []
        self._operations: dict[str, dict[str, int]] = {}
        self._outcomes: deque[bool] = deque(maxlen=latency_samples)  # True: ok
        self._latencies: deque[float] = deque(maxlen=latency_samples)
        self._stamps: deque[float] = deque(maxlen=latency_samples)  # on ``clock``
        self._recent: deque[_Record] = deque(maxlen=recent_size)
        self._totals: dict[str, int] = {}
        self._tokens_by_model: dict[str, dict[str, int]] = {}
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        # lifetime figures for metrics (read at scrape time by :meth:`metrics`)
        self._durations: dict[str, DurationFigures] = {}
        self._errors: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"AdapterStats(latency_samples={self.latency_samples}, recent_size="
            f"{self.recent_size}, horizon={self.horizon}, operations={self.operations!r})"
        )

    # ------------------------------------------------------------ recording

    def add(self, event: OperationEvent, error: str | None) -> None:
        """Record one operation (``error``: its redacted error text, for ``last_error``)."""
        figs = Figures(
            event.key,
            event.bytes_sent,
            event.bytes_received,
            event.cache_hits,
            event.cache_misses,
            event.model,
            event.prompt_tokens,
            event.completion_tokens,
        )
        self._append(
            record_of(
                event.operation,
                event.outcome,
                event.duration,
                event.error_kind,
                figs,
                self.clock(),
                _wall(),
                error,
            )
        )

    def _append(self, record: _Record) -> None:
        log = self._log
        log.append(record)
        if len(log) > self.drain_after:
            self._spill()

    def _spill(self) -> None:
        """Fold the pending records in, unless another thread is already at it."""
        if self._lock.acquire(blocking=False):
            try:
                self._fold_locked()
            finally:
                self._lock.release()

    def _fold_locked(self) -> None:
        log = self._log
        n = len(log)
        if not n:
            return
        # Appends only ever add at the end and only this (locked) method removes,
        # so the first n records are exactly the ones taken.
        batch = log[:n]
        del log[:n]
        # The batch by column, in one C-level transposition: the counts, the sums and the
        # usual batch (successes only) are then taken in C, not record by record in Python.
        columns = tuple(zip(*batch, strict=True))
        operation_of, outcome_of, duration_of = (
            columns[OPERATION],
            columns[OUTCOME],
            columns[DURATION],
        )
        operations = self._operations
        # durations of this batch by operation, counted into the histograms after the loop
        # (one sort per operation and batch: cheaper than a bisection per record)
        timed_now: dict[str, list[float]] = {}
        all_successes = outcome_of.count("success") == n
        if all_successes:  # the usual batch: every record a counted outcome, in order
            self._outcomes.extend(repeat(True, n))
            self._latencies.extend(duration_of)
            self._stamps.extend(columns[STAMP])
            first = operation_of[0]
            counts = {first: n} if operation_of.count(first) == n else Counter(operation_of)
            for operation, count in counts.items():
                per_op = operations.get(operation)
                if per_op is None:
                    per_op = operations[operation] = {}
                per_op["success"] = per_op.get("success", 0) + count
                timed_now[operation] = (
                    list(duration_of)
                    if count == n
                    else list(compress(duration_of, map(operation.__eq__, operation_of)))
                )
        else:
            for (operation, outcome), count in Counter(
                zip(operation_of, outcome_of, strict=True)
            ).items():
                per_op = operations.get(operation)
                if per_op is None:
                    per_op = operations[operation] = {}
                per_op[outcome] = per_op.get(outcome, 0) + count
            ok, latency, stamp_of = (
                self._outcomes.append,
                self._latencies.append,
                self._stamps.append,
            )
            errors = self._errors
            for operation, outcome, duration, kind, stamp in zip(
                operation_of,
                outcome_of,
                duration_of,
                columns[ERROR_KIND],
                columns[STAMP],
                strict=True,
            ):
                if outcome != "rejected":
                    same_op = timed_now.get(operation)
                    if same_op is None:
                        same_op = timed_now[operation] = []
                    same_op.append(duration)
                    if outcome == "success" or outcome == "failure":
                        ok(outcome == "success")
                        latency(duration)
                        stamp_of(stamp)
                        if kind is not None and outcome == "failure":
                            errors[kind] = errors.get(kind, 0) + 1
        error_of = columns[ERROR]
        if error_of.count(None) != n:  # the last error text wins
            last = max(i for i, error in enumerate(error_of) if error is not None)
            self._last_error, self._last_error_at = error_of[last], columns[WALL][last]
        prompt_of, completion_of = columns[PROMPT_TOKENS], columns[COMPLETION_TOKENS]
        if any(prompt_of) or any(completion_of):
            for model, p, c in zip(columns[MODEL], prompt_of, completion_of, strict=True):
                if model and (p or c):
                    per_model = self._tokens_by_model.setdefault(model, {})
                    per_model["prompt"] = per_model.get("prompt", 0) + p
                    per_model["completion"] = per_model.get("completion", 0) + c
        for operation, values in timed_now.items():
            timed = self._durations.get(operation)
            if timed is None:
                timed = self._durations[operation] = DurationFigures()
            timed.sum += sum(values)  # C-level, as the breaker's duration sum
            timed.count += len(values)
            add_batch(timed.buckets, values)
        totals = self._totals
        for name, index in (
            ("bytes_sent", BYTES_SENT),
            ("bytes_received", BYTES_RECEIVED),
            ("cache_hits", CACHE_HITS),
            ("cache_misses", CACHE_MISSES),
            ("prompt_tokens", PROMPT_TOKENS),
            ("completion_tokens", COMPLETION_TOKENS),
        ):
            value = sum(columns[index])
            if value:
                totals[name] = totals.get(name, 0) + value
        self._recent.extend(batch[-self.recent_size :] if self.recent_size else ())

    # ------------------------------------------------------------ reading

    def _folded(self) -> None:
        with self._lock:
            self._fold_locked()

    @property
    def operations(self) -> dict[str, dict[str, int]]:
        """Counts per operation and outcome (``success``, ``failure``, ...)."""
        self._folded()
        return self._operations

    @property
    def totals(self) -> dict[str, int]:
        """Lifetime sums of the non-zero figures: bytes sent/received, cache hits/misses, tokens."""
        self._folded()
        return self._totals

    @property
    def tokens_by_model(self) -> dict[str, dict[str, int]]:
        """``{model: {"prompt": n, "completion": n}}`` over the adapter's lifetime."""
        self._folded()
        return self._tokens_by_model

    @property
    def outcomes(self) -> deque[bool]:
        """The last ``latency_samples`` counted outcomes (True: success), oldest first."""
        self._folded()
        return self._outcomes

    @property
    def latencies(self) -> deque[float]:
        """Their durations in seconds."""
        self._folded()
        return self._latencies

    @property
    def stamps(self) -> deque[float]:
        """When each was recorded, on ``clock``."""
        self._folded()
        return self._stamps

    @property
    def recent(self) -> deque[dict[str, Any]]:
        """The last ``recent_size`` operations (at, operation, key, outcome, latency_ms,
        bytes, error_kind), oldest first: a copy."""
        with self._lock:
            self._fold_locked()
            records = list(self._recent)
        offset = self._wall_offset()
        return deque((_recent_entry(r, offset) for r in records), maxlen=self.recent_size)

    @property
    def last_error(self) -> str | None:
        """The redacted text of the last failure (not caller errors)."""
        self._folded()
        return self._last_error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        with self._lock:
            self._fold_locked()
            self._last_error = value

    @property
    def last_error_at(self) -> float | None:
        """Its wall-clock time."""
        self._folded()
        return self._last_error_at

    @last_error_at.setter
    def last_error_at(self, value: float | None) -> None:
        with self._lock:
            self._fold_locked()
            self._last_error_at = value

    def metrics(self) -> MetricFigures:
        """A copy of the lifetime figures metrics read (see :class:`MetricFigures`)."""
        with self._lock:
            self._fold_locked()
            return MetricFigures(
                {op: dict(counts) for op, counts in self._operations.items()},
                {op: timed.copy() for op, timed in self._durations.items()},
                dict(self._errors),
                dict(self._totals),
                {model: dict(t) for model, t in self._tokens_by_model.items()},
            )

    def view(self) -> dict[str, Any]:
        with self._lock:
            self._fold_locked()
            outcomes = list(self._outcomes)
            latencies = sorted(self._latencies)
            records = list(self._recent)
            view: dict[str, Any] = {
                "success_rate": (sum(outcomes) / len(outcomes)) if outcomes else None,
                "latency_avg_ms": (sum(latencies) / len(latencies) * 1000) if latencies else None,
                "latency_p95_ms": _percentile(latencies, 0.95) * 1000 if latencies else None,
                "samples": len(outcomes),
                "operations": {op: dict(c) for op, c in self._operations.items()},
                "totals": dict(self._totals),
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "last_probe": None
                if self.last_probe is None
                else {
                    "ok": self.last_probe.ok,
                    "latency_ms": round(self.last_probe.latency * 1000, 3),
                    "error": self.last_probe.error,
                    "at": self.last_probe.at,
                },
                "credentials_problem": self.credentials_problem,
                "recent": records,
            }
            if self._tokens_by_model:
                view["tokens_by_model"] = {m: dict(t) for m, t in self._tokens_by_model.items()}
        offset = self._wall_offset()
        view["recent"] = [_recent_entry(r, offset) for r in records]
        return view

    def _wall_offset(self) -> float:
        """Wall-clock time minus ``clock`` time now: the lean path stamps an operation on
        the adapter's clock only, and its wall-clock time is derived when it is shown."""
        return _wall() - self.clock()

    def p95(self) -> float | None:
        with self._lock:
            self._fold_locked()
            latencies = sorted(self._latencies)
        return _percentile(latencies, 0.95) if latencies else None

    def window(self, calls: int = 100) -> tuple[float | None, float | None, int]:
        """(success rate, p95 latency, samples) over the last ``calls`` counted
        outcomes that are at most :attr:`horizon` seconds old; ``None`` without any.
        """
        oldest = self.clock() - self.horizon
        with self._lock:
            self._fold_locked()
            n = 0
            for stamp in reversed(self._stamps):
                if stamp < oldest or n >= calls:
                    break
                n += 1
            if not n:
                return None, None, 0
            outcomes = list(self._outcomes)[-n:]
            latencies = sorted(list(self._latencies)[-n:])
        return sum(outcomes) / n, _percentile(latencies, 0.95), n


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]
