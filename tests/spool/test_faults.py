"""Bad input and faults in the spool: damaged manifests and payloads, a full disk.

Each case ends in a clear error (naming the upload or the file) or a quarantine with
a reason; nothing accepted before is lost: a damaged entry is moved to
``quarantine/`` byte for byte, never deleted, and the other entries stay uploadable.

The full disk is made three ways: the spool's bounds (``max_bytes``/``max_files``,
see test_spool.py); a real ``EFBIG`` from ``RLIMIT_FSIZE`` in a child process (works
anywhere, no privileges); a real ``ENOSPC`` on a tiny tmpfs mounted in a user + mount
namespace (``unshare -rm``; skipped where the kernel or the container forbids it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brownout.spool import Spool, SpoolCorrupted, SpoolEntry, SpoolError, SpoolUploader
from tests._durability import MemoryS3, in_a_tiny_tmpfs, run_python


def body(i: int, size: int = 2048) -> bytes:
    return (hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1))[:size]


def objects(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((directory / "objects").iterdir())}


def quarantine(directory: Path) -> dict[str, bytes]:
    """The quarantined files by their original name (the stamp prefix removed)."""
    out: dict[str, bytes] = {}
    for p in (directory / "quarantine").iterdir():
        if not p.name.endswith(".reason.txt"):
            out[p.name.split("-", 2)[2]] = p.read_bytes()
    return out


def reasons(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((directory / "quarantine").glob("*.reason.txt")))


# ------------------------------------------------------------------ damaged manifests


def _set(field: str, value: Any) -> Callable[[bytes, SpoolEntry], bytes]:
    def damage(raw: bytes, entry: SpoolEntry) -> bytes:
        doc = json.loads(raw)
        doc[field] = value
        return json.dumps(doc).encode()

    return damage


MANIFEST_DAMAGE: dict[str, tuple[Callable[[bytes, SpoolEntry], bytes], str]] = {
    "garbage bytes": (lambda raw, e: os.urandom(300), "unreadable manifest"),
    "empty": (lambda raw, e: b"", "unreadable manifest"),
    "cut in the middle": (lambda raw, e: raw[: len(raw) // 2], "unreadable manifest"),
    "a JSON list": (lambda raw, e: b"[1, 2, 3]", "not a version 1 spool manifest"),
    "a future version": (_set("version", 2), "not a version 1 spool manifest"),
    "a payload outside the spool": (_set("payload", "../../outside.data"), "bad payload"),
    "another entry's payload": (
        _set("payload", "0" * 64 + ".0123456789abcdef.data"),
        "bad payload",
    ),
    "a negative size": (_set("size", -1), "bad size"),
    "a size that is not the payload's": (
        _set("size", 99),
        "payload is 2048 bytes, the manifest says 99",
    ),
    "a short checksum": (_set("sha256", "abc"), "bad checksums"),
    "metadata that is not strings": (_set("metadata", {"a": 1}), "metadata must map strings"),
    "no bucket": (
        lambda raw, e: json.dumps({**json.loads(raw), "bucket": None}).encode(),
        "bucket",
    ),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_quarantined_whole_and_the_rest_kept(
    tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "spool"
    (tmp_path / "outside.data").write_bytes(b"not the spool's")
    with Spool(directory) as sp:
        victim = sp.put("invoices", "victim.pdf", body(0))
        kept = {f"k{i}": body(i) for i in range(1, 4)}
        for key, data in kept.items():
            sp.put("invoices", key, data)
    manifest = directory / "objects" / f"{victim.id}.json"
    make, why = MANIFEST_DAMAGE[damage]
    manifest.write_bytes(make(manifest.read_bytes(), victim))
    damaged = {n: b for n, b in objects(directory).items() if n.startswith(victim.id)}

    with Spool(directory) as sp:
        assert sp.entry("invoices", "victim.pdf") is None
        assert {e.key: sp.read(e) for e in sp.entries()} == kept
        assert len(sp.quarantined()) == 1
    assert quarantine(directory) == damaged  # moved byte for byte, never deleted
    assert why in reasons(directory)
    assert (tmp_path / "outside.data").read_bytes() == b"not the spool's"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.data", "spool"]


def test_unknown_files_in_the_spool_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    with Spool(directory) as sp:
        sp.put("b", "k", b"data")
    strangers = {
        "README.txt": b"an operator's note",
        "NOTAHASH.json": b"{}",
        ("A" * 64) + ".json": b"upper-case hex is not ours",
        "payload.data": b"not named like ours",
    }
    for name, data in strangers.items():
        (directory / "objects" / name).write_bytes(data)
    with Spool(directory) as sp:
        assert sp.get("b", "k") == b"data"
        assert sp.quarantined() == []
    for name, data in strangers.items():
        assert (directory / "objects" / name).read_bytes() == data


# ------------------------------------------------------------------ damaged payloads


PAYLOAD_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "deleted": (lambda p: p.unlink(), "payload file is missing"),
    "cut short": (lambda p: p.write_bytes(p.read_bytes()[:100]), "payload is 100 bytes"),
    "grown": (lambda p: p.write_bytes(p.read_bytes() + b"junk"), "payload is 2052 bytes"),
}


@pytest.mark.parametrize("damage", list(PAYLOAD_DAMAGE))
def test_a_payload_of_the_wrong_size_is_quarantined_on_open(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "spool"
    with Spool(directory) as sp:
        victim = sp.put("b", "victim", body(0))
        sp.put("b", "other", body(1))
    make, why = PAYLOAD_DAMAGE[damage]
    make(directory / "objects" / victim.payload)
    damaged = {n: b for n, b in objects(directory).items() if n.startswith(victim.id)}
    with Spool(directory) as sp:
        assert [e.key for e in sp.entries()] == ["other"]
        assert sp.get("b", "other") == body(1)
    assert quarantine(directory) == damaged
    assert why in reasons(directory) and "b/victim" in reasons(directory)


async def test_a_payload_flipped_in_place_is_never_uploaded(tmp_path: Path) -> None:
    """Same size, other bytes: only the checksum sees it, at upload time."""
    directory = tmp_path / "spool"
    with Spool(directory) as sp:
        victim = sp.put("b", "victim", body(0))
        sp.put("b", "other", body(1))
        path = directory / "objects" / victim.payload
        flipped = bytearray(path.read_bytes())
        flipped[1000] ^= 0xFF
        path.write_bytes(bytes(flipped))
        s3 = MemoryS3()
        report = await SpoolUploader(sp, s3).drain()
        assert (report.uploaded, report.quarantined) == (1, 1)
        assert s3.bodies() == {("b", "other"): body(1)}
        assert "checksum mismatch" in report.errors[0] and "b/victim" in report.errors[0]
        with pytest.raises(KeyError):  # gone from the spool, kept in quarantine
            sp.read(victim)
    assert quarantine(directory)[victim.payload] == bytes(flipped)


# ------------------------------------------------------------------ a full disk


FSIZE_CHILD = """
    import io, json, resource, signal, sys
    from brownout.spool import Spool, SpoolError
    directory = sys.argv[1]
    sp = Spool(directory)
    accepted = {}
    for i in range(5):
        data = bytes([i]) * 20_000
        sp.put("b", f"small-{i}", data)
        accepted[f"small-{i}"] = data.hex()[:16]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    errors = []
    for key, data in (("big", b"x" * 100_000), ("big-stream", io.BytesIO(b"y" * 100_000))):
        try:
            sp.put("b", key, data)
        except SpoolError as exc:
            errors.append(str(exc))
    sp.put("b", "small-0", b"replaced under the limit")  # smaller files still fit
    sp.close()
    print(json.dumps({"errors": errors}))
