"""The seed's recording API, on the default :class:`~mlops_otel.telemetry.Telemetry`.

Each function takes an optional keyword ``telemetry=`` to record into an
explicit instance instead of the lazily created default (see
:func:`mlops_otel.configure`).

>>> from mlops_otel.metrics import record_gnn_metrics
>>> record_gnn_metrics("v2.1.0", inference_time_ms=42.0, anomaly_score=0.31, confidence=0.93)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .telemetry import StageTracker, Telemetry, default_telemetry, request_decorator

__all__ = [
    "metrics_app",
    "record_error",
    "record_gnn_metrics",
    "record_rag_metrics",
    "set_drift_score",
    "track_diagnosis_request",
    "track_stage",
]

F = TypeVar("F", bound=Callable[..., Any])


def _t(telemetry: Telemetry | None) -> Telemetry:
    return default_telemetry() if telemetry is None else telemetry


def record_gnn_metrics(
    model_version: str,
    inference_time_ms: float,
    anomaly_score: float,
    confidence: float,
    *,
    telemetry: Telemetry | None = None,
) -> None:
    """Record one GNN inference (latency in ms, anomaly score and confidence in [0, 1])."""
    _t(telemetry).record_gnn_metrics(model_version, inference_time_ms, anomaly_score, confidence)


def record_rag_metrics(
    model_version: str,
    generation_time_ms: float,
    tokens_used: float,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    telemetry: Telemetry | None = None,
) -> None:
    """Record one RAG generation (latency in ms and tokens used)."""
    _t(telemetry).record_rag_metrics(
        model_version, generation_time_ms, tokens_used, input_tokens=input_tokens, output_tokens=output_tokens
    )


def record_error(error_type: str, stage: str, *, telemetry: Telemetry | None = None) -> None:
    """Count one error in ``diagnosis_errors_total{error_type,stage}``."""
    _t(telemetry).record_error(error_type, stage)


def set_drift_score(
    model_type: str, model_version: str, score: float, *, telemetry: Telemetry | None = None
) -> None:
    """Set ``model_drift_score{model_type,model_version}``."""
    _t(telemetry).set_drift_score(model_type, model_version, score)


def track_diagnosis_request(name: str, *, telemetry: Telemetry | None = None) -> Callable[[F], F]:
    """Decorate a sync or async handler: count success/error, time it, open a ``diagnosis`` span.

    Without *telemetry* the default instance is looked up at call time, so a
    later :func:`mlops_otel.configure` still applies to decorated functions.
    """
    if telemetry is not None:
        return telemetry.track_diagnosis_request(name)
    # The default is looked up per call: configure() may run after the decoration.
    return request_decorator(name, lambda: default_telemetry().request_scope(name))


def track_stage(
    stage: str,
    model_version: str | None = None,
    *,
    model_type: str | None = None,
    telemetry: Telemetry | None = None,
) -> StageTracker:
    """Time *stage* into ``diagnosis_duration_seconds``, open its span, count its errors.

    Usable as ``with track_stage(...)`` and ``async with track_stage(...)``.
    """
    return _t(telemetry).track_stage(stage, model_version, model_type=model_type)


def metrics_app(*, telemetry: Telemetry | None = None) -> Callable[..., Awaitable[None]]:
    """An ASGI app with the Prometheus exposition: ``app.mount("/metrics", metrics_app())``.

    Without *telemetry* each request serves the default in force at that moment, so
    mounting at import time and calling :func:`mlops_otel.configure` at start-up works.
    """
    if telemetry is not None:
        return telemetry.metrics_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await default_telemetry().metrics_app()(scope, receive, send)

    return app
