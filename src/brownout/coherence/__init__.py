"""Cache coherence across a Redis outage: keys invalidated while Redis was down are
deleted when it comes back, before any cached read is allowed again.

While Redis is unreachable, a write to the database still has to invalidate the
cache keys it makes stale; the DEL cannot be sent, so :class:`CacheCoherence`
records the keys in a small durable journal. When Redis answers again (its
breaker half-opens or closes, the manager's heartbeat, or a call of
:meth:`~CacheCoherence.reconcile`) the recorded keys are deleted in batches.
Until every one of them is gone, :meth:`~CacheCoherence.reads_allowed` is
False and, with a :class:`~brownout.health.DegradationManager`, the cache
component is held "recovering" (its features off): a Redis that comes back
with its old data (the network healed, RDB/AOF after a restart, a replica
promoted) would otherwise serve values older than the database.

>>> import tempfile, os
>>> class DownRedis:                       # an adapter whose breaker is open
...     def delete(self, *keys):
...         raise ConnectionError("refused")
>>> cc = CacheCoherence(DownRedis(), os.path.join(tempfile.mkdtemp(), "coherence.db"))
>>> cc.invalidate("user:1", "user:1:orders")
False
>>> cc.reads_allowed(), cc.pending()
(False, 2)
>>> cc.close()

Errors::

    BrownoutError
     └── CoherenceError   the journal cannot be opened or written, or is full

Stdlib only: the adapter is a :class:`~brownout.redis.RedisAdapter` or
:class:`~brownout.redis.AsyncRedisAdapter` (or anything with ``delete(*keys)``).
See ``docs/durability.md`` ("Cache coherence") for the guarantees.
"""

from brownout._journal_base import JournalEvent
from brownout.coherence._journal import Ahead, CacheCoherence, CoherenceError, ReconcileReport

__all__ = [
    "Ahead",
    "CacheCoherence",
    "CoherenceError",
    "JournalEvent",
    "ReconcileReport",
]
