"""Redis behind a circuit breaker: redis-py (``redis.Redis``) and ``redis.asyncio.Redis``.

Install with ``pip install 'brownout[redis]'`` (redis-py >= 5).

:class:`RedisAdapter` (sync) and :class:`AsyncRedisAdapter` (async) run every
Redis command they offer through the adapter's :class:`~brownout.CircuitBreaker`,
classify redis-py's errors with :data:`REDIS_ERRORS` (connection loss,
timeouts, a loading or failing-over server count against Redis; ``WRONGTYPE``
and other wrong commands are the caller's and never trip the breaker), count
cache hits and misses of the lookups, and report connection-pool figures.

>>> from brownout import BreakerConfig
>>> cache = RedisAdapter.from_url(
...     "redis://:s3cret@127.0.0.1:6379/0",
...     config=BreakerConfig(consecutive_failures=3, open_for=5.0),
... )  # no connection is made until the first command
>>> cache.kind, cache.name, cache.client.connection_pool.connection_kwargs["socket_timeout"]
('redis', 'redis', 0.5)
>>> "s3cret" in repr(cache.health())
False
>>> cache.close()

The two classes share everything but the call into the client: the error
table, the readers of the replies (``_lookup``, ``_as_int``, ...) and the
figures; each sync or async method is one call of the adapter base's lean path
(``Adapter._command`` / ``_acommand``: the redis-py method, its arguments, the
operation's name, how to read the reply, the key and the bytes sent).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeAlias, TypeVar, Unpack

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions as rex
    import redis.retry
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("brownout.redis needs redis-py >= 5: pip install 'brownout[redis]'") from _exc

from brownout._adapter import Adapter
from brownout._adapter_classify import ErrorRule, ErrorTable
from brownout._adapter_stats import Figures
from brownout._errors import BreakerOpen, SerializationError
from brownout._lifetime import AsyncResource, SyncResource
from brownout._options import AdapterOptions, split_options
from brownout.overload._clients import budget_redis_retry

__all__ = [
    "DEFAULT_HEALTH_CHECK_INTERVAL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SOCKET_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "REDIS_ERRORS",
    "AsyncRedisAdapter",
    "AsyncRedisPipeline",
    "RedisAdapter",
    "RedisPipeline",
    "SerializationError",
]

R = TypeVar("R")
C = TypeVar("C", redis.Redis, redis.asyncio.Redis)

#: A Redis key or field name as redis-py accepts it.
Key = str | bytes | memoryview
#: A value redis-py can send (it encodes numbers as their decimal text).
Value = str | bytes | bytearray | memoryview | int | float
#: The members of a Redis set (``bytes``, or ``str`` with ``decode_responses=True``).
Members: TypeAlias = set[Any]
#: An expiry: whole seconds (or milliseconds for ``px``) or a timedelta.
Expiry = int | timedelta

#: Connections per pool (redis-py's own default is 2**31).
DEFAULT_MAX_CONNECTIONS = 50
#: Seconds to establish a connection before it fails with ``TimeoutError``.
DEFAULT_SOCKET_CONNECT_TIMEOUT = 0.5
#: Seconds to wait for a reply on an established connection.
DEFAULT_SOCKET_TIMEOUT = 0.5
#: A connection idle for longer than this many seconds is PINGed before it is reused.
DEFAULT_HEALTH_CHECK_INTERVAL = 30


# ---------------------------------------------------------------- error table

_SERVER_SIDE_CODES = frozenset({"MISCONF", "BUSY", "NOREPLICAS"})


def _server_side_reply(exc: BaseException) -> bool:
    """ResponseError MISCONF/BUSY/NOREPLICAS"""
    if not isinstance(exc, rex.ResponseError):
        return False
    words = str(exc).split(" ", 1)
    return bool(words) and words[0] in _SERVER_SIDE_CODES


# redis-py < 6 raises a plain ConnectionError("Too many connections") instead.
_MaxConnectionsError: type[BaseException] | None = getattr(rex, "MaxConnectionsError", None)
_POOL_RULES = (
    ()
    if _MaxConnectionsError is None
    else (
        ErrorRule(
            _MaxConnectionsError,
            True,
            "pool_exhausted",
            "every pooled connection is busy, usually because Redis is slow: shed load",
        ),
    )
)

#: How :class:`RedisAdapter` and :class:`AsyncRedisAdapter` classify redis-py's errors.
#: Order matters: redis-py derives ``BusyLoadingError`` and ``AuthenticationError`` from
#: ``ConnectionError``, ``ReadOnlyError``/``ClusterDownError`` from ``ResponseError``; the
#: first matching rule wins.
REDIS_ERRORS = ErrorTable(
    ErrorRule(
        SerializationError,
        False,
        "serialization",
        "the value is not JSON (or not JSON-serialisable): the caller's data, not Redis",
    ),
    ErrorRule(
        rex.AuthenticationError,
        True,
        "auth",
        "Redis refuses our credentials: every call fails until the configuration is fixed",
    ),
    ErrorRule(
        rex.AuthorizationError,
        True,
        "auth",
        "the connection is not authorised (TLS/OCSP): no command can succeed",
    ),
    ErrorRule(
        rex.BusyLoadingError,
        True,
        "loading",
        "Redis is loading its dataset after a restart and answers nothing else",
    ),
    *_POOL_RULES,
    ErrorRule(
        rex.ConnectionError,
        True,
        "connection",
        "Redis is unreachable, refused or dropped the connection, or has too many clients",
    ),
    ErrorRule(
        rex.TimeoutError,
        True,
        "timeout",
        "no connection or reply within the socket timeouts: Redis is stalled or overloaded",
    ),
    ErrorRule(
        TimeoutError,
        True,
        "timeout",
        "an OS/asyncio timeout on the Redis socket: Redis is stalled",
    ),
    ErrorRule(
        OSError,
        True,
        "connection",
        "a socket error redis-py did not wrap: the network or server is failing",
    ),
    ErrorRule(
        rex.ReadOnlyError,
        True,
        "failover",
        "a write reached a replica: the primary is failing over; retrying here will not help",
    ),
    ErrorRule(
        rex.ClusterDownError,
        True,
        "unavailable",
        "CLUSTERDOWN/MASTERDOWN: the server cannot serve the slot or lost its primary",
    ),
    ErrorRule(
        rex.TryAgainError,
        True,
        "unavailable",
        "TRYAGAIN: keys are being migrated (resharding); the server cannot serve them now",
    ),
    ErrorRule(
        rex.OutOfMemoryError,
        True,
        "out_of_memory",
        "OOM: Redis hit maxmemory and refuses writes: a capacity failure of the server",
    ),
    ErrorRule(
        _server_side_reply,
        True,
        "unavailable",
        "the server cannot persist (MISCONF), is blocked by a script (BUSY) or lacks replicas",
    ),
    ErrorRule(
        rex.NoPermissionError,
        False,
        "permission",
        "the ACL forbids this command: answered at once; other commands still work",
    ),
    ErrorRule(
        rex.WatchError,
        False,
        "conflict",
        "a WATCHed key changed: an optimistic-lock conflict for the caller to retry",
    ),
    ErrorRule(
        rex.ResponseError,
        False,
        "caller",
        "Redis answered that the command is wrong (WRONGTYPE, syntax, not an integer)",
    ),
    ErrorRule(
        rex.DataError,
        False,
        "caller",
        "redis-py rejected an argument before sending anything (e.g. a None value)",
    ),
)


# ---------------------------------------------------------------- operations


def _size(value: object) -> int:
    if type(value) is bytes:
        return len(value)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int | float):
        return len(repr(value))
    return 0


def _key_text(key: object) -> str:
    if type(key) is str:
        return key
    if isinstance(key, bytes | bytearray):
        return bytes(key).decode("utf-8", "backslashreplace")
    if isinstance(key, memoryview):
        return key.tobytes().decode("utf-8", "backslashreplace")
    return str(key)


def _keys_text(keys: tuple[object, ...]) -> str | None:
    if not keys:
        return None
    first = _key_text(keys[0])
    return first if len(keys) == 1 else f"{first} (+{len(keys) - 1} more)"


def _encode_json(key: Key, value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"set_json({_key_text(key)!r}): the value is not JSON-serialisable: {exc}",
            key=_key_text(key),
        ) from exc


def _decode_json(key: Key, raw: object) -> Any:
    try:
        if isinstance(raw, memoryview):
            raw = raw.tobytes()
        return json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise SerializationError(
            f"get_json({_key_text(key)!r}): the stored value is not JSON: {exc}",
            key=_key_text(key),
        ) from exc


# Readers: ``read(reply, figs)`` returns the result and fills in the figures of
# ``figs`` = [bytes_sent, bytes_received, cache_hits, cache_misses] (see
# ``Adapter._command``); they run inside the guarded call.
_RECEIVED, _HITS, _MISSES = 1, 2, 3


def _as_bool(raw: Any, figs: list[int]) -> bool:
    return bool(raw)


def _as_int(raw: Any, figs: list[int]) -> int:
    return int(raw)


def _as_list(raw: Any, figs: list[int]) -> list[Any]:
    return list(raw)


def _as_dict(raw: Any, figs: list[int]) -> dict[Any, Any]:
    figs[_RECEIVED] = sum(_size(v) for v in raw.values())
    return dict(raw)


def _as_set(raw: Any, figs: list[int]) -> set[Any]:
    return set(raw)


def _lookup(raw: Any, figs: list[int]) -> Any:
    """One lookup: a hit unless the reply is None."""
    if raw is None:
        figs[_MISSES] = 1
    else:
        figs[_HITS] = 1
        figs[_RECEIVED] = len(raw) if type(raw) is bytes else _size(raw)
    return raw


def _lookups(raw: Any, figs: list[int]) -> list[Any]:
    values = list(raw)
    hits = [v for v in values if v is not None]
    figs[_HITS] = len(hits)
    figs[_MISSES] = len(values) - len(hits)
    figs[_RECEIVED] = sum(_size(v) for v in hits)
    return values


def _received(raw: Any, figs: list[int]) -> Any:
    if raw is not None:
        figs[_RECEIVED] = _size(raw)
    return raw


def _sizes(values: Iterable[object]) -> int:
    return sum(_size(v) for v in values)


def _set_options(
    set_: Callable[..., R], ex: Expiry | None, px: Expiry | None, nx: bool, xx: bool
) -> Callable[..., R]:
    """The client's ``set`` with its options bound (called only when one differs from
    redis-py's defaults: a plain SET passes no keywords)."""
    return functools.partial(set_, ex=ex, px=px, nx=nx, xx=xx)


