"""The spool directory: durable local copies of S3 uploads that could not be done yet.

Stdlib only. Layout of ``directory``::

    objects/<id>.json            the manifest (the commit point of a put)
    objects/<id>.<nonce>.data    the payload the manifest names
    objects/.tmp-*               files being written (flocked by their writer; removed on
                                 open once their writer is gone)
    quarantine/                  corrupted entries, moved aside with a .reason.txt
    .lock                        flock: one Spool per directory at a time, or several
                                 ``shared`` ones (the worker processes of one service)
    .open                        flock: shared Spools open one at a time

``<id>`` is the sha256 of ``bucket \\0 key``: no part of a file name comes from
the caller, so a key such as ``../../etc/passwd`` cannot leave the directory.

The bucket of an entry is its destination. ``None`` means "the uploader's
bucket": the one the S3 adapter is configured with *when the entry is
uploaded* (for uploads accepted before any bucket was configured). A failed
entry (``failed`` set: its destination refused it for good) waits for an
operator: :meth:`Spool.reset_attempts` (retry), :meth:`Spool.retarget`
(another destination) or :meth:`Spool.discard`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from brownout._errors import SpoolCorrupted, SpoolError, SpoolFull
from brownout._journal_base import JournalListeners

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "SHA256_METADATA",
    "Spool",
    "SpoolCorrupted",
    "SpoolEntry",
    "SpoolError",
    "SpoolFull",
]

logger = logging.getLogger("brownout.spool")

#: Default bound on the payload bytes held by a spool: 1 GiB.
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
#: Default bound on the number of entries held by a spool.
DEFAULT_MAX_FILES = 10_000
#: The user-metadata name under which the payload's sha256 is uploaded (``x-amz-meta-sha256``).
SHA256_METADATA = "sha256"
#: How many distinct failure reasons :meth:`Spool.stats` lists.
FAILURE_GROUPS = 5

_CHUNK = 1024 * 1024
_MANIFEST_VERSION = 1
_ID = re.compile(r"^[0-9a-f]{64}$")
_DATA = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{16})\.data$")


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled upload (the content of its manifest).

    ``bucket`` is the destination; ``None`` stands for the uploader's bucket at upload
    time. ``failed`` is set (with ``failed_at``, wall-clock seconds) once the uploader
    gave up on the entry: it is kept, not uploaded again until an operator retries,
    retargets or discards it.
    """

    id: str
    bucket: str | None
    key: str
    sha256: str
    md5: str
    size: int
    content_type: str | None
    metadata: Mapping[str, str]
    created: float  # wall-clock seconds
    attempts: int = 0
    last_error: str | None = None
    payload: str = field(default="", repr=False)  # file name of the payload in objects/
    failed: str | None = None
    failed_at: float | None = None
    retargeted_from: str | None = field(default=None, repr=False)  # the id it had before

    @property
    def destination(self) -> str:
        """``bucket/key`` for people; ``(configured bucket)/key`` when not bound to one."""
        return f"{self.bucket if self.bucket is not None else '(configured bucket)'}/{self.key}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _MANIFEST_VERSION,
            "bucket": self.bucket,
            "key": self.key,
            "sha256": self.sha256,
            "md5": self.md5,
            "size": self.size,
            "content_type": self.content_type,
            "metadata": dict(self.metadata),
            "created": self.created,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "payload": self.payload,
            "failed": self.failed,
            "failed_at": self.failed_at,
            "retargeted_from": self.retargeted_from,
        }


