"""brownout's exceptions: one tree, every error brownout raises itself is a ``BrownoutError``.

::

    Exception
     └── BrownoutError                  base of everything brownout raises itself
          ├── BreakerOpen               a call was rejected: its breaker is open (or forced open)
          ├── CallTimeout               (also TimeoutError) an async call outran call_timeout
          ├── DependencyError           a dependency's error re-raised with a secret removed
          ├── SerializationError        (also ValueError) brownout.redis: value not JSON
          ├── InvalidJSONOutput         (also ValueError) brownout.openai: answer not JSON/schema
          ├── CommandTimeout            (also psycopg.OperationalError) brownout.sql
          ├── HealthProbeFailed         brownout.health: a half-open trial probe failed
          ├── UnknownFeature            (also KeyError) brownout.health: no such feature
          ├── FeatureUnavailable        (also HTTPException) brownout.web: the feature is off
          ├── JournalFull               base of OutboxFull, SpoolFull; ``retry_after``
          ├── OutboxError               brownout.outbox: cannot accept or update an intent
          │    ├── OutboxFull           (also JournalFull) at its bound
          │    ├── OutboxCorrupted      the journal file is unreadable
          │    └── IdempotencyConflict  a key reused with another operation or payload
          ├── UnknownOperation          brownout.outbox: no handler for an intent's operation
          ├── SpoolError                brownout.spool: cannot accept, read or update an entry
          │    ├── SpoolFull            (also JournalFull) at its bound
          │    └── SpoolCorrupted       an entry is damaged (quarantined)
          ├── VerificationFailed        brownout.spool: S3 holds other bytes than uploaded
          ├── CoherenceError            brownout.coherence: the journal failed or is full
          └── Overloaded                brownout.overload: rejected locally to spare a dependency
               ├── BulkheadFull         every permit taken and the wait ran out; ``retry_after``
               └── Throttled            adaptive throttling shed the call; ``retry_after``

Every class is defined here except ``CommandTimeout`` (in :mod:`brownout.sql`,
a subclass of psycopg's ``OperationalError`` so that SQLAlchemy invalidates the
connection) and ``FeatureUnavailable`` (in :mod:`brownout.web`, a FastAPI
``HTTPException``): their other base comes from an optional client library.
Each class is also importable from the module that uses it (``brownout.outbox``,
``brownout.spool``, ``brownout.health``, ``brownout.redis``, ...), as before.

Errors marked "also" keep a built-in (or client-library) base they had before
the tree, so that ``except ValueError`` / ``except KeyError`` around older code
keeps working.

Built-in errors are kept where Python code expects them, not a ``BrownoutError``:
configuration mistakes raise ``ValueError`` / ``TypeError`` naming the field and
the allowed range; misuse of an object's life cycle (a closed adapter or
``HostShare``, a fault proxy started twice) raises ``RuntimeError``; looking up
a name that is not there (``manager.component("x")``, a spool entry replaced
meanwhile) raises ``KeyError``; a health probe that runs out raises
``TimeoutError``, as the client's own timeouts do (it counts against the
dependency).
Errors of the dependencies themselves (``redis.ConnectionError``,
``botocore``'s, SQLAlchemy's, ``openai``'s) pass through unchanged, except
when their message carried a secret (``DependencyError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brownout._state import State

__all__ = [
    "BreakerOpen",
    "BrownoutError",
    "BulkheadFull",
    "CallTimeout",
    "CoherenceError",
    "DependencyError",
    "HealthProbeFailed",
    "IdempotencyConflict",
    "InvalidJSONOutput",
    "JournalFull",
    "OutboxCorrupted",
    "OutboxError",
    "OutboxFull",
    "Overloaded",
    "SerializationError",
    "SpoolCorrupted",
    "SpoolError",
    "SpoolFull",
    "Throttled",
    "UnknownFeature",
    "UnknownOperation",
    "VerificationFailed",
]


class BrownoutError(Exception):
    """Base class of the errors brownout raises itself."""


class BreakerOpen(BrownoutError):
    """A call was rejected without being attempted because its breaker is open.

    ``name`` is the breaker's (the dependency's) name, ``state`` its state and
    ``retry_after`` the seconds until a probe will be let through (``None``
    when that is not known: forced open, or half-open with every probe slot
    taken).

    >>> e = BreakerOpen("redis", State.OPEN, 12.5)
    >>> e.name, e.state, e.retry_after
    ('redis', <State.OPEN: 'open'>, 12.5)
    >>> str(e)
    "circuit breaker 'redis' is open; retry after 12.5 s"
    """

    # Rejections are the hot path of an open breaker: the arguments are kept in
    # ``args`` by the C-level constructor and the message is formatted lazily.
    args: tuple[str, State, float | None]

    if TYPE_CHECKING:  # BaseException's C __init__ is used at run time

        def __init__(self, name: str, state: State, retry_after: float | None) -> None: ...

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def state(self) -> State:
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        return self.args[2]

    def __str__(self) -> str:
        name, state, retry_after = self.args
        detail = "" if retry_after is None else f"; retry after {retry_after:.3g} s"
        return f"circuit breaker {name!r} is {state.value}{detail}"


class CallTimeout(BrownoutError, TimeoutError):
    """An async call ran longer than its breaker's ``call_timeout`` and was cancelled.

    Recorded as a failure. ``name`` is the breaker's, ``timeout`` the limit in
    seconds. Also a ``TimeoutError``, as it always was.

    >>> e = CallTimeout("redis", 0.5)
    >>> isinstance(e, TimeoutError), e.name, e.timeout
    (True, 'redis', 0.5)
    >>> str(e)
    "call through breaker 'redis' took longer than call_timeout=0.5 s"
    """

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(
            f"call through breaker {name!r} took longer than call_timeout={timeout:g} s"
        )
        self.name = name
        self.timeout = timeout


# ------------------------------------------------------------------ adapters


class DependencyError(BrownoutError):
    """A dependency error whose message carried a secret, re-raised with the secret removed.

    ``kind`` is the error's kind from the adapter's table, ``original_type``
    the name of the client library's exception class.
    """

    def __init__(self, message: str, *, kind: str, original_type: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.original_type = original_type


class SerializationError(BrownoutError, ValueError):
    """A value could not be encoded to JSON (``set_json``) or a stored value decoded (``get_json``).

    The caller's data, not Redis: it never counts against the breaker.
    ``key`` is the Redis key concerned. (Also a ``ValueError``, as it always was.)
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidJSONOutput(BrownoutError, ValueError):
    """``chat_json`` got an answer whose content is not JSON, or not of the schema.

    It does not count against the breaker: the API answered, so it is up; output
    that does not parse is a property of one request and its model (truncated by
    ``max_tokens``, a refusal, a schema the model did not follow), and opening the
    breaker for it would also cut off plain chat and embeddings that work. Retry,
    fall back or count it yourself. ``content`` holds what the model returned.
    (Also a ``ValueError``, as it always was.)
    """

    def __init__(self, message: str, *, model: str | None, content: str | None) -> None:
        super().__init__(message)
        self.model = model
        self.content = content


