"""FastAPI integration: ``instrument_app``, the management API and ``/metrics``."""

from ._instrument import HttpInstrumentation, SettingsConflictError, get_runtime, instrument_app, uninstrument_app
from ._management import management_router
from ._middleware import HttpServerConfig, HttpServerMiddleware

__all__ = [
    "HttpInstrumentation",
    "HttpServerConfig",
    "HttpServerMiddleware",
    "SettingsConflictError",
    "get_runtime",
    "instrument_app",
    "management_router",
    "uninstrument_app",
]
