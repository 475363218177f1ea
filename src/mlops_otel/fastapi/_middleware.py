"""A lean ASGI middleware for HTTP server spans and metrics (OTel's stable HTTP semantic conventions).

The OTel ASGI middleware that ``FastAPIInstrumentor`` installs costs ~0.1 ms per request even
with no OTel SDK configured: it matches the route before the request (a second routing pass),
builds the full attribute set, parses and redacts the URL, wraps ``receive``/``send`` in
internal spans ("http send"/"http receive") and records four histograms. In the end-to-end
profile of the example service it takes about three times the CPU of all of mlops-otel's own
request work (docs/performance-analysis.md).

:class:`HttpServerMiddleware` emits what the stable conventions require, and only that:

- one SERVER span per request, named ``{method} {http.route}`` (``{method}`` until routing
  has matched; the route template, never the raw path), with ``http.request.method``,
  ``url.scheme``, ``url.path``, ``url.query``, ``server.address``/``server.port``,
  ``client.address``/``client.port``, ``network.protocol.version``, ``user_agent.original``,
  ``http.route`` and ``http.response.status_code``; status ERROR and ``error.type`` for
  exceptions and 5xx answers; the parent extracted with the global propagator;
- the ``http.server.request.duration`` histogram (s, the conventions' buckets) and the
  ``http.server.active_requests`` up-down counter, on the given or global ``MeterProvider``.

The attributes beyond the sampler's inputs are only built for a recording span, the context is
only extracted when a propagation header is present and only attached for a valid span, and
there are no per-message internal spans. Telemetry failures are logged, never raised into the
request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import ExcludeList, get_excluded_urls, parse_excluded_urls

__all__ = ["HttpServerMiddleware"]

_log = logging.getLogger("mlops_otel.fastapi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Stable HTTP semantic conventions (opentelemetry.semconv names, spelled out: no import-time cost).
_METHOD = "http.request.method"
_METHOD_ORIGINAL = "http.request.method_original"
_STATUS = "http.response.status_code"
_ROUTE = "http.route"
_SCHEME = "url.scheme"
_PATH = "url.path"
_QUERY = "url.query"
_SERVER_ADDRESS = "server.address"
_SERVER_PORT = "server.port"
_CLIENT_ADDRESS = "client.address"
_CLIENT_PORT = "client.port"
_PROTOCOL_VERSION = "network.protocol.version"
_USER_AGENT = "user_agent.original"
_ERROR_TYPE = "error.type"
_SCOPE = "mlops_otel.fastapi"
_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
#: The conventions' advised buckets for http.server.request.duration (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class HttpServerMiddleware:
    """ASGI middleware: one SERVER span and the request-duration metric per HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        excluded_urls: str | None = None,
    ) -> None:
        self.app = app
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = otel_metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._active = meter.create_up_down_counter(
            "http.server.active_requests", unit="{request}", description="Number of active HTTP server requests.",
        )
        # Same configuration as the OTel FastAPI instrumentation: the argument, else
        # OTEL_PYTHON_FASTAPI_EXCLUDED_URLS / OTEL_PYTHON_EXCLUDED_URLS (read now, not at import).
        self._excluded: ExcludeList | None = (
            parse_excluded_urls(excluded_urls) if excluded_urls is not None else get_excluded_urls("FASTAPI")
        )
        self._textmap: object = None
        self._fields: frozenset[bytes] = frozenset()

    def _parent(self, scope: Scope) -> otel_context.Context | None:
        """The context extracted from the request's propagation headers; None if it carries none."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:  # cache the header names of the current propagator
            self._fields = frozenset(f.lower().encode("latin-1") for f in textmap.fields)
            self._textmap = textmap
        fields = self._fields
        headers = scope.get("headers") or ()
        if not any(name in fields for name, _ in headers):
            return None
        carrier: dict[str, str] = {}
        for name, value in headers:
            key = name.decode("latin-1")
            carrier[key] = f"{carrier[key]},{value.decode('latin-1')}" if key in carrier else value.decode("latin-1")
        return propagate.extract(carrier)

    def _excluded_url(self, scope: Scope) -> bool:
        if self._excluded is None:
            return False
        server = scope.get("server") or ("", None)
        url = f"{scope.get('scheme', 'http')}://{server[0]}{'' if server[1] is None else f':{server[1]}'}"
        return self._excluded.url_disabled(url + scope.get("root_path", "") + scope.get("path", ""))

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or self._excluded_url(scope):
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        span: trace.Span | None = None
        token: object | None = None
        try:
            method = scope["method"]
            known = method if method in _KNOWN_METHODS else "_OTHER"
            scheme = scope.get("scheme", "http")
            parent = self._parent(scope)
            span = self._tracer.start_span(
                known if known != "_OTHER" else "HTTP", context=parent, kind=SpanKind.SERVER,
                attributes={_METHOD: known, _SCHEME: scheme, _PATH: scope.get("path", "")},
            )
            ctx = span.get_span_context()
            token = otel_context.attach(trace.set_span_in_context(span, parent)) if ctx.is_valid else None
            if span.is_recording():
                _request_attributes(span, scope, method, known)
            active = {_METHOD: known, _SCHEME: scheme}
            self._active.add(1, active)
        except Exception:  # telemetry never breaks the request
            _log.debug("HTTP server span could not start", exc_info=True)
            _undo(span, token)
            await self.app(scope, receive, send)
            return

        status = 0

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                self._finish(scope, span, active, known, scheme, status, error, perf_counter() - start)
            except Exception:
                _log.debug("HTTP server span could not end", exc_info=True)
            finally:
                _undo(span, token)

    def _finish(self, scope: Scope, span: trace.Span, active: dict[str, str], method: str, scheme: str,
                status: int, error: BaseException | None, seconds: float) -> None:
        if status == 0 and error is not None:
            status = 500  # what the server answers for an unhandled exception
        route = getattr(scope.get("route"), "path", None)
        attributes: dict[str, str | int] = {_METHOD: method, _SCHEME: scheme}
        version = scope.get("http_version")
        if version:
            attributes[_PROTOCOL_VERSION] = version
        if status:
            attributes[_STATUS] = status
        if isinstance(route, str):
            attributes[_ROUTE] = route
        error_type = type(error).__qualname__ if error is not None else str(status) if status >= 500 else None
        if error_type is not None:
            attributes[_ERROR_TYPE] = error_type
        self._duration.record(seconds, attributes)
        self._active.add(-1, active)
        if span.is_recording():
            if isinstance(route, str):
                span.update_name(f"{method if method != '_OTHER' else 'HTTP'} {route}")
                span.set_attribute(_ROUTE, route)
            if status:
                span.set_attribute(_STATUS, status)
            if error is not None:
                span.record_exception(error)
            if error_type is not None:
                span.set_attribute(_ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, error_type))


def _undo(span: trace.Span | None, token: object | None) -> None:
    """End *span* (a no-op if already ended) and detach *token*; never raises."""
    try:
        if span is not None:
            span.end()
    except Exception:
        _log.debug("HTTP server span could not end", exc_info=True)
    if token is not None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            _log.debug("HTTP server context could not be detached", exc_info=True)


def _request_attributes(span: trace.Span, scope: Scope, method: str, known: str) -> None:
    """The attributes a recording span gets beyond the sampler's inputs."""
    if known == "_OTHER":
        span.set_attribute(_METHOD_ORIGINAL, method)
    query = scope.get("query_string")
    if query:
        span.set_attribute(_QUERY, query.decode("latin-1"))
    version = scope.get("http_version")
    if version:
        span.set_attribute(_PROTOCOL_VERSION, version)
    host = None
    user_agent = None
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"user-agent":
            user_agent = value.decode("latin-1")
    server = scope.get("server")
    if host:
        address, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not address or not port.isdigit():
            address, port = host, ""
        span.set_attribute(_SERVER_ADDRESS, address)
        if port:
            span.set_attribute(_SERVER_PORT, int(port))
    elif server:
        span.set_attribute(_SERVER_ADDRESS, str(server[0]))
        if server[1] is not None:
            span.set_attribute(_SERVER_PORT, int(server[1]))
    client = scope.get("client")
    if client:
        span.set_attribute(_CLIENT_ADDRESS, str(client[0]))
        span.set_attribute(_CLIENT_PORT, int(client[1]))
    if user_agent:
        span.set_attribute(_USER_AGENT, user_agent)
