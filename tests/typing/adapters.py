"""Type-checked by mypy (make typecheck), never run: the adapters' shared options and
lifetimes keep their types."""

from __future__ import annotations

from typing import assert_type

from brownout import BreakerConfig, Registry
from brownout.adapter import AdapterOptions
from brownout.openai import AsyncOpenAIAdapter, OpenAIAdapter
from brownout.redis import AsyncRedisAdapter, RedisAdapter
from brownout.s3 import AsyncS3Adapter, S3Adapter, S3Options
from brownout.sql import AsyncDatabase, Database

options: AdapterOptions = {"name": "cache", "config": BreakerConfig(), "registry": Registry()}
s3_options: S3Options = {"name": "media", "page_size": 100}


async def use() -> None:
    assert_type(RedisAdapter.from_url("redis://cache", **options), RedisAdapter)
    cache = AsyncRedisAdapter.from_url("redis://cache", decode_responses=True, **options)
    assert_type(cache, AsyncRedisAdapter)
    assert_type(S3Adapter.create("media", **s3_options), S3Adapter)
    s3 = AsyncS3Adapter.create("media", endpoint_url="http://s3", **s3_options)
    assert_type(s3, AsyncS3Adapter)
    assert_type(Database.from_url("sqlite://", **options), Database)
    db = AsyncDatabase.from_url("sqlite+aiosqlite://", **options)
    assert_type(db, AsyncDatabase)
    ai = AsyncOpenAIAdapter(api_key="sk-test", **options)
    with OpenAIAdapter(api_key="sk-test", probe_timeout=1.0) as sync_ai:
        assert_type(sync_ai, OpenAIAdapter)
    with RedisAdapter.from_url("redis://cache") as sync_cache:
        assert_type(sync_cache, RedisAdapter)
    with S3Adapter.create("media") as sync_s3, Database.from_url("sqlite://") as sync_db:
        assert_type(sync_s3, S3Adapter)
        assert_type(sync_db, Database)
    async with cache, s3, db, ai:
        pass
    for resource in (cache, s3, db, ai):
        await resource.aclose()
    S3Adapter.create("media", page_size="many")  # type: ignore[arg-type]
    AsyncRedisAdapter(cache.client, recent_operations="all")  # type: ignore[arg-type]
