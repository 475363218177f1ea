"""``instrument_app`` / ``uninstrument_app`` for FastAPI services."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import types
import warnings
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
from ..settings import Settings
from ..stores import StateStore
from ..telemetry import Mode, default_telemetry
from ..validation import InvalidValueError
from ._middleware import HttpServerConfig, HttpServerMiddleware

__all__ = ["HttpInstrumentation", "SettingsConflictError", "get_runtime", "instrument_app", "uninstrument_app"]

#: The choices of ``instrument_app(..., instrument_http=...)``: mlops-otel's lean middleware
#: (the default), OTel's FastAPI/ASGI instrumentation, or no HTTP instrumentation.
HttpInstrumentation = Literal["light", "otel"] | bool
_HTTP_CHOICES = ("light", "otel", False)

_log = logging.getLogger("mlops_otel.fastapi")
_STATE_ATTR = "_mlops_otel"


@attrs.define(eq=False)
class _Instrumentation:
    """What instrument_app changed on one app, so uninstrument_app can undo it."""

    original_lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]
    metrics_route: Route | None
    management_routes: list[Any]
    http_instrumented: bool
    http_layer: _LightLayer | None
    factory: Callable[[], tuple[Runtime, bool]]
    install_default: bool
    runtime: Runtime | None = None
    local_docs: Any = None


@attrs.define(eq=False)
class _LightLayer:
    """The outermost HttpServerMiddleware wrapped around *app*'s middleware stack, and how to undo it."""

    build: Callable[[], Any]  # the build_middleware_stack it wraps
    own_attribute: Any  # the instance attribute it replaced (None: the class's method)
    native: dict[str, Any] = attrs.field(factory=dict)  # FastAPI's native telemetry settings it turned off
    wrapper: Any = None  # the bound build_middleware_stack it installed
    active: bool = True

    @classmethod
    def install(cls, app: FastAPI, tracer_provider: trace.TracerProvider | None,
                meter_provider: otel_metrics.MeterProvider | None, config: HttpServerConfig) -> _LightLayer:
        # Like the OTel FastAPI instrumentation, outside everything (ServerErrorMiddleware included), so the
        # span covers the middleware added later and the 500 answer of an unhandled exception.
        layer = cls(build=app.build_middleware_stack, own_attribute=vars(app).get("build_middleware_stack"))

        def build_middleware_stack(self: FastAPI) -> Any:
            stack = layer.build()
            if not layer.active or _wrapped_by_otel(self, layer.wrapper):
                return stack
            return HttpServerMiddleware(stack, tracer_provider=tracer_provider, meter_provider=meter_provider,
                                        config=config)

        layer.wrapper = types.MethodType(build_middleware_stack, app)
        app.build_middleware_stack = layer.wrapper  # type: ignore[method-assign]
        app.middleware_stack = None  # rebuilt, with the layer, on the next call
        # FastAPI versions with native OpenTelemetry telemetry trace and meter HTTP requests themselves
        # once a global provider is set, and stand down only for OTel's ASGI middleware: one layer, not two.
        native = _native_telemetry_config(app)
        if native is not None:
            for key in _NATIVE_HTTP_SIGNALS:
                if native.get(key):
                    layer.native[key] = native[key]
                    native[key] = False
        elif importlib.util.find_spec("fastapi.telemetry") is not None:
            # This FastAPI has native telemetry, but not where we turn it off (a private attribute): say so
            # instead of silently emitting every HTTP span and duration sample twice under a global provider.
            _log.warning(
                "instrument_app: could not turn off FastAPI's own HTTP telemetry for %r; with a global OTel "
                "provider its HTTP spans and metrics come in addition to mlops-otel's. Create the app with "
                "FastAPI(telemetry={'tracing': False, 'metrics': False}), or pass instrument_http=False",
                app,
            )
        return layer

    def remove(self, app: FastAPI) -> None:
        self.active = False  # a wrapper installed after ours keeps calling ours: it becomes a pass-through
        if vars(app).get("build_middleware_stack") is self.wrapper:  # else someone wrapped ours: keep theirs
            if self.own_attribute is not None:
                app.build_middleware_stack = self.own_attribute  # type: ignore[method-assign]
            else:
                del app.build_middleware_stack
        native = _native_telemetry_config(app)
        if native is not None:
            native.update(self.native)


def _wrapped_by_otel(app: FastAPI, ours: Any) -> bool:
    """Whether OTel's FastAPI instrumentation was installed on *app* after our layer (its wrapper calls ours).

    Then ours stands down, so that the layer asked for last is the one in place: otherwise OTel finds no
    ServerErrorMiddleware below it, logs an error and skips itself (its hooks and options ignored).
    Once OTel's is removed again, ``build_middleware_stack`` is ours again and so is the layer.
    """
    return bool(getattr(app, "_is_instrumented_by_opentelemetry", False)) \
        and vars(app).get("build_middleware_stack") is not ours


#: The HTTP signals of FastAPI's native telemetry the light layer replaces (its logs stay as configured).
_NATIVE_HTTP_SIGNALS = ("tracing", "metrics")


