"""Re-exports :mod:`brownout.testing.servers.postgres` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.postgres import (
    SUPERUSER,
    TEMPLATE,
    PostgresServer,
    _chown_tree,
    _os_user,
    _Template,
    _user_kwargs,
    find_pg_bin,
    postgres_unavailable,
)

__all__ = [
    "SUPERUSER",
    "TEMPLATE",
    "PostgresServer",
    "_Template",
    "_chown_tree",
    "_os_user",
    "_user_kwargs",
    "find_pg_bin",
    "postgres_unavailable",
]
