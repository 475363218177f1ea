"""A lean ASGI middleware for HTTP server spans and metrics (OTel's stable HTTP semantic conventions).

It is the default HTTP layer of :func:`~mlops_otel.fastapi.instrument_app` (``instrument_http="light"``).
The OTel ASGI middleware that ``FastAPIInstrumentor`` installs costs ~0.1 ms per request even
with no OTel SDK configured: it matches the route before the request (a second routing pass),
builds the full attribute set, parses and redacts the URL, wraps ``receive``/``send`` in
internal spans ("http send"/"http receive") and records four histograms. In the end-to-end
profile of the example service it takes about three times the CPU of all of mlops-otel's own
request work (docs/performance-analysis.md).

:class:`HttpServerMiddleware` emits what the stable conventions require, and only that:

- one SERVER span per request, named ``{method} {http.route}`` (``{method}`` until routing
  has matched; the route template, never the raw path, prefixed by the paths of the mounts it
  went through), with ``http.request.method``, ``url.scheme``, ``url.path``, ``url.query``,
  ``server.address``/``server.port``, ``client.address``/``client.port``,
  ``network.protocol.version``, ``user_agent.original``, ``http.route`` and
  ``http.response.status_code``; status ERROR and ``error.type`` for exceptions (recorded on
  the span, then re-raised) and 5xx answers; the parent extracted with the global propagator
  (W3C ``traceparent``/``baggage`` by default); the headers named by
  ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``/``_RESPONSE`` (sanitized by
  ``..._SANITIZE_FIELDS``) and the global *response* propagator's headers, as OTel's does;
- the ``http.server.request.duration`` histogram (s, the conventions' buckets) and the
  ``http.server.active_requests`` up-down counter, on the given or global ``MeterProvider``.

The attributes beyond the sampler's inputs are only built for a recording span, the context is
only extracted when a propagation header is present and only attached for a valid span, and
there are no per-message internal spans. Every name comes from :mod:`mlops_otel.semconv`.
Configuration (excluded URLs, captured headers) is resolved by :class:`HttpServerConfig` when
the app is instrumented, never at import. Telemetry failures are logged, never raised into the
request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from time import perf_counter
from typing import Any

import attrs
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    ExcludeList,
    SanitizeValue,
    normalise_request_header_name,
    normalise_response_header_name,
)

# Newer than the oldest opentelemetry-instrumentation(-util-http) the fastapi extra allows (0.46b0).
try:
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
except ImportError:  # pragma: no cover - older opentelemetry-instrumentation: no HTTP suppression key
    def is_http_instrumentation_enabled() -> bool:
        return True
try:
    from opentelemetry.util.http import PARAMS_TO_REDACT, redact_query_parameters
except ImportError:  # pragma: no cover - older opentelemetry-util-http: no query redaction there
    PARAMS_TO_REDACT = []

    def redact_query_parameters(url: str) -> str:
        return url

from .. import semconv
from .._version import __version__
from ..telemetry import tracer_cannot_record

__all__ = ["DURATION_BUCKETS", "HttpServerConfig", "HttpServerMiddleware"]

_log = logging.getLogger("mlops_otel.fastapi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_METHOD = semconv.ATTR_HTTP_REQUEST_METHOD
_METHOD_ORIGINAL = semconv.ATTR_HTTP_REQUEST_METHOD_ORIGINAL
_STATUS = semconv.ATTR_HTTP_RESPONSE_STATUS_CODE
_ROUTE = semconv.ATTR_HTTP_ROUTE
_SCHEME = semconv.ATTR_URL_SCHEME
_PATH = semconv.ATTR_URL_PATH
_QUERY = semconv.ATTR_URL_QUERY
_SERVER_ADDRESS = semconv.ATTR_SERVER_ADDRESS
_SERVER_PORT = semconv.ATTR_SERVER_PORT
_CLIENT_ADDRESS = semconv.ATTR_CLIENT_ADDRESS
_CLIENT_PORT = semconv.ATTR_CLIENT_PORT
_PROTOCOL_VERSION = semconv.ATTR_NETWORK_PROTOCOL_VERSION
_USER_AGENT = semconv.ATTR_USER_AGENT_ORIGINAL
_ERROR_TYPE = semconv.ATTR_OTEL_ERROR_TYPE
_OTHER = semconv.HTTP_OTHER_METHOD
_SCOPE = "mlops_otel.fastapi"
#: Set in the ASGI scope by the outermost HttpServerMiddleware: inner ones (mounted apps) stand down.
_SCOPE_KEY = "mlops_otel.http_server"
#: The conventions' advised buckets for http.server.request.duration (seconds).
DURATION_BUCKETS = semconv.HTTP_SERVER_REQUEST_DURATION.buckets
#: OTel's switch to keep every method as sent instead of folding unknown ones into ``_OTHER``.
_CAPTURE_ALL_METHODS = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"


@attrs.frozen
class HttpServerConfig:
    """What the middleware reads from the environment, resolved once when the app is instrumented.

    Same variables as the OTel FastAPI/ASGI instrumentation: ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``
    (else ``OTEL_PYTHON_EXCLUDED_URLS``), ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``,
    ``..._SERVER_RESPONSE``, ``..._SANITIZE_FIELDS`` and
    ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS``.
    """

    excluded_patterns: tuple[str, ...] = ()
    request_headers: tuple[str, ...] = ()
    response_headers: tuple[str, ...] = ()
    sanitize: tuple[str, ...] = ()
    capture_all_methods: bool = False

    @classmethod
    def from_env(cls, excluded_urls: str | None = None, environ: Mapping[str, str] | None = None) -> HttpServerConfig:
        """The configuration now: *excluded_urls* (comma-separated regexes) wins over the variables."""
        env = os.environ if environ is None else environ
        if excluded_urls is None:
            excluded_urls = (env.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS")  # empty falls through, as OTel's `or`
                             or env.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
        patterns = _split(excluded_urls)
        return cls(
            excluded_patterns=tuple(patterns),
            request_headers=tuple(_split(env.get(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST, ""))),
            response_headers=tuple(_split(env.get(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE, ""))),
            sanitize=tuple(_split(env.get(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS, ""))),
            capture_all_methods=bool(env.get(_CAPTURE_ALL_METHODS)),
        )


def _split(value: str) -> list[str]:
    """A comma-separated list, as the OTel instrumentations read it (empty items dropped)."""
    return [item.strip() for item in value.split(",") if item.strip()]


class _ResponseHeaderSetter(Setter[Message]):
    """Adds a header to an ASGI ``http.response.start`` message (for the global response propagator)."""

    def set(self, carrier: Message, key: str, value: str) -> None:
        headers = carrier.get("headers")
        if headers is None:
            headers = carrier["headers"] = []
        elif not isinstance(headers, list):
            headers = carrier["headers"] = list(headers)
        headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))


_RESPONSE_SETTER = _ResponseHeaderSetter()


class HttpServerMiddleware:
    """ASGI middleware: one SERVER span and the request-duration metric per HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        config: HttpServerConfig | None = None,
    ) -> None:
        self.app = app
        # None: the global providers (their proxies follow a provider set later).
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider, schema_url=semconv.HTTP_SCHEMA_URL)
        meter = otel_metrics.get_meter(_SCOPE, __version__, meter_provider, schema_url=semconv.HTTP_SCHEMA_URL)
        duration = semconv.HTTP_SERVER_REQUEST_DURATION
        self._duration = meter.create_histogram(
            duration.name, unit=duration.unit, description=duration.description,
            explicit_bucket_boundaries_advisory=list(duration.buckets),
        )
        active = semconv.HTTP_SERVER_ACTIVE_REQUESTS
        self._active = meter.create_up_down_counter(active.name, unit=active.unit, description=active.description)
        self._config = config if config is not None else HttpServerConfig()
        self._excluded = ExcludeList(list(self._config.excluded_patterns)) if self._config.excluded_patterns else None
        self._captures = bool(self._config.request_headers or self._config.response_headers)
        self._sanitize = SanitizeValue(list(self._config.sanitize))
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
        """The OTel ASGI instrumentation's test: the regexes searched in ``scheme://host/path``."""
        if self._excluded is None:
            return False
        host = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), None)
        if host is None:
            server = scope.get("server") or ("0.0.0.0", 80)
            host = server[0] if server[1] in (None, 80) else f"{server[0]}:{server[1]}"
        return self._excluded.url_disabled(f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}")

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or _SCOPE_KEY in scope:  # not HTTP, or an outer layer of ours has it
            await self.app(scope, receive, send)
            return
        # An instrumented app mounted in an instrumented app: the outer layer's span and metrics cover the
        # request (with the full route), the inner one stands down (no SERVER span under a SERVER span, no
        # request counted twice). The same scope dict reaches the mounted app.
        scope[_SCOPE_KEY] = True
        start = perf_counter()
        span: trace.Span | None = None
        token: object | None = None
        try:
            # Inside the guard too (N3): everything that runs per request may fail without failing the request.
            skip = self._excluded_url(scope) or not is_http_instrumentation_enabled()
        except Exception:
            _log.debug("HTTP exclusion check failed", exc_info=True)
            skip = True
        if skip:
            await self.app(scope, receive, send)
            return
        try:
            method = scope["method"]
            known = method if method in semconv.HTTP_KNOWN_METHODS or self._config.capture_all_methods else _OTHER
            scheme = scope.get("scheme", "http")
            root_path = scope.get("root_path", "")
            parent = self._parent(scope)
            if (parent is None and tracer_cannot_record(self._tracer)
                    and not trace.get_current_span().get_span_context().is_valid):
                # No caller context to carry and a tracer that cannot record: no span at all (it would be
                # non-recording with an invalid context, and nothing would see it); the metrics still count.
                # (A valid current span, e.g. an outer layer's or one of a provider passed by hand, keeps the
                # span: its context is what the response propagator and the children must see.)
                span = trace.INVALID_SPAN
            else:
                span, parent = self._start_span(scope, parent, method, known, scheme)
                ctx = span.get_span_context()
                if ctx.is_valid:
                    token = otel_context.attach(trace.set_span_in_context(span, parent))
                elif parent is not None:  # no SDK and no caller span: the caller's baggage, as OTel's layer does
                    token = otel_context.attach(parent)
            recording = span.is_recording()
            active = {_METHOD: known, _SCHEME: scheme}
            responder = get_global_response_propagator()  # type: ignore[no-untyped-call]  # untyped upstream
            self._active.add(1, active)  # last: nothing after it in this block can fail and leave it up
        except Exception:  # telemetry never breaks the request
            _log.debug("HTTP server span could not start", exc_info=True)
            _undo(span, token)
            await self.app(scope, receive, send)
            return

        status = 0
        watched_send = send
        if responder is not None or (recording and self._config.response_headers):
            async def watched_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    self._on_response_start(span, message, responder, recording)
                await send(message)
        else:
            async def watched_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, watched_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                self._finish(scope, root_path, span, active, known, scheme, status, error, perf_counter() - start)
            except Exception:
                _log.debug("HTTP server span could not end", exc_info=True)
            finally:
                _undo(span, token)

    def _start_span(self, scope: Scope, parent: otel_context.Context | None, method: str, known: str,
                    scheme: str) -> tuple[trace.Span, otel_context.Context | None]:
        """The SERVER span (INTERNAL under a local span in progress, then with no parent context), with
        the request's attributes, and the parent context it was started in."""
        kind = SpanKind.SERVER
        # No remote parent but a local span in progress (e.g. the app called in-process): an INTERNAL
        # child of it, as OTel's _start_internal_or_server_span does.
        if ((parent is None or not trace.get_current_span(parent).get_span_context().is_valid)
                and trace.get_current_span().is_recording()):
            kind, parent = SpanKind.INTERNAL, None
        span = self._tracer.start_span(
            known if known != _OTHER else "HTTP", context=parent, kind=kind,
            attributes={_METHOD: known, _SCHEME: scheme, _PATH: scope.get("path", "")},
        )
        if span.is_recording():
            _request_attributes(span, scope, method, known)
            if self._config.request_headers:
                span.set_attributes(self._captured(scope, self._config.request_headers,
                                                   normalise_request_header_name))
        return span, parent

    def _captured(self, message: Message, names: tuple[str, ...],
                  normalise: Callable[[str], str]) -> dict[str, list[str]]:
        headers: dict[str, list[str]] = {}
        for name, value in message.get("headers") or ():
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        return self._sanitize.sanitize_header_values(headers, list(names), normalise)

    def _on_response_start(self, span: trace.Span, message: Message, responder: Any, recording: bool) -> None:
        try:
            if recording and self._config.response_headers:
                span.set_attributes(self._captured(message, self._config.response_headers,
                                                   normalise_response_header_name))
            if responder is not None:
                responder.inject(message, context=trace.set_span_in_context(span, otel_context.Context()),
                                 setter=_RESPONSE_SETTER)
        except Exception:
            _log.debug("HTTP response headers could not be traced", exc_info=True)

    def _finish(self, scope: Scope, root_path: str, span: trace.Span, active: dict[str, str], method: str,
                scheme: str, status: int, error: BaseException | None, seconds: float) -> None:
        # No response started (e.g. a cancelled request): no invented status code, error.type alone says it,
        # as OTel's ASGI middleware does.
        route = _route(scope, root_path)
        attributes: dict[str, str | int] = {_METHOD: method, _SCHEME: scheme}
        version = scope.get("http_version")
        if version:
            attributes[_PROTOCOL_VERSION] = version
        if status:
            attributes[_STATUS] = status
        if route is not None:
            attributes[_ROUTE] = route
        error_type = type(error).__qualname__ if error is not None else str(status) if status >= 500 else None
        if error_type is not None:
            attributes[_ERROR_TYPE] = error_type
        try:
            self._duration.record(seconds, attributes)  # the span is still current: exemplars link to it
        finally:
            self._active.add(-1, active)  # in flight no more, even when recording the duration failed
        if span.is_recording():
            if route is not None:
                span.update_name(f"{method if method != _OTHER else 'HTTP'} {route}")
                span.set_attribute(_ROUTE, route)
            if status:
                span.set_attribute(_STATUS, status)
            if error is not None:
                span.record_exception(error)
            if error_type is not None:
                span.set_attribute(_ERROR_TYPE, error_type)
                # A 5xx: no description, http.response.status_code already says it (stable HTTP conventions).
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
                                if error is not None else Status(StatusCode.ERROR))


def _route(scope: Scope, root_path: str) -> str | None:
    """The matched route template, with the paths of the mounts routing went through (None: no match)."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return None
    mounted: str = scope.get("root_path", "")
    if mounted != root_path and mounted.startswith(root_path):  # a Mount appended its path to root_path
        return mounted[len(root_path):] + path
    return path


def _redacted(query: str) -> str:
    """*query* with the values of the signature/credential parameters OTel redacts replaced by ``REDACTED``."""
    if not any(name in query for name in PARAMS_TO_REDACT):
        return query
    return redact_query_parameters(f"/?{query}").partition("?")[2]


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
    if known != method:
        span.set_attribute(_METHOD_ORIGINAL, method)
    query = scope.get("query_string")
    if query:
        span.set_attribute(_QUERY, _redacted(query.decode("latin-1")))
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
        if address.startswith("[") and address.endswith("]"):  # IPv6 literal: the bare address
            address = address[1:-1]
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
        if client[1] is not None:  # e.g. a Unix socket peer: no port
            span.set_attribute(_CLIENT_PORT, int(client[1]))
    if user_agent:
        span.set_attribute(_USER_AGENT, user_agent)
