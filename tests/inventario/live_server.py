"""A real inventario served by uvicorn in a background thread, for browser and CLI tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from brownout.testing import eventually
from brownout.testing.servers import free_port

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app: FastAPI, *, startup_timeout: float = 20.0) -> Iterator[str]:
    """Run ``app`` (lifespan included) on a free loopback port; yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="inventario-uvicorn", daemon=True)
    thread.start()

    def still_running() -> None:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited while starting inventario (see the log above)")

    try:
        eventually(
            lambda: server.started,
            timeout=startup_timeout,
            what="inventario to start",
            check=still_running,
        )
    except TimeoutError:
        server.should_exit = True
        raise
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)
