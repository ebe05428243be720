"""The spool directory on its own: durability, atomicity, bounds, corruption, path safety."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from brownout import BreakerOpen, State
from brownout.s3 import S3_ERRORS
from brownout.spool import (
    DEFAULT_MAX_BYTES,
    Spool,
    SpoolCorrupted,
    SpoolEntry,
    SpoolError,
    SpoolFull,
    SpoolUploader,
)
from brownout.spool._store import entry_id
from brownout.testing import FakeClock, aeventually
from tests._durability import MemoryS3


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool") as sp:
        yield sp


def files(sp: Spool) -> list[str]:
    return sorted(p.name for p in (sp.directory / "objects").iterdir())


def temp_files(sp: Spool) -> list[str]:
    return [name for name in files(sp) if name.startswith(".tmp-")]


# ------------------------------------------------------------------ basics


def test_put_get_entries_stats_remove(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    spool = Spool(tmp_path / "spool", clock=clock)
    e1 = spool.put("b", "a/1.txt", b"one", content_type="text/plain", metadata={"x": "1"})
    clock.advance(10)
    e2 = spool.put("b", "a/2.txt", io.BytesIO(b"two!"))
    assert spool.get("b", "a/1.txt") == b"one"
    assert spool.get("b", "missing") is None
    assert spool.get("other", "a/1.txt") is None
    assert [e.key for e in spool.entries()] == ["a/1.txt", "a/2.txt"]
    assert e1.sha256 == hashlib.sha256(b"one").hexdigest()
    assert e1.md5 == hashlib.md5(b"one").hexdigest()
    assert (e1.size, e1.content_type, dict(e1.metadata)) == (3, "text/plain", {"x": "1"})
    clock.advance(20)
    stats = spool.stats()
    assert stats["files"] == 2
    assert stats["bytes"] == 7
    assert stats["oldest_age_s"] == 30.0
    assert stats["max_bytes"] == DEFAULT_MAX_BYTES == 1024**3
    assert spool.remove(e1)
    assert not spool.remove(e1)
    assert spool.get("b", "a/1.txt") is None
    assert [e.key for e in spool.entries()] == [e2.key]
    assert temp_files(spool) == []
    spool.close()


def test_manifest_has_the_documented_fields(spool: Spool) -> None:
    entry = spool.put("bkt", "k", b"data", content_type="a/b", metadata={"m": "v"})
    doc = json.loads((spool.directory / "objects" / f"{entry.id}.json").read_text())
    for name in (
        "bucket",
        "key",
        "sha256",
        "size",
        "content_type",
        "metadata",
        "created",
        "attempts",
        "last_error",
    ):
        assert name in doc
    assert (doc["bucket"], doc["key"], doc["size"], doc["attempts"]) == ("bkt", "k", 4, 0)


def test_entries_survive_reopening(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp:
        sp.put("b", "k1", b"x" * 10)
        sp.put("b", "k2", b"y" * 20)
    with Spool(tmp_path) as sp:
        assert sp.get("b", "k1") == b"x" * 10
        assert sp.get("b", "k2") == b"y" * 20
        assert sp.stats()["bytes"] == 30


def test_same_bucket_and_key_replaces_the_older_version(spool: Spool) -> None:
    old = spool.put("b", "k", b"old")
    new = spool.put("b", "k", b"newer")
    assert spool.get("b", "k") == b"newer"
    assert len(spool.entries()) == 1
    assert spool.stats()["bytes"] == 5
    # only the new payload and its manifest remain
    assert sorted(files(spool)) == sorted([f"{new.id}.json", new.payload])
    # a drain that uploaded the old version must not remove the new one
    assert not spool.remove(old)
    assert spool.get("b", "k") == b"newer"
    with pytest.raises(KeyError):
        spool.read(old)


def test_one_spool_per_directory(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError, match="in use by another Spool") as refused:
        Spool(tmp_path)
    # the error says what to do, not only what is wrong
    message = str(refused.value)
    assert str(tmp_path) in message
    assert "close the other Spool" in message
    assert "another directory" in message
    assert "shared=True" in message
    Spool(tmp_path).close()  # free again once closed


def test_bad_arguments_write_nothing(spool: Spool) -> None:
    with pytest.raises(TypeError, match="not str"):
        spool.put("b", "k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        spool.put("b", "k", b"x", metadata={"sha256": "forged"})
    with pytest.raises(ValueError, match="key"):
        spool.put("b", "", b"x")
    with pytest.raises(TypeError, match="binary"):
        spool.put("b", "k", io.StringIO("text"))  # type: ignore[arg-type]
    assert files(spool) == []


def test_closed_spool_refuses(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.close()
    with pytest.raises(SpoolError, match="closed"):
        sp.put("b", "k", b"x")


# ------------------------------------------------------------------ path safety


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "/etc/passwd", "a/../../b", "..", "x\0y", "quarantine/../.lock", "é/ü"],
)
def test_keys_never_become_paths(tmp_path: Path, key: str) -> None:
    root = tmp_path / "spool"
    with Spool(root) as sp:
        entry = sp.put("../bucket", key, b"payload")
        assert sp.get("../bucket", key) == b"payload"
        assert entry.id == entry_id("../bucket", key)
        names = files(sp)
    assert sorted(names) == sorted([f"{entry.id}.json", entry.payload])
    for name in names:
        assert "/" not in name
        assert name.startswith(entry.id)
    # nothing was created outside the spool directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool"]
    assert sorted(p.name for p in root.iterdir()) == [".lock", "objects", "quarantine"]


# ------------------------------------------------------------------ bounds


def test_full_by_files_writes_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path, max_files=2) as sp:
        sp.put("b", "1", b"a")
        sp.put("b", "2", b"b")
        before = files(sp)
        with pytest.raises(SpoolFull, match=r"2 files \(max_files=2\)") as info:
            sp.put("b", "3", b"c")
        assert info.value.retry_after > 0
        assert files(sp) == before
        sp.put("b", "2", b"replacing does not add a file")
        assert sp.get("b", "2") == b"replacing does not add a file"


def test_full_by_bytes_writes_nothing_even_for_a_stream(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=100) as sp:
        sp.put("b", "1", b"x" * 60)
        before = files(sp)
        with pytest.raises(SpoolFull, match=r"max_bytes=100"):
            sp.put("b", "2", io.BytesIO(b"y" * 50))
        assert files(sp) == before
        assert temp_files(sp) == []
        # replacing an entry frees its bytes first
        sp.put("b", "1", b"z" * 100)
        assert sp.stats()["bytes"] == 100


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool("/nonexistent-never-created", max_bytes=0)


# ------------------------------------------------------------------ atomicity


def _fail_replace_of(monkeypatch: pytest.MonkeyPatch, which: str) -> list[str]:
    """Make os.replace fail for the payload (.data) or the manifest (.json)."""
    real = os.replace
    seen: list[str] = []

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        seen.append(str(dst))
        if str(dst).endswith(which):
            raise OSError(28, "No space left on device")
        real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return seen


@pytest.mark.parametrize("which", [".data", ".json"])
def test_failure_between_write_and_rename_keeps_the_old_version(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    spool.put("b", "k", b"old version")
    before = files(spool)
    seen = _fail_replace_of(monkeypatch, which)
    with pytest.raises(SpoolError, match=r"disk full\?.*nothing was spooled"):
        spool.put("b", "k", b"new version")
    assert any(s.endswith(which) for s in seen)
    monkeypatch.undo()
    assert files(spool) == before  # no temp file, no orphan payload
    assert spool.get("b", "k") == b"old version"


def test_failure_of_a_first_put_leaves_nothing(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_replace_of(monkeypatch, ".json")
    with pytest.raises(SpoolError):
        spool.put("b", "k", b"data")
    monkeypatch.undo()
    assert files(spool) == []
    assert spool.get("b", "k") is None


def test_a_crash_mid_put_leaves_the_old_or_the_new_version(tmp_path: Path) -> None:
    """A killed process leaves temp files and maybe an unreferenced payload; reopening
    removes them and serves the last committed version, never a torn one."""
    with Spool(tmp_path) as sp:
        old = sp.put("b", "k", b"old")
    objects = tmp_path / "objects"
    # crash while writing the new payload (temp not renamed), and one after its rename
    (objects / ".tmp-0123456789abcdef").write_bytes(b"ne")
    (objects / f"{old.id}.fedcba9876543210.data").write_bytes(b"new")
    (objects / ".tmp-aaaaaaaaaaaaaaaa").write_bytes(b'{"version": 1, "bucket"')  # torn manifest
    with Spool(tmp_path) as sp:
        assert sp.get("b", "k") == b"old"
        assert sorted(files(sp)) == sorted([f"{old.id}.json", old.payload])
        assert sp.quarantined() == []
    # crash after the manifest rename but before the old payload was removed
    with Spool(tmp_path) as sp:
        new = sp.put("b", "k", b"new")
    (objects / old.payload).write_bytes(b"old")
    with Spool(tmp_path) as sp:
        assert sp.get("b", "k") == b"new"
        assert sorted(files(sp)) == sorted([f"{new.id}.json", new.payload])


def test_a_put_failing_mid_stream_leaves_no_temp_file(spool: Spool) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError(5, "Input/output error")
            return b"x" * 10

    with pytest.raises(SpoolError, match="Input/output error"):
        spool.put("b", "k", Broken())
    assert files(spool) == []


# ------------------------------------------------------------------ corruption


def test_corrupted_payload_is_quarantined_and_reported(spool: Spool) -> None:
    events: list[tuple[str, Mapping[str, Any]]] = []
    spool.add_listener(lambda event: events.append((event.kind, event.fields)))
    entry = spool.put("b", "k", b"good bytes")
    spool.put("b", "other", b"fine")
    (spool.directory / "objects" / entry.payload).write_bytes(b"evil bytes")  # same size
    with pytest.raises(SpoolCorrupted, match=r"checksum mismatch.*quarantine"):
        spool.get("b", "k")
    assert spool.get("b", "k") is None
    assert [e.key for e in spool.entries()] == ["other"]
    reasons = spool.quarantined()
    assert len(reasons) == 1
    assert "b/k" in reasons[0].read_text()
    kept = sorted(p.name for p in (spool.directory / "quarantine").iterdir())
    assert any(name.endswith(entry.payload) for name in kept)  # moved, never deleted
    assert any(name.endswith(f"{entry.id}.json") for name in kept)
    assert ("quarantined", {"bucket": "b", "key": "k", "reason": events[-1][1]["reason"]}) in events
    assert spool.stats()["quarantined"] == 1


def test_corrupted_manifest_is_quarantined_on_open(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp:
        bad = sp.put("b", "bad", b"1")
        sp.put("b", "good", b"2")
        truncated = sp.put("b", "short", b"12345")
    objects = tmp_path / "objects"
    (objects / f"{bad.id}.json").write_text("{not json")
    (objects / truncated.payload).write_bytes(b"12")  # torn payload
    with Spool(tmp_path) as sp:
        assert [e.key for e in sp.entries()] == ["good"]
        assert len(sp.quarantined()) == 2
        texts = " ".join(p.read_text() for p in sp.quarantined())
        assert "unreadable manifest" in texts
        assert "payload is 2 bytes, the manifest says 5" in texts
        quarantine = list((tmp_path / "quarantine").iterdir())
        assert len(quarantine) == 2 + 4  # 2 reason files, 2 manifests, 2 payloads


def test_manifest_renamed_to_another_key_is_quarantined(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp:
        a = sp.put("b", "a", b"1")
    objects = tmp_path / "objects"
    forged = json.loads((objects / f"{a.id}.json").read_text())
    forged["key"] = "../../etc/passwd"
    (objects / f"{a.id}.json").write_text(json.dumps(forged))
    with Spool(tmp_path) as sp:
        assert sp.entries() == []
        assert "do not match its file name" in sp.quarantined()[0].read_text()


def test_verify_checks_every_payload(spool: Spool) -> None:
    e = spool.put("b", "k", b"abc")
    spool.put("b", "j", b"def")
    (spool.directory / "objects" / e.payload).write_bytes(b"abd")
    problems = spool.verify()
    assert len(problems) == 1
    assert "b/k" in problems[0]
    assert [x.key for x in spool.entries()] == ["j"]


# ------------------------------------------------------------------ uploader with a fake S3


async def test_drain_uploads_verifies_and_removes(spool: Spool) -> None:
    s3 = MemoryS3()
    spool.put("b", "k1", b"one", metadata={"a": "1"})
    spool.put("b", "k2", b"two")
    report = await SpoolUploader(spool, s3).drain()
    assert (report.uploaded, report.bytes, report.stopped) == (2, 6, None)
    assert s3.objects[("b", "k1")] == (
        b"one",
        {"a": "1", "sha256": hashlib.sha256(b"one").hexdigest()},
    )
    assert spool.entries() == []


async def test_drain_stops_on_an_outage_and_keeps_the_rest(spool: Spool) -> None:
    s3 = MemoryS3()
    spool.put("b", "k1", b"one")
    s3.fail = BreakerOpen("s3", State.OPEN, 5.0)
    report = await SpoolUploader(spool, s3).drain()
    assert report.uploaded == 0
    assert report.stopped is not None
    assert [e.attempts for e in spool.entries()] == [0]  # an outage is not the entry's fault


async def test_caller_errors_and_bad_verification_count_attempts(spool: Spool) -> None:
    s3 = MemoryS3()
    spool.put("b", "k1", b"one")
    uploader = SpoolUploader(spool, s3, max_attempts=2)
    s3.corrupt_on_upload = True
    report = await uploader.drain()
    assert report.failed == 1
    assert "ETag" in report.errors[0] or "sha256" in report.errors[0]
    (entry,) = spool.entries()
    assert entry.attempts == 1
    assert entry.last_error is not None
    s3.fail = KeyError("NoSuchBucket")  # not an outage for the default rule of a fake
    report = await uploader.drain()
    assert report.failed == 1
    report = await uploader.drain()
    assert (report.skipped, report.failed) == (1, 0)  # at max_attempts: kept, skipped
    assert spool.reset_attempts() == 1
    s3.fail = None
    s3.corrupt_on_upload = False
    report = await uploader.drain()
    assert report.uploaded == 1
    assert spool.entries() == []


async def test_corrupted_entry_is_never_uploaded(spool: Spool) -> None:
    s3 = MemoryS3()
    e = spool.put("b", "k", b"abc")
    (spool.directory / "objects" / e.payload).write_bytes(b"xyz")
    report = await SpoolUploader(spool, s3).drain()
    assert (report.uploaded, report.quarantined) == (0, 1)
    assert s3.objects == {}


async def test_upload_helper_spools_behind_an_older_spooled_version(spool: Spool) -> None:
    s3 = MemoryS3()
    uploader = SpoolUploader(spool, s3)
    assert await uploader.upload("b", "k", b"v1") == "uploaded"
    s3.fail = ConnectionRefusedError("refused")
    assert await uploader.upload("b", "k", b"v2") == "spooled"
    assert await uploader.download("b", "k") == b"v2"  # served from the spool
    s3.fail = None
    # S3 is back, but v2 is still spooled: v3 must not be overtaken by a later drain of v2
    assert await uploader.upload("b", "k", b"v3") == "spooled"
    await uploader.drain()
    assert s3.objects[("b", "k")][0] == b"v3"
    assert await uploader.download("b", "k") == b"v3"
    s3.fail = KeyError("NoSuchBucket")
    with pytest.raises(KeyError):
        await uploader.upload("b", "k", b"v4")  # a caller error is not spooled
    assert spool.entries() == []


def test_entry_is_a_value(spool: Spool) -> None:
    e = spool.put("b", "k", b"x")
    assert isinstance(e, SpoolEntry)
    assert "payload" not in repr(e)


# ------------------------------------------------------------------ failed entries (operator)


class ForbiddingS3(MemoryS3):
    """A fake with the S3 adapter's error table, refusing uploads as S3 would."""

    errors = S3_ERRORS

    def __init__(self, code: str, status: int) -> None:
        super().__init__(bucket="configured")
        self.code, self.status = code, status

    async def upload(self, key: str, data: bytes, **kwargs: Any) -> str:
        if kwargs.get("bucket") != "configured" and self.code:
            error = {"Error": {"Code": self.code, "Message": "refused"}}
            meta = {"ResponseMetadata": {"HTTPStatusCode": self.status}}
            raise ClientError({**error, **meta}, "PutObject")  # type: ignore[arg-type]
        return await super().upload(key, data, **kwargs)


