"""Circuit-broken SQL databases: SQLAlchemy 2 engines for PostgreSQL and SQLite.

:class:`Database` (sync, ``sqlalchemy.create_engine``; psycopg 3 for
PostgreSQL, the standard ``sqlite3`` for SQLite) and :class:`AsyncDatabase`
(async, ``create_async_engine``; asyncpg for PostgreSQL, aiosqlite for
SQLite) guard *units of work*: a transaction opened with :meth:`session`
commits when the block succeeds, rolls back when it raises, and gives the
breaker exactly one outcome. Errors that mean "the database is failing"
(connection lost, timeouts, pool exhausted, server shutting down) count
against the breaker; errors that mean "this statement is wrong" (constraint
violations, syntax errors, bad data, no row found) pass through and count as
nothing. See ``docs/adapters/sql.md`` for the options and the full table.

>>> from sqlalchemy import text
>>> from brownout.sql import Database
>>> db = Database.from_url("sqlite://")
>>> with db.session() as s:
...     _ = s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
...     _ = s.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": "ada"})
>>> db.scalar("SELECT name FROM t WHERE id = :id", {"id": 1})
'ada'
>>> db.health()["breaker"]["state"], db.extra_figures()["dialect"]
('closed', 'sqlite')
>>> db.close()

Requires the ``sql`` extra: ``pip install 'brownout[sql]'``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import math
import re
import sqlite3
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypeVar,
    Unpack,
    cast,
)

try:
    from sqlalchemy import event, text
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import URL, Connection, Engine, Result, create_engine, make_url
    from sqlalchemy.ext.asyncio import (
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
        create_async_engine,
    )
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.pool import StaticPool
    from sqlalchemy.sql.expression import Executable
    from sqlalchemy.util import greenlet_spawn
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "brownout.sql needs SQLAlchemy 2 and a database driver: pip install 'brownout[sql]'"
    ) from exc

try:  # the sync PostgreSQL driver; optional (a SQLite-only install works without it)
    import psycopg
    import psycopg.errors
except ImportError:  # pragma: no cover - depends on the installation
    _HAVE_PSYCOPG = False
else:
    _HAVE_PSYCOPG = True

from brownout._adapter import Adapter
from brownout._adapter_classify import ErrorRule, ErrorTable
from brownout._adapter_guards import aguarded, guarded
from brownout._adapter_stats import Figures
from brownout._aio import retrieve
from brownout._errors import BreakerOpen, BrownoutError
from brownout._lifetime import AsyncResource, SyncResource
from brownout._options import AdapterOptions
from brownout._registry import PRESETS

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_SQLITE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "DEFAULT_WRITER_GROUP",
    "SQL_ERRORS",
    "AsyncDatabase",
    "CommandTimeout",
    "Database",
    "is_missing_schema",
]

logger = logging.getLogger("brownout")

E = TypeVar("E", Engine, AsyncEngine)
T = TypeVar("T")
P = ParamSpec("P")

#: Connections kept open in the pool.
DEFAULT_POOL_SIZE = 10
#: Extra connections opened beyond ``pool_size`` under load (closed when returned).
DEFAULT_MAX_OVERFLOW = 10
#: Seconds to wait for a free pooled connection before ``sqlalchemy.exc.TimeoutError``.
DEFAULT_POOL_TIMEOUT = 2.0
#: Seconds to establish a connection (psycopg rounds down to whole seconds, minimum 2).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: PostgreSQL ``statement_timeout``: the server cancels statements running longer (seconds).
DEFAULT_STATEMENT_TIMEOUT = 5.0
#: Client-side limit on waiting for the server's answer to one command (seconds); catches a
#: server that stopped answering at all, which ``statement_timeout`` cannot.
DEFAULT_COMMAND_TIMEOUT = 6.0
#: SQLite: seconds to wait for a lock held by another connection ("database is locked").
DEFAULT_SQLITE_TIMEOUT = 5.0
#: SQLite writer: at most this many units of work share one transaction (one commit).
DEFAULT_WRITER_GROUP = 64


# --------------------------------------------------------------------------- psycopg

#: A deadline tighter than the connection's command timeout, for the current context
#: (the sync health probe sets it to ``probe_timeout``).
_WAIT_LIMIT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "brownout_sql_wait_limit", default=None
)

_PSYCOPG_TIMED = False

if _HAVE_PSYCOPG:

    class CommandTimeout(psycopg.OperationalError, BrownoutError):
        """The server did not answer a command within ``command_timeout`` (psycopg, sync).

        A ``BrownoutError`` raised in place of a psycopg error, so it stays an
        ``OperationalError`` for SQLAlchemy (and counts against the breaker).

        The connection is closed when this is raised (its protocol state is
        unknown), so SQLAlchemy invalidates it instead of returning it to the pool.
        """

    _WaitTimeout: type[BaseException] | None = getattr(psycopg.errors, "_WaitTimeout", None)
    # Connection.wait(gen, interval, timeout) appeared in psycopg 3.2; older versions
    # get no client-side command timeout (statement_timeout still applies).
    _PSYCOPG_TIMED = _WaitTimeout is not None and "timeout" in (
        inspect.signature(psycopg.Connection.wait).parameters
    )

    class _TimedConnection(psycopg.Connection[Any]):
        """A psycopg connection that gives up waiting for the server after a deadline."""

        brownout_timeout: float | None = None

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if timeout is None:
                limits = [t for t in (self.brownout_timeout, _WAIT_LIMIT.get()) if t]
                timeout = min(limits) if limits else None
            try:
                return super().wait(gen, interval, timeout)
            except Exception as exc:
                if _WaitTimeout is None or not isinstance(exc, _WaitTimeout):
                    raise
                # Mid-protocol: the connection cannot be reused. Closing the socket
                # makes psycopg report it closed, so SQLAlchemy invalidates it.
                self.pgconn.finish()
                raise CommandTimeout(
                    f"no answer from the server within {timeout:g} s (client-side "
                    "command_timeout); connection closed"
                ) from None

else:  # pragma: no cover - depends on the installation

    class CommandTimeout(BrownoutError):  # type: ignore[no-redef]
        """The server did not answer a command within ``command_timeout`` (psycopg, sync)."""


# --------------------------------------------------------------------------- errors

# SQLSTATE classes (first two characters) meaning the server or the link is failing.
_SERVER_CLASSES = {
    "08": "connection",  # connection exception (asyncpg ConnectionDoesNotExistError: 08003)
    "53": "overloaded",  # insufficient resources (TooManyConnectionsError: 53300, disk full)
    "57": "server",  # operator intervention: admin shutdown, CannotConnectNowError (57P03)
    "58": "server",  # system error (I/O error outside PostgreSQL)
    "XX": "server",  # internal error, data corrupted
}
# SQLite primary result codes meaning the database file cannot be used right now.
_SQLITE_FAILING = {
    5: "locked",  # SQLITE_BUSY: another connection holds the lock past the timeout
    6: "locked",  # SQLITE_LOCKED
    7: "server",  # SQLITE_NOMEM
    8: "server",  # SQLITE_READONLY: the file cannot be written
    10: "server",  # SQLITE_IOERR
    11: "server",  # SQLITE_CORRUPT
    13: "server",  # SQLITE_FULL
    14: "connection",  # SQLITE_CANTOPEN
    15: "server",  # SQLITE_PROTOCOL
    26: "server",  # SQLITE_NOTADB
}

_CLIENT_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, CommandTimeout)
if _HAVE_PSYCOPG:
    _CLIENT_TIMEOUTS += (psycopg.errors.ConnectionTimeout,)


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception behind a SQLAlchemy wrapper (or the error itself)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, sa_exc.DBAPIError) else None
    if isinstance(orig, BaseException):
        # asyncpg errors arrive wrapped twice: SQLAlchemy's adapter keeps asyncpg's as cause
        return orig
    return exc


def _sqlstate(exc: BaseException) -> str | None:
    for err in (exc, _driver_error(exc), _driver_error(exc).__cause__):
        state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state
    return None


def _sqlite_code(exc: BaseException) -> int | None:
    err = _driver_error(exc)
    code = getattr(err, "sqlite_errorcode", None) if isinstance(err, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None


#: SQLSTATEs meaning "the table (or schema) is not there": 42P01 undefined_table,
#: 3F000 invalid_schema_name.
_MISSING_SCHEMA_STATES = frozenset({"42P01", "3F000"})


def is_missing_schema(exc: BaseException) -> bool:
    """Whether ``exc`` says a table the statement needs does not exist (yet).

    PostgreSQL SQLSTATE 42P01 / 3F000, SQLite ``no such table``. The server is up
    and answered, so :data:`SQL_ERRORS` does not count it as an outage; but for work
    kept for later (an outbox intent) it is not the work's fault either: the schema
    is not created yet (a database created after the service started), so the work
    waits rather than being given up on.

    >>> is_missing_schema(ValueError("no such table: products"))
    False
    """
    if _sqlstate(exc) in _MISSING_SCHEMA_STATES:
        return True
    err = _driver_error(exc)
    return isinstance(err, sqlite3.OperationalError) and str(err).startswith("no such table")


def _is_client_timeout(exc: BaseException) -> bool:
    """client-side timeout (asyncpg timeout/command_timeout, psycopg connect/command)"""
    return isinstance(exc, _CLIENT_TIMEOUTS) or isinstance(_driver_error(exc), _CLIENT_TIMEOUTS)


def _is_statement_timeout(exc: BaseException) -> bool:
    """SQLSTATE 57014 query_canceled (statement_timeout)"""
    return _sqlstate(exc) == "57014"


def _is_connection_lost(exc: BaseException) -> bool:
    """DBAPIError with connection_invalidated, DisconnectionError, OSError"""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.DisconnectionError | OSError) or isinstance(
        _driver_error(exc), OSError
    )


# libpq reports connection-time refusals as text only (psycopg gives them no SQLSTATE)
_AUTH_MESSAGE = re.compile(
    r"FATAL:\s+(password authentication failed|role \S+ does not exist|"
    r"database \S+ does not exist|no pg_hba\.conf entry)"
)


def _is_auth_failure(exc: BaseException) -> bool:
    """SQLSTATE 28xxx (authentication) or 3D000 (no such database)"""
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith("28") or state == "3D000"
    return isinstance(exc, sa_exc.DBAPIError) and bool(_AUTH_MESSAGE.search(str(exc.orig)))


def _is_server_failure(exc: BaseException) -> bool:
    """SQLSTATE class 08, 53, 57, 58 or XX"""
    state = _sqlstate(exc)
    return state is not None and state[:2] in _SERVER_CLASSES


def _is_answered(exc: BaseException) -> bool:
    """any other SQLSTATE (22 data, 23 integrity, 42 syntax/access, 40 conflicts, ...)"""
    return _sqlstate(exc) is not None


def _is_sqlite_failing(exc: BaseException) -> bool:
    """SQLite BUSY/LOCKED/IOERR/CORRUPT/FULL/CANTOPEN/READONLY/NOMEM/NOTADB"""
    code = _sqlite_code(exc)
    return code is not None and code in _SQLITE_FAILING


def _is_sqlite_answered(exc: BaseException) -> bool:
    """any other SQLite result code (ERROR: syntax, no such table; CONSTRAINT; MISMATCH)"""
    return _sqlite_code(exc) is not None


# Top-level packages whose exceptions come from the database stack; anything else raised
# inside a unit of work comes from the caller's own code.
_DB_PACKAGES = frozenset(
    {"sqlalchemy", "asyncpg", "psycopg", "psycopg2", "sqlite3", "_sqlite3", "aiosqlite"}
)


def _is_callers_own(exc: BaseException) -> bool:
    """an exception from outside the database stack (ValueError, KeyError, ...)"""
    return not any(
        (cls.__module__ or "").partition(".")[0] in _DB_PACKAGES for cls in type(exc).__mro__
    )


#: The classification shared by :class:`Database` and :class:`AsyncDatabase`; the first
#: matching rule wins. Order matters: ``IntegrityError`` & co. are ``DBAPIError`` subclasses,
#: and SQLite reports syntax errors as ``OperationalError``, so codes are read before types.
SQL_ERRORS = ErrorTable(
    ErrorRule(
        BreakerOpen,
        False,
        "rejected",
        "a breaker rejected a nested call: not this database's failure",
    ),
    ErrorRule(
        sa_exc.TimeoutError,
        True,
        "pool_timeout",
        "no pooled connection came free within pool_timeout: queries are not finishing",
    ),
    ErrorRule(
        _is_client_timeout,
        True,
        "timeout",
        "the server did not answer within the connect/command timeout (hung or unreachable)",
    ),
    ErrorRule(
        _is_statement_timeout,
        True,
        "timeout",
        "the server cancelled a statement at statement_timeout: it is too slow right now "
        "(a runaway query also lands here; it hurts every caller, so it counts)",
    ),
    ErrorRule(
        _is_connection_lost,
        True,
        "connection",
        "the connection was refused, reset or closed: the server is down or unreachable",
    ),
    ErrorRule(
        _is_auth_failure,
        True,
        "auth",
        "the server refuses the configured credentials or database: nothing works until "
        "the configuration is fixed, so fail fast",
    ),
    ErrorRule(
        _is_server_failure,
        True,
        "server",
        "the server reports a connection, resource, shutdown or internal failure",
    ),
    ErrorRule(
        _is_answered,
        False,
        "caller",
        "the server answered with an error about this statement (constraint, syntax, data, "
        "permission, serialization conflict): it is up and working",
    ),
    ErrorRule(
        _is_sqlite_failing,
        True,
        "locked",
        "the SQLite file is locked past the timeout, unreadable, full or corrupt",
    ),
    ErrorRule(
        _is_sqlite_answered,
        False,
        "caller",
        "SQLite rejected this statement (syntax, no such table, constraint): the file is fine",
    ),
    ErrorRule(
        sa_exc.IntegrityError, False, "caller", "a constraint violation is the caller's data"
    ),
    ErrorRule(sa_exc.DataError, False, "caller", "invalid data for the column is the caller's"),
    ErrorRule(
        sa_exc.ProgrammingError, False, "caller", "a wrong statement (syntax, missing table)"
    ),
    ErrorRule(
        sa_exc.NotSupportedError, False, "caller", "the statement uses an unsupported feature"
    ),
    ErrorRule(
        sa_exc.OperationalError,
        True,
        "connection",
        "an operational failure without SQLSTATE: psycopg's connection refused/lost errors",
    ),
    ErrorRule(sa_exc.InterfaceError, True, "connection", "the driver lost its link"),
    ErrorRule(sa_exc.DBAPIError, True, "server", "an unclassified driver error: assumed failing"),
    ErrorRule(sa_exc.NoResultFound, False, "caller", "no row where one was expected is an answer"),
    ErrorRule(
        sa_exc.MultipleResultsFound,
        False,
        "caller",
        "several rows where one was expected is an answer",
    ),
    ErrorRule(
        sa_exc.InvalidRequestError,
        False,
        "caller",
        "misuse of the SQLAlchemy API (closed result, pending rollback) is the caller's",
    ),
    ErrorRule(
        sa_exc.ArgumentError, False, "caller", "a bad argument to SQLAlchemy is the caller's"
    ),
    ErrorRule(sa_exc.CompileError, False, "caller", "a statement that cannot be compiled"),
    ErrorRule(
        _is_callers_own,
        False,
        "caller",
        "raised by the caller's own code inside the unit of work, not by the database",
    ),
    ErrorRule(
        sa_exc.StatementError,
        False,
        "caller",
        "parameters that cannot be bound to the statement are the caller's",
    ),
)


# --------------------------------------------------------------------------- engines


def _normalize_url(url: str | URL, *, is_async: bool) -> URL:
    """Give a driver-less URL the extra's driver: psycopg/asyncpg, sqlite3/aiosqlite."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg" if is_async else "postgresql+psycopg")
    if parsed.drivername == "sqlite" and is_async:
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )


