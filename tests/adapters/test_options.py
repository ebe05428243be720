"""The adapters' shared keyword options: one TypedDict, spelled once."""

from __future__ import annotations

import inspect

import pytest

from brownout.adapter import Adapter, AdapterOptions


def test_adapter_options_are_the_keyword_parameters_of_the_base() -> None:
    # Adapter.__init__ is where the options end up: a parameter added there without the
    # TypedDict (or the reverse) would make it unreachable through every adapter shell.
    params = inspect.signature(Adapter.__init__).parameters
    assert set(params) - {"self"} == set(AdapterOptions.__optional_keys__)
    assert not AdapterOptions.__required_keys__


def test_adapter_passes_the_options_on() -> None:
    options: AdapterOptions = {
        "name": "payments",
        "secrets": ["tok-123"],
        "probe_timeout": 0.5,
        "recent_operations": 3,
    }
    adapter = Adapter(**options)
    assert (adapter.name, adapter.probe_timeout) == ("payments", 0.5)
    assert "tok-123" in adapter._secrets


def test_every_adapter_closes_one_way() -> None:
    from brownout._lifetime import AsyncResource, SyncResource
    from brownout.openai import AsyncOpenAIAdapter, OpenAIAdapter
    from brownout.redis import AsyncRedisAdapter, RedisAdapter
    from brownout.s3 import AsyncS3Adapter, S3Adapter
    from brownout.sql import AsyncDatabase, Database

    for sync_cls in (RedisAdapter, S3Adapter, Database, OpenAIAdapter):
        assert issubclass(sync_cls, SyncResource), sync_cls
        assert not inspect.iscoroutinefunction(sync_cls.close), sync_cls
    for async_cls in (AsyncRedisAdapter, AsyncS3Adapter, AsyncDatabase, AsyncOpenAIAdapter):
        assert issubclass(async_cls, AsyncResource), async_cls
        assert inspect.iscoroutinefunction(async_cls.aclose), async_cls
        assert inspect.iscoroutinefunction(async_cls.__aexit__), async_cls


async def test_resources_close_on_leaving_the_block_even_on_an_error() -> None:
    from brownout._lifetime import AsyncResource, SyncResource

    closed: list[str] = []

    class Sync(SyncResource):
        def close(self) -> None:
            closed.append("sync")

    class Async(AsyncResource):
        async def aclose(self) -> None:
            closed.append("async")

    with pytest.raises(KeyError), Sync() as s:
        assert isinstance(s, Sync)
        raise KeyError("x")
    with pytest.raises(KeyError):
        async with Async() as a:
            assert isinstance(a, Async)
            raise KeyError("x")
    assert closed == ["sync", "async"]