def _native_telemetry_config(app: FastAPI) -> dict[str, Any] | None:
    """The mutable settings of FastAPI's own telemetry (``FastAPI(telemetry=...)``), None before it had one."""
    native = getattr(app, "_native_telemetry", None)
    config = getattr(native, "config", None)
    return config if isinstance(config, dict) else None


def _http_choice(value: object) -> Literal["light", "otel"] | None:
    """The HTTP layer *value* selects (None: none); ``True`` is the deprecated spelling of ``"otel"``."""
    if value is True:
        warnings.warn(
            "instrument_app(instrument_http=True) keeps meaning the OTel FastAPI instrumentation "
            "(instrument_http=\"otel\"), which is no longer the default: pass instrument_http=\"otel\" to keep it, "
            "or leave the argument out for mlops-otel's lighter middleware (instrument_http=\"light\", the default; "
            "its metric is http.server.request.duration in seconds, see the CHANGELOG)",
            DeprecationWarning, stacklevel=3,
        )
        return "otel"
    if value not in _HTTP_CHOICES:
        raise InvalidValueError("instrument_http", '"light" (the default), "otel" or False', value)
    return value or None  # type: ignore[return-value]


def _already_traced(app: FastAPI) -> bool:
    """Whether *app* already has an OTel FastAPI instrumentation or an HttpServerMiddleware."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return True
    return any(m.cls is cast("Any", HttpServerMiddleware) for m in app.user_middleware)


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


class SettingsConflictError(ValueError):
    """``instrument_app`` was given settings that differ from the runtime already installed by ``configure()``."""


def _describe(options: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _conflicts(
    installed: Runtime, explicit: Mapping[str, object], whole: Settings | None, store: StateStore | None,
    meter_provider: object, tracer_provider: object,
) -> tuple[dict[str, object], dict[str, object]]:
    """The (asked, installed) values that differ between what the caller passed and *installed*."""
    asked: dict[str, object] = {}
    have: dict[str, object] = {}
    current = installed.settings
    if whole is not None and whole != current:
        for field in attrs.fields(Settings):
            if getattr(whole, field.name) != getattr(current, field.name):
                asked[field.name], have[field.name] = getattr(whole, field.name), getattr(current, field.name)
    for name, value in explicit.items():
        installed_value = current.store.prefix if name == "store_prefix" else (
            current.store.url if name == "store" else getattr(current, name))
        if name == "store" and current.store.is_memory and Settings(store=cast("str", value)).store.is_memory:
            continue
        if value != installed_value:
            asked[name], have[name] = value, installed_value
    if store is not None and store is not installed.store:
        asked["store"], have["store"] = store, installed.store
    tel = installed.telemetry
    if meter_provider is not None and meter_provider is not tel.meter_provider:
        asked["meter_provider"], have["meter_provider"] = meter_provider, tel.meter_provider
    if tracer_provider is not None and tracer_provider is not tel.tracer_provider:
        asked["tracer_provider"], have["tracer_provider"] = tracer_provider, tel.tracer_provider
    return asked, have


def instrument_app(
    app: FastAPI,
    *,
    runtime: Runtime | None = None,
    runtime_factory: Callable[[], Runtime] | None = None,
    settings: Settings | None = None,
    store: StateStore | str | None = None,
    store_prefix: str | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    mode: Mode | None = None,
    max_label_values: int | None = None,
    otlp: bool | None = None,
    metrics_path: str | None = "/metrics",
    instrument_http: HttpInstrumentation = "light",
    excluded_urls: str | None = None,
    management: bool = False,
    management_token: str | None = None,
    management_prefix: str = "/mlops",
    install_as_default: bool = True,
    local_docs: bool = True,
) -> None:
    """Instrument *app*: HTTP spans and metrics, ``/metrics``, and the mlops-otel runtime.

    The runtime (telemetry, store, registry, A/B manager, drift monitor) comes from,
    in this order: *runtime* (one you own: it is not closed), *runtime_factory*
    (called at start-up, e.g. ``Runtime.from_env``), *settings* and/or the
    keyword shortcuts (*store*, *store_prefix*, *mode*, *max_label_values*,
    *otlp*, as in :meth:`~mlops_otel.Runtime.create`), else the runtime installed by
    :func:`mlops_otel.configure`, else ``Settings()``. Give at most one source.
    Explicit settings are never ignored: when :func:`~mlops_otel.configure` installed
    a runtime and this app is to use the default (*install_as_default*), settings
    that differ from the installed ones raise :class:`SettingsConflictError`
    naming both; pass ``install_as_default=False`` to run a separate runtime.

    The runtime is created when the app starts and closed when it stops, in the
    app's lifespan; reach it with :func:`get_runtime` or ``app.state.mlops``.
    With *install_as_default* the seed-style module API records into it too.
    With *management*, the management API is mounted under
    *management_prefix*; its write endpoints need ``Authorization: Bearer
    <management_token>`` and are disabled when no token is configured.
    With *local_docs*, ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from
    the package instead of a CDN (see :func:`mlops_otel.ui.serve_docs_locally`).
    *instrument_http*: ``"light"`` (the default) wraps the app in mlops-otel's
    :class:`~mlops_otel.fastapi.HttpServerMiddleware`: OTel's stable HTTP conventions
    (SERVER span ``{method} {route}``, ``http.server.request.duration`` in seconds,
    ``http.server.active_requests``) at a fraction of the OTel ASGI middleware's cost
    (docs/performance-analysis.md). ``"otel"`` installs the OTel FastAPI instrumentation
    instead (the default before #16; in its default mode it emits the older
    ``http.server.duration`` in milliseconds); ``True`` still means ``"otel"`` but is
    deprecated; ``False`` installs neither. *excluded_urls* (comma-separated regexes) applies
    to both, else ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``/``OTEL_PYTHON_EXCLUDED_URLS``, read
    by this call. No second HTTP layer is added to an app the OTel FastAPI instrumentation
    already traces. Calling it again on an instrumented app does nothing.
    """
    if getattr(app.state, _STATE_ATTR, None) is not None:
        _log.debug("instrument_app: %r is already instrumented", app)
        return
    http_choice = _http_choice(instrument_http)
    if metrics_path is not None and not metrics_path.startswith("/"):
        raise InvalidValueError("metrics_path", "None or a path starting with '/'", metrics_path)
    explicit: dict[str, object] = {k: v for k, v in (
        ("store", store if isinstance(store, str) else None), ("store_prefix", store_prefix), ("mode", mode),
        ("max_label_values", max_label_values), ("otlp", otlp)) if v is not None}
    given_store = store if store is not None and not isinstance(store, str) else None
    configured_by_args = settings is not None or bool(explicit) or given_store is not None
    sources = [name for name, given in (("runtime", runtime is not None),
                                        ("runtime_factory", runtime_factory is not None),
                                        ("settings", configured_by_args)) if given]
    if len(sources) > 1:
        raise ValueError(f"instrument_app takes one source of its runtime, got {' and '.join(sources)}: "
                         "settings and keywords such as store= or mode= build a runtime, runtime= and "
                         "runtime_factory= supply one")
    wanted = (settings if settings is not None else Settings()).with_options(**explicit)

    def installed_default() -> Runtime | None:
        """The configure()d runtime this app should use, or None; raises on a conflict."""
        installed = configured_default()
        if installed is None or not install_as_default:
            return None
        asked, have = _conflicts(installed, explicit, settings, given_store, meter_provider, tracer_provider)
        if asked:
            raise SettingsConflictError(
                f"instrument_app({_describe(asked)}) conflicts with the runtime installed by "
                f"mlops_otel.configure() ({_describe(have)}); pass the same settings, runtime=mlops_otel."
                "default_runtime() to use the installed one, or install_as_default=False to run a separate runtime"
            )
        return installed

    if runtime is None and runtime_factory is None:
        installed_default()  # fail at the call when the conflict is already visible

    def factory() -> tuple[Runtime, bool]:
        """The runtime to run, and whether this app owns (and so closes) it."""
        if runtime is not None:
            return runtime, False
        if runtime_factory is not None:
            return runtime_factory(), True
        installed = installed_default()
        if installed is not None:  # the application called mlops_otel.configure(): use that
            return installed, False
        return Runtime.create(wanted, store=given_store, meter_provider=meter_provider,
                              tracer_provider=tracer_provider), True

    http = False
    layer = None
    if http_choice is not None and _already_traced(app):
        _log.debug("instrument_app: %r already has an HTTP instrumentation; adding none", app)
    elif http_choice == "light":  # mlops-otel's lean HTTP middleware (#16), instead of the OTel ASGI one
        layer = _LightLayer.install(app, tracer_provider, meter_provider, HttpServerConfig.from_env(excluded_urls))
    elif http_choice == "otel":
        config = HttpServerConfig.from_env(excluded_urls)  # the variables now, not at the instrumentation's import
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider,
            excluded_urls=",".join(config.excluded_patterns),
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

    docs = None
    if local_docs:
        from ..ui import serve_docs_locally

        try:
            docs = serve_docs_locally(app)
        except ImportError as exc:  # fastapi-offline missing: keep FastAPI's CDN pages
            _log.warning("instrument_app: /docs keeps loading its assets from a CDN: %s", exc)

    inst = _Instrumentation(
        original_lifespan=app.router.lifespan_context, metrics_route=route, management_routes=management_routes,
        http_instrumented=http, http_layer=layer, factory=factory, install_default=install_as_default, local_docs=docs,
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
    if inst.http_layer is not None:
        inst.http_layer.remove(app)
    removed = [r for r in (inst.metrics_route, *inst.management_routes) if r is not None]
    app.router.routes[:] = [r for r in app.router.routes if r not in removed]
    if inst.local_docs is not None:
        inst.local_docs.undo(app)
    app.router.lifespan_context = inst.original_lifespan
    setattr(app.state, _STATE_ATTR, None)
    app.middleware_stack = None
