"""The shared base of the dependency adapters (``brownout.redis``, ``.s3``, ``.sql``, ``.openai``).

An adapter wraps one client library. It declares, in an :class:`ErrorTable`,
which of the client's errors mean "the dependency is failing" (they count
against the breaker) and which mean "the caller made a mistake" (they pass
through and count as nothing), each with a one-line reason. It runs every
operation through its breaker, keeps figures for health pages (success rate,
latency, recent operations, bytes, hits, tokens) and publishes one
:class:`OperationEvent` per operation to its listeners (the Prometheus backend
is one).

This module is stdlib-only: the client libraries are imported by the adapter
modules themselves, each behind its extra.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

from brownout._breaker import BreakerSnapshot, CircuitBreaker
from brownout._clock import Clock
from brownout._config import BreakerConfig
from brownout._errors import BreakerOpen, DependencyError
from brownout._histogram import add_batch
from brownout._histogram import empty as _empty_histogram
from brownout._redact import redact
from brownout._registry import PRESETS, Registry

__all__ = [
    "Adapter",
    "AdapterStats",
    "DependencyError",
    "DurationFigures",
    "ErrorRule",
    "ErrorTable",
    "Figures",
    "MetricFigures",
    "OperationEvent",
    "ProbeResult",
]

logger = logging.getLogger("brownout")

R = TypeVar("R")
Matcher = type[BaseException] | Callable[[BaseException], bool]


class ErrorRule(NamedTuple):
    """One row of an adapter's error classification."""

    match: Matcher
    counts: bool  # True: the dependency is failing; False: the caller's mistake
    kind: str  # short, low-cardinality label: "connection", "timeout", "throttled", ...
    why: str  # one line, shown in docs/adapters.md


