"""Every name mlops-otel exports: metrics, units, buckets, attributes and spans.

This module is the single source of truth for the telemetry contract. The
exporters, the Prometheus exposition, the Grafana dashboard and the alert rules
are all derived from the :class:`MetricSpec` values defined here, so a name can
only ever be changed in one place.

Naming follows the OpenTelemetry conventions: an instrument has an OTel *name*
and a UCUM *unit*; the Prometheus name is derived from them by the
OpenTelemetry-to-Prometheus compatibility rules (unit suffix, ``_total`` for
monotonic sums), see :func:`prometheus_name`.
"""

from __future__ import annotations

import enum
import re

import attrs
from opentelemetry.semconv._incubating.metrics import http_metrics as _http_incubating
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import http_metrics
from opentelemetry.semconv.schemas import Schemas

__all__ = [
    "ATTR_GEN_AI_PROVIDER_NAME",
    "ATTR_GEN_AI_TOKEN_TYPE",
    "ATTR_GEN_AI_TOKEN_MODALITY",
    "ATTR_GEN_AI_DATA_SOURCE_ID",
    "ATTR_OTEL_ERROR_TYPE",
    "GEN_AI_OPERATION_CHAT",
    "GEN_AI_OPERATION_TEXT_COMPLETION",
    "GEN_AI_OPERATION_RETRIEVAL",
    "GEN_AI_TOKEN_TYPE_INPUT",
    "GEN_AI_TOKEN_TYPE_OUTPUT",
    "GEN_AI_TOKEN_MODALITY_TEXT",
    "ENV_SEMCONV_STABILITY_OPT_IN",
    "GEN_AI_LATEST_EXPERIMENTAL",
    "GEN_AI_DEFAULT_SEMCONV_VERSION",
    "GEN_AI_CLIENT_TOKEN_USAGE",
    "GEN_AI_CLIENT_OPERATION_DURATION",
    "GEN_AI_INFERENCE_INPUT_TOKENS",
    "GEN_AI_INFERENCE_OUTPUT_TOKENS",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GEN_AI_TOKEN_COST",
    "GEN_AI_METRICS_DEFAULT",
    "GEN_AI_METRICS_LATEST",
    "GEN_AI_METRICS",
    "gen_ai_span_name",
    "prometheus_label",
    "AB_ASSIGNMENTS",
    "AB_DECISIONS",
    "AB_RESULTS",
    "AB_VIEW_AGE",
    "ALL_METRICS",
    "ATTR_FEATURE",
    "DRIFT_FEATURE_OVERFLOW",
    "DRIFT_METRICS",
    "DRIFT_REFERENCE_RESTORED",
    "MODEL_EMBEDDING_DRIFT_SCORE",
    "MODEL_FEATURE_DRIFT_SCORE",
    "ATTR_DECISION",
    "ATTR_ERROR_TYPE",
    "ATTR_GEN_AI_INPUT_TOKENS",
    "ATTR_GEN_AI_OPERATION_NAME",
    "ATTR_GEN_AI_OUTPUT_TOKENS",
    "ATTR_GEN_AI_REQUEST_MODEL",
    "ATTR_METRIC",
    "ATTR_MODEL_TYPE",
    "ATTR_MODEL_VERSION",
    "ATTR_REASON",
    "ATTR_STAGE",
    "ATTR_STATUS",
    "ATTR_STORE",
    "ATTR_TEST",
    "ATTR_VARIANT",
    "DIAGNOSIS_DURATION",
    "DIAGNOSIS_ERRORS",
    "DIAGNOSIS_REQUESTS",
    "DRIFT_ALERT",
    "GNN_ANOMALY_SCORE",
    "GNN_CONFIDENCE",
    "GNN_INFERENCE_DURATION",
    "INVALID_MEASUREMENTS",
    "LABEL_OVERFLOW",
    "MODEL_CHAMPION",
    "MODEL_DRIFT_SCORE",
    "MetricKind",
    "MetricSpec",
    "OVERFLOW_LABEL_VALUE",
    "RAG_GENERATION_DURATION",
    "RAG_TOKENS_USED",
    "SDK_METRICS",
    "SEED_METRICS",
    "SPAN_ATTR_AB_TEST",
    "SPAN_ATTR_AB_VARIANT",
    "SPAN_ATTR_ANOMALY_SCORE",
    "SPAN_ATTR_CONFIDENCE",
    "SPAN_ATTR_MODEL_TYPE",
    "SPAN_ATTR_MODEL_VERSION",
    "SPAN_ATTR_REQUEST_NAME",
    "SPAN_ATTR_STAGE",
    "SPAN_DIAGNOSIS",
    "SPAN_GNN_INFERENCE",
    "SPAN_RAG_GENERATION",
    "STAGE_GNN_INFERENCE",
    "STAGE_RAG_GENERATION",
    "STATUS_ERROR",
    "STATUS_SUCCESS",
    "STORE_DROPPED",
    "STORE_FLUSH_ERRORS",
    "STORE_PENDING",
    "STORE_STATE_LOST",
    "VIEW_AGE",
    "ROBUST_METRICS",
    "ATTR_VIEW",
    "TELEMETRY_ERRORS",
    "UNKNOWN_LABEL_VALUE",
    "metric_by_name",
    # shadow traffic and progressive rollout (#14)
    "ATTR_COMPARISON",
    "ATTR_OUTCOME",
    "ATTR_OUTPUT",
    "ROLLOUT_STEP_CHANGES",
    "ROLLOUT_TRAFFIC",
    "SHADOW_DIFFERENCE",
    "SHADOW_DISAGREEMENTS",
    "SHADOW_DURATION",
    "SHADOW_METRICS",
    "SHADOW_OUTPUT_DRIFT",
    "SHADOW_PAIRS",
    "prometheus_name",
    "span_name_for_stage",
    # HTTP server (#16)
    "ATTR_CLIENT_ADDRESS",
    "ATTR_CLIENT_PORT",
    "ATTR_HTTP_REQUEST_METHOD",
    "ATTR_HTTP_REQUEST_METHOD_ORIGINAL",
    "ATTR_HTTP_RESPONSE_STATUS_CODE",
    "ATTR_HTTP_ROUTE",
    "ATTR_NETWORK_PROTOCOL_VERSION",
    "ATTR_SERVER_ADDRESS",
    "ATTR_SERVER_PORT",
    "ATTR_URL_PATH",
    "ATTR_URL_QUERY",
    "ATTR_URL_SCHEME",
    "ATTR_USER_AGENT_ORIGINAL",
    "HTTP_KNOWN_METHODS",
    "HTTP_OTHER_METHOD",
    "HTTP_SCHEMA_URL",
    "HTTP_SERVER_ACTIVE_REQUESTS",
    "HTTP_SERVER_METRICS",
    "HTTP_SERVER_REQUEST_DURATION",
]

