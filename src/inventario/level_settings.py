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
  - S3: at most ``S3_ADMISSION x pool_multiplier`` calls in flight (the client's
    connection pool at OPTIMAL), the rest waiting up to ``S3_ADMISSION_WAIT`` and
    then refused: an invoice download answers 503 ``dependency_busy``, the spool's
    uploader stops as for an outage and keeps its files;

* ``request_timeout``: per-call timeouts.

  - PostgreSQL: its ``statement_timeout``, set per transaction (``SET LOCAL``),
    at most ``DATABASE_TIMEOUT_CAP`` (below the client-side command timeout,
    which catches a server that stopped answering and would cut a longer one
    short). Not on SQLite (no statement timeout);
  - Redis, OpenAI and S3: the client's own timeout (``REDIS_TIMEOUT``,
    ``OPENAI_TIMEOUT``, ``S3_TIMEOUT``) times the level's ``request_timeout``
    over OPTIMAL's, at most ``TIMEOUT_FACTOR_CAP`` times (MINIMAL's: EMERGENCY's
    15x is more than any request of inventario should wait): Redis's socket
    timeout, OpenAI's read timeout (``with_options``, per level), S3's read
    timeout (botocore's ``Config``: one client per level, ``AsyncS3Adapter.use_options``);

* ``max_retries``: the OpenAI SDK's and botocore's (S3) own retries, within the
  adapter's retry budget (20 % of requests over 10 s, plus 10 a second).

The levels' timeouts grow as the level worsens (2 s at OPTIMAL, 5 s at LIMITED)
while their pools, batches and retries shrink: a recovering dependency gets
fewer calls at a time, fewer repeats, and is not made to start work it is then
abandoned on. A bulkhead's limit follows a level change at once (the manager
listener :func:`refresh_admission`), and after every call through it.

:func:`level_table` is what ``/status`` shows of each level: the figures applied,
and the settings that act on nothing here (``not_applied``, with the reason).

Under the kill switch (``BROWNOUT_DISABLED=1`` when the bulkheads are built) the
admission limits are computed and shown, never applied: the bulkheads admit
every call (``brownout.overload.Bulkhead``); ``level_table`` says so. The
timeouts, the replay batch and the cache TTL still follow the level (they are
the clients' and the outbox's own settings, not a refusal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from brownout.health import DegradationManager, Evaluation, Level, LevelSettings
from brownout.outbox import Replayer
from brownout.overload import Bulkhead, LimitPolicy
from brownout.redis import DEFAULT_SOCKET_TIMEOUT, AsyncRedisAdapter
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
    "OPENAI_CONNECT_TIMEOUT",
    "OPENAI_TIMEOUT",
    "REDIS_ADMISSION",
    "REDIS_TIMEOUT",
    "S3_ADMISSION",
    "S3_ADMISSION_WAIT",
    "S3_CONNECT_TIMEOUT",
    "S3_TIMEOUT",
    "TIMEOUT_FACTOR_CAP",
    "LevelScaledLimit",
    "admission",
    "apply_batch_size",
    "apply_client_options",
    "database_admission",
    "database_timeout",
    "level_table",
    "not_applied",
    "refresh_admission",
    "replay_batch",
    "s3_admission",
    "timeout_factor",
]

#: Redis calls in flight at OPTIMAL (the adapter's connection pool: 50 connections).
REDIS_ADMISSION = 50
#: PostgreSQL units of work in flight at OPTIMAL: the adapter's pool, 10 connections
#: and 10 of overflow (``brownout.sql.DEFAULT_POOL_SIZE`` + ``DEFAULT_MAX_OVERFLOW``).
DATABASE_ADMISSION = DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW
#: Seconds a unit of work waits for admission: the pool's own wait for a connection.
DATABASE_ADMISSION_WAIT = DEFAULT_POOL_TIMEOUT
#: S3 calls in flight at OPTIMAL: the adapter's connection pool (``max_pool_connections``).
S3_ADMISSION = 10
#: Seconds an S3 call waits for admission (an upload or download is seconds long anyway).
S3_ADMISSION_WAIT = 2.0
#: Callers waiting for an S3 permit at most (the rest are refused at once).
_S3_MAX_WAITING = 64
#: The longest ``statement_timeout`` applied (s): the adapter's own, 1 s below its
#: client-side command timeout (a longer one would end on the client's side first).
DATABASE_TIMEOUT_CAP = DEFAULT_STATEMENT_TIMEOUT
#: Callers waiting for a database permit at most (the rest are refused at once).
_DATABASE_MAX_WAITING = 256
#: Redis's socket timeout at OPTIMAL (s): the adapter's own (``brownout.redis``).
REDIS_TIMEOUT = DEFAULT_SOCKET_TIMEOUT
#: OpenAI's read and connect timeouts at OPTIMAL (s): the adapter's own
#: (``brownout.openai.DEFAULT_TIMEOUT``; not imported: the openai extra is optional).
#: The connect timeout stays 3 s at every level.
OPENAI_TIMEOUT = 30.0
OPENAI_CONNECT_TIMEOUT = 3.0
#: S3's read timeout at OPTIMAL (s): the adapter's own (``brownout.s3.DEFAULT_READ_TIMEOUT``;
#: not imported: the s3 extra is optional). Its connect timeout stays 1 s at every level.
S3_TIMEOUT = 5.0
S3_CONNECT_TIMEOUT = 1.0
#: A dependency's timeout grows with the level at most this many times (MINIMAL's 10 s
#: over OPTIMAL's 2 s): EMERGENCY's 15x is more than any request should wait.
TIMEOUT_FACTOR_CAP = 5.0


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


