"""Cache coherence under the kill switch (``BROWNOUT_DISABLED=1`` when it is created):
``max_wait`` is not applied (a write waits for its DEL as long as the client takes),
and a DEL that fails is still recorded. No clock is involved: the DEL is held by an
event the test sets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from brownout.coherence import CacheCoherence


class HeldRedis:
    """An async adapter stand-in whose DEL answers when ``release`` is set (or fails)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = False
        self.deleted: list[object] = []

    async def delete(self, *keys: object) -> int:
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise ConnectionRefusedError("Connection refused (fake)")
        self.deleted.extend(keys)
        return len(keys)


async def _invalidate_held(cc: CacheCoherence, redis: HeldRedis) -> asyncio.Task[bool]:
    """Start an invalidation and let it run until Redis holds its DEL, then a little more
    (a bounded wait of 0 s would have returned by then)."""
    task = asyncio.create_task(cc.ainvalidate("product:1"))
    await redis.started.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    return task


async def test_a_write_waits_for_its_del(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # without the kill switch, max_wait=0 answers at once and journals the key
    redis = HeldRedis()
    async with CacheCoherence(redis, tmp_path / "guarded.db", max_wait=0.0) as guarded:
        assert guarded.disabled is False and guarded.max_wait == 0.0
        task = await _invalidate_held(guarded, redis)
        assert len(guarded._late) == 1  # the DEL was left to finish in the background
        # answered with the DEL still held (the key is recorded in a thread: the timeout
        # only ends a failing run)
        assert await asyncio.wait_for(task, 60) is False
        assert guarded.pending_keys() == [b"product:1"]
        redis.release.set()
        await guarded.wait_reconciled()

    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    redis = HeldRedis()
    async with CacheCoherence(redis, tmp_path / "killed.db", max_wait=0.0) as cc:
        assert cc.disabled is True and cc.max_wait is None
        assert cc.stats()["max_wait_s"] is None and cc.stats()["disabled"] is True
        task = await _invalidate_held(cc, redis)
        assert not task.done() and not cc._late  # waiting for Redis, nothing left behind
        assert cc.pending() == 0
        redis.release.set()
        assert await task is True
        assert redis.deleted == ["product:1"] and cc.reads_allowed()


async def test_a_failed_del_is_still_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    redis = HeldRedis()
    redis.fail = True
    redis.release.set()
    async with CacheCoherence(redis, tmp_path / "killed.db", max_wait=0.02) as cc:
        assert await cc.ainvalidate("product:1") is False
        assert cc.pending_keys() == [b"product:1"] and not cc.reads_allowed()
        redis.fail = False
        report = await cc.areconcile()
        assert (report.deleted, report.remaining) == (1, 0) and cc.reads_allowed()