@pytest.mark.parametrize(
    ("code", "status"), [("NoSuchBucket", 404), ("AccessDenied", 403), ("InvalidArgument", 400)]
)
async def test_a_destination_refusing_for_good_fails_the_entry_at_once(
    spool: Spool, code: str, status: int
) -> None:
    events: list[tuple[str, Mapping[str, Any]]] = []
    spool.add_listener(lambda event: events.append((event.kind, event.fields)))
    spool.put("gone", "k", b"x")
    report = await SpoolUploader(spool, ForbiddingS3(code, status), max_attempts=5).drain()
    (entry,) = spool.failed()
    assert (report.failed, report.gave_up, entry.attempts) == (1, 1, 1)
    assert entry.failed is not None and code in entry.failed and "'gone'" in entry.failed
    assert ("failed", True) in [(e, f.get("gave_up")) for e, f in events]


async def test_other_errors_fail_the_entry_after_max_attempts(spool: Spool) -> None:
    s3 = MemoryS3()
    s3.fail = KeyError("odd")  # a fake without an error table: never permanent
    spool.put("b", "k", b"x")
    uploader = SpoolUploader(spool, s3, max_attempts=3)
    for attempt in (1, 2):
        await uploader.drain()
        assert [(e.attempts, e.failed) for e in spool.entries()] == [(attempt, None)]
    report = await uploader.drain()
    (entry,) = spool.failed()
    assert report.gave_up == 1 and entry.failed is not None
    assert entry.failed.startswith("gave up after 3 attempts: bucket 'b': KeyError")


