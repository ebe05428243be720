"""Invoice files kept in S3 or the local spool (:class:`InvoiceFiles`); an upload is
read and checked before by :mod:`inventario.invoice_upload`.

A file goes to S3 through the S3 adapter when it can, else into the spool
(``brownout.spool``), which the runtime's ``SpoolUploader`` drains into S3 later;
downloads look in the spool first. Object keys come from the invoice id only, never
from the file name.

Which bucket a file goes to: with S3 configured, the configured bucket at the
time of the upload (recorded with the invoice, also when the file is spooled
during an outage). Without S3, no bucket is chosen yet: the invoice records
:data:`UNBOUND` and the file is spooled for "the configured bucket", so it goes
to whatever bucket S3 is configured with when it is finally uploaded. An
operator can send spooled files elsewhere (``inventario spool retarget``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Literal

from brownout import BreakerOpen
from brownout.overload import Overloaded
from brownout.spool import Spool, SpoolCorrupted, SpoolError, SpoolFull, SpoolUploader
from inventario.deps import DependencyUnavailable, try_again
from inventario.invoice_upload import ALLOWED_TYPES, FileProblem, Upload
from inventario.spool_health import LOCAL_BUCKET, UNBOUND

if TYPE_CHECKING:  # the s3 extra
    from brownout.s3 import AsyncS3Adapter

__all__ = [
    "LOCAL_BUCKET",
    "UNBOUND",
    "InvoiceFiles",
    "object_key",
]

logger = logging.getLogger("inventario")


def object_key(invoice_id: str, content_type: str) -> str:
    """The S3 key of an invoice's file: from its id (and type) only."""
    if not re.fullmatch(r"[0-9a-f]{32}", invoice_id):
        raise ValueError(f"not an invoice id: {invoice_id!r}")
    return f"invoices/{invoice_id[:2]}/{invoice_id}.{ALLOWED_TYPES[content_type]}"


Storage = Literal["s3", "spool"]


class InvoiceFiles:
    """Where invoice files live: S3 through the adapter, else the spool."""

    def __init__(
        self,
        spool: Spool,
        s3: AsyncS3Adapter | None = None,
        uploader: SpoolUploader | None = None,
    ) -> None:
        self.spool = spool
        self.s3 = s3
        self.uploader = uploader  # with s3 only

    @property
    def bucket(self) -> str:
        """What a new invoice records: the configured bucket, or :data:`UNBOUND`."""
        return str(self.s3.bucket) if self.s3 is not None else UNBOUND

    @staticmethod
    def destination(bucket: str, recorded: str = "spool") -> str | None:
        """The spool's and the S3 adapter's bucket for an invoice's recorded ``bucket``:
        ``None`` (the configured one) for :data:`UNBOUND`, and for an older release's
        :data:`LOCAL_BUCKET` on a file that was spooled (S3 was not configured then)."""
        if bucket == UNBOUND or (bucket == LOCAL_BUCKET and recorded == "spool"):
            return None
        return bucket

    async def store(self, key: str, upload: Upload, invoice_id: str) -> Storage:
        """Put the file in S3, or in the spool if S3 is missing, rejecting or failing.

        Raises :class:`FileProblem`: 507 when the spool is full or cannot be
        written, 502 when S3 refused the object for a reason that is not an
        outage (no such bucket, access denied). Nothing is stored then.
        """
        metadata = {"invoice-id": invoice_id}
        bucket = self.destination(self.bucket)
        try:
            if self.uploader is not None:
                outcome = await self.uploader.upload(
                    bucket,
                    key,
                    upload.data,
                    content_type=upload.content_type,
                    metadata=metadata,
                )
                return "s3" if outcome == "uploaded" else "spool"
            await asyncio.to_thread(
                self.spool.put, bucket, key, upload.data, upload.content_type, metadata
            )
            return "spool"
        except SpoolFull as exc:
            raise FileProblem(
                507,
                "spool_full",
                "S3 is unavailable and the local spool is full (SPOOL_MAX_BYTES): the invoice "
                f"was not stored; retry later ({exc})",
                retry_after=round(exc.retry_after),
            ) from None
        except SpoolError as exc:
            raise FileProblem(
                507,
                "spool_unavailable",
                f"the invoice file could not be written to the local spool ({exc}): nothing "
                "was stored; try again later",
            ) from None
        except BreakerOpen:  # pragma: no cover - the uploader spools on an open breaker
            raise
        except Exception as exc:
            why = self.s3.describe(exc) if self.s3 is not None else repr(exc)
            logger.warning("invoice file %s refused by S3: %s", key, why)
            raise FileProblem(
                502,
                "storage_failed",
                f"S3 refused the invoice file ({why}): nothing was stored; check S3_BUCKET "
                "and that the S3 credentials may write to it",
            ) from None

    def where(self, bucket: str, key: str, recorded: str) -> Storage:
        """Where the file is now: ``spool`` while spooled, else ``s3`` once drained."""
        if self.spool.entry(self.destination(bucket, recorded), key) is not None:
            return "spool"
        if recorded == "spool" and self.s3 is None:
            return "spool"  # no S3 to drain into; only a quarantined entry gets here
        return "s3"

    async def fetch(self, bucket: str, key: str, recorded: str = "s3") -> tuple[bytes, Storage]:
        """The file's bytes: from the spool while it is there, else from S3.

        ``bucket`` and ``recorded`` are what the invoice recorded (see
        :meth:`destination`). ``BreakerOpen`` and S3 outages propagate (the app
        answers 503); a file that is nowhere raises :class:`FileProblem` 404, a
        damaged one 500.
        """
        where = self.destination(bucket, recorded)
        try:
            data = await asyncio.to_thread(self.spool.get, where, key)
        except SpoolCorrupted as exc:
            logger.error("invoice file %s/%s: %s", bucket, key, exc)
            raise FileProblem(
                500,
                "file_corrupted",
                "the invoice's stored file is damaged (it was quarantined on the server and "
                "will not be uploaded to S3): upload the invoice again",
            ) from None
        if data is not None:
            return data, "spool"
        if self.s3 is None:
            raise FileProblem(
                404, "file_missing", "the invoice's file is not in the spool and S3 is not set up"
            )
        try:
            data = await self.s3.download(key, bucket=where)
        except (BreakerOpen, Overloaded):  # the app's handlers answer 503 (dependency_busy)
            raise
        except Exception as exc:
            if self.s3.errors.counts(exc):
                wait = self.s3.breaker.snapshot().retry_after or 5.0
                raise DependencyUnavailable(
                    "s3", f"S3 is unavailable ({self.s3.describe(exc)}): {try_again(wait)}", wait
                ) from None
            raise FileProblem(
                404, "file_missing", f"S3 does not have the file: {self.s3.describe(exc)}"
            ) from None
        return bytes(data), "s3"

    async def discard(self, bucket: str, key: str, storage: Storage) -> None:
        """Best effort removal of a file whose invoice could not be recorded."""
        where = self.destination(bucket, storage)
        try:
            entry = self.spool.entry(where, key)
            if entry is not None:
                await asyncio.to_thread(self.spool.remove, entry)
            elif storage == "s3" and self.s3 is not None:
                await self.s3.delete(key, bucket=where)
        except Exception as exc:  # an orphan file is harmless: no invoice names its key
            logger.warning("invoice file %s/%s could not be removed: %r", bucket, key, exc)
