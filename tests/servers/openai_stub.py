"""Re-exports :mod:`brownout.testing.servers.openai_stub` (the code moved into the library)."""

from __future__ import annotations

from brownout.testing.servers.openai_stub import (
    _ERROR_TYPES,
    DEFAULT_CHAT_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_TEXT,
    Content,
    OpenAIStub,
    RecordedRequest,
    Rule,
    _embedding,
    _Handler,
    _norm,
    _StubHTTPServer,
    _tokens,
    example_from_schema,
)

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_TEXT",
    "_ERROR_TYPES",
    "Content",
    "OpenAIStub",
    "RecordedRequest",
    "Rule",
    "_Handler",
    "_StubHTTPServer",
    "_embedding",
    "_norm",
    "_tokens",
    "example_from_schema",
]
