"""The service the end-to-end shadow benchmark loads: one model endpoint, shadow off or on.

``MLOPS_BENCH_SHADOW`` = ``off`` | ``thread`` | ``process`` (read when uvicorn imports this module):
the challenger (the same numpy model) runs on 100 % of requests on a worker thread or in a
one-process pool, after the response's prediction is recorded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI

from mlops_otel import Runtime, Settings
from mlops_otel.shadow import Difference, Flip, ShadowConfig, ShadowRunner

from .bench_shadow import model

MODE = os.environ.get("MLOPS_BENCH_SHADOW", "off")
_INPUTS = [np.random.default_rng(i).normal(size=256) for i in range(64)]


def create_app(mode: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rt = Runtime.create(Settings(drift={"check_interval": None}), store="memory://")
        rt.registry.register("gnn", "v2.1.0")
        state["rt"] = rt
        pool = None
        if mode != "off":
            if mode == "process":
                pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
                pool.submit(model, _INPUTS[0]).result()
            cfg = ShadowConfig(model_type="gnn", challenger_version="v2.2.0", queue_size=10_000, comparisons=[
                Difference("anomaly_score", 0.1), Flip("anomaly_score", 0.5)])
            state["runner"] = ShadowRunner(cfg, model, telemetry=rt.telemetry, executor=pool)
        yield
        if "runner" in state:
            state["runner"].close(timeout=10.0)
        if pool is not None:
            pool.shutdown()
        rt.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": "rt" in state}

    @app.get("/shadow")
    def shadow() -> dict[str, Any]:
        runner = state.get("runner")
        if runner is None:
            return {}
        runner.drain(30.0)
        report = runner.report()
        return {"submitted": report.submitted, "completed": report.completed, "dropped": report.dropped}

    @app.post("/predict/{i}")
    def predict(i: int) -> dict[str, float]:
        x = _INPUTS[i % len(_INPUTS)]
        runner = state.get("runner")
        rt: Runtime = state["rt"]
        with rt.prediction("gnn", user_id=f"u{i}", shadow=None if runner is None else runner.bind(x)) as p:
            out = model(x)
            p.observe(anomaly_score=out["anomaly_score"], confidence=min(1.0, out["confidence"]))
        return out

    return app


app = create_app(MODE)
