"""``inventario status`` against a real running service, its errors, and ``inventario --help``."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from brownout.testing import eventually
from brownout.testing.servers import free_port, port_open
from inventario.cli import build_parser, main
from inventario.cli_status import render_status
from tests.inventario.conftest import WIDGET
from tests.inventario.live_server import serving

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m inventario ...`` in a child process, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "inventario", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _row(out: str, first: str) -> list[str]:
    """The cells of the table row starting with ``first``."""
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_status_of_a_healthy_service(
    make_app: Callable[..., FastAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(make_app()) as base:
        assert httpx.post(f"{base}/products", json=WIDGET, timeout=5).status_code == 201
        assert main(["status", base]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("inventario ")
    assert "level     OPTIMAL" in out
    assert "score     100.0 / 100" in out
    assert _row(out, "COMPONENT")[:6] == [
        "COMPONENT",
        "STATUS",
        "SCORE",
        "BREAKER",
        "SUCCESS",
        "P95",
    ]
    database = _row(out, "database")
    assert database[1:5] == ["up", "100", "closed", "100.0%"]
    assert database[5].replace(".", "").isdigit() and database[6] == "ms"
    assert _row(out, "cache")[1:3] == ["not", "configured"]
    assert _row(out, "outbox")[1:3] == ["0", "writes"]
    assert _row(out, "inventory_write")[1] == "on"
    cache_read = _row(out, "cache_read")
    assert cache_read[1] == "OFF" and "cache" in cache_read[2:]
    assert "TRANSITION" not in out  # nothing happened yet


def test_status_shows_an_open_breaker_and_the_new_level(
    make_app: Callable[..., FastAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(admin_token="cli-admin-token")
    with serving(app) as base:
        r = httpx.post(
            f"{base}/admin/breakers/database/open",
            headers={"Authorization": "Bearer cli-admin-token"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
        assert main(["status", base + "/"]) == 0
    out = capsys.readouterr().out
    level = app.state.runtime.manager.level.name
    assert level != "OPTIMAL"
    assert f"level     {level}" in out
    database = _row(out, "database")
    assert database[1] == "down" and database[3] == "forced_open"
    assert _row(out, "database_write")[1:3] == ["OFF", "database"]
    assert f"OPTIMAL -> {level}" in out
    assert "cli-admin-token" not in out


def test_status_shows_the_details_only_with_the_admin_token(
    make_app: Callable[..., FastAPI],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a token: counts and states, and a line saying the details are hidden; with
    --token or ADMIN_TOKEN: the failure reasons; a wrong token: a clear error, exit 2."""
    token = "cli-status-admin-token-84"
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    app = make_app(admin_token=token)
    spool = app.state.runtime.spool
    entry = spool.put("cli-secret-bucket", "invoices/cd/cli-object-key.txt", b"x")
    refusal = "bucket 'cli-secret-bucket': NoSuchBucket: The specified bucket does not exist"
    assert spool.mark_failed(entry, refusal, give_up=True) is not None
    with serving(app) as base:
        assert main(["status", base]) == 0
        public = capsys.readouterr().out
        assert main(["status", base, "--token", token]) == 0
        detailed = capsys.readouterr().out
        monkeypatch.setenv("ADMIN_TOKEN", token)
        assert main(["status", base]) == 0
        from_env = capsys.readouterr().out
        assert main(["status", base, "--token", "not-the-token"]) == 2
        out, err = capsys.readouterr()
    assert "FAILED 1" in public and "FAILED 1" in detailed
    for text in ("NoSuchBucket", "cli-secret-bucket", "cli-object-key"):
        assert text not in public
    assert "bucket 'cli-secret-bucket'" in detailed
    assert "bucket 'cli-secret-bucket'" in from_env
    assert "details   hidden" in public and "--token" in public
    assert "details   hidden" not in detailed
    assert out == "" and "refused the admin token (HTTP 403)" in err
    assert token not in public + detailed + from_env + err


def test_status_of_plain_brownout_health(capsys: pytest.CaptureFixture[str]) -> None:
    """Without /status/data (any brownout service), /health is enough."""
    from brownout.health import Component, DegradationManager
    from brownout.web import install

    app = FastAPI()
    manager = DegradationManager([Component("database"), Component("cache", configured=False)])
    install(app, manager)
    with serving(app) as base:
        assert main(["status", base]) == 0
    out = capsys.readouterr().out
    assert "level     OPTIMAL" in out
    assert _row(out, "database")[1] == "up"
    assert _row(out, "cache")[1:3] == ["not", "configured"]
    manager.close()


