"""Helpers for asserting on mlops-otel telemetry in your own tests.

>>> from mlops_otel.telemetry import Telemetry
>>> from mlops_otel.testing import sample_value
>>> tel = Telemetry()
>>> tel.record_error("TimeoutError", "rag_generation")
>>> sample_value(tel, "diagnosis_errors_total", error_type="TimeoutError", stage="rag_generation")
1.0
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .telemetry import Telemetry, default_telemetry

__all__ = ["sample_value", "samples"]


def samples(telemetry: Telemetry | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every Prometheus sample of *telemetry* keyed by (sample name, label items)."""
    tel = default_telemetry() if telemetry is None else telemetry
    text = tel.render_prometheus().decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def sample_value(telemetry: Telemetry | None, name: str, /, **labels: str) -> float | None:
    """The value of Prometheus sample *name* with exactly *labels*, or ``None``.

    *name* is the exposition name, e.g. ``diagnosis_requests_total`` or
    ``gnn_confidence_count``; pass ``le="0.9"`` for a histogram bucket.
    """
    return samples(telemetry).get((name, frozenset(labels.items())))
