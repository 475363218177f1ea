"""FastAPI integration: ``instrument_app``, the management API and ``/metrics``."""

from ._instrument import get_runtime, instrument_app, uninstrument_app

__all__ = ["get_runtime", "instrument_app", "uninstrument_app"]
