"""The operator's pages and the API docs' local assets.

:func:`ui_router` serves read-only HTML pages (overview, experiment, drift,
registry) with server-rendered SVG charts; the management router mounts it at
``<management_prefix>/ui``. :func:`serve_docs_locally` makes an app's ``/docs``
and ``/redoc`` load Swagger UI and ReDoc from the package instead of a CDN.
Needs the ``fastapi`` extra.
"""

from ._docs import serve_docs_locally
from ._pages import ui_router

__all__ = ["serve_docs_locally", "ui_router"]