def timeout_factor(settings: LevelSettings, optimal: LevelSettings) -> float:
    """How many times its own timeout a dependency is given at a level: the level's
    ``request_timeout`` over OPTIMAL's, at most :data:`TIMEOUT_FACTOR_CAP`."""
    return min(settings.request_timeout / optimal.request_timeout, TIMEOUT_FACTOR_CAP)


class _ClientFigures(NamedTuple):
    """The clients' settings at one level."""

    redis_timeout: float
    openai_timeout: float
    s3_timeout: float
    #: the OpenAI SDK's and botocore's (S3) own retries
    retries: int


def _client_figures(manager: DegradationManager, level: Level) -> _ClientFigures:
    s = manager.settings_for(level)
    factor = timeout_factor(s, manager.settings_for(Level.OPTIMAL))
    return _ClientFigures(
        REDIS_TIMEOUT * factor, OPENAI_TIMEOUT * factor, S3_TIMEOUT * factor, s.max_retries
    )


def apply_client_options(
    manager: DegradationManager,
    *,
    cache: AsyncRedisAdapter | None,
    ai: Any | None,
    s3: Any | None = None,
) -> Callable[[Evaluation], None]:
    """A manager listener: Redis's socket timeout, OpenAI's timeout and retries (``ai``:
    an ``AsyncOpenAIAdapter``) and S3's (``s3``: an ``AsyncS3Adapter``) follow the level;
    set now for the current one."""
    applied: list[Level | None] = [None]

    def apply(level: Level) -> None:
        if level is applied[0]:
            return
        figures = _client_figures(manager, level)
        if cache is not None:
            cache.set_socket_timeout(figures.redis_timeout)
        if ai is not None:
            import openai

            ai.use_options(
                timeout=openai.Timeout(figures.openai_timeout, connect=OPENAI_CONNECT_TIMEOUT),
                max_retries=figures.retries,
            )
        if s3 is not None:
            s3.use_options(
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=figures.s3_timeout,
                max_retries=figures.retries,
            )
        applied[0] = level

    def on_evaluation(evaluation: Evaluation) -> None:
        apply(evaluation.level)

    apply(manager.level)
    return on_evaluation


def database_admission(multiplier: Callable[[], float] | None = None) -> Bulkhead:
    """PostgreSQL's bulkhead: ``DATABASE_ADMISSION x pool_multiplier`` units of work in
    flight, waiting up to ``DATABASE_ADMISSION_WAIT`` for a permit."""
    return Bulkhead(
        "database",
        limit=LevelScaledLimit(DATABASE_ADMISSION, multiplier),
        max_wait=DATABASE_ADMISSION_WAIT,
        max_waiting=_DATABASE_MAX_WAITING,
    )


def s3_admission(multiplier: Callable[[], float] | None = None) -> Bulkhead:
    """S3's bulkhead: ``S3_ADMISSION x pool_multiplier`` calls in flight, waiting up to
    ``S3_ADMISSION_WAIT`` for a permit."""
    return Bulkhead(
        "s3",
        limit=LevelScaledLimit(S3_ADMISSION, multiplier),
        max_wait=S3_ADMISSION_WAIT,
        max_waiting=_S3_MAX_WAITING,
    )


def refresh_admission(
    manager: DegradationManager, bulkheads: Iterable[Bulkhead]
) -> Callable[[Evaluation], None]:
    """A manager listener: on a change of level, each bulkhead (of a
    :class:`LevelScaledLimit`) reads its limit at once (``Bulkhead.refresh_limit``), so
    the first call after the change has the new level's limit, and callers queued for
    a permit are let in when it grew. Nothing per call: an evaluation of the same level
    does nothing."""
    guarded = tuple(bulkheads)
    applied: list[Level] = [manager.level]
    for bulkhead in guarded:  # the level in force now (the limit was read before it was)
        bulkhead.refresh_limit()

    def on_evaluation(evaluation: Evaluation) -> None:
        if evaluation.level is applied[0]:
            return
        applied[0] = evaluation.level
        for bulkhead in guarded:
            bulkhead.refresh_limit()

    return on_evaluation


