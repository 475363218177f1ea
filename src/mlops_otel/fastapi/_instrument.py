"""``instrument_app`` / ``uninstrument_app`` for FastAPI services."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal, cast

import attrs
from fastapi import FastAPI
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._runtime import Runtime, configured_default, install_default, release_default
from ..stores import StateStore
from ..telemetry import Mode, default_telemetry
from ._middleware import HttpServerMiddleware

__all__ = ["get_runtime", "instrument_app", "uninstrument_app"]

_log = logging.getLogger("mlops_otel.fastapi")
_STATE_ATTR = "_mlops_otel"


@attrs.define(eq=False)
class _Instrumentation:
    """What instrument_app changed on one app, so uninstrument_app can undo it."""

    original_lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]
    metrics_route: Route | None
    management_routes: list[Any]
    http_instrumented: bool
    factory: Callable[[], tuple[Runtime, bool]]
    install_default: bool
    runtime: Runtime | None = None


class _MetricsEndpoint:
    """ASGI app serving the exposition of whatever runtime the app currently runs."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inst: _Instrumentation | None = getattr(self._app.state, _STATE_ATTR, None)
        telemetry = inst.runtime.telemetry if inst is not None and inst.runtime is not None else default_telemetry()
        await telemetry.metrics_app()(scope, receive, send)


def get_runtime(app: FastAPI) -> Runtime:
    """Return the :class:`~mlops_otel.Runtime` of an instrumented, started *app*."""
    inst: _Instrumentation | None = getattr(app.state, _STATE_ATTR, None)
    if inst is None:
        raise RuntimeError("app is not instrumented: call mlops_otel.fastapi.instrument_app(app) first")
    if inst.runtime is None:
        raise RuntimeError("app has not started: the mlops-otel runtime is created in the app's lifespan")
    return inst.runtime


def instrument_app(
    app: FastAPI,
    *,
    runtime: Runtime | None = None,
    runtime_factory: Callable[[], Runtime] | None = None,
    store: StateStore | str | None = None,
    store_prefix: str = "mlops",
    meter_provider: otel_metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    mode: Mode = "aggregate",
    max_label_values: int = 100,
    otlp: bool = False,
    metrics_path: str | None = "/metrics",
    instrument_http: bool | Literal["otel", "light"] = True,
    excluded_urls: str | None = None,
    management: bool = False,
    management_token: str | None = None,
    management_prefix: str = "/mlops",
    install_as_default: bool = True,
) -> None:
    """Instrument *app*: HTTP spans and metrics, ``/metrics``, and the mlops-otel runtime.

    The runtime (telemetry, store, registry, A/B manager, drift monitor) is
    created when the app starts and closed when it stops, in the app's
    lifespan; reach it with :func:`get_runtime` or ``app.state.mlops``. Pass
    *runtime* to use one you own (it is then not closed), or *runtime_factory*
    to build one at start-up (e.g. ``Runtime.from_env``); otherwise it is built
    from the keyword arguments here. With
    *install_as_default* the seed-style module API records into it too.
    With *management*, the management API is mounted under
    *management_prefix*; its write endpoints need ``Authorization: Bearer
    <management_token>`` and are disabled when no token is configured.
    *instrument_http*: ``True``/``"otel"`` installs the OTel FastAPI instrumentation,
    ``"light"`` mlops-otel's :class:`HttpServerMiddleware` (the stable HTTP conventions' span and
    metrics at a fraction of the cost; docs/performance-analysis.md), ``False`` neither.
    Calling it again on an instrumented app does nothing.
    """
    if getattr(app.state, _STATE_ATTR, None) is not None:
        _log.debug("instrument_app: %r is already instrumented", app)
        return
    if metrics_path is not None and not metrics_path.startswith("/"):
        raise ValueError(f"metrics_path must start with '/', got {metrics_path!r}")

    explicit = runtime is not None or runtime_factory is not None or store is not None

    def factory() -> tuple[Runtime, bool]:
        """The runtime to run, and whether this app owns (and so closes) it."""
        if runtime is not None:
            return runtime, False
        if runtime_factory is not None:
            return runtime_factory(), True
        configured = None if explicit else configured_default()
        if configured is not None:  # the application called mlops_otel.configure(): use that
            return configured, False
        return Runtime.create(
            store=store, store_prefix=store_prefix, meter_provider=meter_provider,
            tracer_provider=tracer_provider, mode=mode, max_label_values=max_label_values, otlp=otlp,
        ), True

    http = False
    if instrument_http == "light":  # mlops-otel's lean HTTP middleware (#16), instead of the OTel ASGI one
        app.add_middleware(HttpServerMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider,
                           excluded_urls=excluded_urls)
    elif instrument_http and not getattr(app, "_is_instrumented_by_opentelemetry", False):
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider, excluded_urls=excluded_urls
        )
        http = True

    route = None
    if metrics_path is not None:
        # A Route, not a Mount: serves exactly ``/metrics`` without a redirect to ``/metrics/``.
        route = Route(metrics_path, endpoint=_MetricsEndpoint(app), methods=["GET"], name="mlops_otel_metrics",
                      include_in_schema=False)
        app.router.routes.append(route)

    management_routes: list[Any] = []
    if management:
        from ._management import management_router

        before = list(app.router.routes)
        app.include_router(management_router(lambda: get_runtime(app), token=management_token),
                           prefix=management_prefix)
        management_routes = [r for r in app.router.routes if r not in before]

    inst = _Instrumentation(
        original_lifespan=app.router.lifespan_context, metrics_route=route, management_routes=management_routes,
        http_instrumented=http, factory=factory, install_default=install_as_default,
    )

    @contextlib.asynccontextmanager
    async def lifespan(inner_app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        rt, owned = inst.factory()
        inst.runtime = rt
        app.state.mlops = rt
        # A runtime from mlops_otel.configure() already is the default and stays so.
        manage_default = inst.install_default and rt is not configured_default()
        if manage_default:
            install_default(rt)
        try:
            async with inst.original_lifespan(inner_app) as state:
                yield state
        finally:
            inst.runtime = None
            app.state.mlops = None
            if manage_default:
                release_default(rt, close=owned)
            elif owned:
                rt.close()

    app.router.lifespan_context = cast("Any", lifespan)
    setattr(app.state, _STATE_ATTR, inst)


def uninstrument_app(app: FastAPI) -> None:
    """Undo :func:`instrument_app` (routes, lifespan, HTTP instrumentation). Idempotent."""
    inst: _Instrumentation | None = getattr(app.state, _STATE_ATTR, None)
    if inst is None:
        return
    if inst.http_instrumented:
        FastAPIInstrumentor.uninstrument_app(app)
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not cast("Any", HttpServerMiddleware)]
    removed = [r for r in (inst.metrics_route, *inst.management_routes) if r is not None]
    app.router.routes[:] = [r for r in app.router.routes if r not in removed]
    app.router.lifespan_context = inst.original_lifespan
    setattr(app.state, _STATE_ATTR, None)
    app.middleware_stack = None
