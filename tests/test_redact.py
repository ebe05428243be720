from __future__ import annotations

import pytest

from brownout import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql+asyncpg://inv:pa55word@db:5432/inv", "pa55word"),
        ("redis://:redispass@cache:6379/0", "redispass"),
        ("Incorrect API key provided: sk-proj-abcdEFGH1234", "abcdEFGH1234"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi"),
        ("password=hunter2 host=db", "hunter2"),
        ("aws_secret_access_key: 'wJalrXUtnFEMI'", "wJalrXUtnFEMI"),
    ],
)
def test_known_secret_shapes_are_removed(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_explicit_secrets_are_removed() -> None:
    assert redact("key is abc123xyz here", "abc123xyz") == "key is *** here"


def test_plain_text_is_untouched() -> None:
    text = "Connection refused: 127.0.0.1:6379"
    assert redact(text) == text
