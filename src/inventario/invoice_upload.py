"""An uploaded invoice file, read safely (:func:`read_upload`).

The ``multipart/form-data`` body is parsed as it arrives (python-multipart's
streaming parser), so a file over the size limit is refused after at most
``max_bytes`` of it were read: nothing is buffered beyond the limit, nothing is
written anywhere before the whole file passed every check. The checks, each with
its own status and a body naming the problem: the size (413), the declared content
type and a sniff of the first bytes (415), the file name (422: no ``..``, ``/``,
``\\``, NUL or control characters, also percent-encoded). Keeping the file is
:mod:`inventario.invoice_storage`'s job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from inventario import store

__all__ = [
    "ALLOWED_TYPES",
    "FileProblem",
    "Upload",
    "check_filename",
    "read_upload",
    "sniff",
]


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
