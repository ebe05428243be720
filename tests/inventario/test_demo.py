"""The demo (``tools/demo.py``, ``make demo``): the whole fault timeline against real servers,
and Ctrl-C cleanup.

Runs ``python -m tools.demo`` in a child process, as ``make demo`` does. Needs
redis-server, PostgreSQL and moto; a missing one skips (fails with ``BROWNOUT_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tools.demo import Demo, DemoOptions, Sample, WriteRecord, summarize
from tools.stack import Dependency

from brownout.testing import eventually
from brownout.testing.servers import postgres_unavailable, redis_unavailable, s3_unavailable
from brownout.testing.servers._process import _pid_alive
from inventario.cli import main as inventario_main
from tests.servers._util import missing

CHECKOUT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT = 300.0  # --quick takes about a minute; generous for a loaded machine
real_stack = pytest.mark.usefixtures("_stack_available")


@pytest.fixture
def _stack_available() -> None:
    for reason in (redis_unavailable(), postgres_unavailable(), s3_unavailable()):
        if reason is not None:
            missing(f"inventario demo needs the whole stack: {reason}")


# ------------------------------------------------------------------ the verdict (no servers)


class FakeStack:
    """What ``summarize`` needs of the stack: the dependencies and the database's keys."""

    def __init__(self, keys: set[str], moves: dict[str, tuple[str, int]]) -> None:
        self.service = SimpleNamespace(url="http://127.0.0.1:9")
        names = ("redis", "database", "s3", "openai")
        self.deps = {n: Dependency(n, n, proxy=object()) for n in names}  # type: ignore[arg-type]
        self.keys, self.moves = keys, moves

    def _nothing(self) -> None:
        pass

    redis_down = redis_back = openai_429 = openai_back = _nothing
    database_down = database_back = _nothing

    def applied(self, prefix: str) -> tuple[set[str], dict[str, tuple[str, int]]]:
        return self.keys, self.moves


def _finished_demo(stack: FakeStack, *, reached: bool = True) -> Demo:
    demo = Demo(stack, DemoOptions(quick=True), io.StringIO())  # type: ignore[arg-type]
    demo.build_timeline()
    for i, phase in enumerate(demo.phases):
        phase.started, phase.ended = i * 10.0, i * 10.0 + 10.0
        phase.reached_after = 1.0 if reached or phase.name != "database down" else None
        if phase.reached_after is None:
            phase.notes.append("expected MINIMAL, still LIMITED")
        demo.levels.append((phase.started, phase.expected, 50.0))
        demo.samples.append(Sample(i, "read", "ok", 200, 0.01, phase.expected))
    demo.outbox = {"pending": 0, "replayed_total": 1, "dead_letters": 0}
    p = demo.prefix
    demo.writes = [
        WriteRecord(f"{p}move-1", "stock.move", 201, 1, "DEMO-001", 2),
        WriteRecord(f"{p}move-2", "stock.move", 202, 3, "DEMO-002", -1),
        WriteRecord(f"{p}update-3", "product.update", 202, 3, "DEMO-003"),
        WriteRecord(f"{p}move-4", "stock.move", 503, 3, "DEMO-001", 1),  # refused: not counted
    ]
    return demo


def _apply_every_accepted_write(stack: FakeStack, demo: Demo) -> None:
    """The database holds the accepted writes of :func:`_finished_demo`, as accepted."""
    p = demo.prefix
    stack.keys = {f"{p}move-1", f"{p}move-2", f"{p}update-3"}
    stack.moves = {f"{p}move-1": ("DEMO-001", 2), f"{p}move-2": ("DEMO-002", -1)}


def _verdict(demo: Demo, stack: FakeStack) -> tuple[bool, list[str], dict[str, Any], str]:
    out = io.StringIO()
    verdict = summarize(demo, stack, out)  # type: ignore[arg-type]
    return verdict.ok, verdict.reasons, verdict.report, out.getvalue()


def test_verdict_passes_when_every_accepted_write_is_in_the_database() -> None:
    stack = FakeStack(set(), {})
    demo = _finished_demo(stack)
    _apply_every_accepted_write(stack, demo)
    ok, reasons, report, text = _verdict(demo, stack)
    assert ok, reasons
    assert report["writes"] == {
        "accepted": 3,
        "queued": 2,
        "applied": 3,
        "queued_applied": 2,
        "movements_accepted": 2,
        "movements_applied": 2,
    }
    assert "writes accepted: 3 (direct 1, queued 202 2); applied: 3" in text
    assert "result: PASS" in text


def test_a_missing_accepted_write_fails_the_demo() -> None:
    stack = FakeStack(set(), {})
    demo = _finished_demo(stack)
    p = demo.prefix
    stack.keys = {f"{p}move-1", f"{p}update-3"}  # the queued movement was never applied
    stack.moves = {f"{p}move-1": ("DEMO-001", 2)}
    ok, reasons, report, text = _verdict(demo, stack)
    assert not ok
    assert report["writes"]["accepted"] == 3 and report["writes"]["applied"] == 2
    assert any(
        "1 accepted write(s) are not in the database" in r and "move-2" in r for r in reasons
    )
    assert "result: FAIL" in text


def test_a_movement_applied_with_another_quantity_fails_the_demo() -> None:
    stack = FakeStack(set(), {})
    demo = _finished_demo(stack)
    p = demo.prefix
    stack.keys = {f"{p}move-1", f"{p}move-2", f"{p}update-3"}
    stack.moves = {f"{p}move-1": ("DEMO-001", 2), f"{p}move-2": ("DEMO-002", -2)}
    ok, reasons, _, _ = _verdict(demo, stack)
    assert not ok
    assert any("1 accepted stock movement(s) have no movement row" in r for r in reasons)


