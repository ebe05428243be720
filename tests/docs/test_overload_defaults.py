"""docs/overload.md's settings tables are promises: each guard's and the shedder's
default, as the table gives it, is the constructor's, and every setting of the
constructor has its row (a setting added later without one fails here)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from brownout.health import Level
from brownout.overload import AdaptiveThrottle, Bulkhead, Gradient2, RetryBudget
from brownout.web import Criticality, Shedder, SheddingMiddleware

DOC = (Path(__file__).resolve().parents[2] / "docs" / "overload.md").read_text()
HEADER = "| setting | default | why |"
#: not settings: what the object is about, or what tests inject
NOT_SETTINGS = {"self", "name", "clock", "manager", "app", "shedder", "classify"}


def table_after(marker: str) -> dict[str, str]:
    """The settings table that follows ``marker``: ``{setting: default as written}``."""
    start = DOC.index(HEADER, DOC.index(marker))
    rows: dict[str, str] = {}
    for line in DOC[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        names_cell, default_cell = (c.strip() for c in line.strip("|").split("|")[:2])
        names = re.findall(r"`([^`]+)`", names_cell.replace("(middleware)", ""))
        defaults = default_cell.split(", ") if len(names) > 1 else [default_cell]
        assert len(defaults) == len(names), line
        rows.update(zip(names, (d.replace("`", "") for d in defaults), strict=True))
    return rows


def number(text: str) -> float:
    match = re.match(r"(-?[\d.]+)\s*(ms)?", text)
    assert match is not None, text
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def settings_of(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return {p.name: p.default for p in params if p.name not in NOT_SETTINGS}


CASES: list[tuple[str, type, str]] = [
    ("Bulkhead", Bulkhead, "## Bulkhead"),
    ("Gradient2", Gradient2, "### Adaptive limit: Gradient2"),
    ("AdaptiveThrottle", AdaptiveThrottle, "## Client-side adaptive throttling"),
    ("RetryBudget", RetryBudget, "## Retry budget"),
    ("Shedder", Shedder, "## Priority shedding at the edge"),
    ("SheddingMiddleware", SheddingMiddleware, "## Priority shedding at the edge"),
]


@pytest.mark.parametrize(("what", "cls", "marker"), CASES, ids=[c[0] for c in CASES])
def test_every_setting_has_its_row_with_the_code_default(what: str, cls: type, marker: str) -> None:
    table = table_after(marker)
    code = settings_of(cls)
    missing = set(code) - set(table)
    assert not missing, f"{what}: settings without a row in docs/overload.md: {missing}"
    for setting, default in code.items():
        written = table[setting]
        if default is None or isinstance(default, dict | tuple) or callable(default):
            continue  # computed or structured: checked below
        if isinstance(default, bool) or default is inspect.Parameter.empty:
            continue
        assert number(written) == pytest.approx(float(default)), (what, setting, written)


def test_the_structured_and_computed_defaults_are_the_written_ones() -> None:
    bulkhead = table_after("## Bulkhead")
    assert bulkhead["max_waiting"].startswith("None")
    assert Bulkhead("b").max_waiting is None
    assert bulkhead["drop_on"] == "(TimeoutError,)"
    assert settings_of(Bulkhead)["drop_on"] == (TimeoutError,)
    throttle = table_after("## Client-side adaptive throttling")
    assert throttle["refused_on"] == "(Exception,)"
    assert AdaptiveThrottle("t").refused_on == (Exception,)
    assert throttle["random"] == "random.random"
    shedder_doc = table_after("## Priority shedding at the edge")
    shedder = Shedder()
    assert shedder_doc["critical_reserve"] == "half of max_in_flight"
    assert shedder.critical_reserve == shedder.max_in_flight // 2
    assert shedder_doc["max_queued"] == "16 x max_in_flight"
    assert shedder.max_queued == 16 * shedder.max_in_flight
    assert shedder_doc["shed_at"] == "sheddable 0.5, default 1.0"
    assert shedder.shed_at == {Criticality.SHEDDABLE: 0.5, Criticality.DEFAULT: 1.0}
    assert shedder_doc["shed_at_level"] == "sheddable at MINIMAL, default at EMERGENCY"
    assert shedder.shed_at_level == {
        Criticality.SHEDDABLE: Level.MINIMAL,
        Criticality.DEFAULT: Level.EMERGENCY,
    }
