"""The StateStore contract, run against MemoryStore, RedisStore and RedisStore on a 3-node Cluster."""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest
import redis.crc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_otel.stores import MemoryStore, StateStore, StoreError, Versioned, make_key
from mlops_otel.stores._keys import check_prefix, glob_escape, hash_tag, key_slot, slot_tag
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .strategies import counter_deltas, json_values, store_keys

KINDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.integration),
    pytest.param("cluster", marks=pytest.mark.integration),
]


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tel: Telemetry) -> Iterator[StateStore]:
    """A fresh store of each kind; Redis ones get a deployment prefix of their own."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    made: StateStore
    if request.param == "memory":
        made = MemoryStore(telemetry=tel)
    elif request.param == "redis":
        url = request.getfixturevalue("redis_service").url
        made = RedisStore.from_url(url, prefix=prefix, telemetry=tel)
    else:
        url = request.getfixturevalue("redis_cluster_nodes")[0].url
        made = RedisStore.from_url(url, prefix=prefix, cluster=True, telemetry=tel)
    yield made
    made.close()


def invalid_count(tel: Telemetry, metric: str) -> float | None:
    return sample_value(tel, "mlops_invalid_measurements_total", metric=metric)


# ------------------------------------------------------------------ protocol
def test_is_a_state_store(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert store.kind in ("memory", "redis")


def test_flush_returns_true_and_close_is_idempotent(store: StateStore) -> None:
    store.incr("k", {"n": 1})
    assert store.flush() is True
    store.close()
    store.close()


# ------------------------------------------------------------------ counters
def test_increments_accumulate_per_field(store: StateStore) -> None:
    key = make_key("ab", "t1", "stats")
    store.incr(key, {"n": 1, "sum": 2.5})
    store.incr(key, {"n": 1, "sum": -0.5, "sumsq": 4})
    store.flush()
    assert store.read_counters(key) == {"n": 2.0, "sum": 2.0, "sumsq": 4.0}


def test_counters_are_floats_and_absent_key_is_empty(store: StateStore) -> None:
    store.incr("k", {"n": 3})
    store.flush()
    counters = store.read_counters("k")
    assert counters == {"n": 3.0}
    assert all(type(v) is float for v in counters.values())
    assert store.read_counters("absent") == {}


def test_keys_are_independent(store: StateStore) -> None:
    a, b = make_key("m", "v1", "stats"), make_key("m", "v2", "stats")
    store.incr(a, {"n": 1})
    store.incr(b, {"n": 10})
    store.incr("plain-key", {"n": 100})
    store.flush()
    assert store.read_counters(a) == {"n": 1.0}
    assert store.read_counters(b) == {"n": 10.0}
    assert store.read_counters("plain-key") == {"n": 100.0}


def test_fractional_increments_add_up(store: StateStore) -> None:
    for _ in range(10):
        store.incr("k", {"x": 0.1})
    store.flush()
    assert store.read_counters("k")["x"] == pytest.approx(1.0, rel=1e-12)


def test_numpy_scalars_are_accepted(store: StateStore) -> None:
    store.incr("k", {"a": np.float32(1.5), "b": np.int64(2), "c": np.float64(0.25)})  # type: ignore[dict-item]
    store.flush()
    assert store.read_counters("k") == {"a": 1.5, "b": 2.0, "c": 0.25}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1", None, True, 10**400])
def test_an_invalid_delta_skips_the_whole_increment_and_is_counted(
    store: StateStore, tel: Telemetry, bad: object
) -> None:
    store.incr("k", {"n": 1, "bad": bad})  # type: ignore[dict-item]
    store.flush()
    assert store.read_counters("k") == {}
    assert invalid_count(tel, "bad") == 1.0


def test_keys_with_braces_and_odd_characters(store: StateStore) -> None:
    keys = ["a}b", "a{}b", "{x}", "}{", "sp ace:*?[]\\", "ünï{cödé}"]
    for i, key in enumerate(keys):
        store.incr(key, {"n": i})
        store.append(key + "-w", [i], max_len=3)
    store.flush()
    for i, key in enumerate(keys):
        assert store.read_counters(key) == {"n": float(i)}
        assert store.read_window(key + "-w") == [i]


# ------------------------------------------------------------------ windows
def test_window_keeps_the_newest_max_len_oldest_first(store: StateStore) -> None:
    for start in range(0, 10, 3):
        store.append("w", list(range(start, min(start + 3, 10))), max_len=5)
    store.flush()
    assert store.read_window("w") == [5, 6, 7, 8, 9]
    assert store.read_window("absent") == []


def test_window_items_round_trip_as_json(store: StateStore) -> None:
    items = [1, 2.5, "s", None, True, {"a": [1, 2]}, [1, "x"], (3, 4)]
    store.append("w", items, max_len=100)  # type: ignore[arg-type]
    store.flush()
    assert store.read_window("w") == [1, 2.5, "s", None, True, {"a": [1, 2]}, [1, "x"], [3, 4]]


def test_read_window_returns_copies(store: StateStore) -> None:
    store.append("w", [{"a": 1}], max_len=3)
    store.flush()
    first = store.read_window("w")
    assert isinstance(first[0], dict)
    first[0]["a"] = 2
    assert store.read_window("w") == [{"a": 1}]


def test_lowering_max_len_trims_to_the_new_bound(store: StateStore) -> None:
    store.append("w", list(range(10)), max_len=10)
    store.flush()
    store.append("w", [10], max_len=3)
    store.flush()
    assert store.read_window("w") == [8, 9, 10]


@pytest.mark.parametrize("bad", [math.nan, math.inf, object(), {"x": math.nan}, b"bytes"])
def test_a_non_json_item_skips_the_append_and_is_counted(store: StateStore, tel: Telemetry, bad: object) -> None:
    store.append("w", [1.0, bad], max_len=5)  # type: ignore[list-item]
    store.flush()
    assert store.read_window("w") == []
    assert invalid_count(tel, "w") == 1.0


@pytest.mark.parametrize("max_len", [0, -1, 1.5, True, None])
def test_max_len_must_be_a_positive_int(store: StateStore, max_len: object) -> None:
    with pytest.raises(ValueError, match="max_len must be an int >= 1"):
        store.append("w", [1], max_len=max_len)  # type: ignore[arg-type]


# ------------------------------------------------------------------ documents
def test_compare_and_set_versions_documents(store: StateStore) -> None:
    assert store.get_document("d") is None
    assert store.compare_and_set("d", {"champion": "v1"}, expected_version=0) is True
    assert store.get_document("d") == Versioned({"champion": "v1"}, 1)
    assert store.compare_and_set("d", {"champion": "v2"}, expected_version=0) is False
    assert store.compare_and_set("d", {"champion": "v2"}, expected_version=1) is True
    assert store.compare_and_set("d", {"champion": "v3"}, expected_version=5) is False
    assert store.get_document("d") == Versioned({"champion": "v2"}, 2)


def test_documents_are_copies(store: StateStore) -> None:
    value: dict[str, object] = {"a": [1]}
    store.compare_and_set("d", value, expected_version=0)  # type: ignore[arg-type]
    value["a"] = [2]
    doc = store.get_document("d")
    assert doc is not None
    assert doc.value == {"a": [1]}


def test_non_json_documents_are_rejected(store: StateStore) -> None:
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        store.compare_and_set("d", {"x": math.nan}, expected_version=0)
    with pytest.raises(TypeError):
        store.compare_and_set("d", object(), expected_version=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected_version must be an int >= 0"):
        store.compare_and_set("d", 1, expected_version=-1)
    assert store.get_document("d") is None


# ------------------------------------------------------------------ delete / list
def test_delete_removes_every_kind_of_value(store: StateStore) -> None:
    store.incr("c", {"n": 1})
    store.append("w", [1], max_len=2)
    store.compare_and_set("d", 1, expected_version=0)
    store.flush()
    for key in ("c", "w", "d", "absent"):
        store.delete(key)
    assert store.read_counters("c") == {}
    assert store.read_window("w") == []
    assert store.get_document("d") is None
    assert store.list_keys("") == []


def test_delete_also_removes_writes_not_yet_flushed(store: StateStore) -> None:
    store.incr("c", {"n": 1})
    store.append("w", [1], max_len=2)
    store.delete("c")
    store.delete("w")
    store.flush()
    assert store.read_counters("c") == {}
    assert store.read_window("w") == []


def test_list_keys_filters_by_prefix_sorted_without_internals(store: StateStore) -> None:
    groups = [f"g{i}" for i in range(20)]  # tags spread over every Cluster node
    for g in groups:
        store.incr(make_key("ab", g, "stats"), {"n": 1})
    store.append(make_key("drift", "m", "w"), [1], max_len=2)
    store.compare_and_set("registry:doc", {}, expected_version=0)
    store.flush()
    assert store.list_keys("ab:") == sorted(make_key("ab", g, "stats") for g in groups)
    assert store.list_keys("") == sorted(
        [*(make_key("ab", g, "stats") for g in groups), make_key("drift", "m", "w"), "registry:doc"]
    )
    assert store.list_keys("nothing") == []


def test_list_keys_prefix_is_literal(store: StateStore) -> None:
    for key in ("a*b:1", "a*b:2", "axb:3", "q?[x]:1", "q?[x]\\", "qz[x]:1"):
        store.incr(key, {"n": 1})
    store.flush()
    assert store.list_keys("a*b") == ["a*b:1", "a*b:2"]
    assert store.list_keys("q?[x]") == ["q?[x]:1", "q?[x]\\"]


# ------------------------------------------------------------------ model-based
operations = st.lists(
    st.one_of(
        st.tuples(st.just("incr"), st.sampled_from(("a", "b{g}")), counter_deltas),
        st.tuples(st.just("append"), st.sampled_from(("w", "v{g}")),
                  st.tuples(st.lists(json_values, max_size=5), st.integers(1, 6))),
        st.tuples(st.just("delete"), st.sampled_from(("a", "w")), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_behaves_like_a_dict_of_sums_and_deques(store: StateStore, ops: list[tuple[str, str, object]]) -> None:
    ns = uuid.uuid4().hex[:8] + ":"  # examples share the fixture's store
    counters: dict[str, dict[str, float]] = {}
    windows: dict[str, deque[object]] = {}
    for op, key, arg in ops:
        if op == "incr":
            assert isinstance(arg, dict)
            store.incr(ns + key, arg)
            fields = counters.setdefault(key, {})
            for name, delta in arg.items():
                fields[name] = fields.get(name, 0.0) + delta
        elif op == "append":
            assert isinstance(arg, tuple)
            items, max_len = arg
            store.append(ns + key, items, max_len=max_len)
            if items:  # appending nothing is a no-op, whatever max_len says
                windows[key] = deque([*windows.get(key, ()), *items], maxlen=max_len)
        else:
            store.delete(ns + key)
            counters.pop(key, None)
            windows.pop(key, None)
    assert store.flush()
    for key in ("a", "b{g}"):
        assert store.read_counters(ns + key) == counters.get(key, {})
    for key in ("w", "v{g}"):
        assert store.read_window(ns + key) == list(windows.get(key, ()))


# ------------------------------------------------------------------ key naming (no server)
@given(key=store_keys)
def test_key_slot_matches_redis_py(key: str) -> None:
    assert key_slot(key) == redis.crc.key_slot(key.encode())


@settings(deadline=None)  # builds a store per example: slow under a loaded CI machine
@given(key=store_keys)
def test_internal_dedup_keys_share_the_data_keys_slot(key: str) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="p", cluster=True, telemetry=Telemetry())
    full = store._full(key)
    assert key_slot(store._companion(full)) == key_slot(full)
    assert not store._companion(full).startswith("p:")  # outside the listed key space


def test_hash_tag_follows_the_redis_rule() -> None:
    assert hash_tag("ab:{t}:x") == "t"
    assert hash_tag("{}{t}") is None
    assert hash_tag("a{b{c}d}") == "b{c"
    assert hash_tag("no tag}") is None
    assert key_slot(make_key("ab", "t", "a")) == key_slot(make_key("ab", "t", "b")) == key_slot("{t}")


def test_slot_tag_hashes_to_the_slot() -> None:
    for slot in (0, 1, 8000, 16383):
        tag = slot_tag(slot)
        assert "{" not in tag
        assert key_slot(tag) == slot
    with pytest.raises(ValueError, match="slot must be between 0 and 16383"):
        slot_tag(16384)


def test_glob_escape_and_prefix_rules() -> None:
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    assert check_prefix("mlops:prod") == "mlops:prod"
    for bad in ("", "a{b", "a}b", "a#b"):
        with pytest.raises(ValueError, match="prefix must be a non-empty string"):
            check_prefix(bad)


def test_store_error_names_operation_key_and_cause() -> None:
    err = StoreError("read_counters", "k", ConnectionError("down"))
    assert err.operation == "read_counters"
    assert err.key == "k"
    assert "read_counters on key 'k' failed: ConnectionError('down')" in str(err)
