"""Settings as values, the one validation module, and the import rule between packages."""

from __future__ import annotations

import ast
import math
import pickle
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlops_otel
from mlops_otel import DriftSettings, Runtime, Settings, StoreSettings
from mlops_otel.validation import (
    InvalidValueError,
    check,
    finite,
    in_range,
    instance_of,
    non_empty_str,
    one_of,
    optional,
    positive,
)

SRC = Path(mlops_otel.__file__).parent


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


# ------------------------------------------------------------------ validation
def test_invalid_value_error_names_field_expectation_and_value() -> None:
    err = InvalidValueError("confidence", "a number in [0, 1]", 1.5)
    assert isinstance(err, ValueError)
    assert (err.field, err.expected, err.value) == ("confidence", "a number in [0, 1]", 1.5)
    assert str(err) == "confidence must be a number in [0, 1], got 1.5"
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.field) == (InvalidValueError, str(err), "confidence")


def test_the_old_error_classes_are_the_new_one() -> None:
    from mlops_otel.ab import InvalidConfigError
    from mlops_otel.registry import InvalidValueError as RegistryError

    assert RegistryError is InvalidValueError
    assert issubclass(InvalidConfigError, InvalidValueError)


@pytest.mark.parametrize(
    ("validator", "value", "message"),
    [
        (finite(), math.nan, "x must be a finite number, got nan"),
        (finite(), True, "x must be a finite number, got True"),
        (in_range(0, 1), 1.5, "x must be a finite number in [0, 1], got 1.5"),
        (in_range(0, 1, low_open=True, high_open=True), 0, "x must be a finite number in (0, 1), got 0"),
        (in_range(2, math.inf, integer=True), 2.5, "x must be an integer >= 2, got 2.5"),
        (positive(), 0.0, "x must be a finite number > 0, got 0.0"),
        (positive(integer=True), -3, "x must be an integer > 0, got -3"),
        (one_of(("a", "b")), "c", "x must be one of 'a', 'b', got 'c'"),
        (non_empty_str(), "  ", "x must be a non-empty string, got '  '"),
        (instance_of(int, float), "1", "x must be an instance of int or float, got '1'"),
        (optional(positive()), -1, "x must be a finite number > 0, got -1"),
    ],
)
def test_validator_messages(validator: mlops_otel.validation.Validator, value: object, message: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        check("x", value, validator)
    assert str(info.value) == message
    assert info.value.field == "x"
    assert info.value.value is value


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 10), st.floats(0, 10))
def test_in_range_accepts_exactly_the_closed_interval(value: float, low: float, width: float) -> None:
    high = low + width
    inside = low <= value <= high
    try:
        check("v", value, in_range(low, high))
        accepted = True
    except InvalidValueError:
        accepted = False
    assert accepted == inside


def test_optional_accepts_none() -> None:
    assert check("x", None, optional(positive())) is None


