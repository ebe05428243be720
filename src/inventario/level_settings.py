"""The degradation level's resource settings, applied (issue 14 item 7).

Each level carries :class:`brownout.health.LevelSettings`. inventario applies:

* ``cache_ttl``: the TTL of a cached product (``inventario.cache``);
* ``batch_multiplier``: the outbox replay batch, ``REPLAY_BATCH x batch_multiplier``
  intents per database transaction (200 at OPTIMAL, 40 at MINIMAL): a database
  that has just come back gets smaller transactions while the service is still
  degraded, and full ones once the level has recovered;
* ``pool_multiplier``: the admission limit of Redis (a bulkhead of at most
  ``REDIS_ADMISSION x pool_multiplier`` calls in flight, no waiting: a call
  beyond it is a cache miss at once), so a degraded service sends a slow or
  recovering Redis fewer calls at a time. Within that, an adaptive limit
  (``Gradient2``) follows Redis's latency: when Redis slows down, fewer calls
  wait on it and the rest miss at once.

``request_timeout``, ``max_retries`` and ``retry_strategy`` are shown, not
applied: inventario's clients do not retry (the outbox does, on its own
schedule), and its per-call timeouts are the adapters' (Redis 0.5 s).
:func:`level_table` is what ``/status`` shows of each level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from brownout.health import DegradationManager, Evaluation, Level, LevelSettings
from brownout.outbox import Replayer
from brownout.overload import Bulkhead, LimitPolicy

__all__ = [
    "REDIS_ADMISSION",
    "LevelScaledLimit",
    "apply_batch_size",
    "level_table",
    "replay_batch",
]

#: Redis calls in flight at OPTIMAL (the adapter's connection pool: 50 connections).
REDIS_ADMISSION = 50


def replay_batch(base: int, settings: LevelSettings) -> int:
    """Intents per replay transaction at a level: ``base x batch_multiplier``, at least 1."""
    return max(1, math.floor(base * settings.batch_multiplier))


class LevelScaledLimit:
    """A bulkhead limit (:class:`brownout.overload.LimitPolicy`) of ``base x pool_multiplier``
    of the current level, read when the bulkhead is built and after every call.

    ``multiplier`` returns the level's ``pool_multiplier`` (bound to the manager once it
    exists: the manager is built from the adapters this limit guards). ``adaptive``: a
    policy (``Gradient2``) whose limit is scaled instead of ``base`` (it gets every
    sample), so the limit follows the dependency's latency *and* the level.
    """

    def __init__(
        self,
        base: int,
        multiplier: Callable[[], float] | None = None,
        *,
        adaptive: LimitPolicy | None = None,
    ) -> None:
        if isinstance(base, bool) or not isinstance(base, int) or base < 1:
            raise ValueError(f"LevelScaledLimit.base must be an integer >= 1, got {base!r}")
        self.base = base
        self.multiplier = multiplier
        self.adaptive = adaptive

    @property
    def limit(self) -> int:
        factor = 1.0 if self.multiplier is None else self.multiplier()
        base = self.base if self.adaptive is None else min(self.base, self.adaptive.limit)
        return max(1, math.floor(base * factor))

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        if self.adaptive is not None:
            self.adaptive.on_sample(now, rtt, inflight, dropped)
        return self.limit


def apply_batch_size(
    manager: DegradationManager, replayer: Replayer, base: int
) -> Callable[[Evaluation], None]:
    """A manager listener: the replayer's ``batch_size`` follows the level."""

    def on_evaluation(evaluation: Evaluation) -> None:
        size = replay_batch(base, manager.settings_for(evaluation.level))
        if replayer.batch_size != size:
            replayer.batch_size = size

    replayer.batch_size = replay_batch(base, manager.settings)
    return on_evaluation


def level_table(
    manager: DegradationManager, *, replay_base: int, redis: Bulkhead | None
) -> dict[str, Any]:
    """What each level changes, as ``/status`` shows it: per level, the settings and the
    figures inventario derives from them; ``current``: the level in force."""
    levels = []
    for level in Level:
        s = manager.settings_for(level)
        levels.append(
            {
                "level": level.name,
                "cache_ttl_s": s.cache_ttl,
                "replay_batch": replay_batch(replay_base, s),
                "redis_admission": max(1, math.floor(REDIS_ADMISSION * s.pool_multiplier))
                if redis is not None
                else None,
                "pool_multiplier": s.pool_multiplier,
                "batch_multiplier": s.batch_multiplier,
                "request_timeout_s": s.request_timeout,
                "max_retries": s.max_retries,
            }
        )
    return {
        "current": manager.level.name,
        "applied": ["cache_ttl_s", "replay_batch"] + (["redis_admission"] if redis else []),
        "levels": levels,
    }
