"""What the operator commands share (`inventario outbox`, `inventario spool`): the admin
request, and the shape of a command (its arguments, ``--url``/``--timeout``, its runner).

The outbox journal and the spool directory belong to the running service (``VAR_DIR``
is locked by ``inventario serve``), so these commands call its admin endpoints with
the admin token from ``ADMIN_TOKEN`` instead of opening them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from inventario import __version__
from inventario.cli_status import StatusError, base_url, error_reason, seconds_arg

__all__ = ["DEFAULT_URL", "admin_call", "problem_detail"]

#: Where the commands look for the service unless ``--url`` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8000"


def admin_call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    part: str,
    error: type[StatusError] = StatusError,
) -> dict[str, Any]:
    """One admin request to ``args.url`` (within ``args.timeout`` s); its JSON answer.

    ``part`` names what the endpoints manage (``"outbox"``, ``"spool"``) in the
    messages; every failure is an ``error`` whose message says why and what to do:
    no ``ADMIN_TOKEN``, the service unreachable, no such admin endpoints (404: the
    service has no ``ADMIN_TOKEN``), the token refused (401/403), another HTTP error
    (with the problem's ``detail``), or an answer that is not a JSON object.
    """
    token = os.environ.get("ADMIN_TOKEN", "").strip()
    if not token:
        raise error(
            f"set ADMIN_TOKEN to the service's admin token (the {part} is read and changed "
            "through the running service's admin endpoints)"
        )
    base = base_url(args.url)
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": f"inventario-cli/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = problem_detail(exc.read())
        if exc.code == 404:
            raise error(
                f"{base} has no {part} admin endpoints: is ADMIN_TOKEN set on the service, "
                "and is this inventario?"
            ) from None
        if exc.code in (401, 403):
            raise error(
                f"{base} refused the admin token (HTTP {exc.code}): set ADMIN_TOKEN to the "
                "service's"
            ) from None
        raise error(f"{base}{path}: HTTP {exc.code}: {detail or exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise error(f"cannot reach {base}: {error_reason(exc)}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise error(f"{base}{path} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise error(f"{base}{path} answered an unexpected document")
    return doc


def problem_detail(raw: bytes) -> str:
    """The ``detail`` of an error body (a problem, or a list of field errors), else ''.

    >>> problem_detail(b'{"status": 409, "detail": "not a dead letter"}')
    'not a dead letter'
    >>> problem_detail(b'{"detail": [{"msg": "field required"}, "too long"]}')
    'field required; too long'
    >>> problem_detail(b'<html>')
    ''
    """
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or "")


def command_runner(group: str, handler: Any) -> Any:
    """``handler`` as an ``inventario GROUP …`` command: a :class:`StatusError` (the service
    refused, or a bad ``--url``) becomes one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args)
        except StatusError as exc:
            command = getattr(args, f"{group}_command")
            print(f"inventario {group} {command}: {exc}", file=sys.stderr)
            return 2
        return result

    return run


def limit_arg(text: str) -> int:
    """``--limit``: a whole number from 1 to 1000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000, got {value}")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--timeout``, shared by every admin command."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the service's base URL; host:port is enough (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for an answer, more than 0 and less than 3600 (default: 10)",
    )


def add_admin_command(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    group: str,
    help: str,
    description: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """``inventario GROUP NAME``, one command of an admin API: its own ``arguments``, then
    ``--url`` and ``--timeout``, run by :func:`command_runner` (``commands`` is GROUP's
    subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
    if arguments is not None:
        arguments(parser)
    add_connection_options(parser)
    parser.set_defaults(func=command_runner(group, handler))
    return parser


def add_limit_option(parser: argparse.ArgumentParser, entries: str = "entries") -> None:
    """``--limit N`` of a listing (1 to 1000, default 100)."""
    parser.add_argument(
        "--limit",
        type=limit_arg,
        default=100,
        metavar="N",
        help=f"list at most N {entries}, 1 to 1000 (default: 100)",
    )


def add_yes_option(parser: argparse.ArgumentParser, confirms: str) -> None:
    """``--yes``, the confirmation a command that gives something up for good needs."""
    parser.add_argument(
        "--yes",
        action="store_true",
        help=f"confirm that {confirms} (default: off, nothing changes)",
    )
