"""The shared base of the dependency adapters (``brownout.redis``, ``.s3``, ``.sql``, ``.openai``).

An adapter wraps one client library. It declares, in an
:class:`~brownout._adapter_classify.ErrorTable`, which of the client's errors
mean "the dependency is failing" and which "the caller made a mistake"
(``brownout._adapter_classify``). It runs every operation through its breaker,
records it in its :class:`~brownout._adapter_stats.AdapterStats` (the figures
health pages and metrics read, ``brownout._adapter_stats``) and publishes one
:class:`OperationEvent` per operation to its listeners, if it has any.

This module is stdlib-only: the client libraries are imported by the adapter
modules themselves, each behind its extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from brownout._adapter_classify import ErrorRule, ErrorTable
from brownout._adapter_guards import install_guards
from brownout._adapter_stats import (
    EVENT_FIELDS,
    AdapterStats,
    DurationFigures,
    Figures,
    MetricFigures,
    OperationEvent,
    ProbeResult,
    _Record,
    _wall,
    record_of,
)
from brownout._breaker import BreakerSnapshot, CircuitBreaker
from brownout._clock import Clock
from brownout._config import BreakerConfig
from brownout._errors import BreakerOpen, DependencyError
from brownout._redact import redact
from brownout._registry import PRESETS, Registry
from brownout.overload import AdaptiveThrottle, Bulkhead, Guards, RetryBudget

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
        bulkhead: Bulkhead | None = None,
        throttle: AdaptiveThrottle | None = None,
        retry_budget: RetryBudget | None = None,
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
        self.guards = _guards_of(self, name, registry, bulkhead, throttle, retry_budget)
        install_guards(self, self.guards)

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
        # Deliberate hot-path twin of record_of() (the record's fields in the order of
        # brownout._adapter_stats.OPERATION..ERROR): built inline, as in _acommand, because
        # record_of() needs a Figures and a call per operation: callgrind, 20,000 vs 40,000
        # records: 3,313 more instructions per record through record_of() than inline.
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
        # The same inline record as in _command (see there for why).
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
        is set. By default the problem is cleared: the dependency took the credentials
        (fixed, or the bucket/database created after the service started)."""
        self.stats.credentials_problem = None

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
        record = record_of(
            operation, outcome, duration, error_kind, figs, self._clock(), _wall(), error
        )
        self.stats._append(record)
        if self._listeners:
            self._publish(record)

    def _publish(self, record: _Record) -> None:
        """Hand the record out as an :class:`OperationEvent` (made only for listeners)."""
        event = OperationEvent(self.kind, self.name, *record[:EVENT_FIELDS])
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
            self._succeeded_probe()
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
            self._succeeded_probe()
        self.stats.last_probe = result
        return result

    def _succeeded_probe(self) -> None:
        """A health probe succeeded: the server takes the configured credentials, so a
        ``credentials_problem`` no longer holds (without it, a database created after the
        service started would stay "down" until a guarded call happened to succeed)."""
        if self.stats.credentials_problem is not None:
            self._succeeded()

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


def _guards_of(
    adapter: Adapter,
    name: str,
    registry: Registry | None,
    bulkhead: Bulkhead | None,
    throttle: AdaptiveThrottle | None,
    retry_budget: RetryBudget | None,
) -> Guards:
    """The adapter's guards: those passed, else the registry's for ``name`` (or its kind)."""
    for value, kind in (
        (bulkhead, Bulkhead),
        (throttle, AdaptiveThrottle),
        (retry_budget, RetryBudget),
    ):
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"{type(adapter).__name__}: {kind.__name__.lower()} must be a "
                f"brownout.overload.{kind.__name__}, got {type(value).__name__}"
            )
    given = Guards(bulkhead, throttle, retry_budget)
    if registry is None:
        return given
    registry.add_guards(name, given)
    return registry.guards(name, kind=adapter.kind)