"""


def test_a_file_size_limit_is_a_clear_error_and_keeps_what_was_spooled(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    result = run_python(FSIZE_CHILD, str(directory))
    assert len(result["errors"]) == 2
    for key, error in zip(("big", "big-stream"), result["errors"], strict=True):
        assert f"writing b/{key} failed" in error
        assert "File too large" in error and "a file size limit?" in error
        assert "nothing was spooled" in error
    with Spool(directory) as sp:
        assert sorted(e.key for e in sp.entries()) == [f"small-{i}" for i in range(5)]
        assert sp.get("b", "small-0") == b"replaced under the limit"
        for i in range(1, 5):
            assert sp.get("b", f"small-{i}") == bytes([i]) * 20_000
        assert sp.quarantined() == []
    assert not any(name.startswith(".tmp-") for name in objects(directory))


TMPFS_CHILD = """
    import hashlib, json, os, sys
    from brownout.spool import Spool, SpoolError
    root = sys.argv[1]
    directory = os.path.join(root, "spool")
    filler = os.path.join(root, "filler")
    with open(filler, "wb") as fh:
        fh.write(b"f" * 64 * 1024)
    sp = Spool(directory)
    accepted, error = {}, None
    for i in range(1000):
        data = hashlib.sha256(str(i).encode()).digest() * 256  # 8 KiB
        try:
            sp.put("b", f"k{i}", data)
        except SpoolError as exc:
            error = str(exc)
            break
        accepted[f"k{i}"] = hashlib.sha256(data).hexdigest()
    temp_left = [n for n in os.listdir(os.path.join(directory, "objects")) if n.startswith(".tmp-")]
    # take the last free pages too: at 0 bytes free even updating a manifest fails
    fd = os.open(filler + "2", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"g" * 4096)
    except OSError:
        pass
    os.close(fd)
    update_error = None
    try:
        sp.mark_failed(sp.entries()[0], "AccessDenied")
    except SpoolError as exc:
        update_error = str(exc)
    os.remove(filler)  # the operator frees some space
    os.remove(filler + "2")
    data = b"after" * 100
    sp.put("b", "after", data)
    accepted["after"] = hashlib.sha256(data).hexdigest()
    sp.close()
    with Spool(directory) as again:
        kept = {e.key: hashlib.sha256(again.read(e)).hexdigest() for e in again.entries()}
        attempts = max(e.attempts for e in again.entries())
        quarantined = len(again.quarantined())
    print(json.dumps({"accepted": accepted, "error": error, "temp_left": temp_left,
                      "update_error": update_error, "kept": kept, "attempts": attempts,
                      "quarantined": quarantined}))
