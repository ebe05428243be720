"""The count of ported peer cases that docs/breaker.md states is the count in tests/peers/.

Per source module: cases ported (one test function per peer case), how many
apply as-is, how many are deliberate differences (``deliberate_difference``
marker) and how many were left out (the module's ``LEFT_OUT``; an entry
covering several cases says "(N cases)").
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

from tests.peers import (
    test_circuitbreaker,
    test_pybreaker,
    test_r4j_config,
    test_r4j_sliding_windows,
    test_r4j_state_machine,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "breaker.md"

#: the label of each module's row in the docs table
SUITES: dict[str, ModuleType] = {
    "pybreaker `tests/pybreaker_test.py`": test_pybreaker,
    "circuitbreaker `tests/test_unit.py`, `tests/test_functional.py`": test_circuitbreaker,
    "resilience4j `CircuitBreakerStateMachineTest`": test_r4j_state_machine,
    "resilience4j sliding-window metrics tests": test_r4j_sliding_windows,
    "resilience4j `CircuitBreakerConfigTest`": test_r4j_config,
}


def tally(module: ModuleType) -> tuple[int, int, int, int]:
    """(ported, as-is, deliberate differences, left out) of one module."""
    tests = [
        fn
        for name, fn in vars(module).items()
        if name.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == module.__name__
    ]
    deliberate = sum(
        1
        for fn in tests
        if any(m.name == "deliberate_difference" for m in getattr(fn, "pytestmark", []))
    )
    left_out = 0
    for key in module.LEFT_OUT:
        found = re.search(r"\((\d+) cases\)", key)
        left_out += int(found.group(1)) if found else 1
    return len(tests), len(tests) - deliberate, deliberate, left_out


def test_docs_state_the_ported_counts() -> None:
    text = DOC.read_text(encoding="utf-8")
    for label, module in SUITES.items():
        ported, as_is, deliberate, left_out = tally(module)
        row = f"| {label} | {ported} | {as_is} | {deliberate} | {left_out} |"
        assert row in text, f"docs/breaker.md should have the row\n{row}"


def test_every_ported_case_is_named_after_its_source() -> None:
    prefixes = {
        test_pybreaker: "test_pybreaker_",
        test_circuitbreaker: "test_circuitbreaker_",
        test_r4j_state_machine: "test_r4j_",
        test_r4j_sliding_windows: "test_r4j_",
        test_r4j_config: "test_r4j_",
    }
    for module, prefix in prefixes.items():
        for name, fn in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(fn):
                assert name.startswith(prefix), f"{module.__name__}.{name}"
