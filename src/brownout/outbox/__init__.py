"""A durable outbox: writes that cannot be done now are kept on disk and applied later, once.

>>> from brownout.outbox import Outbox, Replayer          # stdlib only
>>> from brownout.outbox import SqlApplier                 # needs the ``sql`` extra

See ``docs/durability.md`` for the guarantees.
"""

from typing import TYPE_CHECKING, Any

from brownout._journal_base import JournalEvent
from brownout.outbox._journal import (
    DeadLetter,
    IdempotencyConflict,
    Intent,
    Outbox,
    OutboxCorrupted,
    OutboxError,
    OutboxFull,
    new_key,
)
from brownout.outbox._replay import Replayer, ReplayReport

if TYPE_CHECKING:
    from brownout.outbox._sql import BatchHandler, Handler, SqlApplier, UnknownOperation

__all__ = [
    "BatchHandler",
    "DeadLetter",
    "Handler",
    "IdempotencyConflict",
    "Intent",
    "JournalEvent",
    "Outbox",
    "OutboxCorrupted",
    "OutboxError",
    "OutboxFull",
    "ReplayReport",
    "Replayer",
    "SqlApplier",
    "UnknownOperation",
    "new_key",
]


def __getattr__(name: str) -> Any:
    if name in ("SqlApplier", "UnknownOperation", "Handler", "BatchHandler"):
        from brownout.outbox import _sql

        return getattr(_sql, name)
    raise AttributeError(f"module 'brownout.outbox' has no attribute {name!r}")
