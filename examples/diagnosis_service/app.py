"""The seed's diagnosis service on mlops-otel: A/B-tested GNN versions, drift monitoring, RAG.

Run it with ``uvicorn examples.diagnosis_service.app:app`` (configured by the
``MLOPS_OTEL_*`` and ``OTEL_*`` environment variables, read at start-up) or build
one with :func:`create_app`. ``POST /diagnosis/create`` follows the seed's flow in
one ``runtime.prediction()`` block (assign a variant, run that GNN version, record the
metrics, the drift sample, the registry's running metrics and the A/B result), then
writes the diagnosis with the RAG stage.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from mlops_otel import Runtime, semconv
from mlops_otel.fastapi import HttpInstrumentation, get_runtime, instrument_app
from mlops_otel.metrics import record_rag_metrics, track_diagnosis_request, track_stage
from mlops_otel.validation import InvalidValueError

from .equipment import EquipmentFleet, UnknownEquipmentError
from .gnn import GNN_VERSIONS, EquipmentGNN, ModelError
from .rag import RAGError, RAGPipeline

__all__ = ["MODEL_TYPE", "DiagnosisService", "app", "create_app", "create_plain_app"]

MODEL_TYPE = "gnn"
CHAMPION = "v2.1.0"
#: Share of simulated readings that carry a real fault.
FAULT_PROBABILITY = 0.1
REFERENCE_SIZE = 2_000


@attrs.define(eq=False)
class DiagnosisService:
    """The models and the simulated sensor feed of one worker."""

    fleet: EquipmentFleet = attrs.field(factory=EquipmentFleet)
    models: dict[str, EquipmentGNN] = attrs.field(factory=lambda: {v: EquipmentGNN(v) for v in GNN_VERSIONS})
    rag: RAGPipeline = attrs.field(factory=RAGPipeline)
    seed: int = 0
    #: How far the simulated sensors have drifted (0 = as at validation time).
    drift_level: float = 0.0
    _rng: np.random.Generator = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def readings(self, equipment_id: str) -> Any:
        """One simulated window of readings of *equipment_id* at the current drift level."""
        with self._lock:  # numpy generators are not thread-safe
            return self.fleet.simulate(equipment_id, self._rng, drift=self.drift_level,
                                       fault_probability=FAULT_PROBABILITY)

    def validation_outputs(self, version: str, size: int = REFERENCE_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores and confidences of *version* on undrifted traffic (the drift reference)."""
        rng = np.random.default_rng(10_000 + self.seed)
        model = self.models[version]
        ids = self.fleet.sample_ids(rng, size)
        by_type: dict[str, list[Any]] = {}
        for equipment_id in ids:
            r = self.fleet.simulate(equipment_id, rng, fault_probability=FAULT_PROBABILITY)
            by_type.setdefault(r.equipment_type, []).append(r.values)
        scores, confidences = [], []
        for equipment_type, values in by_type.items():
            s, c = model.score_values(np.stack(values), equipment_type)
            scores.append(s)
            confidences.append(c)
        return np.concatenate(scores), np.concatenate(confidences)


class DiagnosisRequest(BaseModel):
    """A diagnosis request for one unit of equipment."""

    equipment_id: str = Field(examples=["PMP-001"])
    user_id: str | None = Field(default=None, description="Who asked; drives the A/B assignment.")


class DiagnosisResponse(BaseModel):
    """The diagnosis: the GNN's verdict and the RAG stage's maintenance answer."""

    equipment_id: str
    equipment_type: str
    model_version: str
    variant: str
    ab_test: str | None
    anomaly_score: float
    confidence: float
    top_sensors: list[str]
    diagnosis: str
    sources: list[str]
    tokens_used: int


class DriftLevel(BaseModel):
    """The simulated sensor drift (demo knob)."""

    level: float = Field(ge=0.0, le=5.0)


def setup_models(runtime: Runtime, service: DiagnosisService) -> None:
    """Register both GNN versions, make v2.1.0 champion if none, set drift references."""
    registry = runtime.registry
    known = {v.version for v in registry.list_versions(MODEL_TYPE)}
    for version in GNN_VERSIONS:  # v2.1.0 first: the first version registered becomes champion
        if version not in known:
            # A worker sharing the store may register it first.
            with contextlib.suppress(InvalidValueError):
                registry.register(MODEL_TYPE, version, metadata={"source": "examples.diagnosis_service"})
    if registry.get_champion(MODEL_TYPE) is None:
        registry.promote(MODEL_TYPE, CHAMPION, reason="initial champion of the example service")
    for version in GNN_VERSIONS:
        detector = runtime.drift.get_detector(MODEL_TYPE, version)
        scores, confidences = service.validation_outputs(version)
        detector.set_reference(anomaly_scores=scores, confidences=confidences)