def _is_file_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and not _is_memory_sqlite(url)


def _use_wal(engine: Engine) -> None:
    """Every new connection of ``engine`` puts its SQLite file in WAL mode: readers
    never wait for the writer, nor the writer's commit for readers (the mode is
    stored in the file; setting it again is a no-op)."""

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()


def _begin_immediate(engine: Engine) -> None:
    """Transactions on ``engine`` start with ``BEGIN IMMEDIATE`` (SQLite): the write
    lock is taken before the first statement, so a read-then-write transaction never
    fails half-way on a lock another connection took after its read, and another
    process's writer waits for it (busy timeout) instead of the other way round."""

    @event.listens_for(engine, "connect")
    def _manual(dbapi_connection: Any, record: Any) -> None:
        # the driver's own implicit BEGIN (deferred, only before DML) is switched off
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _engine_options(
    url: URL,
    *,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    pool_recycle: float,
    connect_timeout: float,
    statement_timeout: float | None,
    command_timeout: float | None,
    sqlite_timeout: float,
    hide_parameters: bool,
    connect_args: Mapping[str, Any] | None,
    engine_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``create_engine`` / ``create_async_engine`` keyword arguments for ``url``."""
    for label, value in (
        ("pool_timeout", pool_timeout),
        ("connect_timeout", connect_timeout),
        ("sqlite_timeout", sqlite_timeout),
    ):
        if value <= 0:
            raise ValueError(f"{label} must be > 0 seconds, got {value!r}")
    for label, maybe in (
        ("statement_timeout", statement_timeout),
        ("command_timeout", command_timeout),
    ):
        if maybe is not None and maybe <= 0:
            raise ValueError(f"{label} must be > 0 seconds or None, got {maybe!r}")
    if pool_size < 1 or max_overflow < 0:
        raise ValueError("pool_size must be >= 1 and max_overflow >= 0")
    backend, driver = url.get_backend_name(), url.get_driver_name()
    args: dict[str, Any] = {}
    if backend == "postgresql" and driver == "asyncpg":
        args["timeout"] = connect_timeout
        if command_timeout is not None:
            args["command_timeout"] = command_timeout
        if statement_timeout is not None:
            args["server_settings"] = {"statement_timeout": str(round(statement_timeout * 1000))}
    elif backend == "postgresql" and driver in ("psycopg", "psycopg_async", "psycopg2"):
        args["connect_timeout"] = max(1, round(connect_timeout))
        if statement_timeout is not None:
            args["options"] = f"-c statement_timeout={round(statement_timeout * 1000)}"
    elif backend == "sqlite":
        args["timeout"] = sqlite_timeout
    args.update(connect_args or {})
    options: dict[str, Any] = {
        # a ping at checkout finds server connections that died while idle; a SQLite
        # connection is a file handle in this process, which does not (and with
        # aiosqlite the ping is four round trips to the driver's thread per checkout)
        "pool_pre_ping": backend != "sqlite",
        "hide_parameters": hide_parameters,
        "connect_args": args,
    }
    if not _is_memory_sqlite(url):  # in-memory SQLite uses a single-connection pool
        options.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=pool_recycle,
        )
    options.update(engine_options or {})
    return options


def _install_command_timeout(engine: Engine, timeout: float | None) -> None:
    """psycopg (sync) has no client-side command timeout of its own: add one."""
    url = engine.url
    if not (_PSYCOPG_TIMED and url.get_backend_name() == "postgresql"):
        return
    if url.get_driver_name() != "psycopg":
        return

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        conn = _TimedConnection.connect(*cargs, **cparams)
        conn.brownout_timeout = timeout
        return conn


def _pool_figures(engine: Engine) -> dict[str, Any]:
    pool = engine.pool
    figures: dict[str, Any] = {
        "dialect": engine.dialect.name,
        "driver": engine.dialect.driver,
        "url": engine.url.render_as_string(hide_password=True),
        "pool_class": type(pool).__name__,
    }
    for key, method in (
        ("pool_in_use", "checkedout"),
        ("pool_size", "size"),
        ("pool_overflow", "overflow"),
        ("pool_idle", "checkedin"),
    ):
        fn = getattr(pool, method, None)
        if callable(fn):
            try:
                figures[key] = fn()
            except Exception:  # pragma: no cover - pool internals of exotic pools
                logger.debug("sql adapter: pool.%s() failed", method, exc_info=True)
    return figures


def _statement(stmt: str | Executable) -> Executable:
    return text(stmt) if isinstance(stmt, str) else stmt


# --------------------------------------------------------------------------- base


class _UnitOfWork:
    """Breaker admission plus accounting of one guarded unit; shared by sync and async.

    Entered before the transaction starts (raises :class:`BreakerOpen` when
    rejected), left after it committed or was discarded: one breaker outcome
    and one :class:`~brownout.adapter.OperationEvent` per unit.
    """

    __slots__ = ("_adapter", "_figures", "_operation", "_start")

    def __init__(self, adapter: _SQLAdapter[Any], operation: str) -> None:
        self._adapter = adapter
        self._operation = operation
        self._figures = Figures()
        self._start = 0.0

    def __enter__(self) -> _UnitOfWork:
        adapter = self._adapter
        try:
            adapter.breaker.__enter__()
        except BreakerOpen:
            adapter._emit(self._operation, "rejected", 0.0, self._figures, None)
            raise
        self._start = adapter._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        adapter = self._adapter
        duration = adapter._clock() - self._start
        adapter.breaker.__exit__(exc_type, exc, tb)
        if exc is None:
            adapter._emit(self._operation, "success", duration, self._figures, None)
            if adapter.stats.credentials_problem is not None:
                # a transaction worked: the database exists and takes these credentials
                # (it may have been created, or the role granted, after the service started)
                adapter.stats.credentials_problem = None
        elif isinstance(exc, Exception) and not isinstance(exc, BreakerOpen):
            scrubbed = adapter._failed(self._operation, exc, duration, self._figures)
            if scrubbed is not None:
                raise scrubbed from None


def _discard_mode(exc: BaseException) -> str:
    """How to end a failed transaction: ``invalidate`` its connection, or ``rollback``.

    After a dependency failure (or a cancellation) the connection's state is
    unknown: a rollback could hang on a server that stopped answering, so the
    connection is dropped. After a caller error the connection is healthy.
    """
    if isinstance(exc, Exception) and not SQL_ERRORS.counts(exc):
        return "rollback"
    return "invalidate"


class _SQLAdapter(Adapter, Generic[E]):
    """Construction, :meth:`from_url`, classification and figures of both shells; they set
    the hooks (:attr:`_engine_class`, :attr:`_sessionmaker`, :meth:`_created`) and run the
    sessions."""

    kind: ClassVar[str] = "sql"
    errors: ClassVar[ErrorTable] = SQL_ERRORS
    #: ``Engine`` or ``AsyncEngine``: what the constructor accepts.
    _engine_class: ClassVar[type[Any]]
    #: Which class to use for the other engine (the constructor's error names it).
    _other_class: ClassVar[str]
    #: ``sessionmaker`` or ``async_sessionmaker``: builds :attr:`sessions`.
    _sessionmaker: ClassVar[Any]
    #: Whether :meth:`from_url` picks the async drivers (asyncpg, aiosqlite).
    _is_async: ClassVar[bool]

    engine: E
    sessions: Any
    _statement_timeout: Callable[[], float | None] | None = None

    def __init__(
        self,
        engine: E,
        *,
        session_options: Mapping[str, Any] | None = None,
        owns_engine: bool = False,
        **options: Unpack[AdapterOptions],
    ) -> None:
        if not isinstance(engine, self._engine_class):
            raise TypeError(
                f"{type(self).__name__} needs a sqlalchemy {self._engine_class.__name__}, "
                f"got {type(engine).__name__} (use {self._other_class} for "
                f"{'an AsyncEngine' if self._other_class == 'AsyncDatabase' else 'a sync Engine'})"
            )
        sync_engine: Engine = getattr(engine, "sync_engine", engine)
        if options.get("breaker") is None and options.get("config") is None:
            options["config"] = PRESETS["database"]
        options["name"] = options.get("name") or "database"
        options["secrets"] = [sync_engine.url.password, *options.get("secrets", ())]
        super().__init__(**options)
        self.engine = engine
        self.sessions = self._sessionmaker(
            engine, **{"expire_on_commit": False, **(session_options or {})}
        )
        self._sync_engine = sync_engine
        self._owns_engine = owns_engine

    @classmethod
    def from_url(
        cls,
        url: str | URL,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        pool_recycle: float = 1800.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        sqlite_timeout: float = DEFAULT_SQLITE_TIMEOUT,
        sqlite_writer: bool = True,
        hide_parameters: bool = True,
        connect_args: Mapping[str, Any] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Self:
        """An adapter owning a new engine for ``url`` (closed by ``close()`` /
        ``await aclose()``).

        ``postgresql://`` gets psycopg (sync) or asyncpg (async), ``sqlite://`` sqlite3
        or aiosqlite. ``kwargs`` go to the constructor (``name``, ``config``,
        ``registry``, ...); ``connect_args`` and ``engine_options`` override the
        computed driver and engine options. For :class:`AsyncDatabase` a SQLite file
        gets WAL mode and a writer for :meth:`AsyncDatabase.write_session` unless
        ``sqlite_writer=False``, and ``sqlite_timeout`` also bounds the wait for the
        writer (``Database`` has no writer and ignores ``sqlite_writer``).
        """
        parsed = _normalize_url(url, is_async=cls._is_async)

        def options(size: int, overflow: int) -> dict[str, Any]:
            return _engine_options(
                parsed,
                pool_size=size,
                max_overflow=overflow,
                pool_timeout=pool_timeout,
                pool_recycle=pool_recycle,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
                command_timeout=command_timeout,
                sqlite_timeout=sqlite_timeout,
                hide_parameters=hide_parameters,
                connect_args=connect_args,
                engine_options=engine_options,
            )

        return cls._created(
            parsed,
            options(pool_size, max_overflow),
            writer=options(1, 0) if sqlite_writer and _is_file_sqlite(parsed) else None,
            command_timeout=command_timeout,
            sqlite_timeout=sqlite_timeout,
            kwargs=kwargs,
        )

    @classmethod
    def _created(
        cls,
        url: URL,
        options: dict[str, Any],
        *,
        writer: dict[str, Any] | None,
        command_timeout: float | None,
        sqlite_timeout: float,
        kwargs: dict[str, Any],
    ) -> Self:
        """The adapter :meth:`from_url` returns: its engine(s) built with ``options``
        (and ``writer``'s, the SQLite writer's, if the shell has one)."""
        raise NotImplementedError

    def _on_error(self, exc: Exception, rule: ErrorRule) -> None:
        if rule.kind == "auth":
            self.stats.credentials_problem = self.describe(exc)

    def statement_timeout_from(self, seconds: Callable[[], float | None]) -> None:
        """PostgreSQL: every transaction starts with ``SET LOCAL statement_timeout``
        to ``seconds()``, read when it begins (``None``: the connection's own, the
        ``statement_timeout`` of :meth:`from_url`). So the timeout can follow
        something that changes (a degradation level) without a new pool. It costs
        one more statement per transaction; ``LOCAL`` ends with the transaction,
        so a pooled connection never keeps it. The client-side ``command_timeout``
        still applies: a value above it is cut short by it. Not on other databases
        (SQLite has no statement timeout): :class:`ValueError`.

        Calling it again replaces ``seconds``.
        """
        dialect = self._sync_engine.dialect.name
        if dialect != "postgresql":
            raise ValueError(f"statement_timeout_from: PostgreSQL only, this is {dialect}")
        if self._statement_timeout is None:
            event.listen(self._sync_engine, "begin", self._set_statement_timeout)
        self._statement_timeout = seconds

    def _set_statement_timeout(self, conn: Connection) -> None:
        value = self._statement_timeout() if self._statement_timeout is not None else None
        if value is None:
            return
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"statement_timeout_from: seconds() gave {value!r}, not a number of seconds > 0"
            )
        statement = f"SET LOCAL statement_timeout = {max(1, round(value * 1000))}"
        # on the driver's cursor: a statement through ``conn`` would begin again; its
        # error is wrapped as SQLAlchemy wraps the others (the error table reads those)
        dbapi_connection = conn.connection.dbapi_connection
        cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(statement)
        except Exception as exc:
            dialect = conn.dialect
            dbapi_error = dialect.loaded_dbapi.Error
            if not isinstance(exc, dbapi_error):
                raise
            raise sa_exc.DBAPIError.instance(
                statement,
                None,
                exc,
                dbapi_error,
                connection_invalidated=dialect.is_disconnect(exc, dbapi_connection, cursor),
                dialect=dialect,
            ) from exc
        finally:
            cursor.close()

    def extra_figures(self) -> Mapping[str, Any]:
        """Pool use (``pool_in_use`` checked out, ``pool_size``, ``pool_overflow``,
        ``pool_idle``), ``dialect``, ``driver`` and the URL with its password masked."""
        return _pool_figures(self._sync_engine)

    def __repr__(self) -> str:
        url = self._sync_engine.url.render_as_string(hide_password=True)
        return f"<{type(self).__name__} {self.name!r} {url} breaker={self.breaker.state.value}>"


# --------------------------------------------------------------------------- sync

# Deliberate twins, not a hot path: Database and AsyncDatabase repeat the shape of
# _created (the engine factory hook), session, execute and scalar (a def and an async def
# cannot be one function; the async session awaits its commit, rollback and close).
# Everything else, the options, the engines' settings, the classification and the unit of
# work (_UnitOfWork), is written once above. Each call is a database round trip, so
# nothing here is measured for speed.


class Database(_SQLAdapter[Engine], SyncResource):
    """A circuit-broken sync SQLAlchemy engine (psycopg for PostgreSQL, sqlite3 for SQLite).

    Build it with :meth:`from_url` (pool and timeouts set to short, documented
    defaults) or from an existing :class:`~sqlalchemy.engine.Engine` (used as
    configured). The breaker defaults to the ``database`` preset (3 failures,
    30 s open, 1 probe) under the name ``database``.

    >>> db = Database.from_url("sqlite://", name="cache-db")
    >>> with db.session() as s:
    ...     s.execute(text("SELECT 1")).scalar_one()
    1
    >>> db.probe().ok
    True
    >>> db.close()
    """

    _engine_class = Engine
    _other_class = "AsyncDatabase"
    _sessionmaker = sessionmaker
    _is_async = False

    sessions: sessionmaker[Session]

    @classmethod
    def _created(
        cls,
        url: URL,
        options: dict[str, Any],
        *,
        writer: dict[str, Any] | None,
        command_timeout: float | None,
        sqlite_timeout: float,
        kwargs: dict[str, Any],
    ) -> Self:
        engine = create_engine(url, **options)
        _install_command_timeout(engine, command_timeout)
        try:
            return cls(engine, owns_engine=True, **kwargs)
        except BaseException:
            engine.dispose()
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One guarded transaction: commit on success, rollback on error, one breaker outcome.

        Raises :class:`~brownout.BreakerOpen` without touching the database
        while the breaker is open. A caller error raised inside (e.g.
        ``IntegrityError``) rolls back and does not count; a dependency failure
        drops the connection (its state is unknown) and counts once.
        """
        with guarded(self, "session"), _UnitOfWork(self, "session"):
            session = self.sessions()
            try:
                yield session
                session.commit()
            except BaseException as exc:
                _discard(session, exc)
                raise
            finally:
                session.close()

    def execute(
        self, stmt: str | Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        """Run one statement in its own guarded transaction; rows are buffered.

        >>> db = Database.from_url("sqlite://")
        >>> db.execute("SELECT 1 AS one").one().one
        1
        >>> db.close()
        """
        with self.session() as session:
            return session.execute(
                _statement(stmt), params, execution_options={"prebuffer_rows": True}
            )

    def scalar(self, stmt: str | Executable, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (or ``None``), in its own guarded transaction."""
        with self.session() as session:
            return session.scalar(_statement(stmt), params)

    def _probe_once(self) -> None:
        token = _WAIT_LIMIT.set(self.probe_timeout)
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1")).scalar_one()
        finally:
            _WAIT_LIMIT.reset(token)

    def close(self) -> None:
        """Dispose of the engine's pool if this adapter created the engine."""
        if self._owns_engine:
            self.engine.dispose()


def _discard(session: Session, exc: BaseException) -> None:
    try:
        if _discard_mode(exc) == "rollback":
            session.rollback()
        else:
            session.invalidate()
    except Exception:
        logger.debug("sql adapter: discarding a failed transaction failed", exc_info=True)
        try:
            session.invalidate()
        except Exception:
            logger.debug("sql adapter: invalidating the session failed", exc_info=True)


# --------------------------------------------------------------------------- async


class AsyncDatabase(_SQLAdapter[AsyncEngine], AsyncResource):
    """A circuit-broken :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (asyncpg, aiosqlite).

    The async twin of :class:`Database`: same options, same classification.

    **Writes on a SQLite file.** SQLite lets one connection write at a time; pooled
    connections that all write wait for each other in SQLite's busy handler (it
    sleeps and polls, up to ``sqlite_timeout``: seconds of tail latency under
    load, and ``database is locked`` failures past it). :meth:`from_url` therefore
    gives a SQLite file database a *writer*: one more engine with a single
    connection whose transactions start with ``BEGIN IMMEDIATE``, and puts the
    file in WAL mode (readers and the writer no longer block each other).
    :meth:`write_session` hands the writer to one unit of work at a time, in
    arrival order, through an in-process lock; waiting longer than
    ``sqlite_timeout`` for it raises ``sqlalchemy.exc.TimeoutError`` (counted, as
    a pool timeout). :meth:`session` stays on the pool, for reads. With
    PostgreSQL (or an in-memory SQLite database) :meth:`write_session` is
    :meth:`session`: the pool's connections write concurrently.

    >>> import asyncio
    >>> async def main() -> str:
    ...     async with AsyncDatabase.from_url("sqlite+aiosqlite://") as db:
    ...         async with db.session() as s:
    ...             await s.execute(text("CREATE TABLE t (name TEXT)"))
    ...             await s.execute(text("INSERT INTO t VALUES ('ada')"))
    ...         return await db.scalar("SELECT name FROM t")
    >>> asyncio.run(main())
    'ada'
    """

    _engine_class = AsyncEngine
    _other_class = "Database"
    _sessionmaker = async_sessionmaker
    _is_async = True

    sessions: async_sessionmaker[AsyncSession]

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        session_options: Mapping[str, Any] | None = None,
        owns_engine: bool = False,
        writer: AsyncEngine | None = None,
        writer_wait: float = DEFAULT_SQLITE_TIMEOUT,
        writer_group: int = DEFAULT_WRITER_GROUP,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(
            engine, session_options=session_options, owns_engine=owns_engine, **options
        )
        if writer_wait <= 0:
            raise ValueError(f"writer_wait must be > 0 seconds, got {writer_wait!r}")
        if writer_group < 1:
            raise ValueError(f"writer_group must be >= 1, got {writer_group!r}")
        self._hide_parameters = bool(self._sync_engine.hide_parameters)
        #: The single-connection engine :meth:`write_session` uses (SQLite files), or None.
        self.writer = writer
        self._writer = (
            _SQLiteWriter(
                async_sessionmaker(
                    writer, **{"expire_on_commit": False, **(session_options or {})}
                ),
                writer_wait,
                writer_group,
            )
            if writer is not None
            else None
        )

    @classmethod
    def _created(
        cls,
        url: URL,
        options: dict[str, Any],
        *,
        writer: dict[str, Any] | None,
        command_timeout: float | None,
        sqlite_timeout: float,
        kwargs: dict[str, Any],
    ) -> Self:
        engine = create_async_engine(url, **options)
        writer_engine = None
        try:
            if writer is not None:
                _use_wal(engine.sync_engine)
                # every path of the writer ends its transaction (commit or rollback) before
                # returning the connection: no reset on return (a trip to the thread each)
                writer_engine = create_async_engine(url, **{"pool_reset_on_return": None, **writer})
                _use_wal(writer_engine.sync_engine)
                _begin_immediate(writer_engine.sync_engine)
                kwargs.setdefault("writer_wait", sqlite_timeout)
            return cls(engine, owns_engine=True, writer=writer_engine, **kwargs)
        except BaseException:
            engine.sync_engine.dispose(close=False)
            if writer_engine is not None:
                writer_engine.sync_engine.dispose(close=False)
            raise

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One guarded transaction (``async with db.session() as s:``); see
        :meth:`Database.session`."""
        async with aguarded(self, "session"):
            with _UnitOfWork(self, "session"):
                session = self.sessions()
                try:
                    yield session
                    await session.commit()
                except BaseException as exc:
                    await _adiscard(session, exc)
                    raise
                finally:
                    await session.close()

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """One guarded unit of work that writes: on a SQLite file, on the writer; elsewhere
        the same as :meth:`session`.

        On the writer, units run one at a time in arrival order, each in its own
        savepoint of a transaction (``BEGIN IMMEDIATE``) that the units queued
        together share: it is committed, with one fsync, when no unit is waiting
        any more (or ``writer_group`` units are in it). Leaving the block returns
        once the unit is committed, as with :meth:`session`; a unit that raises is
        rolled back to its savepoint alone (a database failure ends the shared
        transaction: every unit in it gets the error, none was committed).

        The breaker admits the unit first (an open breaker rejects without
        waiting); the wait for the writer and the commit are part of the unit's
        duration. Waiting longer than ``writer_wait`` raises
        ``sqlalchemy.exc.TimeoutError``.
        """
        if self._writer is None:
            async with self.session() as session:
                yield session
            return
        async with aguarded(self, "session"):
            with _UnitOfWork(self, "session"):
                async with self._writer.unit() as session:
                    yield session

    async def run_write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(connection, *args, **kwargs)``, a *synchronous* function on a SQLAlchemy
        :class:`~sqlalchemy.engine.Connection`, as one guarded unit of work that writes;
        its return value.

        On a SQLite file it runs in the writer's thread (the driver's thread, where
        the connection lives) with the standard ``sqlite3`` module, instead of one
        round trip between the event loop and that thread per driver call (four per
        statement with aiosqlite). The units that arrive while the writer is busy
        wait together as a *batch*, which takes its turn with
        :meth:`write_session`'s units, in arrival order, and runs whole in **one
        trip** to the thread: ``BEGIN IMMEDIATE``, each unit in its own savepoint,
        ``COMMIT`` (at most ``writer_group`` units). It returns once that commit
        returned. Raising inside ``fn`` undoes this unit alone (its savepoint); a
        database failure ends the transaction: every unit in it gets the error,
        the units after it start a new one. Waiting longer than ``writer_wait``
        for its batch to start raises ``sqlalchemy.exc.TimeoutError`` (``fn``
        never runs). ``fn`` runs in another thread: it must not touch the event
        loop, and should only use the connection it is given.

        Elsewhere (PostgreSQL, in-memory SQLite) it is :meth:`session` with
        ``AsyncSession.run_sync``: the same function runs over the async driver.

        >>> def bump(conn: Connection, name: str) -> int:
        ...     conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": name})
        ...     return conn.execute(text("SELECT COUNT(*) FROM t")).scalar_one()
        >>> async def main() -> int:
        ...     async with AsyncDatabase.from_url("sqlite+aiosqlite://") as db:
        ...         await db.execute("CREATE TABLE t (name TEXT)")
        ...         return await db.run_write(bump, "ada")
        >>> asyncio.run(main())
        1
        """
        if self._writer is None:
            async with self.session() as session:
                return await session.run_sync(_on_connection, fn, args, kwargs)
        async with aguarded(self, "session"):
            with _UnitOfWork(self, "session"):
                return await self._writer.call(fn, args, kwargs)

    async def run_read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(connection, *args, **kwargs)``, a *synchronous* function that reads, on a
        pooled connection, as one guarded unit of work; its return value.

        With aiosqlite it runs whole in **one trip** to the pooled connection's
        thread (statements as :meth:`session` runs them on SQLite: each sees the
        data committed when it starts); elsewhere ``AsyncConnection.run_sync`` runs
        it over the async driver. Nothing ``fn`` writes is committed (with
        aiosqlite it is rolled back in the same trip, elsewhere when the connection
        is returned to the pool).

        >>> def names(conn: Connection) -> list[str]:
        ...     return list(conn.execute(text("SELECT name FROM t")).scalars())
        >>> async def main() -> list[str]:
        ...     async with AsyncDatabase.from_url("sqlite+aiosqlite://") as db:
        ...         await db.execute("CREATE TABLE t (name TEXT)")
        ...         await db.execute("INSERT INTO t VALUES ('ada')")
        ...         return await db.run_read(names)
        >>> asyncio.run(main())
        ['ada']
        """
        async with aguarded(self, "session"):
            with _UnitOfWork(self, "session"):
                if self._sync_engine.dialect.driver == "aiosqlite":
                    return await self._read_on_sqlite(fn, args, kwargs)
                async with self.engine.connect() as conn:  # closed: rolled back
                    try:
                        return await conn.run_sync(fn, *args, **kwargs)
                    except BaseException as exc:
                        if _discard_mode(exc) == "invalidate":
                            try:
                                await conn.invalidate()  # its state is unknown: dropped
                            except Exception:
                                logger.debug("sql adapter: invalidating failed", exc_info=True)
                        raise

    async def _read_on_sqlite(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """:meth:`run_read` with aiosqlite: ``fn`` and the rollback that ends what it began,
        in one trip to the pooled connection's thread; the connection then goes back to
        the pool without the pool's own rollback (a second trip) and without the task
        SQLAlchemy's ``async with`` exit starts to close it (three loop iterations)."""
        raw = await self.engine.raw_connection()
        clean = False
        try:
            execute = getattr(raw.driver_connection, "_execute", None)
            if execute is None:  # pragma: no cover - every supported aiosqlite has it
                raise RuntimeError("this aiosqlite has no Connection._execute: upgrade aiosqlite")
            result, clean = await execute(
                _read_in_thread, raw, self._hide_parameters, fn, args, kwargs
            )
            if not clean:  # the rollback failed: its state is not known
                await greenlet_spawn(raw.invalidate)
            return cast("T", result)
        except BaseException as exc:
            if _discard_mode(exc) == "invalidate" and isinstance(exc, Exception):
                try:
                    await greenlet_spawn(raw.invalidate)  # its state is unknown: dropped
                except Exception:
                    logger.debug("sql adapter: invalidating failed", exc_info=True)
            raise
        finally:
            close_special = getattr(raw, "_close_special", None)
            if clean and close_special is not None:
                # rolled back in the thread: no reset. Awaits nothing when the pool keeps
                # the connection; an overflow connection is closed (a trip to its thread)
                await greenlet_spawn(close_special, transaction_reset=True)
            else:
                # the pool's reset (a rollback, behind the function if it still runs in
                # the thread: cancelled), finished even if this task is cancelled again
                await asyncio.shield(asyncio.ensure_future(greenlet_spawn(raw.close)))

    async def execute(
        self, stmt: str | Executable, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        """Run one statement in its own guarded transaction; rows are buffered."""
        async with self.session() as session:
            return await session.execute(_statement(stmt), params)

    async def scalar(self, stmt: str | Executable, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (or ``None``), in its own guarded transaction."""
        async with self.session() as session:
            return await session.scalar(_statement(stmt), params)

    async def _aprobe_once(self) -> None:
        async with self.engine.connect() as conn:
            (await conn.execute(text("SELECT 1"))).scalar_one()

    def _probe_once(self) -> None:
        raise NotImplementedError("AsyncDatabase has an async probe: await db.aprobe()")

    async def aclose(self) -> None:
        """Dispose of the engine's pool (and the writer's) if this adapter created them."""
        if self._writer is not None:
            await self._writer.aclose()  # batches still returning the writer's connection
        if self._owns_engine:
            await self.engine.dispose()
            if self.writer is not None:
                await self.writer.dispose()

    async def close(self) -> None:
        """Deprecated: ``await aclose()`` (every async resource of brownout closes so)."""
        warnings.warn(
            "AsyncDatabase.close() is deprecated, use 'await db.aclose()'",
            DeprecationWarning,
            stacklevel=2,
        )
        await self.aclose()


class _Group:
    """The writer's open transaction and the units in it waiting for its commit."""

    __slots__ = ("members", "session")

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.members: list[asyncio.Future[None]] = []


class _SQLiteWriter:
    """One SQLite connection's write transactions, shared by the units queued together.

    :meth:`AsyncDatabase.run_write` units that arrive while the writer is busy
    form a *batch*, which takes its turn (FIFO, with :meth:`unit`'s units) and
    runs whole in **one trip** to the writer's thread: ``BEGIN IMMEDIATE``, each
    unit in its own savepoint, ``COMMIT`` (one fsync for the batch). Each unit
    is answered once the commit returned; one that raises is undone alone, to
    its savepoint. The units arriving during that trip form the next batch, so a
    unit waits for at most the batch running when it came and its own.

    Event-loop iterations are what a write waits for on a busy loop (each one is
    everybody's ready work: several ms under load), so the writer spends few: a
    unit that finds the writer free runs its batch in the caller's own task (no
    task to start); a batch's trip is awaited where it runs (no task, no shield);
    the connection is returned without SQLAlchemy's closing task; and the task
    that ran a batch sends the batch waiting right behind it (when the next
    place in line is a batch's) to the thread in the same step, on the
    connection it holds, instead of waking that batch's task to do it.

    A :meth:`unit` (``write_session``) takes the lock (FIFO), runs in a
    savepoint of the open group's transaction, and hands the lock on: to the
    next unit or batch waiting, which continues the same transaction, or, when
    nobody waits (or the group is full), to the group's commit, which answers
    every member at once. The lock waits in-process, never in SQLite's busy
    handler.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], wait: float, max_group: int
    ) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._hide_parameters = bool(self._engine.sync_engine.hide_parameters)
        self._wait = wait
        self._max_group = max_group
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = _Turns()
        self._waiting = 0  # units and batches waiting for the lock
        self._group: _Group | None = None
        self._forming: _Batch | None = None  # the last batch queued, while it takes units
        self._pending: dict[asyncio.Future[None], _Batch] = {}  # batches waiting, by turn
        self._tasks: set[asyncio.Task[None]] = set()
        #: transactions the batches committed, and the units in them (figures for tests)
        self.batch_commits = 0
        self.batch_units = 0

    def _for_loop(self) -> _Turns:
        # its futures belong to one loop: a second asyncio.run starts afresh
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self._waiting, self._group = loop, _Turns(), 0, None
            self._forming, self._pending = None, {}
        return self._lock

    async def _take(self) -> tuple[_Group, _Turns]:
        """Wait for the writer (FIFO, bounded by ``wait``); the open group to join."""
        lock = self._for_loop()
        self._forming = None  # run_write units arriving after this one queue after it
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait):
                await lock.acquire()
        except BaseException as exc:
            self._waiting -= 1
            self._flush_orphan(lock)
            if isinstance(exc, TimeoutError):
                raise sa_exc.TimeoutError(
                    f"the SQLite writer stayed busy for {self._wait:g} s (writes are not finishing)"
                ) from None
            raise
        self._waiting -= 1
        group = self._group
        if group is None:
            group = self._group = _Group(self._sessions())
        return group, lock

    async def call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        """:meth:`AsyncDatabase.run_write` on the writer: in the batch forming (or a new
        one), run in one trip to the writer's thread with the batch's other units."""
        lock = self._for_loop()
        loop = asyncio.get_running_loop()
        unit = _ThreadUnit(fn, args, kwargs, loop.create_future())
        batch = self._forming
        if batch is None or batch.started or len(batch.units) >= self._max_group:
            # its place in line is taken now (FIFO with write_session's units)
            batch = self._forming = _Batch(lock.join())
            self._waiting += 1  # from now: an open group stays open for this batch
            batch.units.append(unit)
            if batch.turn.done() and self._group is None:
                # the writer is free: this caller runs its batch itself, at once (no task
                # to start, a loop iteration each under load)
                done: T = await self._run_now(batch, lock, unit)
                return done
            self._pending[batch.turn] = batch
            self._spawn(self._run_batch(batch, lock))
        else:
            batch.units.append(unit)
        timer = loop.call_later(self._wait, self._expire, batch, unit)
        try:
            result: T = await unit.future
        except asyncio.CancelledError:
            # not started: it leaves its batch; running: the thread undoes it if it has
            # not released it yet (else it stays in the transaction: outcome not known)
            unit.cancelled = True
            if not batch.started and unit in batch.units:
                batch.units.remove(unit)
            raise
        finally:
            timer.cancel()
        return result

    async def _run_now(self, batch: _Batch, lock: _Turns, unit: _ThreadUnit) -> Any:
        """The caller's unit, alone in a batch that took the free writer: run in the
        caller's task. Cancelled while it runs, the unit is undone by the thread if it has
        not been released yet (as a unit in another task's batch)."""
        try:
            await self._run_batch(batch, lock, take_over=False)
        except asyncio.CancelledError:
            unit.cancelled = True
            retrieve(unit.future)  # answered with the interruption: nobody reads it
            raise
        return unit.future.result()

    def _expire(self, batch: _Batch, unit: _ThreadUnit) -> None:
        """``wait`` passed and the unit's batch has not started: it gives up."""
        if batch.started or unit not in batch.units or unit.future.done():
            return
        batch.units.remove(unit)
        unit.future.set_exception(
            sa_exc.TimeoutError(
                f"the SQLite writer stayed busy for {self._wait:g} s (writes are not finishing)"
            )
        )

    async def _run_batch(self, batch: _Batch, lock: _Turns, *, take_over: bool = True) -> None:
        """Wait for the writer's turn, then run the batch's units in one trip: in their own
        transaction, or in the open group's (a ``write_session`` transaction that was
        left open for this batch)."""
        try:
            await batch.turn
        except BaseException as exc:  # cancelled: the loop is closing
            if batch.started:  # taken over by the batch before it: its runner answers it
                raise
            self._pending.pop(batch.turn, None)
            if batch.turn.done() and not batch.turn.cancelled():
                lock.release()  # the turn came as the task was cancelled: pass it on
            self._waiting -= 1
            batch.started = True
            if self._forming is batch:
                self._forming = None
            _settle(batch.units, exc)
            self._flush_orphan(lock)
            raise
        if batch.started:
            return  # run by the batch before it (its runner holds the turn)
        self._start(batch)
        units = [u for u in batch.units if not u.future.done()]
        group = self._group
        if group is not None:
            if units:
                await self._join_group(group, lock, units)
            else:
                self._end_turn(group, lock)
            return
        try:
            if units:
                await self._run_alone(units, lock, take_over)
        finally:
            lock.release()

    def _answered(self, units: list[_ThreadUnit], commits: int) -> None:
        """On the event loop, called from the writer's thread once ``units``' batch ended:
        the figures, and each unit's answer."""
        self.batch_commits += commits
        self.batch_units += sum(1 for u in units if u.committed)
        _settle(units, None)

    def _start(self, batch: _Batch) -> None:
        """``batch`` took the writer: no more units join it."""
        self._pending.pop(batch.turn, None)
        self._waiting -= 1
        batch.started = True
        if self._forming is batch:
            self._forming = None

    def _take_over(self, lock: _Turns) -> _Batch | None:
        """The batch whose turn is next, if the next place in line is a batch's (not a
        write_session unit's): started by the runner holding the writer, which runs it on
        the connection it holds, in the same task (its own task, waking later, ends)."""
        turn = lock.next_waiting()
        batch = self._pending.get(turn) if turn is not None else None
        if batch is None or self._group is not None:
            return None
        lock.skip()  # its place is served: the turn stays with the runner
        self._start(batch)
        return batch

    async def _run_alone(self, units: list[_ThreadUnit], lock: _Turns, take_over: bool) -> None:
        """The batch in a transaction of its own, committed in the same trip; then, with
        ``take_over``, the batches waiting right behind it, each the same way, on the same
        connection. (Not in a caller's task: a caller cancelled would leave the units of
        other callers with an outcome not known.)"""
        # not ``async with``: its exit closes the connection in a task of its own (three
        # loop iterations); with no reset on return (every batch ends its transaction in
        # the thread) closing awaits nothing, so a cancellation cannot cut it short
        try:
            conn = await self._engine.connect()
        except BaseException as exc:
            _settle(units, exc)  # no connection: the batch cannot run
            if not isinstance(exc, Exception):
                raise
            return
        try:
            while units:
                try:
                    raw = await conn.get_raw_connection()
                    # awaited here, not in a task of its own (a loop iteration each); in a
                    # batch's task the thread answers the units itself, not through this
                    # task's wake-up (in a caller's own task it wakes the caller anyway)
                    answer = self._answered if take_over else None
                    commits, broken = await _driver_execute(raw)(
                        _run_batch_and_answer,
                        raw,
                        self._hide_parameters,
                        units,
                        asyncio.get_running_loop(),
                        answer,
                    )
                    if answer is None:
                        self._answered(units, commits)
                    _settle(units, None)  # (if the thread could not: the loop was closing)
                    if broken:
                        await conn.invalidate()  # its transaction state is not known
                        return
                except BaseException as exc:
                    _settle(units, exc)  # the units not answered yet: the trip itself failed
                    if not isinstance(exc, Exception):
                        raise
                    return
                units = []
                while take_over and not units:
                    batch = self._take_over(lock)
                    if batch is None:
                        return
                    units = [u for u in batch.units if not u.future.done()]
        finally:
            await conn.close()

    async def _join_group(self, group: _Group, lock: _Turns, units: list[_ThreadUnit]) -> None:
        """The batch in savepoints of the open group's transaction; its units are answered
        by the group's commit."""
        try:
            conn = await group.session.connection()
            raw = await conn.get_raw_connection()
            lost = await _driver_execute(raw)(
                _run_units_in_thread, raw, self._hide_parameters, units
            )
        except BaseException as exc:
            lost = exc
        if lost is not None:  # a database failure: the group is lost, with the batch
            _settle(units, lost)
            await self._abort(group, lock, lost)
            if not isinstance(lost, Exception):
                raise lost
            return
        loop = asyncio.get_running_loop()
        for unit in units:
            if unit.error is not None or unit.future.done():
                _settle([unit], None)  # undone alone: answered now
                continue
            member = loop.create_future()
            member.add_done_callback(functools.partial(_settle_member, unit))
            group.members.append(member)
        self._end_turn(group, lock)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[AsyncSession]:
        group, lock = await self._take()
        # the first unit of a transaction needs no savepoint (two round trips to the
        # driver's thread saved): undoing it alone is rolling the transaction back
        savepoint = None
        if group.members:
            try:
                savepoint = await group.session.begin_nested()
            except BaseException as exc:
                await self._abort(group, lock, exc)
                raise
        try:
            yield group.session  # the first statement of a transaction: BEGIN IMMEDIATE
        except BaseException as exc:
            if isinstance(exc, Exception) and SQL_ERRORS.counts(exc):
                await self._abort(group, lock, exc)  # a database failure: the group is lost
                raise
            try:
                # the caller's error, or its cancellation (the connection is fine: the
                # driver's thread finishes the statement): undo this unit alone
                if savepoint is not None:
                    await savepoint.rollback()
                else:
                    await group.session.rollback()
            except BaseException as failure:
                await self._abort(group, lock, failure)
                raise exc from None
            self._end_turn(group, lock)
            raise
        if savepoint is not None:
            try:
                await savepoint.commit()  # RELEASE: the unit's work joins the group's
            except BaseException as exc:
                await self._abort(group, lock, exc)
                raise
        done = asyncio.get_running_loop().create_future()
        group.members.append(done)
        self._end_turn(group, lock)
        await asyncio.shield(done)  # the group's commit: raises its error if it failed

    def _end_turn(self, group: _Group, lock: _Turns) -> None:
        """Leave the transaction open for the next unit waiting, or commit it."""
        if self._waiting and len(group.members) < self._max_group:
            lock.release()
            return
        self._group = None
        self._spawn(self._commit(group, lock))

    def _flush_orphan(self, lock: _Turns) -> None:
        """A unit gave up waiting: if it was the last one waiting, the open group has no
        one left to continue it, so it is committed now."""
        if self._group is not None and not self._waiting and not lock.locked():
            self._spawn(self._flush(lock))

    async def _flush(self, lock: _Turns) -> None:
        self._waiting += 1
        try:
            await lock.acquire()
        finally:
            self._waiting -= 1
        group, self._group = self._group, None
        if group is None:
            lock.release()
        else:
            await self._commit(group, lock)

    async def aclose(self) -> None:
        """Wait (at most ``wait``) for the writer's own tasks started on this loop: batches
        and commits still returning the writer's connection."""
        tasks = [t for t in self._tasks if t.get_loop() is asyncio.get_running_loop()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._wait)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit(self, group: _Group, lock: _Turns) -> None:
        error: BaseException | None = None
        try:
            if group.members:
                await group.session.commit()
            else:
                await group.session.rollback()
        except BaseException as exc:
            error = exc
            await _adiscard(group.session, exc)
        finally:
            try:
                await group.session.close()
            finally:
                lock.release()
                _answer(group.members, error)

    async def _abort(self, group: _Group, lock: _Turns, exc: BaseException) -> None:
        """The group's transaction failed: nothing in it is committed; all its units hear."""
        self._group = None
        try:
            await _adiscard(group.session, exc)
            await group.session.close()
        except Exception:
            logger.debug("sql adapter: closing the writer's failed session failed", exc_info=True)
        finally:
            lock.release()
            _answer(group.members, exc)


def _on_connection(
    session: Session, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    return fn(session.connection(), *args, **kwargs)


class _Lent:
    """The writer's ``sqlite3`` connection lent to a sync engine in the writer's thread.

    The transaction belongs to the writer's session (its group): the sync engine's
    commit, rollback and close do nothing to it.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


#: Where a writer connection keeps the sync engine lent its ``sqlite3`` connection.
_LENT_ENGINE = "brownout_lent_engine"


def _lent_engine(raw: Any, hide_parameters: bool) -> Engine:
    """In an aiosqlite connection's thread: a sync engine on its ``sqlite3`` connection
    (built once per connection, kept in the pool record's ``info``)."""
    engine: Engine | None = raw.info.get(_LENT_ENGINE)
    if engine is None:
        lent = _Lent(raw.driver_connection._conn)
        engine = raw.info[_LENT_ENGINE] = create_engine(
            "sqlite://",
            creator=lambda: lent,
            poolclass=StaticPool,
            pool_reset_on_return=None,
            hide_parameters=hide_parameters,
        )
    return engine


def _read_in_thread(
    raw: Any,
    hide_parameters: bool,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[T, bool]:
    """:meth:`AsyncDatabase.run_read` in the pooled connection's thread: ``fn``'s value,
    and whether the connection was left with no transaction (what ``fn`` began is rolled
    back here, as the pool would on its return)."""
    try:
        with _lent_engine(raw, hide_parameters).connect() as conn:
            result = fn(conn, *args, **kwargs)
    except BaseException:
        _rollback_quietly(raw.driver_connection._conn)
        raise
    return result, _rollback_quietly(raw.driver_connection._conn)


class _ThreadUnit:
    """One :meth:`AsyncDatabase.run_write` unit; run in the writer's thread, answered on
    the event loop."""

    __slots__ = ("args", "cancelled", "committed", "error", "fn", "future", "kwargs", "result")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: asyncio.Future[Any],
    ) -> None:
        self.fn, self.args, self.kwargs, self.future = fn, args, kwargs, future
        self.cancelled = False  # set from the event loop when the caller is cancelled
        self.committed = False  # set in the thread once its transaction committed
        self.result: Any = None
        self.error: BaseException | None = None  # the unit's own, or its transaction's

    def run(self, dbapi: sqlite3.Connection, engine: Engine) -> BaseException | None:
        """In the writer's thread, in a savepoint of the open transaction. Returns the
        failure that lost the transaction (the unit's error counted as a database
        failure), or None (the unit released, or undone alone for an error of its own)."""
        try:
            dbapi.execute("SAVEPOINT brownout_unit")
            with engine.connect() as conn:
                result = self.fn(conn, *self.args, **self.kwargs)
            if self.cancelled:
                raise asyncio.CancelledError
        except BaseException as exc:
            self.error = exc
            if isinstance(exc, Exception) and SQL_ERRORS.counts(exc):
                return exc
            try:
                dbapi.execute("ROLLBACK TO brownout_unit")
                dbapi.execute("RELEASE brownout_unit")
            except Exception as undo:
                return undo
            return None
        try:
            dbapi.execute("RELEASE brownout_unit")
        except Exception as exc:
            self.error = exc
            return exc
        self.result = result
        return None


class _Batch:
    """The :meth:`AsyncDatabase.run_write` units waiting together for the writer."""

    __slots__ = ("started", "turn", "units")

    def __init__(self, turn: asyncio.Future[None]) -> None:
        self.turn = turn  # its place in the writer's line
        self.units: list[_ThreadUnit] = []
        self.started = False  # it took the writer: no more units join it


class _Turns:
    """A FIFO lock (as :class:`asyncio.Lock`) whose place in line can be taken without
    awaiting (:meth:`join`): a batch queues when its first unit arrives, not when the
    task that runs it first gets to run."""

    __slots__ = ("_held", "_line")

    def __init__(self) -> None:
        self._held = False
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._held

    def join(self) -> asyncio.Future[None]:
        """A place in line: a future done when it is this place's turn."""
        turn = asyncio.get_running_loop().create_future()
        if self._held:
            self._line.append(turn)
        else:
            self._held = True
            turn.set_result(None)
        return turn

    async def wait(self, turn: asyncio.Future[None]) -> None:
        """Wait for ``turn`` (from :meth:`join`); cancelled, the place is given up."""
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the turn came as the waiter was cancelled: pass it on
            raise

    async def acquire(self) -> None:
        await self.wait(self.join())

    def next_waiting(self) -> asyncio.Future[None] | None:
        """The next place in line still waiting (places given up are dropped)."""
        while self._line and self._line[0].done():
            self._line.popleft()
        return self._line[0] if self._line else None

    def skip(self) -> None:
        """The holder serves the next place itself: it leaves the line (told so), and the
        lock stays held."""
        turn = self.next_waiting()
        if turn is not None:
            self._line.popleft()
            turn.set_result(None)

    def release(self) -> None:
        """The turn ends: the next place in line (still waiting) gets it."""
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._held = False


def _driver_execute(raw: Any) -> Callable[..., Any]:
    """aiosqlite's way to run a function in its connection's thread."""
    execute = getattr(raw.driver_connection, "_execute", None)
    if execute is None:  # pragma: no cover - every supported aiosqlite has it
        raise RuntimeError("this aiosqlite has no Connection._execute: upgrade aiosqlite")
    return cast("Callable[..., Any]", execute)


def _rollback_quietly(dbapi: sqlite3.Connection) -> bool:
    """Roll the transaction back if one is open; False if that failed (the connection's
    state is not known)."""
    try:
        if dbapi.in_transaction:
            dbapi.execute("ROLLBACK")
    except Exception:
        logger.debug("sql adapter: rolling back in the driver's thread failed", exc_info=True)
        return False
    return True


def _run_batch_in_thread(
    raw: Any, hide_parameters: bool, units: list[_ThreadUnit]
) -> tuple[int, bool]:
    """In the writer's thread: ``units`` in a transaction of their own, committed.

    A unit whose error is a database failure loses its transaction: every unit in it
    gets that error (none of them is committed) and the units after it start a new
    transaction. Returns the transactions committed, and whether the connection's
    state is not known afterwards (a rollback failed).
    """
    dbapi: sqlite3.Connection = raw.driver_connection._conn
    engine = _lent_engine(raw, hide_parameters)
    todo = list(units)
    commits = 0
    while todo:
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            for unit in todo:
                unit.error = exc
            return commits, not _rollback_quietly(dbapi)
        members: list[_ThreadUnit] = []
        lost: BaseException | None = None
        while todo and lost is None:
            unit = todo.pop(0)
            if unit.cancelled:  # its caller left before its turn: not run
                continue
            members.append(unit)
            lost = unit.run(dbapi, engine)
        if lost is None:
            try:
                dbapi.execute("COMMIT")
            except Exception as exc:
                lost = exc
            else:
                commits += 1
                for unit in members:
                    unit.committed = unit.error is None
                continue
        for unit in members:
            if unit.error is None:
                unit.error, unit.result = lost, None
        if not _rollback_quietly(dbapi):
            for unit in todo:
                unit.error = lost
            return commits, True
    return commits, False


def _run_batch_and_answer(
    raw: Any,
    hide_parameters: bool,
    units: list[_ThreadUnit],
    loop: asyncio.AbstractEventLoop,
    answer: Callable[[list[_ThreadUnit], int], None] | None,
) -> tuple[int, bool]:
    """In the writer's thread: :func:`_run_batch_in_thread`, then ``answer`` (if given)
    scheduled on the loop directly: through the driver's future the units' answers take
    one more loop iteration (the future's result, then the waiting task's wake-up, which
    answers them)."""
    commits, broken = _run_batch_in_thread(raw, hide_parameters, units)
    if answer is not None:
        try:
            loop.call_soon_threadsafe(answer, units, commits)
        except RuntimeError:  # the loop is closed: nobody is waiting for the answers
            logger.debug("sql adapter: the writer's batch ended after its loop closed")
    return commits, broken


def _run_units_in_thread(
    raw: Any, hide_parameters: bool, units: list[_ThreadUnit]
) -> BaseException | None:
    """In the writer's thread: ``units`` in savepoints of the open transaction (not
    committed here); the failure that lost the transaction, if one did."""
    dbapi: sqlite3.Connection = raw.driver_connection._conn
    engine = _lent_engine(raw, hide_parameters)
    for unit in units:
        if unit.cancelled:
            continue
        lost = unit.run(dbapi, engine)
        if lost is not None:
            return lost
    return None


def _settle(units: list[_ThreadUnit], error: BaseException | None) -> None:
    """Answer the units not answered yet: ``error`` (the trip failed) if given, else each
    unit's own outcome."""
    for unit in units:
        if unit.future.done():
            continue
        failure = error if error is not None else unit.error
        if failure is None:
            unit.future.set_result(unit.result)
            continue
        if not isinstance(failure, Exception):  # interrupted: the outcome is not known
            failure = sa_exc.DisconnectionError(
                f"the SQLite writer's batch was interrupted ({type(failure).__name__}): "
                "whether this unit was committed is not known"
            )
        unit.future.set_exception(failure)


def _settle_member(unit: _ThreadUnit, member: asyncio.Future[None]) -> None:
    """The group's commit answered ``member``: answer ``unit`` the same way."""
    if unit.future.done():
        return
    error = member.exception()
    if error is not None:
        unit.future.set_exception(error)
    else:
        unit.future.set_result(unit.result)


def _answer(members: list[asyncio.Future[None]], error: BaseException | None) -> None:
    if error is not None and not isinstance(error, Exception):  # the commit was cancelled
        error = sa_exc.DisconnectionError(
            f"the SQLite writer's commit was interrupted ({type(error).__name__}): "
            "whether this unit was committed is not known"
        )
    for member in members:
        if member.done():  # its unit was cancelled while it waited
            continue
        if error is None:
            member.set_result(None)
        else:
            member.set_exception(error)
            member.exception()  # retrieved: a member cancelled meanwhile logs nothing


async def _adiscard(session: AsyncSession, exc: BaseException) -> None:
    try:
        if _discard_mode(exc) == "rollback":
            await session.rollback()
        else:
            await session.invalidate()
    except Exception:
        logger.debug("sql adapter: discarding a failed transaction failed", exc_info=True)
        try:
            await session.invalidate()
        except Exception:
            logger.debug("sql adapter: invalidating the session failed", exc_info=True)
