"""A service with no mlops-otel setup code: only the seed's recording calls.

Run under ``opentelemetry-instrument uvicorn tests.apps.zero_code_app:app``.
"""

from __future__ import annotations

from fastapi import FastAPI

from mlops_otel.metrics import record_gnn_metrics, track_diagnosis_request, track_stage

app = FastAPI()


@app.post("/diagnosis/create")
@track_diagnosis_request("create_diagnosis")
async def create_diagnosis(equipment_id: str) -> dict[str, object]:
    async with track_stage("gnn_inference", model_version="v2.1.0"):
        record_gnn_metrics("v2.1.0", inference_time_ms=12.5, anomaly_score=0.42, confidence=0.91)
    return {"equipment_id": equipment_id, "anomaly_score": 0.42}
