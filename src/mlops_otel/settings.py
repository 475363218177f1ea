"""What a :class:`~mlops_otel.Runtime` is built from: frozen, validated values.

Every option of the runtime is written here once, with its default and its
validator; :meth:`Runtime.create <mlops_otel.Runtime.create>`,
:func:`~mlops_otel.configure` and :func:`~mlops_otel.fastapi.instrument_app` all
take a :class:`Settings` (or keywords that build one).

>>> from mlops_otel import Settings
>>> Settings().mode, Settings().max_label_values
('aggregate', 100)
>>> Settings(max_label_values=0)
Traceback (most recent call last):
...
mlops_otel.validation.InvalidValueError: max_label_values must be an integer >= 1, got 0
>>> Settings.from_env({"MLOPS_OTEL_STORE_URL": "redis://cache:6379/0", "OTEL_METRIC_EXPORT_INTERVAL": "15000"})
... # doctest: +ELLIPSIS
Settings(store=StoreSettings(url='redis://cache:6379/0', ...), ..., export_interval=15.0, ...)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from .telemetry import Mode, Telemetry
from .validation import InvalidValueError, check_name, in_range, is_bool, one_of, optional, positive

__all__ = [
    "ENV_FLEET_METRICS",
    "ENV_MAX_LABEL_VALUES",
    "ENV_MODE",
    "ENV_OTLP",
    "ENV_STORE_PREFIX",
    "ENV_STORE_URL",
    "DriftSettings",
    "Settings",
    "StoreSettings",
]

#: Environment variables read by :meth:`Settings.from_env` (never at import time).
ENV_STORE_URL = "MLOPS_OTEL_STORE_URL"
ENV_STORE_PREFIX = "MLOPS_OTEL_STORE_PREFIX"
ENV_MODE = "MLOPS_OTEL_MODE"
ENV_MAX_LABEL_VALUES = "MLOPS_OTEL_MAX_LABEL_VALUES"
ENV_OTLP = "MLOPS_OTEL_OTLP"
ENV_FLEET_METRICS = "MLOPS_OTEL_FLEET_METRICS"
#: The OpenTelemetry SDK's variables for periodic metric export, in milliseconds.
ENV_OTEL_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
ENV_OTEL_EXPORT_TIMEOUT = "OTEL_METRIC_EXPORT_TIMEOUT"

_TEL = attrs.fields(Telemetry)
_STORE_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def _store_url(_: object, attribute: Any, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or value.split("://", 1)[0] not in _STORE_SCHEMES or (
            "://" not in value and value != "memory"):
        shown = value
        if isinstance(value, str) and "@" in value:  # never echo a password
            scheme, _, rest = value.partition("://")
            shown = f"{scheme}://***@{rest.rpartition('@')[2]}"
        raise InvalidValueError(
            attribute.name, "a URL starting with memory://, redis://, rediss://, unix:// or redis+cluster://", shown)


def _prefix(_: object, attribute: Any, value: object) -> None:
    check_name(attribute.name, value)


_OPT_POSITIVE = optional(positive())
_OPT_POSITIVE_INT = optional(positive(integer=True))


@attrs.frozen(kw_only=True)
class StoreSettings:
    """Which store the runtime opens, and its tuning.

    ``url`` ``None`` (or ``memory://``) is the in-process store. The Redis tuning
    fields are ``None`` for "the store's own default" (see
    :meth:`mlops_otel.stores.redis.RedisStore.from_url`).
    """

    url: str | None = attrs.field(default=None, validator=_store_url)
    prefix: str = attrs.field(default="mlops", validator=_prefix)
    flush_interval: float | None = attrs.field(default=None, validator=_OPT_POSITIVE)
    max_batch: int | None = attrs.field(default=None, validator=_OPT_POSITIVE_INT)
    max_pending: int | None = attrs.field(default=None, validator=_OPT_POSITIVE_INT)
    max_backoff: float | None = attrs.field(default=None, validator=_OPT_POSITIVE)
    flush_timeout: float | None = attrs.field(default=None, validator=_OPT_POSITIVE)
    socket_timeout: float | None = attrs.field(default=None, validator=_OPT_POSITIVE)
    dedup_ttl: int | None = attrs.field(default=None, validator=_OPT_POSITIVE_INT)
    epoch_interval: float | None = attrs.field(default=None, validator=_OPT_POSITIVE)

    @property
    def is_memory(self) -> bool:
        """Whether this is the in-process store."""
        return self.url is None or self.url in ("memory", "memory://")

    def redis_options(self) -> dict[str, Any]:
        """The tuning fields that were set, as keyword arguments of ``RedisStore.from_url``."""
        names = ("flush_interval", "max_batch", "max_pending", "max_backoff", "flush_timeout", "socket_timeout",
                 "dedup_ttl", "epoch_interval")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _unit(*, open_low: bool = True, open_high: bool = False) -> Any:
    return in_range(0.0, 1.0, low_open=open_low, high_open=open_high)


@attrs.frozen(kw_only=True)
class DriftSettings:
    """Defaults of the drift detectors the runtime's :class:`~mlops_otel.DriftMonitor` creates.

    The one place these defaults are written: ``DriftMonitor``'s own keyword defaults are read
    from these fields, and ``DriftMonitor.from_settings(store, settings)`` builds a monitor from a value.

    The meaning of each field is documented on :class:`~mlops_otel.drift.DriftDetector`;
    ``check_interval`` is the monitor's background check period (``None``: no thread).
    """

    window_size: int = attrs.field(default=1000, validator=in_range(2, math.inf, integer=True))
    reference_size: int | None = attrs.field(default=None, validator=optional(in_range(2, math.inf, integer=True)))
    threshold: float = attrs.field(default=0.3, validator=_unit(open_high=True))
    clear_threshold: float | None = attrs.field(default=None, validator=optional(_unit(open_high=True)))
    min_samples: int | None = attrs.field(default=None, validator=optional(in_range(2, math.inf, integer=True)))
    check_every: int | None = attrs.field(default=None, validator=_OPT_POSITIVE_INT)
    check_interval: float | None = attrs.field(default=1.0, validator=_OPT_POSITIVE)
    alpha: float = attrs.field(default=0.01, validator=_unit(open_high=True))
    warning_threshold: float = attrs.field(default=0.1, validator=_unit(open_high=True))
    confidence_drop: float = attrs.field(default=0.05, validator=_unit(open_high=True))
    #: Significance of the calibrated drift alert (see :class:`~mlops_otel.drift.DriftDetector`).
    alert_alpha: float = attrs.field(default=1e-4, validator=_unit(open_high=True))
    #: Input features tracked per detector (0: none).
    max_features: int = attrs.field(default=50, validator=in_range(0, math.inf, integer=True))
    #: Per-check significance (Holm over the check's features) for flagging an input feature.
    feature_alpha: float = attrs.field(default=1e-3, validator=_unit(open_high=True))

    def monitor_options(self) -> dict[str, Any]:
        """These settings as keyword arguments of :class:`~mlops_otel.DriftMonitor`."""
        return attrs.asdict(self)


def _to_store(value: object) -> object:
    if value is None or isinstance(value, str):
        return StoreSettings(url=value)
    if isinstance(value, Mapping):
        return StoreSettings(**value)
    return value


def _to_drift(value: object) -> object:
    return DriftSettings(**value) if isinstance(value, Mapping) else value


def _instance(kind: type, expected: str) -> Any:
    def validate(_: object, attribute: Any, value: object) -> None:
        if not isinstance(value, kind):
            raise InvalidValueError(attribute.name, expected, value)

    return validate


@attrs.frozen(kw_only=True)
class Settings:
    """Everything a :class:`~mlops_otel.Runtime` is configured with, as one frozen value.

    *store* also accepts a URL string (or a mapping of :class:`StoreSettings`
    fields), *drift* a mapping of :class:`DriftSettings` fields.
    ``fleet_metrics`` ``None`` means on for shared stores, off for the in-memory
    one. ``export_interval`` and ``export_timeout`` (seconds) pace the OTLP push
    when ``otlp`` is on. Derive variants with ``attrs.evolve(settings, mode=...)``
    or :meth:`with_options`.
    """

    store: StoreSettings = attrs.field(factory=StoreSettings, converter=_to_store,
                                       validator=_instance(StoreSettings, "a StoreSettings, a URL or None"))
    mode: Mode = attrs.field(default=_TEL.mode.default, validator=one_of(("aggregate", "passthrough")))
    max_label_values: int = attrs.field(default=_TEL.max_label_values.default,
                                        validator=in_range(1, math.inf, integer=True))
    otlp: bool = attrs.field(default=False, validator=is_bool())
    export_interval: float = attrs.field(default=_TEL.export_interval.default, validator=positive())
    export_timeout: float = attrs.field(default=_TEL.export_timeout.default, validator=positive())
    fleet_metrics: bool | None = attrs.field(default=None, validator=optional(is_bool()))
    drift: DriftSettings = attrs.field(factory=DriftSettings, converter=_to_drift,
                                       validator=_instance(DriftSettings, "a DriftSettings"))

    def with_options(self, **options: Any) -> Settings:
        """A copy with *options* replaced; ``store_prefix=`` sets ``store.prefix``.

        Options whose value is ``None`` are left as they are, so that callers can
        pass "not given" through (``fleet_metrics`` therefore cannot be reset to
        ``None`` here: use :func:`attrs.evolve`).
        """
        given = {k: v for k, v in options.items() if v is not None}
        prefix = given.pop("store_prefix", None)
        known = {a.name for a in attrs.fields(Settings)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}, "
                            "store_prefix")
        settings = attrs.evolve(self, **given)
        if prefix is not None:
            settings = attrs.evolve(settings, store=attrs.evolve(settings.store, prefix=prefix))
        return settings

    @property
    def wants_fleet_metrics(self) -> bool:
        """Whether ``/metrics`` serves the totals of every worker sharing the store."""
        return (not self.store.is_memory) if self.fleet_metrics is None else self.fleet_metrics

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment (read now, never at import).

        ``MLOPS_OTEL_STORE_URL`` (default memory), ``MLOPS_OTEL_STORE_PREFIX``,
        ``MLOPS_OTEL_FLEET_METRICS`` (1/0; default: on for shared stores),
        ``MLOPS_OTEL_MODE`` (aggregate|passthrough), ``MLOPS_OTEL_MAX_LABEL_VALUES``,
        ``MLOPS_OTEL_OTLP`` (1/true: push OTLP using the ``OTEL_EXPORTER_OTLP_*`` variables;
        when unset, OTLP is pushed if ``OTEL_METRICS_EXPORTER`` names ``otlp``),
        ``OTEL_METRIC_EXPORT_INTERVAL`` and ``OTEL_METRIC_EXPORT_TIMEOUT`` (milliseconds,
        as in the OpenTelemetry specification).
        """
        import os

        env = os.environ if environ is None else environ
        options: dict[str, Any] = {"otlp": _otlp_wanted(env)}
        if env.get(ENV_STORE_URL):
            options["store"] = StoreSettings(url=env[ENV_STORE_URL], prefix=env.get(ENV_STORE_PREFIX) or "mlops")
        elif env.get(ENV_STORE_PREFIX):
            options["store"] = StoreSettings(prefix=env[ENV_STORE_PREFIX])
        if env.get(ENV_MODE):
            options["mode"] = env[ENV_MODE].strip()
        if env.get(ENV_FLEET_METRICS):
            options["fleet_metrics"] = _flag(env[ENV_FLEET_METRICS])
        if env.get(ENV_MAX_LABEL_VALUES):
            options["max_label_values"] = _number(env, ENV_MAX_LABEL_VALUES, int, "an integer >= 1")
        for var, name in ((ENV_OTEL_EXPORT_INTERVAL, "export_interval"), (ENV_OTEL_EXPORT_TIMEOUT, "export_timeout")):
            if env.get(var):
                options[name] = _number(env, var, float, "a positive number of milliseconds") / 1000.0
        return cls(**options)


def _flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], var: str, kind: type[int] | type[float], expected: str) -> Any:
    raw = env[var]
    try:
        value = kind(raw.strip())
    except ValueError:
        raise InvalidValueError(var, expected, raw) from None
    if not (value > 0 and math.isfinite(value)):
        raise InvalidValueError(var, expected, raw)
    return value


def _otlp_wanted(env: Mapping[str, str]) -> bool:
    """``MLOPS_OTEL_OTLP`` if set, else whether ``OTEL_METRICS_EXPORTER`` names ``otlp``."""
    explicit = env.get(ENV_OTLP)
    if explicit:
        return _flag(explicit)
    exporters = env.get("OTEL_METRICS_EXPORTER", "")
    return "otlp" in (e.strip().lower() for e in exporters.split(","))
