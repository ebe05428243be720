"""Supplier invoices through the real app: upload, S3 or spool, AI extraction, review, apply.

Servers: moto S3 (``s3_server``/``fresh_bucket``, outages through ``s3_proxy``)
and the OpenAI-compatible stub (``openai_stub``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from brownout import State
from brownout.chaos import Mode, ThreadedFaultProxy
from brownout.health import Level
from brownout.testing import aeventually
from brownout.testing.servers.openai_stub import OpenAIStub
from brownout.testing.servers.s3 import S3Server
from inventario.invoice_extraction import lines_from_answer
from inventario.invoice_parsing import decode_text, pdf_text
from inventario.invoice_upload import sniff
from tests.inventario.conftest import WIDGET, ai_settings, running, s3_settings

TEXT_INVOICE = (
    b"ACME Supplies - invoice 2024-117\nW-1 Widget    5 x 2.50\nG-1 Gadget    2 x 40.00\n"
)
GOOD_ANSWER: dict[str, Any] = {
    "supplier": "ACME Supplies",
    "lines": [
        {"sku": "W-1", "description": "Widget", "quantity": 5, "unit_cost": 2.5},
        {"sku": "G-1", "description": "Gadget", "quantity": 2, "unit_cost": 40},
    ],
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)


async def products(client: httpx.AsyncClient) -> None:
    assert (await client.post("/products", json=WIDGET)).status_code == 201
    gadget = {**WIDGET, "sku": "G-1", "name": "Gadget", "stock": 0, "cost": "30.00"}
    assert (await client.post("/products", json=gadget)).status_code == 201


async def upload(
    client: httpx.AsyncClient,
    data: bytes = TEXT_INVOICE,
    filename: str = "invoice.txt",
    content_type: str = "text/plain",
    **fields: str,
) -> httpx.Response:
    return await client.post(
        "/invoices", files={"file": (filename, data, content_type)}, data=fields or None
    )


def raw_form(filename: bytes, data: bytes = TEXT_INVOICE, ctype: bytes = b"text/plain") -> bytes:
    """A multipart body written by hand (httpx would percent-encode odd file names)."""
    return (
        b'--B0undary\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: '
        + ctype
        + b"\r\n\r\n"
        + data
        + b"\r\n--B0undary--\r\n"
    )


FORM = {"content-type": "multipart/form-data; boundary=B0undary"}


def in_s3(s3_server: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def s3_keys(s3_server: S3Server, bucket: str) -> list[str]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def nothing_stored(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await client.get("/invoices")).json()["total"] == 0
    assert app.state.runtime.spool.stats()["files"] == 0


# ------------------------------------------------------------------ the whole way


async def test_text_invoice_goes_to_s3_is_extracted_and_applied_once(
    make_app: Callable[..., FastAPI],
    s3_server: S3Server,
    fresh_bucket: str,
    openai_stub: OpenAIStub,
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket), **ai_settings(openai_stub))
    async with running(app) as client:
        await products(client)
        openai_stub.script(content=GOOD_ANSWER, path="/chat/completions")
        r = await upload(client)
        assert r.status_code == 201, r.text
        invoice = r.json()
        assert invoice["storage"] == "s3" and invoice["state"] == "extracted"
        assert invoice["extracted_by"] == "ai" and invoice["supplier"] == "ACME Supplies"
        assert [(ln["sku"], ln["quantity"], ln["unit_cost"]) for ln in invoice["lines"]] == [
            ("W-1", 5, "2.50"),
            ("G-1", 2, "40.00"),
        ]
        assert invoice["sha256"] == hashlib.sha256(TEXT_INVOICE).hexdigest()
        # the object is really in S3, under a key made from the id only
        (key,) = s3_keys(s3_server, fresh_bucket)
        assert key == f"invoices/{invoice['id'][:2]}/{invoice['id']}.txt"
        assert in_s3(s3_server, fresh_bucket, key) == TEXT_INVOICE
        # the model was asked for structured output, with the invoice's text
        (request,) = [q for q in openai_stub.requests if q.path.endswith("/chat/completions")]
        sent = request.json
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["strict"] is True
        assert "W-1 Widget    5 x 2.50" in json.dumps(sent["messages"])
        assert "W-1: Widget" in sent["messages"][0]["content"]  # the catalogue

        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.status_code == 200 and file.content == TEXT_INVOICE
        assert file.headers["X-Invoice-Storage"] == "s3"
        assert "invoice.txt" in file.headers["Content-Disposition"]

        r = await client.post(f"/invoices/{invoice['id']}/apply")
        assert r.status_code == 200, r.text
        applied = r.json()
        assert applied["invoice"]["state"] == "applied" and applied["invoice"]["applied_at"]
        assert [(m["sku"], m["kind"], m["quantity"]) for m in applied["movements"]] == [
            ("W-1", "in", 5),
            ("G-1", "in", 2),
        ]
        assert (await client.get("/products/W-1")).json()["stock"] == 15
        assert (await client.get("/products/G-1")).json()["stock"] == 2
        history = (await client.get("/products/W-1/movements")).json()
        assert [(m["reason"], m["source"], m["delta"]) for m in history] == [
            (f"invoice {invoice['id']}", "invoice", 5)
        ]

        again = await client.post(f"/invoices/{invoice['id']}/apply")
        assert again.status_code == 409
        assert again.json()["code"] == "invoice_applied"
        assert (await client.get("/products/W-1")).json()["stock"] == 15
        assert len((await client.get("/products/W-1/movements")).json()) == 1
        # and the lines of an applied invoice cannot be changed any more
        lines = {"lines": [{"sku": "W-1", "quantity": 1, "unit_cost": "1.00"}]}
        assert (await client.put(f"/invoices/{invoice['id']}/lines", json=lines)).status_code == 409

        listed = (await client.get("/invoices", params={"state": "applied"})).json()
        assert [i["id"] for i in listed["items"]] == [invoice["id"]] and listed["total"] == 1
        assert (await client.get("/invoices", params={"state": "needs_review"})).json()[
            "total"
        ] == 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_concurrent_applies_apply_once(
    make_app: Callable[..., FastAPI],
    openai_stub: OpenAIStub,
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    settings = ai_settings(openai_stub)
    if database == "postgresql":
        dsn: str = request.getfixturevalue("fresh_database")
        settings["database_url"] = dsn.replace("postgresql://", "postgresql+asyncpg://")
    app = make_app(**settings)
    async with running(app) as client:
        await products(client)
        openai_stub.script(content=GOOD_ANSWER, path="/chat/completions")
        invoice = (await upload(client)).json()
        answers = await asyncio.gather(
            *(client.post(f"/invoices/{invoice['id']}/apply") for _ in range(4))
        )
        assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
        assert (await client.get("/products/W-1")).json()["stock"] == 15
        assert len((await client.get("/products/W-1/movements")).json()) == 1


# ------------------------------------------------------------------ bad input


async def test_oversized_upload_is_413_while_reading(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(invoice_max_bytes=1000)
    async with running(app) as client:
        r = await upload(client, b"x" * 1001)
        assert r.status_code == 413
        assert r.json()["code"] == "file_too_large" and r.json()["max_bytes"] == 1000
        assert "INVOICE_MAX_BYTES" in r.json()["detail"]

        sent = 0

        async def endless() -> AsyncIterator[bytes]:  # no Content-Length: checked as it comes
            nonlocal sent
            yield raw_form(b"big.txt", b"")[: -len(b"\r\n--B0undary--\r\n")]
            for _ in range(10_000):
                sent += 1
                yield b"y" * 100

        r = await client.post("/invoices", content=endless(), headers=FORM)
        assert r.status_code == 413
        assert sent < 20  # refused after about 1000 bytes, not after the whole stream
        assert (await upload(client, b"x" * 1000)).status_code == 201  # the limit itself is fine


@pytest.mark.parametrize(
    ("data", "declared", "detected"),
    [
        (b"PK\x03\x04 a zip", "application/zip", None),
        (TEXT_INVOICE, "image/png", "text/plain"),
        (PNG, "application/pdf", "image/png"),
        (b"\x00\x01\x02binary", "text/plain", None),
    ],
)
async def test_unsupported_or_mislabelled_file_is_415(
    make_app: Callable[..., FastAPI], data: bytes, declared: str, detected: str | None
) -> None:
    app = make_app()
    async with running(app) as client:
        r = await upload(client, data, "invoice.bin", declared)
        assert r.status_code == 415, r.text
        body = r.json()
        assert body["code"] == "unsupported_file_type" and declared in body["detail"]
        if "detected" in body:
            assert body["detected"] == detected
        await nothing_stored(client, app)


@pytest.mark.parametrize(
    ("filename", "problem"),
    [
        (b"../../etc/passwd", "'..'"),
        (b"..\\evil.txt", "'\\\\'"),
        (b"dir/invoice.txt", "'/'"),
        (b"in\x00voice.txt", "NUL"),
        (b"in\x07voice.txt", "control character"),
        (b"%2e%2e%2finvoice.txt", "percent-encoded"),
    ],
)
async def test_bad_file_names_are_422_naming_the_problem(
    make_app: Callable[..., FastAPI], filename: bytes, problem: str
) -> None:
    app = make_app()
    async with running(app) as client:
        r = await client.post("/invoices", content=raw_form(filename), headers=FORM)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_file_name"
        assert problem in json.dumps(r.json()["detail"]), r.json()
        await nothing_stored(client, app)


async def test_malformed_forms_are_clear(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    async with running(app) as client:
        r = await client.post("/invoices", json={"file": "x"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
        r = await client.post("/invoices", data={"supplier": "ACME"}, files={"other": b"x"})
        assert r.status_code == 422 and r.json()["code"] == "missing_file"
        r = await upload(client, b"")
        assert r.status_code == 422 and r.json()["code"] == "empty_file"
        r = await client.post("/invoices", content=b"--B0undary\r\ngarbage", headers=FORM)
        assert r.status_code == 422
        await nothing_stored(client, app)


async def test_full_spool_is_507_and_nothing_is_written(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(spool_max_bytes=100)
    async with running(app) as client:
        r = await upload(client, b"z" * 101)
        assert r.status_code == 507
        assert r.json()["code"] == "spool_full" and "SPOOL_MAX_BYTES" in r.json()["detail"]
        await nothing_stored(client, app)


async def test_database_down_stores_nothing(
    make_app: Callable[..., FastAPI], redis_server: Any
) -> None:
    app = make_app(redis_url=redis_server.url)  # with a cache beside it: MINIMAL, not EMERGENCY
    async with running(app) as client:
        app.state.runtime.db.breaker.force_open()
        r = await upload(client)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert app.state.runtime.spool.stats()["files"] == 0
        app.state.runtime.db.breaker.reset()
        assert (await client.get("/invoices")).json()["total"] == 0


# ------------------------------------------------------------------ without AI


async def test_without_openai_lines_are_entered_by_hand(
    client: httpx.AsyncClient,
) -> None:
    await products(client)
    r = await upload(client, supplier="ACME")
    assert r.status_code == 201, r.text
    invoice = r.json()
    assert invoice["state"] == "needs_review" and invoice["storage"] == "spool"
    assert "OPENAI_API_KEY" in invoice["reason"] and invoice["supplier"] == "ACME"
    url = f"/invoices/{invoice['id']}"

    not_ready = await client.post(f"{url}/apply")
    assert not_ready.status_code == 409 and not_ready.json()["state"] == "needs_review"
    assert (await client.post(f"{url}/extract")).status_code == 503  # AI feature is off

    file = await client.get(f"{url}/file")
    assert file.content == TEXT_INVOICE and file.headers["X-Invoice-Storage"] == "spool"

    bad = [
        ({"lines": [{"sku": "NOPE", "quantity": 1, "unit_cost": "1.00"}]}, "unknown_sku"),
        ({"lines": [{"sku": "W-1", "quantity": 0, "unit_cost": "1.00"}]}, "quantity"),
        ({"lines": [{"sku": "W-1", "quantity": 1, "unit_cost": "-1"}]}, "unit_cost"),
        ({"lines": [{"quantity": 1, "unit_cost": "1.00"}]}, "sku"),
        ({"lines": []}, "lines"),
    ]
    for body, named in bad:
        r = await client.put(f"{url}/lines", json=body)
        assert r.status_code == 422, body
        assert named in r.text, r.text
    assert (await client.get(url)).json()["state"] == "needs_review"

    lines = {
        "lines": [
            {"sku": "W-1", "description": "Widget", "quantity": 5, "unit_cost": "2.50"},
            {"sku": "G-1", "quantity": 2, "unit_cost": "40.00"},
        ]
    }
    r = await client.put(f"{url}/lines", json=lines)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "extracted" and r.json()["extracted_by"] == "manual"
    r = await client.post(f"{url}/apply")
    assert r.status_code == 200, r.text
    assert (await client.get("/products/W-1")).json()["stock"] == 15
    assert (await client.get("/products/G-1")).json()["stock"] == 2
    assert (await client.post(f"{url}/apply")).status_code == 409
    assert (await client.get("/invoices/" + "0" * 32)).status_code == 404
    assert (await client.get("/invoices/not-an-id")).status_code == 422


async def test_unknown_sku_applies_nothing(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        await products(client)
        answer = {
            "supplier": "",
            "lines": [
                *GOOD_ANSWER["lines"],
                {"sku": "NOPE-9", "description": "?", "quantity": 1, "unit_cost": 1},
            ],
        }
        openai_stub.script(content=answer, path="/chat/completions")
        invoice = (await upload(client)).json()
        assert invoice["state"] == "extracted"
        r = await client.post(f"/invoices/{invoice['id']}/apply")
        assert r.status_code == 422
        assert r.json()["code"] == "unknown_sku" and r.json()["skus"] == ["NOPE-9"]
        assert r.json()["lines"] == [3]
        # nothing applied: not the good lines either, and the invoice is still open
        assert (await client.get("/products/W-1")).json()["stock"] == 10
        assert (await client.get("/products/W-1/movements")).json() == []
        assert (await client.get(f"/invoices/{invoice['id']}")).json()["state"] == "extracted"


async def test_apply_is_off_when_batch_processing_is(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app()
    async with running(app) as client:
        invoice = (await upload(client)).json()
        app.state.runtime.manager.pin(Level.MINIMAL, duration=60)
        r = await client.post(f"/invoices/{invoice['id']}/apply")
        assert r.status_code == 503 and r.json()["feature"] == "batch_processing"
        assert (await upload(client)).status_code == 201  # uploads still work at MINIMAL


# ------------------------------------------------------------------ AI failures and inputs


async def test_openai_500_leaves_the_invoice_for_review_and_extract_retries(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        await products(client)
        # the SDK retries 3 times at OPTIMAL (the level's max_retries): 4 answers of 500
        # (retry-after-ms: the SDK waits 10 ms, not its backoff, before each retry)
        openai_stub.script(
            status=500, headers={"retry-after-ms": "10"}, times=4, path="/chat/completions"
        )
        r = await upload(client)
        assert r.status_code == 201, r.text
        chats = [q for q in openai_stub.requests if q.path.endswith("/chat/completions")]
        assert len(chats) == 4
        invoice = r.json()
        assert invoice["state"] == "needs_review" and invoice["lines"] is None
        assert "AI extraction failed" in invoice["reason"]
        assert "InternalServerError" in invoice["reason"]
        assert "sk-test-invoices" not in r.text

        openai_stub.script(content=GOOD_ANSWER, path="/chat/completions")
        r = await client.post(f"/invoices/{invoice['id']}/extract")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "extracted" and len(r.json()["lines"]) == 2
        assert r.json()["reason"] is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("this is not json", "not valid JSON"),
        ({"supplier": "", "lines": []}, "no invoice lines"),
        (
            {
                "supplier": "",
                "lines": [{"sku": "W-1", "description": "", "quantity": 0, "unit_cost": 1}],
            },
            "line 1: quantity",
        ),
    ],
)
async def test_bad_model_answers_need_review(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub, content: Any, why: str
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        openai_stub.script(content=content, path="/chat/completions")
        invoice = (await upload(client)).json()
        assert invoice["state"] == "needs_review"
        assert why in invoice["reason"], invoice["reason"]


async def test_open_openai_breaker_means_review_without_a_request(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        app.state.runtime.ai.breaker.force_open()
        invoice = (await upload(client)).json()
        assert invoice["state"] == "needs_review"
        assert "openai" in invoice["reason"]
        assert not [q for q in openai_stub.requests if q.path.endswith("/chat/completions")]


async def test_images_are_sent_as_data_urls_and_pdf_as_text(
    make_app: Callable[..., FastAPI], openai_stub: OpenAIStub
) -> None:
    app = make_app(**ai_settings(openai_stub))
    async with running(app) as client:
        openai_stub.script(content=GOOD_ANSWER, path="/chat/completions", times=2)
        r = await upload(client, PNG, "scan.png", "image/png")
        assert r.json()["state"] == "extracted", r.text
        r = await upload(
            client,
            simple_pdf(b"BT /F1 12 Tf 72 700 Td (W-1 Widget 5 x 2.50) Tj ET"),
            "inv.pdf",
            "application/pdf",
        )
        assert r.json()["state"] == "extracted", r.text
        image, pdf = [q.json for q in openai_stub.requests if q.path.endswith("/chat/completions")]
        parts = image["messages"][1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()
        assert "W-1 Widget 5 x 2.50" in pdf["messages"][1]["content"][0]["text"]

        scanned = simple_pdf(b"q 612 0 0 792 0 0 cm /Im1 Do Q")  # an image, no text
        r = await upload(client, scanned, "scan.pdf", "application/pdf")
        assert r.json()["state"] == "needs_review" and "PDF" in r.json()["reason"]


def simple_pdf(content: bytes, *, compress: bool = True) -> bytes:
    stream = zlib.compress(content) if compress else content
    flt = b"/Filter /FlateDecode " if compress else b""
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"4 0 obj\n<< "
        + flt
        + b"/Length "
        + str(len(stream)).encode()
        + b" >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def test_pdf_text_reads_simple_pdfs_only() -> None:
    tj = b"BT /F1 10 Tf 50 700 Td (Invoice \\(copy\\)) Tj 0 -14 Td [(W-1) -400 (5 x 2.50)] TJ ET"
    assert pdf_text(simple_pdf(tj)) == "Invoice (copy)\nW-1 5 x 2.50"
    assert pdf_text(simple_pdf(tj, compress=False)) == "Invoice (copy)\nW-1 5 x 2.50"
    hexed = b"BT <572D31> Tj T* <FEFF0047002D0031> Tj ET"
    assert pdf_text(simple_pdf(hexed)) == "W-1\nG-1"
    assert pdf_text(simple_pdf(b"q /Im1 Do Q")) is None
    assert pdf_text(simple_pdf(b"BT <00010002000300040005> Tj ET")) is None  # CID glyphs
    assert pdf_text(b"%PDF-1.4 /Encrypt 5 0 R " + simple_pdf(tj)) is None
    assert pdf_text(b"%PDF-1.4\nnothing here") is None


def test_sniff_knows_the_accepted_types_and_legacy_text() -> None:
    assert sniff(PNG) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "image/jpeg"
    assert sniff(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"%PDF-1.7\n") == "application/pdf"
    legacy = "Café crème 5 x 2,50 €\n".encode("cp1252")
    assert sniff(legacy) == "text/plain" and decode_text(legacy) == "Café crème 5 x 2,50 €\n"
    assert sniff("Grüße\tok\r\n".encode()) == "text/plain"
    assert sniff(b"PK\x03\x04\x14\x00") is None
    assert sniff(b"text with a \x00 inside") is None


def test_model_answers_are_checked_line_by_line() -> None:
    lines = lines_from_answer(
        {
            "lines": [
                {"sku": " W-1 ", "description": "Widget", "quantity": 3.0, "unit_cost": 1.005},
                {"sku": "not a sku!", "description": "thing", "quantity": 1, "unit_cost": "2"},
            ]
        }
    )
    assert lines == [
        {"sku": "W-1", "description": "Widget", "quantity": 3, "unit_cost": "1.01"},
        {"sku": None, "description": "not a sku! thing", "quantity": 1, "unit_cost": "2.00"},
    ]
    for bad, why in [
        ({}, "no 'lines'"),
        ({"lines": [{"quantity": 1.5, "unit_cost": 1}]}, "whole number"),
        ({"lines": [{"quantity": True, "unit_cost": 1}]}, "not a number"),
        ({"lines": [{"quantity": 1, "unit_cost": "abc"}]}, "unit_cost"),
        ({"lines": [{"quantity": 1, "unit_cost": -1}]}, "unit_cost"),
    ]:
        with pytest.raises(ValueError, match=why):
            lines_from_answer(bad)


# ------------------------------------------------------------------ S3 outages and the spool


async def test_s3_unreachable_spools_then_the_uploader_drains_into_s3(
    make_app: Callable[..., FastAPI],
    s3_server: S3Server,
    s3_proxy: ThreadedFaultProxy,
    fresh_bucket: str,
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket, proxy=s3_proxy))
    rt = app.state.runtime
    spool = rt.spool
    async with running(app) as client:
        s3_proxy.set_mode(Mode.REFUSE)
        r = await upload(client)
        assert r.status_code == 201, r.text
        invoice = r.json()
        assert invoice["storage"] == "spool"
        assert spool.stats()["files"] == 1 and s3_keys(s3_server, fresh_bucket) == []
        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.content == TEXT_INVOICE and file.headers["X-Invoice-Storage"] == "spool"
        assert (await client.get("/about")).json()["spool"]["files"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'brownout_spool_pending_files{spool="spool"} 1.0' in metrics

        s3_proxy.set_mode(Mode.PASS)
        rt.spool_uploader.wake()
        await aeventually(lambda: spool.stats()["files"] == 0, timeout=15.0)
        (key,) = s3_keys(s3_server, fresh_bucket)
        assert key.endswith(f"{invoice['id']}.txt")
        assert in_s3(s3_server, fresh_bucket, key) == TEXT_INVOICE
        assert (await client.get(f"/invoices/{invoice['id']}")).json()["storage"] == "s3"
        metrics = (await client.get("/metrics")).text
        assert 'brownout_spool_uploaded_total{spool="spool"} 1.0' in metrics
        file = await client.get(f"/invoices/{invoice['id']}/file")
        assert file.content == TEXT_INVOICE and file.headers["X-Invoice-Storage"] == "s3"


async def test_open_s3_breaker_spools_and_closing_it_drains(
    make_app: Callable[..., FastAPI], s3_server: S3Server, fresh_bucket: str
) -> None:
    app = make_app(**s3_settings(s3_server, fresh_bucket))
    rt = app.state.runtime
    spool = rt.spool
    async with running(app) as client:
        rt.s3.breaker.force_open()
        r = await upload(client, PNG, "scan.png", "image/png")
        assert r.status_code == 201 and r.json()["storage"] == "spool"
        assert s3_keys(s3_server, fresh_bucket) == []
        rt.s3.breaker.reset()  # the uploader watches the breaker: closing it starts a drain
        await aeventually(lambda: spool.stats()["files"] == 0, timeout=15.0)
        assert rt.s3.breaker.state is State.CLOSED
        (key,) = s3_keys(s3_server, fresh_bucket)
        assert in_s3(s3_server, fresh_bucket, key) == PNG


# ------------------------------------------------------------------ file names (RFC 6266)

NON_ASCII_NAMES = ["Müller.txt", "Rechnung Größe 3 €.txt", "請求書.txt", 'quo"te;name.txt']


def _disposition(header: str) -> tuple[str, str]:
    """(the quoted ``filename`` fallback, the decoded ``filename*``) of a Content-Disposition."""
    fallback = re.search(r'filename="((?:[^"\\]|\\.)*)"', header)
    extended = re.search(r"filename\*=UTF-8''([^;\s]+)", header)
    assert fallback is not None and extended is not None, header
    return fallback.group(1), unquote(extended.group(1), errors="strict")


@pytest.mark.parametrize("name", NON_ASCII_NAMES)
async def test_a_non_ascii_file_name_is_kept_and_sent_back_per_rfc_6266(
    make_app: Callable[..., FastAPI], name: str
) -> None:
    """Browsers and httpx send the name as raw UTF-8 in the form part's header: it is kept
    exactly and sent back with an ASCII ``filename`` and a ``filename*=UTF-8''`` one."""
    async with running(make_app()) as client:
        r = await upload(client, filename=name)
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == name
        invoice_id = r.json()["id"]
        assert (await client.get(f"/invoices/{invoice_id}")).json()["filename"] == name
        file = await client.get(f"/invoices/{invoice_id}/file")
        assert file.status_code == 200
        header = file.headers["Content-Disposition"]
        assert header.isascii() and header.startswith("attachment;")
        fallback, exact = _disposition(header)
        assert exact == name
        assert fallback.isascii() and fallback.endswith(".txt") and '"' not in fallback
        # the fallback keeps what ASCII can say: letters lose their accents, not the letter
        if name == "Müller.txt":
            assert fallback == "Muller.txt"


async def test_an_rfc_2231_file_name_is_decoded(make_app: Callable[..., FastAPI]) -> None:
    """A client that sends ``filename*=UTF-8''...`` (RFC 2231/5987) gets the name it meant."""
    body = (
        b'--B0undary\r\nContent-Disposition: form-data; name="file"; filename="M_ller.txt"; '
        b"filename*=UTF-8''M%C3%BCller.txt\r\nContent-Type: text/plain\r\n\r\n"
        + TEXT_INVOICE
        + b"\r\n--B0undary--\r\n"
    )
    async with running(make_app()) as client:
        r = await client.post("/invoices", content=body, headers=FORM)
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == "Müller.txt"


async def test_a_latin_1_file_name_is_still_read(make_app: Callable[..., FastAPI]) -> None:
    """A header that is not UTF-8 (an old client's Latin-1) is read as Latin-1, not refused."""
    async with running(make_app()) as client:
        r = await client.post(
            "/invoices", content=raw_form("Müller.txt".encode("latin-1")), headers=FORM
        )
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == "Müller.txt"
