"""Input features, embeddings, score history and plotting data of DriftDetector."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from examples.diagnosis_service.equipment import EQUIPMENT_TYPES, simulate_values
from examples.diagnosis_service.gnn import EquipmentGNN
from mlops_otel.drift import DriftDetector, DriftLevel
from mlops_otel.drift._features import FeatureReference, feature_drift, holm, mmd2
from mlops_otel.stores import MemoryStore, StateStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


def make(store: StateStore, tel: Telemetry, **options: Any) -> DriftDetector:
    options.setdefault("check_every", None)
    return DriftDetector("gnn", "v1", store=store, telemetry=tel, **options)


def outputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(rng.normal(0.3, 0.08, n), 0, 1), np.clip(rng.normal(0.9, 0.04, n), 0, 1)


def overflow(tel: Telemetry) -> float:
    return sample_value(tel, "mlops_drift_feature_overflow_total", model_type="gnn", model_version="v1") or 0.0


# ----------------------------------------------------------------- features
def test_numeric_and_categorical_features_are_scored_ranked_and_exported(tel: Telemetry) -> None:
    rng = np.random.default_rng(1)
    d = make(MemoryStore(telemetry=tel), tel, window_size=1000)
    s, c = outputs(rng, 1000)
    d.set_reference(anomaly_scores=s, confidences=c, features={
        "temperature": rng.normal(50, 5, 1000).tolist(),
        "equipment": rng.choice(["pump", "valve"], 1000).tolist(),
        "site": rng.choice(["north", "south"], 1000).tolist(),
    })
    for _ in range(1000):
        d.add_production_sample(float(rng.normal(0.3, 0.08)), float(rng.normal(0.9, 0.04)), features={
            "temperature": float(rng.normal(53, 5)),  # +0.6 sd
            "equipment": str(rng.choice(["pump", "valve", "compressor"], p=[0.45, 0.45, 0.1])),
            "site": str(rng.choice(["north", "south"])),
        })
    report = d.get_drift_report()
    ranked = list(report.features)
    assert set(ranked[:2]) == {"temperature", "equipment"}
    assert ranked[2] == "site"
    temp, equip, site = (report.features[n] for n in ("temperature", "equipment", "site"))
    assert (temp.kind, equip.kind) == ("numeric", "categorical")
    assert temp.drifted
    assert equip.drifted
    assert not site.drifted
    assert 80 <= equip.unseen <= 120  # "compressor" was never in the reference
    assert equip.p_adjusted >= equip.p_value
    assert report.level is DriftLevel.WARNING
    assert "Input features that drifted" in report.recommendation
    assert "unseen" in report.recommendation
    assert sample_value(tel, "model_feature_drift_score", model_type="gnn", model_version="v1",
                        feature="temperature") == temp.score
    assert report.to_dict()["features"]["equipment"]["unseen"] == equip.unseen


def test_an_explicit_reference_keeps_ten_windows_of_categories_and_one_of_numbers(tel: Telemetry) -> None:
    # Category counts are all the test needs, so a validation reference of 12,000 keeps 10 x 1,000 of
    # them (the power grows with n*m/(n+m)); numeric features keep reference_size sorted values.
    rng = np.random.default_rng(3)
    d = make(MemoryStore(telemetry=tel), tel, window_size=1000)
    s, c = outputs(rng, 2000)
    d.set_reference(anomaly_scores=s, confidences=c, features={
        "equipment": rng.choice(["pump", "valve"], 12_000).tolist(),
        "temperature": rng.normal(50, 5, 12_000).tolist(),
    })
    s, c = outputs(rng, 300)
    d.add_production_samples(s, c, features={"equipment": rng.choice(["pump", "valve"], 300).tolist(),
                                             "temperature": rng.normal(50, 5, 300).tolist()})
    report = d.get_drift_report()
    assert report.features["equipment"].reference_samples == 10_000
    assert report.features["temperature"].reference_samples == 1000
    assert report.calibration["features"] == "Holm over features, alpha 0.001, effect >= 0.05"


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, float("nan")])
def test_feature_alpha_must_be_a_level(tel: Telemetry, value: float) -> None:
    with pytest.raises(ValueError, match="feature_alpha"):
        make(MemoryStore(telemetry=tel), tel, feature_alpha=value)


def test_default_reference_includes_features_and_bounded_memory(tel: Telemetry) -> None:
    rng = np.random.default_rng(2)
    d = make(MemoryStore(telemetry=tel), tel, window_size=200, max_features=3)
    for i in range(5000):
        d.add_production_sample(0.3, 0.9, features={f"f{j}": float(rng.normal()) for j in range(5)} | {
            "bad": float("nan") if i % 2 else "x"})
    report = d.get_drift_report()
    assert report.reference_source == "production"
    assert set(report.features) == {"f0", "f1", "f2"}  # the cap: f3, f4 and "bad" never tracked
    assert all(f.reference_samples == 200 and f.production_samples == 200 for f in report.features.values())
    assert overflow(tel) == 5000 * 3
    extra = d._extra  # bounded: every per-feature buffer holds at most one window
    assert all(len(v) <= 200 for v in extra.values.values())
    assert all(len(v) <= 200 for v in extra.pending.values())


def test_wrong_kind_values_are_counted(tel: Telemetry) -> None:
    d = make(MemoryStore(telemetry=tel), tel)
    d.add_production_sample(0.3, 0.9, features={"f": 1.0})
    d.add_production_sample(0.3, 0.9, features={"f": "text", "g": True, "h": [1]})  # type: ignore[dict-item]
    assert overflow(tel) == 3


def test_holm_and_feature_statistics() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    ref = FeatureReference.from_values(["a"] * 50 + ["b"] * 50)
    assert ref is not None
    same = feature_drift("x", ref, ["a"] * 50 + ["b"] * 50)
    assert same is not None
    assert same.score == 0.0
    moved = feature_drift("x", ref, ["a"] * 40 + ["b"] * 50 + ["c"] * 10)
    assert moved is not None
    assert moved.score == pytest.approx(0.1)
    assert moved.unseen == 10
    assert FeatureReference.from_values([1.0]) is None


# --------------------------------------------------------------- embeddings
@pytest.fixture(scope="module")
def gnn_embeddings() -> dict[str, np.ndarray]:
    model = EquipmentGNN("v2.2.0", error_probability=0.0)
    etype = EQUIPMENT_TYPES["centrifugal_pump"]
    rng = np.random.default_rng(3)
    return {name: model.embed_values(simulate_values(etype, rng, 300, drift=drift), "centrifugal_pump")
            for name, drift in (("reference", 0.0), ("same", 0.0), ("drifted", 0.5))}


def test_gnn_embeddings_drift_is_detected(tel: Telemetry, gnn_embeddings: dict[str, np.ndarray]) -> None:
    ref = gnn_embeddings["reference"]
    assert ref.ndim == 2
    assert ref.shape[0] == 300
    results = {}
    for case in ("same", "drifted"):
        d = make(MemoryStore(telemetry=tel), tel, window_size=300, embedding_window=300)
        rng = np.random.default_rng(4)
        s, c = outputs(rng, 300)
        d.set_reference(anomaly_scores=s, confidences=c, embeddings=ref)
        for vector, (score, conf) in zip(gnn_embeddings[case], zip(*outputs(rng, 300), strict=True), strict=True):
            d.add_production_sample(float(score), float(conf), embedding=vector)
        results[case] = d.get_drift_report().embedding
    same, drifted = results["same"], results["drifted"]
    assert same is not None
    assert drifted is not None
    assert not same.drifted
    assert drifted.drifted
    assert drifted.p_value <= 0.02
    assert drifted.mmd2 > 3 * same.mmd2
    assert drifted.dimensions == ref.shape[1]
    assert sample_value(tel, "model_embedding_drift_score", model_type="gnn", model_version="v1") == drifted.mmd2


def test_embeddings_of_another_dimension_are_counted(tel: Telemetry) -> None:
    d = make(MemoryStore(telemetry=tel), tel)
    d.add_production_sample(0.3, 0.9, embedding=[0.1, 0.2, 0.3])
    d.add_production_sample(0.3, 0.9, embedding=[0.1, 0.2])
    d.add_production_sample(0.3, 0.9, embedding=[float("nan"), 0.2, 0.3])
    assert overflow(tel) == 2


def test_mmd_is_zero_for_identical_samples() -> None:
    x = np.random.default_rng(5).normal(size=(30, 4))
    assert mmd2(x, x, 1.0) == pytest.approx(0.0, abs=1e-12)


# -------------------------------------------------- history and plot data
@pytest.mark.integration
def test_score_history_is_shared_and_bounded(redis_service: RedisServer, tel: Telemetry) -> None:
    from mlops_otel.stores.redis import RedisStore

    prefix = f"drift-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=0.01, telemetry=tel)
              for _ in range(2)]
    try:
        a, b = (make(s, tel, window_size=200) for s in stores)
        rng = np.random.default_rng(6)
        a.add_production_samples(*outputs(rng, 200))
        for _ in range(3):
            a.get_drift_report()
            b.get_drift_report()
        a.flush()  # the history is written behind, like the windows
        history = b.score_history()
        assert len(history) == 6
        assert history == a.score_history()
        assert [h["time"] for h in history] == sorted(h["time"] for h in history)
        last = history[-1]
        assert {"time", "score", "threshold", "status", "alert", "p_value", "effective_samples"} <= set(last)
        assert last["status"] == "ok"
        assert b.score_history(limit=2) == history[-2:]
        plot = b.distributions(points=11)
        assert len(plot["quantiles"]) == 11
        assert len(plot["outputs"]["anomaly_score"]["reference"]) == 11
        assert plot["outputs"]["anomaly_score"]["production"] == plot["outputs"]["anomaly_score"]["reference"]
    finally:
        for s in stores:
            s.close()


def test_history_keeps_at_most_500_items(tel: Telemetry) -> None:
    d = make(MemoryStore(telemetry=tel), tel, window_size=100)
    d.add_production_samples(*outputs(np.random.default_rng(7), 100))
    for _ in range(520):
        d.get_drift_report()
    assert len(d.score_history()) == 500


def test_distributions_of_features(tel: Telemetry) -> None:
    d = make(MemoryStore(telemetry=tel), tel, window_size=100)
    rng = np.random.default_rng(8)
    s, c = outputs(rng, 100)
    d.add_production_samples(s, c, features={"kind": ["a", "b"] * 50, "x": rng.normal(size=100).tolist()})
    plot = d.distributions()
    assert plot["features"]["kind"] == {"kind": "categorical", "reference": {"a": 0.5, "b": 0.5},
                                        "production": {"a": 0.5, "b": 0.5}}
    assert plot["features"]["x"]["kind"] == "numeric"
    with pytest.raises(ValueError, match="points must be an int >= 2, got 1"):
        d.distributions(points=1)


# ------------------------------------------------------ parts tested alone
def test_local_window_is_a_ring_in_arrival_order_with_write_behind_counts() -> None:
    from mlops_otel.drift._window import DUE_CHECK, DUE_NOTHING, DUE_PUSH, LocalWindow

    w = LocalWindow(size=4, check_every=3, push_every=2, push_on_path=True, reference_size=2)
    w.last_push = 100.0
    assert w.add(0.1, 0.9, 100.0) == DUE_NOTHING
    assert w.add(0.2, 0.9, 100.0) == DUE_PUSH
    assert w.add(0.3, 0.9, 100.0) == DUE_CHECK
    w.mark_checked()
    for x in (0.4, 0.5):
        w.add(x, 0.8, 101.0)
    snap = w.snapshot()
    assert snap.values["anomaly_score"].tolist() == [0.2, 0.3, 0.4, 0.5]  # oldest first, 0.1 overwritten
    assert (snap.start, snap.end, snap.total_samples) == (100.0, 101.0, 5)
    pending = w.take_pending(102.0, with_candidates=True)
    assert pending.scores.tolist() == [0.2, 0.3, 0.4, 0.5]  # at most one window is pending
    assert pending.accepted == 5
    assert pending.candidates == [(0.1, 0.9), (0.2, 0.9)]
    assert w.take_pending(103.0, with_candidates=True).candidates == []  # each candidate is sent once


def test_feature_candidates_are_sent_once_and_stop_at_the_reference_size() -> None:
    from mlops_otel.drift._features import FeatureBuffer

    b = FeatureBuffer(size=3, reference_size=4, max_features=2, embedding_size=2, max_dimensions=3)
    for i in range(3):
        b.add({"x": float(i)}, [1.0, 2.0, float(i)])
    _, vectors, candidates, vector_candidates, overflow = b.take_pending(with_candidates=True)
    assert candidates == {"x": [0.0, 1.0, 2.0]}
    assert len(vectors) == len(vector_candidates) == 2  # embeddings bounded by embedding_size
    for i in range(3, 10):
        b.add({"x": float(i)}, None)
    pending, _, candidates, _, _ = b.take_pending(with_candidates=True)
    assert candidates == {"x": [3.0]}
    assert pending == {"x": [7.0, 8.0, 9.0]}  # pending holds at most one window, the newest
    assert overflow == 0
