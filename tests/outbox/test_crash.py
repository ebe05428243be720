"""Crash tests: a worker is SIGKILLed at random points; every accepted write lands exactly once."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

CHILD = Path(__file__).with_name("_crash_child.py")
TOTAL = 40


def run_until_done(args: list[str], rng: random.Random) -> tuple[set[str], int, int]:
    """Start the worker again and again, killing it at random, until it prints DONE.

    Returns the keys it accepted, how often it died by SIGKILL, and how often it
    died right after a database commit (before the journal update).
    """
    accepted: set[str] = set()
    kills = after_commit = 0
    for attempt in range(40):
        calm = attempt >= 12  # after a dozen starts let it finish, so the test ends
        cmd = [sys.executable, str(CHILD), *args]
        if calm:
            cmd[cmd.index("--crash-after-commit") + 1] = "0"
        elif attempt == 0:
            # the first start surely dies between a database commit and the journal
            # update (however slow the machine): no timer, crash at the first commit
            cmd[cmd.index("--crash-after-commit") + 1] = "1"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        timed = not calm and attempt > 0
        deadline = time.monotonic() + rng.uniform(0.3, 1.5) if timed else None
        lines: list[str] = []
        assert proc.stdout is not None
        while True:
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "DONE":
                break
        rest, err = proc.communicate(timeout=60)
        lines.extend(rest.splitlines())
        for line in lines:
            if line.startswith("ACCEPTED "):
                accepted.add(line.split()[1])
            elif line.startswith("CRASH-AFTER-COMMIT "):
                after_commit += 1
        if proc.returncode == -9:
            kills += 1
        elif proc.returncode != 0:
            pytest.fail(f"worker failed ({proc.returncode}):\n{err}")
        if any(line.strip() == "DONE" for line in lines):
            return accepted, kills, after_commit
    pytest.fail("the worker never finished")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_points_loses_and_doubles_nothing(
    seed: int, fresh_database: str, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE moves (id BIGSERIAL PRIMARY KEY, ikey TEXT NOT NULL, "
            "stream TEXT NOT NULL, n INTEGER NOT NULL)"
        )
    args = [
        "--outbox", str(tmp_path / "outbox.db"),
        "--dsn", fresh_database.replace("postgresql://", "postgresql+asyncpg://"),
        "--total", str(TOTAL),
        "--seed", str(seed),
        "--crash-after-commit", "0.15",
    ]  # fmt: skip
    accepted, kills, after_commit = run_until_done(args, random.Random(seed))
    assert kills >= 3, "the test did not actually crash the worker"
    assert after_commit >= 1, "no crash between a database commit and the journal update"
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT ikey, stream, n FROM moves ORDER BY id").fetchall()
    keys = [r[0] for r in rows]
    assert sorted(set(keys)) == sorted(accepted)  # none lost
    assert len(keys) == len(set(keys)), "an intent was applied twice"  # none doubled
    assert len(accepted) == TOTAL
    for stream in ("s0", "s1", "s2"):
        ns = [n for _, s, n in rows if s == stream]
        assert ns == sorted(ns), f"stream {stream} applied out of order: {ns}"
