"""Which inventario requests matter most when it cannot serve them all.

Every route has a criticality (``brownout.web.Criticality``): stock movements
and product writes are ``critical`` (never shed: a sale or a delivery that is
refused is lost), reads are ``default``, reports, price suggestions and
invoice extraction are ``sheddable`` (shed first: they can be asked again and
cost the most). ``ROUTE_CRITICALITY`` (an environment variable,
``"METHOD /template=class"`` entries separated by commas) changes any of them;
``SHED_MAX_IN_FLIGHT`` and ``SHED_MAX_DELAY`` set the overload limits,
``SHED_MAX_QUEUE_WAIT`` how long a request over them waits for a slot. The
health, metrics, status, docs and admin endpoints are exempt: they answer at
every level and are not counted. See ``docs/overload.md``, "Priority shedding".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from brownout.health import DegradationManager, Level
from brownout.web import Criticality, RouteCriticality, Shedder

__all__ = [
    "EXEMPT",
    "ROUTES",
    "SHED_AT_LEVEL",
    "build_classifier",
    "build_shedder",
    "parse_routes",
    "route_classes",
    "unknown_routes",
]

#: inventario's routes and their class (anything not listed is ``default``).
ROUTES: Mapping[str, Criticality] = {
    "POST /products/{sku}/movements": Criticality.CRITICAL,
    "POST /products": Criticality.CRITICAL,
    "PATCH /products/{sku}": Criticality.CRITICAL,
    "GET /reports/low-stock": Criticality.SHEDDABLE,
    "GET /products/{sku}/price-suggestion": Criticality.SHEDDABLE,
    "POST /invoices/{invoice_id}/extract": Criticality.SHEDDABLE,
}

#: Path prefixes never shed nor counted: they must answer at every level.
EXEMPT: tuple[str, ...] = (
    "/health",
    "/metrics",
    "/status",
    "/about",
    "/admin",
    "/docs",
    "/openapi",
)


def parse_routes(text: str | None) -> dict[str, Criticality]:
    """``"GET /products=sheddable, POST /invoices=critical"`` -> a mapping; a clear error
    naming the bad entry otherwise."""
    out: dict[str, Criticality] = {}
    seen: dict[str, str] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        route, sep, value = entry.rpartition("=")
        if not sep or not route.strip():
            raise ValueError(f"ROUTE_CRITICALITY entry {entry!r} is not 'METHOD /path=class'")
        key = " ".join(route.split())
        # the method as the classifier reads it (``get`` is ``GET``): one route given twice
        # would be decided by the order of the entries, silently
        method, _, path = key.partition(" ")
        same = f"{method.upper()} {path}"
        if same in seen:
            raise ValueError(
                f"ROUTE_CRITICALITY gives the route {same!r} twice ({seen[same]!r} and "
                f"{entry!r}): keep one"
            )
        seen[same] = entry
        try:
            out[key] = Criticality(value.strip().lower())
        except ValueError:
            names = ", ".join(c.value for c in Criticality)
            raise ValueError(
                f"ROUTE_CRITICALITY entry {entry!r}: {value.strip()!r} is not one of {names}"
            ) from None
    return out


def build_classifier(overrides: Mapping[str, Criticality] | None = None) -> RouteCriticality:
    """inventario's :data:`ROUTES` with ``overrides`` first (they win)."""
    routes: dict[str, Criticality] = dict(overrides or {})
    for key in routes:
        # an exempt path is never classified: an entry for it would silently do nothing
        template = key.split()[-1] if key.split() else key
        if template.startswith(EXEMPT):
            raise ValueError(
                f"ROUTE_CRITICALITY entry {key!r}: {template} is exempt from shedding "
                f"(paths under {', '.join(EXEMPT)} are never shed nor counted)"
            )
    for key, value in ROUTES.items():
        routes.setdefault(key, value)
    return RouteCriticality(routes, exempt=EXEMPT)


#: Shed whatever the load from this level on. Sheddable requests only: below MINIMAL the
#: feature gates already refuse what the level turns off, each with its own reason
#: ("database reads are off at level EMERGENCY"), which a client is better told.
SHED_AT_LEVEL: Mapping[Criticality, Level] = {Criticality.SHEDDABLE: Level.MINIMAL}


def build_shedder(
    manager: DegradationManager,
    *,
    max_in_flight: int,
    max_delay: float,
    max_queue_wait: float = 0.0,
    critical_reserve: int | None = None,
) -> Shedder:
    return Shedder(
        max_in_flight=max_in_flight,
        max_delay=max_delay,
        max_queue_wait=max_queue_wait,
        critical_reserve=critical_reserve,
        shed_at_level=SHED_AT_LEVEL,
        manager=manager,
    )


def _shape(template: str) -> str:
    """``/products/{sku}`` -> ``/products/{}``: the route whatever its parameters' names."""
    return re.sub(r"\{[^}]*\}", "{}", template)


def route_classes(classifier: RouteCriticality) -> dict[str, list[str]]:
    """Each class's routes as the classifier decides them (first entry wins), for people:
    ``{"critical": ["POST /products", ...], "default": [...], "sheddable": [...]}``; a
    route not listed is ``default``."""
    out: dict[str, list[str]] = {c.value: [] for c in Criticality}
    seen: set[str] = set()
    for route, value in classifier.to_dict().items():
        if route not in seen:
            seen.add(route)
            out[value].append(route)
    return {c: sorted(routes) for c, routes in out.items()}


def unknown_routes(
    classifier: RouteCriticality, app_routes: Iterable[tuple[str, str]]
) -> list[str]:
    """Configured ``METHOD /template`` entries that name no route of the app (typos)."""
    known = set(app_routes)
    out = []
    for method, template in classifier.templates:
        if any(t == template and (method == "*" or method == m) for m, t in known):
            continue
        # the same route with other parameter names (``{id}`` for ``{sku}``): say which
        near = sorted(
            f"{m} {t}"
            for m, t in known
            if _shape(t) == _shape(template) and (method == "*" or method == m)
        )
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        out.append(f"{method} {template}{hint}")
    return out
