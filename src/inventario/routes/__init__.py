"""inventario's HTTP routes, one module per resource.

:data:`ROUTERS` in the order they are included (the OpenAPI document lists paths in
that order). Invoices (:mod:`inventario.routes.invoices`), the status page and the admin
APIs are included by :func:`inventario.app.create_app` beside them.
"""

from __future__ import annotations

from fastapi import APIRouter

from inventario.routes import movements, prices, products, writes

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (products.router, movements.router, writes.router, prices.router)
