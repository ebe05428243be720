"""Spooled invoice files whose bucket changes or refuses them: against moto's S3 server.

The finding (issue 9): invoices spooled while S3 was not configured kept the old bucket
name; after S3 was configured with another bucket the uploader got ``NoSuchBucket`` on
every attempt while ``/health`` said S3 up 100, OPTIMAL, and the spool card showed only a
count. Each test runs the real app (path-style moto through the suite's fixtures), stops
it and starts another on the same ``VAR_DIR`` where the scenario needs a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.testing import aeventually
from brownout.testing.servers.s3 import S3Server
from inventario.db import invoices
from inventario.invoice_storage import LOCAL_BUCKET
from tests.inventario.conftest import running, s3_settings
from tests.inventario.test_invoices import TEXT_INVOICE, in_s3, s3_keys, upload

TOKEN = "spool-admin-t0ken"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def component(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in doc["components"] if c["name"] == name)
    return found


async def spooled_without_s3(make_app: Callable[..., FastAPI]) -> dict[str, Any]:
    """Upload one invoice to a service that has no S3: it is kept in the spool."""
    async with running(make_app()) as client:
        r = await upload(client)
        assert r.status_code == 201, r.text
        assert r.json()["storage"] == "spool"
        card = (await client.get("/status/data")).json()["backlogs"]["spool"]
        assert (card["files"], card["s3_configured"]) == (1, False)
        assert "s3_bucket" not in card  # a bucket's name is shown with the admin token only
        invoice: dict[str, Any] = r.json()
        return invoice


async def test_files_spooled_without_s3_go_to_the_bucket_configured_later(
    make_app: Callable[..., FastAPI], s3_server: S3Server, fresh_bucket: str
) -> None:
    """The finding, end to end: spooled with no S3, then S3 configured with a bucket: the
    file goes to that bucket, and is served from it."""
    invoice = await spooled_without_s3(make_app)
    app = make_app(**s3_settings(s3_server, fresh_bucket))
    spool = app.state.runtime.spool
    async with running(app) as client:
        await aeventually(
            lambda: spool.stats()["files"] == 0, timeout=15.0, what="the spool drained"
        )
        key = f"invoices/{invoice['id'][:2]}/{invoice['id']}.txt"
        assert s3_keys(s3_server, fresh_bucket) == [key]
        assert in_s3(s3_server, fresh_bucket, key) == TEXT_INVOICE
        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.status_code == 200, file.text
        assert file.content == TEXT_INVOICE and file.headers["X-Invoice-Storage"] == "s3"
        assert (await client.get(f"/invoices/{invoice['id']}")).json()["storage"] == "s3"
        s3 = component((await client.get("/health")).json(), "s3")
        assert s3["status"] == "up"
        await app.state.runtime.invoice_binder.wait()

    # the invoice now names the bucket its file went to: changing S3_BUCKET again does not
    # send its downloads to a bucket that never had the file
    other = s3_server.create_bucket()
    async with running(make_app(**s3_settings(s3_server, other))) as client:
        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.status_code == 200, file.text
        assert file.content == TEXT_INVOICE


async def test_files_an_older_release_spooled_under_its_local_bucket_name_are_adopted(
    make_app: Callable[..., FastAPI], s3_server: S3Server, fresh_bucket: str
) -> None:
    """Data as today's main writes it (spool entry and invoice under 'inventario-invoices'):
    the next start sends the file to the configured bucket and the invoice follows."""
    invoice = await spooled_without_s3(make_app)
    legacy = make_app()  # rewrite the stored data the way the older release left it
    rt = legacy.state.runtime
    (entry,) = rt.spool.entries()
    rt.spool.retarget(entry, LOCAL_BUCKET)
    async with rt.db.session() as s:
        await s.execute(update(invoices).values(bucket=LOCAL_BUCKET))
    rt.spool.close()
    await rt.db.aclose()

    app = make_app(**s3_settings(s3_server, fresh_bucket))
    spool = app.state.runtime.spool
    async with running(app) as client:
        await aeventually(
            lambda: spool.stats()["files"] == 0, timeout=15.0, what="the spool drained"
        )
        assert len(s3_keys(s3_server, fresh_bucket)) == 1
        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.status_code == 200 and file.content == TEXT_INVOICE


async def test_a_bucket_that_is_gone_fails_the_file_visibly_until_it_is_retargeted(
    make_app: Callable[..., FastAPI],
    s3_server: S3Server,
    s3_proxy: ThreadedFaultProxy,
    fresh_bucket: str,
) -> None:
    """Spooled for bucket A during an outage; A is deleted and S3 now configured with B.
    NoSuchBucket marks the file failed with the reason; S3 is degraded on /health, the
    spool card and the metrics say so; the admin API retargets it to B and it is served."""
    old_bucket = s3_server.create_bucket()
    first = make_app(**s3_settings(s3_server, old_bucket, proxy=s3_proxy))
    async with running(first) as client:
        s3_proxy.set_mode(Mode.REFUSE)
        r = await upload(client)
        assert r.status_code == 201 and r.json()["storage"] == "spool", r.text
        invoice_id = r.json()["id"]
    s3_proxy.set_mode(Mode.PASS)
    s3_server.client().delete_bucket(Bucket=old_bucket)

    app = make_app(**s3_settings(s3_server, fresh_bucket), admin_token=TOKEN)
    spool = app.state.runtime.spool
    async with running(app) as client:
        await aeventually(
            lambda: spool.stats()["failed"] == 1, timeout=15.0, what="the entry marked failed"
        )
        (entry,) = spool.failed()
        assert entry.failed is not None
        assert "NoSuchBucket" in entry.failed and old_bucket in entry.failed

        health = (await client.get("/health")).json()
        s3 = component(health, "s3")
        assert s3["status"] == "degraded" and s3["score"] <= 50
        data = (await client.get("/status/data", headers=ADMIN)).json()
        assert any("NoSuchBucket" in why for why in component(data, "s3")["why"])
        card = data["backlogs"]["spool"]
        assert (card["files"], card["failed"], card["s3_bucket"]) == (1, 1, fresh_bucket)
        assert "NoSuchBucket" in card["failures"][0]["reason"]
        metrics = (await client.get("/metrics")).text
        assert 'brownout_spool_failed_entries{spool="spool"} 1.0' in metrics
        assert 'brownout_spool_gave_up_total{spool="spool"} 1.0' in metrics
        # the file is still served, from the spool
        file = await client.get(f"/invoices/{invoice_id}/file")
        assert file.status_code == 200 and file.headers["X-Invoice-Storage"] == "spool"

        listed = await client.get("/admin/spool", params={"state": "failed"}, headers=ADMIN)
        assert listed.status_code == 200, listed.text
        (shown,) = listed.json()["entries"]
        assert shown["id"] == entry.id and shown["state"] == "failed"
        assert shown["bucket"] == old_bucket and "NoSuchBucket" in shown["failed"]

        r = await client.post(
            "/admin/spool/retarget", json={"ids": [entry.id[:12]], "bucket": None}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        (moved,) = r.json()["retargeted"]
        assert moved["to"].startswith("(configured bucket)/")
        await aeventually(
            lambda: spool.stats()["files"] == 0, timeout=15.0, what="the retargeted file uploaded"
        )
        assert len(s3_keys(s3_server, fresh_bucket)) == 1

        async def s3_serves_it() -> bool:
            health = (await client.get("/health")).json()
            file = await client.get(f"/invoices/{invoice_id}/file")
            return component(health, "s3")["status"] == "up" and (
                file.headers.get("X-Invoice-Storage") == "s3"
            )

        await aeventually(
            s3_serves_it, timeout=15.0, what="S3 up again on /health and serving the invoice"
        )
        file = await client.get(f"/invoices/{invoice_id}/file")
        assert file.status_code == 200 and file.content == TEXT_INVOICE
        assert file.headers["X-Invoice-Storage"] == "s3"
        metrics = (await client.get("/metrics")).text
        assert 'brownout_spool_failed_entries{spool="spool"} 0.0' in metrics
        assert 'brownout_spool_retargeted_total{spool="spool"} 1.0' in metrics


async def test_operators_retry_and_discard_failed_entries(
    make_app: Callable[..., FastAPI], s3_server: S3Server, fresh_bucket: str
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket), admin_token=TOKEN)
    rt = app.state.runtime
    spool, uploader = rt.spool, rt.spool_uploader
    missing = f"later-{fresh_bucket}"
    async with running(app) as client:
        keep = spool.put(missing, "keep.txt", b"keep")
        drop = spool.put(missing, "drop.txt", b"drop")
        uploader.wake()
        await aeventually(
            lambda: spool.stats()["failed"] == 2, timeout=15.0, what="both marked failed"
        )

        s3_server.create_bucket(missing)  # the operator fixes the cause ...
        r = await client.post("/admin/spool/retry", json={"ids": [keep.id]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["retried"] == [keep.id], r.text
        await aeventually(
            lambda: spool.entry(missing, "keep.txt") is None,
            timeout=15.0,
            what="the retried upload",
        )
        assert in_s3(s3_server, missing, "keep.txt") == b"keep"
        r = await client.post("/admin/spool/discard", json={"all_failed": True}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["discarded"] == [drop.id], r.text
        assert spool.entries() == []
        metrics = (await client.get("/metrics")).text
        assert 'brownout_spool_discarded_total{spool="spool"} 1.0' in metrics


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"all_failed": True}, 401),
        ({"Authorization": "Bearer wrong"}, {"all_failed": True}, 403),
        (ADMIN, {}, 422),  # neither ids nor all_failed
        (ADMIN, {"ids": ["abc"]}, 422),  # a prefix too short
        (ADMIN, {"ids": ["0" * 64], "all_failed": True}, 422),
        (ADMIN, {"all_failed": True, "bucket": "Not_A_Bucket"}, 422),
    ],
)
async def test_admin_spool_endpoints_check_the_token_and_the_selection(
    make_app: Callable[..., FastAPI], headers: dict[str, str], body: dict[str, Any], status: int
) -> None:
    async with running(make_app(admin_token=TOKEN)) as client:
        r = await client.post("/admin/spool/retarget", json=body, headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == status and r.json()["detail"]
        assert TOKEN not in r.text


async def test_without_an_admin_token_there_are_no_spool_endpoints(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/admin/spool")).status_code == 404
