"""Zero-code instrumentation: ``opentelemetry-instrument uvicorn app:app``.

Registered as the ``mlops_otel`` entry point of the ``opentelemetry_instrumentor``
group, so the OTel auto-instrumentation agent loads it. Every FastAPI app
created afterwards is passed to :func:`mlops_otel.fastapi.instrument_app` with a
runtime built by :meth:`mlops_otel.Runtime.from_env` when the app starts
(``MLOPS_OTEL_*`` and ``OTEL_*`` variables, read then, not at import).

``MLOPS_OTEL_METRICS_PATH`` (default ``/metrics``; empty disables the mount),
``MLOPS_OTEL_MANAGEMENT_TOKEN`` (enables the management API under ``/mlops``) and
``MLOPS_OTEL_INSTRUMENT_HTTP`` (``light``, the default: mlops-otel's lean HTTP middleware;
``otel``: the OTel FastAPI instrumentation; ``none``, ``false``, ``0``, ``off`` or ``no``: no HTTP
layer) are read when an app is created.

HTTP spans and metrics are added once: when ``opentelemetry-instrument``'s own FastAPI
instrumentor (``opentelemetry-instrumentation-fastapi``) is active, it already traces the app
and mlops-otel adds no second HTTP layer (whatever ``MLOPS_OTEL_INSTRUMENT_HTTP`` says).
Disable it with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi`` to get the lighter one.

The ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` variables are applied by an
OpenTelemetry *configurator* (the ``opentelemetry-distro`` package, installed by
``pip install 'mlops-otel[zerocode]'``). Without one, ``opentelemetry-instrument``
silently exports nothing; this instrumentor logs a warning saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

# mypy cannot see BaseInstrumentor through the namespace package (ships no py.typed): it is Any.
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

__all__ = ["MlopsOtelInstrumentor", "http_instrumentation_from_env", "missing_configurator_warning"]

#: ``MLOPS_OTEL_INSTRUMENT_HTTP`` values and what they pass as ``instrument_app(instrument_http=...)``.
_HTTP_CHOICES: dict[str, Literal["light", "otel", False]] = {
    "light": "light", "otel": "otel",
    # Every usual spelling of "off" turns the HTTP layer off (never on with a warning).
    "none": False, "false": False, "0": False, "off": False, "no": False,
}

_log = logging.getLogger("mlops_otel.autoinstrument")


class MlopsOtelInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # base is Any (see import)
    """Instrument every FastAPI app created while this instrumentor is active."""

    _original_init: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("fastapi >= 0.110",)

    def _instrument(self, **kwargs: Any) -> None:
        from fastapi import FastAPI

        warning = missing_configurator_warning(entry_points(group="opentelemetry_configurator"), os.environ)
        if warning is not None:
            _log.warning(warning)

        if MlopsOtelInstrumentor._original_init is not None:
            return
        original = FastAPI.__init__
        MlopsOtelInstrumentor._original_init = original

        def __init__(app: FastAPI, *args: Any, **init_kwargs: Any) -> None:
            original(app, *args, **init_kwargs)
            _instrument_new_app(app)

        FastAPI.__init__ = __init__  # type: ignore[method-assign,assignment]  # hooks app creation

    def _uninstrument(self, **kwargs: Any) -> None:
        from fastapi import FastAPI

        if MlopsOtelInstrumentor._original_init is not None:
            FastAPI.__init__ = MlopsOtelInstrumentor._original_init  # type: ignore[method-assign]  # restore
            MlopsOtelInstrumentor._original_init = None


def missing_configurator_warning(configurators: Iterable[EntryPoint], environ: Any) -> str | None:
    """The warning to log when ``OTEL_*`` exporters are asked for but no configurator applies them."""
    if any(True for _ in configurators):
        return None
    asked = [f"{name}={environ[name]}" for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER")
             if environ.get(name, "").strip().lower() not in ("", "none")]
    what = ", ".join(asked) if asked else "OTEL_TRACES_EXPORTER"
    return (f"mlops-otel: no OpenTelemetry configurator is installed, so {what} has no effect and no spans "
            "are exported; install one with: pip install 'mlops-otel[zerocode]' (opentelemetry-distro)")


def http_instrumentation_from_env(app: Any, environ: Any) -> Literal["light", "otel", False]:
    """What zero-code passes as *instrument_http* for *app*: False when OTel's FastAPI instrumentor traces it.

    >>> from fastapi import FastAPI
    >>> http_instrumentation_from_env(FastAPI(), {})
    'light'
    >>> http_instrumentation_from_env(FastAPI(), {"MLOPS_OTEL_INSTRUMENT_HTTP": "otel"})
    'otel'
    """
    # opentelemetry-instrument's FastAPI instrumentor replaces fastapi.FastAPI by its subclass, whose
    # __init__ instruments the app after ours ran; an app it already instrumented carries the flag.
    if type(app).__name__ == "_InstrumentedFastAPI" or getattr(app, "_is_instrumented_by_opentelemetry", False):
        return False
    value = environ.get("MLOPS_OTEL_INSTRUMENT_HTTP", "").strip().lower() or "light"
    if value not in _HTTP_CHOICES:
        _log.warning("mlops-otel: MLOPS_OTEL_INSTRUMENT_HTTP must be one of %s, got %r: using light",
                     ", ".join(_HTTP_CHOICES), value)
        return "light"
    return _HTTP_CHOICES[value]


def _instrument_new_app(app: Any) -> None:
    from ._runtime import Runtime
    from .fastapi import instrument_app

    try:
        path = os.environ.get("MLOPS_OTEL_METRICS_PATH", "/metrics")
        token = os.environ.get("MLOPS_OTEL_MANAGEMENT_TOKEN") or None
        instrument_app(
            app,
            runtime_factory=Runtime.from_env,
            metrics_path=path or None,
            instrument_http=http_instrumentation_from_env(app, os.environ),
            management=token is not None,
            management_token=token,
        )
    except Exception:  # zero-code must never stop the service from starting
        _log.exception("mlops-otel: could not instrument %r", app)
