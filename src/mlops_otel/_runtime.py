"""The :class:`Runtime` owner and the lazily created process default."""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from ._fleet import FleetMetrics
from ._prediction import Prediction, ShadowedPrediction, _Handle, _Pending
from .settings import Settings, StoreSettings
from .stores import MemoryStore, StateStore
from .telemetry import Mode, Telemetry, use_default_resolver
from .validation import InvalidValueError

if TYPE_CHECKING:
    from .ab import ABTestManager
    from .drift import DriftMonitor
    from .registry import ModelRegistry
    from .shadow import ShadowCall

__all__ = [
    "DefaultProxy",
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
    _atexit_hook: Any = attrs.field(default=None, init=False, repr=False)
    _hot: tuple[Telemetry, ModelRegistry, ABTestManager, DriftMonitor] | None = attrs.field(
        default=None, init=False, repr=False)
    #: prediction()'s handles by (model_type, version): registry key, validated-input paths, drift detector.
    _prediction_handles: dict[tuple[str, str], _Handle] = attrs.field(factory=dict, init=False, repr=False)
    #: prediction()'s records queued off the request path (applied by Telemetry.deferred, before every read).
    _pending_predictions: _Pending = attrs.field(factory=_Pending, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # A store built without telemetry records into this runtime's, not into whatever default
        # exists when it next records (which could even create one during interpreter exit).
        if getattr(self.store, "telemetry", False) is None:
            with contextlib.suppress(AttributeError):
                setattr(self.store, "telemetry", self.telemetry)  # noqa: B010  # a field of MemoryStore/RedisStore, not of the protocol
        # Held weakly: an unreferenced runtime can still be collected.
        self._atexit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit_hook)

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
        if given_store is not None and base.store.url is not None:  # never silently ignore the settings' store
            raise InvalidValueError("store", f"not given together with settings.store.url={base.store.url!r} "
                                    "(pass one of them)", store)
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
        existing = self._registry
        if existing is not None:  # the hot path: no lock once created
            return existing
        with self._lock:
            if self._registry is None:
                from .registry import ModelRegistry

                self._registry = ModelRegistry(self.store, telemetry=self.telemetry)
            return self._registry

    @property
    def ab(self) -> ABTestManager:
        """The A/B test manager on this runtime's store and registry."""
        existing = self._ab
        if existing is not None:
            return existing
        registry = self.registry
        with self._lock:
            if self._ab is None:
                from .ab import ABTestManager

                self._ab = ABTestManager(self.store, registry, telemetry=self.telemetry)
            return self._ab

    @property
    def drift(self) -> DriftMonitor:
        """The drift monitor owning this runtime's detectors."""
        existing = self._drift
        if existing is not None:
            return existing
        registry = self.registry
        with self._lock:
            if self._drift is None:
                from .drift import DriftMonitor

                self._drift = DriftMonitor.from_settings(self.store, self.settings.drift,
                                                         telemetry=self.telemetry, registry=registry)
            return self._drift

    def hot_parts(self) -> tuple[Telemetry, ModelRegistry, ABTestManager, DriftMonitor]:
        """``(telemetry, registry, ab, drift)``, created on first use and then read without a lock."""
        parts = self._hot
        if parts is None:
            parts = self._hot = (self.telemetry, self.registry, self.ab, self.drift)
        return parts

    def prediction(
        self,
        model_type: str,
        user_id: str | None = None,
        *,
        stage: str | None = None,
        default_version: str | None = None,
        shadow: ShadowCall | None = None,
        **attributes: Any,
    ) -> Prediction:
        """Record one prediction of *model_type* everywhere it belongs (see :class:`~mlops_otel.Prediction`).

        ``with runtime.prediction("gnn", user_id=u) as p:`` assigns the A/B variant
        (``p.version``, ``p.variant``, ``p.test``), times the block inside its stage
        span, takes the outputs with ``p.observe(anomaly_score=..., confidence=...)``
        and records them once on exit; ``async with`` and ``@runtime.prediction(...)``
        work too. Keyword *attributes* are added to the stage span. ``shadow=runner.bind(inputs)``
        runs a shadow challenger on *inputs* after a successful block (see :mod:`mlops_otel.shadow`).
        """
        if shadow is not None:
            return ShadowedPrediction(self, model_type, user_id, stage=stage, default_version=default_version,
                                      attributes=attributes or None, shadow=shadow)
        return Prediction(self, model_type, user_id, stage, default_version, attributes or None)  # hot: positional

    def close(self) -> None:
        """Flush and release everything; idempotent. The one place that orders the shutdown.

        0. the writes requests deferred off their path are applied (``Telemetry.deferred``);
        1. the owners (drift monitor, A/B manager, registry) stop their workers and
           hand their buffered results to the store, and the fleet view publishes
           its last snapshot;
        2. the store delivers every pending write and closes its connections;
        3. telemetry pushes its last OTLP export (which includes what 1 and 2 counted).

        A runtime not closed by the application is closed at interpreter exit in
        the same order (one ``atexit`` hook per runtime, registered when it is built).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            parts: list[Any] = [self._drift, self._ab, self._registry]
        hook = self._atexit_hook
        if hook is not None:
            atexit.unregister(hook)
            self._atexit_hook = None
        # What requests deferred, before the owners hand their results over; from now on every write is
        # applied at once (a request ending during the shutdown must not queue behind a closed owner).
        self.telemetry.deferred.close()
        for part in parts:
            close = getattr(part, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # one failing owner must not keep the others from flushing
                    self.telemetry.fault("runtime.close", exc)
        if self.fleet is not None:
            try:
                self.fleet.close()
            except Exception as exc:
                self.telemetry.fault("runtime.close", exc)
        try:
            self.store.close()
        finally:
            self.telemetry.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed


def _close_at_exit(ref: weakref.ReferenceType[Runtime]) -> None:
    runtime = ref()
    if runtime is not None:
        runtime.close()


class _Slot:
    """The one default slot of the package: the default runtime (its telemetry is the default telemetry)."""

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
    """Return the default :class:`Runtime`, creating it (``Settings()``: memory store) on first use."""
    value = _SLOT.value
    if value is not None:
        return value
    with _SLOT.lock:
        if _SLOT.value is None:
            _SLOT.value = Runtime.create()
        return _SLOT.value


def _default_telemetry() -> Telemetry:
    value = _SLOT.value
    return value.telemetry if value is not None else default_runtime().telemetry


# Installs a function, creates nothing: mlops_otel.telemetry.default_telemetry() is the default runtime's.
use_default_resolver(_default_telemetry)


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
    if close:
        runtime.close()


def reset_default() -> None:
    """Close and forget the default runtime (for tests)."""
    install_default(None)


class DefaultProxy:
    """Stands for an attribute of whatever runtime is the default *now* (resolved on every use).

    ``from mlops_otel import model_registry`` gives one of these, so a later
    :func:`configure` never leaves the caller holding the old runtime's object.
    ``isinstance`` sees the current target's class.
    """

    __slots__ = ("_attr",)

    def __init__(self, attr: str) -> None:
        object.__setattr__(self, "_attr", attr)

    def _target(self) -> Any:
        return getattr(default_runtime(), object.__getattribute__(self, "_attr"))

    @property  # type: ignore[misc]  # isinstance() and type checks see the current target's class
    def __class__(self) -> type:
        return type(self._target())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    def __dir__(self) -> list[str]:
        return dir(self._target())

    def __repr__(self) -> str:
        return f"<default runtime's {object.__getattribute__(self, '_attr')}: {self._target()!r}>"

    def __eq__(self, other: object) -> bool:
        target = self._target()
        return target is (other._target() if isinstance(other, DefaultProxy) else other)

    def __hash__(self) -> int:
        return hash(self._target())
