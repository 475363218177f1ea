"""Recording, spans and export: the layer every other part of mlops-otel records through."""

from ._aggregate import FamilySnapshot, SeriesSnapshot
from ._default import default_telemetry, set_default_telemetry, use_default_resolver
from ._deferred import Deferred
from ._fused import PredictionWrites
from ._genai import GenAIOperation, GenAIRetrieval, GenAIShape, TokenPrices, gen_ai_shape_from_env
from ._merge import merge_snapshots, snapshot_from_json, snapshot_to_json, subtract_snapshots
from ._otlp import MetricsExporter
from ._telemetry import NO_SDK_RECHECK_S, Mode, StageTracker, Telemetry, request_decorator, tracer_cannot_record

__all__ = [
    "NO_SDK_RECHECK_S",
    "Deferred",
    "FamilySnapshot",
    "GenAIOperation",
    "GenAIRetrieval",
    "GenAIShape",
    "MetricsExporter",
    "Mode",
    "PredictionWrites",
    "SeriesSnapshot",
    "StageTracker",
    "Telemetry",
    "TokenPrices",
    "default_telemetry",
    "gen_ai_shape_from_env",
    "merge_snapshots",
    "request_decorator",
    "set_default_telemetry",
    "snapshot_from_json",
    "snapshot_to_json",
    "subtract_snapshots",
    "tracer_cannot_record",
    "use_default_resolver",
]
