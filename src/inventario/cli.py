"""``inventario serve | status | demo``."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from inventario.config import ConfigError, load_settings

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from inventario.app import create_app

    try:
        overrides: dict[str, Any] = {}
        if args.host:
            overrides["host"] = args.host
        if args.port:
            overrides["port"] = args.port
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"inventario: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    print(
        f"inventario on http://{settings.host}:{settings.port}  "
        f"(status page: http://{settings.host}:{settings.port}/status)",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def _fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _status(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    try:
        health = _fetch(f"{base}/health")
    except urllib.error.HTTPError as exc:
        health = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"inventario status: cannot reach {base}: {exc}", file=sys.stderr)
        return 2
    print(render_status(health))
    return 0


def render_status(health: dict[str, Any]) -> str:
    """A readable table of level, score, components, breakers and features."""
    lines = [
        f"level  {health.get('level', '?')}   score {health.get('score', '?')}",
        "",
        f"{'component':<12} {'status':<11} {'score':>6}  {'breaker':<10} why",
    ]
    for c in health.get("components", []):
        breaker = (c.get("breaker") or {}).get("state") or c.get("breaker_state") or "-"
        why = "; ".join(c.get("why", [])) if isinstance(c.get("why"), list) else c.get("why", "")
        lines.append(
            f"{c.get('name', '?'):<12} {c.get('status', '?'):<11} "
            f"{c.get('score', 0):>6.1f}  {breaker:<10} {why}"
        )
    features = health.get("features", {})
    if features:
        lines += ["", f"{'feature':<24} {'on':<4} reason"]
        for name, f in features.items():
            on = f.get("enabled") if isinstance(f, dict) else f
            reason = f.get("reason", "") if isinstance(f, dict) else ""
            lines.append(f"{name:<24} {'yes' if on else 'no':<4} {reason}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    import importlib

    try:
        demo = importlib.import_module("inventario.demo")
    except ModuleNotFoundError:
        print("inventario demo: not available in this build", file=sys.stderr)
        return 2
    result: int = demo.run_demo(args)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inventario", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (embedded defaults when unconfigured)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
    status = sub.add_parser("status", help="level, score, components, breakers, features")
    status.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
    status.set_defaults(func=_status)
    demo = sub.add_parser("demo", help="a full local stack, a request mix and a fault timeline")
    demo.add_argument("--quick", action="store_true", help="shorter phases")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
