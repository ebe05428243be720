"""The README's configuration table and set-up commands agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from inventario.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_variables() -> set[str]:
    section = README.split("## Configuring inventario", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z0-9_]+)`", first_cell))
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    documented = _table_variables()
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README table"
    assert documented - settings - {"BROWNOUT_DISABLED"} == set(), "README names unknown settings"


def test_readme_defaults_match_the_code() -> None:
    section = README.split("## Configuring inventario", 1)[1].split("\n## ", 1)[0]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, bool) or not isinstance(default, int | float | str):
            continue
        row = next(line for line in section.splitlines() if f"`{name.upper()}`" in line)
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"`{shown}`" in row or f"`{shown}`" in row.replace(", ", "`, `"), (name, row)


def test_two_setup_commands() -> None:
    setup = README.split("## Set-up (fresh clone)", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\| [^|]+ \| `(make [a-z]+)`", setup, flags=re.MULTILINE)
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test", "demo"):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target


def test_doc_links_exist() -> None:
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (ROOT / link).is_file(), link
