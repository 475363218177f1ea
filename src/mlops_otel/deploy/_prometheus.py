"""Prometheus scrape configuration and alerting rules, derived from :mod:`mlops_otel.semconv`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .. import semconv
from ..validation import InvalidValueError

__all__ = [
    "ALERT_AB_GUARDRAIL",
    "ALERT_DRIFT",
    "ALERT_ERROR_RATE",
    "ALERT_SHADOW_DISAGREEMENT",
    "DISAGREEMENT_THRESHOLD",
    "DRIFT_THRESHOLD",
    "alert_rules",
    "prometheus_config",
    "shadow_disagreement_expr",
]

ALERT_DRIFT = "MLOpsModelDriftHigh"
ALERT_ERROR_RATE = "MLOpsDiagnosisErrorRateHigh"
ALERT_AB_GUARDRAIL = "MLOpsABGuardrailBreach"
ALERT_SHADOW_DISAGREEMENT = "MLOpsShadowDisagreementHigh"

#: The seed's drift threshold: the KS-distance above which a model version is considered drifted.
DRIFT_THRESHOLD = 0.3

#: Share of completed shadow pairs on which challenger and champion may disagree before the alert fires.
DISAGREEMENT_THRESHOLD = 0.1

_DURATION = re.compile(r"(\d+(ms|[smhdwy]))+\Z")


def _check_duration(name: str, value: str) -> str:
    if not isinstance(value, str) or not _DURATION.match(value) or value.strip("0ms") == "":
        raise InvalidValueError(name, "a positive Prometheus duration such as '30s' or '5m'", value)
    return value


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise InvalidValueError(name, "a number between 0 and 1 (exclusive)", value)
    return float(value)


def prometheus_config(
    *,
    targets: Sequence[str] = ("localhost:8000",),
    job_name: str = "diagnosis-service",
    metrics_path: str = "/metrics",
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    rule_files: Sequence[str] = ("alerts.yml",),
    honor_labels: bool = False,
    alertmanagers: Sequence[str] = (),
) -> dict[str, Any]:
    """A ``prometheus.yml`` scraping the service's ``/metrics`` and loading the alert rules.

    Point *targets* at the service (``host:port``); for the Collector path scrape
    the Collector's Prometheus exporter instead, with ``honor_labels=True`` so the
    ``job``/``instance`` it derives from the OTel resource are kept. Shorten
    *scrape_interval* and *evaluation_interval* in tests.
    """
    if not targets or any(not isinstance(t, str) or not t for t in targets):
        raise InvalidValueError("targets", "a non-empty sequence of 'host:port' strings", targets)
    if not metrics_path.startswith("/"):
        raise InvalidValueError("metrics_path", "a path starting with '/'", metrics_path)
    job: dict[str, Any] = {"job_name": job_name, "metrics_path": metrics_path}
    if honor_labels:
        job["honor_labels"] = True
    job["static_configs"] = [{"targets": list(targets)}]
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": _check_duration("scrape_interval", scrape_interval),
            "evaluation_interval": _check_duration("evaluation_interval", evaluation_interval),
        },
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    if rule_files:
        config["rule_files"] = list(rule_files)
    config["scrape_configs"] = [job]
    return config


def _by(*labels: str) -> str:
    return f"by ({', '.join(labels)})"


def drift_expr(threshold: float = DRIFT_THRESHOLD) -> str:
    """PromQL: model versions whose drift score is above *threshold* while the SDK's alert fires.

    The SDK's ``model_drift_alert`` adds what a fixed threshold ignores: the
    score must be significant at the window's effective sample size (see
    docs/drift.md, "Calibrated alerting"). The value is the score.
    """
    spec = semconv.MODEL_DRIFT_SCORE
    by = _by(*spec.labels)
    return (f"max {by} ({spec.prometheus_name}) > {threshold!r} "
            f"and on ({', '.join(spec.labels)}) max {by} ({semconv.DRIFT_ALERT.prometheus_name}) == 1")


def error_ratio_expr(window: str = "5m") -> str:
    """PromQL: the fraction of each job's requests that failed over *window*.

    Failed *requests* (``status="error"``), not error events: a request that fails
    in one stage records ``diagnosis_errors_total`` twice (stage and request) and a
    handled error records it without failing the request.
    """
    requests = semconv.DIAGNOSIS_REQUESTS.prometheus_name
    failed = f'{requests}{{{semconv.ATTR_STATUS}="{semconv.STATUS_ERROR}"}}'
    return f"  sum {_by('job')} (rate({failed}[{window}]))\n/\n  sum {_by('job')} (rate({requests}[{window}]))"


def guardrail_expr(window: str = "10m", decisions: Sequence[str] = ("rollback", "halt")) -> str:
    """PromQL: A/B tests that decided rollback/halt within *window*.

    ``increase()`` misses a series whose first sample already counts the
    decision (a ``decision="rollback"`` series is created by the first
    rollback), so series that did not exist *window* ago count as well.
    """
    name = semconv.AB_DECISIONS.prometheus_name
    selector = f'{name}{{{semconv.ATTR_DECISION}=~"{"|".join(decisions)}"}}'
    by = _by("job", semconv.ATTR_TEST, semconv.ATTR_DECISION)
    return (
        f"sum {by} (increase({selector}[{window}])) > 0\n"
        f"or\n"
        f"sum {by} ({selector} unless {selector} offset {window}) > 0"
    )


def shadow_disagreement_expr(window: str = "10m", *, selector: str = "") -> str:
    """PromQL: per model type and comparison, disagreements per completed shadow pair over *window*.

    *selector* adds label matchers to both selectors (the dashboard passes its ``job`` filter).
    """
    dis, pairs = semconv.SHADOW_DISAGREEMENTS.prometheus_name, semconv.SHADOW_PAIRS.prometheus_name
    extra = f",{selector}" if selector else ""
    completed = f'{pairs}{{{semconv.ATTR_OUTCOME}="completed"{extra}}}'
    by = _by("job", semconv.ATTR_MODEL_TYPE, semconv.ATTR_COMPARISON)
    matchers = f"{{{selector}}}" if selector else ""
    return (f"  sum {by} (rate({dis}{matchers}[{window}]))\n"
            f"/ on (job, {semconv.ATTR_MODEL_TYPE}) group_left\n"
            f"  sum {_by('job', semconv.ATTR_MODEL_TYPE)} (rate({completed}[{window}]))")


def alert_rules(
    *,
    drift_threshold: float = DRIFT_THRESHOLD,
    drift_for: str = "5m",
    error_ratio_threshold: float = 0.05,
    error_window: str = "5m",
    error_for: str = "5m",
    guardrail_window: str = "10m",
    guardrail_decisions: Sequence[str] = ("rollback", "halt"),
    disagreement_threshold: float = DISAGREEMENT_THRESHOLD,
    disagreement_window: str = "10m",
    disagreement_for: str = "10m",
    evaluation_interval: str | None = None,
) -> dict[str, Any]:
    """The alerting rules file: drift above threshold, error-rate spike, A/B guardrail breach, shadow disagreement.

    The ``for`` durations, windows and the group's *evaluation_interval*
    (``None``: Prometheus' global one) are parameters so an end-to-end test can
    shorten them.
    """
    _check_fraction("drift_threshold", drift_threshold)
    _check_fraction("error_ratio_threshold", error_ratio_threshold)
    _check_fraction("disagreement_threshold", disagreement_threshold)
    if not guardrail_decisions:
        raise InvalidValueError("guardrail_decisions", "a non-empty sequence of decisions", guardrail_decisions)
    drift = semconv.MODEL_DRIFT_SCORE.prometheus_name
    rules: list[dict[str, Any]] = [
        {
            "alert": ALERT_DRIFT,
            "expr": drift_expr(drift_threshold),
            "for": _check_duration("drift_for", drift_for),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Drift of {{ $labels.model_type }} {{ $labels.model_version }} "
                f"above {drift_threshold!r}",
                "description": f"{drift} is {{{{ printf \"%.2f\" $value }}}} (threshold {drift_threshold!r}) "
                f"for at least {drift_for}. Follow docs/runbook-drift.md.",
                "runbook": "docs/runbook-drift.md",
            },
        },
        {
            "alert": ALERT_ERROR_RATE,
            "expr": f"(\n{error_ratio_expr(_check_duration('error_window', error_window))}\n)"
            f" > {error_ratio_threshold!r}",
            "for": _check_duration("error_for", error_for),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Failed diagnosis requests of {{ $labels.job }} above "
                f"{error_ratio_threshold!r}",
                "description": "{{ printf \"%.2f\" $value }} of requests failed over the last "
                f"{error_window} (threshold {error_ratio_threshold!r}).",
            },
        },
        {
            "alert": ALERT_AB_GUARDRAIL,
            "expr": guardrail_expr(_check_duration("guardrail_window", guardrail_window), guardrail_decisions),
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "A/B test {{ $labels.test }} decided {{ $labels.decision }}",
                "description": "A guardrail of A/B test {{ $labels.test }} was breached: the SDK decided "
                f"{{{{ $labels.decision }}}} within the last {guardrail_window}.",
            },
        },
        {
            "alert": ALERT_SHADOW_DISAGREEMENT,
            "expr": f"(\n{shadow_disagreement_expr(_check_duration('disagreement_window', disagreement_window))}"
            f"\n) > {disagreement_threshold!r}",
            "for": _check_duration("disagreement_for", disagreement_for),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Shadow challenger of {{ $labels.model_type }} disagrees on {{ $labels.comparison }}",
                "description": "{{ printf \"%.2f\" $value }} of completed shadow pairs disagreed over the last "
                f"{disagreement_window} (threshold {disagreement_threshold!r}): do not start an A/B test "
                "before reading the shadow report (docs/shadow.md).",
                "runbook": "docs/shadow.md",
            },
        },
    ]
    group: dict[str, Any] = {"name": "mlops-otel"}
    if evaluation_interval is not None:
        group["interval"] = _check_duration("evaluation_interval", evaluation_interval)
    group["rules"] = rules
    return {"groups": [group]}
