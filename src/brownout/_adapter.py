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
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

from brownout._breaker import BreakerSnapshot, CircuitBreaker
from brownout._clock import Clock
from brownout._config import BreakerConfig
from brownout._errors import BreakerOpen, BrownoutError
from brownout._redact import redact
from brownout._registry import PRESETS, Registry

__all__ = [
    "Adapter",
    "AdapterStats",
    "DependencyError",
    "ErrorRule",
    "ErrorTable",
    "Figures",
    "OperationEvent",
    "ProbeResult",
]

logger = logging.getLogger("brownout")

R = TypeVar("R")
Matcher = type[BaseException] | Callable[[BaseException], bool]


class DependencyError(BrownoutError):
    """A dependency error whose message carried a secret, re-raised with the secret removed.

    ``kind`` is the error's kind from the adapter's table, ``original_type``
    the name of the client library's exception class.
    """

    def __init__(self, message: str, *, kind: str, original_type: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.original_type = original_type


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


@dataclass
class AdapterStats:
    """Rolling figures of one adapter, for ``health()`` and status pages. Thread-safe."""

    latency_samples: int = 512
    recent_size: int = 50
    #: Outcomes older than this (seconds, on ``clock``) no longer count in
    #: :meth:`window`: after an outage the figures recover with time, not only
    #: with traffic.
    horizon: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    operations: dict[str, dict[str, int]] = field(default_factory=dict)
    outcomes: deque[bool] = field(init=False)  # recent counted outcomes (True: ok)
    latencies: deque[float] = field(init=False)
    stamps: deque[float] = field(init=False)  # when each outcome was recorded (``clock``)
    recent: deque[dict[str, Any]] = field(init=False)
    totals: dict[str, int] = field(default_factory=dict)
    tokens_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None
    last_probe: ProbeResult | None = None
    credentials_problem: str | None = None

    def __post_init__(self) -> None:
        self.outcomes = deque(maxlen=self.latency_samples)
        self.latencies = deque(maxlen=self.latency_samples)
        self.stamps = deque(maxlen=self.latency_samples)
        self.recent = deque(maxlen=self.recent_size)

    def add(self, event: OperationEvent, error: str | None) -> None:
        with self._lock:
            per_op = self.operations.setdefault(event.operation, {})
            per_op[event.outcome] = per_op.get(event.outcome, 0) + 1
            if event.outcome in ("success", "failure"):
                self.outcomes.append(event.outcome == "success")
                self.latencies.append(event.duration)
                self.stamps.append(self.clock())
            for name in (
                "bytes_sent",
                "bytes_received",
                "cache_hits",
                "cache_misses",
                "prompt_tokens",
                "completion_tokens",
            ):
                value = getattr(event, name)
                if value:
                    self.totals[name] = self.totals.get(name, 0) + value
            if event.model and (event.prompt_tokens or event.completion_tokens):
                per_model = self.tokens_by_model.setdefault(event.model, {})
                per_model["prompt"] = per_model.get("prompt", 0) + event.prompt_tokens
                per_model["completion"] = per_model.get("completion", 0) + event.completion_tokens
            if error is not None:
                self.last_error = error
                self.last_error_at = time.time()
            self.recent.append(
                {
                    "at": time.time(),
                    "operation": event.operation,
                    "key": event.key,
                    "outcome": event.outcome,
                    "latency_ms": round(event.duration * 1000, 3),
                    "bytes": event.bytes_sent + event.bytes_received,
                    "error_kind": event.error_kind,
                }
            )

    def view(self) -> dict[str, Any]:
        with self._lock:
            outcomes = list(self.outcomes)
            latencies = sorted(self.latencies)
            view: dict[str, Any] = {
                "success_rate": (sum(outcomes) / len(outcomes)) if outcomes else None,
                "latency_avg_ms": (sum(latencies) / len(latencies) * 1000) if latencies else None,
                "latency_p95_ms": _percentile(latencies, 0.95) * 1000 if latencies else None,
                "samples": len(outcomes),
                "operations": {op: dict(c) for op, c in self.operations.items()},
                "totals": dict(self.totals),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "last_probe": None
                if self.last_probe is None
                else {
                    "ok": self.last_probe.ok,
                    "latency_ms": round(self.last_probe.latency * 1000, 3),
                    "error": self.last_probe.error,
                    "at": self.last_probe.at,
                },
                "credentials_problem": self.credentials_problem,
                "recent": list(self.recent),
            }
            if self.tokens_by_model:
                view["tokens_by_model"] = {m: dict(t) for m, t in self.tokens_by_model.items()}
            return view

    def p95(self) -> float | None:
        with self._lock:
            latencies = sorted(self.latencies)
        return _percentile(latencies, 0.95) if latencies else None

    def window(self, calls: int = 100) -> tuple[float | None, float | None, int]:
        """(success rate, p95 latency, samples) over the last ``calls`` counted
        outcomes that are at most :attr:`horizon` seconds old; ``None`` without any.
        """
        oldest = self.clock() - self.horizon
        with self._lock:
            n = 0
            for stamp in reversed(self.stamps):
                if stamp < oldest or n >= calls:
                    break
                n += 1
            if not n:
                return None, None, 0
            outcomes = list(self.outcomes)[-n:]
            latencies = sorted(list(self.latencies)[-n:])
        return sum(outcomes) / n, _percentile(latencies, 0.95), n


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Adapter:
    """Base class of the dependency adapters.

    Subclasses set :attr:`kind` and :attr:`errors`, implement
    :meth:`_probe_once` (sync) or :meth:`_aprobe_once` (async), and run every
    operation through :meth:`_run` / :meth:`_arun`.

    The breaker is ``breaker`` if given (its ``record``/``ignore`` are then the
    caller's business), else one made from ``config`` (default: the preset
    for :attr:`kind`) with ``record``/``ignore`` from :attr:`errors`, and
    registered in ``registry`` if one is given.
    """

    kind: ClassVar[str] = "dependency"
    errors: ClassVar[ErrorTable] = ErrorTable()
    probe_timeout: float = 2.0

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
        figs = figures or Figures()
        start = self._clock()
        try:
            result = self.breaker.call(fn, *args, **kwargs)
        except BreakerOpen:
            self._emit(operation, "rejected", 0.0, figs, None)
            raise
        except Exception as exc:
            scrubbed = self._failed(operation, exc, self._clock() - start, figs)
            if scrubbed is None:
                raise
            raise scrubbed from None
        if on_result is not None:
            on_result(result, figs)
        self._emit(operation, "success", self._clock() - start, figs, None)
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
        figs = figures or Figures()
        start = self._clock()
        try:
            result = await self.breaker.acall(fn, *args, **kwargs)
        except BreakerOpen:
            self._emit(operation, "rejected", 0.0, figs, None)
            raise
        except Exception as exc:
            scrubbed = self._failed(operation, exc, self._clock() - start, figs)
            if scrubbed is None:
                raise
            raise scrubbed from None
        if on_result is not None:
            on_result(result, figs)
        self._emit(operation, "success", self._clock() - start, figs, None)
        return result

    def _failed(
        self, operation: str, exc: Exception, duration: float, figs: Figures
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
        figs: Figures,
        error_kind: str | None,
        error_text: str | None = None,
    ) -> None:
        event = OperationEvent(
            self.kind,
            self.name,
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
        )
        self.stats.add(event, error_text if outcome == "failure" else None)
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
            await asyncio.wait_for(self._aprobe_once(), self.probe_timeout)
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