# ---------------------------------------------------------------- attributes
ATTR_STATUS = "status"
ATTR_MODEL_VERSION = "model_version"
ATTR_MODEL_TYPE = "model_type"
ATTR_STAGE = "stage"
ATTR_ERROR_TYPE = "error_type"
ATTR_METRIC = "metric"
ATTR_TEST = "test"
ATTR_VARIANT = "variant"
ATTR_DECISION = "decision"
ATTR_STORE = "store"
ATTR_REASON = "reason"

# Span attributes (dotted, OTel style).
SPAN_ATTR_MODEL_TYPE = "mlops.model.type"
SPAN_ATTR_MODEL_VERSION = "mlops.model.version"
SPAN_ATTR_ANOMALY_SCORE = "mlops.gnn.anomaly_score"
SPAN_ATTR_CONFIDENCE = "mlops.gnn.confidence"
SPAN_ATTR_REQUEST_NAME = "mlops.request.name"
SPAN_ATTR_STAGE = "mlops.stage"
SPAN_ATTR_AB_TEST = "mlops.ab.test"
SPAN_ATTR_AB_VARIANT = "mlops.ab.variant"
# OTel GenAI semantic conventions for the RAG stage.
ATTR_GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
ATTR_GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
ATTR_GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ATTR_GEN_AI_OPERATION_NAME = "gen_ai.operation.name"

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
UNKNOWN_LABEL_VALUE = "unknown"
OVERFLOW_LABEL_VALUE = "other"

