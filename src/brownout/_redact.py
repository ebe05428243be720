"""Remove secrets (passwords in URLs, API keys, tokens) from text shown to people."""

from __future__ import annotations

import re

__all__ = ["redact"]

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)"), r"\g<pre>***"),
    # OpenAI-style keys and bearer tokens
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-~+/]+=*"), r"\1***"),
    # key=value pairs whose key names a secret
    (
        re.compile(
            r"(?i)(?<![\w-])([\w-]*(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token)"
            r"[\w-]*)(['\"]?\s*[=:]\s*)(['\"]?)[^\s'\"&,;]+"
        ),
        r"\1\2\3***",
    ),
)


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with secrets replaced by ``***``.

    Known shapes (URL passwords, ``sk-`` keys, bearer tokens, ``password=``)
    are always removed; ``secrets`` are exact strings (a configured password
    or API key) removed wherever they appear.

    >>> redact("connect to postgresql://app:hunter2@db:5432/x failed")
    'connect to postgresql://app:***@db:5432/x failed'
    """
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
