"""Re-exports :mod:`brownout.testing.servers.redis` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.redis import RedisServer, redis_unavailable

__all__ = ["RedisServer", "redis_unavailable"]