# --------------------------------------------------------------- stages/spans
STAGE_GNN_INFERENCE = "gnn_inference"
STAGE_RAG_GENERATION = "rag_generation"
SPAN_DIAGNOSIS = "diagnosis"
SPAN_GNN_INFERENCE = "gnn.inference"
SPAN_RAG_GENERATION = "rag.generation"

_STAGE_SPANS = {
    STAGE_GNN_INFERENCE: SPAN_GNN_INFERENCE,
    STAGE_RAG_GENERATION: SPAN_RAG_GENERATION,
}


def span_name_for_stage(stage: str) -> str:
    """Return the span name used for *stage* (``gnn_inference`` -> ``gnn.inference``)."""
    return _STAGE_SPANS.get(stage, stage)


# ------------------------------------------------------------------- metrics
class MetricKind(enum.Enum):
    """The OTel instrument kind of a metric family."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


@attrs.frozen
class MetricSpec:
    """One metric family: OTel name, unit, kind, label keys and buckets."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """The family name in the Prometheus exposition (without ``_bucket`` etc.)."""
        return prometheus_name(self.name, self.unit, self.kind)


_UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "", "%": "percent"}
_ANNOTATION = re.compile(r"\{[^}]*\}")
_INVALID = re.compile(r"[^a-zA-Z0-9_:]+")


def prometheus_name(name: str, unit: str, kind: MetricKind) -> str:
    """Translate an OTel metric to its Prometheus family name.

    Implements the OpenTelemetry "Prometheus and OpenMetrics compatibility"
    rules the Collector applies: invalid characters become ``_``, the unit
    (minus ``{annotations}``) becomes a suffix unless already present, and a
    monotonic counter gets ``_total``.
    """
    base = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIXES.get(_ANNOTATION.sub("", unit), _ANNOTATION.sub("", unit))
    suffix = _INVALID.sub("_", suffix).strip("_")
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind is MetricKind.COUNTER and not base.endswith("_total"):
        base += "_total"
    return base


_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_GNN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_UNIT_INTERVAL_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
_TOKEN_BUCKETS = (50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)

DIAGNOSIS_REQUESTS = MetricSpec(
    "diagnosis_requests", MetricKind.COUNTER, "{request}",
    "Diagnosis requests by outcome and the model version that served them.",
    (ATTR_STATUS, ATTR_MODEL_VERSION),
)
DIAGNOSIS_DURATION = MetricSpec(
    "diagnosis_duration", MetricKind.HISTOGRAM, "s",
    "Wall-clock duration of a diagnosis request or one of its stages.",
    (ATTR_STAGE,), _DURATION_BUCKETS,
)
GNN_INFERENCE_DURATION = MetricSpec(
    "gnn_inference_duration", MetricKind.HISTOGRAM, "s",
    "GNN inference latency.", (ATTR_MODEL_VERSION,), _GNN_BUCKETS,
)
GNN_ANOMALY_SCORE = MetricSpec(
    "gnn_anomaly_score", MetricKind.HISTOGRAM, "{score}",
    "Anomaly score produced by the GNN, in [0, 1].", (ATTR_MODEL_VERSION,), _UNIT_INTERVAL_BUCKETS,
)
GNN_CONFIDENCE = MetricSpec(
    "gnn_confidence", MetricKind.HISTOGRAM, "{score}",
    "Confidence of the GNN prediction, in [0, 1].", (ATTR_MODEL_VERSION,), _CONFIDENCE_BUCKETS,
)
RAG_GENERATION_DURATION = MetricSpec(
    "rag_generation_duration", MetricKind.HISTOGRAM, "s",
    "RAG answer generation latency.", (ATTR_MODEL_VERSION,), _RAG_BUCKETS,
)
RAG_TOKENS_USED = MetricSpec(
    "rag_tokens_used", MetricKind.HISTOGRAM, "{token}",
    "Tokens used by one RAG generation (input plus output).", (ATTR_MODEL_VERSION,), _TOKEN_BUCKETS,
)
MODEL_DRIFT_SCORE = MetricSpec(
    "model_drift_score", MetricKind.GAUGE, "{score}",
    "Drift score of a model version: the largest KS distance over its monitored outputs (0..1).",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)
DIAGNOSIS_ERRORS = MetricSpec(
    "diagnosis_errors", MetricKind.COUNTER, "{error}",
    "Errors by exception type and the stage that raised them.", (ATTR_ERROR_TYPE, ATTR_STAGE),
)

SEED_METRICS: tuple[MetricSpec, ...] = (
    DIAGNOSIS_REQUESTS,
    DIAGNOSIS_DURATION,
    GNN_INFERENCE_DURATION,
    GNN_ANOMALY_SCORE,
    GNN_CONFIDENCE,
    RAG_GENERATION_DURATION,
    RAG_TOKENS_USED,
    MODEL_DRIFT_SCORE,
    DIAGNOSIS_ERRORS,
)

# SDK self-observability and the experimentation/registry families.
INVALID_MEASUREMENTS = MetricSpec(
    "mlops_invalid_measurements", MetricKind.COUNTER, "{measurement}",
    "Measurements rejected as invalid (NaN, infinite, negative or out of range).", (ATTR_METRIC,),
)
LABEL_OVERFLOW = MetricSpec(
    "mlops_label_overflow", MetricKind.COUNTER, "{measurement}",
    "Measurements whose label values were folded into 'other' by the cardinality limit.",
    (ATTR_METRIC,),
)
MODEL_CHAMPION = MetricSpec(
    "model_champion", MetricKind.GAUGE, "{model}",
    "1 for the current champion version of each model type, 0 for versions that were champion.",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)
AB_ASSIGNMENTS = MetricSpec(
    "ab_assignments", MetricKind.COUNTER, "{assignment}",
    "A/B test variant assignments.", (ATTR_TEST, ATTR_VARIANT),
)
AB_RESULTS = MetricSpec(
    "ab_results", MetricKind.COUNTER, "{result}",
    "A/B test results recorded, by variant.", (ATTR_TEST, ATTR_VARIANT),
)
AB_DECISIONS = MetricSpec(
    "ab_decisions", MetricKind.COUNTER, "{decision}",
    "A/B test evaluations by decision (promote, rollback, continue, halt).", (ATTR_TEST, ATTR_DECISION),
)
# --- A/B testing (#12): how old each process's view of the running tests is.
AB_VIEW_AGE = MetricSpec(
    "mlops_ab_view_age", MetricKind.GAUGE, "s",
    "Seconds since the store last answered for this process's view of a model type's A/B test "
    "(served stale while it refreshes in the background).", (ATTR_MODEL_TYPE,),
)
DRIFT_ALERT = MetricSpec(
    "model_drift_alert", MetricKind.GAUGE, "{alert}",
    "1 while the drift alert of a model version is firing (with hysteresis), else 0.",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)
STORE_DROPPED = MetricSpec(
    "mlops_store_dropped", MetricKind.COUNTER, "{write}",
    "Write-behind operations lost: pending buffer full, still pending at close, or rejected by the backend.",
    (ATTR_STORE,),
)
STORE_FLUSH_ERRORS = MetricSpec(
    "mlops_store_flush_errors", MetricKind.COUNTER, "{flush}",
    "Failed write-behind flushes (retried with backoff).", (ATTR_STORE,),
)
STORE_PENDING = MetricSpec(
    "mlops_store_pending", MetricKind.GAUGE, "{write}",
    "Write-behind operations waiting to be flushed.", (ATTR_STORE,),
)
TELEMETRY_ERRORS = MetricSpec(
    "mlops_telemetry_errors", MetricKind.COUNTER, "{error}",
    "Internal telemetry faults that were swallowed to protect the request path.", (ATTR_REASON,),
)

# ---------------------------------------------------------------- robust (#11): store state and views
ATTR_VIEW = "view"
STORE_STATE_LOST = MetricSpec(
    "mlops_store_state_lost", MetricKind.COUNTER, "{event}",
    "Times this process found the shared store's state gone (restarted empty, flushed) and restored what it knew.",
    (ATTR_STORE,),
)
VIEW_AGE = MetricSpec(
    "mlops_view_age", MetricKind.GAUGE, "s",
    "Age of the oldest entry of an in-process view served to the request path (refreshed in the background).",
    (ATTR_VIEW,),
)
ROBUST_METRICS: tuple[MetricSpec, ...] = (STORE_STATE_LOST, VIEW_AGE)

SDK_METRICS: tuple[MetricSpec, ...] = (
    INVALID_MEASUREMENTS,
    LABEL_OVERFLOW,
    MODEL_CHAMPION,
    AB_ASSIGNMENTS,
    AB_RESULTS,
    AB_DECISIONS,
    AB_VIEW_AGE,
    DRIFT_ALERT,
    STORE_DROPPED,
    STORE_FLUSH_ERRORS,
    STORE_PENDING,
    TELEMETRY_ERRORS,
    *ROBUST_METRICS,
)

# ------------------------------------------------- drift: inputs, embeddings, faults (#17)
ATTR_FEATURE = "feature"
MODEL_FEATURE_DRIFT_SCORE = MetricSpec(
    "model_feature_drift_score", MetricKind.GAUGE, "{score}",
    "Drift score of one input feature of a model version: KS distance (numeric) or total variation "
    "distance of the category mix (categorical), 0..1.",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION, ATTR_FEATURE),
)
MODEL_EMBEDDING_DRIFT_SCORE = MetricSpec(
    "model_embedding_drift_score", MetricKind.GAUGE, "{score}",
    "Multivariate drift of a model version's embeddings: squared MMD (Gaussian kernel) against the reference.",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)
DRIFT_REFERENCE_RESTORED = MetricSpec(
    "mlops_drift_reference_restored", MetricKind.COUNTER, "{restore}",
    "Drift references written back from a worker's memory after the store lost them (e.g. restarted empty).",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)
DRIFT_FEATURE_OVERFLOW = MetricSpec(
    "mlops_drift_feature_overflow", MetricKind.COUNTER, "{value}",
    "Feature values not monitored because the detector's feature cap was reached, or not a finite "
    "number or a string.",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION),
)

DRIFT_METRICS: tuple[MetricSpec, ...] = (
    MODEL_FEATURE_DRIFT_SCORE,
    MODEL_EMBEDDING_DRIFT_SCORE,
    DRIFT_REFERENCE_RESTORED,
    DRIFT_FEATURE_OVERFLOW,
)

# ------------------------------------------------- GenAI semantic conventions (collector, #13)
# The OpenTelemetry GenAI conventions on the RAG stage, emitted beside the seed's rag_* names.
# Default: the shape of semantic-conventions v1.41.0; with OTEL_SEMCONV_STABILITY_OPT_IN
# containing "gen_ai_latest_experimental" (read when the Telemetry is created), the latest
# experimental shape of the GenAI conventions repository: per-direction usage histograms and
# per-direction usage counters by modality instead of gen_ai.client.token.usage.
ATTR_GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
ATTR_GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
ATTR_GEN_AI_TOKEN_MODALITY = "gen_ai.token.modality"
ATTR_GEN_AI_DATA_SOURCE_ID = "gen_ai.data_source.id"
#: The OTel ``error.type`` attribute (the seed's own label is ``error_type``).
ATTR_OTEL_ERROR_TYPE = error_attributes.ERROR_TYPE

GEN_AI_OPERATION_CHAT = "chat"
GEN_AI_OPERATION_TEXT_COMPLETION = "text_completion"
GEN_AI_OPERATION_RETRIEVAL = "retrieval"
GEN_AI_TOKEN_TYPE_INPUT = "input"
GEN_AI_TOKEN_TYPE_OUTPUT = "output"
GEN_AI_TOKEN_MODALITY_TEXT = "text"

#: ``OTEL_SEMCONV_STABILITY_OPT_IN`` and the value that selects the latest experimental GenAI shape.
ENV_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST_EXPERIMENTAL = "gen_ai_latest_experimental"
#: The semantic-conventions release whose GenAI shape is emitted by default.
GEN_AI_DEFAULT_SEMCONV_VERSION = "1.41.0"

_GEN_AI_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
_GEN_AI_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

GEN_AI_CLIENT_TOKEN_USAGE = MetricSpec(
    "gen_ai.client.token.usage", MetricKind.HISTOGRAM, "{token}",
    "Number of input and output tokens used per GenAI operation (semantic conventions v1.41.0).",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_REQUEST_MODEL, ATTR_GEN_AI_TOKEN_TYPE),
    _GEN_AI_TOKEN_BUCKETS,
)
GEN_AI_CLIENT_OPERATION_DURATION = MetricSpec(
    "gen_ai.client.operation.duration", MetricKind.HISTOGRAM, "s",
    "GenAI operation duration; error.type is set when the operation failed.",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_REQUEST_MODEL, ATTR_OTEL_ERROR_TYPE),
    _GEN_AI_DURATION_BUCKETS,
)
GEN_AI_INFERENCE_INPUT_TOKENS = MetricSpec(
    "gen_ai.client.inference.usage.input_tokens", MetricKind.HISTOGRAM, "{token}",
    "Input (prompt) tokens per inference operation (latest experimental GenAI conventions).",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_REQUEST_MODEL), _GEN_AI_TOKEN_BUCKETS,
)
GEN_AI_INFERENCE_OUTPUT_TOKENS = MetricSpec(
    "gen_ai.client.inference.usage.output_tokens", MetricKind.HISTOGRAM, "{token}",
    "Output (completion) tokens per inference operation (latest experimental GenAI conventions).",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_REQUEST_MODEL), _GEN_AI_TOKEN_BUCKETS,
)
GEN_AI_USAGE_INPUT_TOKENS = MetricSpec(
    "gen_ai.client.inference.usage.detailed.input_tokens", MetricKind.COUNTER, "{token}",
    "Input tokens used, by modality (latest experimental GenAI conventions).",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_TOKEN_MODALITY, ATTR_GEN_AI_REQUEST_MODEL),
)
GEN_AI_USAGE_OUTPUT_TOKENS = MetricSpec(
    "gen_ai.client.inference.usage.detailed.output_tokens", MetricKind.COUNTER, "{token}",
    "Output tokens used, by modality (latest experimental GenAI conventions).",
    (ATTR_GEN_AI_OPERATION_NAME, ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_TOKEN_MODALITY, ATTR_GEN_AI_REQUEST_MODEL),
)
GEN_AI_TOKEN_COST = MetricSpec(
    "mlops_gen_ai_token_cost", MetricKind.COUNTER, "{USD}",
    "Estimated cost of the tokens used, priced from the user's price file (optional).",
    (ATTR_GEN_AI_PROVIDER_NAME, ATTR_GEN_AI_REQUEST_MODEL, ATTR_GEN_AI_TOKEN_TYPE),
)

#: Emitted by default (semantic conventions v1.41.0).
GEN_AI_METRICS_DEFAULT: tuple[MetricSpec, ...] = (GEN_AI_CLIENT_TOKEN_USAGE, GEN_AI_CLIENT_OPERATION_DURATION)
#: Emitted under ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``.
GEN_AI_METRICS_LATEST: tuple[MetricSpec, ...] = (
    GEN_AI_CLIENT_OPERATION_DURATION, GEN_AI_INFERENCE_INPUT_TOKENS, GEN_AI_INFERENCE_OUTPUT_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS,
)
GEN_AI_METRICS: tuple[MetricSpec, ...] = (
    GEN_AI_CLIENT_TOKEN_USAGE, GEN_AI_CLIENT_OPERATION_DURATION, GEN_AI_INFERENCE_INPUT_TOKENS,
    GEN_AI_INFERENCE_OUTPUT_TOKENS, GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS, GEN_AI_TOKEN_COST,
)


def gen_ai_span_name(operation: str, target: str | None) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` (or ``{data_source.id}`` for retrieval)."""
    return f"{operation} {target}" if target else operation


