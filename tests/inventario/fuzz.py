"""schemathesis against the real inventario app, from its own OpenAPI.

Used by ``tests/inventario/test_fuzz.py`` (a bounded run inside pytest) and by
``make fuzz`` (``python -m tests.inventario.fuzz --seconds 600``, a longer one).
The app is :func:`inventario.app.create_app` with settings pointing at a
temporary ``VAR_DIR`` (SQLite) or a private PostgreSQL database, served
in-process (``schemathesis.openapi.from_asgi``; its lifespan runs in
schemathesis' event loop, as the requests do).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The checks the issue asks for: no 5xx, and every answer as documented.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
#: Each phase's share of the time budget.
SHARES = {"examples": 0.1, "coverage": 0.3, "fuzzing": 0.3, "stateful": 0.3}
SEED = 20260907


@dataclass
class FuzzReport:
    """What a run did: cases generated, failures (formatted), errors, seconds."""

    backend: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    operations: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stop_reason: str = ""

    def summary(self) -> str:
        return (
            f"fuzz {self.backend}: {self.cases} cases over {self.operations} operations "
            f"(per phase {self.phases}), {len(self.failures)} failures, {len(self.errors)} "
            f"errors, {self.seconds:.1f} s, stopped: {self.stop_reason}"
        )


def fuzz_app(
    app: Any,
    *,
    backend: str,
    seconds: int,
    max_examples: int,
    seed: int = SEED,
    stateful_steps: int = 10,
) -> FuzzReport:
    """Run every phase against ``app`` (a FastAPI app) within ``seconds``; return the report.

    The phases run one after the other, each within its share (:data:`SHARES`)
    of the time left, so a slow machine shortens every phase instead of
    starving the last ones; a phase done early leaves its time to the next.
    """
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema
    from schemathesis.engine.statistic import Statistic
    from schemathesis.python import asgi

    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
    report = FuzzReport(backend)
    statistic = Statistic()
    started = time.monotonic()
    stops = []
    try:
        for n, phase in enumerate(PHASES):
            left = seconds - (time.monotonic() - started)
            budget = left * SHARES[phase] / sum(SHARES[p] for p in PHASES[n:])
            phases: dict[str, Any] = {name: {"enabled": name == phase} for name in PHASES}
            phases["stateful"]["max-steps"] = stateful_steps
            config = SchemathesisConfig.from_dict(
                {
                    "seed": seed,
                    "max-time": max(1, round(budget)),
                    "workers": 1,
                    "checks": checks,
                    "phases": phases,
                    # no example database: a seed gives the same run, whatever ran before
                    "generation": {
                        "max-examples": max_examples,
                        "deterministic": True,
                        "database": "none",
                    },
                    "suppress-health-check": ["all"],
                }
            )
            schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
            report.phases.setdefault(phase, 0)
            for event in from_schema(schema).execute():
                if isinstance(event, events.ScenarioFinished):
                    statistic.on_scenario_finished(event.recorder)
                    report.phases[phase] += len(event.recorder.cases)
                elif isinstance(event, events.NonFatalError | events.FatalError):
                    info = getattr(event, "info", None)
                    report.errors.append(str(getattr(info, "message", None) or event))
                elif isinstance(event, events.EngineFinished):
                    stops.append(f"{phase} {event.stop_reason.value}")
    finally:
        asgi.shutdown_lifespans()
    report.stop_reason = ", ".join(stops)
    report.seconds = time.monotonic() - started
    report.cases = statistic.total_cases
    report.operations = len(statistic.tested_operations | statistic.errored_operations)
    for label, grouped in statistic.failures.items():
        for group in grouped.values():
            text = group.format(index=None, curl=None, config=schema.config.output)
            report.failures.append(f"{label}\n{text}")
    return report


def make_app(var_dir: Path, *, ai_url: str | None = None, database_url: str | None = None) -> Any:
    """The real service: SQLite under ``var_dir`` (or ``database_url``), AI at ``ai_url``.

    With an OpenAI-compatible stub configured, the AI routes run instead of
    answering 503 "not configured"; Redis and S3 stay unconfigured (the
    embedded defaults: no cache, uploads in the spool).
    """
    from inventario.app import create_app
    from inventario.config import load_settings

    # an admin token the fuzzer does not know: the admin routes exist and must refuse it
    settings: dict[str, Any] = {
        "var_dir": var_dir,
        "heartbeat": 3600.0,
        "admin_token": "fuzz-admin-token-not-guessable-0123456789",
    }
    if ai_url is not None:
        settings.update(openai_api_key="sk-fuzz", openai_base_url=ai_url)
    if database_url is not None:
        settings["database_url"] = database_url
    return create_app(load_settings(**settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz inventario's API from its OpenAPI.")
    parser.add_argument("--seconds", type=int, default=600, help="budget per backend (600)")
    parser.add_argument("--max-examples", type=int, default=500, help="per operation (500)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"hypothesis seed ({SEED})")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres", "both"), default="both", help="(both)"
    )
    args = parser.parse_args(argv)
    from brownout.testing.servers import OpenAIStub, PostgresServer, find_pg_bin

    failed = False
    reports = []
    stub = OpenAIStub().start()
    try:
        with tempfile.TemporaryDirectory(prefix="inventario-fuzz-") as tmp:
            if args.backend in ("sqlite", "both"):
                app = make_app(Path(tmp) / "sqlite", ai_url=stub.base_url)
                reports.append(run(app, "sqlite", args))
            if args.backend in ("postgres", "both"):
                pg_bin = find_pg_bin()
                if pg_bin is None:
                    print("no PostgreSQL binaries found: PostgreSQL skipped", file=sys.stderr)
                    return 1
                server = PostgresServer(pg_bin=pg_bin)
                server.start()
                try:
                    url = server.create_database()
                    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
                    app = make_app(Path(tmp) / "pg", ai_url=stub.base_url, database_url=url)
                    reports.append(run(app, "postgres", args))
                finally:
                    server.close()
    finally:
        stub.close()
    for report in reports:
        for failure in report.failures:
            print(failure, file=sys.stderr)
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        print(report.summary())
        failed = failed or bool(report.failures or report.errors)
    return 1 if failed else 0


def run(app: Any, backend: str, args: argparse.Namespace) -> FuzzReport:
    report = fuzz_app(
        app, backend=backend, seconds=args.seconds, max_examples=args.max_examples, seed=args.seed
    )
    print(report.summary(), flush=True)  # as each backend finishes (again at the end)
    return report


if __name__ == "__main__":
    sys.exit(main())
