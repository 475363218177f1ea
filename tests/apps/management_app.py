"""A service with the management API on a shared store, for the CLI's ``--api`` tests.

Run with ``uvicorn tests.apps.management_app:app`` and ``MLOPS_OTEL_STORE_URL``,
``MLOPS_OTEL_STORE_PREFIX`` and ``MLOPS_OTEL_MANAGEMENT_TOKEN`` set.
"""

from __future__ import annotations

import os

import numpy as np
from fastapi import FastAPI

from mlops_otel.fastapi import get_runtime, instrument_app

app = FastAPI(title="management test service")
instrument_app(
    app,
    store=os.environ["MLOPS_OTEL_STORE_URL"],
    store_prefix=os.environ.get("MLOPS_OTEL_STORE_PREFIX", "mlops"),
    management=True,
    management_token=os.environ.get("MLOPS_OTEL_MANAGEMENT_TOKEN") or None,
)


@app.post("/simulate/drift")
def simulate_drift(model_type: str, version: str, shift: float = 0.0, n: int = 1000) -> dict[str, int]:
    """Test hook: give this worker a detector with a reference and *n* samples shifted by *shift*."""
    rng = np.random.default_rng(5)
    detector = get_runtime(app).drift.get_detector(model_type, version)
    detector.set_reference(anomaly_scores=rng.beta(6, 14, 1000), confidences=rng.beta(18, 2, 1000))
    detector.add_production_samples(np.clip(rng.beta(6, 14, n) + shift, 0, 1), rng.beta(18, 2, n))
    return {"samples": n}