def prometheus_label(key: str) -> str:
    """A label key as Prometheus names it (``gen_ai.request.model`` -> ``gen_ai_request_model``)."""
    return _INVALID_LABEL.sub("_", key)


_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")

# ------------------------------------------------ shadow traffic and progressive rollout (#14)
ATTR_OUTCOME = "outcome"
ATTR_COMPARISON = "comparison"
ATTR_OUTPUT = "output"

_DIFFERENCE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

SHADOW_PAIRS = MetricSpec(
    "shadow_pairs", MetricKind.COUNTER, "{pair}",
    "Shadowed requests by outcome: completed, error (the challenger raised or returned an invalid output) "
    "or dropped (queue full or left at close).",
    (ATTR_MODEL_TYPE, ATTR_OUTCOME),
)
SHADOW_DURATION = MetricSpec(
    "shadow_challenger_duration", MetricKind.HISTOGRAM, "s",
    "Latency of the shadow challenger on one request (off the request path).",
    (ATTR_MODEL_TYPE, ATTR_MODEL_VERSION), _GNN_BUCKETS,
)
SHADOW_DIFFERENCE = MetricSpec(
    "shadow_output_difference", MetricKind.HISTOGRAM, "{score}",
    "Absolute difference between the challenger's and the champion's output, per declared comparison.",
    (ATTR_MODEL_TYPE, ATTR_COMPARISON), _DIFFERENCE_BUCKETS,
)
SHADOW_DISAGREEMENTS = MetricSpec(
    "shadow_disagreements", MetricKind.COUNTER, "{pair}",
    "Completed shadow pairs on which challenger and champion disagreed, per declared comparison.",
    (ATTR_MODEL_TYPE, ATTR_COMPARISON),
)
SHADOW_OUTPUT_DRIFT = MetricSpec(
    "shadow_output_drift", MetricKind.GAUGE, "{score}",
    "KS distance between the challenger's and the champion's recent values of an output (0..1).",
    (ATTR_MODEL_TYPE, ATTR_OUTPUT),
)
ROLLOUT_TRAFFIC = MetricSpec(
    "rollout_traffic", MetricKind.GAUGE, "%",
    "Treatment traffic share of a progressive rollout's current step (0 once rolled back).",
    (ATTR_TEST,),
)
ROLLOUT_STEP_CHANGES = MetricSpec(
    "rollout_step_changes", MetricKind.COUNTER, "{change}",
    "Progressive rollout step changes by decision (advance, rollback, handover), counted once by the "
    "worker whose compare-and-set made it.",
    (ATTR_TEST, ATTR_DECISION),
)

