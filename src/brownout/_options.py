"""The keyword options every adapter takes, as one ``TypedDict``.

Each adapter family spells its constructor and factories as
``(..., **options: Unpack[AdapterOptions])`` (or a family's extension of it) and
passes them on to :class:`~brownout.adapter.Adapter` unchanged, instead of
repeating the same eight keyword parameters in every signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from brownout._breaker import CircuitBreaker
from brownout._clock import Clock
from brownout._config import BreakerConfig
from brownout._registry import Registry
from brownout.overload import AdaptiveThrottle, Bulkhead, RetryBudget

__all__ = ["AdapterOptions", "split_options"]


class AdapterOptions(TypedDict, total=False):
    """Keyword options of every adapter (all optional; see :class:`~brownout.adapter.Adapter`).

    - ``name``: the breaker's and the adapter's name (default: the adapter's kind).
    - ``breaker``: a breaker to use as it is (not with ``config``).
    - ``config``: the breaker's :class:`~brownout.BreakerConfig` (default: the kind's preset).
    - ``registry``: the :class:`~brownout.Registry` the breaker is taken from or added to.
    - ``clock``: a monotonic clock in seconds (default: the breaker's).
    - ``secrets``: strings never to show in errors, events and figures.
    - ``probe_timeout``: seconds a health probe may take (> 0).
    - ``recent_operations``: how many operations :meth:`~brownout.adapter.Adapter.health` keeps.
    - ``bulkhead``: a :class:`~brownout.overload.Bulkhead` every operation holds a permit of.
    - ``throttle``: an :class:`~brownout.overload.AdaptiveThrottle` every operation passes.
    - ``retry_budget``: a :class:`~brownout.overload.RetryBudget` the client's own retries
      (when they are on) stay within.

    With a ``registry``, a guard not passed comes from the registry's ``guards=``
    presets (see :meth:`~brownout.Registry.guards`).

    >>> from brownout.adapter import AdapterOptions
    >>> options: AdapterOptions = {"name": "cache", "probe_timeout": 0.5}
    >>> import pprint
    >>> pprint.pprint(sorted(AdapterOptions.__optional_keys__), compact=True)
    ['breaker', 'bulkhead', 'clock', 'config', 'name', 'probe_timeout',
     'recent_operations', 'registry', 'retry_budget', 'secrets', 'throttle']
    """

    name: str | None
    breaker: CircuitBreaker | None
    config: BreakerConfig | None
    registry: Registry | None
    clock: Clock | None
    secrets: Iterable[str | None]
    probe_timeout: float | None
    recent_operations: int
    bulkhead: Bulkhead | None
    throttle: AdaptiveThrottle | None
    retry_budget: RetryBudget | None


def split_options(
    options: Mapping[str, Any], keys: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` split into those named in ``keys`` and the rest (for a factory whose
    ``**options`` mix the adapter's and the client library's keywords)."""
    mine = {k: v for k, v in options.items() if k in keys}
    rest = {k: v for k, v in options.items() if k not in keys}
    return mine, rest
