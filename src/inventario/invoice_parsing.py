"""Invoice files turned into what the model reads: text (plain, or a PDF's text when it
can be read simply: uncompressed or Flate content streams with plain string
operators) or an image as a data URL; anything else is :class:`Unreadable`."""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

__all__ = ["MAX_TEXT_CHARS", "Unreadable", "decode_text", "model_input", "pdf_text"]

#: Characters of invoice text sent to the model at most.
MAX_TEXT_CHARS = 50_000


class Unreadable(Exception):
    """The file cannot be turned into model input; the message says why."""


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """A PDF literal string starting at ``data[i] == '('``; (bytes, index after it)."""
    out = bytearray()
    depth, i, n = 1, i + 1, len(data)
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
    while i < n:
        c = data[i]
        if c == 0x5C and i + 1 < n:  # backslash
            nxt = data[i + 1]
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
            elif 0x30 <= nxt <= 0x37:
                j = i + 1
                while j < n and j < i + 4 and 0x30 <= data[j] <= 0x37:
                    j += 1
                out.append(int(data[i + 1 : j], 8) & 0xFF)
                i = j
            elif nxt in (0x0A, 0x0D):  # line continuation
                i += 3 if data[i + 1 : i + 3] == b"\r\n" else 2
            else:
                out.append(nxt)
                i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), n


def _decode_pdf_string(raw: bytes) -> str:
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


_DELIMS = b"()<>[]{}/% \t\r\n\f\x00"


def _content_text(content: bytes) -> str:
    """The text shown by one content stream's string operators (Tj, TJ, ', ")."""
    out: list[str] = []
    operands: list[Any] = []
    last_y: float | None = None
    i, n = 0, len(content)
    while i < n:
        c = content[i]
        if c in b" \t\r\n\f\x00":
            i += 1
        elif c == 0x25:  # comment
            while i < n and content[i] not in b"\r\n":
                i += 1
        elif c == 0x28:
            raw, i = _literal(content, i)
            operands.append(_decode_pdf_string(raw))
        elif c == 0x3C and content[i + 1 : i + 2] != b"<":  # hex string
            end = content.find(b">", i)
            end = n if end < 0 else end
            digits = re.sub(rb"[^0-9A-Fa-f]", b"", content[i + 1 : end])
            if len(digits) % 2:
                digits += b"0"
            operands.append(_decode_pdf_string(bytes.fromhex(digits.decode())))
            i = end + 1
        elif c in b"<>":
            i += 2 if content[i + 1 : i + 2] == bytes([c]) else 1
        elif c == 0x5B:
            operands.append("[")
            i += 1
        elif c == 0x5D:
            start = len(operands) - 1
            while start >= 0 and operands[start] != "[":
                start -= 1
            items = operands[start + 1 :]
            del operands[max(start, 0) :]
            operands.append(items)
            i += 1
        elif c == 0x2F:  # a name
            j = i + 1
            while j < n and content[j] not in _DELIMS:
                j += 1
            operands.append(None)
            i = j
        else:
            j = i
            while j < n and content[j] not in _DELIMS:
                j += 1
            token = content[i:j].decode("latin-1")
            i = max(j, i + 1)
            try:
                operands.append(float(token))
                continue
            except ValueError:
                pass
            if token in ("Tj", "'", '"'):
                if token != "Tj":
                    out.append("\n")
                if operands and isinstance(operands[-1], str) and operands[-1] != "[":
                    out.append(operands[-1])
            elif token == "TJ" and operands and isinstance(operands[-1], list):
                for item in operands[-1]:
                    if isinstance(item, str):
                        out.append(item)
                    elif isinstance(item, float) and item < -200:
                        out.append(" ")
            elif token in ("Td", "TD") and len(operands) >= 2:
                out.append("\n" if operands[-1] != 0 else " ")
            elif token == "Tm" and len(operands) >= 6 and isinstance(operands[-1], float):
                out.append("\n" if last_y is not None and operands[-1] != last_y else " ")
                last_y = operands[-1]
            elif token in ("T*", "ET"):
                out.append("\n")
            operands.clear()
    return "".join(out)


_STREAM = re.compile(rb"stream\r?\n")
_MAX_INFLATED = 8 * 1024 * 1024


def pdf_text(data: bytes) -> str | None:
    """The text of a simple PDF, or ``None`` when it cannot be read simply.

    Simple: not encrypted, text in content streams that are uncompressed or
    Flate-compressed, shown with literal or hex strings in a single-byte
    encoding. Scanned pages, CID fonts and other filters give ``None`` (or
    text that fails the printable check), and the invoice goes to review.

    >>> page = b"%PDF-1.4\\n1 0 obj <<>> stream\\nBT (W-1  5 x 2.50) Tj ET\\nendstream endobj"
    >>> pdf_text(page)
    'W-1 5 x 2.50'
    """
    if b"/Encrypt" in data:
        return None
    chunks: list[str] = []
    budget = _MAX_INFLATED
    for match in _STREAM.finditer(data):
        if data[match.start() - 3 : match.start()] == b"end":
            continue
        header = data[max(0, match.start() - 1024) : match.start()]
        header = header[header.rfind(b"obj") + 3 :] if b"obj" in header else header
        end = data.find(b"endstream", match.end())
        if end < 0:
            break
        raw = data[match.end() : end]
        filters = re.findall(rb"/(\w+Decode)\b", header)
        if filters == [b"FlateDecode"]:
            try:
                inflater = zlib.decompressobj()
                raw = inflater.decompress(raw, budget)
            except zlib.error:
                continue
        elif filters:
            continue  # images (DCT, CCITT...) or filters we do not read
        budget -= len(raw)
        if budget <= 0:
            return None
        if b"BT" in raw:
            chunks.append(_content_text(raw))
    text = "\n".join(chunks)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line)
    visible = [ch for ch in text if not ch.isspace()]
    if sum(ch.isalnum() for ch in visible) < 4:
        return None
    printable = sum(ch.isprintable() for ch in visible)
    if printable < 0.95 * len(visible):
        return None
    return text


def model_input(content_type: str, data: bytes, filename: str) -> list[dict[str, Any]]:
    """The user message content for the model; :class:`Unreadable` says why there is none."""
    if content_type == "text/plain":
        text = decode_text(data)
    elif content_type == "application/pdf":
        found = pdf_text(data)
        if found is None:
            raise Unreadable(
                "the PDF's text cannot be read simply (scanned, encrypted or complex): "
                "enter the lines by hand"
            )
        text = found
    else:
        url = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return [
            {"type": "text", "text": f"The invoice {filename!r} is this image:"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    if len(text) > MAX_TEXT_CHARS:
        raise Unreadable(
            f"the invoice text has {len(text)} characters, more than the {MAX_TEXT_CHARS} "
            "sent for extraction: enter the lines by hand"
        )
    return [{"type": "text", "text": f"The invoice {filename!r}:\n\n{text}"}]


def decode_text(data: bytes) -> str:
    """A text invoice's characters: UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