# -------------------------------------------------------------------- health


class HealthProbeFailed(BrownoutError):
    """A health probe run as a half-open breaker's trial call failed (counts as a failure)."""


class UnknownFeature(BrownoutError, KeyError):
    """``manager.enabled(name)`` was asked about a feature it does not know (a typo?).

    Also a ``KeyError``, as it always was.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown feature"


# -------------------------------------------------------------------- outbox


class OutboxError(BrownoutError):
    """The outbox could not accept or update an intent (the message says why)."""


class JournalFull(BrownoutError):
    """A journal (the outbox, the spool) is at its bound (items or bytes); nothing was
    written. ``retry_after`` is a hint in seconds for the client (a ``Retry-After``).

    >>> JournalFull("outbox is full: 10 intents pending (max_pending=10)").retry_after
    30.0
    """

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutboxFull(OutboxError, JournalFull):
    """The outbox is at its bound (items or bytes); nothing was written (``retry_after``)."""


class OutboxCorrupted(OutboxError):
    """The journal file is not a readable SQLite database (or its log is orphaned);
    it was left untouched."""


class IdempotencyConflict(OutboxError):
    """An idempotency key was reused with a different operation or payload."""


class UnknownOperation(BrownoutError):
    """No handler is registered for an intent's operation (a caller error: it is dead-lettered)."""


# --------------------------------------------------------------------- spool


class SpoolError(BrownoutError):
    """The spool could not accept, read or update an entry (the message says why)."""


class SpoolFull(SpoolError, JournalFull):
    """The spool is at its bound (files or bytes); nothing was written (``retry_after``)."""


class SpoolCorrupted(SpoolError):
    """An entry's manifest or payload is damaged; it was moved to ``quarantine/``."""


class VerificationFailed(BrownoutError):
    """S3 holds something other than what was uploaded (size or checksum differ)."""


# ----------------------------------------------------------------- coherence


class CoherenceError(BrownoutError):
    """The journal could not be opened, read or written, or is full (the message says why).

    Raised by :meth:`CacheCoherence.invalidate` when a key can neither be
    deleted from Redis nor recorded durably: the cache may then hold a stale
    value, and the caller must know (the key is still kept in memory and
    deleted by the next reconcile of this process).
    """


class Overloaded(BrownoutError):
    """A call was rejected locally, without being attempted, to keep load off a dependency.

    ``name`` is the guard's (the dependency's) name and ``retry_after`` the
    seconds after which a retry has a fair chance (``None`` when not known).
    The subclasses say which guard rejected it: :class:`BulkheadFull`,
    :class:`Throttled`.
    """

    # formatted lazily, as BreakerOpen: rejections are the hot path of an overload
    args: tuple[str, float | None]

    if TYPE_CHECKING:  # BaseException's C __init__ is used at run time

        def __init__(self, name: str, retry_after: float | None) -> None: ...

    _what = "is overloaded"

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def retry_after(self) -> float | None:
        return self.args[1]

    def __str__(self) -> str:
        name, retry_after = self.args
        detail = "" if retry_after is None else f"; retry after {retry_after:.3g} s"
        return f"{name!r} {self._what}{detail}"


class BulkheadFull(Overloaded):
    """Every permit of a bulkhead is in use and none came free within its wait.

    >>> str(BulkheadFull("redis", 0.05))
    "'redis' bulkhead is full; retry after 0.05 s"
    """

    _what = "bulkhead is full"


class Throttled(Overloaded):
    """Client-side adaptive throttling rejected the call: the dependency has been
    refusing a large share of recent requests.

    >>> str(Throttled("openai", None))
    "'openai' is throttled locally"
    """

    _what = "is throttled locally"
