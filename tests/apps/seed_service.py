"""A small seed-style diagnosis service for the Prometheus scrape test.

Records through the seed's module-level API (``mlops_otel.metrics``) on the
lazily created default telemetry and mounts the exposition at ``/metrics`` as
the seed does. Run with ``uvicorn tests.apps.seed_service:app``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from mlops_otel.metrics import (
    metrics_app,
    record_gnn_metrics,
    record_rag_metrics,
    set_drift_score,
    track_diagnosis_request,
    track_stage,
)

app = FastAPI()
app.mount("/metrics", metrics_app())


@track_diagnosis_request("create_diagnosis")
async def _diagnose(model_version: str, fail: bool) -> dict[str, object]:
    async with track_stage("gnn_inference", model_version=model_version):
        record_gnn_metrics(model_version, inference_time_ms=40.0, anomaly_score=0.42, confidence=0.91)
    async with track_stage("rag_generation", model_version=model_version):
        if fail:
            raise TimeoutError("the language model did not answer")
        record_rag_metrics(model_version, generation_time_ms=1500.0, tokens_used=800)
    set_drift_score("gnn", model_version, 0.12)
    return {"model_version": model_version, "anomaly_score": 0.42}


@app.post("/diagnosis/create", response_model=None)
async def create_diagnosis(model_version: str = "v2.1.0", fail: bool = False) -> dict[str, object] | JSONResponse:
    try:
        return await _diagnose(model_version, fail)
    except TimeoutError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=504)
