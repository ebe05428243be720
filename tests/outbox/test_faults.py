"""Bad input and faults: a damaged journal, a full disk, a payload that is not JSON.

Each case must end in a clear error that names the problem (and the journal file),
with nothing already accepted lost and the journal never silently recreated.

The full disk is made three ways: the outbox's own bounds (``max_pending`` /
``max_bytes``); a real ``EFBIG`` from ``RLIMIT_FSIZE`` in a child process (works
anywhere, no privileges); and a real ``ENOSPC`` on a tiny tmpfs mounted in a
user + mount namespace (``unshare -rm``; skipped where the kernel or the container
forbids it).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brownout.outbox import Outbox, OutboxCorrupted, OutboxError, OutboxFull
from tests._durability import in_a_tiny_tmpfs, run_python

PAGE = 4096


def fill(path: Path, n: int) -> list[str]:
    """A closed journal holding ``n`` pending intents (checkpointed into the main file)."""
    with Outbox(path) as box:
        return [
            box.submit("stock.move", {"n": i, "pad": "p" * 100}, stream=f"s{i % 3}").key
            for i in range(n)
        ]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ a damaged journal


def _garbage_header(data: bytearray) -> bytearray:
    data[0:100] = b"\xde\xad\xbe\xef" * 25
    return data


def _a_json_file(data: bytearray) -> bytearray:
    return bytearray(b'{"written": "here by mistake"}\n' * 200)


def _truncated(at: Callable[[int], int]) -> Callable[[bytearray], bytearray]:
    return lambda data: data[: at(len(data))]


def _garbage_pages(data: bytearray) -> bytearray:
    for offset in range(PAGE, len(data), PAGE):  # every page but the first (the header)
        data[offset + 8 : offset + 2008] = bytes((offset + i) % 251 for i in range(2000))
    return data


DAMAGE: dict[str, Callable[[bytearray], bytearray]] = {
    "garbage header": _garbage_header,
    "another file written over it": _a_json_file,
    "truncated to 50 bytes": _truncated(lambda n: 50),
    "truncated to one page": _truncated(lambda n: PAGE),
    "truncated to half": _truncated(lambda n: (n // 2) // PAGE * PAGE),
    "last page cut short": _truncated(lambda n: n - 1000),
    "garbage in the b-tree pages": _garbage_pages,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_journal_is_refused_by_name_and_left_as_it_is(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "outbox.db"
    fill(path, 150)
    path.write_bytes(bytes(DAMAGE[damage](bytearray(path.read_bytes()))))
    before = sha(path)
    for _ in range(2):  # a restart loop must not "repair" it either
        with pytest.raises(OutboxCorrupted) as info:
            Outbox(path)
        assert str(path) in str(info.value)
        assert "left as it is" in str(info.value)
        assert sha(path) == before  # not recreated, not truncated, not rewritten
    wal = tmp_path / "outbox.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_repaired_journal_gives_back_everything_it_held(tmp_path: Path) -> None:
    """Left as it was, a journal with a damaged header can be repaired by an operator
    (here: the header restored) and every intent accepted before is still there."""
    path = tmp_path / "outbox.db"
    keys = fill(path, 150)
    original = path.read_bytes()
    path.write_bytes(bytes(_garbage_header(bytearray(original))))
    with pytest.raises(OutboxCorrupted):
        Outbox(path)
    damaged = bytearray(path.read_bytes())
    damaged[0:100] = original[0:100]
    path.write_bytes(bytes(damaged))
    with Outbox(path) as box:
        assert [i.key for i in box.pending(limit=1000)] == keys


ORPHAN_CHILD = """
    import json, os, sys
    from brownout.outbox import Outbox
    box = Outbox(sys.argv[1])
    keys = [box.submit("stock.move", {"n": i}, stream="A").key for i in range(int(sys.argv[2]))]
    print(json.dumps({"keys": keys}), flush=True)
    os._exit(0)  # like kill -9: no close, no checkpoint: the intents are only in the -wal
