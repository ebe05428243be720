"""The spool's health as inventario shows it: S3's problem, the status card's figures.

Stdlib and brownout only (the runtime builds these before any route exists).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from brownout.health import DegradationManager
from brownout.spool import Spool, SpoolError

__all__ = ["LOCAL_BUCKET", "UNBOUND", "SpoolHealth", "adopt_local_bucket", "spool_backlog"]

logger = logging.getLogger("inventario")

#: What an invoice records as its bucket when none was chosen (S3 not configured at upload):
#: "the bucket configured when the file is uploaded". Not a valid bucket name.
UNBOUND = ""
#: Older releases spooled such files under this name (and recorded it): read as UNBOUND.
LOCAL_BUCKET = "inventario-invoices"


class SpoolHealth:
    """Keeps S3's reported problem in step with the spool's failed entries.

    A spool listener (every spool event re-checks) and :meth:`refresh` at start:
    while entries are failed, S3 is "degraded" on ``/health`` with the count and
    the most common reason; none failed clears it. Without S3 (``manager`` None)
    nothing is reported: there is no uploader to fail.
    """

    SOURCE = "spool"

    def __init__(self, spool: Spool, manager: DegradationManager | None) -> None:
        self.spool = spool
        self.manager = manager

    def problem(self) -> str | None:
        """The text shown on S3's component, or ``None`` when nothing failed."""
        failed = self.spool.failed()
        if not failed:
            return None
        stats = self.spool.stats()
        top = stats["failures"][0] if stats["failures"] else {"reason": failed[0].failed}
        n = len(failed)
        return (
            f"{n} spooled upload{'s' if n != 1 else ''} refused for good ({top['reason']}): "
            "retry, retarget or discard (inventario spool list)"
        )

    def refresh(self) -> None:
        if self.manager is None:
            return
        try:
            self.manager.set_problem("s3", self.SOURCE, self.problem())
        except Exception:  # the health view must never break an upload
            logger.exception("spool health: reporting to the manager failed")

    def on_event(self, event: str, fields: Mapping[str, Any]) -> None:
        self.refresh()


def adopt_local_bucket(spool: Spool) -> int:
    """Entries an older release spooled under :data:`LOCAL_BUCKET` (S3 not configured)
    are for "the configured bucket" now (``None``); how many were moved."""
    moved = 0
    for entry in spool.entries():
        if entry.bucket != LOCAL_BUCKET:
            continue
        try:
            spool.retarget(entry, None)
            moved += 1
        except (KeyError, SpoolError) as exc:
            logger.warning("spool: %s kept for %s: %s", entry.key, LOCAL_BUCKET, exc)
    if moved:
        logger.info("spool: %d entries spooled without S3 now go to the configured bucket", moved)
    return moved


def spool_backlog(spool: Spool, s3_bucket: str | None) -> dict[str, Any]:
    """The spool's figures for ``/status`` and ``/about``: :meth:`Spool.stats` plus where
    the files go (``s3_configured``, ``s3_bucket``)."""
    stats = spool.stats()
    stats["s3_configured"] = s3_bucket is not None
    stats["s3_bucket"] = s3_bucket
    return stats