def _hset_call(
    hset: Callable[..., R],
    field: Key | None,
    value: Value | None,
    mapping: Mapping[Key, Value] | None,
) -> Callable[..., R]:
    return functools.partial(
        hset, key=field, value=value, mapping=dict(mapping) if mapping else None
    )


def _hset_sent(value: Value | None, mapping: Mapping[Key, Value] | None) -> int:
    return _size(value) + _sizes((mapping or {}).values())


def _json_reader(key: Key, default: Any) -> Callable[[Any, list[int]], Any]:
    """GET's reader for ``get_json``: a lookup, then the JSON decoded (inside the guarded call)."""

    def read(raw: Any, figs: list[int]) -> Any:
        if _lookup(raw, figs) is None:
            return default
        return _decode_json(key, raw)

    return read


# ---------------------------------------------------------------- client settings


_ADAPTER_KEYS = AdapterOptions.__optional_keys__


def _url_secrets(url: str) -> list[str]:
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return [password, urllib.parse.unquote(password)]


# ---------------------------------------------------------------- the adapters


class _RedisAdapterBase(Adapter, Generic[C]):
    """Everything but the calls into the client: construction, settings, errors, secrets,
    figures, probe settings. The shells set :attr:`_client_class` and :attr:`_retry_class`."""

    kind = "redis"
    errors = REDIS_ERRORS
    probe_timeout: float = 1.0
    #: ``redis.Redis`` or ``redis.asyncio.Redis``: what :meth:`from_url` builds.
    _client_class: ClassVar[type[Any]]
    #: redis-py's sync or asyncio ``Retry``: the client's and the probe's (no retries).
    _retry_class: ClassVar[type[Any]]

    client: C

    def __init__(
        self,
        client: C,
        *,
        record_keys: bool = True,
        owns_client: bool = False,
        **options: Unpack[AdapterOptions],
    ) -> None:
        pool = getattr(client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        password = kwargs.get("password")
        found: list[str | None] = [password] if isinstance(password, str) else []
        options["secrets"] = [*options.get("secrets", ()), *found]
        super().__init__(**options)
        budget = self.guards.retry_budget
        if budget is not None and callable(getattr(client, "get_retry", None)):
            retry = client.get_retry()
            if retry is not None:  # the client's own retries ask the budget first
                client.set_retry(budget_redis_retry(retry, budget))
        self.client = client
        self.record_keys = record_keys
        self._owns_client = owns_client
        self._probe_client: Any = None
        self._probe_lock = threading.Lock()

    @classmethod
    def client_settings(
        cls,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        socket_connect_timeout: float = DEFAULT_SOCKET_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        health_check_interval: float = DEFAULT_HEALTH_CHECK_INTERVAL,
        **options: Any,
    ) -> dict[str, Any]:
        """The keyword arguments :meth:`from_url` gives the client's ``from_url``.

        Use them to build a client of your own: ``redis.Redis(host=...,
        **RedisAdapter.client_settings())``.
        """
        settings: dict[str, Any] = {
            "max_connections": max_connections,
            "socket_connect_timeout": socket_connect_timeout,
            "socket_timeout": socket_timeout,
            "health_check_interval": health_check_interval,
            # No client retries: a retry would hide the failure from the breaker and
            # multiply the time a call takes while Redis is down. A pooled connection
            # the server has closed is replaced by the pool itself before it is used.
            "retry": cls._retry_class(redis.backoff.NoBackoff(), 0),
        }
        settings.update(options)
        return settings

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        record_keys: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        socket_connect_timeout: float = DEFAULT_SOCKET_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        health_check_interval: float = DEFAULT_HEALTH_CHECK_INTERVAL,
        **options: Any,
    ) -> Self:
        """An adapter over a new client (``redis.Redis.from_url(url, ...)``, or
        ``redis.asyncio.Redis``'s) that it owns and closes.

        ``options`` named in :class:`~brownout.adapter.AdapterOptions` (``name``,
        ``config``, ``registry``, ...) go to the adapter, the others to redis-py
        unchanged (``decode_responses=True``, ``ssl_*``, a ``retry=`` of your own, ...).
        Settings in the URL's query string win. Creating it makes no connection (and
        needs no running event loop).

        >>> cache = RedisAdapter.from_url("redis://127.0.0.1:6379/0", socket_timeout=0.2)
        >>> cache.client.connection_pool.connection_kwargs["socket_timeout"]
        0.2
        >>> cache.close()
        """
        mine: dict[str, Any]
        theirs: dict[str, Any]
        mine, theirs = split_options(options, _ADAPTER_KEYS)
        settings = cls.client_settings(
            max_connections=max_connections,
            socket_connect_timeout=socket_connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=health_check_interval,
            **theirs,
        )
        client = cls._client_class.from_url(url, **settings)
        mine["secrets"] = [*mine.get("secrets", ()), *_url_secrets(url)]
        return cls(client, record_keys=record_keys, owns_client=True, **mine)

    def _encoded(self, key: Key, value: object) -> str:
        """``value`` as JSON for ``set_json``; one that cannot be encoded is accounted as a
        caller error (nothing is sent)."""
        try:
            return _encode_json(key, value)
        except SerializationError as exc:
            figs = Figures(key=exc.key if self.record_keys else None)
            self._failed("set_json", exc, 0.0, figs)
            raise

    def _key_text(self, key: object) -> str:
        return _key_text(key)

    def _on_error(self, exc: Exception, rule: ErrorRule) -> None:
        if rule.kind == "auth":
            self.stats.credentials_problem = self.describe(exc)

    # -- settings that change

    def set_socket_timeout(self, seconds: float) -> None:
        """Commands from now on wait at most ``seconds`` for Redis (inventario: the
        degradation level's timeout): the ``socket_timeout`` of the connections the
        pool opens from now on, and of each one it has, in use or idle (redis-py
        reads it at each send and read; a read already waiting keeps its deadline).
        The probe keeps :attr:`probe_timeout`. A pool that does not expose its
        connections (``pool_size`` etc. ``None`` in the figures) gets only the
        first part."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"set_socket_timeout: seconds must be a number, got {seconds!r}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"set_socket_timeout: seconds must be > 0, got {seconds!r}")
        pool = getattr(self.client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None)
        if pool is None or not isinstance(kwargs, dict):
            raise TypeError(
                f"set_socket_timeout: {type(self.client).__name__} has no connection pool "
                "with connection_kwargs"
            )
        kwargs["socket_timeout"] = seconds
        for name in ("_in_use_connections", "_available_connections"):
            conns = getattr(pool, name, None)
            if conns is None:
                continue
            queue = getattr(conns, "_queue", None)  # a LifoQueue in blocking pools
            for conn in list(queue if queue is not None else conns):
                if conn is not None and hasattr(conn, "socket_timeout"):
                    conn.socket_timeout = seconds

    # -- figures

    def extra_figures(self) -> dict[str, Any]:
        """``pool_in_use``, ``pool_idle``, ``pool_size`` (the pool's maximum), ``hit_ratio``.

        ``hit_ratio`` is hits / (hits + misses) over the adapter's lifetime, ``None``
        before the first lookup; pool figures are ``None`` for a pool that does not
        expose them.
        """
        pool = getattr(self.client, "connection_pool", None)
        in_use = getattr(pool, "_in_use_connections", None)
        idle = getattr(pool, "_available_connections", None)
        size = getattr(pool, "max_connections", None)
        totals = self.stats.view()["totals"]
        hits, misses = totals.get("cache_hits", 0), totals.get("cache_misses", 0)
        return {
            "pool_in_use": len(in_use) if in_use is not None else None,
            "pool_idle": _idle_count(idle),
            "pool_size": size if isinstance(size, int) else None,
            "hit_ratio": hits / (hits + misses) if hits + misses else None,
        }

    # -- probe

    def _probe_pool_kwargs(self) -> dict[str, Any] | None:
        """Settings of the probe's own one-connection pool, or None to probe through the client.

        The probe gets a connection of its own, with :attr:`probe_timeout` as its
        connect and read timeouts and no retries, so that it answers in bounded
        time even when every pooled connection is busy or the pool's timeouts are
        long. Sentinel-managed pools (whose address is found at connect time) are
        probed through the client instead.
        """
        pool = getattr(self.client, "connection_pool", None)
        if pool is None or type(pool).__name__.startswith("Sentinel"):
            return None
        kwargs = dict(getattr(pool, "connection_kwargs", None) or {})
        if not kwargs:
            return None
        for name in list(kwargs):
            # per-pool machinery (redis-py >= 7) and remembered originals of the
            # settings replaced here: the new pool makes its own
            if name.startswith("orig_") or name in (
                "maint_notifications_pool_handler",
                "himport_registry",
            ):
                del kwargs[name]
        kwargs.update(
            socket_timeout=self.probe_timeout,
            socket_connect_timeout=self.probe_timeout,
            health_check_interval=0,
            retry=self._retry_class(redis.backoff.NoBackoff(), 0),
            max_connections=1,
            connection_class=pool.connection_class,
        )
        return kwargs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} breaker={self.breaker.state.value}>"


def _idle_count(idle: Any) -> int | None:
    if idle is None:
        return None
    try:
        return len(idle)
    except TypeError:  # an asyncio.LifoQueue in BlockingConnectionPool-like pools
        qsize = getattr(idle, "qsize", None)
        return int(qsize()) if callable(qsize) else None


# Deliberate hot-path twins: the command methods of RedisAdapter and AsyncRedisAdapter are
# written out once per shell, one line each (the client's method, its arguments, the reader),
# instead of being generated from one shared generic method: a shared coroutine puts one more
# frame on every command. Measured over an in-memory client (the adapter's own cost only),
# interleaved in one process, 40 rounds of 5,000 calls, paired median: GET through one
# generic coroutine took 1.084x and 1.111x the one-line method's time (two runs, ~11 µs/op).
# Everything else (construction, settings, from_url, errors, figures) is in _RedisAdapterBase.


class RedisAdapter(_RedisAdapterBase[redis.Redis], SyncResource):
    """A sync ``redis.Redis`` client behind a circuit breaker.

    Build it from a URL (the adapter then owns and closes the client)::

        cache = RedisAdapter.from_url("redis://:secret@cache:6379/0")
        cache.set("greeting", "hello", ex=60)
        cache.get("greeting")            # b'hello'
        with cache.pipeline() as p:      # one breaker call for the whole batch
            p.incr("visits")
            p.expire("visits", 3600)
            p.execute()

    or around an existing client (``RedisAdapter(redis.Redis(...))``; its settings
    are then the caller's: see :meth:`client_settings` for the recommended ones).
    Every method raises :class:`~brownout.BreakerOpen` while the breaker is open and
    redis-py's own exceptions otherwise (a
    :class:`~brownout.adapter.DependencyError` when the message held a secret).
    Replies are ``bytes`` (``str`` with ``decode_responses=True``).
    """

    _client_class = redis.Redis
    _retry_class = redis.retry.Retry

    # -- strings

    def get(self, key: Key) -> Any:
        """GET: the value, or ``None`` (a cache miss)."""
        return self._command(self.client.get, (key,), "get", _lookup, key)

    def set(
        self,
        key: Key,
        value: Value,
        *,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """SET with an optional expiry (``ex`` seconds, ``px`` ms); False if nx/xx prevented it."""
        set_ = self.client.set
        if ex is not None or px is not None or nx or xx:
            set_ = _set_options(set_, ex, px, nx, xx)
        return self._command(set_, (key, value), "set", _as_bool, key, _size(value))

    def delete(self, *keys: Key) -> int:
        """DEL: how many of ``keys`` existed."""
        return self._command(self.client.delete, keys, "delete", _as_int, _keys_text(keys))

    def exists(self, *keys: Key) -> int:
        """EXISTS: how many of ``keys`` exist."""
        return self._command(self.client.exists, keys, "exists", _as_int, _keys_text(keys))

    def expire(self, key: Key, time: Expiry) -> bool:
        """EXPIRE: False if the key does not exist."""
        return self._command(self.client.expire, (key, time), "expire", _as_bool, key)

    def ttl(self, key: Key) -> int:
        """TTL in seconds (-1: no expiry, -2: no such key)."""
        return self._command(self.client.ttl, (key,), "ttl", _as_int, key)

    def incr(self, key: Key, amount: int = 1) -> int:
        """INCRBY ``amount``: the new value."""
        return self._command(self.client.incrby, (key, amount), "incr", _as_int, key)

    def incrby(self, key: Key, amount: int) -> int:
        """INCRBY: the new value."""
        return self._command(self.client.incrby, (key, amount), "incrby", _as_int, key)

    def decr(self, key: Key, amount: int = 1) -> int:
        """DECRBY ``amount``: the new value."""
        return self._command(self.client.decrby, (key, amount), "decr", _as_int, key)

    def mget(self, keys: Iterable[Key]) -> list[Any]:
        """MGET: one value or ``None`` per key (each counted as a hit or a miss)."""
        keys = tuple(keys)
        return self._command(self.client.mget, (list(keys),), "mget", _lookups, _keys_text(keys))

    def mset(self, mapping: Mapping[Key, Value]) -> bool:
        """MSET: set every key of ``mapping``."""
        return self._command(
            self.client.mset,
            (dict(mapping),),
            "mset",
            _as_bool,
            _keys_text(tuple(mapping)),
            _sizes(mapping.values()),
        )

    # -- lists

    def lpush(self, key: Key, *values: Value) -> int:
        """LPUSH: the list's new length."""
        return self._command(
            self.client.lpush, (key, *values), "lpush", _as_int, key, _sizes(values)
        )

    def rpush(self, key: Key, *values: Value) -> int:
        """RPUSH: the list's new length."""
        return self._command(
            self.client.rpush, (key, *values), "rpush", _as_int, key, _sizes(values)
        )

    def lpop(self, key: Key) -> Any:
        """LPOP: the first element, or ``None``."""
        return self._command(self.client.lpop, (key,), "lpop", _received, key)

    def rpop(self, key: Key) -> Any:
        """RPOP: the last element, or ``None``."""
        return self._command(self.client.rpop, (key,), "rpop", _received, key)

    def llen(self, key: Key) -> int:
        """LLEN."""
        return self._command(self.client.llen, (key,), "llen", _as_int, key)

    def lrange(self, key: Key, start: int = 0, end: int = -1) -> list[Any]:
        """LRANGE (inclusive ``end``; the whole list by default)."""
        return self._command(self.client.lrange, (key, start, end), "lrange", _as_list, key)

    # -- hashes

    def hset(
        self,
        key: Key,
        field: Key | None = None,
        value: Value | None = None,
        *,
        mapping: Mapping[Key, Value] | None = None,
    ) -> int:
        """HSET one ``field``/``value`` and/or a ``mapping``: how many fields were added."""
        return self._command(
            _hset_call(self.client.hset, field, value, mapping),
            (key,),
            "hset",
            _as_int,
            key,
            _hset_sent(value, mapping),
        )

    def hget(self, key: Key, field: Key) -> Any:
        """HGET: the value, or ``None`` (a cache miss)."""
        return self._command(self.client.hget, (key, field), "hget", _lookup, key)

    def hgetall(self, key: Key) -> dict[Any, Any]:
        """HGETALL (an empty dict for a missing key)."""
        return self._command(self.client.hgetall, (key,), "hgetall", _as_dict, key)

    def hdel(self, key: Key, *fields: Key) -> int:
        """HDEL: how many fields were removed."""
        return self._command(self.client.hdel, (key, *fields), "hdel", _as_int, key)

    # -- sets

    def sadd(self, key: Key, *members: Value) -> int:
        """SADD: how many members were added."""
        return self._command(self.client.sadd, (key, *members), "sadd", _as_int, key)

    def srem(self, key: Key, *members: Value) -> int:
        """SREM: how many members were removed."""
        return self._command(self.client.srem, (key, *members), "srem", _as_int, key)

    def smembers(self, key: Key) -> Members:
        """SMEMBERS."""
        return self._command(self.client.smembers, (key,), "smembers", _as_set, key)

    # -- misc

    def ping(self) -> bool:
        """PING through the breaker (the health probe, :meth:`probe`, bypasses it)."""
        return self._command(self.client.ping, (), "ping", _as_bool)

    def get_json(self, key: Key, default: Any = None) -> Any:
        """GET and decode JSON; ``default`` for a missing key; :class:`SerializationError`
        if the stored value is not JSON."""
        return self._command(self.client.get, (key,), "get_json", _json_reader(key, default), key)

    def set_json(
        self,
        key: Key,
        value: object,
        *,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """SET ``value`` as compact JSON; :class:`SerializationError` (before anything is
        sent) if it is not JSON-serialisable (sets, bytes, NaN, objects)."""
        encoded = self._encoded(key, value)
        set_ = self.client.set
        if ex is not None or px is not None or nx or xx:
            set_ = _set_options(set_, ex, px, nx, xx)
        return self._command(set_, (key, encoded), "set_json", _as_bool, key, _size(encoded))

    def pipeline(self, transaction: bool = True) -> RedisPipeline:
        """A pipeline whose :meth:`~RedisPipeline.execute` is one guarded call.

        >>> cache = RedisAdapter.from_url("redis://127.0.0.1:6379/0")
        >>> with cache.pipeline() as p:
        ...     _ = p.set("a", 1).get("a")  # queued, nothing is sent
        ...     len(p)
        2
        >>> cache.close()
        """
        return RedisPipeline(self, self.client.pipeline(transaction=transaction))

    # -- probe and lifetime

    def _probe_once(self) -> None:
        with self._probe_lock:
            client = self._probe_client
            if client is None:
                kwargs = self._probe_pool_kwargs()
                if kwargs is None:
                    client = self.client
                else:
                    client = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
                    self._probe_client = client
        client.ping()

    def close(self) -> None:
        """Close the probe's connection, and the client if the adapter created it."""
        probe, self._probe_client = self._probe_client, None
        if probe is not None:
            probe.connection_pool.disconnect()
        if self._owns_client:
            self.client.close()


class AsyncRedisAdapter(_RedisAdapterBase[redis.asyncio.Redis], AsyncResource):
    """A ``redis.asyncio.Redis`` client behind a circuit breaker.

    The same operations as :class:`RedisAdapter`, awaited::

        async with AsyncRedisAdapter.from_url("redis://cache:6379/0") as cache:
            await cache.set_json("user:1", {"name": "Ada"}, ex=300)
            user = await cache.get_json("user:1")
            async with cache.pipeline() as p:
                p.incr("visits").expire("visits", 3600)
                await p.execute()
    """

    _client_class = redis.asyncio.Redis
    _retry_class = redis.asyncio.retry.Retry

    # -- strings

    async def get(self, key: Key) -> Any:
        """GET: the value, or ``None`` (a cache miss)."""
        return await self._acommand(self.client.get, (key,), "get", _lookup, key)

    async def set(
        self,
        key: Key,
        value: Value,
        *,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """SET with an optional expiry (``ex`` seconds, ``px`` ms); False if nx/xx prevented it."""
        set_ = self.client.set
        if ex is not None or px is not None or nx or xx:
            set_ = _set_options(set_, ex, px, nx, xx)
        return await self._acommand(set_, (key, value), "set", _as_bool, key, _size(value))

    async def delete(self, *keys: Key) -> int:
        """DEL: how many of ``keys`` existed."""
        return await self._acommand(self.client.delete, keys, "delete", _as_int, _keys_text(keys))

    async def exists(self, *keys: Key) -> int:
        """EXISTS: how many of ``keys`` exist."""
        return await self._acommand(self.client.exists, keys, "exists", _as_int, _keys_text(keys))

    async def expire(self, key: Key, time: Expiry) -> bool:
        """EXPIRE: False if the key does not exist."""
        return await self._acommand(self.client.expire, (key, time), "expire", _as_bool, key)

    async def ttl(self, key: Key) -> int:
        """TTL in seconds (-1: no expiry, -2: no such key)."""
        return await self._acommand(self.client.ttl, (key,), "ttl", _as_int, key)

    async def incr(self, key: Key, amount: int = 1) -> int:
        """INCRBY ``amount``: the new value."""
        return await self._acommand(self.client.incrby, (key, amount), "incr", _as_int, key)

    async def incrby(self, key: Key, amount: int) -> int:
        """INCRBY: the new value."""
        return await self._acommand(self.client.incrby, (key, amount), "incrby", _as_int, key)

    async def decr(self, key: Key, amount: int = 1) -> int:
        """DECRBY ``amount``: the new value."""
        return await self._acommand(self.client.decrby, (key, amount), "decr", _as_int, key)

    async def mget(self, keys: Iterable[Key]) -> list[Any]:
        """MGET: one value or ``None`` per key (each counted as a hit or a miss)."""
        keys = tuple(keys)
        return await self._acommand(
            self.client.mget, (list(keys),), "mget", _lookups, _keys_text(keys)
        )

    async def mset(self, mapping: Mapping[Key, Value]) -> bool:
        """MSET: set every key of ``mapping``."""
        return await self._acommand(
            self.client.mset,
            (dict(mapping),),
            "mset",
            _as_bool,
            _keys_text(tuple(mapping)),
            _sizes(mapping.values()),
        )

    # -- lists

    async def lpush(self, key: Key, *values: Value) -> int:
        """LPUSH: the list's new length."""
        return await self._acommand(
            self.client.lpush, (key, *values), "lpush", _as_int, key, _sizes(values)
        )

    async def rpush(self, key: Key, *values: Value) -> int:
        """RPUSH: the list's new length."""
        return await self._acommand(
            self.client.rpush, (key, *values), "rpush", _as_int, key, _sizes(values)
        )

    async def lpop(self, key: Key) -> Any:
        """LPOP: the first element, or ``None``."""
        return await self._acommand(self.client.lpop, (key,), "lpop", _received, key)

    async def rpop(self, key: Key) -> Any:
        """RPOP: the last element, or ``None``."""
        return await self._acommand(self.client.rpop, (key,), "rpop", _received, key)

    async def llen(self, key: Key) -> int:
        """LLEN."""
        return await self._acommand(self.client.llen, (key,), "llen", _as_int, key)

    async def lrange(self, key: Key, start: int = 0, end: int = -1) -> list[Any]:
        """LRANGE (inclusive ``end``; the whole list by default)."""
        return await self._acommand(self.client.lrange, (key, start, end), "lrange", _as_list, key)

    # -- hashes

    async def hset(
        self,
        key: Key,
        field: Key | None = None,
        value: Value | None = None,
        *,
        mapping: Mapping[Key, Value] | None = None,
    ) -> int:
        """HSET one ``field``/``value`` and/or a ``mapping``: how many fields were added."""
        return await self._acommand(
            _hset_call(self.client.hset, field, value, mapping),
            (key,),
            "hset",
            _as_int,
            key,
            _hset_sent(value, mapping),
        )

    async def hget(self, key: Key, field: Key) -> Any:
        """HGET: the value, or ``None`` (a cache miss)."""
        return await self._acommand(self.client.hget, (key, field), "hget", _lookup, key)

    async def hgetall(self, key: Key) -> dict[Any, Any]:
        """HGETALL (an empty dict for a missing key)."""
        return await self._acommand(self.client.hgetall, (key,), "hgetall", _as_dict, key)

    async def hdel(self, key: Key, *fields: Key) -> int:
        """HDEL: how many fields were removed."""
        return await self._acommand(self.client.hdel, (key, *fields), "hdel", _as_int, key)

    # -- sets

    async def sadd(self, key: Key, *members: Value) -> int:
        """SADD: how many members were added."""
        return await self._acommand(self.client.sadd, (key, *members), "sadd", _as_int, key)

    async def srem(self, key: Key, *members: Value) -> int:
        """SREM: how many members were removed."""
        return await self._acommand(self.client.srem, (key, *members), "srem", _as_int, key)

    async def smembers(self, key: Key) -> Members:
        """SMEMBERS."""
        return await self._acommand(self.client.smembers, (key,), "smembers", _as_set, key)

    # -- misc

    async def ping(self) -> bool:
        """PING through the breaker (the health probe, :meth:`aprobe`, bypasses it)."""
        return await self._acommand(self.client.ping, (), "ping", _as_bool)

    async def get_json(self, key: Key, default: Any = None) -> Any:
        """GET and decode JSON; ``default`` for a missing key; :class:`SerializationError`
        if the stored value is not JSON."""
        return await self._acommand(
            self.client.get, (key,), "get_json", _json_reader(key, default), key
        )

    async def set_json(
        self,
        key: Key,
        value: object,
        *,
        ex: Expiry | None = None,
        px: Expiry | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """SET ``value`` as compact JSON; :class:`SerializationError` (before anything is
        sent) if it is not JSON-serialisable."""
        encoded = self._encoded(key, value)
        set_ = self.client.set
        if ex is not None or px is not None or nx or xx:
            set_ = _set_options(set_, ex, px, nx, xx)
        return await self._acommand(set_, (key, encoded), "set_json", _as_bool, key, _size(encoded))

    def pipeline(self, transaction: bool = True) -> AsyncRedisPipeline:
        """A pipeline whose :meth:`~AsyncRedisPipeline.execute` is one guarded call."""
        return AsyncRedisPipeline(self, self.client.pipeline(transaction=transaction))

    # -- probe and lifetime

    async def _aprobe_once(self) -> None:
        client = self._probe_client
        if client is None:
            kwargs = self._probe_pool_kwargs()
            if kwargs is None:
                client = self.client
            else:
                pool = redis.asyncio.ConnectionPool(**kwargs)
                client = self._probe_client = redis.asyncio.Redis(connection_pool=pool)
        await client.ping()

    def _probe_once(self) -> None:
        raise NotImplementedError("AsyncRedisAdapter has an async probe only: await aprobe()")

    async def aclose(self) -> None:
        """Close the probe's connection, and the client if the adapter created it."""
        probe, self._probe_client = self._probe_client, None
        if probe is not None:
            await probe.connection_pool.disconnect()
        if self._owns_client:
            await self.client.aclose()


# ---------------------------------------------------------------- pipelines


class _PipelineBase:
    """Queues commands on a redis-py pipeline; only ``execute`` goes through the breaker.

    Commands are queued locally and send nothing, so they cannot fail against
    Redis; they return this wrapper, so chained calls stay guarded. Immediate
    commands of a transactional pipeline (``watch``, and commands after it
    until ``multi``) talk to Redis directly and are *not* guarded.
    """

    def __init__(self, adapter: _RedisAdapterBase[Any], pipe: Any) -> None:
        self._adapter = adapter
        self._pipe = pipe

    @property
    def raw(self) -> Any:
        """The redis-py pipeline underneath (unguarded)."""
        return self._pipe

    def __len__(self) -> int:
        return len(self._pipe)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pipe, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def queue(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return self if result is self._pipe else result

        queue.__name__ = name
        queue.__doc__ = attr.__doc__
        return queue

    def _figures(self) -> Figures:
        return Figures(key=f"{len(self._pipe)} commands")


class RedisPipeline(_PipelineBase):
    """A pipeline of :class:`RedisAdapter`; see :meth:`RedisAdapter.pipeline`."""

    _adapter: RedisAdapter

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command in one guarded call; the replies in order.

        The queue is emptied whatever happens (also when the breaker rejects it).
        """
        try:
            result: list[Any] = self._adapter._run(
                "pipeline", self._pipe.execute, raise_on_error, figures=self._figures()
            )
        except BreakerOpen:
            self._pipe.reset()
            raise
        self._adapter._succeeded()
        return result

    def reset(self) -> None:
        """Drop the queued commands and give back the connection (if any)."""
        self._pipe.reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pipe.reset()


class AsyncRedisPipeline(_PipelineBase):
    """A pipeline of :class:`AsyncRedisAdapter`; see :meth:`AsyncRedisAdapter.pipeline`."""

    _adapter: AsyncRedisAdapter

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command in one guarded call; the replies in order."""
        try:
            result: list[Any] = await self._adapter._arun(
                "pipeline", self._pipe.execute, raise_on_error, figures=self._figures()
            )
        except BreakerOpen:
            await self._pipe.reset()
            raise
        self._adapter._succeeded()
        return result

    async def reset(self) -> None:
        """Drop the queued commands and give back the connection (if any)."""
        await self._pipe.reset()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pipe.reset()
