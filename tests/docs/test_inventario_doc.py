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
