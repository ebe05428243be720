"""Everything the service runs on, built from the settings: adapters, manager, outbox, metrics.

Built once per application by :func:`build_runtime` (no I/O: clients connect
lazily) and started / stopped by the FastAPI lifespan. Nothing here is a
module-level singleton.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from brownout import BreakerOpen, Registry, State
from brownout.coherence import CacheCoherence
from brownout.health import (
    DEFAULT_RULES,
    Component,
    DegradationManager,
    Feature,
    Level,
    LevelRule,
    TrendRecorder,
)
from brownout.hostshare import HostShare
from brownout.outbox import BatchHandler, Intent, Outbox, Replayer, SqlApplier
from brownout.overload import Bulkhead, Gradient2, RetryBudget
from brownout.prometheus import PrometheusMetrics
from brownout.redis import AsyncRedisAdapter
from brownout.spool import Spool, SpoolUploader
from brownout.sql import AsyncDatabase, is_missing_schema
from inventario.cache import ProductCache, product_key
from inventario.config import Settings
from inventario.db import create_schema
from inventario.fleet_cache import SharedInvalidations, mark_stale_sync
from inventario.level_settings import (
    REDIS_ADMISSION,
    LevelScaledLimit,
    apply_batch_size,
    apply_client_options,
    database_admission,
    database_timeout,
    refresh_admission,
    s3_admission,
)
from inventario.shedding import build_shedder
from inventario.snapshot import ReadSnapshot
from inventario.spool_health import InvoiceBinder, SpoolHealth, adopt_local_bucket, spool_backlog
from inventario.writes import OPERATIONS, TOUCHES, apply_writes

if TYPE_CHECKING:  # the s3 and openai extras: imported only when configured
    from brownout.openai import AsyncOpenAIAdapter
    from brownout.s3 import AsyncS3Adapter
    from brownout.web import Shedder

__all__ = ["FEATURES", "REPLAY_BATCH", "RULES", "Runtime", "build_runtime"]

logger = logging.getLogger("inventario")

#: The seed's feature matrix, mapped onto inventario's endpoints; the last words of
#: each say what users live with while it is off (the status page's level lines).
FEATURES: tuple[Feature, ...] = (
    # the cache is most useful when the rest is in trouble: with the database down
    # (MINIMAL) cached product reads are the only reads left, so they stay on
    Feature(
        "cache_read",
        {"cache"},
        Level.MINIMAL,
        "product and stock reads from Redis",
        "product reads are slower (no cache)",
    ),
    Feature(
        "cache_write",
        {"cache"},
        Level.MINIMAL,
        "populate the cache after a read",
        "product reads are slower (no cache)",
    ),
    Feature(
        "database_write",
        {"database"},
        Level.LIMITED,
        "direct writes (else: outbox)",
        "writes are being queued (applied when the database is back)",
    ),
    Feature(
        "complex_queries",
        {"database"},
        Level.DEGRADED,
        "searches, reports (low stock)",
        "searches and reports are off",
    ),
    Feature(
        "batch_processing",
        {"database"},
        Level.DEGRADED,
        "applying an invoice",
        "invoices cannot be applied to stock",
    ),
    Feature(
        "ai_invoice_extraction",
        {"openai"},
        Level.LIMITED,
        "invoice lines read by an LLM",
        "invoice lines are entered by hand",
    ),
    Feature(
        "ai_pricing",
        {"openai"},
        Level.DEGRADED,
        "AI price suggestions (else: rule)",
        "price suggestions come from the markup rule, not AI",
    ),
    Feature(
        "inventory_write",
        set(),
        Level.MINIMAL,
        "stock movements and product writes",
        "stock movements and product changes are turned away (queued while the database is down)",
    ),
    Feature(
        "pricing_update",
        {"database"},
        Level.LIMITED,
        "changing prices",
        "price changes are turned away (queued while the database is down)",
    ),
    Feature(
        "file_upload",
        set(),
        Level.MINIMAL,
        "invoice uploads (spooled if S3 is down)",
        "invoice uploads are turned away",
    ),
    Feature(
        "read_only_database",
        {"database"},
        Level.MINIMAL,
        "product reads",
        "products cannot be looked up (maintenance mode)",
    ),
    Feature(
        "health_status",
        set(),
        Level.EMERGENCY,
        "health, status page, metrics",
        "the status page is off",
    ),
)


#: Queued writes replayed per database transaction (a failing one is isolated by the
#: applier, the rest of its batch applied; FIFO per product kept).
REPLAY_BATCH = 200


#: brownout's default rules, except that the database down *alone* costs the level
#: MINIMAL and no more, whatever else is configured (``replaces_score``): with the
#: database the only component (the embedded SQLite default, or PostgreSQL alone)
#: its outage scored 0 => EMERGENCY, maintenance mode, although the outbox keeps
#: taking writes and health answers. With something else down too it is EMERGENCY.
RULES: tuple[LevelRule, ...] = tuple(
    LevelRule(r.name, r.down, r.level, replaces_score=True) if r.name == "database_down" else r
    for r in DEFAULT_RULES
)


@dataclass(kw_only=True)
class Runtime:
    """The live parts of one inventario instance, typed: what is optional is ``None``
    when its dependency is not configured (Redis, S3, OpenAI)."""

    settings: Settings
    registry: Registry
    db: AsyncDatabase
    manager: DegradationManager
    metrics: PrometheusMetrics
    outbox: Outbox
    applier: SqlApplier
    replayer: Replayer
    #: invoice files without S3, or waiting for it
    spool: Spool
    #: spooled files their bucket refuses for good, shown as a problem of S3 on /health
    spool_health: SpoolHealth
    #: records where a spooled invoice went once uploaded
    invoice_binder: InvoiceBinder
    product_cache: ProductCache
    cache: AsyncRedisAdapter | None = None
    s3: AsyncS3Adapter | None = None
    ai: AsyncOpenAIAdapter | None = None
    #: drains the spool to S3 (with S3 only)
    spool_uploader: SpoolUploader | None = None
    #: cache keys a write invalidated while Redis was away (with Redis only)
    coherence: CacheCoherence | None = None
    #: the breakers shared with the other workers of this service (``WORKERS`` > 1)
    hostshare: HostShare | None = None
    #: cache keys a write could not invalidate, shared with the other replicas through
    #: the database (PostgreSQL and Redis only): every replica deletes them in Redis
    #: before its cached reads resume
    shared_invalidations: SharedInvalidations | None = None
    #: the products as last read from the database, with this replica's queued writes:
    #: served when the database is down and the cache misses (PostgreSQL only)
    snapshot: ReadSnapshot | None = None
    #: the status page's trends: each dependency's last 15 minutes, sampled once a second
    trends: TrendRecorder = field(init=False)
    #: Redis's admission limit, scaled by the level's pool_multiplier (with Redis only)
    redis_admission: Bulkhead | None = None
    #: the database's admission limit, scaled by the level's pool_multiplier, and its
    #: statement_timeout set per transaction from the level (PostgreSQL only)
    db_admission: Bulkhead | None = None
    #: S3's admission limit (calls in flight, by level)
    s3_admission: Bulkhead | None = None
    #: priority shedding at the edge (inventario.shedding): admission by request class
    shedder: Shedder = field(init=False)
    #: the routes of each class as configured (set by the app: ``ROUTE_CRITICALITY`` over
    #: inventario's own), shown in ``explain()`` and on /status
    route_classes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trends = TrendRecorder(self.manager)
        self.shedder = build_shedder(
            self.manager,
            max_in_flight=self.settings.shed_max_in_flight,
            max_delay=self.settings.shed_max_delay,
            max_queue_wait=self.settings.shed_max_queue_wait,
            critical_reserve=self.settings.shed_critical_reserve,
        )
        self.manager.add_section("shedding", self.shedder.snapshot)
        self.manager.add_section("kill_switch", self.kill_switch)
        self.metrics.attach(self.shedder)  # brownout_requests_shed_total, ..._in_flight

    @property
    def schema_ready(self) -> bool:
        """True once inventario's tables and the outbox's ``brownout_applied`` exist.

        The replayer creates them (its ``prepare``): at start, and, if the database is
        down or not created yet then, before each drain until it succeeds: on its
        heartbeat, doubling while it fails, and as soon as the database breaker closes.
        """
        return self.replayer.prepared

    async def start(self) -> None:
        """Create the schema (now, or as soon as the database is there: the service
        serves meanwhile, and queues writes), then start probing, replaying and uploading."""
        await self.replayer.ensure_prepared()
        await self.manager.start()
        await self.trends.start()
        await self.replayer.start()
        if self.snapshot is not None:
            self.snapshot.schedule()  # then on every heartbeat while the database is up
        await asyncio.to_thread(adopt_local_bucket, self.spool)
        self.spool_health.refresh()  # entries that failed before this start
        if self.spool_uploader is not None:
            await self.spool_uploader.start()

    def database_unavailable(self) -> str | None:
        """Why the database cannot take a write now, in words for a client (no hosts,
        names or driver text); ``None`` when it can, as far as the service knows."""
        state = self.db.breaker.state  # not snapshot(): this runs twice per write
        if state in (State.OPEN, State.FORCED_OPEN):
            return f"the database is unavailable (circuit breaker {state.value})"
        evaluation = self.manager.last_evaluation
        if evaluation is not None and evaluation.component("database").down:
            return "the database is unavailable"
        if not self.schema_ready:
            return "the database has no schema yet (it is created as soon as it answers)"
        return None

    def database_failure(self, exc: BaseException) -> str | None:
        """For an error from a direct write: why it may be queued (the database failed,
        or its tables are not there yet), or ``None``: the error is the request's."""
        if is_missing_schema(exc):
            self.replayer.prepare_again()
            return "the database has no schema yet (it is created as soon as it answers)"
        if isinstance(exc, BreakerOpen):
            return f"the database is unavailable (circuit breaker {exc.state.value})"
        if self.db.errors.counts(exc):
            return f"the database failed ({self.db.errors.classify(exc).kind} error)"
        return None

    async def stop(self) -> None:
        """Stop the background work, then close everything :func:`build_runtime` opened:
        the journals (outbox, spool, coherence) and every adapter's clients."""
        if self.spool_uploader is not None:
            with contextlib.suppress(Exception):
                await self.spool_uploader.stop()
        await self.invoice_binder.wait()  # the database is closed below
        await self.replayer.stop()
        await self.trends.stop()
        await self.manager.aclose()  # heartbeat, async listeners, breaker subscriptions
        self.outbox.close()
        self.spool.close()  # releases the directory lock: another Spool may open it
        if self.hostshare is not None:
            self.hostshare.close()
        await self.product_cache.aclose()  # late cache reads still in flight
        if self.coherence is not None:
            with contextlib.suppress(Exception):
                await self.coherence.aclose()  # pending keys stay journaled for the next start
        if self.shared_invalidations is not None:
            await self.shared_invalidations.aclose()
        if self.snapshot is not None:
            await self.snapshot.aclose()
        for adapter in (self.cache, self.s3, self.ai, self.db):
            if adapter is not None:
                try:
                    await adapter.aclose()  # every async adapter closes with aclose()
                except Exception:  # one that fails to close must not keep the others open
                    logger.warning("closing the %s adapter failed", adapter.name, exc_info=True)

    def kill_switch(self) -> dict[str, Any]:
        """What the kill switch (``BROWNOUT_DISABLED=1`` when this runtime was built) took
        out of the path, from each object's own flag (read when it was built): breakers
        (``breaker:<name>``), overload guards (``bulkhead:``, ``throttle:``,
        ``retry_budget:<name>``), the edge's shedding, and the product cache's bounded
        waits on Redis (``cache_read_wait``, ``cache_invalidate_wait``). ``explain()``'s
        ``kill_switch`` section; ``active`` when anything is off."""
        off = [f"breaker:{b.name}" for b in self.registry if b.state is State.DISABLED]
        seen: set[int] = set()
        for adapter in (self.db, self.cache, self.s3, self.ai):
            if adapter is None:
                continue
            guards = adapter.guards
            for kind, guard in (
                ("bulkhead", guards.bulkhead),
                ("throttle", guards.throttle),
                ("retry_budget", guards.retry_budget),
            ):
                if guard is not None and id(guard) not in seen:
                    seen.add(id(guard))
                    if guard.disabled:
                        off.append(f"{kind}:{guard.name}")
        if self.shedder.disabled:
            off.append("shedding")
        if self.cache is not None and self.product_cache.disabled:
            off.append("cache_read_wait")
        if self.coherence is not None and self.coherence.disabled:
            off.append("cache_invalidate_wait")
        return {
            "active": bool(off),
            "off": off,
            "stays": _KILL_SWITCH_STAYS if off else None,
        }

    def outbox_backlog(self) -> dict[str, Any]:
        """The outbox's figures, whether its writes wait for the database (the last drain
        stopped on an outage, or the schema is not there), and the latest dead letters
        (key, operation, reason) for the status page's card."""
        stats = self.outbox.stats()
        report = self.replayer.last_report
        stats["waiting"] = bool(stats["pending"]) and (
            not self.schema_ready or (report is not None and report.stopped is not None)
        )
        stats["recent_dead"] = (
            [
                {"key": d.key, "operation": d.operation, "reason": d.reason[:200]}
                for d in self.outbox.dead_letters(1000)[-5:]
            ]
            if stats["dead_letters"]
            else []
        )
        return stats

    def health_extras(self) -> dict[str, Any]:
        """Backlogs shown on the status page."""
        out: dict[str, Any] = {"outbox": self.outbox_backlog()}
        out["spool"] = spool_backlog(self.spool, self.s3.bucket if self.s3 is not None else None)
        if self.coherence is not None:
            out["coherence"] = self.coherence.stats()
        if self.shared_invalidations is not None:
            out["shared_invalidations"] = self.shared_invalidations.stats()
        if self.snapshot is not None:
            out["snapshot"] = self.snapshot.stats()
        return out


