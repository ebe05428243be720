"""Re-exports :mod:`brownout.testing.servers.postgres` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.postgres import (
    SUPERUSER,
    TEMPLATE,
    PostgresServer,
    find_pg_bin,
    postgres_unavailable,
)

__all__ = ["SUPERUSER", "TEMPLATE", "PostgresServer", "find_pg_bin", "postgres_unavailable"]
