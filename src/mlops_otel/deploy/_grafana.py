"""The Grafana dashboard: one or more panels for every metric family of :mod:`mlops_otel.semconv`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from .. import semconv
from ..semconv import MetricSpec
from ._prometheus import DISAGREEMENT_THRESHOLD, DRIFT_THRESHOLD, shadow_disagreement_expr

__all__ = ["DASHBOARD_UID", "Panel", "dashboard_panels", "grafana_dashboard"]

DASHBOARD_UID = "mlops-otel-diagnosis"

# Grafana replaces these when it runs a query; tests substitute concrete values to parse the PromQL.
RATE = "$__rate_interval"
JOB = 'job=~"$job"'
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@attrs.frozen
class Panel:
    """One dashboard panel: its queries (PromQL, legend) and the families they read."""

    title: str
    metrics: tuple[MetricSpec, ...]
    targets: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    thresholds: tuple[float, ...] = ()
    max: float | None = None

    @property
    def description(self) -> str:
        """The families' semconv descriptions (shown as the panel's tooltip)."""
        return " ".join(f"{m.prometheus_name}: {m.description}" for m in self.metrics)


def _sel(spec: MetricSpec, suffix: str = "", matchers: str = "") -> str:
    extra = f",{matchers}" if matchers else ""
    return f"{spec.prometheus_name}{suffix}{{{JOB}{extra}}}"


def _rate(spec: MetricSpec, by: Sequence[str], suffix: str = "") -> str:
    return f"sum by ({', '.join(by)}) (rate({_sel(spec, suffix)}[{RATE}]))"


def _quantile(spec: MetricSpec, q: float, by: Sequence[str]) -> str:
    return f"histogram_quantile({q!r}, {_rate(spec, ('le', *by), '_bucket')})"


def _mean(spec: MetricSpec, by: Sequence[str]) -> str:
    return f"{_rate(spec, by, '_sum')}\n/\n{_rate(spec, by, '_count')}"


def _legend(by: Sequence[str], prefix: str = "") -> str:
    return " ".join([*([prefix] if prefix else []), *(f"{{{{{label}}}}}" for label in by)])


def _latency(title: str, spec: MetricSpec) -> Panel:
    by = spec.labels
    return Panel(
        title, (spec,),
        tuple((_quantile(spec, q, by), _legend(by, f"p{round(q * 100)}")) for q in (0.5, 0.95, 0.99)),
        unit="s",
    )


def _score(title: str, spec: MetricSpec, q: float) -> Panel:
    by = spec.labels
    return Panel(
        title, (spec,),
        ((_mean(spec, by), _legend(by, "mean")), (_quantile(spec, q, by), _legend(by, f"p{round(q * 100)}"))),
        unit="percentunit", max=1.0,
    )


def _per_second(title: str, *specs: MetricSpec, unit: str = "ops") -> Panel:
    return Panel(title, specs, tuple((_rate(s, s.labels), _legend(s.labels)) for s in specs), unit=unit)


def _by_labels(spec: MetricSpec) -> str:
    return f"max by ({', '.join(spec.labels)}) ({_sel(spec)})"


def _gen_ai_panels() -> tuple[Panel, ...]:
    """GenAI panels: the v1.41.0 families (default) and the latest experimental ones (opt-in)."""
    s = semconv
    model, token_type = s.prometheus_label(s.ATTR_GEN_AI_REQUEST_MODEL), s.prometheus_label(s.ATTR_GEN_AI_TOKEN_TYPE)
    error = s.prometheus_label(s.ATTR_OTEL_ERROR_TYPE)
    modality = s.prometheus_label(s.ATTR_GEN_AI_TOKEN_MODALITY)
    duration, usage, cost = s.GEN_AI_CLIENT_OPERATION_DURATION, s.GEN_AI_CLIENT_TOKEN_USAGE, s.GEN_AI_TOKEN_COST
    latest_in, latest_out = s.GEN_AI_INFERENCE_INPUT_TOKENS, s.GEN_AI_INFERENCE_OUTPUT_TOKENS
    detailed_in, detailed_out = s.GEN_AI_USAGE_INPUT_TOKENS, s.GEN_AI_USAGE_OUTPUT_TOKENS
    return (
        Panel("GenAI operation duration (p50/p95) by model and error.type", (duration,), tuple(
            (_quantile(duration, q, (model, error)), _legend((model, error), f"p{round(q * 100)}"))
            for q in (0.5, 0.95)
        ), unit="s"),
        Panel("GenAI tokens per second by type (gen_ai.client.token.usage, v1.41.0)", (usage,), (
            (_rate(usage, (model, token_type), "_sum"), _legend((model, token_type))),
        )),
        Panel("GenAI tokens per operation, p95 (latest experimental)", (latest_in, latest_out), (
            (_quantile(latest_in, 0.95, (model,)), _legend((model,), "input p95")),
            (_quantile(latest_out, 0.95, (model,)), _legend((model,), "output p95")),
        )),
        Panel("GenAI tokens per second by modality (latest experimental)", (detailed_in, detailed_out), (
            (_rate(detailed_in, (model, modality)), _legend((model, modality), "input")),
            (_rate(detailed_out, (model, modality)), _legend((model, modality), "output")),
        )),
        Panel("GenAI token cost (USD per hour, from the price file)", (cost,), (
            (f"3600 * {_rate(cost, (model, token_type))}", _legend((model, token_type))),
        ), unit="currencyUSD"),
    )


def _http_panels() -> tuple[Panel, ...]:
    """instrument_app's HTTP layer (#16): OTel's stable HTTP conventions, exported through OTLP (the Collector)."""
    s = semconv
    duration, active = s.HTTP_SERVER_REQUEST_DURATION, s.HTTP_SERVER_ACTIVE_REQUESTS
    route, status = s.prometheus_label(s.ATTR_HTTP_ROUTE), s.prometheus_label(s.ATTR_HTTP_RESPONSE_STATUS_CODE)
    method, error = s.prometheus_label(s.ATTR_HTTP_REQUEST_METHOD), s.prometheus_label(s.ATTR_OTEL_ERROR_TYPE)
    failed = f'{duration.prometheus_name}_count{{{JOB},{error}!=""}}'
    requests = _rate(duration, ("job", route), "_count")
    # `or 0 * requests`: a route with requests but no errors shows 0, not "No data" (the numerator is empty).
    error_ratio = (f"(sum by (job, {route}) (rate({failed}[{RATE}]))\nor\n0 * {requests})\n/\n"
                   f"{requests}")
    return (
        Panel("HTTP requests per second by route and status", (duration,),
              ((_rate(duration, (method, route, status), "_count"), _legend((method, route, status))),),
              unit="reqps"),
        Panel("HTTP server duration by route (p50/p95/p99)", (duration,), tuple(
            (_quantile(duration, q, (route,)), _legend((route,), f"p{round(q * 100)}")) for q in (0.5, 0.95, 0.99)
        ), unit="s"),
        Panel("HTTP server errors per request (error.type: exceptions and 5xx)", (duration,),
              ((error_ratio, _legend(("job", route))),), unit="percentunit"),
        Panel("HTTP requests in flight", (active,),
              ((f"sum by (job, {method}) ({_sel(active)})", _legend(("job", method))),)),
    )


def dashboard_panels(
    *, drift_threshold: float = DRIFT_THRESHOLD, error_ratio_threshold: float = 0.05,
    disagreement_threshold: float = DISAGREEMENT_THRESHOLD,
) -> tuple[tuple[str, tuple[Panel, ...]], ...]:
    """The dashboard's rows: (row title, panels)."""
    s = semconv
    requests, errors = s.DIAGNOSIS_REQUESTS, s.DIAGNOSIS_ERRORS
    error_ratio = f"sum by (job) (rate({_sel(errors)}[{RATE}]))\n/\nsum by (job) (rate({_sel(requests)}[{RATE}]))"
    tokens = s.RAG_TOKENS_USED
    return (
        ("Diagnosis requests", (
            _per_second("Requests per second by status and model version", requests, unit="reqps"),
            _per_second("Errors per second by type and stage", errors),
            Panel("Errors per request", (errors, requests), ((error_ratio, "{{job}}"),),
                  unit="percentunit", thresholds=(error_ratio_threshold,)),
            _latency("Request and stage duration (p50/p95/p99)", s.DIAGNOSIS_DURATION),
        )),
        ("HTTP server (OTel stable HTTP conventions, through OTLP)", _http_panels()),
        ("GNN", (
            _latency("GNN inference latency (p50/p95/p99)", s.GNN_INFERENCE_DURATION),
            _score("GNN anomaly score (mean, p95)", s.GNN_ANOMALY_SCORE, 0.95),
            _score("GNN confidence (mean, p10)", s.GNN_CONFIDENCE, 0.1),
        )),
        ("RAG", (
            _latency("RAG generation latency (p50/p95/p99)", s.RAG_GENERATION_DURATION),
            Panel("RAG tokens per generation (mean, p95) and per second", (tokens,), (
                (_mean(tokens, tokens.labels), _legend(tokens.labels, "mean")),
                (_quantile(tokens, 0.95, tokens.labels), _legend(tokens.labels, "p95")),
                (_rate(tokens, tokens.labels, "_sum"), _legend(tokens.labels, "tokens/s")),
            )),
        )),
        ("GenAI (OpenTelemetry GenAI conventions on the RAG stage)", _gen_ai_panels()),
        ("Drift", (
            Panel("Model drift score", (s.MODEL_DRIFT_SCORE,),
                  ((_by_labels(s.MODEL_DRIFT_SCORE), _legend(s.MODEL_DRIFT_SCORE.labels)),),
                  unit="none", thresholds=(drift_threshold,), max=1.0),
            Panel("Drift alert (1 = firing)", (s.DRIFT_ALERT,),
                  ((_by_labels(s.DRIFT_ALERT), _legend(s.DRIFT_ALERT.labels)),),
                  unit="none", thresholds=(1.0,), max=1.0),
            Panel("Input feature drift score", (s.MODEL_FEATURE_DRIFT_SCORE,),
                  ((_by_labels(s.MODEL_FEATURE_DRIFT_SCORE), _legend(s.MODEL_FEATURE_DRIFT_SCORE.labels)),),
                  unit="none", thresholds=(drift_threshold,), max=1.0),
            Panel("Embedding drift (squared MMD)", (s.MODEL_EMBEDDING_DRIFT_SCORE,),
                  ((_by_labels(s.MODEL_EMBEDDING_DRIFT_SCORE), _legend(s.MODEL_EMBEDDING_DRIFT_SCORE.labels)),),
                  unit="none"),
            _per_second("Drift references restored and feature values over the cap per second",
                        s.DRIFT_REFERENCE_RESTORED, s.DRIFT_FEATURE_OVERFLOW),
        )),
        ("A/B tests and model registry", (
            _per_second("A/B assignments per second by variant", s.AB_ASSIGNMENTS),
            _per_second("A/B results per second by variant", s.AB_RESULTS),
            Panel("A/B decisions", (s.AB_DECISIONS,), (
                (f"sum by ({', '.join(s.AB_DECISIONS.labels)}) "
                 f"(increase({_sel(s.AB_DECISIONS)}[{RATE}]))", _legend(s.AB_DECISIONS.labels)),
            )),
            Panel("Champion model versions", (s.MODEL_CHAMPION,),
                  ((f"{_by_labels(s.MODEL_CHAMPION)} == 1", _legend(s.MODEL_CHAMPION.labels)),),
                  unit="none", kind="stat"),
            Panel("A/B view age (seconds since the store answered)", (s.AB_VIEW_AGE,),
                  ((f"max by ({', '.join(s.AB_VIEW_AGE.labels)}) ({_sel(s.AB_VIEW_AGE)})",
                    _legend(s.AB_VIEW_AGE.labels)),), unit="s"),
        )),
        # Shadow traffic and progressive rollout (#14).
        ("Shadow and rollout", (
            _per_second("Shadow pairs per second by outcome (completed, error, dropped)", s.SHADOW_PAIRS),
            Panel("Shadow disagreement per completed pair", (s.SHADOW_DISAGREEMENTS, s.SHADOW_PAIRS),
                  ((shadow_disagreement_expr(RATE, selector=JOB), "{{model_type}} {{comparison}}"),),
                  unit="percentunit", thresholds=(disagreement_threshold,), max=1.0),
            _latency("Shadow challenger latency (p50/p95/p99)", s.SHADOW_DURATION),
            _score("Shadow output difference (mean, p95)", s.SHADOW_DIFFERENCE, 0.95),
            Panel("Shadow output drift (KS distance)", (s.SHADOW_OUTPUT_DRIFT,),
                  ((_by_labels(s.SHADOW_OUTPUT_DRIFT), _legend(s.SHADOW_OUTPUT_DRIFT.labels)),),
                  unit="none", thresholds=(drift_threshold,), max=1.0),
            Panel("Rollout traffic share and step changes", (s.ROLLOUT_TRAFFIC, s.ROLLOUT_STEP_CHANGES), (
                (_by_labels(s.ROLLOUT_TRAFFIC), _legend(s.ROLLOUT_TRAFFIC.labels, "traffic %")),
                (f"sum by ({', '.join(s.ROLLOUT_STEP_CHANGES.labels)}) "
                 f"(increase({_sel(s.ROLLOUT_STEP_CHANGES)}[{RATE}]))", _legend(s.ROLLOUT_STEP_CHANGES.labels)),
            )),
        )),
        ("SDK health", (
            _per_second("Invalid measurements dropped per second", s.INVALID_MEASUREMENTS),
            _per_second("Label values folded into 'other' per second", s.LABEL_OVERFLOW),
            _per_second("Telemetry faults swallowed per second", s.TELEMETRY_ERRORS),
            Panel("Store write-behind backlog", (s.STORE_PENDING,),
                  ((_by_labels(s.STORE_PENDING), _legend(s.STORE_PENDING.labels)),)),
            _per_second("Store writes dropped and failed flushes per second",
                        s.STORE_DROPPED, s.STORE_FLUSH_ERRORS),
            Panel("Store state lost and restored (#11)", (s.STORE_STATE_LOST,), (
                (f"sum by ({', '.join(s.STORE_STATE_LOST.labels)}) "
                 f"(increase({_sel(s.STORE_STATE_LOST)}[{RATE}]))", _legend(s.STORE_STATE_LOST.labels)),
            )),
            Panel("Age of the in-process views served to requests", (s.VIEW_AGE,),
                  ((_by_labels(s.VIEW_AGE), _legend(s.VIEW_AGE.labels)),), unit="s"),
        )),
    )


