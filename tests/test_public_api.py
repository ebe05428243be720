"""The public surface is exactly what the docs list."""

from __future__ import annotations

import pytest

import brownout
import brownout.testing

DOCUMENTED = {
    "BreakerConfig",
    "BreakerOpen",
    "BreakerSnapshot",
    "BreakerTotals",
    "BrownoutError",
    "CallEvent",
    "CallTimeout",
    "CircuitBreaker",
    "Outcome",
    "PRESETS",
    "Registry",
    "State",
    "StateChange",
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
    for name in DOCUMENTED:
        assert name in text, f"{name} is not documented in docs/breaker.md"


def test_names_dropped_from_the_root_still_import_with_a_warning() -> None:
    import brownout._clock
    import brownout._config
    import brownout._state

    old = {
        "TRANSITIONS": brownout._state.TRANSITIONS,
        "Clock": brownout._clock.Clock,
        "Duration": brownout._clock.Duration,
        "ErrorMatcher": brownout._config.ErrorMatcher,
    }
    for name, value in old.items():
        assert name not in brownout.__all__
        with pytest.warns(DeprecationWarning, match=rf"brownout\.{name} is deprecated"):
            assert getattr(brownout, name) is value
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        brownout.nope  # noqa: B018


def test_version_comes_from_the_package_metadata_written_once() -> None:
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import inventario

    root = Path(__file__).parent.parent
    written = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert brownout.__version__ == importlib.metadata.version("brownout") == written
    assert inventario.__version__ == written
    copies = [
        str(p.relative_to(root))
        for p in (root / "src").rglob("*.py")
        if f'"{written}"' in p.read_text() or f"'{written}'" in p.read_text()
    ]
    assert copies == [], f"the version is written again in {copies}"


def test_testing_module() -> None:
    assert brownout.testing.__all__ == ["FakeClock", "aeventually", "eventually"]


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


# ------------------------------------------------------------ the exception tree

#: Public exceptions defined outside brownout._errors: each needs a base from an
#: optional client library (psycopg's OperationalError, FastAPI's HTTPException).
DEFINED_ELSEWHERE = {
    "CommandTimeout": "brownout.sql",
    "FeatureUnavailable": "brownout.web._fastapi",
}

#: Where each error was importable from before the tree; these paths keep working.
OLD_PATHS = {
    "brownout.adapter": ["DependencyError"],
    "brownout._adapter": ["DependencyError"],
    "brownout.redis": ["SerializationError"],
    "brownout.openai": ["InvalidJSONOutput"],
    "brownout.health": ["UnknownFeature"],
    "brownout.health._manager": ["HealthProbeFailed", "UnknownFeature"],
    "brownout.health._probing": ["HealthProbeFailed"],
    "brownout.outbox": [
        "OutboxError",
        "OutboxFull",
        "OutboxCorrupted",
        "IdempotencyConflict",
        "UnknownOperation",
    ],
    "brownout.outbox._journal": ["OutboxError", "OutboxFull", "OutboxCorrupted"],
    "brownout.outbox._sql": ["UnknownOperation"],
    "brownout.spool": ["SpoolError", "SpoolFull", "SpoolCorrupted", "VerificationFailed"],
    "brownout.spool._store": ["SpoolError", "SpoolFull", "SpoolCorrupted"],
    "brownout.spool._upload": ["VerificationFailed"],
    "brownout.coherence": ["CoherenceError"],
    "brownout.sql": ["CommandTimeout"],
    "brownout.web": ["FeatureUnavailable"],
}


def _public_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined in any brownout module (all imported)."""
    import importlib
    import pkgutil

    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(brownout.__path__, "brownout."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("brownout")
                and not name.startswith("_")
            ):
                found[obj.__qualname__] = obj
    return found


def test_every_library_error_is_a_brownout_error() -> None:
    errors = _public_exceptions()
    assert {"BreakerOpen", "OutboxFull", "VerificationFailed", "CommandTimeout"} <= set(errors)
    outside = sorted(n for n, cls in errors.items() if not issubclass(cls, brownout.BrownoutError))
    assert outside == [], f"not BrownoutErrors: {outside}"


def test_the_tree_is_defined_in_one_module_and_drawn_in_its_docstring() -> None:
    import brownout._errors as errors_module

    doc = errors_module.__doc__ or ""
    for name, cls in _public_exceptions().items():
        assert cls.__module__ == DEFINED_ELSEWHERE.get(name, "brownout._errors"), name
        assert f"── {name} " in doc, f"{name} is not drawn in brownout._errors' docstring"
    assert sorted(errors_module.__all__) == sorted(
        set(_public_exceptions()) - set(DEFINED_ELSEWHERE)
    )


def test_old_import_paths_still_give_the_same_classes() -> None:
    import importlib

    import brownout._errors as errors_module

    for module_name, names in OLD_PATHS.items():
        module = importlib.import_module(module_name)
        for name in names:
            cls = getattr(module, name)
            if name not in DEFINED_ELSEWHERE:
                assert cls is getattr(errors_module, name), f"{module_name}.{name}"
            assert issubclass(cls, brownout.BrownoutError)


def test_builtin_bases_kept_for_compatibility() -> None:
    from brownout.health import UnknownFeature
    from brownout.openai import InvalidJSONOutput
    from brownout.redis import SerializationError

    assert issubclass(SerializationError, ValueError)
    assert issubclass(InvalidJSONOutput, ValueError)
    assert issubclass(UnknownFeature, KeyError)
    assert str(UnknownFeature("unknown feature 'x'")) == "unknown feature 'x'"


async def test_call_timeout_is_a_brownout_error_and_still_a_timeout_error() -> None:
    import asyncio

    cb = brownout.CircuitBreaker("slow", brownout.BreakerConfig(call_timeout=0.001))

    async def hangs() -> None:
        await asyncio.Event().wait()

    with pytest.raises(brownout.CallTimeout) as info:
        await cb.acall(hangs)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.name, info.value.timeout) == ("slow", 0.001)
    assert str(info.value) == "call through breaker 'slow' took longer than call_timeout=0.001 s"


def test_the_full_journals_share_one_base() -> None:
    """OutboxFull and SpoolFull are one kind of error: ``except JournalFull`` catches
    both, and both carry ``retry_after``."""
    from brownout._errors import JournalFull
    from brownout.outbox import OutboxError, OutboxFull
    from brownout.spool import SpoolError, SpoolFull

    for cls, family in ((OutboxFull, OutboxError), (SpoolFull, SpoolError)):
        err = cls("full", retry_after=12.0)
        assert isinstance(err, JournalFull) and isinstance(err, family)
        assert (str(err), err.retry_after) == ("full", 12.0)
        assert cls("full").retry_after == 30.0


def test_the_overload_package_surface() -> None:
    import brownout
    import brownout.overload as overload

    for name in overload.__all__:
        assert hasattr(overload, name), name
    assert issubclass(overload.BulkheadFull, overload.Overloaded)
    assert issubclass(overload.Throttled, overload.Overloaded)
    assert issubclass(overload.Overloaded, brownout.BrownoutError)
