"""OpenTelemetry Collector configurations: OTLP in, Prometheus (pull or remote write) out, traces forwarded.

Every listening address and destination is an ``${env:VAR:-default}`` reference, resolved by
the Collector when it starts, so one shipped file serves Compose, Kubernetes and the
end-to-end tests (which set the variables to free loopback ports); see :data:`ENV_VARS`.
"""

from __future__ import annotations

from typing import Any, Literal

from ..validation import InvalidValueError

__all__ = ["ENV_VARS", "collector_config", "env_default", "env_ref"]

Exporter = Literal["prometheus", "prometheusremotewrite"]

#: The variables the shipped configs read, with their defaults.
ENV_VARS: dict[str, str] = {
    "OTELCOL_OTLP_GRPC_ENDPOINT": "0.0.0.0:4317",
    "OTELCOL_OTLP_HTTP_ENDPOINT": "0.0.0.0:4318",
    "OTELCOL_PROMETHEUS_ENDPOINT": "0.0.0.0:8889",
    "OTELCOL_REMOTE_WRITE_ENDPOINT": "http://prometheus:9090/api/v1/write",
    "OTELCOL_TRACES_ENDPOINT": "http://tempo:4318",
    "OTELCOL_HEALTH_CHECK_ENDPOINT": "0.0.0.0:13133",
    "OTELCOL_TELEMETRY_HOST": "0.0.0.0",
    "OTELCOL_TELEMETRY_PORT": "8888",
}


def env_ref(name: str, default: str | None = None) -> str:
    """``${env:NAME:-default}``: the Collector's env provider substitutes it at start-up."""
    return f"${{env:{name}:-{ENV_VARS[name] if default is None else default}}}"


def env_default(value: str) -> str:
    """The value a Collector resolves *value* to when no variable is set (the default of a reference)."""
    if value.startswith("${env:") and value.endswith("}") and ":-" in value:
        return value[len("${env:"):-1].split(":-", 1)[1]
    return value


def collector_config(
    *,
    exporter: Exporter = "prometheus",
    otlp_grpc_endpoint: str = env_ref("OTELCOL_OTLP_GRPC_ENDPOINT"),
    otlp_http_endpoint: str = env_ref("OTELCOL_OTLP_HTTP_ENDPOINT"),
    prometheus_endpoint: str = env_ref("OTELCOL_PROMETHEUS_ENDPOINT"),
    remote_write_endpoint: str = env_ref("OTELCOL_REMOTE_WRITE_ENDPOINT"),
    traces_endpoint: str | None = env_ref("OTELCOL_TRACES_ENDPOINT"),
    batch_timeout: str = "5s",
    health_check_endpoint: str = env_ref("OTELCOL_HEALTH_CHECK_ENDPOINT"),
) -> dict[str, Any]:
    """A Collector config: ``otlp`` receiver -> ``memory_limiter`` -> ``batch`` -> *exporter*.

    ``exporter="prometheus"`` serves the metrics for Prometheus to scrape at
    ``http://<prometheus_endpoint>/metrics`` (OpenMetrics on request, so histogram
    exemplars reach a Prometheus started with ``--enable-feature=exemplar-storage``);
    ``"prometheusremotewrite"`` pushes them, exemplars included, to
    *remote_write_endpoint* (Prometheus started with ``--web.enable-remote-write-receiver``,
    Mimir, Thanos, Cortex...). Both exporters keep their default name translation,
    which applies the OTel Prometheus-compatibility rules (unit suffix, ``_total``),
    so the series names equal those of the SDK's own ``/metrics``. ``service.name``
    becomes the ``job`` label and ``service.instance.id`` the ``instance`` label.

    Traces go through the same receiver and processors to the OTLP/HTTP endpoint
    *traces_endpoint* (Tempo, Jaeger, another Collector); ``None`` leaves traces out.
    """
    exporters: dict[str, Any]
    if exporter == "prometheus":
        exporters = {"prometheus": {
            "endpoint": prometheus_endpoint,
            "metric_expiration": "10m",
            "enable_open_metrics": True,
            # Every family comes from the one mlops_otel scope: no otel_scope_* labels, so the
            # label sets equal the SDK's own /metrics.
            "without_scope_info": True,
        }}
    elif exporter == "prometheusremotewrite":
        exporters = {"prometheusremotewrite": {
            "endpoint": remote_write_endpoint,
            "tls": {"insecure": env_default(remote_write_endpoint).startswith("http://")},
            "target_info": {"enabled": True},
            "disable_scope_info": True,
        }}
    else:
        raise InvalidValueError("exporter", "'prometheus' or 'prometheusremotewrite'", exporter)
    metric_exporters = list(exporters)
    processors = ["memory_limiter", "batch"]
    pipelines: dict[str, Any] = {"metrics": {
        "receivers": ["otlp"], "processors": processors, "exporters": metric_exporters,
    }}
    if traces_endpoint is not None:
        exporters["otlp_http/traces"] = {"endpoint": traces_endpoint}
        pipelines["traces"] = {"receivers": ["otlp"], "processors": list(processors),
                               "exporters": ["otlp_http/traces"]}
    return {
        "extensions": {"health_check": {"endpoint": health_check_endpoint}},
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": otlp_grpc_endpoint},
            "http": {"endpoint": otlp_http_endpoint},
        }}},
        "processors": {
            # memory_limiter first, so an overloaded Collector refuses data instead of crashing.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25},
            "batch": {"timeout": batch_timeout, "send_batch_size": 8192},
        },
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "pipelines": pipelines,
            # The Collector's own metrics (otelcol_*), on a port of their own.
            "telemetry": {"metrics": {"readers": [{"pull": {"exporter": {"prometheus": {
                "host": env_ref("OTELCOL_TELEMETRY_HOST"),
                "port": env_ref("OTELCOL_TELEMETRY_PORT"),
            }}}}]}},
        },
    }
