"""The public surface is exactly what the docs list."""

from __future__ import annotations

import brownout
import brownout.testing

DOCUMENTED = {
    "BreakerConfig",
    "BreakerOpen",
    "BreakerSnapshot",
    "BreakerTotals",
    "BrownoutError",
    "CallEvent",
    "CircuitBreaker",
    "Clock",
    "Duration",
    "ErrorMatcher",
    "Outcome",
    "PRESETS",
    "Registry",
    "State",
    "StateChange",
    "TRANSITIONS",
    "kill_switch_active",
    "redact",
    "retry_after_attribute",
}


def test_all_is_exactly_the_documented_names() -> None:
    assert set(brownout.__all__) == DOCUMENTED
    assert len(brownout.__all__) == len(DOCUMENTED)
    for name in brownout.__all__:
        assert hasattr(brownout, name), name


def test_public_names_are_documented_in_docs() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "breaker.md").read_text()
    for name in DOCUMENTED - {"Clock", "Duration", "ErrorMatcher", "TRANSITIONS"}:
        assert name in text, f"{name} is not documented in docs/breaker.md"


def test_testing_module() -> None:
    assert brownout.testing.__all__ == ["FakeClock"]


def test_core_imports_nothing_outside_the_standard_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, brownout, brownout.testing\n"
        "stdlib = sys.stdlib_module_names\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} - stdlib - {'brownout'})\n"
        "print(','.join(b for b in bad if not b.startswith('_')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
