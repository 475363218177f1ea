"""The Prometheus exposition: golden content, promtool lint, and a real Prometheus scraping a real app."""

from __future__ import annotations

import difflib
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_otel import semconv
from mlops_otel.deploy import prometheus_config
from mlops_otel.telemetry import Telemetry

from .services import prometheus_server, require_binary, uvicorn_process

GOLDEN = Path(__file__).parent / "golden" / "seed_exposition.prom"

# The contract of issue 2, written out independently of semconv: sample type, label keys, and
# the bucket boundaries the seed shows (each must be one of the family's `le` values).
SEED_CONTRACT: dict[str, tuple[str, frozenset[str], tuple[str, ...]]] = {
    "diagnosis_requests_total": ("counter", frozenset({"status", "model_version"}), ()),
    "diagnosis_duration_seconds": ("histogram", frozenset({"stage"}), ("0.5",)),
    "gnn_inference_duration_seconds": ("histogram", frozenset({"model_version"}), ("0.1",)),
    "gnn_anomaly_score": ("histogram", frozenset({"model_version"}), ("0.5",)),
    "gnn_confidence": ("histogram", frozenset({"model_version"}), ("0.9",)),
    "rag_generation_duration_seconds": ("histogram", frozenset({"model_version"}), ("2.0",)),
    "rag_tokens_used": ("histogram", frozenset({"model_version"}), ("1000.0",)),
    "model_drift_score": ("gauge", frozenset({"model_type", "model_version"}), ()),
    "diagnosis_errors_total": ("counter", frozenset({"error_type", "stage"}), ()),
}
# Families a Prometheus exposition may add besides the contract ("scope and target-info extras").
EXTRAS = {"target_info", "otel_scope_info"}

Sample = tuple[str, frozenset[tuple[str, str]], float]


def record_known_values(tel: Telemetry) -> None:
    """Record a fixed set of values in all nine seed families (several on bucket boundaries)."""
    for _ in range(3):
        tel.record_request(semconv.STATUS_SUCCESS, "v2.1.0", 0.25, "create_diagnosis")
    tel.record_request(semconv.STATUS_ERROR, "v2.2.0", 1.5, "create_diagnosis")
    tel.record(semconv.DIAGNOSIS_DURATION, (semconv.STAGE_GNN_INFERENCE,), 0.5)  # le="0.5" is inclusive
    tel.record(semconv.DIAGNOSIS_DURATION, (semconv.STAGE_RAG_GENERATION,), 2.0)
    tel.record_gnn_metrics("v2.1.0", inference_time_ms=100.0, anomaly_score=0.5, confidence=0.9)
    tel.record_gnn_metrics("v2.1.0", inference_time_ms=20.0, anomaly_score=0.25, confidence=0.75)
    tel.record_gnn_metrics("v2.2.0", inference_time_ms=250.0, anomaly_score=0.875, confidence=0.5)
    tel.record_rag_metrics("v2.1.0", generation_time_ms=2000.0, tokens_used=1000)
    tel.record_rag_metrics("v2.1.0", generation_time_ms=500.0, tokens_used=250)
    tel.set_drift_score("gnn", "v2.1.0", 0.125)
    tel.set_drift_score("gnn", "v2.2.0", 0.375)
    tel.record_error("TimeoutError", semconv.STAGE_RAG_GENERATION)
    tel.record_error("TimeoutError", semconv.STAGE_RAG_GENERATION)
    tel.record_error("ValueError", semconv.STAGE_GNN_INFERENCE)