def test_unreachable_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["status", url, "--timeout", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"inventario status: cannot reach {url}: connection refused"


def test_not_an_inventario_service(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(FastAPI()) as base:  # answers 404 to everything
        assert main(["status", base]) == 2
    err = capsys.readouterr().err
    assert "neither /status/data nor /health" in err
    assert base in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
        ("127.0.0.1:99999", "not a valid URL"),
        ("http://ops:Pa55-word-xyz@127.0.0.1:1/", "credentials in the URL are not supported"),
    ],
)
def test_bad_urls(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", url]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Pa55-word-xyz" not in err


def test_host_and_port_without_scheme(
    make_app: Callable[..., FastAPI], capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(make_app()) as base:
        assert main(["status", base.removeprefix("http://")]) == 0
    assert "level     OPTIMAL" in capsys.readouterr().out


def test_render_tolerates_missing_fields() -> None:
    text = render_status(
        {
            "level": "DEGRADED",
            "score": None,
            "components": [
                {
                    "name": "cache",
                    "status": "down",
                    "breaker": {"state": "open", "retry_after": 12.4},
                },
                {"name": "odd"},
                "not a component",
            ],
            "features": {"cache_read": {"enabled": False, "reason": "cache down"}, "x": True},
            "transitions": [{"from": "OPTIMAL", "to": "DEGRADED", "at": None, "reason": "r"}],
        }
    )
    assert "level     DEGRADED" in text
    assert "score     - / 100" in text
    assert _row(text, "cache")[1:5] == ["down", "-", "open", "(12"]
    assert _row(text, "odd")[1] == "?"
    assert _row(text, "x")[1] == "on"
    assert "OPTIMAL -> DEGRADED" in text


def test_unreachable_exit_status_from_a_real_process() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("status", url, "--timeout", "2")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"cannot reach {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "status", "demo"):
        assert command in result.stdout
    status = _run("status", "--help")
    assert status.returncode == 0
    assert "Exit status" in status.stdout and "--timeout" in status.stdout
    bad = _run("status", "--timeout", "-1")
    assert bad.returncode == 2 and "must be > 0" in bad.stderr


def _option_help(text: str) -> dict[str, str]:
    """``--help`` output as {option or positional: its help text}, argparse's layout."""
    found: dict[str, str] = {}
    current: str | None = None
    section = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section, current = line, None  # "options:", "positional arguments:", "usage: ..."
            continue
        if section not in ("options:", "positional arguments:"):
            continue
        m = re.match(r"^  (\S.*?)(?:  +(\S.*))?$", line)
        if m and not line.startswith("   "):
            current = m[1].split(",")[-1].split()[0]  # "-h, --help" -> "--help"
            found[current] = m[2] or ""
        elif current is not None and line.strip():
            found[current] += " " + line.strip()
    return found


def _subcommands(
    parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command, nested ones too: ``{("serve",): parser, ("outbox", "list"): ...}``."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for action in (parser or build_parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[(*prefix, name)] = sub
                found.update(_subcommands(sub, (*prefix, name)))
    return found


def _names_its_commands(text: str, parser: argparse.ArgumentParser) -> None:
    """Each subcommand of ``parser`` is listed in its ``--help`` with what it does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                line = next((x for x in text.splitlines() if x.split()[:1] == [name]), None)
                assert line is not None and len(line.split()) > 3, (name, text)


def test_main_help_names_every_command_with_what_it_does() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert {("serve",), ("status",), ("demo",)} <= set(_subcommands())
    _names_its_commands(result.stdout, build_parser())
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("inventario ")


@pytest.mark.parametrize("command", sorted(_subcommands()), ids=" ".join)
def test_every_option_of_every_command_has_help_and_a_default(command: tuple[str, ...]) -> None:
    """``inventario CMD --help`` describes each option and says what happens without it."""
    shown_as = "inventario " + " ".join(command)
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr
    shown = _option_help(result.stdout)
    parser = _subcommands()[command]
    assert parser.description, f"{shown_as} --help has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            _names_its_commands(result.stdout, parser)
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        text = shown.get(name) or shown.get(str(action.metavar))
        assert text, f"{shown_as} --help: {name} has no help text:\n{result.stdout}"
        assert "default" in text.lower(), f"{shown_as} --help: {name}: no default: {text}"


# ------------------------------------------------------------ serve: start-up failures


def _serve_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**env, "PYTHONPATH": str(REPO / "src"), "VAR_DIR": str(var_dir), "PORT": str(port)}


def _serve(var_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """``inventario serve`` expected to refuse to start: it must exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "inventario", "serve", "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_serve_env(var_dir, port),
        check=False,
    )


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """A refusal: non-zero exit, no banner, one line on stderr naming the problem."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert result.stdout == "", f"the banner was printed: {result.stdout!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_serve_refuses_a_second_instance_on_the_same_var_dir(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    port = free_port()
    first = subprocess.Popen(
        [sys.executable, "-m", "inventario", "serve", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_serve_env(var_dir, port),
    )
    try:

        def first_is_up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        def still_running() -> None:
            if first.poll() is not None:
                raise RuntimeError(f"the first inventario exited: {first.communicate()}")

        eventually(first_is_up, timeout=60, what="the first inventario", check=still_running)
        second_port = free_port()
        line = _refused(_serve(var_dir, second_port), str(var_dir), f"pid {first.pid}")
        assert "VAR_DIR" in line
        assert not port_open("127.0.0.1", second_port)
        assert first_is_up(), "the first instance must be left alone"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _refused(_serve(tmp_path / "var", port), f"port {port}", "in use", "PORT")
    assert "--port" in line


def test_serve_refuses_a_var_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    var_dir = blocker / "var"
    _refused(_serve(var_dir, free_port()), str(var_dir), "VAR_DIR")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_serve_refuses_a_read_only_var_dir(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o555)
    try:
        _refused(_serve(var_dir, free_port()), str(var_dir), "VAR_DIR", "not writable")
    finally:
        var_dir.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_serve_refuses_a_var_dir_where_no_file_can_be_written() -> None:
    """An existing directory that refuses new files, even to root (so this runs in CI)."""
    _refused(_serve(Path("/proc"), free_port()), "VAR_DIR /proc is not", "VAR_DIR to a directory")


async def test_serve_socket_answers_without_nagle_delays() -> None:
    """The socket ``inventario serve`` binds hands uvicorn connections with TCP_NODELAY
    (asyncio sets it only on IPPROTO_TCP sockets): without it every response on a
    kept-alive connection, written in two parts, waited for the client's delayed ACK."""
    import asyncio

    from inventario.cli import _bind

    sock = _bind("127.0.0.1", free_port())
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        accepted.set_result(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        host, port = sock.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            nodelay = await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            await writer.wait_closed()
        assert nodelay != 0, "accepted without TCP_NODELAY"
    finally:
        server.close()
        await server.wait_closed()