def test_failed_entries_survive_reopening_and_are_grouped_in_stats(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp:
        for key in ("a", "b", "c"):
            sp.mark_failed(sp.put("old", key, b"xy"), "NoSuchBucket", give_up=True)
        sp.mark_failed(sp.put("other", "d", b"z"), "AccessDenied", give_up=True)
        sp.put(None, "e", b"pending")
    with Spool(tmp_path) as sp:
        stats = sp.stats()
        assert (stats["files"], stats["failed"], stats["failed_bytes"], stats["unbound"]) == (
            5,
            4,
            7,
            1,
        )
        assert [(g["reason"], g["count"]) for g in stats["failures"]] == [
            ("NoSuchBucket", 3),
            ("AccessDenied", 1),
        ]
        assert stats["failures"][0]["destination"] == "old/a"
        assert sp.reset_attempts() == 4
        assert sp.failed() == [] and sp.stats()["failures"] == []


def test_retarget_moves_the_entry_and_its_bytes(spool: Spool) -> None:
    old = spool.mark_failed(spool.put("gone", "k", b"data"), "NoSuchBucket", give_up=True)
    assert old is not None
    moved = spool.retarget(old, "new")
    assert (moved.bucket, moved.key, moved.failed, moved.attempts) == ("new", "k", None, 0)
    assert moved.id == entry_id("new", "k") and moved.sha256 == old.sha256
    assert spool.entry("gone", "k") is None and spool.get("new", "k") == b"data"
    assert len(files(spool)) == 2  # one manifest, one payload: the old ones are gone
    with pytest.raises(KeyError):
        spool.retarget(old, "elsewhere")  # that version is no longer spooled
    to_none = spool.retarget(moved, None)
    assert to_none.bucket is None and spool.get(None, "k") == b"data"


def test_retarget_refuses_to_replace_an_entry_already_there(spool: Spool) -> None:
    old = spool.put("gone", "k", b"old")
    spool.put("new", "k", b"newer")
    with pytest.raises(SpoolError, match="already spooled"):
        spool.retarget(old, "new")
    assert spool.get("gone", "k") == b"old" and spool.get("new", "k") == b"newer"


def test_a_retarget_interrupted_after_its_commit_is_finished_on_open(tmp_path: Path) -> None:
    """Both manifests on disk (the crash came after the new one was renamed into place):
    the next open keeps the new destination only, with its bytes."""
    with Spool(tmp_path) as sp:
        old = sp.put("gone", "k", b"payload")
        saved = {
            name: (tmp_path / "objects" / name).read_bytes()
            for name in (f"{old.id}.json", old.payload)
        }
        sp.retarget(old, "new")
    for name, data in saved.items():  # undo the removal of the old files
        (tmp_path / "objects" / name).write_bytes(data)
    with Spool(tmp_path) as sp:
        assert [(e.bucket, e.key) for e in sp.entries()] == [("new", "k")]
        assert sp.get("new", "k") == b"payload"
        assert len(list((tmp_path / "objects").iterdir())) == 2
        assert sp.quarantined() == []


def test_discard_deletes_and_tells_listeners(spool: Spool) -> None:
    events: list[str] = []
    spool.add_listener(lambda event: events.append(event.kind))
    entry = spool.put("b", "k", b"x")
    assert spool.discard(entry, "test")
    assert not spool.discard(entry)
    assert spool.entries() == [] and files(spool) == []
    assert events == ["spooled", "discarded"]


def test_a_manifest_without_a_bucket_is_read_back(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp:
        entry = sp.put(None, "k", b"x")
    doc = json.loads((tmp_path / "objects" / f"{entry.id}.json").read_text())
    assert doc["bucket"] is None and doc["failed"] is None
    with Spool(tmp_path) as sp:
        assert sp.entry(None, "k") == entry and sp.entry("k", "") is None


class GatedS3(MemoryS3):
    """Uploads wait at a gate: shows how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most = 0

    async def upload(self, key: str, data: bytes, **kwargs: Any) -> str:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            return await super().upload(key, data, **kwargs)
        finally:
            self.in_flight -= 1


async def test_uploads_run_concurrently_up_to_the_bound(spool: Spool) -> None:
    s3 = GatedS3()
    for i in range(10):
        spool.put("b", f"k{i}", f"v{i}".encode())
    drain = asyncio.create_task(SpoolUploader(spool, s3, concurrency=3).drain())
    # each upload reads its file in a thread first
    await aeventually(lambda: s3.in_flight >= 3, what="three uploads started")
    # not a wait for work: a window in which a fourth upload, were it allowed, would
    # start (nothing signals that something did not happen); the final ``most`` checks too
    await asyncio.sleep(0.05)
    assert s3.in_flight == 3
    s3.gate.set()
    report = await drain
    assert report.uploaded == 10 and s3.most == 3
    assert sorted(s3.bodies()) == [("b", f"k{i}") for i in range(10)]
    assert spool.entries() == []


async def test_concurrent_uploads_stop_starting_after_an_outage(spool: Spool) -> None:
    s3 = MemoryS3()
    for i in range(20):
        spool.put("b", f"k{i}", b"x")
    attempts = 0
    real = s3.upload

    async def refused(key: str, data: bytes, **kwargs: Any) -> str:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("refused")

    s3.upload = refused  # type: ignore[method-assign]
    report = await SpoolUploader(spool, s3, concurrency=4).drain(limit=None)
    assert report.stopped is not None and report.uploaded == 0
    assert attempts <= 4  # those already started, no new one
    assert [e.attempts for e in spool.entries()] == [0] * 20
    s3.upload = real  # type: ignore[method-assign]
    assert (await SpoolUploader(spool, s3, concurrency=4).drain(limit=7)).uploaded == 7


def test_concurrency_must_be_positive(spool: Spool) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        SpoolUploader(spool, MemoryS3(), concurrency=0)
