"""Invoice files: reading an upload safely, and keeping it in S3 or the local spool.

Reading (:func:`read_upload`): the ``multipart/form-data`` body is parsed as it
arrives (python-multipart's streaming parser), so a file over the size limit
is refused after at most ``max_bytes`` of it were read: nothing is buffered
beyond the limit, nothing is written anywhere before the whole file passed
every check. The checks, each with its own status and a body naming the
problem: the size (413), the declared content type and a sniff of the first
bytes (415), the file name (422: no ``..``, ``/``, ``\\``, NUL or control
characters, also percent-encoded).

Keeping (:class:`InvoiceFiles`): a file goes to S3 through the S3 adapter
when it can, else into the spool (``brownout.spool``), which the runtime's
``SpoolUploader`` drains into S3 later; downloads look in the spool first.
Object keys come from the invoice id only, never from the file name.

Which bucket a file goes to: with S3 configured, the configured bucket at the
time of the upload (recorded with the invoice, also when the file is spooled
during an outage). Without S3, no bucket is chosen yet: the invoice records
:data:`UNBOUND` and the file is spooled for "the configured bucket", so it goes
to whatever bucket S3 is configured with when it is finally uploaded. An
operator can send spooled files elsewhere (``inventario spool retarget``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from brownout import BreakerOpen
from brownout.spool import Spool, SpoolCorrupted, SpoolError, SpoolFull, SpoolUploader
from inventario import store
from inventario.deps import DependencyUnavailable, try_again
from inventario.spool_health import LOCAL_BUCKET, UNBOUND

if TYPE_CHECKING:  # the s3 extra
    from brownout.s3 import AsyncS3Adapter

__all__ = [
    "ALLOWED_TYPES",
    "LOCAL_BUCKET",
    "UNBOUND",
    "FileProblem",
    "InvoiceFiles",
    "Upload",
    "check_filename",
    "object_key",
    "read_upload",
    "sniff",
]

logger = logging.getLogger("inventario")


#: Declared content type -> file extension of the stored object.
ALLOWED_TYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "text/plain": "txt",
}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}

#: Multipart framing allowed on top of the file (headers, boundaries, small fields).
_OVERHEAD = 64 * 1024
_MAX_FIELD = 1000
_MAX_PARTS = 10
_SNIFF_BYTES = 8192
_FILENAME_MAX = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_BAD = re.compile(r"%(?:[01][0-9a-f]|7f|2f|5c)", re.IGNORECASE)


class FileProblem(store.StoreError):
    """An upload that cannot be accepted; ``status`` and ``error`` say which kind."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": str(self), **self.extra}


@dataclass(frozen=True)
class Upload:
    """A complete, checked upload (still only in memory)."""

    filename: str
    content_type: str
    data: bytes
    sha256: str
    supplier: str


def check_filename(name: str) -> str:
    """``name`` if it is a plain file name; else :class:`FileProblem` 422 naming the problem."""
    problems = []
    forms = [(name, "")]
    if unquote(name) != name:
        forms.append((unquote(name), " (percent-encoded)"))
    for form, shown in forms:
        if "\x00" in form:
            problems.append(f"a NUL character{shown}")
        elif _CONTROL.search(form):
            problems.append(f"a control character{shown}")
        if ".." in form:
            problems.append(f"'..'{shown}")
        if "/" in form:
            problems.append(f"'/'{shown}")
        if "\\" in form:
            problems.append(f"'\\'{shown}")
    if _ENCODED_BAD.search(name) and not problems:
        problems.append("a percent-encoded separator or control character")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise FileProblem(
            422,
            "invalid_file_name",
            f"the file name {name!r} contains {', '.join(unique)}: send a plain file name",
            filename=name,
        )
    if not name.strip():
        raise FileProblem(422, "invalid_file_name", "the file name is empty")
    if len(name) > _FILENAME_MAX:
        raise FileProblem(
            422,
            "invalid_file_name",
            f"the file name is {len(name)} characters long (max {_FILENAME_MAX})",
        )
    return name


def _declared_type(raw: str | None) -> str:
    """The normalised declared content type, or :class:`FileProblem` 415."""
    ctype = parse_options_header(raw or "")[0].decode("latin-1")
    ctype = _ALIASES.get(ctype, ctype)
    if ctype not in ALLOWED_TYPES:
        raise FileProblem(
            415,
            "unsupported_file_type",
            f"the file's content type {ctype or '(none)'!r} is not accepted; send one of "
            f"{', '.join(ALLOWED_TYPES)}",
            content_type=ctype or None,
            allowed=list(ALLOWED_TYPES),
        )
    return ctype