"""


@pytest.mark.parametrize("how", ["deleted", "truncated to 0 bytes"])
def test_a_lost_journal_next_to_its_log_is_refused_not_recreated(tmp_path: Path, how: str) -> None:
    """SQLite alone would open a missing/empty journal as a new database and delete the
    -wal that holds every intent since the last checkpoint. The outbox refuses."""
    path = tmp_path / "outbox.db"
    keys = run_python(ORPHAN_CHILD, str(path), "40")["keys"]
    wal = tmp_path / "outbox.db-wal"
    assert wal.stat().st_size > PAGE  # the intents are in the log
    saved = path.read_bytes()
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")
    wal_before = sha(wal)
    with pytest.raises(OutboxCorrupted) as info:
        Outbox(path)
    message = str(info.value)
    assert str(path) in message and str(wal) in message
    assert "without its -wal" in message
    assert sha(wal) == wal_before  # the log is untouched
    assert path.exists() == (how != "deleted")  # not recreated either
    path.write_bytes(saved)  # the operator puts the journal back
    with Outbox(path) as box:
        assert [i.key for i in box.pending(limit=1000)] == keys


def test_an_empty_file_without_a_log_is_a_new_journal(tmp_path: Path) -> None:
    """A 0-byte file is what a crash right after creating the journal leaves (SQLite
    writes the first page before any intent): it cannot hold an accepted intent."""
    path = tmp_path / "outbox.db"
    path.write_bytes(b"")
    with Outbox(path) as box:
        assert box.pending_count() == 0
        box.submit("op", {})
    with Outbox(path) as box:
        assert box.pending_count() == 1


def test_a_directory_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.mkdir()
    with pytest.raises(OutboxError, match="cannot open outbox journal") as info:
        Outbox(path)
    assert not isinstance(info.value, OutboxCorrupted)
    assert str(path) in str(info.value)
    assert path.is_dir() and list(path.iterdir()) == []


def test_damage_while_running_is_a_clear_error_not_a_raw_sqlite_one(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        for i in range(150):
            box.submit("stock.move", {"n": i, "pad": "p" * 100}, stream=f"s{i % 3}")
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        box._db.execute("PRAGMA cache_size = 1")  # read pages from the file again
        data = _garbage_pages(bytearray(path.read_bytes()))
        with open(path, "r+b") as fh:  # in place, as a failing disk would
            fh.write(data)
        size = path.stat().st_size
        for call in (
            lambda: box.submit("stock.move", {"n": "new"}, stream="s1"),
            box.heads,
            box.pending,
            box.stats,
        ):
            with pytest.raises(OutboxCorrupted, match="damaged") as info:
                call()
            assert str(path) in str(info.value)
        assert path.stat().st_size == size


def test_a_closed_outbox_says_so(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.close()
    assert box.closed
    with pytest.raises(OutboxError, match="the outbox is closed"):
        box.submit("op", {})
    with pytest.raises(OutboxError, match="the outbox is closed"):
        box.pending_count()


# ------------------------------------------------------------------ a full disk


def test_at_its_bounds_the_outbox_refuses_new_intents_but_not_accepted_ones(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "o.db", max_pending=3, max_bytes=10_000) as box:
        accepted = [box.submit("op", {"n": n}, idempotency_key=f"k{n}") for n in range(3)]
        with pytest.raises(OutboxFull, match=r"3 pending intents \(max_pending=3\)"):
            box.submit("op", {"n": 3}, idempotency_key="k3")
        # a client retrying an accepted write gets its intent back, full or not
        assert box.submit("op", {"n": 1}, idempotency_key="k1").seq == accepted[1].seq
        assert box.status("k3") is None  # the refused key was not consumed
        box.mark_applied(accepted[0])
        assert box.submit("op", {"n": 3}, idempotency_key="k3").key == "k3"
        assert [i.key for i in box.pending()] == ["k1", "k2", "k3"]


FSIZE_CHILD = """
    import json, os, resource, signal, sys
    from brownout.outbox import Outbox, OutboxError
    path = sys.argv[1]
    box = Outbox(path)
    accepted = [box.submit("stock.move", {"n": i}, stream="A").key for i in range(20)]
    wal = path + "-wal"
    limit = os.path.getsize(wal) + 48 * 1024
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    error = None
    for i in range(2000):
        try:
            intent = box.submit("stock.move", {"n": 100 + i, "pad": "z" * 3000}, stream="A")
            accepted.append(intent.key)
        except OutboxError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
    pending = box.pending_count()  # the journal is still readable
    again = None
    try:
        box.submit("stock.move", {"n": "again", "pad": "z" * 3000}, stream="A")
    except OutboxError as exc:
        again = str(exc)
    box.close()
    print(json.dumps({"accepted": accepted, "error": error, "pending": pending, "again": again}))
