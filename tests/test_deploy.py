"""The deployment artifacts: up to date, valid for promtool, alerts that fire when they should,
dashboard queries that parse and name only exported metrics, a consistently wired Collector config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given

from mlops_otel import semconv
from mlops_otel.deploy import (
    ALERT_AB_GUARDRAIL,
    ALERT_DRIFT,
    ALERT_ERROR_RATE,
    ALERT_SHADOW_DISAGREEMENT,
    ARTIFACTS,
    COLLECTOR_ENV_VARS,
    alert_rules,
    check_dir,
    collector_config,
    dashboard_panels,
    env_default,
    grafana_dashboard,
    prometheus_config,
    render_all,
    to_yaml,
    write_all,
)

from .services import require_binary
from .strategies import yaml_documents

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "deploy"
YAML_FILES = [name for name in ARTIFACTS if not name.endswith(".json")]


#: What the SDK exports: its own families, and instrument_app's HTTP ones (through the OTel MeterProvider).
EXPORTED = semconv.ALL_METRICS + semconv.HTTP_SERVER_METRICS


def exported_sample_names() -> set[str]:
    """Every sample name the SDK's exposition can contain, derived from semconv."""
    names = set()
    for spec in EXPORTED:
        if spec.kind is semconv.MetricKind.HISTOGRAM:
            names |= {f"{spec.prometheus_name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(spec.prometheus_name)
    return names


def family_of(sample_name: str) -> str:
    for spec in EXPORTED:
        if sample_name == spec.prometheus_name or sample_name in {
            f"{spec.prometheus_name}{s}" for s in ("_bucket", "_sum", "_count")
        }:
            return spec.prometheus_name
    raise KeyError(sample_name)


# ---------------------------------------------------------------- PromQL names
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are not functions, keywords,
    label names, durations or numbers)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        if match.group() in _KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{job=~"x|y"}[5m])))') == {
        "a_bucket"}
    assert metric_names("sum(rate(a_total[1m])) by (job) / on (job) group_left(x) b offset 10m > 0.3") == {
        "a_total", "b"}
    assert metric_names('max by (t) (c{d="e f"}) unless c offset 5m or sum without (i) (rate(g:h[2h30m]))') == {
        "c", "g:h"}


# --------------------------------------------------------------- the artifacts
def test_committed_examples_equal_freshly_generated_files() -> None:
    stale = check_dir(EXAMPLES)
    assert stale == [], f"regenerate with `python -m mlops_otel.deploy examples/deploy` (stale: {stale})"
    assert set(render_all()) <= {p.name for p in EXAMPLES.iterdir()}


