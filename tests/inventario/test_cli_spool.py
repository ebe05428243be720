"""``inventario spool ...`` against a real served inventario whose spool holds failed files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from brownout.spool import Spool
from brownout.testing import eventually
from brownout.testing.servers.s3 import S3Server
from inventario.cli import main
from tests.inventario.conftest import s3_settings
from tests.inventario.live_server import serving

TOKEN = "cli-spool-t0ken"


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)


def test_list_retry_retarget_discard(
    make_app: Callable[..., FastAPI],
    s3_server: S3Server,
    fresh_bucket: str,
    admin_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket), admin_token=TOKEN)
    rt = app.state.runtime
    spool: Spool = rt.spool
    gone = f"gone-{fresh_bucket}"
    with serving(app) as base:
        entries = {key: spool.put(gone, key, key.encode()) for key in ("a.txt", "b.txt", "c.txt")}
        rt.spool_uploader.wake()
        eventually(lambda: spool.stats()["failed"] == 3, timeout=15, what="three failed entries")
        capsys.readouterr()

        assert main(["spool", "list", "--url", base, "--failed"]) == 0
        out = capsys.readouterr().out
        assert f"S3 bucket: {fresh_bucket}" in out and "3 failed" in out
        for entry in entries.values():
            assert entry.id[:12] in out
        assert out.count("NoSuchBucket") == 3 and TOKEN not in out

        # retarget one to the configured bucket by a short id
        a = entries["a.txt"]
        assert main(["spool", "retarget", a.id[:10], "--to-configured", "--url", base]) == 0
        assert f"{gone}/a.txt -> (configured bucket)/a.txt" in capsys.readouterr().out
        eventually(lambda: spool.entry(None, "a.txt") is None, timeout=15, what="a.txt uploaded")
        body = s3_server.client().get_object(Bucket=fresh_bucket, Key="a.txt")["Body"].read()
        assert body == b"a.txt"

        # retry after creating the bucket
        s3_server.create_bucket(gone)
        assert main(["spool", "retry", entries["b.txt"].id, "--url", base]) == 0
        eventually(lambda: spool.entry(gone, "b.txt") is None, timeout=15, what="b.txt uploaded")

        # discard needs --yes; an unknown id is exit status 1
        assert main(["spool", "discard", "--all-failed", "--url", base]) == 2
        assert "--yes" in capsys.readouterr().err
        assert spool.stats()["files"] == 1
        assert main(["spool", "discard", "--all-failed", "--yes", "--url", base]) == 0
        assert "discarded 1 entries" in capsys.readouterr().out
        assert main(["spool", "retry", "f" * 16, "--url", base]) == 1
        assert "not in the spool: ffffffffffffffff" in capsys.readouterr().err
        assert spool.entries() == []


def test_errors_are_one_line_with_what_to_do(
    make_app: Callable[..., FastAPI],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    guarded, open_app = make_app(admin_token=TOKEN), make_app(var_dir=tmp_path / "other")
    assert main(["spool", "list"]) == 2
    assert "set ADMIN_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("ADMIN_TOKEN", "wrong")
    with serving(guarded) as base:
        assert main(["spool", "list", "--url", base]) == 2
        err = capsys.readouterr().err
        assert "refused the admin token (HTTP 403)" in err and "wrong" not in err
        assert main(["spool", "retry", "--url", base]) == 2  # neither ids nor --all-failed
        assert "--all-failed" in capsys.readouterr().err
    with serving(open_app) as base:  # no ADMIN_TOKEN on the service
        assert main(["spool", "list", "--url", base]) == 2
        assert "no spool admin endpoints" in capsys.readouterr().err
    started = time.monotonic()
    assert main(["spool", "list", "--url", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert "cannot reach" in capsys.readouterr().err and time.monotonic() - started < 5


def test_list_says_when_s3_is_not_configured(
    make_app: Callable[..., FastAPI], admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(admin_token=TOKEN)
    with serving(app) as base:
        app.state.runtime.spool.put(None, "inv.txt", b"x")
        assert main(["spool", "list", "--url", base]) == 0
    out = capsys.readouterr().out
    assert "S3 is not configured" in out and "(configured bucket)/inv.txt" in out
    assert "pending" in out


def test_status_table_names_failed_files_and_a_missing_s3() -> None:
    from inventario.cli_status import render_status

    doc = {
        "level": "OPTIMAL",
        "components": [],
        "backlogs": {
            "spool": {
                "files": 2,
                "bytes": 10,
                "oldest_age_s": 5,
                "quarantined": 0,
                "failed": 2,
                "failures": [{"reason": "bucket 'old': NoSuchBucket", "count": 2}],
                "s3_configured": True,
            }
        },
    }
    out = render_status(doc)
    assert "FAILED 2: bucket 'old': NoSuchBucket (inventario spool list)" in out
    doc["backlogs"]["spool"].update(failed=0, s3_configured=False)  # type: ignore[index]
    out = render_status(doc)
    assert "FAILED" not in out and "S3 not configured" in out