"""


def test_a_file_size_limit_is_a_clear_error_and_keeps_what_was_accepted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    result = run_python(FSIZE_CHILD, str(path))
    accepted, error = result["accepted"], result["error"]
    assert error is not None, "the size limit was never reached"
    assert error.startswith("OutboxError: ") and "OutboxFull" not in error
    assert str(path) in error
    assert "disk full, or a file size limit?" in error
    assert "intents accepted before are kept" in error
    assert len(accepted) > 20  # some were accepted under the limit, then it was hit
    assert result["pending"] == len(accepted)
    assert result["again"] is not None  # still full: refused again, clearly
    with Outbox(path) as box:
        pending = box.pending(limit=10_000)
        assert [i.key for i in pending] == accepted
        assert [i.payload["n"] for i in pending][:21] == [*range(20), 100]


TMPFS_CHILD = """
    import json, os, sys
    from brownout.outbox import Outbox, OutboxError
    root = sys.argv[1]
    path = os.path.join(root, "outbox.db")
    filler = os.path.join(root, "filler")
    with open(filler, "wb") as fh:
        fh.write(b"f" * 96 * 1024)
    box = Outbox(path)
    accepted, error = [], None
    for i in range(5000):
        try:
            accepted.append(box.submit("stock.move", {"n": i, "pad": "z" * 3000}, stream="A").key)
        except OutboxError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
    readable = box.pending_count()
    os.remove(filler)  # the operator frees some space
    after = box.submit("stock.move", {"n": "after"}, stream="A").key
    box.close()
    with Outbox(path) as again:
        kept = [i.key for i in again.pending(limit=10_000)]
    print(json.dumps({"accepted": accepted, "error": error, "readable": readable,
                      "after": after, "kept": kept}))
"""


def test_a_really_full_disk_is_a_clear_error_and_keeps_what_was_accepted(tmp_path: Path) -> None:
    result = in_a_tiny_tmpfs(TMPFS_CHILD, 384, tmp_path)
    accepted, error = result["accepted"], result["error"]
    assert error is not None, "the tmpfs never filled up"
    assert error.startswith("OutboxError: ") and "disk full" in error
    assert "outbox.db" in error
    assert accepted  # it took writes until the disk was full
    assert result["readable"] == len(accepted)
    # after space was freed the outbox took writes again, and nothing was lost
    assert result["kept"] == [*accepted, result["after"]]


# ------------------------------------------------------------------ payloads JSON cannot hold


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep() -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(100_000):
        node.append([])
        node = node[0]
    return root


BAD_PAYLOADS: dict[str, tuple[Callable[[], Any], str]] = {
    "NaN": (lambda: {"price": float("nan")}, r"payload\['price'\] is nan \(NaN and infinities"),
    "infinity, nested": (
        lambda: {"lines": [{"qty": 1}, {"qty": float("-inf")}]},
        r"payload\['lines'\]\[1\]\['qty'\] is -inf",
    ),
    "bytes": (lambda: {"blob": b"\x00\x01"}, r"payload\['blob'\] is of type bytes"),
    "a set": (lambda: {"tags": {"a", "b"}}, r"payload\['tags'\] is of type set"),
    "a Decimal": (lambda: {"price": decimal.Decimal("9.99")}, "is of type Decimal"),
    "a datetime": (lambda: {"at": datetime.datetime(2024, 1, 1)}, "is of type datetime"),
    "an object": (lambda: object(), "payload is of type object"),
    "a tuple key": (lambda: {("a", "b"): 1}, "has a key of type tuple"),
    "mixed keys": (lambda: {"a": 1, 2: "b"}, "mixes string and non-string keys"),
    "a circular reference": (_circular, r"payload\[0\] contains itself"),
    "nested too deeply": (_deep, "nested too deeply"),
}


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as b:
        b.submit("stock.move", {"n": 0}, idempotency_key="accepted")
        yield b


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_a_payload_json_cannot_hold_is_refused_naming_where_and_why(box: Outbox, name: str) -> None:
    make, where = BAD_PAYLOADS[name]
    before = _files(box.path.parent)
    with pytest.raises(TypeError, match="not JSON-serialisable") as info:
        box.submit("stock.move", make(), idempotency_key="k1")
    message = str(info.value)
    assert "'stock.move'" in message
    assert "nothing was written" in message

    assert re.search(where, message), message
    assert _files(box.path.parent) == before  # not a byte written
    assert box.status("k1") is None  # the key was not consumed
    assert [i.key for i in box.pending()] == ["accepted"]
    box.submit("stock.move", {"n": 1}, idempotency_key="k1")  # the fixed payload goes in
    assert box.status("k1") == "pending"


def test_what_json_changes_is_what_the_intent_says(box: Outbox) -> None:
    """Tuples become lists and number keys strings: the returned intent shows the payload
    exactly as it will be replayed, not the object that was passed."""
    intent = box.submit("stock.move", {"line": (1, 2), "by_id": {7: "x"}})
    assert intent.payload == {"line": [1, 2], "by_id": {"7": "x"}}
    (_, stored) = box.pending()
    assert stored.payload == intent.payload


def test_a_payload_over_the_size_limit_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_payload_bytes=1000) as box:
        before = _files(tmp_path)
        with pytest.raises(OutboxError, match=r"exceeds max_payload_bytes \(1000\)"):
            box.submit("op", {"pad": "x" * 1000})
        assert _files(tmp_path) == before
        assert box.pending_count() == 0
