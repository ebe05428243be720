"""docs/inventario.md's feature table and endpoint list agree with the service."""

from __future__ import annotations

import re
from pathlib import Path

from inventario.app import create_app
from inventario.config import load_settings
from inventario.runtime import FEATURES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "inventario.md").read_text(encoding="utf-8")


def test_the_feature_table_is_the_runtime_features() -> None:
    rows = {}
    for line in DOC.split("## Features and levels", 1)[1].splitlines():
        m = re.match(r"\| `(\w+)` \| ([^|]+) \| `(\w+)` \| ([^|]+) \|", line)
        if m:
            rows[m[1]] = (m[2].strip(), m[3], m[4].strip())
    expected = {
        f.name: (", ".join(sorted(f.requires)) or "—", f.worst_level.name, f.description)
        for f in FEATURES
    }
    assert rows == expected


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(load_settings(var_dir=tmp_path / "var", admin_token="t" * 24))
    table = DOC.split("## Endpoints", 1)[1].split("\n## ", 1)[0]
    documented = " ".join(re.findall(r"`([^`]*/[^`]*)`", table))
    for path in app.openapi()["paths"]:
        if path.startswith("/admin/"):
            assert "/admin/" in documented
            continue
        assert path.replace("{invoice_id}", "{id}") in documented, path


def test_the_cli_section_names_every_option_of_every_command() -> None:
    """Each ``inventario CMD`` bullet of the CLI section lists every flag ``--help`` shows."""
    import argparse

    from inventario.cli import build_parser

    section = DOC.split("## CLI", 1)[1].split("\n## ", 1)[0]
    bullets = {
        m[1]: m[0]
        for m in re.finditer(r"^- `inventario (\w+)[^`]*`.*?(?=^- |\Z)", section, re.S | re.M)
    }

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                if not path:
                    assert set(bullets) == set(action.choices), (
                        "docs/inventario.md, CLI: one '- `inventario CMD ...`' bullet per command"
                    )
                for name, sub in action.choices.items():
                    if path:  # a nested command is named in its top command's bullet
                        assert name in bullets[path[0]], f"inventario {' '.join(path)} {name}"
                    walk(sub, (*path, name))
                continue
            for flag in action.option_strings or [action.metavar or action.dest.upper()]:
                if path:
                    assert flag in bullets[path[0]], f"inventario {' '.join(path)}: {flag}"

    walk(build_parser(), ())
    for failure in ("VAR_DIR", "already in use", "already running", "exit status 2"):
        assert failure in section, failure
