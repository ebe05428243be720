"""The examples in the core's docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "brownout",
    "brownout._breaker",
    "brownout._config",
    "brownout._errors",
    "brownout._redact",
    "brownout._registry",
    "brownout._adapter",
    "brownout._adapter_classify",
    "brownout._adapter_stats",
    "brownout.adapter",
    "brownout.health._manager",
    "brownout.health._model",
    "brownout.health._scoring",
    "brownout.testing",
    "brownout.coherence",
    "brownout.outbox",
    "brownout.spool",
    "brownout.chaos",
    "brownout.redis",
    "brownout.s3",
    "brownout.sql",
    "brownout.openai",
    "brownout.otel",
    "brownout.prometheus",
    "inventario.routes.invoices",
    "inventario.writes",
    "inventario.cli_admin",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