def create_app(
    *,
    runtime_factory: Callable[[], Runtime] | None = None,
    management_token: str | None = None,
    service: DiagnosisService | None = None,
    instrument_http: HttpInstrumentation = "light",
) -> FastAPI:
    """Build the example service; the mlops-otel runtime lives in the app's lifespan.

    *instrument_http* picks the HTTP server spans and metrics, as for ``instrument_app``: mlops-otel's
    lean middleware (``"light"``, the default), the OTel FastAPI instrumentation (``"otel"``) or none.
    """
    svc = service if service is not None else DiagnosisService()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_models(get_runtime(app), svc)
        yield

    app = FastAPI(title="Equipment diagnosis service (mlops-otel example)", lifespan=lifespan)
    app.state.service = svc

    @app.post("/diagnosis/create", response_model=DiagnosisResponse, tags=["diagnosis"])
    @track_diagnosis_request("create_diagnosis")
    async def create_diagnosis(body: DiagnosisRequest, request: Request) -> DiagnosisResponse:
        runtime = get_runtime(request.app)
        try:
            readings = svc.readings(body.equipment_id)
        except UnknownEquipmentError as exc:
            raise HTTPException(404, str(exc)) from None
        # 1-5. One prediction: the A/B test picks the GNN version, the block runs inside the
        # gnn.inference span, and on exit the seed metrics, the registry's running metrics, the
        # drift window and the A/B result each record it once (a ModelError as an error in all).
        try:
            async with runtime.prediction(MODEL_TYPE, user_id=body.user_id, default_version=CHAMPION) as p:
                version = p.version or CHAMPION
                result = svc.models[version].predict(readings)
                p.observe(anomaly_score=result.anomaly_score, confidence=result.confidence,
                          inference_time_ms=result.inference_time_ms)
        except ModelError as exc:
            raise HTTPException(503, f"GNN {p.version} failed: {exc}") from exc
        # 6. RAG: write the diagnosis.
        try:
            with track_stage(semconv.STAGE_RAG_GENERATION, model_version=svc.rag.model_version):
                answer = svc.rag.generate(result, telemetry=runtime.telemetry)  # + GenAI conventions
                record_rag_metrics(answer.model_version, answer.generation_time_ms, answer.total_tokens,
                                   input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
        except RAGError as exc:
            raise HTTPException(503, f"RAG failed: {exc}") from exc
        return DiagnosisResponse(
            equipment_id=result.equipment_id, equipment_type=result.equipment_type, model_version=version,
            variant=p.variant, ab_test=p.test, anomaly_score=result.anomaly_score,
            confidence=result.confidence, top_sensors=list(result.top_nodes), diagnosis=answer.answer,
            sources=list(answer.sources), tokens_used=answer.total_tokens,
        )

    @app.get("/equipment", tags=["diagnosis"])
    async def equipment() -> list[str]:
        """Ids of the simulated fleet."""
        return list(svc.fleet.ids)

    @app.post("/simulation/drift", response_model=DriftLevel, tags=["simulation"])
    async def set_drift(body: DriftLevel) -> DriftLevel:
        """Demo knob: shift the simulated sensors (as a changed input pipeline would)."""
        svc.drift_level = body.level
        return body

    instrument_app(
        app, runtime_factory=runtime_factory or Runtime.from_env, management=True,
        management_token=management_token, instrument_http=instrument_http,
    )
    return app


def create_plain_app(*, service: DiagnosisService | None = None) -> FastAPI:
    """The same models and flow without mlops-otel (champion only): the load test's baseline."""
    svc = service if service is not None else DiagnosisService()
    app = FastAPI(title="Equipment diagnosis service (no SDK baseline)")

    @app.post("/diagnosis/create", response_model=DiagnosisResponse)
    async def create_diagnosis(body: DiagnosisRequest) -> DiagnosisResponse:
        try:
            readings = svc.readings(body.equipment_id)
        except UnknownEquipmentError as exc:
            raise HTTPException(404, str(exc)) from None
        try:
            result = svc.models[CHAMPION].predict(readings)
            answer = svc.rag.generate(result)
        except (ModelError, RAGError) as exc:
            raise HTTPException(503, str(exc)) from exc
        return DiagnosisResponse(
            equipment_id=result.equipment_id, equipment_type=result.equipment_type, model_version=CHAMPION,
            variant="champion", ab_test=None, anomaly_score=result.anomaly_score, confidence=result.confidence,
            top_sensors=list(result.top_nodes), diagnosis=answer.answer, sources=list(answer.sources),
            tokens_used=answer.total_tokens,
        )

    @app.get("/equipment")
    async def equipment() -> list[str]:
        return list(svc.fleet.ids)

    return app


def _app_from_env() -> FastAPI:
    import os

    # Read when uvicorn imports this module, not when mlops_otel is imported.
    if os.environ.get("EXAMPLE_WITHOUT_SDK") == "1":
        return create_plain_app()
    return create_app(management_token=os.environ.get("MLOPS_OTEL_MANAGEMENT_TOKEN") or None)


app = _app_from_env()