def sniff(head: bytes) -> str | None:
    """The content type the first bytes look like (of :data:`ALLOWED_TYPES`), or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if b"%PDF-" in head[:1024]:
        return "application/pdf"
    # text: UTF-8 or a legacy 8-bit encoding (Windows-1252...); either way no NUL and
    # hardly any control characters other than tab, newlines and form feed
    if b"\x00" in head:
        return None
    controls = sum(1 for b in head if (b < 0x20 and b not in b"\t\n\r\f") or b == 0x7F)
    if controls > len(head) // 100:
        return None
    return "text/plain"


def _check_content(declared: str, data: bytes) -> None:
    if not data:
        raise FileProblem(422, "empty_file", "the file is empty")
    seen = sniff(data[:_SNIFF_BYTES])
    if seen != declared:
        looks = f"looks like {seen}" if seen else "is not any accepted type"
        raise FileProblem(
            415,
            "unsupported_file_type",
            f"the file was declared {declared} but its content {looks}",
            content_type=declared,
            detected=seen,
        )


def _part_filename(msg: Message) -> str | None:
    """The ``filename`` of a form part's Content-Disposition, exactly as the client meant it.

    An RFC 2231/5987 ``filename*=UTF-8''...`` wins over a plain ``filename`` (it is the
    exact one; the plain one is then a fallback). WHATWG's form encoding writes a ``"``
    in the name as ``%22``: it is turned back into the quote.
    """
    plain: str | None = None
    params: list[tuple[str, Any]] = msg.get_params(header="content-disposition") or []
    for key, value in params:  # typeshed says str values; RFC 2231 ones are tuples
        if key.lower() != "filename":
            continue
        if isinstance(value, tuple):  # filename*=charset'lang'percent-encoded
            try:
                return str(collapse_rfc2231_value(value, errors="strict"))
            except (LookupError, UnicodeError):
                continue  # an unknown charset or bad bytes: use the plain one
        elif plain is None:
            plain = value
    return None if plain is None else plain.replace("%22", '"')


class _FormReader:
    """python-multipart callbacks collecting one file part (bounded) and small fields."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.file: bytearray | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.fields: dict[str, bytearray] = {}
        self.parts = 0
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._target: bytearray | None = None
        self._target_name = ""
        self._sha = hashlib.sha256()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > _MAX_PARTS:
            raise FileProblem(
                422,
                "too_many_parts",
                f"the form has more than {_MAX_PARTS} parts: send one 'file' part and, "
                "optionally, 'supplier'",
            )
        self._headers = {}
        self._target = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        # browsers (and httpx) send a part's file name as raw UTF-8 (WHATWG's form
        # encoding): read the value as UTF-8, and as Latin-1 only when it is not UTF-8
        # (an old client's 8-bit header) -- never UTF-8 bytes as Latin-1 ("MÃ¼ller")
        try:
            value = self._value.decode("utf-8")
        except UnicodeDecodeError:
            value = self._value.decode("latin-1")
        self._headers[name] = value.strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition", "")
        msg = Message()
        msg["content-disposition"] = disposition
        name = msg.get_param("name", header="content-disposition")
        filename = _part_filename(msg)
        if not isinstance(name, str) or not name:
            raise FileProblem(
                422,
                "malformed_form",
                "a form part has no name (Content-Disposition: form-data; name=...)",
            )
        if name == "file":
            if self.file is not None:
                raise FileProblem(422, "malformed_form", "send exactly one 'file' part")
            if not isinstance(filename, str):
                raise FileProblem(
                    422, "invalid_file_name", "the 'file' part needs a file name (filename=...)"
                )
            self.filename = check_filename(filename)
            self.content_type = _declared_type(self._headers.get("content-type"))
            self.file = bytearray()
            self._target, self._target_name = self.file, "file"
        else:
            self._target = self.fields.setdefault(name, bytearray())
            self._target_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        target = self._target
        if target is None:
            return
        chunk = data[start:end]
        if self._target_name == "file":
            if len(target) + len(chunk) > self.max_bytes:
                raise FileProblem(
                    413,
                    "file_too_large",
                    f"the file is larger than {self.max_bytes} bytes (INVOICE_MAX_BYTES)",
                    max_bytes=self.max_bytes,
                )
            self._sha.update(chunk)
        elif len(target) + len(chunk) > _MAX_FIELD:
            raise FileProblem(
                422,
                "malformed_form",
                f"the form field {self._target_name!r} is longer than {_MAX_FIELD} bytes",
            )
        target += chunk


async def read_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    *,
    max_bytes: int,
) -> Upload:
    """Read and check a ``multipart/form-data`` upload with a ``file`` part.

    Optional field ``supplier`` (text). Raises :class:`FileProblem` (413, 415,
    422) naming the problem; reads at most about ``max_bytes`` of the body.
    """
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise FileProblem(
            415,
            "unsupported_media_type",
            "send the invoice as multipart/form-data with a 'file' part "
            f"(got {ctype.decode('latin-1') or 'no content type'!r})",
        )
    if content_length is not None:
        try:
            length = int(content_length)
        except ValueError:
            raise FileProblem(400, "bad_request", "Content-Length is not a number") from None
        if length > max_bytes + _OVERHEAD:
            raise FileProblem(
                413,
                "file_too_large",
                f"the request is {length} bytes, more than the {max_bytes} bytes allowed for "
                "an invoice (INVOICE_MAX_BYTES)",
                max_bytes=max_bytes,
            )
    reader = _FormReader(max_bytes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    except MultipartParseError as exc:
        raise FileProblem(422, "malformed_form", f"bad multipart boundary: {exc}") from None
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes + _OVERHEAD:
                raise FileProblem(
                    413,
                    "file_too_large",
                    f"the request is larger than the {max_bytes} bytes allowed for an invoice "
                    "(INVOICE_MAX_BYTES)",
                    max_bytes=max_bytes,
                )
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise FileProblem(
            422, "malformed_form", f"the multipart body is malformed: {exc}"
        ) from None
    if reader.file is None or reader.filename is None or reader.content_type is None:
        raise FileProblem(422, "missing_file", "the form has no 'file' part with the invoice")
    data = bytes(reader.file)
    _check_content(reader.content_type, data)
    supplier_raw = reader.fields.get("supplier", bytearray())
    try:
        supplier = supplier_raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FileProblem(422, "malformed_form", "the supplier field is not UTF-8") from None
    if _CONTROL.search(supplier) or len(supplier) > 200:
        raise FileProblem(
            422, "malformed_form", "the supplier must be at most 200 printable characters"
        )
    return Upload(reader.filename, reader.content_type, data, reader.sha256, supplier)


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
        except BreakerOpen:
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
