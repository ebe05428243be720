"""``inventario status``: a running service's status document, fetched and shown as
tables; the URL, timeout and table helpers the operator commands share."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from brownout import redact
from inventario import __version__

__all__ = [
    "StatusError",
    "base_url",
    "cut",
    "error_reason",
    "fetch_status",
    "render_status",
    "seconds_arg",
    "secs",
    "status_command",
    "table",
]


class StatusError(Exception):
    """``inventario status`` could not get a status document; the message says why."""


def base_url(raw: str) -> str:
    """The service's base URL from what the user typed (``localhost:8000`` is accepted)."""
    url = raw.strip()
    if "://" not in url:
        url = f"http://{url}"  # "localhost:8000" is a host and port, not a scheme
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise StatusError(f"not a valid URL: {redact(raw)!r} ({exc})") from None
    shown = redact(url, parts.password) if parts.password else url
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StatusError(f"not an http:// or https:// URL: {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise StatusError(f"credentials in the URL are not supported: {shown!r}")
    return url.rstrip("/")


def error_reason(exc: BaseException) -> str:
    """Why a connection or an OS call failed, in a few words (``timed out``, ...)."""
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def fetch_status(url: str, *, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
    """The status document of the service at ``url``: ``/status/data``, else ``/health``.

    With ``token`` (the service's admin token, sent as ``Authorization: Bearer``) the
    detailed document; without it what anyone may see (``"details": false``).
    Raises :class:`StatusError` naming the URL and the cause when the service cannot be
    reached, refuses the token or does not answer a brownout status document.
    """
    base = base_url(url)
    headers = {"Accept": "application/json", "User-Agent": f"inventario-cli/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for path in ("/status/data", "/health"):
        request = urllib.request.Request(base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue  # not inventario: try brownout's plain /health
            if token and exc.code in (401, 403):
                raise StatusError(
                    f"{base}{path} refused the admin token (HTTP {exc.code}): give the "
                    "service's ADMIN_TOKEN with --token or the ADMIN_TOKEN variable, or "
                    "--token '' for what anyone may see"
                ) from None
            raw = exc.read()  # a 503 may still carry the document
            if not raw:
                raise StatusError(
                    f"{base}{path} answered HTTP {exc.code} ({exc.reason}) without a status "
                    "document: is the URL that of an inventario service, and is it up?"
                ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise StatusError(f"cannot reach {base}: {error_reason(exc)}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StatusError(
                f"{base}{path} did not answer JSON: is this an inventario service?"
            ) from None
        if not isinstance(doc, dict) or "level" not in doc or "components" not in doc:
            raise StatusError(
                f"{base}{path} answered JSON without a level and components: "
                "is this an inventario service?"
            )
        return doc
    raise StatusError(
        f"{base} has neither /status/data nor /health (HTTP 404): is this an inventario service?"
    )


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be > 0 and < 3600 seconds, got {text}")
    return value


def status_command(args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else os.environ.get("ADMIN_TOKEN", "")
    try:
        doc = fetch_status(args.url, timeout=args.timeout, token=token.strip() or None)
    except StatusError as exc:
        print(f"inventario status: {exc}", file=sys.stderr)
        return 2
    print(render_status(doc))
    return 0


def num(value: Any, fmt: str = "{:.1f}", suffix: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return fmt.format(value) + suffix


def secs(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if value < 90:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{value // 60:.0f} min {value % 60:.0f} s"
    return f"{value // 3600:.0f} h {value % 3600 // 60:.0f} min"


def cut(value: Any, width: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _breaker_line(c: dict[str, Any]) -> str:
    breaker = c.get("breaker")
    if not isinstance(breaker, dict):
        return "-"
    state = str(breaker.get("state") or "?")
    wait = breaker.get("retry_after")
    if state in ("open", "forced_open") and isinstance(wait, int | float):
        state += f" ({wait:.0f} s)"
    return state


def render_status(doc: dict[str, Any]) -> str:
    """A readable table of level, score, components, breakers, backlogs and features.

    ``doc`` is ``/status/data`` (or brownout's ``/health``); missing fields show as ``-``.
    """
    out: list[str] = []
    service = doc.get("service")
    if isinstance(service, dict) and service.get("name"):
        out.append(f"{service['name']} {service.get('version', '')}".rstrip())
    out.append(f"level     {doc.get('level', '?')}")
    out.append(f"score     {num(doc.get('score'))} / 100")
    explanation = doc.get("explanation")
    if isinstance(explanation, dict) and explanation.get("decision"):
        out.append(f"decision  {explanation['decision']}")
    pinned = doc.get("pinned")
    if isinstance(pinned, dict):
        out.append(
            f"pinned    at {pinned.get('level')} for {secs(pinned.get('seconds_left'))} more: "
            f"{pinned.get('reason', '')}"
        )
    if isinstance(doc.get("predicted_recovery_s"), int | float):
        out.append(f"recovery  predicted in about {secs(doc['predicted_recovery_s'])}")

    rows: list[list[str]] = []
    for c in doc.get("components") or []:
        if not isinstance(c, dict):
            continue
        name = str(c.get("name", "?"))
        if c.get("configured") is False:
            rows.append([name, "not configured", "-", "-", "-", "-", ""])
            continue
        adapter: dict[str, Any] = c["adapter"] if isinstance(c.get("adapter"), dict) else {}
        breaker: dict[str, Any] = c["breaker"] if isinstance(c.get("breaker"), dict) else {}
        error = adapter.get("last_error") or breaker.get("last_error") or ""
        if not error and c.get("status") not in (None, "up"):
            why = c.get("why")
            error = "; ".join(map(str, why)) if isinstance(why, list) else str(why or "")
        rows.append(
            [
                name,
                str(c.get("status", "?")),
                num(c.get("score"), "{:.0f}"),
                _breaker_line(c),
                num(adapter.get("success_rate"), "{:.1%}"),
                num(adapter.get("latency_p95_ms"), "{:.1f}", " ms"),
                cut(error, 70),
            ]
        )
    out += [
        "",
        table(
            ["COMPONENT", "STATUS", "SCORE", "BREAKER", "SUCCESS", "P95", "LAST ERROR / WHY"],
            rows,
            right=frozenset({2, 4, 5}),
        ),
    ]

    backlogs = doc.get("backlogs")
    if isinstance(backlogs, dict) and backlogs:
        rows = []
        outbox = backlogs.get("outbox")
        if isinstance(outbox, dict):
            detail = (
                f"replayed {outbox.get('replayed_total', '?')}, "
                f"dead letters {outbox.get('dead_letters', '?')}"
            )
            if outbox.get("dead_letters"):
                detail += " (inventario outbox list)"
            if outbox.get("waiting"):
                detail += ", waiting for the database"
            rows.append(
                [
                    "outbox",
                    f"{outbox.get('pending', '?')} writes",
                    f"oldest {secs(outbox.get('oldest_pending_age_s'))}",
                    detail,
                ]
            )
        spool = backlogs.get("spool")
        if isinstance(spool, dict):
            detail = f"{spool.get('bytes', '?')} bytes, quarantined {spool.get('quarantined', '?')}"
            if spool.get("failed") and "failures" not in spool:  # the public document
                detail += f", FAILED {spool['failed']} (inventario spool list)"
            elif spool.get("failed"):
                failures = spool.get("failures") or [{}]
                reason = failures[0].get("reason", "") if isinstance(failures[0], dict) else ""
                detail += f", FAILED {spool['failed']}: {cut(reason, 60)} (inventario spool list)"
            if spool.get("s3_configured") is False:
                detail += ", S3 not configured: kept until a bucket is set"
            rows.append(
                [
                    "spool",
                    f"{spool.get('files', '?')} files",
                    f"oldest {secs(spool.get('oldest_age_s'))}",
                    detail,
                ]
            )
        if backlogs.get("error"):
            rows.append(["backlogs", "?", "-", str(backlogs["error"])])
        if rows:
            out += ["", table(["BACKLOG", "PENDING", "AGE", "DETAIL"], rows)]

    features = doc.get("features")
    if isinstance(features, dict) and features:
        rows = []
        for name, f in features.items():
            on = f.get("enabled") if isinstance(f, dict) else f
            reason = f.get("reason", "") if isinstance(f, dict) else ""
            rows.append([str(name), "on" if on else "OFF", "" if on else str(reason)])
        out += ["", table(["FEATURE", "ON", "REASON"], rows)]

    transitions = [t for t in doc.get("transitions") or [] if isinstance(t, dict)]
    if transitions:
        rows = []
        for t in transitions[-5:]:
            at = t.get("at")
            when = (
                datetime.fromtimestamp(at).strftime("%H:%M:%S")
                if isinstance(at, int | float)
                else "?"
            )
            rows.append(
                [when, f"{t.get('from', '?')} -> {t.get('to', '?')}", cut(t.get("reason", ""), 90)]
            )
        out += ["", table(["AT", "TRANSITION", "REASON"], rows)]
    if doc.get("details") is False:
        out += [
            "",
            "details   hidden: error texts, adapter settings and failure reasons are shown "
            "with the admin token (--token or ADMIN_TOKEN)",
        ]
    return "\n".join(out)
