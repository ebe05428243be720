"""The API fuzzed from its own OpenAPI (schemathesis), on SQLite and on PostgreSQL.

Every phase (examples, coverage, fuzzing, stateful), a fixed seed, a bounded
budget per backend (``INVENTARIO_FUZZ_SECONDS``, 30 by default; ``make fuzz``
runs longer), and the checks the service promises: no 5xx, and every status
code, content type and body as its OpenAPI documents them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis")

from tests.inventario.fuzz import PHASES, FuzzReport, fuzz_app, make_app

SECONDS = int(os.environ.get("INVENTARIO_FUZZ_SECONDS", "30"))
MAX_EXAMPLES = int(os.environ.get("INVENTARIO_FUZZ_EXAMPLES", "15"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS * 3 + 120)]


def check(report: FuzzReport) -> None:
    print(report.summary())  # the figures, with -s or in the captured output
    problems = report.failures + [f"error: {e}" for e in report.errors]
    assert not problems, f"{report.summary()}\n\n" + "\n\n".join(problems)
    assert report.operations >= 20, report.summary()  # every operation was reached
    ran = {phase for phase, cases in report.phases.items() if cases}
    assert ran == set(PHASES), report.summary()  # every phase generated cases


@pytest.mark.servers
def test_fuzz_sqlite(tmp_path: Path, openai_stub: Any) -> None:
    app = make_app(tmp_path / "var", ai_url=openai_stub.base_url)
    check(fuzz_app(app, backend="sqlite", seconds=SECONDS, max_examples=MAX_EXAMPLES))


@pytest.mark.servers
def test_fuzz_postgres(tmp_path: Path, openai_stub: Any, fresh_database: str) -> None:
    url = fresh_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    app = make_app(tmp_path / "var", ai_url=openai_stub.base_url, database_url=url)
    check(fuzz_app(app, backend="postgres", seconds=SECONDS, max_examples=MAX_EXAMPLES))