SHADOW_METRICS: tuple[MetricSpec, ...] = (
    SHADOW_PAIRS,
    SHADOW_DURATION,
    SHADOW_DIFFERENCE,
    SHADOW_DISAGREEMENTS,
    SHADOW_OUTPUT_DRIFT,
    ROLLOUT_TRAFFIC,
    ROLLOUT_STEP_CHANGES,
)

# ------------------------------------------------- HTTP server (#16): instrument_app's HTTP layer
# OpenTelemetry's *stable* HTTP semantic conventions, as emitted by mlops_otel.fastapi's
# HttpServerMiddleware (``instrument_app(..., instrument_http="light")``, the default). These go
# through the OTel TracerProvider/MeterProvider (the given or global one), not through mlops-otel's
# own exposition, so they are not part of ALL_METRICS. Names come from the
# opentelemetry-semantic-conventions package, never typed here; only the buckets are written out
# (the conventions' advised explicit boundaries, which that package does not export).
ATTR_HTTP_REQUEST_METHOD = http_attributes.HTTP_REQUEST_METHOD
ATTR_HTTP_REQUEST_METHOD_ORIGINAL = http_attributes.HTTP_REQUEST_METHOD_ORIGINAL
ATTR_HTTP_RESPONSE_STATUS_CODE = http_attributes.HTTP_RESPONSE_STATUS_CODE
ATTR_HTTP_ROUTE = http_attributes.HTTP_ROUTE
ATTR_URL_SCHEME = url_attributes.URL_SCHEME
ATTR_URL_PATH = url_attributes.URL_PATH
ATTR_URL_QUERY = url_attributes.URL_QUERY
ATTR_SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
ATTR_SERVER_PORT = server_attributes.SERVER_PORT
ATTR_CLIENT_ADDRESS = client_attributes.CLIENT_ADDRESS
ATTR_CLIENT_PORT = client_attributes.CLIENT_PORT
ATTR_NETWORK_PROTOCOL_VERSION = network_attributes.NETWORK_PROTOCOL_VERSION
ATTR_USER_AGENT_ORIGINAL = user_agent_attributes.USER_AGENT_ORIGINAL
#: The methods ``http.request.method`` keeps; any other is reported as ``_OTHER``.
HTTP_KNOWN_METHODS = frozenset(m.value for m in http_attributes.HttpRequestMethodValues) - {"_OTHER"}
HTTP_OTHER_METHOD = http_attributes.HttpRequestMethodValues.OTHER.value
#: The schema URL OTel's own HTTP instrumentations report in their stable mode.
HTTP_SCHEMA_URL = Schemas.V1_21_0.value

