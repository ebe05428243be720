"""The examples in every docstring of brownout and inventario run and say what they show.

The modules are found, not listed: a new module's examples run without anyone adding it
here (a hand list missed ten modules with examples, one of them out of date).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import brownout
import inventario


def _modules() -> list[str]:
    names = []
    for package in (brownout, inventario):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith(".__main__"):  # runs the command when imported
                names.append(info.name)
    return names


MODULES = _modules()


def _examples(name: str) -> int:
    module = importlib.import_module(name)
    return sum(len(t.examples) for t in doctest.DocTestFinder().find(module))


def test_the_modules_with_examples_are_found() -> None:
    found = [name for name in MODULES if _examples(name)]
    for known in ("brownout._breaker", "brownout.overload._bulkhead", "inventario.writes"):
        assert known in found
    assert len(found) >= 40


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
