"""Deployment artifacts generated from :mod:`mlops_otel.semconv`.

Prometheus scrape configs and alerting rules, a Grafana dashboard and
OpenTelemetry Collector configs, all built from the one module of names so they
cannot drift from what the SDK exports. ``python -m mlops_otel.deploy DIR``
writes them; ``examples/deploy/`` holds the committed output.
"""

from ._collector import ENV_VARS as COLLECTOR_ENV_VARS
from ._collector import collector_config, env_default
from ._files import ARTIFACTS, check_dir, render_all, write_all
from ._grafana import DASHBOARD_UID, Panel, dashboard_panels, grafana_dashboard
from ._prometheus import (
    ALERT_AB_GUARDRAIL,
    ALERT_DRIFT,
    ALERT_ERROR_RATE,
    ALERT_SHADOW_DISAGREEMENT,
    DISAGREEMENT_THRESHOLD,
    DRIFT_THRESHOLD,
    alert_rules,
    drift_expr,
    error_ratio_expr,
    guardrail_expr,
    prometheus_config,
    shadow_disagreement_expr,
)
from ._yaml import to_yaml

__all__ = [
    "ALERT_AB_GUARDRAIL",
    "ALERT_DRIFT",
    "ALERT_ERROR_RATE",
    "ALERT_SHADOW_DISAGREEMENT",
    "ARTIFACTS",
    "COLLECTOR_ENV_VARS",
    "DASHBOARD_UID",
    "DISAGREEMENT_THRESHOLD",
    "DRIFT_THRESHOLD",
    "Panel",
    "alert_rules",
    "check_dir",
    "collector_config",
    "dashboard_panels",
    "drift_expr",
    "env_default",
    "error_ratio_expr",
    "grafana_dashboard",
    "guardrail_expr",
    "prometheus_config",
    "shadow_disagreement_expr",
    "render_all",
    "to_yaml",
    "write_all",
]
