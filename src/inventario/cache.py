"""Read-through caching of product reads in Redis, degraded gracefully.

* Reads use the cache only while the ``cache_read`` feature is on (Redis up,
  not recovering, level no worse than MINIMAL: with the database down, cached
  reads are the only ones left) and, when a coherence journal
  is configured, only once the keys written during an outage are invalidated.
* While the Redis breaker is half-open (and those keys are invalidated), reads
  are its trial calls: the breaker lets ``half_open_calls`` of them through and
  closes when they succeed. Without them nothing would ever close it, since a
  half-open component is "recovering" and its features are off.
* Entries live for the current level's ``cache_ttl`` (3600 s at OPTIMAL ... 60 s
  at EMERGENCY).
* Writes invalidate the product's key; while Redis is away the key is recorded
  (by the coherence journal, :class:`brownout.coherence.CacheCoherence`) and
  deleted before cached reads resume: the first read after recovery is the
  database's value, never the one Redis kept from before the outage.
* A cache failure never fails a request: it is a miss. An invalidation that can
  be neither sent nor recorded is logged as an error (the write itself is done).
* A slow Redis is a miss too: a read waits at most ``read_wait`` (``CACHE_READ_WAIT``,
  20 ms) for Redis, then reads the database (the GET finishes in the background,
  bounded by the Redis bulkhead); for a second after Redis answered a read late,
  reads go to the database at once and nothing is put in the cache (a put queued
  behind a slow Redis could land after a newer write's DEL). A write waits at most
  ``CACHE_INVALIDATE_WAIT`` for its DEL (:class:`~brownout.coherence.CacheCoherence`'s
  ``max_wait``).
* Under the kill switch (``BROWNOUT_DISABLED=1`` when the cache is built) none of
  that bounding applies: a read waits for Redis as long as the client's own timeout
  allows (no ``read_wait``, no slow skip), and the coherence journal, built under
  it too, lets a write wait for its DEL. What keeps reads correct stays: the keys
  of a DEL that failed are recorded, and the feature gates act as they do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from brownout import BreakerOpen, State, kill_switch_active
from brownout.coherence import Ahead, CacheCoherence
from brownout.health import DegradationManager
from brownout.redis import AsyncRedisAdapter

if TYPE_CHECKING:
    from collections.abc import Callable

if TYPE_CHECKING:
    from inventario.fleet_cache import SharedInvalidations

__all__ = ["ProductCache"]

logger = logging.getLogger("inventario.cache")


def product_key(sku: str) -> str:
    return f"inventario:product:{sku}"


#: Seconds cached reads and puts are skipped after Redis answered a read late.
SLOW_BACKOFF = 1.0


class ProductCache:
    def __init__(
        self,
        redis: AsyncRedisAdapter | None,
        manager: DegradationManager,
        coherence: CacheCoherence | None = None,
        shared: SharedInvalidations | None = None,
        *,
        read_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        #: built under the kill switch: reads wait for Redis as long as the client does
        self.disabled = kill_switch_active()
        #: seconds a read waits for Redis before it reads the database (None: no limit;
        #: always None under the kill switch)
        self.read_wait = None if self.disabled else read_wait
        self._clock = clock
        self._slow_until = 0.0  # Redis answered a read late: skip it until then
        self._late: set[asyncio.Future[Any]] = set()  # late GETs finishing in the background
        self.manager = manager
        self.coherence = coherence
        #: several replicas on one database: invalidations shared through it
        #: (:mod:`inventario.fleet_cache`); cached reads wait until it is flushed
        self.shared = shared

    def _failed(self) -> None:
        if self.shared is not None:
            # a call failed, Redis may be going away: empty the shared table soon (one
            # failure does not stop cached reads; the breaker opening does)
            self.shared.schedule()

    def _reads_allowed(self) -> bool:
        if self.redis is None:
            return False
        if self.coherence is not None and not self.coherence.reads_allowed():
            return False  # keys written during an outage may be stale in Redis
        if self.shared is not None and not self.shared.reads_allowed():
            return False  # ... by this replica or another one: not flushed since
        if self.manager.enabled("cache_read"):
            return True
        # half-open: a trial read (the breaker rejects those beyond its probe slots)
        return self.coherence is not None and self.redis.breaker.state is State.HALF_OPEN

    def slow(self) -> bool:
        """Redis answered a read later than ``read_wait`` within the last SLOW_BACKOFF s."""
        return self._slow_until > 0 and self._clock() < self._slow_until

    async def get(self, sku: str) -> dict[str, Any] | None:
        if not self._reads_allowed() or self.slow():
            return None
        assert self.redis is not None
        try:
            if self.read_wait is None:
                value = await self.redis.get_json(product_key(sku))
            else:
                read = asyncio.ensure_future(self.redis.get_json(product_key(sku)))
                await asyncio.wait((read,), timeout=self.read_wait)
                if not read.done():  # slow: the database answers this one
                    self._slow_until = self._clock() + SLOW_BACKOFF
                    self._late.add(read)
                    read.add_done_callback(self._late_done)
                    return None
                value = read.result()
        except BreakerOpen:
            return None
        except Exception as exc:  # a cache failure is a miss, never a failed request
            self._failed()
            logger.debug("cache read failed: %s", self.redis.describe(exc))
            return None
        return value if isinstance(value, dict) else None

    def _late_done(self, read: asyncio.Future[Any]) -> None:
        self._late.discard(read)
        if not read.cancelled() and read.exception() is not None:
            self._failed()

    async def aclose(self) -> None:
        """Cancel the late GETs still in flight (shutdown)."""
        for read in list(self._late):
            read.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)

    async def put(self, sku: str, product: dict[str, Any]) -> None:
        if self.redis is None or not self.manager.enabled("cache_write") or self.slow():
            return
        if self.coherence is not None and not self.coherence.reads_allowed():
            return
        if self.shared is not None and not self.shared.synced:
            return
        try:
            await self.redis.set_json(
                product_key(sku), product, ex=max(1, int(self.manager.settings.cache_ttl))
            )
        except Exception as exc:
            self._failed()
            logger.debug("cache write failed: %s", self.redis.describe(exc))

    def invalidate_ahead(self, sku: str) -> Ahead | None:
        """While Redis is slow, start recording ``sku``'s key in the coherence journal
        before the write that makes it stale (:meth:`CacheCoherence.record_ahead`): the
        write then does not wait for that recording after its commit. Give the result to
        :meth:`invalidate` (``ahead=``) once the write is done, or to :meth:`drop_ahead`."""
        if self.redis is None or self.coherence is None:
            return None
        return self.coherence.record_ahead(product_key(sku))

    def drop_ahead(self, ahead: Ahead | None) -> None:
        """The write :meth:`invalidate_ahead` was for changed nothing (it failed, or was
        only queued): the key's DEL is sent in the background."""
        if ahead is not None and self.coherence is not None:
            self.coherence.drop_ahead(ahead)

    async def invalidate(
        self,
        sku: str,
        marked: int | None = None,
        *,
        share: bool = True,
        ahead: Ahead | None = None,
    ) -> None:
        """Drop ``sku``'s entry. ``marked``: the ``cache_invalidations`` row the write's
        own transaction recorded for it (:func:`inventario.fleet_cache.mark_stale_sync`),
        settled here rather than a second row written. ``share=False``: nothing changed
        in the database (a write only queued), so a ``DEL`` not sent is no concern of the
        other replicas (nor a reason to stop this one's cached reads until a flush)."""
        if self.redis is None:
            return
        key = product_key(sku)
        if self.coherence is not None:
            try:
                sent = await self.coherence.ainvalidate(key, ahead=ahead)
            except Exception as exc:  # the write is committed: report, do not fail it
                logger.error(
                    "cache invalidation of %s could not be sent nor recorded: %s",
                    key,
                    self.redis.describe(exc),
                )
                sent = False
            if self.shared is not None and marked is not None:
                self.shared.settled(marked, sent=sent)
            elif not sent and self.shared is not None and share:
                await self._share(key)
            return
        try:
            await self.redis.delete(key)
        except Exception as exc:
            if self.shared is not None and marked is not None:
                self.shared.settled(marked, sent=False)
                return
            if self.shared is not None:
                if share:
                    await self._share(key)
                return
            logger.warning(
                "cache invalidation of %s failed (no coherence journal configured): %s",
                key,
                self.redis.describe(exc),
            )
            return
        if self.shared is not None and marked is not None:
            self.shared.settled(marked, sent=True)

    async def _share(self, key: str) -> None:
        """Tell the other replicas (through the database) that ``key`` is stale in Redis."""
        assert self.shared is not None
        try:
            await self.shared.record(key)
        except Exception as exc:  # the local journal (if any) still has it
            logger.warning(
                "cache invalidation of %s could not be shared with the other replicas: %s",
                key,
                type(exc).__name__,
            )