"""


def test_a_really_full_disk_is_a_clear_error_and_keeps_what_was_spooled(tmp_path: Path) -> None:
    result = in_a_tiny_tmpfs(TMPFS_CHILD, 512, tmp_path)
    error = result["error"]
    assert error is not None, "the tmpfs never filled up"
    assert "No space left on device (disk full?)" in error and "nothing was spooled" in error
    assert error.startswith("spool: writing b/k")
    assert result["temp_left"] == []  # the failed put cleaned up after itself
    assert len(result["accepted"]) > 10
    update_error = result["update_error"]
    assert update_error is not None and "updating the manifest of b/" in update_error
    assert "disk full?" in update_error and "still spooled" in update_error
    assert result["attempts"] == 0  # the old manifest was kept
    # after space was freed the spool took uploads again; every accepted one is intact
    assert result["kept"] == result["accepted"]
    assert result["quarantined"] == 0


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("b", "k", "text"), TypeError, "not str: encode it first"),
        (("b", "k", 42), TypeError, "got int"),
        (("b", "k", [b"a"]), TypeError, "got list"),
        (("", "k", b"x"), ValueError, "bucket must be a non-empty string"),
        (("b", None, b"x"), ValueError, "key must be a non-empty string"),
        (("b", "k", b"x", 5), TypeError, "content_type must be a string"),
        (("b", "k", b"x", None, {"a": 1}), TypeError, "metadata must map strings to strings"),
        (("b", "k", b"x", None, {"sha256": "0" * 64}), ValueError, "reserved"),
    ],
)
def test_bad_arguments_are_named_and_write_nothing(
    tmp_path: Path, args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    with Spool(tmp_path / "spool") as sp:
        sp.put("b", "k", b"accepted before")
        before = objects(tmp_path / "spool")
        with pytest.raises(error, match=match):
            sp.put(*args)
        assert objects(tmp_path / "spool") == before
        assert sp.get("b", "k") == b"accepted before"


def test_a_reader_that_fails_midway_keeps_the_older_version(tmp_path: Path) -> None:
    class Dying:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls == 3:
                raise ConnectionResetError("client went away")
            return b"n" * 1000

    with Spool(tmp_path / "spool") as sp:
        sp.put("b", "k", b"old")
        before = objects(tmp_path / "spool")
        with pytest.raises(SpoolError, match=r"writing b/k failed: client went away"):
            sp.put("b", "k", Dying())
        assert objects(tmp_path / "spool") == before
        assert sp.get("b", "k") == b"old"


def test_a_spool_directory_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    path.write_bytes(b"a file")
    with pytest.raises(OSError, match="spool") as info:
        Spool(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"a file"


def test_reading_a_damaged_entry_names_it(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as sp:
        entry = sp.put("invoices", "2024/01.pdf", b"%PDF-1.7 ...")
        (tmp_path / "spool" / "objects" / entry.payload).write_bytes(b"%PDF-1.7 !!!")
        with pytest.raises(SpoolCorrupted, match=r"invoices/2024/01\.pdf is corrupted"):
            sp.get("invoices", "2024/01.pdf")
