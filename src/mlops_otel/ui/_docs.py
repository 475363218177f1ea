"""``/docs`` and ``/redoc`` without a CDN: FastAPI's self-hosting recipe with packaged assets.

FastAPI's default docs pages load Swagger UI, ReDoc, a favicon and Google
fonts from the internet; on a plant network without internet they stay blank.
The assets come from the ``fastapi-offline`` package (Swagger UI bundle and CSS,
ReDoc standalone, favicon; ~2.8 MB, part of the ``fastapi`` extra), served by a
:class:`~starlette.staticfiles.StaticFiles` mount (ReDoc's bundle with its one CDN
image, the vendor logo, replaced by an empty image); the pages are FastAPI's own
:func:`~fastapi.openapi.docs.get_swagger_ui_html` and
:func:`~fastapi.openapi.docs.get_redoc_html` pointed at them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import attrs
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..validation import InvalidValueError

__all__ = ["DEFAULT_ASSETS_PATH", "LocalDocs", "assets_directory", "serve_docs_locally"]

#: Where the Swagger UI and ReDoc assets are mounted unless told otherwise.
DEFAULT_ASSETS_PATH = "/_mlops-otel/docs-assets"
#: ReDoc's side menu shows a logo from the vendor's CDN; the served bundle shows an empty image instead.
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"
#: The names FastAPI gives its own docs routes (only those are replaced).
_FASTAPI_DOCS = {"swagger_ui_html", "redoc_html"}


def assets_directory() -> Path:
    """The directory holding ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise ImportError("serving the API docs locally needs 'fastapi-offline': pip install 'mlops-otel[fastapi]'")
    path = Path(spec.origin).parent / "static"
    if not (path / "swagger-ui-bundle.js").is_file() or not (path / "redoc.standalone.js").is_file():
        raise ImportError(f"fastapi-offline at {path.parent} ships no Swagger UI / ReDoc assets")
    return path


@attrs.frozen
class LocalDocs:
    """What :func:`serve_docs_locally` changed on an app (for :meth:`undo`)."""

    removed: tuple[tuple[int, BaseRoute], ...]
    added: tuple[BaseRoute, ...]

    def undo(self, app: FastAPI) -> None:
        """Remove the local docs routes and put FastAPI's own back where they were."""
        routes = app.router.routes
        routes[:] = [r for r in routes if all(r is not a for a in self.added)]
        for index, route in self.removed:
            routes.insert(min(index, len(routes)), route)


def serve_docs_locally(app: FastAPI, *, assets_path: str = DEFAULT_ASSETS_PATH) -> LocalDocs | None:
    """Serve *app*'s ``/docs`` and ``/redoc`` with assets from the package, never from a CDN.

    Replaces only FastAPI's own docs routes (an app that customised its docs
    keeps them); returns ``None`` when the app has no docs pages.
    """
    if not assets_path.startswith("/") or assets_path.endswith("/"):
        raise InvalidValueError("assets_path", "a path starting with '/' and not ending with '/'", assets_path)
    if not app.openapi_url or not (app.docs_url or app.redoc_url):
        return None
    routes = app.router.routes
    removed = tuple((i, r) for i, r in enumerate(routes)
                    if isinstance(r, Route) and r.name in _FASTAPI_DOCS and r.path in (app.docs_url, app.redoc_url))
    if not removed:
        return None
    directory = assets_directory()
    openapi_url, title = app.openapi_url, app.title
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url

    def urls(request: Request) -> tuple[str, str]:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return root + openapi_url, root + assets_path

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=openapi, title=f"{title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect if oauth2_redirect else None,
            init_oauth=app.swagger_ui_init_oauth, swagger_ui_parameters=app.swagger_ui_parameters,
            swagger_js_url=f"{assets}/swagger-ui-bundle.js", swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )

    async def redoc_html(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_redoc_html(openapi_url=openapi, title=f"{title} - ReDoc",
                              redoc_js_url=f"{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)

    redoc_bundle: list[bytes] = []

    async def redoc_js(request: Request) -> Response:
        if not redoc_bundle:  # read once, on first use
            redoc_bundle.append((directory / "redoc.standalone.js").read_bytes().replace(_REDOC_LOGO, _EMPTY_IMAGE))
        return Response(redoc_bundle[0], media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    pages: dict[str, Any] = {"swagger_ui_html": swagger_ui_html, "redoc_html": redoc_html}
    added: list[BaseRoute] = [
        Route(f"{assets_path}/redoc.standalone.js", redoc_js, methods=["GET", "HEAD"], include_in_schema=False),
        Mount(assets_path, app=StaticFiles(directory=directory), name="mlops_otel_docs_assets"),
    ]
    for _, old in removed:
        assert isinstance(old, Route)
        added.append(Route(old.path, pages[old.name], methods=["GET", "HEAD"], name=old.name,
                           include_in_schema=False))
    drop = {id(r) for _, r in removed}
    routes[:] = [r for r in routes if id(r) not in drop]
    # Before everything else: a catch-all route of the app must not shadow them.
    routes[0:0] = added
    app.middleware_stack = None
    return LocalDocs(removed, tuple(added))