def _thresholds(values: tuple[float, ...]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": v} for v in values]
    return {"mode": "absolute", "steps": steps}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel.thresholds)}
    if panel.kind == "timeseries":
        defaults["min"] = 0
        defaults["custom"] = {"thresholdsStyle": {"mode": "line" if panel.thresholds else "off"}}
    if panel.max is not None:
        defaults["max"] = panel.max
    options: dict[str, Any]
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "textMode": "name", "colorMode": "value"}
    else:
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(_DATASOURCE),
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": dict(_DATASOURCE), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def grafana_dashboard(
    *,
    title: str = "mlops-otel: diagnosis service",
    uid: str = DASHBOARD_UID,
    drift_threshold: float = DRIFT_THRESHOLD,
    error_ratio_threshold: float = 0.05,
    refresh: str = "30s",
) -> dict[str, Any]:
    """The dashboard JSON (import it, or provision it with a Prometheus data source)."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row_panels in dashboard_panels(
        drift_threshold=drift_threshold, error_ratio_threshold=error_ratio_threshold
    ):
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, panel in enumerate(row_panels):
            panels.append(_panel_json(panel, next_id, 12 * (i % 2), y + 8 * (i // 2)))
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    job_query = f"label_values({semconv.DIAGNOSIS_REQUESTS.prometheus_name}, job)"
    return {
        "title": title,
        "uid": uid,
        "tags": ["mlops-otel", "opentelemetry"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": refresh,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {"name": "job", "label": "Job", "type": "query", "datasource": dict(_DATASOURCE),
             "query": {"query": job_query, "refId": "job"}, "definition": job_query,
             "refresh": 2, "includeAll": True, "multi": True, "allValue": ".+",
             "current": {}, "hide": 0, "sort": 1},
        ]},
        "panels": panels,
    }
