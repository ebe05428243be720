"""The README's five-minute tour, run as written against a live ``inventario serve``.

Each ``$`` command of the tour's console block runs in bash from the repository root (the
tour's working directory: it names ``.venv/bin/inventario`` and the shipped sample invoice),
against a service started the way ``make run`` starts it, on embedded defaults. Two things
differ from a terminal, both mechanical: the service listens on a free port instead of 8000
(``inventario status`` is given that port too), and ``.venv/bin/`` is the directory of the
Python running the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from brownout.testing import eventually
from brownout.testing.servers import free_port
from tests.servers._util import missing

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def tour_commands() -> list[str]:
    """The ``$`` commands of the tour's console block, continuation lines joined."""
    section = README.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif commands and commands[-1].rstrip().endswith("\\"):
            commands[-1] = commands[-1].rstrip()[:-1].rstrip() + " " + line.strip()
        elif line.strip():
            raise AssertionError(f"a line in the tour that is not a command: {line!r}")
    return commands


def _json(out: str) -> dict[str, object]:
    doc = json.loads(out)
    assert isinstance(doc, dict), out
    return doc


def _health(out: str) -> None:  # `| python3 -m json.tool | head`: the first ten lines
    assert len(out.splitlines()) == 10, out
    assert '"level": "OPTIMAL"' in out and '"score": 100' in out, out


def _created(out: str) -> None:
    doc = _json(out)
    assert doc["sku"] == "WID-1" and doc["stock"] == 10, doc


def _moved(out: str) -> None:
    doc = _json(out)
    assert doc["stock_after"] == 3, doc


def _refused(out: str) -> None:  # 409: stock never goes negative
    doc = _json(out)
    assert doc["status"] == 409, doc
    assert "3" in str(doc.get("detail")), doc  # it says how much is left


def _low_stock(out: str) -> None:  # WID-1: 3 left, minimum 5
    doc = json.loads(out)
    items = doc["items"] if isinstance(doc, dict) else doc
    widget = next(p for p in items if p["sku"] == "WID-1")
    assert (widget["stock"], widget["min_stock"]) == (3, 5), widget


def _price(out: str) -> None:  # "source": "rule" without OpenAI
    assert _json(out)["source"] == "rule", out


def _invoice(out: str) -> None:  # needs_review without OpenAI
    doc = _json(out)
    assert doc["state"] == "needs_review", doc
    assert doc["filename"] == "invoice.txt", doc


def _level_header(out: str) -> None:
    assert out.strip().lower() == "x-degradation-level: optimal", out


def _score_metric(out: str) -> None:
    assert re.search(r"^brownout_health_score(\{[^}]*\})? 100(\.0)?$", out, re.M), out


def _status_table(out: str) -> None:  # the same as a table
    assert "level     OPTIMAL" in out and "score     100.0 / 100" in out, out
    assert re.search(r"^database\s+up\s+100\s+closed", out, re.M), out


#: what each command answers, in the tour's order (the README's comments say the same)
EXPECTED: list[Callable[[str], None]] = [
    _health,
    _created,
    _moved,
    _refused,
    _low_stock,
    _price,
    _invoice,
    _level_header,
    _score_metric,
    _status_table,
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``inventario serve`` on embedded defaults, as ``make run`` starts it; its port."""
    port = free_port()
    work = tmp_path_factory.mktemp("tour")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "OPENAI_API_KEY")
    }
    env.update(PYTHONPATH=str(ROOT / "src"), VAR_DIR=str(work / "var"), PORT=str(port))
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inventario", "serve", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        cwd=work,
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text())

    try:
        eventually(up, timeout=60, what="inventario serve", check=alive)
        yield str(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def test_the_tour_has_the_commands_this_test_checks() -> None:
    commands = tour_commands()
    assert len(commands) == len(EXPECTED), commands
    for command in commands:
        assert "localhost:8000" in command or command.startswith(".venv/bin/inventario")


def test_the_sample_invoice_is_shipped() -> None:
    for command in tour_commands():
        for path in re.findall(r"=@([^;'\s]+)", command):
            assert (ROOT / path).is_file(), f"the tour uploads {path}, which is not in the repo"


def test_every_tour_command_answers_as_the_readme_says(service: str) -> None:
    for tool in ("bash", "curl", "grep", "head"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed: the tour needs it")
    bindir = Path(sys.executable).parent
    for command, expect in zip(tour_commands(), EXPECTED, strict=True):
        run = command.replace("localhost:8000", f"localhost:{service}")
        run = run.replace(".venv/bin/", f"{bindir}/")
        # `inventario status` without a URL asks port 8000
        run = re.sub(r"inventario status(?=\s|$)", f"inventario status 127.0.0.1:{service}", run)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", run],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        # `| head` may close the pipe early: python3's BrokenPipeError is not the tour's fault
        failed = result.returncode != 0 and "head" not in command
        assert not failed, f"$ {command}\nexit {result.returncode}\n{result.stderr}"
        try:
            expect(result.stdout)
        except (AssertionError, KeyError, ValueError, StopIteration) as exc:
            raise AssertionError(
                f"$ {command}\nanswered:\n{result.stdout}\n{result.stderr}\n({exc!r})"
            ) from exc