def record_every_family(tel: Telemetry) -> None:
    """Record one value in every family of semconv.ALL_METRICS (value 1, or a bucket boundary)."""
    for spec in semconv.ALL_METRICS:
        labels = tuple(f"{key}-value" for key in spec.labels)
        if spec.kind is semconv.MetricKind.COUNTER:
            tel.add(spec, labels, 1.0)
        elif spec.kind is semconv.MetricKind.GAUGE:
            tel.set(spec, labels, 1.0)
        else:
            tel.record(spec, labels, spec.buckets[len(spec.buckets) // 2])


def parse(text: str) -> tuple[dict[str, str], set[Sample]]:
    """(family name -> type, samples) of an exposition; counter families keep their `_total` name."""
    types: dict[str, str] = {}
    samples: set[Sample] = set()
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        types[name] = family.type
        for s in family.samples:
            samples.add((s.name, frozenset(s.labels.items()), s.value))
    return types, samples


def render(tel: Telemetry) -> str:
    return tel.render_prometheus().decode()


def without_extras(types: dict[str, str], samples: set[Sample]) -> tuple[dict[str, str], set[Sample]]:
    kept = {name: kind for name, kind in types.items() if name not in EXTRAS}
    return kept, {s for s in samples if not any(s[0].startswith(extra) for extra in EXTRAS)}


def test_golden_exposition_of_the_nine_seed_families() -> None:
    tel = Telemetry()
    record_known_values(tel)
    text = render(tel)
    actual = without_extras(*parse(text))
    expected = parse(GOLDEN.read_text(encoding="utf-8"))
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(
            sorted(GOLDEN.read_text(encoding="utf-8").splitlines()), sorted(text.splitlines()),
            "golden (sorted lines)", "exposition (sorted lines)", lineterm="",
        ))
        pytest.fail(f"exposition differs from {GOLDEN.name}; review, then update the golden by hand:\n{diff}")


def test_golden_matches_the_issue_contract() -> None:
    # The golden file itself is checked against the names, label keys and boundaries of issue 2,
    # so a wrong golden cannot pass the previous test.
    types, samples = parse(GOLDEN.read_text(encoding="utf-8"))
    assert set(types) == set(SEED_CONTRACT)
    for name, (kind, keys, seed_bounds) in SEED_CONTRACT.items():
        assert types[name] == kind, name
        mine = [s for s in samples if s[0] == name or s[0].startswith(name + "_")]
        assert mine, name
        if kind != "histogram":
            assert {s[0] for s in mine} == {name}
            assert all({k for k, _ in labels} == keys for _, labels, _ in mine), name
            continue
        assert {s[0] for s in mine} == {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        for sample_name, labels, _ in mine:
            expected_keys = keys | {"le"} if sample_name.endswith("_bucket") else keys
            assert {k for k, _ in labels} == expected_keys, (sample_name, labels)
        les = {dict(labels)["le"] for sample_name, labels, _ in mine if sample_name.endswith("_bucket")}
        assert set(seed_bounds) <= les, (name, les)
        assert "+Inf" in les


@pytest.mark.parametrize("spec", semconv.ALL_METRICS, ids=lambda s: s.name)
def test_every_family_renders_as_semconv_says(spec: semconv.MetricSpec) -> None:
    tel = Telemetry()
    record_every_family(tel)
    types, samples = without_extras(*parse(render(tel)))
    name = spec.prometheus_name
    assert types[name] == spec.kind.value
    mine = {s for s in samples if s[0] == name or s[0] in {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}
    label_values = {semconv.prometheus_label(key): f"{key}-value" for key in spec.labels}
    if spec.kind is not semconv.MetricKind.HISTOGRAM:
        assert mine == {(name, frozenset(label_values.items()), 1.0)}
        return
    bounds = [*(repr(float(b)) for b in spec.buckets), "+Inf"]
    middle = len(spec.buckets) // 2
    expected_buckets = {
        (f"{name}_bucket", frozenset({**label_values, "le": le}.items()), float(i >= middle))
        for i, le in enumerate(bounds)
    }
    assert {s for s in mine if s[0].endswith("_bucket")} == expected_buckets
    assert (f"{name}_count", frozenset(label_values.items()), 1.0) in mine
    assert (f"{name}_sum", frozenset(label_values.items()), spec.buckets[middle]) in mine


def test_exposition_names_are_the_ones_semconv_derives() -> None:
    tel = Telemetry()
    record_every_family(tel)
    types, _ = without_extras(*parse(render(tel)))
    assert set(types) == {spec.prometheus_name for spec in semconv.ALL_METRICS}


def test_promtool_check_metrics_accepts_the_exposition() -> None:
    promtool = require_binary("promtool")
    tel = Telemetry()
    record_known_values(tel)
    record_every_family(tel)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=tel.render_prometheus(), capture_output=True, timeout=60,
    )
    # promtool exits 0 only when the exposition parses and its lint finds nothing.
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""


# ------------------------------------------------------------------ a real scrape
@pytest.mark.integration
def test_real_prometheus_scrapes_a_uvicorn_app_using_the_sdk() -> None:
    require_binary("prometheus")
    ok, failed = 5, 2
    with uvicorn_process("tests.apps.seed_service:app") as (url, _proc):
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(ok + failed):
                response = client.post("/diagnosis/create", params={"fail": str(i >= ok).lower()})
                assert response.status_code == (200 if i < ok else 504), response.text
        target = url.removeprefix("http://")
        config = prometheus_config(
            targets=[target], job_name="seed-service", scrape_interval="1s", evaluation_interval="1s", rule_files=()
        )
        from mlops_otel.deploy import to_yaml

        with prometheus_server(to_yaml(config)) as prom:
            expected_names = {
                name + suffix
                for name, (kind, _, _) in SEED_CONTRACT.items()
                for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
            }
            deadline = time.monotonic() + 30
            while True:
                series = prom.query('{job="seed-service"}')
                found = {s["metric"]["__name__"] for s in series}
                if expected_names <= found:
                    break
                if time.monotonic() > deadline:
                    up = prom.query('up{job="seed-service"}')
                    pytest.fail(f"missing {sorted(expected_names - found)}; up={up}\n{prom.log()}")
                time.sleep(0.2)

    keys_by_name: dict[str, set[frozenset[str]]] = defaultdict(set)
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for s in series:
        labels = dict(s["metric"])
        name = labels.pop("__name__")
        assert labels.pop("job") == "seed-service"
        assert labels.pop("instance") == target
        keys_by_name[name].add(frozenset(labels))
        values[(name, frozenset(labels.items()))] = float(s["value"][1])
    for name, (kind, keys, _) in SEED_CONTRACT.items():
        if kind == "histogram":
            assert keys_by_name[f"{name}_bucket"] == {keys | {"le"}}, name
            assert keys_by_name[f"{name}_count"] == {keys}, name
            assert keys_by_name[f"{name}_sum"] == {keys}, name
        else:
            assert keys_by_name[name] == {keys}, name
    # The values arrived intact: every request counted once, by outcome.

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    assert value("diagnosis_requests_total", status="success", model_version="v2.1.0") == ok
    assert value("diagnosis_requests_total", status="error", model_version="v2.1.0") == failed
    assert value("diagnosis_errors_total", error_type="TimeoutError", stage="rag_generation") == failed
    assert value("gnn_inference_duration_seconds_count", model_version="v2.1.0") == ok + failed
    assert value("rag_tokens_used_count", model_version="v2.1.0") == ok
    assert value("model_drift_score", model_type="gnn", model_version="v2.1.0") == 0.12
