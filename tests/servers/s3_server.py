"""Re-exports :mod:`brownout.testing.servers.s3` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_unavailable

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "S3Server", "s3_unavailable"]
