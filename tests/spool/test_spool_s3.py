"""The spool against moto's S3 server, with outages made by the fault proxy."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from brownout import BreakerConfig, State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.s3 import AsyncS3Adapter, S3Adapter
from brownout.spool import SHA256_METADATA, Spool, SpoolEntry, SpoolUploader
from brownout.testing import aeventually
from brownout.testing.servers import S3Server

FAST = BreakerConfig(consecutive_failures=2, open_for=0.3, half_open_calls=1)
CHILD = Path(__file__).with_name("_crash_child.py")


def _settings(url: str) -> dict[str, Any]:
    return {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "connect_timeout": 0.3,
        "read_timeout": 1.0,
        "config": FAST,
    }


def payloads(n: int) -> dict[str, bytes]:
    return {
        f"docs/{i:03d}.bin": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(n)
    }


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as sp:
        yield sp


@pytest.fixture
async def proxied_s3(
    s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> AsyncIterator[AsyncS3Adapter]:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    async with AsyncS3Adapter.create(fresh_bucket, **_settings(url)) as s3:
        yield s3


def state_of(s3: AsyncS3Adapter | S3Adapter) -> State:
    return s3.breaker.state


def in_s3(s3_server: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


async def test_uploads_during_an_outage_are_spooled_served_and_drained(
    spool: Spool,
    proxied_s3: AsyncS3Adapter,
    s3_proxy: ThreadedFaultProxy,
    s3_server: S3Server,
    fresh_bucket: str,
) -> None:
    uploader = SpoolUploader(spool, proxied_s3, heartbeat=0.05)
    data = payloads(12)
    s3_proxy.set_mode(Mode.REFUSE)
    for key, body in data.items():
        outcome = await uploader.upload(fresh_bucket, key, body, content_type="application/x-test")
        assert outcome == "spooled"
    # the breaker opened (its 0.3 s may be over by now on a loaded machine: half-open)
    assert state_of(proxied_s3) in (State.OPEN, State.HALF_OPEN)
    assert spool.stats()["files"] == 12
    for key, body in data.items():  # downloads are served from the spool meanwhile
        assert await uploader.download(fresh_bucket, key) == body
    report = await uploader.drain()  # still down: stops at once, keeps everything
    assert report.uploaded == 0
    assert report.stopped is not None
    assert len(spool.entries()) == 12

    s3_proxy.set_mode(Mode.PASS)
    uploader.watch(proxied_s3.breaker)
    await uploader.start()
    try:
        await aeventually(lambda: not spool.entries(), timeout=15, what="the spool drained")
    finally:
        await uploader.stop()
    assert state_of(proxied_s3) is State.CLOSED
    for key, body in data.items():
        assert in_s3(s3_server, fresh_bucket, key) == body
        head = s3_server.client().head_object(Bucket=fresh_bucket, Key=key)
        assert head["Metadata"][SHA256_METADATA] == hashlib.sha256(body).hexdigest()
        assert head["ContentType"] == "application/x-test"
    assert spool.stats()["files"] == 0
    assert sorted(p.name for p in (spool.directory / "objects").iterdir()) == []


async def test_sync_adapter_through_a_thread(
    spool: Spool, s3_server: S3Server, s3_proxy: ThreadedFaultProxy, fresh_bucket: str
) -> None:
    url = s3_server.endpoint_url_for(port=s3_proxy.port)
    with S3Adapter.create(fresh_bucket, **_settings(url)) as s3:
        uploader = SpoolUploader(spool, s3)
        s3_proxy.set_mode(Mode.REFUSE)
        assert await uploader.upload(fresh_bucket, "a.txt", b"hello") == "spooled"
        s3_proxy.set_mode(Mode.PASS)
        await aeventually(
            lambda: s3.breaker.state is not State.OPEN, timeout=15, what="the breaker not open"
        )
        report = await uploader.drain()
        assert (report.uploaded, report.stopped) == (1, None)
        assert await uploader.download(fresh_bucket, "a.txt") == b"hello"  # now from S3
    assert in_s3(s3_server, fresh_bucket, "a.txt") == b"hello"


async def test_a_missing_bucket_marks_the_entry_failed_at_once_not_an_outage(
    spool: Spool, s3_server: S3Server, fresh_bucket: str
) -> None:
    """NoSuchBucket is no outage (the drain goes on) and no retrying fixes it: the entry is
    marked failed with the bucket and the reason, kept, and not tried again."""
    async with AsyncS3Adapter.create(fresh_bucket, **_settings(s3_server.endpoint_url)) as s3:
        spool.put("no-such-bucket-brownout", "k", b"x")
        spool.put(fresh_bucket, "k", b"y")
        uploader = SpoolUploader(spool, s3)
        report = await uploader.drain()
        assert (report.uploaded, report.failed, report.gave_up, report.stopped) == (1, 1, 1, None)
        (left,) = spool.entries()
        assert left.attempts == 1
        assert left.failed is not None and left.failed_at is not None
        assert "NoSuchBucket" in left.failed and "'no-such-bucket-brownout'" in left.failed
        assert spool.failed() == [left]
        stats = spool.stats()
        assert (stats["failed"], stats["failed_bytes"], stats["files"]) == (1, 1, 1)
        (group,) = stats["failures"]
        assert group["count"] == 1 and group["destination"] == "no-such-bucket-brownout/k"
        assert "NoSuchBucket" in group["reason"]
        # not tried again: a failed entry waits for an operator
        report = await uploader.drain()
        assert (report.failed, report.skipped) == (0, 1)
        assert spool.entries()[0].attempts == 1
        # ... who retargets it to the configured bucket: it is uploaded and verified
        moved = spool.retarget(left, None)
        assert (moved.bucket, moved.failed, moved.attempts) == (None, None, 0)
        report = await uploader.drain()
        assert (report.uploaded, report.failed) == (1, 0)
    assert spool.entries() == []
    assert in_s3(s3_server, fresh_bucket, "k") == b"x"  # the retargeted one came last


async def test_entries_spooled_without_a_bucket_go_to_the_configured_one(
    spool: Spool, s3_server: S3Server, fresh_bucket: str
) -> None:
    """An upload spooled before any bucket was configured (bucket None) goes to the bucket
    the adapter has when it is uploaded; the spool serves it under None until then."""
    spool.put(None, "inv/1.txt", b"first", content_type="text/plain")
    assert spool.get(None, "inv/1.txt") == b"first"
    assert spool.stats()["unbound"] == 1
    async with AsyncS3Adapter.create(fresh_bucket, **_settings(s3_server.endpoint_url)) as s3:
        uploader = SpoolUploader(spool, s3)
        assert uploader.bucket == fresh_bucket
        report = await uploader.drain()
        assert (report.uploaded, report.failed) == (1, 0)
        assert await uploader.download(None, "inv/1.txt") == b"first"  # now from S3
    assert in_s3(s3_server, fresh_bucket, "inv/1.txt") == b"first"


async def test_a_crash_between_upload_and_local_delete_loses_nothing(
    tmp_path: Path, s3_server: S3Server, fresh_bucket: str
) -> None:
    """In-process: the drain dies right after S3 accepted an object; a new process re-uploads
    the same bytes to the same key (idempotent) and cleans up."""

    class Crash(BaseException):
        pass

    directory = tmp_path / "spool"
    data = payloads(5)
    sp = Spool(directory)
    for key, body in data.items():
        sp.put(fresh_bucket, key, body)
    calls = removed = finished = 0
    real_remove = sp.remove

    def crashing_remove(entry: SpoolEntry) -> bool:
        nonlocal calls, removed, finished
        calls += 1
        if calls == 3:
            raise Crash
        done = real_remove(entry)
        removed += done
        finished += 1
        return done

    sp.remove = crashing_remove  # type: ignore[method-assign]
    async with AsyncS3Adapter.create(fresh_bucket, **_settings(s3_server.endpoint_url)) as s3:
        with pytest.raises(Crash):
            await SpoolUploader(sp, s3).drain()
        # removals already in their worker threads finish after the drain raised
        await aeventually(lambda: finished == calls - 1, what="the removals in flight")
        sp.close()
        # uploads run concurrently: one or more finished beside the crash; the 3rd is in
        # S3 and still spooled
        left = len(data) - removed
        assert removed >= 2 and left >= 1
        assert len(list((directory / "objects").glob("*.json"))) == left
        with Spool(directory) as again:
            report = await SpoolUploader(again, s3).drain()
            assert report.uploaded == left
            assert again.entries() == []
    for key, body in data.items():
        assert in_s3(s3_server, fresh_bucket, key) == body


@pytest.mark.slow
def test_kill_9_between_upload_and_local_delete(
    tmp_path: Path, s3_server: S3Server, fresh_bucket: str
) -> None:
    directory = tmp_path / "spool"
    data = payloads(6)
    with Spool(directory) as sp:
        for key, body in data.items():
            sp.put(fresh_bucket, key, body)
    uploaded: list[str] = []
    for kill_after in (2, 2, 0):
        proc = subprocess.run(
            [
                sys.executable,
                str(CHILD),
                str(directory),
                s3_server.endpoint_url,
                fresh_bucket,
                str(kill_after),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = proc.stdout.splitlines()
        uploaded += [line.split()[1] for line in lines if line.startswith("UPLOADED ")]
        if kill_after:
            assert proc.returncode == -9, proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
            assert "DONE" in lines
    # each killed run left its last upload spooled: it was uploaded again by the next run
    assert len(uploaded) == 6 + 2
    assert len(set(uploaded)) == 6
    with Spool(directory) as sp:
        assert sp.entries() == []
    for key, body in data.items():
        assert in_s3(s3_server, fresh_bucket, key) == body