class ErrorTable:
    """An ordered classification of a client library's errors; the first matching rule wins.

    Errors no rule matches count as failures with kind ``other`` (an unknown
    error from a dependency is more likely its fault than the caller's).

    >>> table = ErrorTable(
    ...     ErrorRule(ConnectionError, True, "connection", "the server is unreachable"),
    ...     ErrorRule(KeyError, False, "caller", "a missing key is an answer, not an outage"),
    ... )
    >>> table.counts(ConnectionRefusedError()), table.is_caller_error(KeyError("k"))
    (True, True)
    """

    def __init__(self, *rules: ErrorRule, default_kind: str = "other") -> None:
        for rule in rules:
            is_type = isinstance(rule.match, type) and issubclass(rule.match, BaseException)
            if not is_type and not callable(rule.match):
                raise TypeError(f"ErrorRule.match must be an exception type or predicate: {rule}")
        self.rules: tuple[ErrorRule, ...] = rules
        self._default = ErrorRule(Exception, True, default_kind, "not classified: assumed failing")

    def classify(self, exc: BaseException) -> ErrorRule:
        for rule in self.rules:
            match = rule.match
            if isinstance(match, type):
                if isinstance(exc, match):
                    return rule
            elif match(exc):
                return rule
        return self._default

    def counts(self, exc: BaseException) -> bool:
        """Predicate for ``BreakerConfig(record=...)``."""
        return self.classify(exc).counts

    def is_caller_error(self, exc: BaseException) -> bool:
        """Predicate for ``BreakerConfig(ignore=...)``."""
        return not self.classify(exc).counts

    def breaker_config(self, base: BreakerConfig) -> BreakerConfig:
        """``base`` with ``record``/``ignore`` taken from this table."""
        return base.replace(record=(self.counts,), ignore=(self.is_caller_error,))

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(error, counts/does not count, kind, why) for documentation."""
        out = []
        for rule in self.rules:
            name = rule.match.__name__ if isinstance(rule.match, type) else rule.match.__doc__
            out.append(
                (str(name), "counts" if rule.counts else "does not count", rule.kind, rule.why)
            )
        return out


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
_Record = tuple[
    str,  # operation
    str,  # outcome
    float,  # duration
    str | None,  # error_kind
    str | None,  # key
    int,  # bytes_sent
    int,  # bytes_received
    int,  # cache_hits
    int,  # cache_misses
    str | None,  # model
    int,  # prompt_tokens
    int,  # completion_tokens
    float,  # stamp (the adapter's clock)
    float | None,  # wall-clock time; None: derived from the stamp when read
    str | None,  # error text
]

_wall = time.time


def _recent_entry(record: _Record, offset: float) -> dict[str, Any]:
    """The record for people; ``offset`` turns a stamp into wall-clock time."""
    wall = record[13]
    return {
        "at": wall if wall is not None else record[12] + offset,
        "operation": record[0],
        "key": record[4],
        "outcome": record[1],
        "latency_ms": round(record[2] * 1000, 3),
        "bytes": record[5] + record[6],
        "error_kind": record[3],
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
        self._append((*event[2:], self.clock(), _wall(), error))

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
        operations = self._operations
        # durations of this batch by operation, counted into the histograms after the loop
        # (one sort per operation and batch: cheaper than a bisection per record)
        timed_now: dict[str, list[float]] = {}
        ok, latency, stamp_of = self._outcomes.append, self._latencies.append, self._stamps.append
        sent = received = hits = misses = prompt = completion = 0
        for (
            operation,
            outcome,
            duration,
            kind,
            _,
            s,
            r,
            h,
            m,
            model,
            p,
            c,
            stamp,
            wall,
            error,
        ) in batch:
            per_op = operations.get(operation)
            if per_op is None:
                per_op = operations[operation] = {}
            per_op[outcome] = per_op.get(outcome, 0) + 1
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
                        self._errors[kind] = self._errors.get(kind, 0) + 1
            if error is not None:
                self._last_error, self._last_error_at = error, wall
            sent += s
            received += r
            hits += h
            misses += m
            if p or c:
                prompt += p
                completion += c
                if model:
                    per_model = self._tokens_by_model.setdefault(model, {})
                    per_model["prompt"] = per_model.get("prompt", 0) + p
                    per_model["completion"] = per_model.get("completion", 0) + c
        for operation, values in timed_now.items():
            timed = self._durations.get(operation)
            if timed is None:
                timed = self._durations[operation] = DurationFigures()
            timed.sum += math.fsum(values)
            timed.count += len(values)
            add_batch(timed.buckets, values)
        totals = self._totals
        for name, value in (
            ("bytes_sent", sent),
            ("bytes_received", received),
            ("cache_hits", hits),
            ("cache_misses", misses),
            ("prompt_tokens", prompt),
            ("completion_tokens", completion),
        ):
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


_NO_FIGURES = Figures()  # read only


def _read_reply(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    read: Callable[[Any, list[int]], R],
    figs: list[int],
) -> R:
    return read(fn(*args), figs)


async def _aread_reply(
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    read: Callable[[Any, list[int]], R],
    figs: list[int],
) -> R:
    return read(await fn(*args), figs)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Adapter:
    """Base class of the dependency adapters.

    Subclasses set :attr:`kind` and :attr:`errors`, implement
    :meth:`_probe_once` (sync) or :meth:`_aprobe_once` (async), and run every
    operation through :meth:`_run` / :meth:`_arun`, or, for many quick
    operations (Redis), the lean :meth:`_command` / :meth:`_acommand`.

    The breaker is ``breaker`` if given (its ``record``/``ignore`` are then the
    caller's business), else one made from ``config`` (default: the preset
    for :attr:`kind`) with ``record``/``ignore`` from :attr:`errors`, and
    registered in ``registry`` if one is given.
    """

    kind: ClassVar[str] = "dependency"
    errors: ClassVar[ErrorTable] = ErrorTable()
    probe_timeout: float = 2.0
    #: Whether operations keep their key (in ``recent`` and the events).
    record_keys: bool = True

    def __init__(
        self,
        name: str | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        config: BreakerConfig | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        secrets: Iterable[str | None] = (),
        probe_timeout: float | None = None,
        recent_operations: int = 50,
    ) -> None:
        name = name or self.kind
        if breaker is not None and config is not None:
            raise ValueError(f"{type(self).__name__}: pass breaker= or config=, not both")
        if breaker is None:
            cfg = self.errors.breaker_config(config or PRESETS.get(self.kind) or BreakerConfig())
            if registry is not None:
                breaker = registry.get(name, cfg)
            else:
                breaker = CircuitBreaker(name, cfg, clock=clock)
        elif registry is not None and breaker.name not in registry:
            registry.add(breaker)
        if probe_timeout is not None:
            if probe_timeout <= 0:
                raise ValueError(f"{type(self).__name__}: probe_timeout must be > 0 seconds")
            self.probe_timeout = probe_timeout
        self.name = name
        self.breaker = breaker
        self._clock: Clock = clock or breaker.clock
        self._secrets = tuple(s for s in secrets if s)
        breaker.add_secrets(*self._secrets)
        self.stats = AdapterStats(recent_size=recent_operations, clock=self._clock)
        self._listeners: tuple[Callable[[OperationEvent], object], ...] = ()

    # ------------------------------------------------------------ listeners

    def add_listener(self, listener: Callable[[OperationEvent], object]) -> Callable[[], None]:
        """Receive an :class:`OperationEvent` after every operation; returns an unsubscribe."""
        if not callable(listener):
            raise TypeError("add_listener needs a callable taking an OperationEvent")
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(f for f in self._listeners if f is not listener)

        return unsubscribe

    # ------------------------------------------------------------ running

    def _run(
        self,
        operation: str,
        fn: Callable[..., R],
        *args: Any,
        figures: Figures | None = None,
        on_result: Callable[[R, Figures], None] | None = None,
        **kwargs: Any,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` through the breaker, accounting for it as ``operation``."""
        clock = self._clock
        start = clock()
        try:
            result = self.breaker.call(fn, *args, **kwargs)
        except BreakerOpen:
            self._emit(operation, "rejected", 0.0, figures, None)
            raise
        except Exception as exc:
            scrubbed = self._failed(operation, exc, clock() - start, figures)
            if scrubbed is None:
                raise
            raise scrubbed from None
        if on_result is not None:
            if figures is None:
                figures = Figures()
            on_result(result, figures)
        self._emit(operation, "success", clock() - start, figures, None)
        return result

    async def _arun(
        self,
        operation: str,
        fn: Callable[..., Awaitable[R]],
        *args: Any,
        figures: Figures | None = None,
        on_result: Callable[[R, Figures], None] | None = None,
        **kwargs: Any,
    ) -> R:
        """Await ``fn(*args, **kwargs)`` through the breaker (see :meth:`_run`)."""
        clock = self._clock
        start = clock()
        try:
            result = await self.breaker.acall(fn, *args, **kwargs)
        except BreakerOpen:
            self._emit(operation, "rejected", 0.0, figures, None)
            raise
        except Exception as exc:
            scrubbed = self._failed(operation, exc, clock() - start, figures)
            if scrubbed is None:
                raise
            raise scrubbed from None
        if on_result is not None:
            if figures is None:
                figures = Figures()
            on_result(result, figures)
        self._emit(operation, "success", clock() - start, figures, None)
        return result

    def _command(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        operation: str,
        read: Callable[[Any, list[int]], R],
        key: object = None,
        sent: int = 0,
    ) -> R:
        """``read(fn(*args), figs)`` through the breaker, as ``operation``: the lean path.

        For adapters whose operations are many and quick (Redis): no closure, no
        :class:`Figures` and no :class:`OperationEvent` unless there are listeners,
        and the breaker's lock-free path taken inline. ``read`` runs inside the
        guarded call (an error there is classified like the client's own), returns
        the result and fills in ``figs``, a list ``[bytes_sent, bytes_received,
        cache_hits, cache_misses]`` that starts as ``[sent, 0, 0, 0]``. ``key`` is
        the operation's key as text, or an object :meth:`_key_text` turns into text.
        Keyword arguments go in ``fn`` (a ``functools.partial``).
        """
        if key is not None and type(key) is not str:
            key = self._key_text(key)
        figs = [sent, 0, 0, 0]
        cb = self.breaker
        clock = self._clock
        start = clock()
        try:
            succ = cb.permit
            if succ is not None:
                # CircuitBreaker.call's lock-free CLOSED path, inline (the same steps).
                try:
                    result = read(fn(*args), figs)
                except Exception as exc:
                    token = cb.fast_token(succ)
                    if not (cb.settle_error(token, exc, -1.0) and cb.fallback is not None):
                        raise
                    result = cb.run_fallback(exc)
                else:
                    next(succ)
            else:
                result = cb.call(_read_reply, fn, args, read, figs)
        except BreakerOpen:
            self._record(operation, "rejected", 0.0, self._lean_figures(key, figs), None)
            raise
        except Exception as exc:
            figures = self._lean_figures(key, figs)
            scrubbed = self._failed(operation, exc, clock() - start, figures)
            if scrubbed is None:
                raise
            raise scrubbed from None
        end = clock()
        stats = self.stats
        log = stats._log
        record = (
            operation,
            "success",
            end - start,
            None,
            key if self.record_keys else None,
            figs[0],
            figs[1],
            figs[2],
            figs[3],
            None,
            0,
            0,
            end,
            None,
            None,
        )
        log.append(record)
        if len(log) > stats.drain_after:
            stats._spill()
        if self._listeners:
            self._publish(record)
        if stats.credentials_problem is not None:
            self._succeeded()
        return result

    async def _acommand(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        operation: str,
        read: Callable[[Any, list[int]], R],
        key: object = None,
        sent: int = 0,
    ) -> R:
        """Await ``fn(*args)`` through the breaker: the lean path of :meth:`_command`."""
        if key is not None and type(key) is not str:
            key = self._key_text(key)
        figs = [sent, 0, 0, 0]
        cb = self.breaker
        clock = self._clock
        start = clock()
        try:
            succ = cb.permit
            if succ is not None:
                # CircuitBreaker.acall's lock-free CLOSED path, inline (the same steps):
                # one coroutine less to resume on every wake-up of the client's.
                try:
                    result = read(await fn(*args), figs)
                except Exception as exc:
                    token = cb.fast_token(succ)
                    if not (cb.settle_error(token, exc, -1.0) and cb.fallback is not None):
                        raise
                    result = await cb.arun_fallback(exc)
                except asyncio.CancelledError as exc:  # the caller's timeout counts
                    cb.settle_interrupt(cb.fast_token(succ), exc, clock() - start)
                    raise
                else:
                    next(succ)
            else:
                result = await cb.acall(_aread_reply, fn, args, read, figs)
        except BreakerOpen:
            self._record(operation, "rejected", 0.0, self._lean_figures(key, figs), None)
            raise
        except Exception as exc:
            figures = self._lean_figures(key, figs)
            scrubbed = self._failed(operation, exc, clock() - start, figures)
            if scrubbed is None:
                raise
            raise scrubbed from None
        end = clock()
        stats = self.stats
        log = stats._log
        record = (
            operation,
            "success",
            end - start,
            None,
            key if self.record_keys else None,
            figs[0],
            figs[1],
            figs[2],
            figs[3],
            None,
            0,
            0,
            end,
            None,
            None,
        )
        log.append(record)
        if len(log) > stats.drain_after:
            stats._spill()
        if self._listeners:
            self._publish(record)
        if stats.credentials_problem is not None:
            self._succeeded()
        return result

    def _lean_figures(self, key: object, figs: list[int]) -> Figures:
        sent, received, hits, misses = figs
        return Figures(
            key=key if self.record_keys and isinstance(key, str) else None,
            bytes_sent=sent,
            bytes_received=received,
            cache_hits=hits,
            cache_misses=misses,
        )

    def _key_text(self, key: object) -> str:
        """An operation's key as text, for :meth:`_command` (subclasses decode bytes etc.)."""
        return str(key)

    def _succeeded(self) -> None:
        """Hook: an operation of :meth:`_command` succeeded while ``stats.credentials_problem``
        is set (e.g. clear it)."""

    def _failed(
        self, operation: str, exc: Exception, duration: float, figs: Figures | None
    ) -> DependencyError | None:
        """Account for a failed operation.

        Returns a replacement to raise when the error's text holds a secret, else
        ``None`` (the client's own exception is re-raised, traceback intact).
        """
        rule = self.errors.classify(exc)
        text = self.describe(exc)
        self._on_error(exc, rule)
        self._emit(
            operation, "failure" if rule.counts else "caller_error", duration, figs, rule.kind, text
        )
        raw = str(exc)
        if any(secret in raw for secret in self._secrets):
            return DependencyError(text, kind=rule.kind, original_type=type(exc).__name__)
        return None

    def _on_error(self, exc: Exception, rule: ErrorRule) -> None:
        """Hook for subclasses (e.g. mark credentials problems)."""

    def _emit(
        self,
        operation: str,
        outcome: str,
        duration: float,
        figs: Figures | None,
        error_kind: str | None,
        error_text: str | None = None,
    ) -> None:
        """Record one operation and publish it to the listeners.

        ``error_text`` (redacted) becomes ``last_error`` for a ``failure``.
        """
        self._record(
            operation,
            outcome,
            duration,
            figs,
            error_kind,
            error_text if outcome == "failure" else None,
        )

    def _record(
        self,
        operation: str,
        outcome: str,
        duration: float,
        figs: Figures | None,
        error_kind: str | None,
        error: str | None = None,
    ) -> None:
        if figs is None:
            figs = _NO_FIGURES
        record = (
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
            self._clock(),
            _wall(),
            error,
        )
        self.stats._append(record)
        if self._listeners:
            self._publish(record)

    def _publish(self, record: _Record) -> None:
        """Hand the record out as an :class:`OperationEvent` (made only for listeners)."""
        event = OperationEvent(self.kind, self.name, *record[:12])
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("adapter %r: listener %r raised", self.name, listener)

    # ------------------------------------------------------------ health

    def describe(self, exc: BaseException) -> str:
        """The error as text with every secret removed."""
        text = str(exc)
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return redact(text, *self._secrets)

    def _probe_once(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no sync probe")

    async def _aprobe_once(self) -> None:
        await asyncio.to_thread(self._probe_once)

    def probe(self) -> ProbeResult:
        """Run the sync health probe (not through the breaker) and remember the result."""
        start = self._clock()
        try:
            self._probe_once()
        except Exception as exc:
            result = ProbeResult(False, self._clock() - start, self.describe(exc), time.time())
        else:
            result = ProbeResult(True, self._clock() - start, None, time.time())
        self.stats.last_probe = result
        return result

    async def aprobe(self) -> ProbeResult:
        """Run the async health probe with :attr:`probe_timeout` (not through the breaker)."""
        start = self._clock()
        try:
            async with asyncio.timeout(self.probe_timeout):  # see brownout._aio
                await self._aprobe_once()
        except TimeoutError:
            result = ProbeResult(
                False,
                self._clock() - start,
                f"probe timed out after {self.probe_timeout:g} s",
                time.time(),
            )
        except Exception as exc:
            result = ProbeResult(False, self._clock() - start, self.describe(exc), time.time())
        else:
            result = ProbeResult(True, self._clock() - start, None, time.time())
        self.stats.last_probe = result
        return result

    def extra_figures(self) -> Mapping[str, Any]:
        """Adapter-specific figures (pool use, hit ratio, ...) for :meth:`health`."""
        return {}

    def health(self) -> dict[str, Any]:
        """Breaker snapshot plus adapter figures; JSON-ready and free of secrets."""
        snap: BreakerSnapshot = self.breaker.snapshot()
        breaker = snap.to_dict()
        if breaker["last_error"]:
            breaker["last_error"] = redact(breaker["last_error"], *self._secrets)
        view = self.stats.view()
        view.update(self.extra_figures())
        return {"name": self.name, "kind": self.kind, "breaker": breaker, **view}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} breaker={self.breaker.state.value}>"
