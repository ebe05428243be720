"""brownout.prometheus: outbox and spool metrics, scraped from real journals and spools."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from brownout.outbox import Intent, Outbox, OutboxError, OutboxFull, Replayer
from brownout.prometheus import PrometheusMetrics
from brownout.spool import Spool, SpoolUploader
from brownout.testing import FakeClock
from tests._durability import MemoryS3

ROOT = Path(__file__).resolve().parents[1]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: PrometheusMetrics) -> Samples:
    """Every sample of the text exposition, by (name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def box(tmp_path: Path, clock: FakeClock) -> Iterator[Outbox]:
    with Outbox(tmp_path / "writes.db", max_pending=3, max_attempts=2, clock=clock) as b:
        yield b


# ------------------------------------------------------------------ outbox


def test_backlog_gauges_are_read_at_scrape_time(box: Outbox, clock: FakeClock) -> None:
    metrics = PrometheusMetrics()
    metrics.attach(box)
    s = scrape(metrics)
    assert get(s, "brownout_outbox_pending", outbox="writes") == 0
    assert get(s, "brownout_outbox_pending_bytes", outbox="writes") == 0
    assert get(s, "brownout_outbox_oldest_pending_age_seconds", outbox="writes") == 0
    assert get(s, "brownout_outbox_max_pending", outbox="writes") == 3
    assert get(s, "brownout_outbox_max_bytes", outbox="writes") == box.max_bytes

    box.submit("stock.move", {"sku": "A", "delta": 1}, stream="A")
    clock.advance(40)
    box.submit("stock.move", {"sku": "B", "delta": -2}, stream="B")
    box.submit("price.set", {"sku": "A", "price": 3}, stream="A")
    clock.advance(2)
    s = scrape(metrics)
    assert get(s, "brownout_outbox_pending", outbox="writes") == 3
    assert get(s, "brownout_outbox_pending_bytes", outbox="writes") == box.pending_bytes() > 0
    assert get(s, "brownout_outbox_oldest_pending_age_seconds", outbox="writes") == 42
    assert get(s, "brownout_outbox_submitted_total", outbox="writes", operation="stock.move") == 2
    assert get(s, "brownout_outbox_submitted_total", outbox="writes", operation="price.set") == 1
    assert get(s, "brownout_outbox_submit_seconds_count", outbox="writes") == 3
    assert get(s, "brownout_outbox_submit_seconds_sum", outbox="writes") > 0  # type: ignore[operator]

    # a journal reopened after a restart: the gauges show what is on disk at once
    path = box.path
    box.close()
    with Outbox(path, clock=clock) as again:
        fresh = PrometheusMetrics()
        fresh.attach(again)
        s = scrape(fresh)
        assert get(s, "brownout_outbox_pending", outbox="writes") == 3
        assert get(s, "brownout_outbox_submitted_total", outbox="writes", operation="x") is None


def test_an_idempotent_resubmission_is_not_counted_twice(box: Outbox) -> None:
    metrics = PrometheusMetrics()
    metrics.attach(box)
    box.submit("op", {"n": 1}, idempotency_key="k")
    box.submit("op", {"n": 1}, idempotency_key="k")
    s = scrape(metrics)
    assert get(s, "brownout_outbox_submitted_total", outbox="writes", operation="op") == 1
    assert get(s, "brownout_outbox_pending", outbox="writes") == 1


def test_refusals_are_counted_by_reason(box: Outbox) -> None:
    metrics = PrometheusMetrics()
    metrics.attach(box)
    s = scrape(metrics)
    assert get(s, "brownout_outbox_refused_total", outbox="writes", reason="full") == 0
    assert get(s, "brownout_outbox_refused_total", outbox="writes", reason="error") == 0
    for n in range(3):
        box.submit("op", {"n": n})
    with pytest.raises(OutboxFull):
        box.submit("op", {"n": 3})
    with pytest.raises(TypeError):  # a caller error, not a refusal
        box.submit("op", {"n": object()})
    s = scrape(metrics)
    assert get(s, "brownout_outbox_refused_total", outbox="writes", reason="full") == 1
    assert get(s, "brownout_outbox_refused_total", outbox="writes", reason="error") == 0


def test_a_disk_error_is_counted_as_a_refusal(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    with Outbox(tmp_path / "o.db") as box:
        metrics.attach(box)
        box.submit("op", {"n": 0})
        pages = box._db.execute("PRAGMA page_count").fetchone()[0]
        box._db.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
        with pytest.raises(OutboxError, match="full"):
            for n in range(200):
                box.submit("op", {"pad": "z" * 4000, "n": n})
        s = scrape(metrics)
        assert get(s, "brownout_outbox_refused_total", outbox="o", reason="error") == 1
        assert get(s, "brownout_outbox_pending", outbox="o") == box.pending_count() >= 1


class Flaky:
    """An ``apply`` for the Replayer: succeeds, except for payloads marked bad."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.applied: list[Any] = []

    async def __call__(self, intent: Intent) -> None:
        if intent.payload.get("bad"):
            error = ValueError("not enough stock")
            error.permanent = True  # type: ignore[attr-defined]
            raise error
        self.applied.append(intent.payload)


async def test_replayed_and_dead_letters_are_counted(box: Outbox, clock: FakeClock) -> None:
    metrics = PrometheusMetrics()
    metrics.attach(box)
    box.submit("stock.move", {"n": 1}, stream="A")
    box.submit("stock.move", {"n": 2, "bad": True}, stream="B")
    clock.advance(30)
    box.submit("stock.move", {"n": 3}, stream="A")
    clock.advance(10)
    report = await Replayer(box, Flaky(clock)).drain()
    assert (report.applied, report.dead) == (2, 1)
    s = scrape(metrics)
    assert get(s, "brownout_outbox_pending", outbox="writes") == 0
    assert get(s, "brownout_outbox_oldest_pending_age_seconds", outbox="writes") == 0
    assert get(s, "brownout_outbox_replayed_total", outbox="writes", operation="stock.move") == 2
    assert (
        get(s, "brownout_outbox_dead_letters_total", outbox="writes", operation="stock.move") == 1
    )
    assert get(s, "brownout_outbox_dead_letters_stored", outbox="writes") == 1
    assert get(s, "brownout_outbox_replay_seconds_count", outbox="writes") == 2
    # waited 40 s and 10 s on the fake clock, from accepted to applied
    assert get(s, "brownout_outbox_queued_seconds_count", outbox="writes") == 2
    assert get(s, "brownout_outbox_queued_seconds_sum", outbox="writes") == 50
    assert get(s, "brownout_outbox_queued_seconds_bucket", outbox="writes", le="15.0") == 1

    assert box.retry_dead() == 1  # the dead letter goes back to the journal
    s = scrape(metrics)
    assert get(s, "brownout_outbox_dead_letters_stored", outbox="writes") == 0
    assert get(s, "brownout_outbox_pending", outbox="writes") == 1
    assert (
        get(s, "brownout_outbox_dead_letters_total", outbox="writes", operation="stock.move") == 1
    )
    labels = {"outbox": "writes", "operation": "stock.move"}
    assert get(s, "brownout_outbox_dead_letters_retried_total", **labels) == 1
    # dead again (two attempts), then given up on by the operator
    for _ in range(2):
        clock.advance(120)
        await Replayer(box, Flaky(clock)).drain()
    assert box.discard_dead() == 1
    s = scrape(metrics)
    assert get(s, "brownout_outbox_dead_letters_discarded_total", **labels) == 1
    assert get(s, "brownout_outbox_dead_letters_stored", outbox="writes") == 0


def test_attach_twice_counts_once_and_detach_stops_everything(box: Outbox, tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    detach = metrics.attach(box)
    again = metrics.attach(box)
    box.submit("op", {"n": 1})
    assert (
        get(scrape(metrics), "brownout_outbox_submitted_total", outbox="writes", operation="op")
        == 1
    )
    again()  # the no-op of the second attach
    box.submit("op", {"n": 2})
    assert (
        get(scrape(metrics), "brownout_outbox_submitted_total", outbox="writes", operation="op")
        == 2
    )
    detach()
    box.submit("op", {"n": 3})
    s = scrape(metrics)
    assert get(s, "brownout_outbox_submitted_total", outbox="writes", operation="op") == 2
    assert get(s, "brownout_outbox_pending", outbox="writes") is None


def test_several_outboxes_are_told_apart_and_closed_ones_skipped(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    with Outbox(tmp_path / "a.db") as a, Outbox(tmp_path / "b.db") as b:
        metrics.attach(a)
        metrics.attach(b)
        a.submit("op", {})
        b.submit("op", {})
        b.submit("op", {"n": 2})
        s = scrape(metrics)
        assert get(s, "brownout_outbox_pending", outbox="a") == 1
        assert get(s, "brownout_outbox_pending", outbox="b") == 2
        a.close()
        s = scrape(metrics)  # no error, no stale figure
        assert get(s, "brownout_outbox_pending", outbox="a") is None
        assert get(s, "brownout_outbox_pending", outbox="b") == 2


def test_a_failing_stats_is_logged_and_does_not_break_the_scrape(
    box: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = PrometheusMetrics()
    metrics.attach(box)
    with Spool(tmp_path / "uploads") as spool:
        metrics.attach(spool)

        def broken() -> dict[str, Any]:
            raise OutboxError("journal unreadable")

        monkeypatch.setattr(box, "stats", broken)
        with caplog.at_level(logging.ERROR, logger="brownout.prometheus"):
            s = scrape(metrics)
        assert get(s, "brownout_outbox_pending", outbox="writes") is None
        assert get(s, "brownout_spool_pending_files", spool="uploads") == 0
        assert "stats() of <Outbox" in caplog.text


# ------------------------------------------------------------------ spool


async def test_spool_backlog_uploads_failures_and_quarantine(
    tmp_path: Path, clock: FakeClock
) -> None:
    metrics = PrometheusMetrics()
    with Spool(tmp_path / "uploads", max_files=50, max_bytes=4096, clock=clock) as spool:
        metrics.attach(spool)
        s = scrape(metrics)
        assert get(s, "brownout_spool_pending_files", spool="uploads") == 0
        assert get(s, "brownout_spool_max_files", spool="uploads") == 50
        assert get(s, "brownout_spool_max_bytes", spool="uploads") == 4096
        assert get(s, "brownout_spool_oldest_pending_age_seconds", spool="uploads") == 0

        spool.put("invoices", "a.pdf", b"a" * 100)
        clock.advance(60)
        spool.put("invoices", "b.pdf", b"b" * 200)
        spool.put("invoices", "denied.pdf", b"c" * 10)
        damaged = spool.put("invoices", "damaged.pdf", b"d" * 5)
        spool.put("invoices", "a.pdf", b"A" * 50)  # replaces the spooled version
        clock.advance(15)
        s = scrape(metrics)
        assert get(s, "brownout_spool_pending_files", spool="uploads") == 4
        assert get(s, "brownout_spool_pending_bytes", spool="uploads") == 50 + 200 + 10 + 5
        assert get(s, "brownout_spool_oldest_pending_age_seconds", spool="uploads") == 15
        assert get(s, "brownout_spool_spooled_total", spool="uploads") == 5
        assert get(s, "brownout_spool_spooled_bytes_total", spool="uploads") == 365
        assert get(s, "brownout_spool_put_seconds_count", spool="uploads") == 5

        (spool.directory / "objects" / damaged.payload).write_bytes(b"X" * 5)
        s3 = MemoryS3()
        s3.refuse.add("denied.pdf")
        uploader = SpoolUploader(spool, s3, is_outage=lambda exc: False)
        report = await uploader.drain()
        assert (report.uploaded, report.failed, report.quarantined) == (2, 1, 1)
        s = scrape(metrics)
        assert get(s, "brownout_spool_pending_files", spool="uploads") == 1  # denied.pdf
        assert get(s, "brownout_spool_pending_bytes", spool="uploads") == 10
        assert get(s, "brownout_spool_uploaded_total", spool="uploads") == 2
        assert get(s, "brownout_spool_uploaded_bytes_total", spool="uploads") == 250
        assert get(s, "brownout_spool_upload_seconds_count", spool="uploads") == 2
        assert get(s, "brownout_spool_upload_failures_total", spool="uploads") == 1
        assert get(s, "brownout_spool_quarantined_total", spool="uploads") == 1
        assert get(s, "brownout_spool_quarantined_entries", spool="uploads") == 1

    # closed: skipped at scrape time, counters kept
    s = scrape(metrics)
    assert get(s, "brownout_spool_pending_files", spool="uploads") is None
    assert get(s, "brownout_spool_uploaded_total", spool="uploads") == 2


def test_spool_failed_entries_and_operator_actions(tmp_path: Path) -> None:
    """An entry given up on is a gauge (until retried, retargeted or discarded) and each
    operator action a counter: an alert can fire on ``brownout_spool_failed_entries > 0``."""
    metrics = PrometheusMetrics()
    with Spool(tmp_path / "uploads") as spool:
        metrics.attach(spool)
        gone = [spool.put("gone", f"{i}.pdf", b"x" * (i + 1)) for i in range(3)]
        for entry in gone:
            spool.mark_failed(entry, "NoSuchBucket", give_up=True)
        spool.mark_failed(spool.put("b", "later.pdf", b"y"), "odd")  # an attempt, not failed
        s = scrape(metrics)
        assert get(s, "brownout_spool_failed_entries", spool="uploads") == 3
        assert get(s, "brownout_spool_failed_bytes", spool="uploads") == 1 + 2 + 3
        assert get(s, "brownout_spool_gave_up_total", spool="uploads") == 3
        assert get(s, "brownout_spool_upload_failures_total", spool="uploads") == 4
        spool.retarget(gone[0], None)
        spool.discard(gone[1])
        spool.reset_attempts(gone[2])
        s = scrape(metrics)
        assert get(s, "brownout_spool_failed_entries", spool="uploads") == 0
        assert get(s, "brownout_spool_failed_bytes", spool="uploads") == 0
        assert get(s, "brownout_spool_retargeted_total", spool="uploads") == 1
        assert get(s, "brownout_spool_discarded_total", spool="uploads") == 1
        assert get(s, "brownout_spool_pending_files", spool="uploads") == 3


def test_spool_attach_twice_and_detach(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    with Spool(tmp_path / "s") as spool:
        detach = metrics.attach(spool)
        metrics.attach(spool)
        spool.put("b", "k", b"x")
        assert get(scrape(metrics), "brownout_spool_spooled_total", spool="s") == 1
        detach()
        spool.put("b", "k2", b"y")
        s = scrape(metrics)
        assert get(s, "brownout_spool_spooled_total", spool="s") == 1
        assert get(s, "brownout_spool_pending_files", spool="s") is None


def test_a_namespace_prefixes_the_names(box: Outbox) -> None:
    metrics = PrometheusMetrics(namespace="shop")
    metrics.attach(box)
    box.submit("op", {})
    s = scrape(metrics)
    assert get(s, "shop_outbox_pending", outbox="writes") == 1
    assert get(s, "shop_outbox_submitted_total", outbox="writes", operation="op") == 1
    assert get(s, "brownout_outbox_pending", outbox="writes") is None


# ------------------------------------------------------------------ docs


def _exported(tmp_path: Path) -> set[str]:
    metrics = PrometheusMetrics()
    with Outbox(tmp_path / "o.db") as box, Spool(tmp_path / "s") as spool:
        metrics.attach(box)
        metrics.attach(spool)
        body = metrics.render().decode()
    names = {f.name for f in text_string_to_metric_families(body)}
    return {n for n in names if not n.endswith("_created")}  # prometheus_client's extras


def _mentioned(text: str) -> set[str]:
    names = set(re.findall(r"\bbrownout_(?:outbox|spool)_[a-z0-9_]+", text))
    suffixes = ("_bucket", "_count", "_sum", "_total")
    return {next((n[: -len(s)] for s in suffixes if n.endswith(s)), n) for n in names}


@pytest.mark.parametrize(
    "doc",
    [
        "docs/operations.md",
        "docs/durability.md",
        "deploy/prometheus-alerts.yml",
        "deploy/grafana-dashboard.json",
        "src/brownout/prometheus/__init__.py",
    ],
)
def test_documented_outbox_and_spool_metrics_exist(tmp_path: Path, doc: str) -> None:
    exported = _exported(tmp_path)
    mentioned = _mentioned((ROOT / doc).read_text())
    assert mentioned, f"{doc} names no outbox or spool metric"
    assert mentioned <= exported, mentioned - exported
    if doc.endswith(".md") or doc.endswith(".py"):
        assert exported <= mentioned, f"not documented in {doc}: {exported - mentioned}"