#: What the kill switch leaves in place (explain()'s ``kill_switch`` section).
_KILL_SWITCH_STAYS = (
    "the degradation level and its feature gates, the cache coherence journal (keys a "
    "failed DEL could not delete are still recorded), the outbox and the spool, "
    "metrics, health and status"
)


def build_runtime(settings: Settings) -> Runtime:
    """Build adapters, the degradation manager, the outbox and metrics from ``settings``."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    # several workers on one VAR_DIR: the journals are shared, each drain takes a lease
    shared = settings.workers > 1
    secrets = settings.secrets()
    registry = Registry.with_defaults()
    metrics = PrometheusMetrics()
    # PostgreSQL: units of work in flight and statement_timeout follow the level
    # (inventario.level_settings); an embedded SQLite file has no server to spare
    db_bulkhead = None
    if make_url(settings.effective_database_url).get_backend_name() == "postgresql":
        db_bulkhead = database_admission()
    db = AsyncDatabase.from_url(
        settings.effective_database_url, registry=registry, bulkhead=db_bulkhead
    )
    components = [Component.of(db, "database", required_for_ready=False, latency_target=0.25)]

    cache = None
    redis_limit: LevelScaledLimit | None = None
    redis_bulkhead: Bulkhead | None = None
    if settings.redis_url:
        # admission: REDIS_ADMISSION x the level's pool_multiplier calls in flight, no wait
        # (one beyond it is a cache miss at once); bound to the manager once it exists
        redis_limit = LevelScaledLimit(
            REDIS_ADMISSION,
            adaptive=Gradient2(initial_limit=REDIS_ADMISSION, max_limit=REDIS_ADMISSION),
        )
        redis_bulkhead = Bulkhead("redis", limit=redis_limit, max_wait=0.0)
        cache = AsyncRedisAdapter.from_url(
            settings.redis_url, registry=registry, bulkhead=redis_bulkhead
        )
        components.append(Component.of(cache, "cache", latency_target=0.05))
    else:
        components.append(Component("cache", configured=False))

    s3 = None
    s3_bulkhead: Bulkhead | None = None
    if settings.s3_bucket and settings.s3_endpoint_url:
        from brownout.s3 import AsyncS3Adapter

        # admission: S3_ADMISSION x the level's pool_multiplier calls in flight
        s3_bulkhead = s3_admission()

        s3 = AsyncS3Adapter.create(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            registry=registry,
            bulkhead=s3_bulkhead,
            # botocore's retries (the level's max_retries) stay within 20 % of requests
            retry_budget=RetryBudget("s3"),
        )
        components.append(Component.of(s3, "s3", latency_target=0.5))
    else:
        components.append(Component("s3", configured=False))
    # invoice files: the spool always (the only store without S3); with S3 an uploader
    # drains it when the S3 breaker closes and on the heartbeat
    spool = Spool(settings.var_dir / "spool", max_bytes=settings.spool_max_bytes, shared=shared)
    uploader = None
    if s3 is not None:
        uploader = SpoolUploader(spool, s3, heartbeat=settings.heartbeat)
        uploader.watch(s3.breaker)
        if shared:
            uploader.share(settings.var_dir / "spool.lease")

    ai = None
    if settings.openai_api_key:
        from brownout.openai import AsyncOpenAIAdapter

        ai = AsyncOpenAIAdapter(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            chat_model=settings.openai_model,
            registry=registry,
            # the SDK's retries (the level's max_retries) stay within 20 % of requests
            retry_budget=RetryBudget("openai"),
        )
        components.append(Component.of(ai, "openai", latency_target=5.0))
    else:
        components.append(Component("openai", configured=False))

    manager = DegradationManager(
        components,
        FEATURES,
        rules=RULES,
        heartbeat=settings.heartbeat,
        dwell=settings.recovery_dwell,
    )
    # spooled files their bucket refuses for good show as a problem of S3 on /health
    spool_health = SpoolHealth(spool, manager if s3 is not None else None)
    spool.add_listener(spool_health.on_event)
    binder = InvoiceBinder(db)  # files spooled for "the configured bucket": record where they went
    spool.add_listener(binder.on_event)
    coherence = None
    if cache is not None:
        # keys a write invalidates while Redis is away are journaled and deleted before
        # cached reads resume (the cache component is held "recovering" until then)
        # a slow Redis does not hold writes: past CACHE_INVALIDATE_WAIT the key is journaled
        # and the DEL finishes in the background (docs/overload.md, "A slow Redis"), unless
        # built under the kill switch (then a write waits for its DEL)
        coherence = CacheCoherence(
            cache,
            settings.var_dir / "coherence.db",
            manager=manager,
            shared=shared,
            max_wait=settings.cache_invalidate_wait,
        )
        coherence.watch(cache.breaker)
    fleet_keys = None
    if cache is not None and db.engine.dialect.name != "sqlite":
        # replicas on one database: a key one of them could not invalidate is recorded
        # there too, and every replica deletes those keys before it reads Redis again
        fleet_keys = SharedInvalidations(db, cache)
        fleet_keys.watch(manager)
    # a slow Redis is a cache miss after CACHE_READ_WAIT (docs/overload.md, "A slow Redis");
    # under the kill switch a read waits as long as the client does
    product_cache = ProductCache(
        cache, manager, coherence, fleet_keys, read_wait=settings.cache_read_wait
    )
    outbox = Outbox(settings.var_dir / "outbox.db", max_pending=settings.outbox_max_pending)
    snapshot = None
    if db.engine.dialect.name != "sqlite":
        # a database across the network: reads it cannot answer while down are answered
        # from this replica's copy, with their age (inventario.snapshot)
        snapshot = ReadSnapshot(settings.var_dir / "snapshot.db", db, outbox=outbox)
        snapshot.watch(manager)
    # a replayed write invalidates its product's cache entry once committed: a read
    # between the database's return and the replay may have cached the old row
    touched: dict[str, list[str]] = {}  # replayed, not yet committed: key -> products changed
    # with replicas sharing invalidations: key -> {product: its row in cache_invalidations,
    # written in the replay's transaction}
    marks: dict[str, dict[str, int]] | None = {} if fleet_keys is not None else None
    applier = SqlApplier(
        db, after_commit=_invalidate_after_replay(product_cache, touched, snapshot, marks)
    )
    for operation in OPERATIONS:
        # runs of one operation go to one call: one idempotency lookup and one insert
        # of records per run, many intents per transaction (Replayer.batch_size)
        applier.register_batch(operation, _replay_handler(operation, touched, marks))
    replayer = Replayer(
        outbox,
        applier,
        prepare=_schema_creator(db, applier, settings.var_dir / "schema.lock" if shared else None),
        batch_size=REPLAY_BATCH,
    )
    replayer.watch(db.breaker)
    if snapshot is not None:
        snapshot.ready = lambda: replayer.prepared  # no refresh before the schema exists
    # the level's batch_multiplier sizes the replay transactions (issue 14 item 7)
    manager.add_listener(apply_batch_size(manager, replayer, REPLAY_BATCH))
    if redis_limit is not None:
        redis_limit.multiplier = lambda: manager.settings.pool_multiplier
    if db_bulkhead is not None:
        db_limit = db_bulkhead.policy
        assert isinstance(db_limit, LevelScaledLimit)
        db_limit.multiplier = lambda: manager.settings.pool_multiplier
        db.statement_timeout_from(lambda: database_timeout(manager.settings))
    if s3_bulkhead is not None:
        s3_limit = s3_bulkhead.policy
        assert isinstance(s3_limit, LevelScaledLimit)
        s3_limit.multiplier = lambda: manager.settings.pool_multiplier
    # a level change sets the bulkheads' limits at once (not after their next call)
    bulkheads = [b for b in (redis_bulkhead, db_bulkhead, s3_bulkhead) if b is not None]
    manager.add_listener(refresh_admission(manager, bulkheads))
    # Redis's socket timeout, OpenAI's and S3's timeouts and retries follow the level
    manager.add_listener(apply_client_options(manager, cache=cache, ai=ai, s3=s3))
    hostshare = None
    if shared:
        replayer.share(settings.var_dir / "outbox.lease")
        # one worker's open breaker holds the others open; one set of half-open probes
        hostshare = HostShare(settings.var_dir / "breakers.db")
        for breaker in registry:
            hostshare.attach(breaker)

    metrics.attach(registry)
    metrics.attach(manager)
    metrics.attach(outbox)  # brownout_outbox_* (backlog, replayed, dead letters, latency)
    metrics.attach(spool)  # brownout_spool_* (invoice files waiting for S3, uploads)
    for adapter in (db, cache, s3, ai):
        if adapter is not None:
            metrics.attach(adapter)
    del secrets
    return Runtime(
        settings=settings,
        registry=registry,
        db=db,
        manager=manager,
        metrics=metrics,
        outbox=outbox,
        applier=applier,
        replayer=replayer,
        spool=spool,
        spool_health=spool_health,
        invoice_binder=binder,
        product_cache=product_cache,
        cache=cache,
        s3=s3,
        ai=ai,
        spool_uploader=uploader,
        coherence=coherence,
        hostshare=hostshare,
        shared_invalidations=fleet_keys,
        snapshot=snapshot,
        redis_admission=redis_bulkhead,
        db_admission=db_bulkhead,
        s3_admission=s3_bulkhead,
    )


def _schema_creator(
    db: AsyncDatabase, applier: SqlApplier, lock: Path | None = None
) -> Callable[[], Awaitable[None]]:
    """The replayer's ``prepare``: inventario's tables, then the outbox's ``brownout_applied``
    (idempotent: ``CREATE ... IF NOT EXISTS``).

    With ``lock`` (several workers starting at once) one creates at a time: two
    concurrent ``CREATE TABLE IF NOT EXISTS`` fail on SQLite (a lock upgrade
    deadlock, "database is locked") and on PostgreSQL (a duplicate catalog row), and
    the loser would queue its writes until its next try."""

    async def create() -> None:
        fd = None
        if lock is not None:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if fd is not None:  # a moment: another worker's CREATE statements at most
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            await create_schema(db.engine)
            await applier.ensure_schema()
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock
        logger.info("schema ready")

    return create


def _invalidate_after_replay(
    cache: ProductCache,
    touched: dict[str, list[str]],
    snapshot: ReadSnapshot | None = None,
    marks: dict[str, dict[str, int]] | None = None,
) -> Callable[[Intent], None]:
    """``SqlApplier(after_commit=...)``: drop the replayed products' cache entries (the
    stream's product, or those the handler noted in ``touched``, e.g. an invoice's), and
    tell the read snapshot the write is applied."""
    pending: set[asyncio.Task[None]] = set()

    def after_commit(intent: Intent) -> None:
        if snapshot is not None:
            snapshot.replayed(intent.key)
        skus = touched.pop(intent.key, None) or [intent.stream]
        marked = marks.pop(intent.key, {}) if marks is not None else {}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # replayed outside an event loop: nothing cached to race
            return
        for sku in skus:
            task = loop.create_task(cache.invalidate(sku, marked.get(sku)))
            pending.add(task)
            task.add_done_callback(pending.discard)

    return after_commit


#: Notes kept at most for this many replayed intents whose commit has not been seen
#: (their transaction rolled back: they are applied again later, noted again).
_TOUCHED_MAX = 10_000


def _replay_handler(
    operation: str,
    touched: dict[str, list[str]],
    marks: dict[str, dict[str, int]] | None = None,
) -> BatchHandler:
    """The outbox's batch handler for ``operation``: a run of its queued writes applied
    with :func:`~inventario.writes.apply_writes` in the replay's transaction; with
    ``marks``, the cache keys of the products each changed recorded in the shared
    table in that same transaction (:func:`~inventario.fleet_cache.mark_stale_sync`)."""
    touches = TOUCHES.get(operation)

    async def handler(session: AsyncSession, payloads: list[Any]) -> None:
        writes = [(payload["data"], payload["key"]) for payload in payloads]
        results = await apply_writes(session, operation, writes, source="outbox")
        changed: list[tuple[str, list[str]]] = []
        for (data, key), result in zip(writes, results, strict=True):
            products = touches(result) if touches is not None else [data["sku"]]
            if touches is not None:
                if len(touched) >= _TOUCHED_MAX:
                    touched.clear()
                touched[key] = products
            changed.append((key, products))
        if marks is None:
            return
        keys = [product_key(p) for _, products in changed for p in products]
        rows = iter(await session.run_sync(lambda s: mark_stale_sync(s.connection(), keys)))
        if len(marks) >= _TOUCHED_MAX:
            marks.clear()
        for key, products in changed:
            marks[key] = {p: next(rows) for p in products}

    handler.__name__ = f"replay_{operation.replace('.', '_')}"
    return handler
