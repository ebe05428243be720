"""Draining the spool into S3: upload, verify with HEAD, then delete the local copy."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from brownout._drain import DrainLoop
from brownout._errors import VerificationFailed
from brownout._outage import default_is_outage
from brownout._redact import redact
from brownout.spool._store import SHA256_METADATA, Spool, SpoolCorrupted, SpoolEntry

__all__ = ["DrainReport", "SpoolUploader", "VerificationFailed"]

logger = logging.getLogger("brownout.spool")

#: Error kinds (of the adapter's error table) that mean "this destination refuses the
#: entry for good": retrying the same upload cannot help, an operator has to act.
PERMANENT_KINDS = frozenset({"auth", "not_found", "caller"})


def _default_is_permanent(adapter: Any) -> Callable[[BaseException], bool]:
    """By the adapter's error table: a :data:`PERMANENT_KINDS` error; never for an object
    without one (a fake): its errors only count attempts."""
    errors = getattr(adapter, "errors", None)

    def is_permanent(exc: BaseException) -> bool:
        if errors is None:
            return False
        kind = getattr(exc, "kind", None)  # a DependencyError re-raised without a secret
        if not isinstance(kind, str):
            kind = errors.classify(exc).kind
        return kind in PERMANENT_KINDS

    return is_permanent


@dataclass
class DrainReport:
    """What one :meth:`SpoolUploader.drain` did."""

    uploaded: int = 0
    bytes: int = 0
    failed: int = 0  # caller errors or verification failures (kept)
    gave_up: int = 0  # of those, entries now marked failed (they wait for an operator)
    quarantined: int = 0  # corrupted entries moved aside (never uploaded)
    skipped: int = 0  # entries marked failed before this drain, waiting for an operator
    stopped: str | None = None  # why it stopped early: S3 is failing
    busy: bool = False  # not tried: another process was uploading (see DrainLoop.share)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class SpoolUploader(DrainLoop):
    """Uploads the spool's entries to S3 through an S3 adapter, oldest first.

    ``s3`` is an :class:`~brownout.s3.AsyncS3Adapter`, or an
    :class:`~brownout.s3.S3Adapter` (its calls run in a worker thread). Each
    entry is uploaded with its content type and metadata plus
    ``x-amz-meta-sha256``, then checked with HEAD (size, the sha256 metadata,
    and the ETag against the payload's MD5 when the ETag is a single-part MD5),
    and only then deleted locally. A crash between the upload and the local
    delete re-uploads the same bytes to the same key next time: idempotent.

    An entry spooled with ``bucket=None`` goes to the adapter's own bucket (the
    one configured when it is uploaded).

    An error that counts against S3 (connection refused, timeout, 5xx) or a
    rejected call (``BreakerOpen``) stops the drain: everything left stays
    spooled. An error that says the destination refuses the entry for good
    (``is_permanent``; by default the adapter's ``auth``, ``not_found`` and
    ``caller`` kinds: no such bucket, access denied, invalid request) marks the
    entry failed at once, with the reason. Any other error or a failed
    verification is counted on the entry (``attempts``, ``last_error``), and
    after ``max_attempts`` it is marked failed too. The drain goes on with the
    next entry. A failed entry is kept, never dropped, and not tried again until
    an operator calls :meth:`Spool.reset_attempts`, :meth:`Spool.retarget` or
    :meth:`Spool.discard` (then :meth:`wake`).

    Up to ``concurrency`` entries (default 4) are uploaded at once, started oldest
    first: a drain of many small files is bound by the round trips, not by one.
    """

    def __init__(
        self,
        spool: Spool,
        s3: Any,
        *,
        heartbeat: float = 5.0,
        max_attempts: int = 5,
        is_outage: Callable[[BaseException], bool] | None = None,
        is_permanent: Callable[[BaseException], bool] | None = None,
        concurrency: int = 4,
    ) -> None:
        super().__init__(heartbeat)
        if max_attempts < 1:
            raise ValueError(f"SpoolUploader.max_attempts must be >= 1, got {max_attempts!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"SpoolUploader.concurrency must be an int >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.spool = spool
        self.s3 = s3
        self.max_attempts = max_attempts
        self._async = inspect.iscoroutinefunction(getattr(s3, "upload", None))
        self._is_outage = is_outage or default_is_outage(s3)
        self._is_permanent = is_permanent or _default_is_permanent(s3)
        self.last_report: DrainReport | None = None

    # ------------------------------------------------------------------ S3 calls

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.s3, name)
        if self._async:
            return await method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    # ------------------------------------------------------------------ app helpers

    @property
    def bucket(self) -> str | None:
        """The adapter's own bucket: where entries spooled with ``bucket=None`` go."""
        bucket = getattr(self.s3, "bucket", None)
        return bucket if isinstance(bucket, str) else None

    def _where(self, entry: SpoolEntry) -> str:
        return entry.bucket if entry.bucket is not None else str(self.bucket)

    async def upload(
        self,
        bucket: str | None,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Upload now, or spool if S3 is failing; returns ``"uploaded"`` or ``"spooled"``.

        If an older version of the key is still spooled, the new one is spooled
        too (replacing it), so a later drain cannot overwrite it with the older
        bytes; the drain is woken. Caller errors (no such bucket...) are raised.
        """
        if self.spool.entry(bucket, key) is None:
            try:
                await self._call(
                    "upload",
                    key,
                    data,
                    content_type=content_type,
                    metadata=metadata,
                    bucket=bucket,
                )
                return "uploaded"
            except Exception as exc:
                if not self._is_outage(exc):
                    raise
        await asyncio.to_thread(self.spool.put, bucket, key, data, content_type, metadata)
        self.wake()
        return "spooled"

    async def download(self, bucket: str | None, key: str) -> bytes:
        """The spooled bytes if the key is still spooled, else S3's object."""
        data = await asyncio.to_thread(self.spool.get, bucket, key)
        if data is not None:
            return data
        result: bytes = await self._call("download", key, bucket=bucket)
        return result

    # ------------------------------------------------------------------ draining

    async def _verify(self, entry: SpoolEntry, etag: str | None) -> None:
        info = await self._call("head", entry.key, bucket=entry.bucket)
        if info.size != entry.size:
            raise VerificationFailed(f"S3 holds {info.size} bytes, {entry.size} were uploaded")
        remote_sha = info.metadata.get(SHA256_METADATA)
        if remote_sha is not None and remote_sha != entry.sha256:
            raise VerificationFailed(
                f"S3's x-amz-meta-sha256 is {remote_sha[:12]}..., expected {entry.sha256[:12]}..."
            )
        for tag in (etag, info.etag):
            if tag and "-" not in tag and len(tag) == 32 and tag.lower() != entry.md5:
                raise VerificationFailed(f"S3's ETag {tag} is not the payload's MD5 {entry.md5}")

    async def _upload_entry(self, entry: SpoolEntry, report: DrainReport) -> None:
        """Upload, verify and remove one entry; its outcome goes into ``report``."""
        if entry.failed is not None:
            report.skipped += 1
            return
        try:
            data = await asyncio.to_thread(self.spool.read, entry)
        except KeyError:  # replaced or removed meanwhile; the newer one comes later
            return
        except SpoolCorrupted as exc:
            report.quarantined += 1
            report.errors.append(str(exc))
            return
        metadata = {**entry.metadata, SHA256_METADATA: entry.sha256}
        began = time.perf_counter()
        try:
            etag = await self._call(
                "upload",
                entry.key,
                data,
                content_type=entry.content_type,
                metadata=metadata,
                bucket=entry.bucket,
            )
            await self._verify(entry, etag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, VerificationFailed) and self._is_outage(exc):
                report.stopped = reason
                return
            where = self._where(entry)
            reason = f"bucket {where!r}: {reason}"
            permanent = not isinstance(exc, VerificationFailed) and self._is_permanent(exc)
            give_up = permanent or entry.attempts + 1 >= self.max_attempts
            if give_up and not permanent:
                reason = f"gave up after {entry.attempts + 1} attempts: {reason}"
            report.failed += 1
            report.gave_up += give_up
            report.errors.append(f"{where}/{entry.key}: {reason}")
            await asyncio.to_thread(self.spool.mark_failed, entry, reason, give_up=give_up)
            log = logger.error if give_up else logger.warning
            log(
                "spool: upload of %s/%s failed (attempt %d%s): %s",
                where,
                entry.key,
                entry.attempts + 1,
                "; marked failed, waiting for an operator" if give_up else "",
                reason,
            )
            return
        await asyncio.to_thread(self.spool.remove, entry)
        report.uploaded += 1
        report.bytes += entry.size
        self.spool._emit(
            "uploaded",
            bucket=entry.bucket,
            key=entry.key,
            destination=self._where(entry),  # the bucket it went to (for bucket=None)
            size=entry.size,
            seconds=time.perf_counter() - began,
        )

    async def drain(self, *, limit: int | None = None) -> DrainReport:
        """Upload what can be uploaded now, oldest first; returns what happened.

        Up to ``concurrency`` uploads are in flight at once (started oldest first);
        after an outage no new upload starts, and those in flight finish.
        """
        with self._exclusive() as mine:
            if not mine:  # another process (or drain) is at it: it takes what is spooled
                return DrainReport(busy=True)
            return await self._drain_locked(limit)

    async def _drain_locked(self, limit: int | None) -> DrainReport:
        async with self._lock:
            report = DrainReport()
            start = time.perf_counter()
            entries = iter(await asyncio.to_thread(self.spool.entries))
            in_flight = 0

            async def worker() -> None:
                nonlocal in_flight
                while report.stopped is None:
                    if limit is not None and report.uploaded + in_flight >= limit:
                        return
                    entry = next(entries, None)
                    if entry is None:
                        return
                    in_flight += 1
                    try:
                        await self._upload_entry(entry, report)
                    finally:
                        in_flight -= 1

            try:
                async with asyncio.TaskGroup() as group:  # a failure or cancel ends them all
                    for _ in range(self.concurrency):
                        group.create_task(worker())
            except BaseExceptionGroup as failed:  # the journal failed (disk): as before
                raise failed.exceptions[0]  # noqa: B904 - the group is only a wrapper
            report.seconds = time.perf_counter() - start
            self.last_report = report
            if report.uploaded or report.failed or report.quarantined:
                logger.info(
                    "spool: uploaded %d (%d bytes), failed %d, quarantined %d in %.3f s%s",
                    report.uploaded,
                    report.bytes,
                    report.failed,
                    report.quarantined,
                    report.seconds,
                    f"; stopped: {report.stopped}" if report.stopped else "",
                )
            return report

    _task_name = "brownout-spool-uploader"
    _logger = logger
    _label = "spool: drain"