# -------------------------------------------------------------------- settings
def test_settings_defaults_are_the_components_defaults() -> None:
    """Every default is written once: the settings' equal what the parts use when built alone."""
    from mlops_otel.drift import DriftMonitor
    from mlops_otel.stores import MemoryStore
    from mlops_otel.telemetry import Telemetry

    tel = Telemetry()
    s = Settings()
    assert (s.mode, s.max_label_values, s.export_interval, s.export_timeout) == (
        tel.mode, tel.max_label_values, tel.export_interval, tel.export_timeout)
    monitor = DriftMonitor(MemoryStore(), telemetry=tel)
    try:
        for field in attrs.fields(DriftSettings):
            assert getattr(DriftSettings(), field.name) == getattr(monitor, field.name), field.name
    finally:
        monitor.close()
    # Every knob of the monitor is reachable from Settings (the parts it is built on are not settings).
    knobs = {a.name for a in attrs.fields(DriftMonitor) if a.init} - {"store", "telemetry", "registry"}
    assert knobs == {a.name for a in attrs.fields(DriftSettings)}
    # Likewise every tuning option of RedisStore.from_url (None there means "the store's default").
    import inspect

    from mlops_otel.stores.redis import RedisStore

    options = set(inspect.signature(RedisStore.from_url).parameters) - {"url", "prefix", "cluster", "telemetry"}
    assert options == set(StoreSettings(url="redis://x:1/0", **dict.fromkeys(options, 1)).redis_options())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "fast"}, "mode"),
        ({"max_label_values": 0}, "max_label_values"),
        ({"max_label_values": 2.0}, "max_label_values"),
        ({"otlp": "yes"}, "otlp"),
        ({"export_interval": -1}, "export_interval"),
        ({"export_timeout": math.inf}, "export_timeout"),
        ({"fleet_metrics": 1}, "fleet_metrics"),
        ({"store": "postgres://db"}, "url"),
        ({"store": {"prefix": "a{b}"}}, "prefix"),
        ({"store": {"max_batch": 0}}, "max_batch"),
        ({"drift": {"window_size": 1}}, "window_size"),
        ({"drift": {"threshold": 1.5}}, "threshold"),
        ({"drift": {"check_interval": 0}}, "check_interval"),
    ],
)
def test_settings_validate_every_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        Settings(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_store_url_with_a_password_is_not_echoed() -> None:
    with pytest.raises(InvalidValueError) as info:
        StoreSettings(url="postgres://user:s3cret@db:5432")
    assert "s3cret" not in str(info.value)


def test_settings_are_frozen_values() -> None:
    s = Settings(store="redis://cache:6379/0", drift={"window_size": 50})
    assert s.store == StoreSettings(url="redis://cache:6379/0")
    assert s.drift.window_size == 50
    assert s == Settings(store=StoreSettings(url="redis://cache:6379/0"), drift=DriftSettings(window_size=50))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.mode = "passthrough"  # type: ignore[misc]
    assert s.with_options(store_prefix="tenant-a", mode=None).store.prefix == "tenant-a"
    with pytest.raises(TypeError, match="unknown setting"):
        s.with_options(moed="passthrough")


def test_settings_from_env() -> None:
    env = {
        "MLOPS_OTEL_STORE_URL": "redis://cache:6379/1", "MLOPS_OTEL_STORE_PREFIX": "svc",
        "MLOPS_OTEL_MODE": "passthrough", "MLOPS_OTEL_MAX_LABEL_VALUES": "7", "MLOPS_OTEL_FLEET_METRICS": "0",
        "OTEL_METRICS_EXPORTER": "console,otlp", "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_METRIC_EXPORT_TIMEOUT": "2500",
    }
    s = Settings.from_env(env)
    assert s == Settings(store=StoreSettings(url="redis://cache:6379/1", prefix="svc"), mode="passthrough",
                         max_label_values=7, fleet_metrics=False, otlp=True, export_interval=15.0,
                         export_timeout=2.5)
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"MLOPS_OTEL_OTLP": "0", "OTEL_METRICS_EXPORTER": "otlp"}).otlp is False
    with pytest.raises(InvalidValueError, match="MLOPS_OTEL_MAX_LABEL_VALUES must be an integer >= 1, got 'x'"):
        Settings.from_env({"MLOPS_OTEL_MAX_LABEL_VALUES": "x"})
    with pytest.raises(InvalidValueError, match="OTEL_METRIC_EXPORT_INTERVAL must be a positive number"):
        Settings.from_env({"OTEL_METRIC_EXPORT_INTERVAL": "-5"})


