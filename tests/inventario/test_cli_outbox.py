"""``inventario outbox ...`` against a real served inventario holding dead letters."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from brownout.testing import eventually
from inventario.cli import main
from tests.inventario.conftest import WIDGET
from tests.inventario.live_server import serving

TOKEN = "cli-outbox-t0ken"


def test_list_retry_and_discard_dead_letters(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    app = make_app(admin_token=TOKEN)
    rt = app.state.runtime
    with serving(app) as base:
        assert httpx.post(f"{base}/products", json={**WIDGET, "stock": 1}).status_code == 201
        rt.db.breaker.force_open()
        # queued in this order, applied in this order: two outs too big for the stock
        # die; the in behind them (same product) applies: 11 in stock
        for key, kind, quantity in (
            ("too-many", "out", 5),
            ("way-too-many", "out", 50),
            ("restock", "in", 10),
        ):
            r = httpx.post(
                f"{base}/products/W-1/movements",
                json={"kind": kind, "quantity": quantity},
                headers={"Idempotency-Key": key},
            )
            assert r.status_code == 202, r.text
        rt.db.breaker.reset()
        rt.replayer.wake()
        eventually(lambda: rt.outbox.stats()["pending"] == 0, timeout=15, what="the replay")
        assert rt.outbox.stats()["dead_letters"] == 2
        capsys.readouterr()

        assert main(["outbox", "list", "--url", base]) == 0
        out = capsys.readouterr().out
        assert "0 writes pending" in out and "2 dead letters" in out
        assert out.count("only 1 of W-1 in stock") == 2
        assert "too-many" in out and "way-too-many" in out and TOKEN not in out

        assert main(["outbox", "retry", "too-many", "nope", "--url", base]) == 1
        captured = capsys.readouterr()
        assert "retried 1 dead letters" in captured.out and "1 dead letters left" in captured.out
        assert "not dead letters (left as they are): nope" in captured.err
        eventually(lambda: rt.outbox.status("too-many") == "applied", timeout=15, what="retry")

        assert main(["outbox", "discard", "way-too-many", "--yes", "--url", base]) == 0
        assert "discarded 1 dead letters (0 dead letters left)" in capsys.readouterr().out
        status = httpx.get(f"{base}/writes/way-too-many").json()
        assert status["status"] == "discarded" and "in stock" in status["last_error"]
        assert main(["outbox", "list", "--dead", "--url", base]) == 0
        out = capsys.readouterr().out
        assert "0 dead letters" in out and "retried 1, discarded 1" in out


def test_discard_needs_yes_and_the_token(
    make_app: Callable[..., FastAPI],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app(admin_token=TOKEN)
    with serving(app) as base:
        monkeypatch.delenv("ADMIN_TOKEN", raising=False)
        assert main(["outbox", "list", "--url", base]) == 2
        assert "set ADMIN_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("ADMIN_TOKEN", "wrong")
        assert main(["outbox", "list", "--url", base]) == 2
        assert "refused the admin token (HTTP 403)" in capsys.readouterr().err
        monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
        assert main(["outbox", "discard", "--all", "--url", base]) == 2
        assert "add --yes" in capsys.readouterr().err
        assert main(["outbox", "discard", "--url", base, "--yes"]) == 2
        assert "or --all" in capsys.readouterr().err
        assert main(["outbox", "discard", "--all", "--yes", "--url", base]) == 0
        assert "discarded 0 dead letters" in capsys.readouterr().out