def entry_id(bucket: str | None, key: str) -> str:
    """The file-name stem of ``bucket``/``key``: a sha256, never the key itself.

    ``None`` (the uploader's bucket) hashes as the empty name, which no real bucket has.
    """
    name = "" if bucket is None else bucket
    return hashlib.sha256(f"{name}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_manifest(ident: str, raw: bytes) -> SpoolEntry:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != _MANIFEST_VERSION:
        raise ValueError("not a version 1 spool manifest")
    bucket, key = doc["bucket"], doc["key"]
    if not (bucket is None or (isinstance(bucket, str) and bucket)) or not isinstance(key, str):
        raise ValueError("bucket must be a non-empty string or null, key a string")
    if entry_id(bucket, key) != ident:
        raise ValueError("the manifest's bucket/key do not match its file name")
    sha, md5, size = doc["sha256"], doc["md5"], doc["size"]
    if not (isinstance(sha, str) and len(sha) == 64 and isinstance(md5, str) and len(md5) == 32):
        raise ValueError("bad checksums")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("bad size")
    payload = doc["payload"]
    match = _DATA.match(payload) if isinstance(payload, str) else None
    if match is None or match.group(1) != ident:
        raise ValueError("bad payload file name")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError("metadata must map strings to strings")
    content_type = doc.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise ValueError("bad content_type")
    last_error = doc.get("last_error")
    failed, failed_at = doc.get("failed"), doc.get("failed_at")
    origin = doc.get("retargeted_from")
    return SpoolEntry(
        id=ident,
        bucket=bucket,
        key=key,
        sha256=sha,
        md5=md5,
        size=size,
        content_type=content_type,
        metadata=metadata,
        created=float(doc["created"]),
        attempts=int(doc.get("attempts") or 0),
        last_error=last_error if isinstance(last_error, str) else None,
        payload=payload,
        failed=failed if isinstance(failed, str) else None,
        failed_at=float(failed_at) if isinstance(failed_at, int | float) and failed else None,
        retargeted_from=origin if isinstance(origin, str) and _ID.match(origin) else None,
    )


class Spool(JournalListeners):
    """A bounded directory of uploads waiting for S3; every accepted entry is on disk.

    ``put`` returns only once the payload and its manifest are written, fsynced
    and renamed into place (and the directory fsynced): an accepted upload
    survives a crash of the process or the machine. A crash in the middle of a
    ``put`` leaves the previous version of that key (or nothing) -- never a torn
    entry. Putting a bucket/key that is already spooled replaces the spooled
    version (last write wins, as in S3); only the newest is uploaded.

    Bounds: ``max_bytes`` of payload (default 1 GiB, :data:`DEFAULT_MAX_BYTES`)
    and ``max_files`` entries (default 10 000). At a bound ``put`` raises
    :class:`SpoolFull` and writes nothing.

    One ``Spool`` per directory at a time (an ``flock`` on ``.lock`` enforces it), or
    several opened with ``shared=True`` (the worker processes of one service: a shared
    ``flock``; a Spool that is not shared is still refused while they hold it, and they
    while it does). A shared Spool reads the directory again before each use (what the
    other processes put, uploaded or removed), cleans up after a crash only what is
    certainly dead (a temp file whose writer is gone; unreferenced payloads only when it
    is the directory's only user), and does not quarantine an entry another process
    removed meanwhile. Run one :class:`~brownout.spool.SpoolUploader` per process with
    :meth:`~brownout.spool.SpoolUploader.share`: one uploads at a time.

    >>> import tempfile
    >>> spool = Spool(tempfile.mkdtemp())
    >>> entry = spool.put("invoices", "2024/01.pdf", b"%PDF-1.7", content_type="application/pdf")
    >>> spool.get("invoices", "2024/01.pdf"), spool.stats()["files"]
    (b'%PDF-1.7', 1)
    >>> spool.close()
    """

    #: ``add_listener(fn)`` -> unsubscribe; ``fn(JournalEvent)`` of kind ``spooled``,
    #: ``uploaded``, ``failed`` (with ``gave_up``), ``retried``, ``retargeted``,
    #: ``discarded``, ``quarantined`` (metrics, alerts, health).
    _source = "spool"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
    ) -> None:
        for name, value in (("max_bytes", max_bytes), ("max_files", max_files)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Spool.{name} must be an int >= 1, got {value!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._clock = clock
        self._objects = self.directory / "objects"
        self._quarantine = self.directory / "quarantine"
        self._lock = threading.RLock()
        self._index: dict[str, SpoolEntry] = {}
        self.shared = shared
        # shared: each manifest's (inode, mtime, size) when read, to read only what changed
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._objects.mkdir(parents=True, exist_ok=True)
        self._quarantine.mkdir(exist_ok=True)
        self._lock_fd: int | None = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        alone = True
        # shared Spools open one at a time (``.open``, held for a moment): so the one
        # holding ``.lock`` exclusively is either one of them recovering alone, or a
        # Spool that is not shared (refused at once)
        opening = _opening(self.directory) if shared else None
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if not shared or exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                # other shared Spools are open (or one that is not shared: refused here)
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                alone = False
        except OSError as exc:
            if opening is not None:
                os.close(opening)
            os.close(self._lock_fd)
            self._lock_fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolError(_in_use(self.directory)) from exc
            raise
        try:
            self._recover(alone)
            if shared and alone:
                # recovered alone; now the other workers may open it too (a Spool that is
                # not shared slipping in between is refused by the next line, as any time)
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError as exc:  # pragma: no cover - a window of microseconds
                    self.close()
                    raise SpoolError(_in_use(self.directory)) from exc
        finally:
            if opening is not None:
                os.close(opening)  # the next shared Spool may open

    # ------------------------------------------------------------------ plumbing

    def _write_atomic(self, final: Path, chunks: Callable[[BinaryIO], None]) -> None:
        """temp file in objects/, write, fsync, os.replace, fsync objects/."""
        tmp = self._objects / f".tmp-{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as fh:
                # held while it is written: another process's recovery leaves it alone
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                chunks(fh)
                fh.flush()
                os.fsync(fh.fileno())
                os.replace(tmp, final)  # still held: never a window for another's cleanup
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self._objects)

    def _manifest_path(self, ident: str) -> Path:
        return self._objects / f"{ident}.json"

    def _write_manifest(self, entry: SpoolEntry) -> None:
        body = json.dumps(entry.to_json(), sort_keys=True, indent=1).encode()

        def write(fh: BinaryIO) -> None:
            fh.write(body)

        self._write_atomic(self._manifest_path(entry.id), write)

    def _update_manifest(self, entry: SpoolEntry) -> None:
        """Rewrite an entry's manifest (attempts); on a disk error the old one stays."""
        try:
            self._write_manifest(entry)
        except OSError as exc:
            raise SpoolError(
                f"spool: updating the manifest of {entry.bucket}/{entry.key} failed: {exc}"
                f"{_disk_hint(exc)}; the previous manifest is kept, the upload is still spooled"
            ) from exc

    def _manifest_payload(self, ident: str) -> str | None:
        """The payload file name the manifest on disk names (None: none or unreadable)."""
        try:
            doc = json.loads(self._manifest_path(ident).read_bytes())
        except (OSError, ValueError):
            return None
        payload = doc.get("payload") if isinstance(doc, dict) else None
        return payload if isinstance(payload, str) else None

    def _recover(self, alone: bool = True) -> None:
        """Load the manifests; drop temp files and unreferenced payloads; quarantine damage.

        Not ``alone`` (other shared Spools are open on the directory): a temp file is
        dropped only if its writer is gone, and nothing else is cleaned up (a payload
        no manifest names yet may be another process's put in progress).
        """
        referenced: set[str] = set()
        for path in sorted(self._objects.iterdir()):
            name = path.name
            if name.startswith(".tmp-"):  # a put or update that never finished
                if alone or _writer_gone(path):
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            if not name.endswith(".json"):
                continue
            ident = name[: -len(".json")]
            if not _ID.match(ident):
                continue
            try:
                entry = _parse_manifest(ident, path.read_bytes())
            except (ValueError, KeyError, TypeError, OSError) as exc:
                self._quarantine_files(ident, f"unreadable manifest: {exc}", None)
                continue
            payload = self._objects / entry.payload
            try:
                size = payload.stat().st_size
            except FileNotFoundError:
                self._quarantine_files(ident, "the manifest's payload file is missing", entry)
                continue
            if size != entry.size:
                self._quarantine_files(
                    ident, f"payload is {size} bytes, the manifest says {entry.size}", entry
                )
                continue
            self._index[ident] = entry
            self._remember(ident)
            referenced.add(entry.payload)
        if not alone:
            return
        for entry in list(self._index.values()):
            old = self._index.get(entry.retargeted_from or "")
            if old is not None and old.key == entry.key and old.sha256 == entry.sha256:
                # a retarget that crashed after its commit point (the new manifest) and
                # before it removed the old one: the new destination wins
                logger.info("spool: finishing the retarget of %s", entry.destination)
                with contextlib.suppress(OSError):
                    self._manifest_path(old.id).unlink()
                referenced.discard(old.payload)
                del self._index[old.id]
        for path in self._objects.iterdir():
            # a payload no manifest names: from a put that crashed before its manifest
            # was renamed (never accepted), or the older version a replacing put had
            # not yet removed (superseded). Neither was an accepted, current upload.
            if _DATA.match(path.name) and path.name not in referenced:
                logger.info("spool: removing unreferenced payload %s", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
        _fsync_dir(self._objects)

    def _remember(self, ident: str) -> None:
        """(Shared.) Note the manifest of ``ident`` as read."""
        if not self.shared:
            return
        with contextlib.suppress(OSError):
            st = self._manifest_path(ident).stat()
            self._seen[ident] = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _sync(self) -> None:
        """(Under the lock; shared only.) Read again what the other processes changed.

        Each manifest is replaced by a rename (a new inode) or removed: one stat per
        entry tells whether its version is the one in the index. An unreadable manifest
        is left out (the next Spool opened alone quarantines it).
        """
        if not self.shared or self._lock_fd is None:
            return
        found: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for item in os.scandir(self._objects):
                name = item.name
                if not name.endswith(".json") or not _ID.match(name[:-5]):
                    continue
                ident = name[:-5]
                try:
                    st = item.stat()
                except FileNotFoundError:
                    continue
                found.add(ident)
                mark = (st.st_ino, st.st_mtime_ns, st.st_size)
                if self._seen.get(ident) == mark and ident in self._index:
                    continue
                try:
                    entry = _parse_manifest(ident, Path(item.path).read_bytes())
                except (ValueError, KeyError, TypeError, OSError):
                    self._index.pop(ident, None)
                    continue
                self._index[ident] = entry
                self._seen[ident] = mark
        for ident in set(self._index) - found:
            del self._index[ident]
            self._seen.pop(ident, None)

    def _quarantine_files(self, ident: str, reason: str, entry: SpoolEntry | None) -> None:
        """Move every file of ``ident`` to quarantine/ with a reason file; never delete."""
        stamp = f"{int(self._clock() * 1000)}-{secrets.token_hex(4)}"
        moved: list[str] = []
        for path in list(self._objects.iterdir()):
            if path.name.startswith(ident + "."):
                target = self._quarantine / f"{stamp}-{path.name}"
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, target)
                    moved.append(target.name)
        what = entry.destination if entry is not None else ident
        note = f"{what}\n{reason}\nfiles: {', '.join(moved)}\n"
        reason_file = self._quarantine / f"{stamp}-{ident}.reason.txt"
        try:
            reason_file.write_text(note)
        except OSError as exc:  # a full disk must not stop the spool from opening
            logger.error("spool: cannot write %s (%s); the reason was: %s", reason_file, exc, note)
            with contextlib.suppress(OSError):
                reason_file.touch()  # an empty one needs no data block: still counted
        with contextlib.suppress(OSError):
            _fsync_dir(self._quarantine)
            _fsync_dir(self._objects)
        self._index.pop(ident, None)
        logger.error("spool: quarantined %s: %s (files in %s)", what, reason, self._quarantine)
        self._emit(
            "quarantined",
            bucket=entry.bucket if entry else None,
            key=entry.key if entry else None,
            reason=reason,
        )

    # ------------------------------------------------------------------ put

    def put(
        self,
        bucket: str | None,
        key: str,
        data: bytes | bytearray | memoryview | _Readable,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> SpoolEntry:
        """Durably spool an upload of ``data`` to ``bucket``/``key``; returns once on disk.

        ``data`` is bytes or a binary file object (read in 1 MiB chunks, never
        all in memory). A bucket/key already spooled is replaced by this newer
        version. ``bucket=None``: the uploader's bucket at upload time (for an upload
        accepted before any bucket was configured). Raises :class:`SpoolFull` at the
        bounds, ``ValueError`` / ``TypeError`` for bad arguments, :class:`SpoolError`
        for a disk error; in every error case nothing is written and the older version
        (if any) is kept.
        """
        if bucket is not None and (not isinstance(bucket, str) or not bucket):
            raise ValueError("Spool.put: bucket must be a non-empty string or None")
        if not isinstance(key, str) or not key:
            raise ValueError("Spool.put: key must be a non-empty string")
        meta = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise TypeError("Spool.put: metadata must map strings to strings")
        if SHA256_METADATA in meta:
            raise ValueError(
                f"Spool.put: metadata key {SHA256_METADATA!r} is reserved for the payload checksum"
            )
        if content_type is not None and not isinstance(content_type, str):
            raise TypeError("Spool.put: content_type must be a string")
        source = _reader(data)
        ident = entry_id(bucket, key)
        start = time.perf_counter()
        with self._lock:
            self._check_open()
            self._sync()
            old = self._index.get(ident)
            others_bytes = sum(e.size for e in self._index.values()) - (old.size if old else 0)
            files = len(self._index) - (1 if old else 0)
            if files + 1 > self.max_files:
                raise SpoolFull(
                    f"spool {self.directory} is full: {files} files (max_files={self.max_files})"
                )
            room = self.max_bytes - others_bytes
            sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
            payload_name = f"{ident}.{secrets.token_hex(8)}.data"

            def write_payload(fh: BinaryIO) -> None:
                nonlocal size
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        return
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        raise TypeError("Spool.put: the file object must be binary")
                    size += len(chunk)
                    if size > room:
                        raise SpoolFull(
                            f"spool {self.directory} is full: {others_bytes} bytes held, this "
                            f"upload needs more than {room} (max_bytes={self.max_bytes})"
                        )
                    sha.update(chunk)
                    md5.update(chunk)
                    fh.write(chunk)

            payload_path = self._objects / payload_name
            try:
                self._write_atomic(payload_path, write_payload)
                entry = SpoolEntry(
                    id=ident,
                    bucket=bucket,
                    key=key,
                    sha256=sha.hexdigest(),
                    md5=md5.hexdigest(),
                    size=size,
                    content_type=content_type,
                    metadata=meta,
                    created=self._clock(),
                    payload=payload_name,
                )
                self._write_manifest(entry)  # the commit point
            except BaseException as exc:
                if self._manifest_payload(ident) == payload_name:
                    # the manifest was renamed into place, a later fsync failed: what is
                    # on disk is the new version, keep it consistent with the index
                    self._index[ident] = entry
                    self._remember(ident)
                    if old is not None:
                        with contextlib.suppress(OSError):
                            (self._objects / old.payload).unlink()
                else:
                    with contextlib.suppress(OSError):
                        payload_path.unlink()
                if isinstance(exc, OSError):
                    raise SpoolError(
                        f"spool: writing {bucket}/{key} failed: {exc}{_disk_hint(exc)}; "
                        "nothing was spooled"
                    ) from exc
                raise
            self._index[ident] = entry
            self._remember(ident)
            if old is not None and old.payload != payload_name:
                with contextlib.suppress(OSError):
                    (self._objects / old.payload).unlink()
        self._emit(
            "spooled",
            bucket=bucket,
            key=key,
            size=size,
            replaced=old is not None,
            seconds=time.perf_counter() - start,
        )
        return entry

    # ------------------------------------------------------------------ reading

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._lock_fd is None

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise SpoolError(f"spool {self.directory} is closed")

    def entry(self, bucket: str | None, key: str) -> SpoolEntry | None:
        """The spooled entry of ``bucket``/``key``, or ``None``."""
        with self._lock:
            self._sync()
            return self._index.get(entry_id(bucket, key))

    def by_id(self, ident: str) -> SpoolEntry | None:
        """The entry whose :attr:`SpoolEntry.id` is ``ident``, or ``None``."""
        with self._lock:
            self._sync()
            return self._index.get(ident)

    def entries(self) -> list[SpoolEntry]:
        """Every spooled entry, oldest first."""
        with self._lock:
            self._sync()
            return sorted(self._index.values(), key=lambda e: (e.created, e.id))

    def read(self, entry: SpoolEntry) -> bytes:
        """The payload of ``entry``, checked against its sha256 and size.

        A mismatch quarantines the entry and raises :class:`SpoolCorrupted`; a
        version replaced or removed meanwhile raises ``KeyError``.
        """
        with self._lock:
            self._check_open()
            self._sync()
            current = self._index.get(entry.id)
            if current is None or current.payload != entry.payload:
                raise KeyError(f"{entry.destination}: that version is no longer spooled")
            try:
                data = (self._objects / entry.payload).read_bytes()
            except FileNotFoundError:
                if self.shared and self._manifest_payload(entry.id) != entry.payload:
                    # another process uploaded, replaced or removed it just now
                    self._sync()
                    raise KeyError(
                        f"{entry.destination}: that version is no longer spooled"
                    ) from None
                reason = "the payload file is missing"
            else:
                if len(data) == entry.size and hashlib.sha256(data).hexdigest() == entry.sha256:
                    return data
                reason = (
                    f"payload checksum mismatch ({len(data)} bytes, manifest says {entry.size} "
                    f"bytes with sha256 {entry.sha256[:12]}...)"
                )
            self._quarantine_files(entry.id, reason, entry)
        raise SpoolCorrupted(
            f"spooled {entry.destination} is corrupted ({reason}); it was moved to "
            f"{self._quarantine} and will not be uploaded"
        )

    def get(self, bucket: str | None, key: str) -> bytes | None:
        """The spooled bytes of ``bucket``/``key`` (checked), or ``None`` if not spooled.

        Serve downloads from here first: a key still in the spool is newer than
        whatever S3 holds. Raises :class:`SpoolCorrupted` for a damaged entry.
        """
        entry = self.entry(bucket, key)
        if entry is None:
            return None
        try:
            return self.read(entry)
        except KeyError:  # replaced meanwhile: read the newer one
            return self.get(bucket, key)

    def verify(self) -> list[str]:
        """Check every payload's checksum; quarantine the damaged ones; their descriptions."""
        bad: list[str] = []
        for entry in self.entries():
            try:
                self.read(entry)
            except KeyError:
                continue
            except SpoolCorrupted as exc:
                bad.append(str(exc))
        return bad

    def quarantined(self) -> list[Path]:
        """The reason files in ``quarantine/`` (one per quarantined entry)."""
        return sorted(self._quarantine.glob("*.reason.txt"))

    def failed(self) -> list[SpoolEntry]:
        """The entries the uploader gave up on (oldest failure first): they wait for an
        operator to retry, retarget or discard them."""
        with self._lock:
            self._sync()
            out = [e for e in self._index.values() if e.failed is not None]
        return sorted(out, key=lambda e: (e.failed_at or 0.0, e.id))

    def stats(self) -> dict[str, Any]:
        """Figures for health pages and metrics.

        ``files``, ``bytes``, ``oldest_age_s`` (every entry, failed ones included),
        ``failed`` / ``failed_bytes`` (entries given up on), ``failures`` (up to
        :data:`FAILURE_GROUPS` distinct reasons, most frequent first, each with its
        ``count`` and an example ``destination``), ``unbound`` (entries waiting for the
        uploader's bucket), ``quarantined`` and the bounds.
        """
        with self._lock:
            self._sync()
            entries = list(self._index.values())
        oldest = min((e.created for e in entries), default=None)
        failed = [e for e in entries if e.failed is not None]
        groups: dict[str, list[SpoolEntry]] = {}
        for e in sorted(failed, key=lambda e: (e.failed_at or 0.0, e.id)):
            groups.setdefault(e.failed or "", []).append(e)
        ranked = sorted(groups.items(), key=lambda item: -len(item[1]))[:FAILURE_GROUPS]
        return {
            "files": len(entries),
            "bytes": sum(e.size for e in entries),
            "oldest_age_s": None if oldest is None else max(0.0, self._clock() - oldest),
            "failed": len(failed),
            "failed_bytes": sum(e.size for e in failed),
            "failures": [
                {
                    "reason": reason,
                    "count": len(group),
                    "destination": group[0].destination,
                    "since": group[0].failed_at,
                }
                for reason, group in ranked
            ],
            "unbound": sum(1 for e in entries if e.bucket is None),
            "quarantined": len(self.quarantined()),
            "max_files": self.max_files,
            "max_bytes": self.max_bytes,
        }

    # ------------------------------------------------------------------ updates

    def remove(self, entry: SpoolEntry) -> bool:
        """Delete ``entry`` (once it is in S3). False if a newer version replaced it
        meanwhile (the newer one stays) or it is already gone."""
        with self._lock:
            self._check_open()
            self._sync()
            current = self._index.get(entry.id)
            if current is None or current.payload != entry.payload:
                return False
            try:
                self._manifest_path(entry.id).unlink()  # the commit point of the removal
            except FileNotFoundError:
                if not self.shared:
                    raise
                self._sync()  # another process removed it just now
                return False
            with contextlib.suppress(OSError):
                (self._objects / entry.payload).unlink()
            _fsync_dir(self._objects)
            del self._index[entry.id]
            self._seen.pop(entry.id, None)
        return True

    def mark_failed(
        self, entry: SpoolEntry, reason: str, *, give_up: bool = False
    ) -> SpoolEntry | None:
        """Count a failed upload attempt of ``entry`` (in its manifest); the updated entry,
        or ``None`` if it was replaced or removed meanwhile.

        ``give_up=True`` also marks it failed with ``reason`` (see :meth:`failed`): it
        is kept but not uploaded again until :meth:`reset_attempts`, :meth:`retarget`
        or :meth:`discard`.
        """
        reason = reason[:2000]
        with self._lock:
            self._check_open()
            self._sync()
            current = self._index.get(entry.id)
            if current is None or current.payload != entry.payload:
                return None
            updated = replace(current, attempts=current.attempts + 1, last_error=reason)
            if give_up:
                updated = replace(updated, failed=reason, failed_at=self._clock())
            self._update_manifest(updated)
            self._index[entry.id] = updated
            self._remember(entry.id)
        self._emit("failed", bucket=entry.bucket, key=entry.key, reason=reason, gave_up=give_up)
        return updated

    def reset_attempts(self, entry: SpoolEntry | None = None) -> int:
        """Retry: set the attempts of one entry (or all) back to 0 and clear ``failed``
        (after creating the bucket or fixing its policy); how many entries changed."""
        count = 0
        with self._lock:
            self._check_open()
            self._sync()
            for current in list(self._index.values()):
                if entry is not None and current.id != entry.id:
                    continue
                if current.attempts or current.failed is not None:
                    updated = replace(
                        current, attempts=0, last_error=None, failed=None, failed_at=None
                    )
                    self._update_manifest(updated)
                    self._index[current.id] = updated
                    self._remember(current.id)
                    count += 1
        if count:
            self._emit("retried", count=count)
        return count

    def retarget(self, entry: SpoolEntry, bucket: str | None) -> SpoolEntry:
        """Send ``entry`` to another bucket (``None``: the uploader's bucket at upload
        time); its attempts and failure are cleared. Returns the moved entry.

        The payload is hard-linked (copied where links are not possible) under the new
        id, the new manifest is the commit point, then the old files go: a crash in
        between leaves the old entry (before the commit) or is finished on the next
        open (after it). Raises ``KeyError`` if ``entry`` was replaced or removed
        meanwhile, :class:`SpoolError` if the key is already spooled for ``bucket``.
        """
        if bucket is not None and (not isinstance(bucket, str) or not bucket):
            raise ValueError("Spool.retarget: bucket must be a non-empty string or None")
        with self._lock:
            self._check_open()
            self._sync()
            current = self._index.get(entry.id)
            if current is None or current.payload != entry.payload:
                raise KeyError(f"{entry.destination}: that version is no longer spooled")
            same = bucket == current.bucket
        if same:  # nothing to move: a retry
            self.reset_attempts(current)
            return self.by_id(current.id) or current
        with self._lock:
            self._check_open()
            self._sync()
            current = self._index.get(entry.id)
            if current is None or current.payload != entry.payload:
                raise KeyError(f"{entry.destination}: that version is no longer spooled")
            ident = entry_id(bucket, current.key)
            if ident in self._index:
                taken = self._index[ident]
                raise SpoolError(
                    f"spool: cannot retarget {current.destination}: {taken.destination} is "
                    "already spooled (discard one of them first)"
                )
            payload = f"{ident}.{secrets.token_hex(8)}.data"
            source, target = self._objects / current.payload, self._objects / payload
            moved = replace(
                current,
                id=ident,
                bucket=bucket,
                payload=payload,
                attempts=0,
                last_error=None,
                failed=None,
                failed_at=None,
                retargeted_from=current.id,
            )
            try:
                try:
                    os.link(source, target)
                except OSError:  # no hard links here (some network file systems): copy

                    def copy(fh: BinaryIO) -> None:
                        with open(source, "rb") as src:
                            while chunk := src.read(_CHUNK):
                                fh.write(chunk)

                    self._write_atomic(target, copy)
                self._write_manifest(moved)  # the commit point
            except OSError as exc:
                if self._manifest_payload(ident) != payload:
                    with contextlib.suppress(OSError):
                        target.unlink()
                    raise SpoolError(
                        f"spool: retargeting {current.destination} failed: {exc}"
                        f"{_disk_hint(exc)}; it is still spooled for its old destination"
                    ) from exc
            self._index[ident] = moved
            self._remember(ident)
            del self._index[current.id]
            self._seen.pop(current.id, None)
            with contextlib.suppress(OSError):
                self._manifest_path(current.id).unlink()
            with contextlib.suppress(OSError):
                source.unlink()
            with contextlib.suppress(OSError):
                _fsync_dir(self._objects)
        logger.warning("spool: %s retargeted to %s", current.destination, moved.destination)
        self._emit("retargeted", bucket=bucket, key=current.key, old_bucket=current.bucket)
        return moved

    def discard(self, entry: SpoolEntry, reason: str = "discarded by an operator") -> bool:
        """Delete ``entry`` without uploading it (an operator's decision: it is lost);
        False if it was replaced or removed meanwhile."""
        if not self.remove(entry):
            return False
        logger.warning(
            "spool: %s (%d bytes, sha256 %s) discarded: %s",
            entry.destination,
            entry.size,
            entry.sha256,
            reason,
        )
        self._emit("discarded", bucket=entry.bucket, key=entry.key, reason=reason)
        return True

    def close(self) -> None:
        with self._lock:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r} files={len(self._index)}>"


def _opening(directory: Path) -> int:
    """(A shared Spool opening.) Wait for the others opening or recovering: the open
    file of ``directory/.open``, locked until closed."""
    fd = os.open(directory / ".open", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a moment: another worker's recovery at most
    except BaseException:
        os.close(fd)
        raise
    return fd


def _in_use(directory: Path) -> str:
    """The refusal of a second Spool on ``directory``: what is wrong and what to do."""
    return (
        f"spool directory {directory} is in use by another Spool (in this process or "
        f"another one holding {directory / '.lock'}): close the other Spool or stop its "
        "process first, or give this one another directory; the Spools of the workers of "
        "one service may share a directory if every one of them is opened with shared=True"
    )


def _writer_gone(path: Path) -> bool:
    """Whether the temp file ``path`` is no longer being written: its writer holds an
    ``flock`` on it while it writes (the kernel drops it when the writer dies)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _disk_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return " (disk full?)"
    if exc.errno == errno.EFBIG:
        return " (a file size limit? see ulimit -f)"
    return ""


def _reader(data: object) -> _Readable:
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(data))
    if isinstance(data, str):
        raise TypeError("Spool.put takes bytes or a binary file object, not str: encode it first")
    if not callable(getattr(data, "read", None)):
        raise TypeError(f"Spool.put takes bytes or a binary file object, got {type(data).__name__}")
    return data  # type: ignore[return-value]
