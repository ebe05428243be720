"""Plumbing shared by the durable SQLite journals (the outbox, cache coherence).

Each journal is one SQLite file in WAL mode with ``synchronous=FULL`` (a commit
is fsynced before it returns), used through one connection shared by threads
under the journal's own lock. The journals keep their own error types and
messages: these helpers raise only ``sqlite3`` errors, or report what they
found for the caller to word.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

#: Size of a SQLite write-ahead log's header: a log this long or shorter holds no frame.
WAL_HEADER = 32


@dataclass(frozen=True, slots=True)
class OrphanedLog:
    """A write-ahead log holding frames next to a missing or empty journal."""

    wal: Path
    wal_size: int
    missing: bool  # the journal file is missing (else it is empty)


def orphaned_log(path: Path) -> OrphanedLog | None:
    """The write-ahead log of ``path`` if it holds frames while the journal is missing or empty.

    SQLite would open that journal as a new, empty database and delete the log,
    and with it everything committed since the last checkpoint. A journal
    never leaves that state behind (its first commit writes the file's first
    page before the log has any frame): it was deleted, truncated or copied
    without its ``-wal``. The caller refuses to open it; nothing is touched.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        wal_size = wal.stat().st_size
    except OSError:
        return None
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    if wal_size > WAL_HEADER and not size:
        return OrphanedLog(wal, wal_size, missing=size is None)
    return None


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), shared by threads."""
    return sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)


def make_durable(db: sqlite3.Connection, schema: str) -> None:
    """WAL with fsynced commits, then the schema (``CREATE ... IF NOT EXISTS``)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)


def integrity_problem(db: sqlite3.Connection) -> str | None:
    """``None`` if ``PRAGMA quick_check`` passes, else what it returned."""
    check = db.execute("PRAGMA quick_check").fetchone()
    return None if check is not None and check[0] == "ok" else str(check)


def error_code(exc: sqlite3.Error) -> str | None:
    """SQLite's name for the error (``SQLITE_FULL``...), where Python gives it."""
    return getattr(exc, "sqlite_errorname", None)


def is_corruption(exc: sqlite3.Error) -> bool:
    """The file is damaged or not a database (as opposed to locked, full, unwritable...)."""
    return (error_code(exc) or "").startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def failure_detail(exc: sqlite3.Error) -> str:
    """The error's text with SQLite's code, and a hint when the disk looks full: the
    middle of every journal's "<journal> <path>: <what> failed: ..." message."""
    text = str(exc)
    code = error_code(exc)
    detail = f"{text} [{code}]" if code else text
    if "full" in text or "disk" in text or code in ("SQLITE_FULL", "SQLITE_IOERR_WRITE"):
        detail += " (disk full, or a file size limit?)"
    return detail


@contextmanager
def write(
    db: sqlite3.Connection, fail: Callable[[sqlite3.Error], BaseException]
) -> Iterator[sqlite3.Connection]:
    """:func:`immediate`, with a ``sqlite3`` error raised as ``fail(exc)`` (from it): the
    write transaction of every journal, each wording its own errors."""
    try:
        with immediate(db) as tx:
            yield tx
    except sqlite3.Error as exc:
        raise fail(exc) from exc


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction (``BEGIN IMMEDIATE``), committed if the block returns.

    On any exception it is rolled back, unless SQLite already did (e.g. on
    ``SQLITE_FULL``), and the exception propagates.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
