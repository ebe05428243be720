"""``/docs`` (Swagger UI) and ``/redoc`` with their assets served by the service itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN: without internet they are
blank. This is FastAPI's documented way to self-host them (``docs_url=None``,
``redoc_url=None``, then ``get_swagger_ui_html`` / ``get_redoc_html`` pointing at local
files). The files come from the ``fastapi-offline`` package, which ships the Swagger UI 5
bundle, its style sheet, ReDoc's standalone bundle and a favicon, and follows FastAPI's
releases. (``swagger-ui-bundle``, the other packaged copy, ships Swagger UI 4.15, which
cannot render the OpenAPI 3.1 documents FastAPI writes.)
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["ASSETS_URL", "install_docs"]

#: where the Swagger UI and ReDoc files are served
ASSETS_URL = "/docs/assets"

# The pages may load nothing from another host: ReDoc's sidebar shows a logo from its
# CDN, which the browser then neither fetches nor waits for. Both pages start with an
# inline script and Swagger UI sets inline styles, hence 'unsafe-inline' for those.
_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets to ``app`` (built with both URLs ``None``)."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None: they load a CDN")
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(
        ASSETS_URL,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - API",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                # Swagger UI's default sends the document's URL to validator.swagger.io
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - API reference",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )
