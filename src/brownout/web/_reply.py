"""One HTTP answer of ``brownout.web``, framework-neutral: status, JSON body, headers."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JSON_CONTENT_TYPE", "Reply", "encode"]

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: status, JSON body, extra headers, content type."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON_CONTENT_TYPE

    def content(self) -> bytes:
        return encode(self.body)


def encode(body: Any) -> bytes:
    """Compact UTF-8 JSON; non-finite floats become ``null`` (JSON has no NaN or infinity).

    Lone surrogates (which UTF-8 cannot carry) become ``\\udXXX`` escapes in the text.
    """
    return json.dumps(
        _finite(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8", "backslashreplace")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_finite(v) for v in value]
    return value
