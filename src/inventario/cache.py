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
"""

from __future__ import annotations

import logging
from typing import Any

from brownout import BreakerOpen, State
from brownout.coherence import CacheCoherence
from brownout.health import DegradationManager
from brownout.redis import AsyncRedisAdapter

__all__ = ["ProductCache"]

logger = logging.getLogger("inventario.cache")


def product_key(sku: str) -> str:
    return f"inventario:product:{sku}"


class ProductCache:
    def __init__(
        self,
        redis: AsyncRedisAdapter | None,
        manager: DegradationManager,
        coherence: CacheCoherence | None = None,
    ) -> None:
        self.redis = redis
        self.manager = manager
        self.coherence = coherence

    def _reads_allowed(self) -> bool:
        if self.redis is None:
            return False
        if self.coherence is not None and not self.coherence.reads_allowed():
            return False  # keys written during an outage may be stale in Redis
        if self.manager.enabled("cache_read"):
            return True
        # half-open: a trial read (the breaker rejects those beyond its probe slots)
        return self.coherence is not None and self.redis.breaker.state is State.HALF_OPEN

    async def get(self, sku: str) -> dict[str, Any] | None:
        if not self._reads_allowed():
            return None
        assert self.redis is not None
        try:
            value = await self.redis.get_json(product_key(sku))
        except BreakerOpen:
            return None
        except Exception as exc:  # a cache failure is a miss, never a failed request
            logger.debug("cache read failed: %s", self.redis.describe(exc))
            return None
        return value if isinstance(value, dict) else None

    async def put(self, sku: str, product: dict[str, Any]) -> None:
        if self.redis is None or not self.manager.enabled("cache_write"):
            return
        if self.coherence is not None and not self.coherence.reads_allowed():
            return
        try:
            await self.redis.set_json(
                product_key(sku), product, ex=max(1, int(self.manager.settings.cache_ttl))
            )
        except Exception as exc:
            logger.debug("cache write failed: %s", self.redis.describe(exc))

    async def invalidate(self, sku: str) -> None:
        if self.redis is None:
            return
        key = product_key(sku)
        if self.coherence is not None:
            try:
                await self.coherence.ainvalidate(key)
            except Exception as exc:  # the write is committed: report, do not fail it
                logger.error(
                    "cache invalidation of %s could not be sent nor recorded: %s",
                    key,
                    self.redis.describe(exc),
                )
            return
        try:
            await self.redis.delete(key)
        except Exception as exc:
            logger.warning(
                "cache invalidation of %s failed (no coherence journal configured): %s",
                key,
                self.redis.describe(exc),
            )
