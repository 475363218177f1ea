"""The diagnosis example's models: equipment simulator, GNN and extractive RAG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import ks_2samp

import examples.diagnosis_service as package
from examples.diagnosis_service.equipment import (
    EQUIPMENT_TYPES,
    WINDOW,
    EquipmentFleet,
    SensorReadings,
    UnknownEquipmentError,
)
from examples.diagnosis_service.gnn import GNN_VERSIONS, EquipmentGNN, GNNResult, ModelError
from examples.diagnosis_service.rag import (
    RAG_MODEL_VERSION,
    RAGError,
    RAGPipeline,
    count_tokens,
    default_corpus,
    load_corpus,
    parse_note,
    query_for,
)

FloatArray = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def fleet() -> EquipmentFleet:
    return EquipmentFleet()


@pytest.fixture(scope="module")
def models() -> dict[str, EquipmentGNN]:
    """Both versions without transient errors, for scoring tests."""
    return {v: EquipmentGNN(v, error_probability=0.0) for v in GNN_VERSIONS}


@pytest.fixture(scope="module")
def rag() -> RAGPipeline:
    return RAGPipeline()


def _traffic(
    fleet: EquipmentFleet, model: EquipmentGNN, seed: int, drift: float, per_unit: int = 10
) -> tuple[FloatArray, FloatArray]:
    """Scores and confidences of simulated fleet traffic (10 % faulty), vectorised per unit."""
    rng = np.random.default_rng(seed)
    scores, confidences = [], []
    for equipment_id in fleet.ids:
        readings = fleet.simulate_many(equipment_id, rng, per_unit, drift, fault_probability=0.1)
        s, c = model.score_values(np.stack([r.values for r in readings]), readings[0].equipment_type)
        scores.append(s)
        confidences.append(c)
    return np.concatenate(scores), np.concatenate(confidences)


def _labelled_scores(
    fleet: EquipmentFleet, model: EquipmentGNN, seed: int, per_unit: int = 20
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Scores of healthy and of faulty windows of every unit, and all confidences."""
    rng = np.random.default_rng(seed)
    healthy: list[FloatArray] = []
    faulty: list[FloatArray] = []
    confidences: list[FloatArray] = []
    for equipment_id in fleet.ids:
        for target, probability in ((healthy, 0.0), (faulty, 1.0)):
            readings = fleet.simulate_many(equipment_id, rng, per_unit, fault_probability=probability)
            s, c = model.score_values(np.stack([r.values for r in readings]), readings[0].equipment_type)
            target.append(s)
            confidences.append(c)
    return np.concatenate(healthy), np.concatenate(faulty), np.concatenate(confidences)


def _auc(negatives: FloatArray, positives: FloatArray) -> float:
    return float((negatives[:, None] < positives[None, :]).mean())


def _same(a: GNNResult, b: GNNResult) -> bool:
    return (a.anomaly_score, a.confidence, a.top_nodes) == (b.anomaly_score, b.confidence, b.top_nodes)


# ----------------------------------------------------------------------------- equipment


def test_fleet_spreads_fifty_units_over_every_type(fleet: EquipmentFleet) -> None:
    assert len(fleet) == 50
    assert len(set(fleet.ids)) == 50
    for name, etype in EQUIPMENT_TYPES.items():
        ids = fleet.ids_of_type(name)
        assert len(ids) >= 8
        assert all(i.startswith(etype.prefix + "-") for i in ids)
        assert etype.faults, name


def test_sensor_graphs_are_connected_and_symmetric() -> None:
    for name, etype in EQUIPMENT_TYPES.items():
        a = etype.adjacency
        assert np.array_equal(a, a.T), name
        reach = np.linalg.matrix_power(a + np.eye(len(a)), len(a)) > 0
        assert reach.all(), f"{name} sensor graph is not connected"


