"""inventario never fsyncs on the event loop: a queued write waits for the outbox in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from fastapi import FastAPI

from brownout.outbox import JournalEvent
from tests.inventario.conftest import WIDGET, running


async def test_a_queued_write_is_made_durable_off_the_event_loop(
    make_app: Callable[..., FastAPI],
) -> None:
    app = make_app()
    async with running(app) as client:
        assert (await client.post("/products", json=WIDGET)).status_code == 201
        rt = app.state.runtime
        loop_thread = threading.current_thread()
        committed_in: list[threading.Thread] = []

        def on_event(event: JournalEvent) -> None:
            if event.kind == "submitted":  # emitted by the thread that waited for the fsync
                committed_in.append(threading.current_thread())

        rt.outbox.add_listener(on_event)
        rt.db.breaker.force_open()
        writes = [
            client.post(
                "/products/W-1/movements",
                json={"kind": "out", "quantity": 1},
                headers={"Idempotency-Key": f"off-loop-{i}"},
            )
            for i in range(4)
        ]
        replies = await asyncio.gather(*writes)
        assert [r.status_code for r in replies] == [202] * 4, [r.text for r in replies]
        assert len(committed_in) == 4
        assert loop_thread not in committed_in
        assert rt.outbox.pending_count() == 4
