"""The spool as inventario runs it: S3's problem, the status card's figures, and invoices
bound to the bucket their file finally went to.

No routes here (the runtime builds these before any route exists).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import update

from brownout.health import DegradationManager
from brownout.spool import JournalEvent, Spool, SpoolError
from inventario.db import invoices

__all__ = [
    "LOCAL_BUCKET",
    "UNBOUND",
    "InvoiceBinder",
    "SpoolHealth",
    "adopt_local_bucket",
    "spool_backlog",
]

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

    def on_event(self, event: JournalEvent) -> None:
        self.refresh()


class InvoiceBinder:
    """Records the bucket a file spooled for "the configured bucket" was uploaded to.

    A spool listener: on ``uploaded`` of an entry without a bucket it sets the
    invoice's bucket to the one the file went to (and its recorded storage to
    ``s3``), so a later change of ``S3_BUCKET`` does not send its downloads to a
    bucket that never had it. Best effort, in a task on the running loop: if the
    database cannot take it now, the invoice keeps :data:`UNBOUND` ("the configured
    bucket"), which is right until the configuration changes again (logged).
    """

    def __init__(self, db: Any) -> None:
        self.db = db  # brownout.sql.AsyncDatabase
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: JournalEvent) -> None:
        if event.kind != "uploaded" or event.get("bucket") is not None:
            return
        key, destination = event.get("key"), event.get("destination")
        if not isinstance(key, str) or not isinstance(destination, str) or not destination:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # uploaded outside the service's loop: nothing to record in
            return
        task = loop.create_task(self.bind(key, destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def bind(self, key: str, bucket: str) -> None:
        """Set the bucket of the invoice whose file ``key`` went to ``bucket``."""
        try:
            async with self.db.write_session() as s:  # SQLite: the writer, in turn
                await s.execute(
                    update(invoices)
                    .where(
                        invoices.c.object_key == key,
                        invoices.c.storage == "spool",
                        invoices.c.bucket.in_([UNBOUND, LOCAL_BUCKET]),
                    )
                    .values(bucket=bucket, storage="s3")
                )
        except Exception as exc:
            logger.warning(
                "invoice file %s went to bucket %r, but its invoice could not record it (%s): "
                "it is looked for in the configured bucket",
                key,
                bucket,
                type(exc).__name__,
            )

    async def wait(self) -> None:
        """Let the recordings started so far finish (at stop, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


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
