"""The operator's pages without a browser: content, no network, API-equal errors, the cores' histories, local docs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

import mlops_otel
from mlops_otel import Runtime
from mlops_otel.ab import ABTestConfig, RolloutManager, RolloutSchedule
from mlops_otel.fastapi import get_runtime, instrument_app, uninstrument_app
from mlops_otel.ui._sources import histogram, histogram_from_quantiles

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEST = "gnn_v2.2_test"
#: Anything a page could load from elsewhere: <script>, or a src/href that leaves the service.
EXTERNAL = re.compile(r"<script|\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _reset_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def make_app(**options: object) -> FastAPI:
    app = FastAPI(title="service")
    instrument_app(app, runtime_factory=lambda: Runtime.create(store="memory://"), management=True,
                   management_token=TOKEN, instrument_http=False, **options)  # type: ignore[arg-type]
    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app()) as client:
        yield client


def traffic(runtime: Runtime, rng: np.random.Generator, n: int, *, drift: float = 0.0) -> None:
    """*n* users through assignment; the treatment is more confident; drift shifts the anomaly scores."""
    detector = runtime.drift.get_detector("gnn", "v1")
    for i in range(n):
        variant = runtime.ab.assign_variant("gnn", f"user-{rng.integers(1 << 30)}-{i}")
        confidence = float(np.clip(rng.normal(0.80 if variant["name"] == "control" else 0.86, 0.05), 0, 1))
        runtime.ab.record_result(TEST, variant["name"], float(rng.normal(20, 2)), confidence, error=False)
        runtime.registry.update_metrics("gnn", variant["version"] or "v1", 20.0, confidence, error=False)
        detector.add_production_sample(float(np.clip(rng.beta(2, 5) + drift, 0, 1)), confidence)


@pytest.fixture
def scenario(client: TestClient) -> Runtime:
    """v1 champion, an A/B test v1 vs v2 evaluated three times, a drift detector with a reference."""
    runtime = get_runtime(client.app)  # type: ignore[arg-type]
    for version in ("v1", "v2"):
        assert client.post("/mlops/registry/gnn/versions", json={"version": version}, headers=AUTH).status_code == 201
    body = {"name": TEST, "model_type": "gnn", "control_version": "v1", "treatment_version": "v2",
            "treatment_traffic_pct": 50, "min_samples": 100}
    assert client.post("/mlops/ab/tests", json=body, headers=AUTH).status_code == 201
    rng = np.random.default_rng(3)
    runtime.drift.get_detector("gnn", "v1").set_reference(anomaly_scores=rng.beta(2, 5, 2000),
                                                          confidences=rng.beta(8, 2, 2000))
    for _ in range(3):
        traffic(runtime, rng, 300, drift=0.4)
        assert client.post(f"/mlops/ab/tests/{TEST}/evaluate", headers=AUTH).status_code == 200
        assert client.get("/mlops/drift/gnn/v1").status_code == 200
    return runtime


def charts(html: str) -> list[str]:
    return re.findall(r'<figure class="chart" data-chart="([^"]+)"><svg ', html)


def test_pages_show_their_evidence_and_load_nothing_from_elsewhere(client: TestClient, scenario: Runtime) -> None:
    pages = {path: client.get(path) for path in (
        "/mlops/ui", f"/mlops/ui/experiments/{TEST}", "/mlops/ui/drift/gnn/v1", "/mlops/ui/registry/gnn")}
    for path, response in pages.items():
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert EXTERNAL.search(response.text) is None, (path, EXTERNAL.search(response.text))

    overview = pages["/mlops/ui"].text
    assert '<a href="/docs">API docs</a>' in overview
    assert f'href="/mlops/ui/experiments/{TEST}"' in overview
    assert 'href="/mlops/ui/drift/gnn/v1"' in overview
    assert "A/B test &#39;gnn_v2.2_test&#39; started" in overview  # the challenger's role change, escaped

    experiment = pages[f"/mlops/ui/experiments/{TEST}"].text
    assert sorted(charts(experiment)) == ["evidence-confidence", "evidence-error_rate", "evidence-latency_ms",
                                          "split"]
    # The three evaluations (ab's shared history) are the evidence path: one dot each on the estimate line.
    confidence_chart = experiment.split('data-chart="evidence-confidence"')[1].split("</figure>")[0]
    assert confidence_chart.count('class="dot reactive') >= 3
    assert "Rollout steps" not in experiment  # a plain A/B test has none
    evaluation = scenario.ab.evaluate_test(TEST)
    assert str(escape(evaluation.recommendation)) in experiment

    drift = pages["/mlops/ui/drift/gnn/v1"].text
    assert sorted(charts(drift)) == ["distribution-anomaly_score", "distribution-confidence", "score"]
    report = scenario.drift.get_detector("gnn", "v1").get_drift_report()
    assert report.level.value == "alert"  # the 0.4 shift of the anomaly scores
    assert str(escape(report.recommendation)) in drift
    score_chart = drift.split('data-chart="score"')[1].split("</figure>")[0]
    assert score_chart.count('class="dot reactive') >= 3  # drift's shared history: every report the API served

    registry = pages["/mlops/ui/registry/gnn"].text
    assert registry.index("challenger") < registry.index("first version registered")  # newest first


@pytest.mark.parametrize(("ui", "api"), [
    ("/mlops/ui/experiments/nope", "/mlops/ab/tests/nope"),
    ("/mlops/ui/registry/nope", "/mlops/registry/nope/history"),
    ("/mlops/ui/registry/%7Bbad%7D", "/mlops/registry/%7Bbad%7D/history"),
    ("/mlops/ui/drift/gnn/v9", "/mlops/drift/gnn/v9"),
    ("/mlops/ui/drift/nope/v1", "/mlops/drift/nope/v1"),
    ("/mlops/ui/drift/gnn", "/mlops/drift/gnn"),
])
def test_bad_path_parameters_answer_as_the_api_does(client: TestClient, scenario: Runtime, ui: str,
                                                    api: str) -> None:
    page, answer = client.get(ui), client.get(api)
    assert page.status_code == answer.status_code
    assert page.status_code in (404, 422)
    if answer.json()["detail"] != "Not Found":  # a domain error, not an unknown route: a readable page
        assert page.headers["content-type"].startswith("text/html")


def test_experiment_page_shows_a_rollout_schedule_and_its_current_step(client: TestClient) -> None:
    runtime = get_runtime(client.app)  # type: ignore[arg-type]
    for version in ("v1", "v2"):
        runtime.registry.register("gnn", version)
    config = ABTestConfig(name="ramp", model_type="gnn", control_version="v1", treatment_version="v2")
    RolloutManager(runtime.ab).start(config, RolloutSchedule.of((1.0, 5.0, 20.0), min_results=50))
    html = client.get("/mlops/ui/experiments/ramp").text
    section = html.split("<h2>Rollout steps</h2>")[1].split("<h2>")[0]
    assert "ramping" in section
    assert "treatment now gets 1% of users" in section
    rows = re.findall(r"<tr><td>(\d)</td><td class=\"num\">([\d.]+)%</td>", section)
    assert rows == [("1", "1"), ("2", "5"), ("3", "20")]
    assert section.count("current</span>") == 1


def test_experiment_page_shows_the_segments_of_the_last_evaluation(client: TestClient) -> None:
    runtime = get_runtime(client.app)  # type: ignore[arg-type]
    for version in ("v1", "v2"):
        runtime.registry.register("gnn", version)
    runtime.ab.start_test(ABTestConfig(name="seg", model_type="gnn", control_version="v1", treatment_version="v2",
                                       treatment_traffic_pct=50, segment_by="equipment"))
    html = client.get("/mlops/ui/experiments/seg").text
    assert "<h2>Segments</h2>" not in html  # never evaluated: nothing to show, and a page view never evaluates
    rng = np.random.default_rng(5)
    for i in range(1200):
        variant = "treatment" if i % 2 else "control"
        runtime.ab.record_result("seg", variant, 20.0, float(np.clip(rng.normal(0.8, 0.05), 0, 1)), False,
                                 attributes={"equipment": ("pump", "valve")[i % 4 // 2]})
    assert client.post("/mlops/ab/tests/seg/evaluate", headers=AUTH).status_code == 200
    html = client.get("/mlops/ui/experiments/seg").text
    segments = html.split("<h2>Segments</h2>")[1].split("</table>")[0]
    assert "<td>pump</td>" in segments
    assert "<td>valve</td>" in segments
    assert len(runtime.ab.evaluation_history("seg")) == 1  # the page read the history, it did not evaluate


def test_many_versions_fold_into_a_list(client: TestClient) -> None:
    runtime = get_runtime(client.app)  # type: ignore[arg-type]
    for i in range(30):
        runtime.registry.register("gnn", f"v{i}")
    html = client.get("/mlops/ui").text
    assert "<details><summary>29 more versions (candidates and archived)</summary>" in html
    assert client.get("/mlops/ui/").status_code == 200  # the trailing slash redirects to the overview


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=20, max_size=400))
def test_quantile_histogram_matches_the_sample_histogram(values: list[float]) -> None:
    edges = [i / 10 for i in range(11)]
    probabilities = np.linspace(0.0, 1.0, 201)
    quantiles = np.quantile(np.asarray(values), probabilities)
    shares = histogram_from_quantiles(list(quantiles), list(probabilities), edges)
    assert min(shares) >= 0.0
    assert sum(shares) == pytest.approx(1.0)
    direct = histogram(values, edges)
    assert sum(direct) == pytest.approx(1.0)
    # Linear interpolation between 201 quantiles misplaces at most a few percent of the mass per bin,
    # plus what ties at a bin edge (many equal values) put on one side.
    ties = max(np.unique(values, return_counts=True)[1]) / len(values)
    assert max(abs(a - b) for a, b in zip(shares, direct, strict=True)) <= 0.02 + ties + 1 / len(values)


def test_docs_pages_use_packaged_assets_and_uninstrument_restores_fastapi_pages() -> None:
    app = make_app()
    with TestClient(app) as client:
        for path in ("/docs", "/redoc"):
            html = client.get(path).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets, path
            assert all(a.startswith("/_mlops-otel/docs-assets/") for a in assets), (path, assets)
            for asset in assets:
                assert client.get(asset).status_code == 200, asset
            assert "fonts.googleapis" not in html
        bundle = client.get("/_mlops-otel/docs-assets/redoc.standalone.js")
        assert b"cdn.redoc.ly" not in bundle.content
        assert len(bundle.content) > 500_000
        assert client.get("/openapi.json").status_code == 200
        assert not any(p.startswith("/mlops/ui") for p in client.get("/openapi.json").json()["paths"])
    uninstrument_app(app)
    with TestClient(app) as client:
        assert "cdn.jsdelivr.net" in client.get("/docs").text  # FastAPI's own page is back
        assert client.get("/_mlops-otel/docs-assets/swagger-ui.css").status_code == 404


def test_local_docs_can_be_turned_off() -> None:
    with TestClient(make_app(local_docs=False)) as client:
        assert "cdn.jsdelivr.net" in client.get("/docs").text
