"""Fixtures every adapter test module uses: the sync/async flavour, and closing what a test made.

A factory fixture of a test module (``make``, ``adapters``, ``sync_dbs``, ...) builds its
adapter its own way and hands it to :func:`closing`; whatever the test made is closed
after it, the one way each closes (``aclose()`` for async, ``close()`` for sync).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

FLAVOURS = ("sync", "async")


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """Run the test once with the sync adapter and once with the async one."""
    return str(request.param)


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[T], T]]:
    """``closing(adapter)`` returns ``adapter``, closed after the test (last made, first closed)."""
    made: list[Any] = []

    def track(resource: T) -> T:
        made.append(resource)
        return resource

    yield track
    for resource in reversed(made):
        if hasattr(resource, "aclose"):
            await resource.aclose()
        else:
            resource.close()
