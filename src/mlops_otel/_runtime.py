"""The :class:`Runtime` owner and the lazily created process default."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from ._fleet import FleetMetrics
from .stores import MemoryStore, StateStore
from .telemetry import Mode, Telemetry, set_default_telemetry

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

#: Environment variables read by :meth:`Runtime.from_env` (never at import time).
ENV_STORE_URL = "MLOPS_OTEL_STORE_URL"
ENV_STORE_PREFIX = "MLOPS_OTEL_STORE_PREFIX"
ENV_MODE = "MLOPS_OTEL_MODE"
ENV_MAX_LABEL_VALUES = "MLOPS_OTEL_MAX_LABEL_VALUES"
ENV_OTLP = "MLOPS_OTEL_OTLP"
ENV_FLEET_METRICS = "MLOPS_OTEL_FLEET_METRICS"


def open_store(url: str | None, *, prefix: str = "mlops", telemetry: Telemetry | None = None) -> StateStore:
    """Open a store from a URL: ``memory://`` (or ``None``), ``redis://``, ``rediss://``, ``redis+cluster://``."""
    if url is None or url in ("", "memory", "memory://"):
        return MemoryStore()
    scheme = url.split("://", 1)[0]
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from .stores.redis import RedisStore

        if scheme.endswith("+cluster"):
            return RedisStore.from_url(url.replace("+cluster", "", 1), prefix=prefix, cluster=True,
                                       telemetry=telemetry)
        # cluster=None: RedisStore asks the server whether it is a Cluster node.
        return RedisStore.from_url(url, prefix=prefix, cluster=None, telemetry=telemetry)
    raise ValueError(
        f"store url must start with memory://, redis://, rediss:// or redis+cluster://, got {url!r}"
    )


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
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _registry: ModelRegistry | None = attrs.field(default=None, init=False, repr=False)
    _ab: ABTestManager | None = attrs.field(default=None, init=False, repr=False)
    _drift: DriftMonitor | None = attrs.field(default=None, init=False, repr=False)
    _closed: bool = attrs.field(default=False, init=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        store: StateStore | str | None = None,
        store_prefix: str = "mlops",
        meter_provider: otel_metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        mode: Mode = "aggregate",
        max_label_values: int = 100,
        otlp: bool = False,
        export_interval: float = 60.0,
        fleet_metrics: bool | None = None,
    ) -> Runtime:
        """Build a runtime; *store* is a :class:`StateStore` or a URL (see :func:`open_store`).

        *fleet_metrics* makes ``/metrics`` serve the totals of every worker sharing
        the store (:class:`~mlops_otel.FleetMetrics`); by default it is on for
        shared stores (anything but the in-memory one) and off otherwise.
        """
        telemetry = Telemetry(
            meter_provider=meter_provider, tracer_provider=tracer_provider, mode=mode,
            max_label_values=max_label_values, exporter=_otlp_exporter() if otlp else None,
            export_interval=export_interval,
        )
        if store is None or isinstance(store, str):
            store = open_store(store, prefix=store_prefix, telemetry=telemetry)
        fleet = None
        if store.kind != "memory" if fleet_metrics is None else fleet_metrics:
            fleet = FleetMetrics(store, telemetry)
            fleet.start()
        return cls(telemetry, store, fleet=fleet)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        """Build a runtime from ``MLOPS_OTEL_*`` variables (read now, not at import).

        ``MLOPS_OTEL_STORE_URL`` (default memory), ``MLOPS_OTEL_STORE_PREFIX``,
        ``MLOPS_OTEL_FLEET_METRICS`` (1/0; default: on for shared stores),
        ``MLOPS_OTEL_MODE`` (aggregate|passthrough), ``MLOPS_OTEL_MAX_LABEL_VALUES``,
        ``MLOPS_OTEL_OTLP`` (1/true: push OTLP using the ``OTEL_EXPORTER_OTLP_*`` variables;
        when unset, OTLP is pushed if ``OTEL_METRICS_EXPORTER`` names ``otlp``).
        """
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {
            "store": env.get(ENV_STORE_URL) or None,
            "store_prefix": env.get(ENV_STORE_PREFIX, "mlops"),
            "mode": env.get(ENV_MODE, "aggregate"),
            "otlp": _otlp_wanted(env),
        }
        if env.get(ENV_FLEET_METRICS):
            options["fleet_metrics"] = env[ENV_FLEET_METRICS].strip().lower() in ("1", "true", "yes", "on")
        if env.get(ENV_MAX_LABEL_VALUES):
            raw = env[ENV_MAX_LABEL_VALUES]
            try:
                options["max_label_values"] = int(raw)
            except ValueError:
                raise ValueError(f"{ENV_MAX_LABEL_VALUES} must be an integer, got {raw!r}") from None
        return cls.create(**options)

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

                self._drift = DriftMonitor(self.store, telemetry=self.telemetry, registry=registry)
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


def _otlp_wanted(env: Mapping[str, str]) -> bool:
    """``MLOPS_OTEL_OTLP`` if set, else whether ``OTEL_METRICS_EXPORTER`` names ``otlp``."""
    explicit = env.get(ENV_OTLP)
    if explicit:
        return explicit.strip().lower() in ("1", "true", "yes", "on")
    exporters = env.get("OTEL_METRICS_EXPORTER", "")
    return "otlp" in (e.strip().lower() for e in exporters.split(","))


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
    *,
    store: StateStore | str | None = None,
    store_prefix: str = "mlops",
    meter_provider: otel_metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    mode: Mode = "aggregate",
    max_label_values: int = 100,
    otlp: bool = False,
    export_interval: float = 60.0,
    fleet_metrics: bool | None = None,
) -> Runtime:
    """Create a :class:`Runtime` and install it as the process default.

    The seed-style module API (``mlops_otel.metrics``, ``model_registry``,
    ``ab_test_manager``, ``get_drift_detector``) then records into it, and
    :func:`mlops_otel.fastapi.instrument_app` called without a runtime or store
    uses it. The previous default is closed. Nothing is configured at import time.

    *meter_provider* is used by ``mode="passthrough"`` (every measurement also goes
    through it); the default aggregate mode exports itself (``/metrics``, and OTLP
    with *otlp*) and does not need one.
    """
    runtime = Runtime.create(
        store=store, store_prefix=store_prefix, meter_provider=meter_provider,
        tracer_provider=tracer_provider, mode=mode, max_label_values=max_label_values, otlp=otlp,
        export_interval=export_interval, fleet_metrics=fleet_metrics,
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