def test_simulation_is_deterministic_for_a_seed(fleet: EquipmentFleet) -> None:
    runs = [
        fleet.simulate_many("PMP-001", np.random.default_rng(7), 20, 0.5, fault_probability=0.3)
        for _ in range(2)
    ]
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a.values, b.values)
        assert (a.fault, a.drift) == (b.fault, b.drift)
    other = fleet.simulate_many("PMP-001", np.random.default_rng(8), 20, 0.5)
    assert not np.array_equal(runs[0][0].values, other[0].values)


def test_healthy_readings_stay_near_nominal(fleet: EquipmentFleet) -> None:
    rng = np.random.default_rng(1)
    for name, etype in EQUIPMENT_TYPES.items():
        readings = fleet.simulate_many(fleet.ids_of_type(name)[0], rng, 200)
        values = np.stack([r.values for r in readings])
        assert values.shape == (200, len(etype.sensors), WINDOW)
        assert readings[0].sensors == etype.sensor_names
        z = (values - etype.nominal_mean[:, None]) / etype.nominal_std[:, None]
        assert np.abs(z.mean(axis=(0, 2))).max() < 1.5, name
        assert all(r.fault is None for r in readings)


def test_fault_probability_sets_the_faulty_fraction(fleet: EquipmentFleet) -> None:
    readings = fleet.simulate_many("MTR-001", np.random.default_rng(2), 4000, fault_probability=0.25)
    faulty = np.array([r.fault is not None for r in readings])
    # 0.25 +- 5 binomial standard deviations (0.0068)
    assert abs(faulty.mean() - 0.25) < 0.035
    assert {r.fault for r in readings} - {None} == set(EQUIPMENT_TYPES["electric_motor"].fault_names)


def test_forced_fault_moves_its_sensors(fleet: EquipmentFleet) -> None:
    etype = EQUIPMENT_TYPES["centrifugal_pump"]
    rng = np.random.default_rng(3)
    suction = etype.sensor_names.index("suction_pressure")
    healthy = np.stack([r.values for r in fleet.simulate_many("PMP-002", rng, 200)])
    cavitating = np.stack([r.values for r in fleet.simulate_many("PMP-002", rng, 200, fault="cavitation")])
    shift = (cavitating[:, suction].mean() - healthy[:, suction].mean()) / etype.nominal_std[suction]
    assert shift < -2.0


def test_simulator_rejects_bad_arguments(fleet: EquipmentFleet) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UnknownEquipmentError, match=r"equipment_id must be .*got 'XYZ-1'") as info:
        fleet.simulate("XYZ-1", rng)
    assert info.value.equipment_id == "XYZ-1"
    with pytest.raises(ValueError, match=r"drift must be a finite number >= 0, got -1.0"):
        fleet.simulate("PMP-001", rng, -1.0)
    with pytest.raises(ValueError, match=r"drift must be .*got nan"):
        fleet.simulate("PMP-001", rng, float("nan"))
    with pytest.raises(ValueError, match=r"fault must be one of .*got 'stiction'"):
        fleet.simulate("PMP-001", rng, fault="stiction")
    with pytest.raises(ValueError, match=r"fault_probability must be between 0 and 1, got 1.5"):
        fleet.simulate("PMP-001", rng, fault_probability=1.5)
    with pytest.raises(ValueError, match=r"size must be an int >= 1, got 0"):
        EquipmentFleet(size=0)


# ----------------------------------------------------------------------------- GNN


def test_gnn_is_deterministic_for_a_version(fleet: EquipmentFleet) -> None:
    readings = fleet.simulate_many("CMP-003", np.random.default_rng(4), 30, fault_probability=0.5)
    for version in GNN_VERSIONS:
        first, second = EquipmentGNN(version), EquipmentGNN(version)
        for r in readings:
            outcomes: list[GNNResult | str] = []
            for model in (first, second):
                try:
                    outcomes.append(model.predict(r))
                except ModelError as error:
                    outcomes.append(error.kind)
            a, b = outcomes
            assert _same(a, b) if isinstance(a, GNNResult) and isinstance(b, GNNResult) else a == b


