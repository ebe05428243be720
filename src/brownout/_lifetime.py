"""One way to close: ``close()`` and ``with`` for sync resources, ``aclose()`` and
``async with`` for async ones (as httpx's ``Client`` / ``AsyncClient``).

The adapters' shells mix in :class:`SyncResource` or :class:`AsyncResource` and
implement only ``close`` / ``aclose``.
"""

from __future__ import annotations

from typing import Self

__all__ = ["AsyncResource", "SyncResource"]


class SyncResource:
    """``with resource:`` closes it on leaving the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncResource:
    """``async with resource:`` awaits its :meth:`aclose` on leaving the block."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
