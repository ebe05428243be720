"""The degradation level's resource settings, applied (issue 14 item 7).

Each level carries :class:`brownout.health.LevelSettings`. inventario applies:

* ``cache_ttl``: the TTL of a cached product (``inventario.cache``);
* ``batch_multiplier``: the outbox replay batch, ``REPLAY_BATCH x batch_multiplier``
  intents per database transaction (200 at OPTIMAL, 50 at MINIMAL): a database
  that has just come back gets smaller transactions while the service is still
  degraded, and full ones once the level has recovered;
* ``pool_multiplier``: admission limits (bulkheads) of

  - Redis: at most ``REDIS_ADMISSION x pool_multiplier`` calls in flight, no
    waiting: a call beyond it is a cache miss at once. Within that, an adaptive
    limit (``Gradient2``) follows Redis's latency;
  - PostgreSQL: at most ``DATABASE_ADMISSION x pool_multiplier`` units of work
    (transactions) in flight, the rest waiting up to ``DATABASE_ADMISSION_WAIT``
    (the pool's own wait) and then refused (503 with ``Retry-After``; a replay
    stops as for an outage and keeps its writes). Not on SQLite: an embedded
    file has no server to spare, and its writes already queue for one writer;

* ``request_timeout``: PostgreSQL's ``statement_timeout``, set per transaction
  (``SET LOCAL``), at most ``DATABASE_TIMEOUT_CAP`` (below the client-side
  command timeout, which catches a server that stopped answering and would cut a
  longer one short). Not on SQLite (no statement timeout).

The levels' timeouts grow as the level worsens (2 s at OPTIMAL, 5 s at LIMITED)
while their pools and batches shrink: a recovering dependency gets fewer calls
at a time, and is not made to start work it is then abandoned on.

:func:`level_table` is what ``/status`` shows of each level: the figures applied,
and the settings that act on nothing here (``not_applied``, with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from brownout.health import DegradationManager, Evaluation, Level, LevelSettings
from brownout.outbox import Replayer
from brownout.overload import Bulkhead, LimitPolicy
from brownout.sql import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
)

__all__ = [
    "DATABASE_ADMISSION",
    "DATABASE_ADMISSION_WAIT",
    "DATABASE_TIMEOUT_CAP",
    "NOT_APPLIED",
    "REDIS_ADMISSION",
    "LevelScaledLimit",
    "admission",
    "apply_batch_size",
    "database_admission",
    "database_timeout",
    "level_table",
    "replay_batch",
]

#: Redis calls in flight at OPTIMAL (the adapter's connection pool: 50 connections).
REDIS_ADMISSION = 50
#: PostgreSQL units of work in flight at OPTIMAL: the adapter's pool, 10 connections
#: and 10 of overflow (``brownout.sql.DEFAULT_POOL_SIZE`` + ``DEFAULT_MAX_OVERFLOW``).
DATABASE_ADMISSION = DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW
#: Seconds a unit of work waits for admission: the pool's own wait for a connection.
DATABASE_ADMISSION_WAIT = DEFAULT_POOL_TIMEOUT
#: The longest ``statement_timeout`` applied (s): the adapter's own, 1 s below its
#: client-side command timeout (a longer one would end on the client's side first).
DATABASE_TIMEOUT_CAP = DEFAULT_STATEMENT_TIMEOUT
#: Callers waiting for a database permit at most (the rest are refused at once).
_DATABASE_MAX_WAITING = 256


def replay_batch(base: int, settings: LevelSettings) -> int:
    """Intents per replay transaction at a level: ``base x batch_multiplier``, at least 1."""
    return max(1, math.floor(base * settings.batch_multiplier))


def admission(base: int, settings: LevelSettings) -> int:
    """Calls in flight at a level: ``base x pool_multiplier``, at least 1."""
    return max(1, math.floor(base * settings.pool_multiplier))


def database_timeout(settings: LevelSettings) -> float:
    """PostgreSQL's ``statement_timeout`` at a level (s): its ``request_timeout``, at most
    :data:`DATABASE_TIMEOUT_CAP`."""
    return min(settings.request_timeout, DATABASE_TIMEOUT_CAP)


def database_admission(multiplier: Callable[[], float] | None = None) -> Bulkhead:
    """PostgreSQL's bulkhead: ``DATABASE_ADMISSION x pool_multiplier`` units of work in
    flight, waiting up to ``DATABASE_ADMISSION_WAIT`` for a permit."""
    return Bulkhead(
        "database",
        limit=LevelScaledLimit(DATABASE_ADMISSION, multiplier),
        max_wait=DATABASE_ADMISSION_WAIT,
        max_waiting=_DATABASE_MAX_WAITING,
    )


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


#: The settings that act on nothing in inventario, and why (``/status`` says so).
NOT_APPLIED = {
    "retry_strategy": "inventario's clients make no retries of their own (the outbox "
    "replays queued writes on its own backoff)",
    "max_retries": "inventario's clients make no retries of their own",
}


def level_table(
    manager: DegradationManager,
    *,
    replay_base: int,
    redis: Bulkhead | None = None,
    database: Bulkhead | None = None,
    database_timeouts: bool = False,
) -> dict[str, Any]:
    """What each level changes, as ``/status`` shows it: per level, the figures inventario
    applies (only those of the dependencies it has: ``None`` otherwise); ``applied``:
    their names; ``not_applied``: the level's settings that act on nothing, and why;
    ``current``: the level in force."""
    levels = []
    for level in Level:
        s = manager.settings_for(level)
        levels.append(
            {
                "level": level.name,
                "cache_ttl_s": s.cache_ttl,
                "replay_batch": replay_batch(replay_base, s),
                "redis_admission": admission(REDIS_ADMISSION, s) if redis is not None else None,
                "database_admission": admission(DATABASE_ADMISSION, s)
                if database is not None
                else None,
                "database_timeout_s": database_timeout(s) if database_timeouts else None,
                "pool_multiplier": s.pool_multiplier,
                "batch_multiplier": s.batch_multiplier,
            }
        )
    applied = ["cache_ttl_s", "replay_batch"]
    if redis is not None:
        applied.append("redis_admission")
    if database is not None:
        applied.append("database_admission")
    if database_timeouts:
        applied.append("database_timeout_s")
    return {
        "current": manager.level.name,
        "applied": applied,
        "not_applied": dict(NOT_APPLIED),
        "levels": levels,
    }
