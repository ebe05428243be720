"""Issue 14, outsider checks: every overload setting of inventario (``SHED_*``,
``CACHE_*``, ``ROUTE_CRITICALITY``) given a wrong value stops ``inventario serve`` at start
with one line naming the variable, never a traceback and never a 500 later."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from brownout.testing.servers import free_port
from brownout.web import Criticality
from inventario.config import ConfigError, Settings, load_settings
from inventario.shedding import parse_routes

REPO = Path(__file__).resolve().parents[2]

BAD_NUMBERS = {
    "SHED_MAX_IN_FLIGHT": ["-1", "0", "nan", "1e99", "abc", "1.5", "99999999999999999999", ""],
    "SHED_CRITICAL_RESERVE": ["-1", "nan", "1e99", "abc", "1.5", "1000001", ""],
    "SHED_MAX_DELAY": ["-1", "0", "nan", "inf", "1e99", "abc", ""],
    "SHED_MAX_QUEUE_WAIT": ["-1", "nan", "inf", "61", "abc", ""],
    "CACHE_READ_WAIT": ["-1", "nan", "inf", "1e99", "abc", ""],
    "CACHE_INVALIDATE_WAIT": ["-1", "nan", "-inf", "61", "x", ""],
}


def test_every_overload_variable_is_in_the_table() -> None:
    """A SHED_* or CACHE_* variable added later gets its bad values here too."""
    names = {name.upper() for name in Settings.model_fields if name.startswith(("shed_", "cache_"))}
    assert names == set(BAD_NUMBERS)


@pytest.mark.parametrize(
    ("var", "value"), [(var, value) for var, values in BAD_NUMBERS.items() for value in values]
)
def test_a_bad_number_is_refused_naming_the_variable(
    var: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [var]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("GET /products=urgent", "'urgent' is not one of critical, default, sheddable"),
        ("garbage", "entry 'garbage' is not 'METHOD /path=class'"),
        ("=critical", "is not 'METHOD /path=class'"),
        ("GET /products/{sku}=", "'' is not one of"),
        ("FETCH /products=critical", "METHOD one of"),
        ("/products=critical", "got '/products'"),
        # an exempt route: the entry was accepted and did nothing
        ("GET /status=sheddable", "'GET /status': /status is exempt from shedding"),
        ("GET /health/ready=critical", "/health/ready is exempt"),
        # the same route twice: which one applied depended on the order
        (
            "GET /products/{sku}=critical, get /products/{sku}=sheddable",
            "gives the route 'GET /products/{sku}' twice",
        ),
    ],
)
def test_a_bad_route_criticality_is_refused_naming_the_entry(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="ROUTE_CRITICALITY") as info:
        load_settings(route_criticality=value)
    assert message in str(info.value)


def test_a_route_given_once_per_method_is_not_a_duplicate() -> None:
    assert parse_routes("GET /products/{sku}=sheddable, PATCH /products/{sku}=critical") == {
        "GET /products/{sku}": Criticality.SHEDDABLE,
        "PATCH /products/{sku}": Criticality.CRITICAL,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("GET /nope=critical", "names routes inventario does not have: GET /nope"),
        (
            # the route exists, under another parameter name: say which
            "POST /products/{id}/movements=sheddable",
            "POST /products/{id}/movements (did you mean POST /products/{sku}/movements?)",
        ),
        ("DELETE /products/{sku}/movements=critical", "DELETE /products/{sku}/movements"),
    ],
)
def test_a_route_the_app_does_not_have_is_a_configuration_error(
    value: str, message: str, make_app: Callable[..., FastAPI]
) -> None:
    with pytest.raises(ConfigError, match="ROUTE_CRITICALITY") as info:
        make_app(route_criticality=value)
    assert message in str(info.value)


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "inventario", "serve", "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **base,
            "PYTHONPATH": str(REPO / "src"),
            "VAR_DIR": str(tmp_path / "var"),
            "PORT": str(free_port()),
            **env,
        },
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        # only the app knows its routes: this one was a ValueError traceback from create_app
        ({"ROUTE_CRITICALITY": "GET /nope=critical"}, ("ROUTE_CRITICALITY", "GET /nope")),
        ({"SHED_MAX_QUEUE_WAIT": "nan"}, ("SHED_MAX_QUEUE_WAIT", "must be >= 0")),
    ],
)
def test_serve_refuses_to_start_with_one_clear_message(
    env: dict[str, str], words: tuple[str, ...], tmp_path: Path
) -> None:
    result = _serve(tmp_path, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == "", f"the banner was printed: {result.stdout!r}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("inventario: invalid configuration:"), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
