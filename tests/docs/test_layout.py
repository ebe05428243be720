"""Every file or folder the README's layout and the docs name exists (issue 12: they
describe the current layout, not an earlier one).

A path is a backticked token, or a token of the README's layout block, that starts at
a top-level folder of the checkout (``src/``, ``tests/``, ``tools/``...) or inside a
package (``brownout/...``, ``inventario/...``, read under ``src/``). ``{a,b}`` and
``*`` are expanded; a path that names a module's object (``brownout/x.py:Name``) is
read up to the colon. A dotted name (``brownout.health.level_impacts``) must import
or be an attribute of what imports.
"""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("src/", "tests/", "tools/", "bench/", "deploy/", "docs/", "examples/")
PACKAGES = ("brownout/", "inventario/")
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
PATH = re.compile(r"^[\w./{},*-]+$")
#: Paths in other projects' repositories (the peers whose test suites docs/breaker.md ports).
ELSEWHERE = {"tests/pybreaker_test.py", "tests/test_unit.py", "tests/test_functional.py"}


def _expand(token: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py``."""
    parts = re.split(r"\{([^}]*)\}", token)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def _exists(path: str) -> bool:
    base = ROOT / "src" if path.startswith(PACKAGES) else ROOT
    if "*" in path:
        return any(base.glob(path.rstrip("/")))
    return (base / path.rstrip("/")).exists()


def _named_paths(text: str) -> set[str]:
    tokens = set(re.findall(r"`([^`\s]+)`", text))
    layout = text.split("## Layout", 1)
    if len(layout) == 2:
        block = layout[1].split("```", 2)[1]
        tokens.update(line.split()[0] for line in block.splitlines() if line.strip())
    paths = set()
    for token in tokens:
        token = token.split(":", 1)[0].rstrip(".,;")
        if token.startswith(TOP + PACKAGES) and PATH.match(token) and "/" in token:
            paths.update(_expand(token))
    return paths - ELSEWHERE


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    missing = sorted(p for p in _named_paths(doc.read_text(encoding="utf-8")) if not _exists(p))
    assert missing == [], f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_readme_layout_names_every_package_and_top_level_module() -> None:
    named = _named_paths((ROOT / "README.md").read_text(encoding="utf-8"))
    src = ROOT / "src" / "brownout"
    public = sorted(
        f"src/brownout/{p.name}" + ("/" if p.is_dir() else "")
        for p in src.iterdir()
        if not p.name.startswith(("_", ".")) and (p.is_dir() or p.suffix == ".py")
    )
    covered = {p.rstrip("/") for p in named}
    left = [p for p in public if p.rstrip("/") not in covered]
    assert left == [], f"README's layout does not name: {left}"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_or_name_a_doc_names_imports(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    dotted = set(re.findall(r"`((?:brownout|inventario)(?:\.\w+)+)(?:\(\))?`", text))
    missing = sorted(d for d in dotted if not _resolves(d))
    assert missing == [], f"{doc.relative_to(ROOT)} names what does not import: {missing}"


def _block(text: str, heading: str) -> str:
    """The first fenced block after ``heading``."""
    return text.split(heading, 1)[1].split("```", 2)[1]


def _modules(package: Path) -> list[Path]:
    """``package``'s modules and subpackages (not ``__init__``/``__main__``), and those of
    its subpackages that are not split further (``inventario/routes/``)."""
    return sorted(
        p
        for p in package.rglob("*")
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    )


@pytest.mark.parametrize(
    ("doc", "heading", "package", "depth"),
    [
        ("README.md", "## Layout", "src/brownout", 1),
        ("docs/inventario.md", "## Code layout", "src/inventario", 2),
    ],
)
def test_the_layout_blocks_name_every_module(
    doc: str, heading: str, package: str, depth: int
) -> None:
    """Every module and subpackage is in its layout block (as ``name`` or ``name.py``):
    a module added, split or renamed is described where the layout is."""
    words = set(re.findall(r"[\w.]+", _block((ROOT / doc).read_text(encoding="utf-8"), heading)))
    root = ROOT / package
    left = []
    for path in _modules(root):
        rel = path.relative_to(root)
        if len(rel.parts) > depth:
            continue
        if not ({path.stem, path.name, f"{path.stem}.py"} & words):
            left.append(str(rel))
    assert left == [], f"{doc}'s layout block does not name: {left}"
