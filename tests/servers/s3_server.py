"""``S3Server`` for tests/spool/test_spool_s3.py only, until it imports
:mod:`brownout.testing.servers` directly like every other test (then delete this file)."""

from __future__ import annotations

from brownout.testing.servers.s3 import S3Server

__all__ = ["S3Server"]
