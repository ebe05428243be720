"""``create_app(freeze_gc=True)`` (what ``inventario serve`` builds): the objects alive once
the service started are frozen out of the garbage collector's generations, so its full
collections under load do not scan them again and again (docs/benchmarks.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventario.app import create_app
from inventario.config import load_settings
from tests.inventario.conftest import running


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's collector as it was: whatever a test froze is unfrozen."""
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
@pytest.mark.parametrize("freeze", [True, False])
async def test_the_serving_process_freezes_what_lives_after_start(
    tmp_path: Path, freeze: bool
) -> None:
    app = create_app(load_settings(var_dir=tmp_path / "var", heartbeat=3600.0), freeze_gc=freeze)
    assert gc.get_freeze_count() == 0  # not when built: once started
    async with running(app) as client:
        assert (await client.get("/health/live")).status_code == 200
        frozen = gc.get_freeze_count()
        if freeze:
            # the modules, routes, schemas and runtime: far more than a full collection
            # should scan each time
            assert frozen > 50_000
            assert len(gc.get_objects()) < frozen
        else:
            assert frozen == 0
