"""The examples in brownout.overload's docstrings run and say what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "brownout.overload",
    "brownout.overload._bulkhead",
    "brownout.overload._limit",
    "brownout.overload._throttle",
    "brownout.overload._budget",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_public_surface() -> None:
    import brownout
    import brownout.overload as overload

    for name in overload.__all__:
        assert hasattr(overload, name), name
    assert issubclass(overload.BulkheadFull, overload.Overloaded)
    assert issubclass(overload.Throttled, overload.Overloaded)
    assert issubclass(overload.Overloaded, brownout.BrownoutError)
