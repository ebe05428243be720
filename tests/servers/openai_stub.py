"""Re-exports :mod:`brownout.testing.servers.openai_stub` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.openai_stub import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_TEXT,
    Content,
    OpenAIStub,
    RecordedRequest,
    Rule,
    _tokens,
    example_from_schema,
)

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_TEXT",
    "Content",
    "OpenAIStub",
    "RecordedRequest",
    "Rule",
    "_tokens",
    "example_from_schema",
]
