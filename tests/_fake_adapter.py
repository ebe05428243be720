"""One in-memory adapter for the tests of the adapter base and of its metrics (Prometheus,
OpenTelemetry): no client library, no server; ``up`` says whether its dependency answers.

Its ``get`` is a cache read (a miss for ``"none"``, a caller error for ``"missing"``, a
dependency failure naming :data:`SECRET` in a URL while ``up`` is false); ``put``,
``download`` and ``chat`` record the figures of the other kinds of operation.
"""

from __future__ import annotations

import asyncio
from typing import Any

from brownout.adapter import Adapter, ErrorRule, ErrorTable, Figures

__all__ = ["SECRET", "FakeAdapter", "Missing"]

#: The password in the URL of its connection error (never to be seen in what it reports).
SECRET = "pa55-w0rd-xyz"


class Missing(Exception):
    """A caller error: the key asked for is not there."""


class FakeAdapter(Adapter):
    kind = "fake"
    errors = ErrorTable(
        ErrorRule(ConnectionError, True, "connection", "unreachable"),
        ErrorRule(Missing, False, "caller", "the caller asked for nothing"),
    )

    def __init__(self, pool: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.up = True
        self.pool = pool  # what extra_figures() reports; {"boom": True}: it raises
        self.probe_delay = 0.0

    def get(self, key: str) -> bytes | None:
        def fetch() -> bytes | None:
            if not self.up:
                raise ConnectionError(f"cannot reach fake://user:{SECRET}@host")
            if key == "missing":
                raise Missing(key)
            return None if key == "none" else key.encode()

        def count(result: bytes | None, figs: Figures) -> None:
            figs.cache_hits, figs.cache_misses = (0, 1) if result is None else (1, 0)

        return self._run("get", fetch, figures=Figures(key=key), on_result=count)

    def put(self, key: str, data: bytes) -> None:
        self._run("put", lambda: None, figures=Figures(key=key, bytes_sent=len(data)))

    def download(self, key: str) -> bytes:
        data = b"x" * 7

        def count(result: bytes, figs: Figures) -> None:
            figs.bytes_received = len(result)

        return self._run("download", lambda: data, figures=Figures(key=key), on_result=count)

    def chat(self, model: str | None) -> str:
        figs = Figures(model=model, prompt_tokens=11, completion_tokens=4)
        return self._run("chat", lambda: "hi", figures=figs)

    def extra_figures(self) -> dict[str, Any]:
        if self.pool is None:
            return {}
        if self.pool == {"boom": True}:
            raise RuntimeError("pool exploded")
        return dict(self.pool)

    def _probe_once(self) -> None:
        if not self.up:
            raise ConnectionError("down")

    async def _aprobe_once(self) -> None:
        await asyncio.sleep(self.probe_delay)
        self._probe_once()
