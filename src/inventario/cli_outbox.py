"""``inventario outbox list | retry | discard``: the queued writes of a running service.

The outbox journal belongs to the service that uses it (``VAR_DIR`` is locked by
``inventario serve``), so these commands do not open it: they call the service's
admin endpoints (``/admin/outbox...``, see :mod:`inventario.routes.outbox_admin`) with the
admin token from ``ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inventario.cli_admin import add_admin_command, add_limit_option, add_yes_option, admin_call
from inventario.cli_status import StatusError, cut, secs, table

__all__ = ["add_outbox_commands", "render_outbox"]


class OutboxCommandError(StatusError):
    """An outbox command could not be done; the message says why and what to do."""


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One admin request; its JSON answer, or :class:`OutboxCommandError` saying why not."""
    return admin_call(args, method, path, body, part="outbox", error=OutboxCommandError)


def render_outbox(doc: dict[str, Any], *, dead_only: bool = False) -> str:
    """``GET /admin/outbox`` as a summary line and tables of dead letters and pending writes."""
    stats = doc.get("stats") if isinstance(doc.get("stats"), dict) else {}
    assert isinstance(stats, dict)
    lines = [
        f"{stats.get('pending', '?')} writes pending (oldest "
        f"{secs(stats.get('oldest_pending_age_s'))}, limit {stats.get('max_pending', '?')}), "
        f"{stats.get('dead_letters', '?')} dead letters; replayed "
        f"{stats.get('replayed_total', '?')}, retried {stats.get('retried_total', 0)}, "
        f"discarded {stats.get('discarded_total', 0)}"
    ]
    dead = [d for d in doc.get("dead_letters") or [] if isinstance(d, dict)]
    if dead:
        rows = [
            [
                cut(d.get("key", ""), 36),
                str(d.get("operation", "?")),
                cut(d.get("stream", ""), 20),
                str(d.get("attempts", "?")),
                secs(d.get("age_s")),
                cut(d.get("reason", ""), 80),
            ]
            for d in dead
        ]
        lines += [
            "",
            "dead letters (inventario outbox retry KEY... | discard KEY... --yes):",
            table(["KEY", "OPERATION", "STREAM", "ATTEMPTS", "AGE", "REASON"], rows),
        ]
    pending = [p for p in doc.get("pending") or [] if isinstance(p, dict)]
    if pending and not dead_only:
        rows = [
            [
                cut(p.get("key", ""), 36),
                str(p.get("operation", "?")),
                cut(p.get("stream", ""), 20),
                str(p.get("attempts", "?")),
                secs(p.get("age_s")),
                cut(p.get("waiting_because") or "", 80),
            ]
            for p in pending
        ]
        lines += [
            "",
            "pending (applied when the database takes them):",
            table(["KEY", "OPERATION", "STREAM", "ATTEMPTS", "AGE", "WAITING BECAUSE"], rows),
        ]
    return "\n".join(lines)


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.keys) == bool(args.all):
        raise OutboxCommandError(
            "give dead letters' keys (as `inventario outbox list` shows them) or --all"
        )
    return {"all": True} if args.all else {"keys": list(args.keys)}


def _not_dead(doc: dict[str, Any]) -> int:
    missing = [str(k) for k in doc.get("not_dead") or []]
    if missing:
        print(f"not dead letters (left as they are): {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def _list(args: argparse.Namespace) -> int:
    doc = _call(args, "GET", f"/admin/outbox?limit={args.limit}")
    print(render_outbox(doc, dead_only=args.dead))
    return 0


def _retry(args: argparse.Namespace) -> int:
    doc = _call(args, "POST", "/admin/outbox/retry", _selection(args))
    print(
        f"retried {doc.get('done', 0)} dead letters: the service applies them again now "
        f"({doc.get('dead_letters', '?')} dead letters left)"
    )
    return _not_dead(doc)


def _discard(args: argparse.Namespace) -> int:
    if not args.yes:
        raise OutboxCommandError(
            "discarding gives up on the writes for good (they are never applied): add --yes"
        )
    doc = _call(args, "POST", "/admin/outbox/discard", _selection(args))
    print(
        f"discarded {doc.get('done', 0)} dead letters "
        f"({doc.get('dead_letters', '?')} dead letters left)"
    )
    return _not_dead(doc)


def _selected(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "keys",
        nargs="*",
        metavar="KEY",
        help="dead letters' keys (the writes' Idempotency-Key), as `inventario outbox list` "
        "shows them (default: none; then --all is needed)",
    )
    parser.add_argument(
        "--all", action="store_true", help="every dead letter instead of keys (default: off)"
    )


def _discarding(parser: argparse.ArgumentParser) -> None:
    _selected(parser)
    add_yes_option(parser, "the writes are to be given up on")


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dead", action="store_true", help="only the dead letters (default: both lists)"
    )
    add_limit_option(parser, "entries of each list")


def add_outbox_commands(sub: Any) -> None:
    """Add ``outbox`` and its subcommands to ``inventario``'s subparsers ``sub``."""
    outbox = sub.add_parser(
        "outbox",
        help="list, retry or discard the writes queued while the database was away",
        description="The writes a running inventario answered 202 and keeps in its outbox "
        "until the database takes them. An outage or a missing schema never gives up on "
        "one; a write the database refuses for good (the sku was taken meanwhile, not "
        "enough stock) is a dead letter with its reason and waits for you: retry it after "
        "fixing the cause, or discard it. The commands call the service's admin endpoints "
        "with the token in ADMIN_TOKEN. Exit status: 0 done, 1 some keys were not dead "
        "letters, 2 the service could not do it.",
    )
    commands = outbox.add_subparsers(
        dest="outbox_command", required=True, metavar="COMMAND", help="one of (each has --help):"
    )
    add_admin_command(
        commands,
        "list",
        _list,
        group="outbox",
        help="the dead letters with their reasons, and the pending writes",
        description="Print the outbox's figures, its dead letters (key, operation, product, "
        "attempts, age and why it died) and its pending writes (and why they wait), oldest "
        "first.",
        arguments=_listing,
    )
    add_admin_command(
        commands,
        "retry",
        _retry,
        group="outbox",
        help="apply dead letters again (after fixing what made them fail)",
        description="Send the given dead letters back to the outbox, at the end of their "
        "product's queue, with their attempts reset; the service applies them at once.",
        arguments=_selected,
    )
    add_admin_command(
        commands,
        "discard",
        _discard,
        group="outbox",
        help="give up on dead letters for good (they are never applied)",
        description="Delete the given dead letters without applying them. Their keys stay "
        "known: GET /writes/KEY answers 'discarded' with the reason, and the same request "
        "again is not a new write.",
        arguments=_discarding,
    )