def test_a_level_not_reached_fails_the_demo() -> None:
    stack = FakeStack(set(), {})
    demo = _finished_demo(stack, reached=False)
    _apply_every_accepted_write(stack, demo)
    ok, reasons, _, text = _verdict(demo, stack)
    assert not ok
    assert reasons == ["phase 'database down': expected MINIMAL, still LIMITED"]
    assert re.search(r"^database down\s+MINIMAL\s+NO ", text, re.M)


def test_phases_of_a_missing_dependency_are_skipped_and_said_so() -> None:
    stack = FakeStack(set(), {})
    stack.deps["redis"] = Dependency("redis", "redis-server", missing="redis-server not found")
    demo = _finished_demo(stack)
    _apply_every_accepted_write(stack, demo)
    ok, _, report, text = _verdict(demo, stack)
    assert ok
    assert report["skipped"] == ["redis down"]
    assert report["missing"] == {"redis": "redis-server not found"}
    assert "not started: redis: redis-server not found" in text
    assert "result: PASS - every phase that could run (1 skipped: redis down)" in text


def test_the_service_cli_says_where_the_demo_went(capsys: pytest.CaptureFixture[str]) -> None:
    assert inventario_main(["demo", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "not part of the service" in err and "make demo" in err and "tools.demo" in err


# ------------------------------------------------------------------ the real thing


def _demo(*args: str, cwd: Path) -> subprocess.Popen[str]:
    def default_sigint() -> None:  # a shell without job control starts us with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "tools.demo", "--quick", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},  # tools/ is not installed
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


@real_stack
@pytest.mark.servers
@pytest.mark.slow
def test_quick_demo_reaches_every_level_and_applies_every_accepted_write(
    tmp_path: Path,
) -> None:
    summary_path = tmp_path / "summary.json"
    proc = _demo("--summary-json", str(summary_path), cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    tail = "\n".join(out.splitlines()[-60:])
    assert proc.returncode == 0, f"inventario demo --quick exited {proc.returncode}:\n{tail}"

    # the summary a person reads
    assert "=== inventario demo summary (quick) ===" in out
    assert re.search(r"^levels reached: OPTIMAL [\d.]+ s, DEGRADED .*MINIMAL [\d.]+ s", out, re.M)
    assert re.search(r"^requests served: \d+ \(ok \d+, degraded \d+, failed \d+\)", out, re.M)
    written = re.search(
        r"^writes accepted: (\d+) \(direct (\d+), queued 202 (\d+)\); applied: (\d+)", out, re.M
    )
    assert written, tail
    accepted, _direct, queued, applied = map(int, written.groups())
    assert accepted == applied > 0
    assert queued > 0, "no write was answered 202 while the database was down"
    assert re.search(r"^result: PASS", out, re.M)
    for phase in ("baseline", "redis down", "openai 429", "database down", "recovery"):
        assert re.search(rf"^{phase}\s+\w+\s+yes ", out, re.M), f"{phase!r} not reached:\n{tail}"

    # the same, machine-readable
    report = json.loads(summary_path.read_text())
    assert report["ok"] is True and report["reasons"] == []
    assert report["missing"] == {} and report["skipped"] == []
    expected = {
        "baseline": "OPTIMAL",
        "redis down": "DEGRADED",
        "openai 429": "LIMITED",
        "database down": "MINIMAL",
        "recovery": "OPTIMAL",
    }
    assert {p["name"]: p["expected"] for p in report["phases"]} == expected
    for phase in report["phases"]:
        assert phase["skipped"] is None and phase["reached"], phase
        assert phase["levels_s"].get(phase["expected"], 0) > 0, phase
        assert phase["p50_ms"] is not None and phase["p99_ms"] >= phase["p50_ms"]
    writes = report["writes"]
    assert writes["accepted"] == writes["applied"] == accepted
    assert writes["queued"] == writes["queued_applied"] == queued
    assert writes["movements_accepted"] == writes["movements_applied"] > 0
    assert report["outbox"]["pending"] == 0
    assert report["outbox"]["dead_letters"] == 0
    # while the database was down, writes were accepted into the outbox, not refused
    db_phase = next(p for p in report["phases"] if p["name"] == "database down")
    assert db_phase["requests"]["degraded"] > 0


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@real_stack
@pytest.mark.servers
@pytest.mark.slow
def test_ctrl_c_stops_every_server_and_removes_their_data(tmp_path: Path) -> None:
    proc = _demo(cwd=tmp_path)
    lines = _lines(proc)
    seen: list[str] = []

    def baseline() -> bool:
        """The demo printed its baseline (the lines so far are read into ``seen``)."""
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                return False
            if line is None:
                pytest.fail("the demo ended before its baseline:\n" + "".join(seen))
            seen.append(line)
            if line.startswith("--- baseline"):
                return True

    try:
        eventually(baseline, timeout=120, interval=0.2, what="the demo's baseline")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    assert proc.stdout is not None
    proc.stdout.close()
    out = "".join(seen)
    assert proc.returncode == 130, out
    assert "interrupted; stopping the stack" in out
    pids = [int(p) for p in re.findall(r"\(pid (\d+), data ", out)]
    dirs = [Path(d) for d in re.findall(r", data (/[^);]+)[);]", out)]
    assert len(pids) == 3 and len(dirs) == 3, out  # redis, postgres, the service
    for pid in pids:
        assert not _pid_alive(pid), f"process {pid} outlived the demo"
    for path in dirs:
        assert not path.exists(), f"{path} was left behind"
