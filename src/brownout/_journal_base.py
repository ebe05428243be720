"""What the durable journals share (the outbox, the spool, cache coherence): their
listeners and events, and the refusal of a journal whose write-ahead log was orphaned.

Listeners follow brownout's one shape (see :mod:`brownout._events`)::

    unsubscribe = outbox.add_listener(callback)   # callback(JournalEvent)
    unsubscribe()

The old shape, ``callback(kind, fields)``, still works for now with a
``DeprecationWarning``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from brownout import _sqlite

__all__ = ["JournalEvent", "JournalListeners", "orphaned_log_message"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One thing a journal did, for metrics and bookkeeping.

    ``source`` is ``"outbox"``, ``"spool"`` or ``"coherence"``; ``kind`` what happened
    (the outbox: ``submitted``, ``refused``, ``replayed``, ``dead``, ``retried``,
    ``discarded``; see each journal's ``add_listener``); ``fields`` its figures
    (read-only: ``event.fields["operation"]``, or ``event.get("operation")``).
    """

    source: str
    kind: str
    fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def get(self, name: str, default: Any = None) -> Any:
        """``fields[name]``, or ``default`` when the event has no such field."""
        return self.fields.get(name, default)


JournalListener = Callable[[JournalEvent], object]


def _old_shape(listener: Callable[..., object]) -> bool:
    """Whether ``listener`` takes ``(kind, fields)``: two positional arguments."""
    try:
        params = inspect.signature(listener).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the new shape
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 2


class JournalListeners:
    """``add_listener`` and ``_emit`` for a journal (a mixin: no ``__init__``)."""

    _source: ClassVar[str] = "journal"
    _listeners: tuple[JournalListener, ...] = ()

    def add_listener(self, listener: Callable[..., object]) -> Callable[[], None]:
        """Call ``listener(event)`` with a :class:`JournalEvent` for everything this
        journal does (in the thread that did it; one that raises is logged and
        ignored); returns a callable that removes it."""
        if not callable(listener):
            raise TypeError(
                f"{type(self).__name__}.add_listener: listener must be callable, got {listener!r}"
            )
        subscribed: JournalListener = listener
        if _old_shape(listener):
            warnings.warn(
                f"{type(self).__name__}.add_listener: a listener taking (kind, fields) is "
                "deprecated; take one JournalEvent (event.kind, event.fields)",
                DeprecationWarning,
                stacklevel=2,
            )
            old = listener

            def subscribed(event: JournalEvent) -> object:
                return old(event.kind, event.fields)

        self._listeners = (*self._listeners, subscribed)

        def unsubscribe() -> None:
            self._listeners = tuple(fn for fn in self._listeners if fn is not subscribed)

        return unsubscribe

    def _emit(self, kind: str, **fields: Any) -> None:
        listeners = self._listeners
        if not listeners:
            return
        event = JournalEvent(self._source, kind, MappingProxyType(fields))
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not lose a write
                logging.getLogger(f"brownout.{self._source}").exception(
                    "%s listener raised", self._source
                )


def orphaned_log_message(path: Path, journal: str, lost: str, advice: str) -> str | None:
    """Why ``path`` must not be opened (see :func:`brownout._sqlite.orphaned_log`), or
    ``None``. ``journal`` names it (``"outbox journal"``), ``lost`` what the log holds
    (``"the intents in it"``), ``advice`` what to do."""
    orphan = _sqlite.orphaned_log(path)
    if orphan is None:
        return None
    state = "missing" if orphan.missing else "empty (0 bytes)"
    return (
        f"{journal} {path} is {state} but its write-ahead log {orphan.wal} holds "
        f"{orphan.wal_size} bytes: the journal was deleted, truncated or copied without its "
        f"-wal file; refusing to start a new journal, which would discard the log and {lost}. "
        f"{advice}; nothing was changed"
    )