def test_runtime_create_takes_settings_or_the_keyword_form() -> None:
    rt = Runtime.create(Settings(mode="aggregate", max_label_values=7, export_interval=5.0))
    try:
        assert rt.settings.max_label_values == 7
        assert rt.telemetry.max_label_values == 7
        assert rt.telemetry.export_interval == 5.0
        assert rt.store.kind == "memory"
        assert rt.fleet is None
    finally:
        rt.close()
    rt = Runtime.create(max_label_values=9, store="memory://", store_prefix="p", fleet_metrics=True)
    try:
        assert rt.settings == Settings(max_label_values=9, store=StoreSettings(url="memory://", prefix="p"),
                                       fleet_metrics=True)
        assert rt.fleet is not None
    finally:
        rt.close()
    rt = Runtime.create(Settings(drift={"window_size": 64, "check_interval": None}))
    try:
        assert rt.drift.get_detector("gnn", "v1").window_size == 64
    finally:
        rt.close()
    with pytest.raises(InvalidValueError, match=r"settings must be a mlops_otel\.Settings"):
        Runtime.create({"mode": "aggregate"})  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="store must be a StateStore"):
        Runtime.create(store=42)  # type: ignore[arg-type]
    from mlops_otel.stores import MemoryStore

    with pytest.raises(InvalidValueError, match=r"not given together with settings\.store\.url='redis://x:1/0'"):
        Runtime.create(Settings(store="redis://x:1/0"), store=MemoryStore())


def test_runtime_from_env_reads_the_export_interval() -> None:
    rt = Runtime.from_env({"OTEL_METRIC_EXPORT_INTERVAL": "2000"})
    try:
        assert rt.telemetry.export_interval == 2.0
    finally:
        rt.close()


# -------------------------------------------------------------- import layering
def _private_cross_imports() -> list[str]:
    """Every ``from <pkg>._private import`` inside src that crosses into another sub-package."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        own = rel.parts[0] if len(rel.parts) > 1 else None  # the sub-package this module belongs to
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            level = node.level
            if level == 0:
                if not node.module.startswith("mlops_otel."):
                    continue
                parts = node.module.split(".")[1:]
            else:
                base = list(rel.parts[:-1])
                if level > 1:
                    base = base[: len(base) - (level - 1)]
                parts = [*base, *node.module.split(".")]
            # parts is the target module path below mlops_otel
            if len(parts) >= 2 and parts[0] != own and any(p.startswith("_") for p in parts[1:]):
                bad.append(f"{rel}: from {'.' * level}{node.module} import ...")
    return bad


def test_no_module_imports_another_packages_private_module() -> None:
    assert _private_cross_imports() == []


def test_the_package_validators_raise_the_one_error_type() -> None:
    """Validators moved onto InvalidValueError keep naming the field, the expectation and the value."""
    from fastapi import FastAPI

    from mlops_otel.deploy import alert_rules, prometheus_config
    from mlops_otel.fastapi import instrument_app
    from mlops_otel.stats import SufficientStats
    from mlops_otel.telemetry import Telemetry, request_decorator

    cases = [
        (lambda: Telemetry(mode="fast"), "mode"),  # type: ignore[arg-type]
        (lambda: Telemetry(export_interval=0), "export_interval"),
        (lambda: Telemetry(max_label_values=0), "max_label_values"),
        (lambda: request_decorator("", lambda: None), "name"),  # type: ignore[arg-type,return-value]
        (lambda: SufficientStats.of([1.0, 2.0], errors=3), "errors"),
        (lambda: prometheus_config(targets=[]), "targets"),
        (lambda: alert_rules(drift_for="soon"), "drift_for"),
        (lambda: instrument_app(FastAPI(), metrics_path="metrics"), "metrics_path"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidValueError) as info:
            call()
        assert info.value.field == field
        assert str(info.value).startswith(f"{field} must be ")


def test_open_store_applies_the_store_settings() -> None:
    """Nothing connects when a RedisStore is built, so the tuning can be checked without a server."""
    from mlops_otel import open_store
    from mlops_otel.telemetry import Telemetry

    tel = Telemetry()
    store = open_store(StoreSettings(url="redis://127.0.0.1:1/0", prefix="tenant", max_batch=7,
                                     flush_interval=0.5), telemetry=tel)
    try:
        assert (store.kind, store.prefix, store.max_batch, store.flush_interval) == ("redis", "tenant", 7, 0.5)  # type: ignore[attr-defined]
        assert store.telemetry is tel  # type: ignore[attr-defined]
    finally:
        store.close()
    memory = open_store(None, telemetry=tel)
    assert (memory.kind, memory.telemetry) == ("memory", tel)  # type: ignore[attr-defined]
