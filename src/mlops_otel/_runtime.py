"""The :class:`Runtime` owner and the lazily created process default."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from ._fleet import FleetMetrics
from .settings import Settings, StoreSettings
from .stores import MemoryStore, StateStore
from .telemetry import Mode, Telemetry, set_default_telemetry
from .validation import InvalidValueError

if TYPE_CHECKING:
    from .ab import ABTestManager
    from .drift import DriftMonitor
    from .registry import ModelRegistry

__all__ = [
    "Runtime",
    "configure",
    "default_runtime",
    "install_default",
    "configured_default",
    "open_store",
    "release_default",
    "reset_default",
]

def open_store(
    url: StoreSettings | str | None, *, prefix: str | None = None, telemetry: Telemetry | None = None
) -> StateStore:
    """Open a store: ``memory://`` (or ``None``), ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``.

    *url* may also be a :class:`~mlops_otel.settings.StoreSettings` (then its
    prefix and tuning apply; *prefix* overrides its prefix). *telemetry* is what
    the store records its own health into.
    """
    settings = url if isinstance(url, StoreSettings) else StoreSettings(url=url)
    if prefix is not None:
        settings = attrs.evolve(settings, prefix=prefix)
    if settings.is_memory:
        return MemoryStore(telemetry=telemetry)
    assert settings.url is not None  # not memory
    scheme = settings.url.split("://", 1)[0]
    from .stores.redis import RedisStore

    options = settings.redis_options()
    if scheme.endswith("+cluster"):
        return RedisStore.from_url(settings.url.replace("+cluster", "", 1), prefix=settings.prefix, cluster=True,
                                   telemetry=telemetry, **options)
    # cluster=None: RedisStore asks the server whether it is a Cluster node.
    return RedisStore.from_url(settings.url, prefix=settings.prefix, cluster=None, telemetry=telemetry, **options)


def _otlp_exporter() -> Any:
    # The exporter honours OTEL_EXPORTER_OTLP_* itself when constructed.
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("otlp=True needs the 'otlp' extra: pip install 'mlops-otel[otlp]'") from exc
    return OTLPMetricExporter()


@attrs.define(eq=False)
class Runtime:
    """Everything mlops-otel runs on in one process: telemetry, store, registry, A/B, drift.

    Create it at application start-up (for example in a FastAPI lifespan) and
    :meth:`close` it at shutdown; closing flushes the store's pending writes
    and the last OTLP export. The cores are created on first use.
    """

    telemetry: Telemetry
    store: StateStore
    fleet: FleetMetrics | None = attrs.field(default=None, kw_only=True)
    #: What this runtime was built from (for a runtime built by hand: the defaults).
    settings: Settings = attrs.field(factory=Settings, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _registry: ModelRegistry | None = attrs.field(default=None, init=False, repr=False)
    _ab: ABTestManager | None = attrs.field(default=None, init=False, repr=False)
    _drift: DriftMonitor | None = attrs.field(default=None, init=False, repr=False)
    _closed: bool = attrs.field(default=False, init=False, repr=False)

    @classmethod
    def create(
        cls,
        settings: Settings | None = None,
        /,
        *,
        store: StateStore | str | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        store_prefix: str | None = None,
        mode: Mode | None = None,
        max_label_values: int | None = None,
        otlp: bool | None = None,
        export_interval: float | None = None,
        export_timeout: float | None = None,
        fleet_metrics: bool | None = None,
    ) -> Runtime:
        """Build a runtime from *settings* (default: :class:`Settings()`), the only builder.

        The keywords are shortcuts that override single fields of *settings*
        (``None``: keep the setting); *store* may also be a ready
        :class:`StateStore`, which the runtime then owns and closes.
        *meter_provider* (used by ``mode="passthrough"``) and *tracer_provider*
        are objects, not settings (default: the global providers).
        ``fleet_metrics`` makes ``/metrics`` serve the totals of every worker
        sharing the store (:class:`~mlops_otel.FleetMetrics`); by default it is on
        for shared stores and off for the in-memory one.
        """
        base = Settings() if settings is None else settings
        if not isinstance(base, Settings):
            raise InvalidValueError("settings", "a mlops_otel.Settings or None", base)
        given_store = store if isinstance(store, StateStore) else None
        base = base.with_options(
            store=store if isinstance(store, str) else None, store_prefix=store_prefix, mode=mode,
            max_label_values=max_label_values, otlp=otlp, export_interval=export_interval,
            export_timeout=export_timeout, fleet_metrics=fleet_metrics,
        )
        if store is not None and given_store is None and not isinstance(store, str):
            raise InvalidValueError("store", "a StateStore, a store URL or None", store)
        return cls.from_settings(base, store=given_store, meter_provider=meter_provider,
                                 tracer_provider=tracer_provider)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: StateStore | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> Runtime:
        """Build a runtime from exactly *settings* (what :meth:`create` ends in)."""
        telemetry = Telemetry(
            meter_provider=meter_provider, tracer_provider=tracer_provider, mode=settings.mode,
            max_label_values=settings.max_label_values,
            exporter=_otlp_exporter() if settings.otlp else None,
            export_interval=settings.export_interval, export_timeout=settings.export_timeout,
        )
        try:
            if store is None:
                store = open_store(settings.store, telemetry=telemetry)
            fleet = None
            wants_fleet = (store.kind != "memory") if settings.fleet_metrics is None else settings.fleet_metrics
            if wants_fleet:
                fleet = FleetMetrics(store, telemetry)
                fleet.start()
        except BaseException:
            telemetry.close()
            raise
        return cls(telemetry, store, fleet=fleet, settings=settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        """Build a runtime from :meth:`Settings.from_env` (the variables are read now, not at import)."""
        return cls.create(Settings.from_env(environ))

    @property
    def registry(self) -> ModelRegistry:
        """The model registry on this runtime's store."""
        with self._lock:
            if self._registry is None:
                from .registry import ModelRegistry

                self._registry = ModelRegistry(self.store, telemetry=self.telemetry)
            return self._registry

    @property
    def ab(self) -> ABTestManager:
        """The A/B test manager on this runtime's store and registry."""
        registry = self.registry
        with self._lock:
            if self._ab is None:
                from .ab import ABTestManager

                self._ab = ABTestManager(self.store, registry, telemetry=self.telemetry)
            return self._ab

    @property
    def drift(self) -> DriftMonitor:
        """The drift monitor owning this runtime's detectors."""
        registry = self.registry
        with self._lock:
            if self._drift is None:
                from .drift import DriftMonitor

                self._drift = DriftMonitor(self.store, telemetry=self.telemetry, registry=registry,
                                           **self.settings.drift.monitor_options())
            return self._drift

    def close(self) -> None:
        """Flush and release everything; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            parts: list[Any] = [self._drift, self._ab, self._registry]
        for part in parts:
            close = getattr(part, "close", None)
            if callable(close):
                close()
        if self.fleet is not None:
            self.fleet.close()
        self.store.close()
        self.telemetry.close()


class _Slot:
    """Holds the default runtime; created on first use, replaced by :func:`configure`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Runtime | None = None
        #: Whether *value* was installed by configure()/install_default(), not created lazily.
        self.configured = False


