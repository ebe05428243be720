"""``record_ahead``: while Redis is slow, a write's cache key is recorded in the journal
during the write rather than after it (the write is not held for the recording's group
commit), and dropped once the DEL sent after the write succeeded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from brownout.coherence import Ahead, CacheCoherence
from tests.coherence.test_coherence import GatedRedis


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "var" / "coherence.db"


@asynccontextmanager
async def recording_ahead(journal: Path) -> AsyncIterator[tuple[CacheCoherence, GatedRedis, Ahead]]:
    """A journal that knows Redis is slow, and ``p:1`` recorded ahead of a write."""
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        await slow(cc, redis)
        ahead = cc.record_ahead("p:1")
        assert ahead is not None
        yield cc, redis, ahead


async def slow(cc: CacheCoherence, redis: GatedRedis) -> None:
    """Make ``cc`` know Redis is slow: one DEL past ``max_wait`` (then answered)."""
    cc.slow_backoff = 3600.0
    assert await cc.ainvalidate("warm") is False
    redis.release()
    await cc.wait_reconciled()
    redis.gate.clear()
    assert cc.pending() == 0


async def test_nothing_is_recorded_ahead_while_redis_is_not_known_slow(journal: Path) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        assert cc.record_ahead("p:1") is None
    async with CacheCoherence(redis, journal) as cc:  # no max_wait: writes wait for DELs
        assert cc.record_ahead("p:1") is None


async def test_a_key_recorded_ahead_is_in_the_journal_before_the_write_commits(
    journal: Path,
) -> None:
    async with recording_ahead(journal) as (cc, redis, ahead):
        await asyncio.shield(ahead.recording)  # committed while the write would run
        assert cc.pending_keys() == [b"p:1"] and not cc.reads_allowed()
        sent_before = redis.started
        # the write committed: the DEL is sent now, not waited for
        assert await cc.ainvalidate("p:1", ahead=ahead) is False
        await asyncio.sleep(0)  # the DEL's task starts
        assert redis.started == sent_before + 1 and redis.deleted == ["warm"]
        assert cc.pending_keys() == [b"p:1"]  # until Redis has done the DEL
        redis.release()
        await cc.wait_reconciled()
        assert redis.deleted == ["warm", "p:1"]
        assert cc.pending() == 0 and cc.reads_allowed()


async def test_the_write_is_answered_only_once_the_recording_is_committed(
    journal: Path,
) -> None:
    redis = GatedRedis()
    async with CacheCoherence(redis, journal, max_wait=0.0) as cc:
        await slow(cc, redis)
        ahead = cc.record_ahead("p:1")
        assert ahead is not None and not ahead.recording.done()
        answered = asyncio.create_task(cc.ainvalidate("p:1", ahead=ahead))
        await asyncio.sleep(0)
        assert not answered.done()  # the group commit has not returned yet
        assert await answered is False
        assert ahead.recording.done() and cc.pending_keys() == [b"p:1"]
        redis.release()
        await cc.wait_reconciled()


async def test_a_failed_del_after_an_ahead_record_leaves_the_key(journal: Path) -> None:
    async with recording_ahead(journal) as (cc, redis, ahead):
        assert await cc.ainvalidate("p:1", ahead=ahead) is False
        redis.fail = True
        redis.release()
        await cc.wait_reconciled()
        assert cc.pending_keys() == [b"p:1"] and not cc.reads_allowed()


async def test_a_write_that_did_not_commit_drops_its_ahead_record_after_a_del(
    journal: Path,
) -> None:
    async with recording_ahead(journal) as (cc, redis, ahead):
        cc.drop_ahead(ahead)
        redis.release()
        await cc.wait_reconciled()
        assert cc.pending() == 0 and redis.deleted[-1] == "p:1"


async def test_ahead_for_other_keys_is_a_clear_error(journal: Path) -> None:
    async with recording_ahead(journal) as (cc, redis, ahead):
        with pytest.raises(ValueError, match="other keys"):
            await cc.ainvalidate("p:2", ahead=ahead)
        cc.drop_ahead(ahead)
        redis.release()
        await cc.wait_reconciled()
