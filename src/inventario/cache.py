"""Read-through caching of product reads in Redis, degraded gracefully.

* Reads use the cache only while the ``cache_read`` feature is on (Redis up,
  not recovering, level no worse than DEGRADED) and, when a coherence journal
  is configured, only once the keys written during an outage are invalidated.
* Entries live for the current level's ``cache_ttl`` (3600 s at OPTIMAL ... 60 s
  at EMERGENCY).
* Writes invalidate the product's key; while Redis is away the key is recorded
  (by the coherence journal) and deleted before cached reads resume.
* A cache failure never fails a request: it is a miss.
"""

from __future__ import annotations

import logging
from typing import Any

from brownout import BreakerOpen
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
        coherence: Any = None,
    ) -> None:
        self.redis = redis
        self.manager = manager
        self.coherence = coherence

    def _reads_allowed(self) -> bool:
        if self.redis is None or not self.manager.enabled("cache_read"):
            return False
        return self.coherence is None or bool(self.coherence.reads_allowed())

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
            await self.coherence.ainvalidate(key)
            return
        try:
            await self.redis.delete(key)
        except Exception as exc:
            logger.warning(
                "cache invalidation of %s failed (no coherence journal configured): %s",
                key,
                self.redis.describe(exc),
            )