HTTP_SERVER_REQUEST_DURATION = MetricSpec(
    http_metrics.HTTP_SERVER_REQUEST_DURATION, MetricKind.HISTOGRAM, "s", "Duration of HTTP server requests.",
    (ATTR_HTTP_REQUEST_METHOD, ATTR_URL_SCHEME, ATTR_HTTP_ROUTE, ATTR_HTTP_RESPONSE_STATUS_CODE,
     ATTR_NETWORK_PROTOCOL_VERSION, ATTR_OTEL_ERROR_TYPE),
    (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
)
#: An OTel up-down counter: a gauge in Prometheus.
HTTP_SERVER_ACTIVE_REQUESTS = MetricSpec(
    _http_incubating.HTTP_SERVER_ACTIVE_REQUESTS, MetricKind.GAUGE, "{request}",
    "Number of active HTTP server requests.", (ATTR_HTTP_REQUEST_METHOD, ATTR_URL_SCHEME),
)
HTTP_SERVER_METRICS: tuple[MetricSpec, ...] = (HTTP_SERVER_REQUEST_DURATION, HTTP_SERVER_ACTIVE_REQUESTS)

ALL_METRICS: tuple[MetricSpec, ...] = SEED_METRICS + SDK_METRICS + DRIFT_METRICS + GEN_AI_METRICS + SHADOW_METRICS

_BY_NAME = {m.name: m for m in ALL_METRICS}


def metric_by_name(name: str) -> MetricSpec:
    """Return the spec of the metric with OTel *name* (raises :class:`KeyError`)."""
    return _BY_NAME[name]
