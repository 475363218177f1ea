"""OpenTelemetry Collector configurations: OTLP in, Prometheus (pull or remote write) out."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["collector_config"]

Exporter = Literal["prometheus", "prometheusremotewrite"]


def collector_config(
    *,
    exporter: Exporter = "prometheus",
    otlp_grpc_endpoint: str = "0.0.0.0:4317",
    otlp_http_endpoint: str = "0.0.0.0:4318",
    prometheus_endpoint: str = "0.0.0.0:8889",
    remote_write_endpoint: str = "http://prometheus:9090/api/v1/write",
    batch_timeout: str = "5s",
    health_check_endpoint: str = "0.0.0.0:13133",
) -> dict[str, Any]:
    """A Collector config: ``otlp`` receiver -> ``memory_limiter`` -> ``batch`` -> *exporter*.

    ``exporter="prometheus"`` serves the metrics for Prometheus to scrape at
    ``http://<prometheus_endpoint>/metrics``; ``"prometheusremotewrite"`` pushes
    them to *remote_write_endpoint* (Prometheus started with
    ``--web.enable-remote-write-receiver``, Mimir, Thanos, Cortex...). Both
    exporters keep their default name translation, which applies the OTel
    Prometheus-compatibility rules (unit suffix, ``_total``), so the series
    names equal those of the SDK's own ``/metrics``. ``service.name`` becomes
    the ``job`` label and ``service.instance.id`` the ``instance`` label.
    """
    exporters: dict[str, Any]
    if exporter == "prometheus":
        exporters = {"prometheus": {"endpoint": prometheus_endpoint, "metric_expiration": "10m"}}
    elif exporter == "prometheusremotewrite":
        exporters = {"prometheusremotewrite": {
            "endpoint": remote_write_endpoint,
            "tls": {"insecure": remote_write_endpoint.startswith("http://")},
            "target_info": {"enabled": True},
        }}
    else:
        raise ValueError(f"exporter must be 'prometheus' or 'prometheusremotewrite', got {exporter!r}")
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
            "pipelines": {"metrics": {
                "receivers": ["otlp"],
                "processors": ["memory_limiter", "batch"],
                "exporters": list(exporters),
            }},
        },
    }
