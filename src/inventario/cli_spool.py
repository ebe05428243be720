"""``inventario spool list | retry | retarget | discard``: the invoice spool of a running service.

The spool directory is locked by the service that uses it, so these commands do
not open it: they call the service's admin endpoints (``/admin/spool...``, see
:mod:`inventario.routes.spool_admin`) with the admin token from ``ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inventario.cli_admin import add_admin_command, add_limit_option, add_yes_option, admin_call
from inventario.cli_status import StatusError, cut, secs, table

__all__ = ["add_spool_commands", "render_spool"]


class SpoolCommandError(StatusError):
    """A spool command could not be done; the message says why and what to do."""


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One admin request; its JSON answer, or :class:`SpoolCommandError` saying why not."""
    return admin_call(args, method, path, body, part="spool", error=SpoolCommandError)


def render_spool(doc: dict[str, Any]) -> str:
    """``GET /admin/spool`` as a summary line and a table of entries."""
    stats = doc.get("stats") if isinstance(doc.get("stats"), dict) else {}
    assert isinstance(stats, dict)
    lines = []
    if stats.get("s3_configured") is False:
        lines.append(
            "S3 is not configured: invoice files are kept here and go to the bucket "
            "configured later (S3_BUCKET)"
        )
    else:
        lines.append(f"S3 bucket: {stats.get('s3_bucket', '?')}")
    lines.append(
        f"{stats.get('files', '?')} files ({stats.get('bytes', '?')} bytes), "
        f"{stats.get('failed', 0)} failed, oldest {secs(stats.get('oldest_age_s'))}, "
        f"quarantined {stats.get('quarantined', 0)}"
    )
    entries = [e for e in doc.get("entries") or [] if isinstance(e, dict)]
    if entries:
        rows = [
            [
                str(e.get("id", ""))[:12],
                str(e.get("state", "?")),
                str(e.get("size", "?")),
                secs(e.get("age_s")),
                cut(e.get("destination", ""), 60),
                cut(e.get("failed") or e.get("last_error") or "", 80),
            ]
            for e in entries
        ]
        lines += ["", table(["ID", "STATE", "BYTES", "AGE", "DESTINATION", "REASON"], rows)]
    total = doc.get("total")
    if isinstance(total, int) and total > len(entries):
        lines.append(f"... and {total - len(entries)} more (--limit)")
    return "\n".join(lines)


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.ids) == bool(args.all_failed):
        raise SpoolCommandError("give entry ids (as `inventario spool list` shows) or --all-failed")
    return {"all_failed": True} if args.all_failed else {"ids": list(args.ids)}


def _missing(doc: dict[str, Any]) -> int:
    missing = [str(m) for m in doc.get("missing") or []]
    if missing:
        print(f"not in the spool: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def _list(args: argparse.Namespace) -> int:
    state = "failed" if args.failed else "all"
    doc = _call(args, "GET", f"/admin/spool?state={state}&limit={args.limit}")
    print(render_spool(doc))
    return 0


def _retry(args: argparse.Namespace) -> int:
    doc = _call(args, "POST", "/admin/spool/retry", _selection(args))
    done = doc.get("retried") or []
    print(f"retried {len(done)} entries: the service uploads them again now")
    return _missing(doc)


def _retarget(args: argparse.Namespace) -> int:
    bucket = None if args.to_configured else args.to
    doc = _call(args, "POST", "/admin/spool/retarget", {**_selection(args), "bucket": bucket})
    for moved in doc.get("retargeted") or []:
        print(f"{moved.get('from')} -> {moved.get('to')}")
    for refused in doc.get("refused") or []:
        print(f"not moved: {refused.get('id')}: {refused.get('detail')}", file=sys.stderr)
    print(f"retargeted {len(doc.get('retargeted') or [])} entries")
    return 1 if doc.get("refused") else _missing(doc)


def _discard(args: argparse.Namespace) -> int:
    if not args.yes:
        raise SpoolCommandError(
            "discarding deletes the files for good (their invoices stay, without a file): add --yes"
        )
    doc = _call(args, "POST", "/admin/spool/discard", _selection(args))
    print(f"discarded {len(doc.get('discarded') or [])} entries")
    return _missing(doc)


def _selected(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="entry ids or unique prefixes of at least 8 characters, as `inventario spool "
        "list` shows them (default: none; then --all-failed is needed)",
    )
    parser.add_argument(
        "--all-failed",
        action="store_true",
        help="every failed entry instead of ids (default: off)",
    )


def _discarding(parser: argparse.ArgumentParser) -> None:
    _selected(parser)
    add_yes_option(parser, "the files are to be deleted")


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--failed", action="store_true", help="only the failed entries (default: all entries)"
    )
    add_limit_option(parser)


def _retargeting(parser: argparse.ArgumentParser) -> None:
    _selected(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to",
        metavar="BUCKET",
        default=None,
        help="the new bucket (default: none; required unless --to-configured)",
    )
    where.add_argument(
        "--to-configured",
        action="store_true",
        help="the bucket configured when the file is uploaded (default: off)",
    )


def add_spool_commands(sub: Any) -> None:
    """Add ``spool`` and its subcommands to ``inventario``'s subparsers ``sub``."""
    spool = sub.add_parser(
        "spool",
        help="list, retry, retarget or discard the invoice files waiting for S3",
        description="The invoice files a running inventario keeps in its spool until S3 "
        "takes them. A file whose bucket refuses it for good (no such bucket, access "
        "denied) is marked failed and waits for you: retry it after fixing the bucket, "
        "retarget it to another bucket, or discard it. The commands call the service's "
        "admin endpoints with the token in ADMIN_TOKEN. Exit status: 0 done, 1 some ids "
        "were not found or not moved, 2 the service could not do it.",
    )
    commands = spool.add_subparsers(
        dest="spool_command", required=True, metavar="COMMAND", help="one of (each has --help):"
    )
    add_admin_command(
        commands,
        "list",
        _list,
        group="spool",
        help="the spooled files, oldest first, with why the failed ones failed",
        description="Print where spooled files go (the configured S3 bucket, or that S3 is "
        "not configured), the spool's figures, and its entries: id, state (pending or "
        "failed), size, age, destination and the reason of the last failure.",
        arguments=_listing,
    )
    add_admin_command(
        commands,
        "retry",
        _retry,
        group="spool",
        help="upload failed files again (after creating the bucket or fixing its policy)",
        description="Clear the failure of the given entries: the service tries to upload "
        "them again at once, to the same destination.",
        arguments=_selected,
    )
    add_admin_command(
        commands,
        "retarget",
        _retarget,
        group="spool",
        help="send files to another bucket (the invoices follow)",
        description="Send the given entries to another bucket and upload them there; the "
        "invoices that name these files are updated with them. --to-configured sends them "
        "to the bucket S3 is configured with when they are uploaded (as for files spooled "
        "while S3 was not configured).",
        arguments=_retargeting,
    )
    add_admin_command(
        commands,
        "discard",
        _discard,
        group="spool",
        help="delete files without uploading them (their invoices stay, fileless)",
        description="Delete the given entries from the spool for good, without uploading "
        "them. Their invoices keep their lines but have no file any more.",
        arguments=_discarding,
    )