def test_versions_are_different_models(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    r = fleet.simulate("HEX-001", np.random.default_rng(5), fault="fouling")
    old, new = models["v2.1.0"].predict(r), models["v2.2.0"].predict(r)
    assert (old.model_version, new.model_version) == ("v2.1.0", "v2.2.0")
    assert old.anomaly_score != new.anomaly_score


def test_result_fields_are_in_range(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    rng = np.random.default_rng(6)
    for equipment_id in fleet.ids[:12]:
        r = fleet.simulate(equipment_id, rng, 0.5, fault_probability=0.5)
        for model in models.values():
            result = model.predict(r)
            assert 0.0 <= result.anomaly_score <= 1.0
            assert 0.0 <= result.confidence <= 1.0
            assert result.inference_time_ms > 0.0
            assert len(result.top_nodes) == 3 == len(set(result.top_nodes))
            assert set(result.top_nodes) <= set(r.sensors)
            assert (result.equipment_id, result.equipment_type) == (equipment_id, r.equipment_type)


def test_faulty_equipment_scores_higher(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    for version, model in models.items():
        healthy, faulty, _ = _labelled_scores(fleet, model, seed=10)
        assert faulty.mean() - healthy.mean() > 0.4, version
        assert _auc(healthy, faulty) > 0.95, version


def test_v2_2_0_is_the_better_model(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    stats = {}
    for version, model in models.items():
        healthy, faulty, confidence = _labelled_scores(fleet, model, seed=11)
        errors = (healthy >= 0.5).mean() + (faulty < 0.5).mean()
        stats[version] = (errors / 2, confidence.mean())
    assert stats["v2.2.0"][0] < stats["v2.1.0"][0]
    assert stats["v2.2.0"][1] > stats["v2.1.0"][1]


def test_top_nodes_point_at_the_faulty_sensors(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    rng = np.random.default_rng(12)
    hits = total = 0
    for name, etype in EQUIPMENT_TYPES.items():
        for fault, effects in etype.faults.items():
            for r in fleet.simulate_many(fleet.ids_of_type(name)[0], rng, 5, fault=fault):
                hits += models["v2.2.0"].predict(r).top_nodes[0] in effects
                total += 1
    assert hits / total > 0.9


def test_v2_1_0_fails_more_often_than_v2_2_0(fleet: EquipmentFleet) -> None:
    readings = [r for i in fleet.ids for r in fleet.simulate_many(i, np.random.default_rng(13), 80)]
    rates = {}
    for version in GNN_VERSIONS:
        model = EquipmentGNN(version)
        errors: list[ModelError] = []
        for r in readings:
            try:
                model.predict(r)
            except ModelError as error:
                errors.append(error)
        assert {(e.kind, e.version) for e in errors} == {("transient", version)}
        rates[version] = len(errors) / len(readings)
        expected = GNN_VERSIONS[version].error_probability
        assert abs(rates[version] - expected) < 5 * np.sqrt(expected * (1 - expected) / len(readings))
    assert rates["v2.1.0"] > rates["v2.2.0"]


def test_error_probability_is_a_constructor_parameter(fleet: EquipmentFleet) -> None:
    readings = fleet.simulate_many("VLV-001", np.random.default_rng(14), 50)
    never, always = EquipmentGNN("v2.1.0", error_probability=0.0), EquipmentGNN("v2.1.0", error_probability=1.0)
    assert EquipmentGNN("v2.1.0").error_probability == GNN_VERSIONS["v2.1.0"].error_probability
    for r in readings:
        never.predict(r)
        with pytest.raises(ModelError, match="simulated transient error"):
            always.predict(r)


def test_invalid_readings_raise_model_error(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    model = models["v2.2.0"]
    good = fleet.simulate("FAN-001", np.random.default_rng(15))
    broken = good.values.copy()
    broken[0, 3] = np.nan
    cases = {
        "must be finite": SensorReadings(good.equipment_id, good.equipment_type, good.sensors, broken),
        "must have shape": SensorReadings(good.equipment_id, good.equipment_type, good.sensors, good.values[:2]),
        "equipment_type must be one of": SensorReadings(good.equipment_id, "boiler", good.sensors, good.values),
    }
    for message, readings in cases.items():
        with pytest.raises(ModelError, match=message) as info:
            model.predict(readings)
        assert info.value.kind == "invalid_input"


def test_gnn_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match=r"version must be one of \('v2.1.0', 'v2.2.0'\), got 'v9'"):
        EquipmentGNN("v9")
    with pytest.raises(ValueError, match=r"error_probability must be between 0 and 1, got -0.1"):
        EquipmentGNN("v2.2.0", error_probability=-0.1)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 1, got 0"):
        EquipmentGNN("v2.2.0", top_k=0)


def test_drift_shifts_scores_and_lowers_confidence(
    fleet: EquipmentFleet, models: dict[str, EquipmentGNN]
) -> None:
    for version, model in models.items():
        reference, reference_conf = _traffic(fleet, model, seed=20, drift=0.0)
        same, _ = _traffic(fleet, model, seed=21, drift=0.0)
        drifted, drifted_conf = _traffic(fleet, model, seed=22, drift=1.0)
        assert ks_2samp(reference, same).statistic < 0.15, version
        assert ks_2samp(reference, drifted).statistic > 0.3, version
        assert drifted.mean() > reference.mean(), version
        assert drifted_conf.mean() < reference_conf.mean() - 0.1, version


def test_confidence_falls_steadily_with_drift(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    for version, model in models.items():
        means = [_traffic(fleet, model, seed=23, drift=d, per_unit=6)[1].mean() for d in (0.0, 0.5, 1.0, 2.0)]
        assert means == sorted(means, reverse=True), (version, means)


# ----------------------------------------------------------------------------- RAG


def test_corpus_loads_from_the_package_directory() -> None:
    directory = Path(str(default_corpus()))
    assert directory == Path(package.__file__).parent / "corpus"
    notes = load_corpus()
    assert 30 <= len(notes) <= 60
    assert [n.id for n in notes] == sorted(p.stem for p in directory.glob("*.md"))
    for note in notes:
        assert note.title, note.id
        assert note.sections["actions"], note.id


def test_every_fault_mode_has_its_note(rag: RAGPipeline) -> None:
    for name, etype in EQUIPMENT_TYPES.items():
        for fault in etype.fault_names:
            matches = [n for n in rag.notes if n.equipment == name and n.metadata.get("fault") == fault]
            assert len(matches) == 1, (name, fault)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pump cavitation", "pump-cavitation"),
        ("heat exchanger fouling", "hex-fouling"),
        ("control valve stiction", "valve-stiction"),
        ("electric motor bearing wear", "motor-bearing-wear"),
        ("sensor calibration drift", "sensor-calibration-drift"),
    ],
)
def test_retrieval_ranks_the_relevant_note_first(rag: RAGPipeline, query: str, expected: str) -> None:
    hits = rag.retrieve(query)
    assert hits[0].note.id == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_gnn_verdicts_retrieve_the_fault_note(fleet: EquipmentFleet, models: dict[str, EquipmentGNN],
                                              rag: RAGPipeline) -> None:
    rng = np.random.default_rng(30)
    first = top = total = 0
    for name, etype in EQUIPMENT_TYPES.items():
        for fault in etype.fault_names:
            (note,) = [n.id for n in rag.notes if n.equipment == name and n.metadata.get("fault") == fault]
            for r in fleet.simulate_many(fleet.ids_of_type(name)[1], rng, 5, fault=fault):
                sources = rag.generate(models["v2.2.0"].predict(r)).sources
                first += sources[0] == note
                top += note in sources
                total += 1
    assert first / total > 0.7
    assert top / total > 0.85


def test_cavitating_pump_gets_the_cavitation_note(
    fleet: EquipmentFleet, models: dict[str, EquipmentGNN], rag: RAGPipeline
) -> None:
    readings = fleet.simulate_many("PMP-003", np.random.default_rng(31), 20, fault="cavitation")
    results = [rag.generate(models["v2.2.0"].predict(r)) for r in readings]
    assert sum(r.sources[0] == "pump-cavitation" for r in results) >= 16
    answer = results[0].answer
    assert "PMP-003" in answer
    assert "Cavitation in centrifugal pumps [pump-cavitation]" in answer
    assert "1. Check the suction strainer" in answer


def test_healthy_equipment_gets_routine_advice(
    fleet: EquipmentFleet, models: dict[str, EquipmentGNN], rag: RAGPipeline
) -> None:
    rng = np.random.default_rng(32)
    verdicts = [models["v2.2.0"].predict(fleet.simulate(i, rng)) for i in fleet.ids]
    normal = [v for v in verdicts if v.anomaly_score < 0.5 and v.confidence >= 0.6]
    assert len(normal) > 0.8 * len(verdicts)
    assert all(rag.generate(v).sources[0] == "condition-monitoring-baselines" for v in normal)


def test_low_confidence_asks_about_sensor_drift(rag: RAGPipeline) -> None:
    result = GNNResult(0.8, 0.3, ("flow", "pump_vibration", "motor_current"), 0.1, "v2.2.0", "PMP-001",
                       "centrifugal_pump")
    assert "sensor drift" in query_for(result)
    assert "sensor-calibration-drift" in rag.generate(result).sources


def test_generation_is_deterministic_and_counts_tokens(
    fleet: EquipmentFleet, models: dict[str, EquipmentGNN], rag: RAGPipeline
) -> None:
    verdict = models["v2.1.0"].predict(fleet.simulate("CMP-002", np.random.default_rng(33), fault="valve_failure"))
    a, b = rag.generate(verdict), RAGPipeline().generate(verdict)
    assert (a.answer, a.sources, a.input_tokens, a.output_tokens) == (b.answer, b.sources, b.input_tokens,
                                                                      b.output_tokens)
    assert a.model_version == RAG_MODEL_VERSION == "rag-extractive-1.0"
    notes = {n.id: n for n in rag.notes}
    prompt = "\n\n".join([query_for(verdict), *(notes[s].text for s in a.sources)])
    assert a.input_tokens == count_tokens(prompt) > a.output_tokens == count_tokens(a.answer) > 0
    assert a.total_tokens == a.input_tokens + a.output_tokens
    assert a.generation_time_ms > 0.0


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("pump", 1), ("Hello, world!", 4), ("cavitation", 2), ("2024", 2), ("NPSH 1 m.", 4)],
)
def test_token_counting_rule(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


@given(st.text(max_size=60), st.text(max_size=60))
def test_token_counts_add_up_across_whitespace(a: str, b: str) -> None:
    assert count_tokens(a + " " + b) == count_tokens(a) + count_tokens(b)


def test_rag_error_model_and_validation(fleet: EquipmentFleet, models: dict[str, EquipmentGNN]) -> None:
    verdict = models["v2.2.0"].predict(fleet.simulate("HEX-002", np.random.default_rng(34)))
    with pytest.raises(RAGError, match="simulated transient error") as info:
        RAGPipeline(error_probability=1.0).generate(verdict)
    assert info.value.model_version == RAG_MODEL_VERSION
    with pytest.raises(ValueError, match=r"error_probability must be between 0 and 1, got 2"):
        RAGPipeline(error_probability=2)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 1, got 0"):
        RAGPipeline(top_k=0)


def test_malformed_notes_and_empty_corpora_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"note 'x' must start with a '# Title' line"):
        parse_note("x", "no title here")
    with pytest.raises(ValueError, match=r"note 'y' must have non-empty sections .*missing \['actions'\]"):
        parse_note("y", "# T\n\nequipment: any\n\n## Symptoms\nA.\n## Causes\nB.\n")
    with pytest.raises(ValueError, match=r"note 'z': metadata lines must be 'key: value', got 'oops'"):
        parse_note("z", "# T\noops\n")
    with pytest.raises(ValueError, match="corpus directory must contain"):
        load_corpus(tmp_path)
