"""The status page's trend charts in a real headless Chromium: a screenshot read back."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from tests.inventario.conftest import WIDGET
from tests.inventario.live_server import serving


def _png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data)
            assert depth == 8 and interlace == 0 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += data
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line[i] for i in range(stride) if i % channels < 3))
        prev = line
    return width, height, rows


def _line_pixels(png: bytes) -> int:
    """Pixels of the series' colour (#4ea1ff, blended on the dark panel): the plotted line."""
    width, _, rows = _png_pixels(png)
    n = 0
    for row in rows:
        for x in range(width):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            if b > 180 and b - r > 80 and 100 < g < 220:
                n += 1
    return n


def _colour_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    width, _, rows = _png_pixels(png)
    return sum(
        1
        for row in rows
        for x in range(width)
        if all(abs(row[3 * x + i] - rgb[i]) < 12 for i in range(3))
    )


def test_charts_are_drawn_after_traffic(chromium: Any, make_app: Callable[..., FastAPI]) -> None:
    from playwright.sync_api import expect

    app = make_app()
    with serving(app) as base:
        context = chromium.new_context(viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # traffic over a few samples (one a second), so that the lines have points
        for i in range(4):
            for j in range(5):
                httpx.post(f"{base}/products", json={**WIDGET, "sku": f"W-{i}-{j}"}, timeout=5)
                httpx.get(f"{base}/products/W-{i}-{j}", timeout=5)
            page.wait_for_timeout(1000)
        page.goto(f"{base}/status")
        chart = page.get_by_test_id("chart-database-rps")
        expect(chart.locator("canvas")).to_have_count(1, timeout=10_000)
        page.wait_for_timeout(500)
        shot = chart.locator("canvas").screenshot()
        assert _line_pixels(shot) > 20, "the requests/s chart shows no line"
        band = page.get_by_test_id("band-database").screenshot()
        assert _colour_pixels(band, (0x2F, 0xBF, 0x71)) > 50, "no 'closed' band drawn"
        level = page.get_by_test_id("level-band").screenshot()
        assert _colour_pixels(level, (0x2F, 0xBF, 0x71)) > 50, "no level timeline drawn"
        lines = page.get_by_test_id("level-lines")
        # one line per level, in plain words of what users live with there
        expect(lines.locator("li")).to_have_count(5)
        expect(lines.locator("li").nth(0)).to_have_text("optimal: everything works")
        expect(lines.locator("li").nth(2)).to_contain_text("searches and reports are off")
        expect(lines.locator("li").nth(3)).to_contain_text("writes are being queued")
        expect(lines).not_to_contain_text("off:")
        expect(page.get_by_test_id("in-use-database")).to_have_text("bulkhead in use: n/a")
        # a time with its date and zone (Chromium's default locale/zone: UTC)
        expect(page.get_by_test_id("trends-range")).to_contain_text("UTC")
        expect(page.get_by_test_id("trends-range")).to_contain_text("20")
        context.close()
    assert not errors, errors
