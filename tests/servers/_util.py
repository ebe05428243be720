"""Test-suite policy for the private servers (skip or fail when one is missing).

The plumbing itself (ports, waiting, cleanup, :class:`ServerProcess`) lives in
:mod:`brownout.testing.servers`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

from brownout.testing.servers import find_binary

__all__ = ["REQUIRE_ENV", "missing", "require_binary", "require_module", "services_required"]

REQUIRE_ENV = "BROWNOUT_REQUIRE_SERVICES"


def services_required() -> bool:
    """True when missing services must fail the run instead of skipping (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``; fail instead when ``BROWNOUT_REQUIRE_SERVICES=1``."""
    if services_required():
        pytest.fail(f"{reason} (required because {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, hint: str) -> str:
    """The path of executable ``name`` (a name on PATH or an absolute path), or :func:`missing`."""
    path = find_binary(name)
    if not path:
        missing(f"{name} not found: {hint}")
    return path


def require_module(module: str, pip_name: str | None = None) -> ModuleType:
    """Import ``module`` or :func:`missing` with the pip install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"python package {pip_name or module!r} is not installed ({exc})")