class LevelScaledLimit:
    """A bulkhead limit (:class:`brownout.overload.LimitPolicy`) of ``base x pool_multiplier``
    of the current level, read when the bulkhead is built, after every call, and on a
    change of level (:func:`refresh_admission`).

    ``multiplier`` returns the level's ``pool_multiplier`` (bound to the manager once it
    exists: the manager is built from the adapters this limit guards). ``adaptive``: a
    policy (``Gradient2``) whose limit is scaled instead of ``base`` (it gets every
    sample), so the limit follows the dependency's latency *and* the level.
    A bulkhead built under the kill switch still reads it and feeds it samples
    (its snapshot shows the limit) but admits every call.
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


def not_applied(*, openai: bool, s3: bool, unguarded: Sequence[str] = ()) -> dict[str, str]:
    """The level's settings (or parts of them) that act on nothing here, and why;
    ``unguarded``: the dependencies whose admission bulkhead was built under the kill
    switch (their admission figures are shown, not applied)."""
    retrying = " and ".join(name for name, on in (("OpenAI", openai), ("S3", s3)) if on)
    out = {
        "retry_strategy": "the OpenAI SDK and botocore (S3) back off exponentially (with "
        "jitter) whatever the level says; the other clients make no retries",
        "max_retries": (f"applied to {retrying} only: " if retrying else "")
        + "the database and Redis clients make no retries of their own (a retried cache "
        "read holds the request for data the database has; queued writes are replayed "
        "by the outbox on its own backoff)",
    }
    if unguarded:
        out["kill_switch"] = (
            "BROWNOUT_DISABLED is set: the admission limits of "
            + ", ".join(unguarded)
            + " are shown, not applied (every call is admitted)"
        )
    return out


def level_table(
    manager: DegradationManager,
    *,
    replay_base: int,
    redis: Bulkhead | None = None,
    database: Bulkhead | None = None,
    database_timeouts: bool = False,
    redis_timeouts: bool = False,
    openai: bool = False,
    s3: bool = False,
    s3_admission: Bulkhead | None = None,
) -> dict[str, Any]:
    """What each level changes, as ``/status`` shows it: per level, the figures inventario
    applies (only those of the dependencies it has: ``None`` otherwise); ``applied``:
    their names; ``not_applied``: the level's settings that act on nothing, and why;
    ``current``: the level in force. A bulkhead built under the kill switch
    (``disabled``) has its figures shown, not applied. ``s3``: S3's timeouts and retries
    follow the level."""
    levels = []
    for level in Level:
        s = manager.settings_for(level)
        redis_timeout, openai_timeout, s3_timeout, retries = _client_figures(manager, level)
        levels.append(
            {
                "level": level.name,
                "cache_ttl_s": s.cache_ttl,
                "replay_batch": replay_batch(replay_base, s),
                "redis_admission": admission(REDIS_ADMISSION, s) if redis is not None else None,
                "redis_timeout_s": redis_timeout if redis_timeouts else None,
                "database_admission": admission(DATABASE_ADMISSION, s)
                if database is not None
                else None,
                "database_timeout_s": database_timeout(s) if database_timeouts else None,
                "s3_admission": admission(S3_ADMISSION, s) if s3_admission is not None else None,
                "s3_timeout_s": s3_timeout if s3 else None,
                "s3_max_retries": retries if s3 else None,
                "openai_timeout_s": openai_timeout if openai else None,
                "openai_max_retries": retries if openai else None,
                "pool_multiplier": s.pool_multiplier,
                "batch_multiplier": s.batch_multiplier,
            }
        )
    applied = ["cache_ttl_s", "replay_batch"]
    unguarded = [
        name
        for name, bulkhead in (("Redis", redis), ("the database", database), ("S3", s3_admission))
        if bulkhead is not None and bulkhead.disabled
    ]
    for name, on in (
        ("redis_admission", redis is not None and not redis.disabled),
        ("redis_timeout_s", redis_timeouts),
        ("database_admission", database is not None and not database.disabled),
        ("database_timeout_s", database_timeouts),
        ("s3_admission", s3_admission is not None and not s3_admission.disabled),
        ("s3_timeout_s", s3),
        ("s3_max_retries", s3),
        ("openai_timeout_s", openai),
        ("openai_max_retries", openai),
    ):
        if on:
            applied.append(name)
    return {
        "current": manager.level.name,
        "applied": applied,
        "not_applied": not_applied(openai=openai, s3=s3, unguarded=unguarded),
        "levels": levels,
    }