def test_module_entry_point_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    run = subprocess.run([sys.executable, "-m", "mlops_otel.deploy", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACTS)
    check = [sys.executable, "-m", "mlops_otel.deploy", "--check", str(out)]
    assert subprocess.run(check, capture_output=True, timeout=120).returncode == 0
    (out / "alerts.yml").write_text("groups: []\n")
    stale = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1
    assert "alerts.yml" in stale.stderr


def test_write_all_returns_the_files_it_wrote(tmp_path: Path) -> None:
    paths = write_all(tmp_path)
    assert {p.name: p.read_text() for p in paths} == render_all()


@pytest.mark.parametrize("name", YAML_FILES)
def test_yaml_artifacts_parse_back_to_what_was_generated(name: str) -> None:
    assert yaml.safe_load(render_all()[name]) == ARTIFACTS[name]()


def test_dashboard_json_parses_back() -> None:
    assert json.loads(render_all()["grafana-dashboard.json"]) == grafana_dashboard()


@given(yaml_documents)
def test_to_yaml_round_trips_through_a_yaml_parser(document: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(document)) == (document or {})


def test_to_yaml_keeps_promql_readable() -> None:
    text = to_yaml({"expr": "sum by (job) (\n  rate(x[5m])\n)"})
    assert text == "expr: |-\n  sum by (job) (\n    rate(x[5m])\n  )\n"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: alert_rules(drift_for="5 minutes"), "drift_for must be a positive Prometheus duration"),
    (lambda: alert_rules(drift_threshold=1.5), "drift_threshold must be a number between 0 and 1"),
    (lambda: alert_rules(evaluation_interval="0s"), "evaluation_interval must be a positive"),
    (lambda: alert_rules(guardrail_decisions=()), "guardrail_decisions must be a non-empty sequence of decisions"),
    (lambda: prometheus_config(targets=[]), "targets must be a non-empty sequence"),
    (lambda: prometheus_config(metrics_path="metrics"), "metrics_path must be a path starting with '/'"),
    (lambda: prometheus_config(scrape_interval="fast"), "scrape_interval must be a positive"),
    (lambda: collector_config(exporter="kafka"), "exporter must be 'prometheus' or 'prometheusremotewrite'"),  # type: ignore[arg-type]
])
def test_invalid_parameters_are_rejected_with_clear_messages(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_to_yaml_rejects_what_it_cannot_represent() -> None:
    with pytest.raises(TypeError, match="mapping keys must be strings, got 1"):
        to_yaml({"a": {1: "b"}})
    with pytest.raises(TypeError, match="value must be a mapping, sequence"):
        to_yaml({"a": object()})


# -------------------------------------------------------------------- promtool
@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


def run_promtool(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-collector.yml"])
def test_promtool_check_config(promtool: str, name: str) -> None:
    result = run_promtool(promtool, "check", "config", str(EXAMPLES / name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", str(EXAMPLES / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout + result.stderr


def test_scrape_config_targets_the_services_metrics_endpoint() -> None:
    config = prometheus_config(targets=["127.0.0.1:9999"], scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert config["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert config["rule_files"] == ["alerts.yml"]


# ------------------------------------------------------------ alert unit tests
_TEMPLATE = re.compile(r"\{\{\s*(?:\$labels\.(\w+)|printf \"%\.2f\" \$value)\s*\}\}")


def expected_alert(rules: dict[str, Any], alertname: str, labels: dict[str, str], value: float) -> dict[str, Any]:
    """The alert promtool should report: output labels plus the rule's, annotations expanded."""
    (rule,) = [r for r in rules["groups"][0]["rules"] if r["alert"] == alertname]

    def expand(text: str) -> str:
        out = _TEMPLATE.sub(lambda m: labels[m.group(1)] if m.group(1) else f"{value:.2f}", text)
        assert "{{" not in out, f"template the test cannot expand: {text}"
        return out

    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": {key: expand(text) for key, text in rule["annotations"].items()},
    }


def alert_case(
    rules: dict[str, Any], alertname: str, eval_time: str, firing: list[tuple[dict[str, str], float]]
) -> dict[str, Any]:
    return {"eval_time": eval_time, "alertname": alertname,
            "exp_alerts": [expected_alert(rules, alertname, labels, value) for labels, value in firing]}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    all_labels = {"job": "diagnosis-service", "instance": "10.0.0.1:8000", **labels}
    rendered = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


DRIFT = semconv.MODEL_DRIFT_SCORE.prometheus_name
DRIFT_ALERT = semconv.DRIFT_ALERT.prometheus_name
ERRORS = semconv.DIAGNOSIS_ERRORS.prometheus_name
REQUESTS = semconv.DIAGNOSIS_REQUESTS.prometheus_name
DECISIONS = semconv.AB_DECISIONS.prometheus_name
SHADOW_PAIRS = semconv.SHADOW_PAIRS.prometheus_name
DISAGREEMENTS = semconv.SHADOW_DISAGREEMENTS.prometheus_name


def default_rules_tests(rules: dict[str, Any]) -> dict[str, Any]:
    """promtool unit tests for the default thresholds (drift 0.3 for 5m, 5% errors, guardrail 10m)."""
    gnn = {"model_type": "gnn"}
    drift = {
        "interval": "1m",
        "input_series": [
            series(DRIFT, "0.1x4 0.45x30", **gnn, model_version="v2.2.0"),  # above from 5m on
            series(DRIFT, "0.29x34", **gnn, model_version="v2.1.0"),  # just below
            series(DRIFT, "0.3x34", **gnn, model_version="v2.0.0"),  # at the threshold is not above
            series(DRIFT, "0.5x3 0.1x30", **gnn, model_version="v1.9.0"),  # above for 4m only
            # Above the threshold but not significant at the effective sample size: the SDK holds its alert.
            series(DRIFT, "0.45x34", **gnn, model_version="v1.8.0"),
            series(DRIFT_ALERT, "0x4 1x30", **gnn, model_version="v2.2.0"),
            series(DRIFT_ALERT, "0x34", **gnn, model_version="v2.1.0"),
            series(DRIFT_ALERT, "1x34", **gnn, model_version="v2.0.0"),
            series(DRIFT_ALERT, "1x3 0x30", **gnn, model_version="v1.9.0"),
            series(DRIFT_ALERT, "0x34", **gnn, model_version="v1.8.0"),
        ],
        "alert_rule_test": [
            alert_case(rules, ALERT_DRIFT, "4m", []),
            alert_case(rules, ALERT_DRIFT, "9m", []),  # pending: 4 minutes above
            alert_case(rules, ALERT_DRIFT, "10m", [({**gnn, "model_version": "v2.2.0"}, 0.45)]),
            alert_case(rules, ALERT_DRIFT, "30m", [({**gnn, "model_version": "v2.2.0"}, 0.45)]),
        ],
    }
    errors = {
        "interval": "1m",
        "input_series": [
            series(REQUESTS, "0+100x40", status="success", model_version="v2.1.0"),
            # 1 failed request per 101 for 10 minutes, then 25 per 125 (a failure ratio of 0.2).
            series(REQUESTS, "0+1x10 30+25x29", status="error", model_version="v2.1.0"),
            # Error events alone (e.g. handled errors) do not count.
            series(ERRORS, "0+50x40", error_type="TimeoutError", stage="rag_generation"),
        ],
        "alert_rule_test": [
            alert_case(rules, ALERT_ERROR_RATE, "9m", []),
            alert_case(rules, ALERT_ERROR_RATE, "30m", [({"job": "diagnosis-service"}, 0.2)]),
        ],
    }
    test_a, test_b = {"test": "gnn-v2.2.0"}, {"test": "rag-v3"}
    guardrail = {
        "interval": "1m",
        "input_series": [
            series(DECISIONS, "1+1x40", **test_a, decision="continue"),
            series(DECISIONS, "0x20 1x20", **test_a, decision="rollback"),  # counts a rollback at 21m
            series(DECISIONS, "_x30 1x10", **test_b, decision="halt"),  # first appears at 30m, already 1
        ],
        "alert_rule_test": [
            alert_case(rules, ALERT_AB_GUARDRAIL, "5m", []),
            alert_case(rules, ALERT_AB_GUARDRAIL, "20m", []),
            alert_case(rules, ALERT_AB_GUARDRAIL, "22m", [
                ({"job": "diagnosis-service", **test_a, "decision": "rollback"}, 1.0)]),
            alert_case(rules, ALERT_AB_GUARDRAIL, "35m", [
                ({"job": "diagnosis-service", **test_b, "decision": "halt"}, 1.0)]),
            alert_case(rules, ALERT_AB_GUARDRAIL, "45m", []),
        ],
    }
    flip = {"model_type": "gnn", "comparison": "anomaly_score_flip"}
    shadow = {
        "interval": "1m",
        "input_series": [
            series(SHADOW_PAIRS, "0+100x40", model_type="gnn", outcome="completed"),
            series(SHADOW_PAIRS, "0+500x40", model_type="gnn", outcome="dropped"),  # drops are not pairs compared
            # 5 of 100 pairs disagree for 10 minutes, then 20 of 100.
            series(DISAGREEMENTS, "0+5x10 70+20x29", **flip),
            series(DISAGREEMENTS, "0+1x40", model_type="gnn", comparison="anomaly_score_difference"),
        ],
        "alert_rule_test": [
            alert_case(rules, ALERT_SHADOW_DISAGREEMENT, "9m", []),
            alert_case(rules, ALERT_SHADOW_DISAGREEMENT, "18m", []),  # above 0.1, pending
            alert_case(rules, ALERT_SHADOW_DISAGREEMENT, "35m", [({"job": "diagnosis-service", **flip}, 0.2)]),
        ],
    }
    return {"rule_files": ["alerts.yml"], "evaluation_interval": "1m",
            "tests": [drift, errors, guardrail, shadow]}


def promtool_test_rules(promtool: str, tmp_path: Path, rules: dict[str, Any], tests: dict[str, Any]) -> str:
    (tmp_path / "alerts.yml").write_text(to_yaml(rules))
    (tmp_path / "rules_test.yml").write_text(to_yaml(tests))
    result = run_promtool(promtool, "test", "rules", "rules_test.yml", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0 or "FAILED" in output, output
    return "SUCCESS" if result.returncode == 0 else output


def test_alerts_fire_when_they_should(promtool: str, tmp_path: Path) -> None:
    # The committed alerts file itself is tested (it equals alert_rules(), see above).
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    assert rules == alert_rules()
    shutil.copy(EXAMPLES / "alerts.yml", tmp_path / "alerts.yml")
    assert promtool_test_rules(promtool, tmp_path, rules, default_rules_tests(rules)) == "SUCCESS"


def test_the_rule_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    # A wrong expectation must fail, or the previous test would prove nothing.
    rules = alert_rules()
    tests = default_rules_tests(rules)
    tests["tests"][0]["alert_rule_test"][1] = alert_case(
        rules, ALERT_DRIFT, "9m", [({"model_type": "gnn", "model_version": "v2.2.0"}, 0.45)])
    assert "FAILED" in promtool_test_rules(promtool, tmp_path, rules, tests)


def test_shortened_rules_for_end_to_end_tests(promtool: str, tmp_path: Path) -> None:
    rules = alert_rules(drift_for="10s", evaluation_interval="1s")
    assert rules["groups"][0]["interval"] == "1s"
    gnn = {"model_type": "gnn", "model_version": "v2.2.0"}
    tests = {
        "rule_files": ["alerts.yml"], "evaluation_interval": "1s",
        "tests": [{
            "interval": "1s",
            "input_series": [series(DRIFT, "0.1x4 0.9x30", **gnn), series(DRIFT_ALERT, "0x4 1x30", **gnn)],
            "alert_rule_test": [
                alert_case(rules, ALERT_DRIFT, "14s", []),
                alert_case(rules, ALERT_DRIFT, "15s", [(gnn, 0.9)]),
            ],
        }],
    }
    assert promtool_test_rules(promtool, tmp_path, rules, tests) == "SUCCESS"


def test_alert_expressions_name_only_exported_metrics() -> None:
    rules = alert_rules()["groups"][0]["rules"]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    assert used == {DRIFT, DRIFT_ALERT, REQUESTS, DECISIONS, SHADOW_PAIRS, DISAGREEMENTS}
    assert used <= exported_sample_names()


# ------------------------------------------------------------------- dashboard
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".+"}


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def concrete(expr: str) -> str:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    records = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": concrete(target["expr"])}
        for panel, target in dashboard_targets(dashboard)
    ]
    assert len(records) > 20
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(to_yaml({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout + result.stderr


def test_dashboard_names_only_exported_metrics_and_covers_every_family() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exported = exported_sample_names()
    families = set()
    for panel, target in dashboard_targets(dashboard):
        names = metric_names(target["expr"])
        assert names, (panel["title"], target["expr"])
        assert names <= exported, (panel["title"], names - exported)
        families |= {family_of(name) for name in names}
    assert {spec.prometheus_name for spec in semconv.SEED_METRICS} <= families
    assert families == {spec.prometheus_name for spec in EXPORTED}


def test_each_panel_reads_the_families_it_declares() -> None:
    for _row, panels in dashboard_panels():
        for panel in panels:
            read = {family_of(name) for expr, _ in panel.targets for name in metric_names(expr)}
            assert read == {m.prometheus_name for m in panel.metrics}, panel.title


def test_dashboard_is_well_formed() -> None:
    dashboard = grafana_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job"}
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, panel["title"]
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"]
    drift_panel = next(p for p in dashboard["panels"] if p["title"] == "Model drift score")
    steps = drift_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.3]


# ------------------------------------------------------------------- Collector
_PIPELINE = re.compile(r"(traces|metrics|logs)(/[\w-]+)?\Z")


@pytest.mark.parametrize("name", ["otel-collector.yaml", "otel-collector-remote-write.yaml"])
def test_collector_config_is_wired_consistently(name: str) -> None:
    config = yaml.safe_load((EXAMPLES / name).read_text())
    assert set(config) == {"extensions", "receivers", "processors", "exporters", "service"}
    service = config["service"]
    assert set(service["extensions"]) <= set(config["extensions"])
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_name, pipeline in service["pipelines"].items():
        assert _PIPELINE.match(pipeline_name), pipeline_name
        assert pipeline["receivers"], pipeline_name
        assert pipeline["exporters"], pipeline_name
        for section in used:
            for component in pipeline.get(section, []):
                assert component in config[section], f"{pipeline_name} uses undefined {section[:-1]} {component}"
                used[section].add(component)
        # memory_limiter must come first, batch after it.
        assert pipeline["processors"][0] == "memory_limiter"
        assert "batch" in pipeline["processors"][1:]
    for section, components in used.items():
        assert components == set(config[section]), f"unused {section}: {set(config[section]) - components}"

    # OTLP in on the standard ports.
    protocols = config["receivers"]["otlp"]["protocols"]
    assert env_default(protocols["grpc"]["endpoint"]).endswith(":4317")
    assert env_default(protocols["http"]["endpoint"]).endswith(":4318")
    assert service["pipelines"]["metrics"]["receivers"] == ["otlp"]
    # Out to Prometheus, keeping the exporters' default translation (unit suffix and _total), which
    # test_export_otlp checks gives exactly the SDK's own /metrics names.
    (exporter,) = service["pipelines"]["metrics"]["exporters"]
    assert exporter == ("prometheus" if name == "otel-collector.yaml" else "prometheusremotewrite")
    settings = config["exporters"][exporter]
    assert settings.get("add_metric_suffixes", True) is True
    assert settings.get("translation_strategy", "UnderscoreEscapingWithSuffixes").endswith("WithSuffixes")
    assert "namespace" not in settings  # a namespace would prefix every name
    if exporter == "prometheusremotewrite":
        assert env_default(settings["endpoint"]).endswith("/api/v1/write")
    else:
        assert settings["enable_open_metrics"] is True  # exemplars need OpenMetrics
    # Traces take the same path to an OTLP/HTTP backend.
    assert service["pipelines"]["traces"]["receivers"] == ["otlp"]
    (traces_exporter,) = service["pipelines"]["traces"]["exporters"]
    assert traces_exporter.split("/")[0] == "otlp_http"
    # Every ${env:...} reference names a documented variable and carries a default.
    for ref in re.findall(r"\$\{[^}]*\}", (EXAMPLES / name).read_text()):
        var, _, default = ref[len("${env:"):-1].partition(":-")
        assert var in COLLECTOR_ENV_VARS, ref
        assert default == COLLECTOR_ENV_VARS[var], ref


def test_collector_scrape_config_points_at_the_collector_exporter() -> None:
    prometheus = yaml.safe_load((EXAMPLES / "prometheus-collector.yml").read_text())
    collector = yaml.safe_load((EXAMPLES / "otel-collector.yaml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["honor_labels"] is True  # keep the job/instance the Collector derives from the resource
    (target,) = job["static_configs"][0]["targets"]
    endpoint = env_default(collector["exporters"]["prometheus"]["endpoint"])
    assert target.rsplit(":", 1)[1] == endpoint.rsplit(":", 1)[1]


# ------------------------------------------------------------ a real Prometheus
@pytest.mark.integration
def test_a_real_prometheus_loads_the_shipped_config_and_rules() -> None:
    from .services import prometheus_server

    files = {"alerts.yml": (EXAMPLES / "alerts.yml").read_text()}
    with prometheus_server((EXAMPLES / "prometheus.yml").read_text(), files=files) as prom:
        groups = prom.api("rules")["groups"]
    (group,) = groups
    assert group["name"] == "mlops-otel"
    assert {rule["name"] for rule in group["rules"]} == {ALERT_DRIFT, ALERT_ERROR_RATE, ALERT_AB_GUARDRAIL,
                                                             ALERT_SHADOW_DISAGREEMENT}
    assert all(rule["type"] == "alerting" for rule in group["rules"])
    # (Scraping through the generated scrape config is tested in test_export_prometheus.)


def test_http_error_ratio_is_zero_not_no_data_without_errors(promtool: str, tmp_path: Path) -> None:
    # N12: the panel's numerator is empty when nothing failed; the ratio must still be 0 per route.
    (expr,) = [t["expr"] for p in grafana_dashboard()["panels"] if p["title"].startswith("HTTP server errors")
               for t in p["targets"]]
    expr = expr.replace("$__rate_interval", "2m").replace('job=~"$job"', 'job=~".+"')
    count = f"{semconv.HTTP_SERVER_REQUEST_DURATION.prometheus_name}_count"
    route = semconv.prometheus_label(semconv.ATTR_HTTP_ROUTE)
    status = semconv.prometheus_label(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE)
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series(count, "0+60x10", **{route: "/ok", status: "200"})],
        "promql_expr_test": [{"expr": expr, "eval_time": "5m",
                              "exp_samples": [{"labels": f'{{job="diagnosis-service",{route}="/ok"}}', "value": 0}]}],
    }]}
    assert promtool_test_rules(promtool, tmp_path, {"groups": []}, tests) == "SUCCESS"