_SLOT = _Slot()


def configured_default() -> Runtime | None:
    """The default runtime if the application installed one (``configure()``), else ``None``."""
    with _SLOT.lock:
        return _SLOT.value if _SLOT.configured else None


def default_runtime() -> Runtime:
    """Return the default :class:`Runtime`, creating it (memory store) on first use."""
    value = _SLOT.value
    if value is not None:
        return value
    with _SLOT.lock:
        if _SLOT.value is None:
            from .telemetry import default_telemetry

            _SLOT.value = Runtime(default_telemetry(), MemoryStore())
        return _SLOT.value


def configure(
    settings: Settings | None = None,
    /,
    *,
    store: StateStore | str | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    store_prefix: str | None = None,
    mode: Mode | None = None,
    max_label_values: int | None = None,
    otlp: bool | None = None,
    export_interval: float | None = None,
    export_timeout: float | None = None,
    fleet_metrics: bool | None = None,
) -> Runtime:
    """Create a :class:`Runtime` (arguments as :meth:`Runtime.create`) and install it as the process default.

    The seed-style module API (``mlops_otel.metrics``, ``model_registry``,
    ``ab_test_manager``, ``get_drift_detector``) then records into it, and
    :func:`mlops_otel.fastapi.instrument_app` called without a runtime or settings
    uses it. The previous default is closed. Nothing is configured at import time.
    """
    runtime = Runtime.create(
        settings, store=store, meter_provider=meter_provider, tracer_provider=tracer_provider,
        store_prefix=store_prefix, mode=mode, max_label_values=max_label_values, otlp=otlp,
        export_interval=export_interval, export_timeout=export_timeout, fleet_metrics=fleet_metrics,
    )
    install_default(runtime)
    return runtime


def install_default(runtime: Runtime | None) -> Runtime | None:
    """Make *runtime* the default (``None``: recreate lazily); close and return the previous one."""
    with _SLOT.lock:
        previous, _SLOT.value = _SLOT.value, runtime
        _SLOT.configured = runtime is not None
    set_default_telemetry(None if runtime is None else runtime.telemetry)
    if previous is not None and previous is not runtime:
        previous.close()
    return previous


def release_default(runtime: Runtime, *, close: bool) -> None:
    """Stop using *runtime* as the default (if it is), closing it when *close*."""
    with _SLOT.lock:
        was_default = _SLOT.value is runtime
        if was_default:
            _SLOT.value = None
            _SLOT.configured = False
    if was_default:
        set_default_telemetry(None)
    if close:
        runtime.close()


def reset_default() -> None:
    """Close and forget the default runtime (for tests)."""
    install_default(None)
