"""FleetMetrics: one /metrics view summed over every worker sharing a store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel import FleetMetrics, Runtime, semconv
from mlops_otel.stores import MemoryStore, make_key
from mlops_otel.telemetry import Telemetry, merge_snapshots, snapshot_from_json, snapshot_to_json, subtract_snapshots
from mlops_otel.testing import sample_value


def test_json_roundtrip_preserves_every_family() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics("v1", 12.0, 0.4, 0.9)
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 3)
    tel.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.2)
    snap = tel.snapshot()
    assert snapshot_from_json(snapshot_to_json(snap)) == snap


def test_merge_adds_counters_and_histograms_and_takes_latest_gauge() -> None:
    a, b = Telemetry(), Telemetry()
    a.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 2)
    b.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
    a.record(semconv.GNN_CONFIDENCE, ("v1",), 0.95)
    b.record(semconv.GNN_CONFIDENCE, ("v1",), 0.5)
    a.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.1)
    b.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.4)
    merged = {f.spec.name: f for f in merge_snapshots([a.snapshot(), b.snapshot()])}
    assert merged["diagnosis_requests"].series[0].value == 7
    conf = merged["gnn_confidence"].series[0]
    assert conf.count == 2
    assert conf.sum == pytest.approx(1.45)
    assert (conf.min, conf.max) == (0.5, 0.95)
    assert merged["model_drift_score"].series[0].value == 0.4  # b reported last


_OPS = st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), st.integers(1, 5),
                          st.floats(0.0, 1.0, allow_nan=False)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(before=_OPS, after=_OPS)
def test_subtracting_an_earlier_snapshot_leaves_what_was_counted_since(
        before: list[tuple[str, int, float]], after: list[tuple[str, int, float]]) -> None:
    """What a folded worker publishes under its new id (its snapshot less the folded one), merged with the
    folded one, is its whole snapshot again; and it is what a process that only did the later work counts."""
    tel, later = Telemetry(), Telemetry()

    def run(ops: list[tuple[str, int, float]], *targets: Telemetry) -> None:
        for version, n, value in ops:
            for t in targets:
                t.add(semconv.DIAGNOSIS_REQUESTS, ("success", version), n)
                t.record(semconv.GNN_CONFIDENCE, (version,), value)
                t.set(semconv.MODEL_DRIFT_SCORE, ("gnn", version), value)

    run(before, tel)
    base = tel.snapshot()
    run(after, tel, later)
    now = tel.snapshot()
    delta = subtract_snapshots(now, base)

    def counts(families: list[Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
        return {(f.spec.name, s.labels): (s.value, s.bucket_counts) for f in families
                if f.spec.kind is not semconv.MetricKind.GAUGE for s in f.series
                if s.value or any(s.bucket_counts)}

    def sums(families: list[Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
        return {(f.spec.name, s.labels): pytest.approx(s.sum, abs=1e-9) for f in families
                if f.spec.kind is semconv.MetricKind.HISTOGRAM for s in f.series if any(s.bucket_counts)}

    assert counts(merge_snapshots([base, delta])) == counts(now)
    assert counts(delta) == counts(later.snapshot())
    assert sums(later.snapshot()) == sums(delta)
    gauges = [f for f in delta if f.spec.kind is semconv.MetricKind.GAUGE]
    assert gauges == [f for f in now if f.spec.kind is semconv.MetricKind.GAUGE]


def test_every_worker_serves_the_fleet_totals() -> None:
    store = MemoryStore()
    workers = [Telemetry() for _ in range(3)]
    fleets = [FleetMetrics(store, t, interval=60) for t in workers]
    for f in fleets:
        f.start()
    try:
        for i, tel in enumerate(workers):
            for _ in range(i + 1):
                tel.record_gnn_metrics("v1", 10.0, 0.3, 0.9)
        for f in fleets:
            f.publish()
        for f in fleets:
            assert f.refresh()
        for tel in workers:  # whichever worker is scraped answers with 1 + 2 + 3
            assert sample_value(tel, "gnn_confidence_count", model_version="v1") == 6.0
        workers[0].record_gnn_metrics("v1", 10.0, 0.3, 0.9)
        # The scraped worker's own latest counts are always included.
        assert sample_value(workers[0], "gnn_confidence_count", model_version="v1") == 7.0
    finally:
        for f in fleets:
            f.close()
    # Closed: back to the local view.
    assert sample_value(workers[1], "gnn_confidence_count", model_version="v1") == 2.0


def test_a_scrape_does_no_store_io() -> None:
    class Hanging(MemoryStore):
        def list_keys(self, prefix: str) -> list[str]:
            raise AssertionError("a scrape must not read the store")

    tel = Telemetry()
    fleet = FleetMetrics(Hanging(), tel, interval=60)
    tel.use_exposition_source(fleet.fleet_snapshot)
    tel.record_gnn_metrics("v1", 10.0, 0.3, 0.9)
    assert sample_value(tel, "gnn_confidence_count", model_version="v1") == 1.0
    assert not fleet.refresh()  # the background refresh fails: counted, the last view is kept
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="fleet_refresh") == 1.0


def test_runtime_enables_fleet_metrics_only_for_shared_stores() -> None:
    rt = Runtime.create()
    assert rt.fleet is None
    rt.close()
    rt = Runtime.create(fleet_metrics=True)
    assert rt.fleet is not None
    rt.close()


def test_bad_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"interval must be a positive number of seconds, got 0"):
        FleetMetrics(MemoryStore(), Telemetry(), interval=0)


def test_bad_expired_recheck_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"expired_recheck must be a positive number of seconds, got 0"):
        FleetMetrics(MemoryStore(), Telemetry(), expired_recheck=0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_stopped_workers_document_is_fetched_again_only_every_expired_recheck() -> None:
    """Workers recycled often leave many stopped workers' documents: each refresh lists them, but re-reads one
    whose TTL ran out only every ``expired_recheck`` seconds (its counters stay in the view meanwhile), and a
    worker that resumes publishing is seen again at the next re-read."""
    fetched: list[str] = []

    class Counting(MemoryStore):
        def get_document(self, key: str) -> Any:
            fetched.append(key)
            return super().get_document(key)

    store, clock = Counting(), _Clock()
    stopped_tel, live_tel = Telemetry(), Telemetry()
    stopped = FleetMetrics(store, stopped_tel, interval=1.0, ttl=5.0, clock=clock)
    live = FleetMetrics(store, live_tel, interval=1.0, ttl=5.0, expired_recheck=30.0, clock=clock)
    key = make_key("telemetry", "fleet", stopped.worker_id)
    stopped_tel.set(semconv.MODEL_CHAMPION, ("gnn", "v1"), 1.0)
    stopped_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
    assert stopped.publish()

    def refresh_and_total() -> float | None:
        fetched.clear()
        assert live.refresh()
        return sample_value(live_tel, "diagnosis_requests_total", status="success", model_version="v1")

    live_tel.use_exposition_source(live.fleet_snapshot)
    assert refresh_and_total() == 5.0
    assert key in fetched
    assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
    for _ in range(3):  # within its TTL: read every refresh (its worker may be publishing)
        clock.now += 1.0
        assert refresh_and_total() == 5.0
        assert key in fetched
    clock.now += 3.0  # TTL ran out (last read 3 s ago)
    for _ in range(26):
        assert refresh_and_total() == 5.0  # its counters stay ...
        assert key not in fetched  # ... and it is not read again
        assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") is None
        clock.now += 1.0
    stopped_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 3)  # its worker resumes
    assert stopped.publish()
    clock.now += 2.0  # 31 s after the last read
    assert refresh_and_total() == 8.0
    assert key in fetched
    assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
    live.close()


# ------------------------------------------------------------------ retiring stopped workers' documents
_HEAD = make_key("telemetry", "fleet", "")
_RETIRED = make_key("telemetry", "fleet")


def _fleet(store: MemoryStore, clock: _Clock, **options: Any) -> tuple[FleetMetrics, Telemetry]:
    tel = Telemetry()
    fleet = FleetMetrics(store, tel, interval=1.0, ttl=5.0, retire_after=60.0, clock=clock, **options)
    tel.use_exposition_source(fleet.fleet_snapshot)
    return fleet, tel


def _requests(tel: Telemetry) -> float | None:
    return sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1")


def _latency_count(tel: Telemetry) -> float | None:
    return sample_value(tel, "gnn_confidence_count", model_version="v1")


def _work(tel: Telemetry, n: int) -> None:
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), n)
    for _ in range(n):
        tel.record_gnn_metrics("v1", 10.0, 0.3, 0.9)


def test_stopped_workers_are_folded_into_one_retired_document_and_deleted() -> None:
    store, clock = MemoryStore(), _Clock()
    (a, ta), (b, tb) = _fleet(store, clock), _fleet(store, clock)
    gone = [_fleet(store, clock) for _ in range(3)]
    for i, (fleet, tel) in enumerate(gone):
        _work(tel, i + 1)  # 1 + 2 + 3
        tel.set(semconv.MODEL_CHAMPION, ("gnn", "v1"), 1.0)
        assert fleet.publish()
    _work(ta, 10)
    _work(tb, 20)
    for fleet in (a, b, a):
        assert fleet.refresh()
    assert _requests(ta) == _requests(tb) == 36.0
    clock.now += 5.0 + 60.0 - 1.0  # not yet retire_after past the TTL
    assert a.refresh()
    assert len(store.list_keys(_HEAD)) == 5
    clock.now += 2.0
    assert b.refresh()  # b is live: its new document is not folded (a's view of it is 66 s old)
    assert a.refresh()  # folds the three stopped workers' documents, deletes them
    assert store.list_keys(_HEAD) == sorted(make_key("telemetry", "fleet", f.worker_id) for f in (a, b))
    retired = store.get_document(_RETIRED)
    assert retired is not None
    assert sorted(retired.value["absorbed"]) == sorted(f.worker_id for f, _ in gone)  # type: ignore[index]
    for _ in range(2):  # the same totals on every worker, before and after it reads the retired document
        assert _requests(ta) == _requests(tb) == 36.0
        assert _latency_count(ta) == _latency_count(tb) == 36.0
        assert b.refresh()
    assert sample_value(ta, "model_champion", model_type="gnn", model_version="v1") is None  # gauges left
    c, tc = _fleet(store, clock)  # a worker started afterwards never saw the stopped ones
    assert c.refresh()
    assert _requests(tc) == 36.0
    assert a.refresh()  # nothing left to fold: the retired document is not rewritten
    assert store.get_document(_RETIRED) == retired


def test_two_workers_folding_at_once_fold_each_document_once() -> None:
    clock = _Clock()
    racing: list[FleetMetrics] = []

    class Racing(MemoryStore):
        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            if key == _RETIRED and racing:  # the other worker folds first, between this one's read and write
                racing.pop().refresh()
            return super().compare_and_set(key, value, expected_version=expected_version)

    store = Racing()
    (a, ta), (b, tb) = _fleet(store, clock), _fleet(store, clock)
    gone, tg = _fleet(store, clock)
    _work(tg, 4)
    assert gone.publish()
    for fleet in (a, b):
        assert fleet.refresh()
    clock.now += 100.0
    racing.append(b)
    assert a.refresh()  # a's compare-and-set loses to b's
    assert store.list_keys(_HEAD) == sorted(make_key("telemetry", "fleet", f.worker_id) for f in (a, b))
    doc = store.get_document(_RETIRED)
    assert doc is not None
    assert doc.version == 1
    for fleet in (a, b, a):
        assert fleet.refresh()
    assert _requests(ta) == _requests(tb) == 4.0
    assert store.get_document(_RETIRED) == doc


def test_a_worker_that_resumes_after_being_folded_is_counted_exactly_once() -> None:
    store, clock = MemoryStore(), _Clock()
    live, tl = _fleet(store, clock)
    paused, tp = _fleet(store, clock)
    _work(tp, 5)
    assert paused.refresh()
    assert live.refresh()
    old_id = paused.worker_id
    for pause in range(2):  # paused past retire_after twice: folded twice, under two ids
        clock.now += 100.0
        assert live.refresh()
        assert store.get_document(make_key("telemetry", "fleet", paused.worker_id)) is None  # folded
        _work(tp, 3)  # counted while paused (e.g. requests in flight when it stopped)
        assert paused.refresh()  # notices, goes on under a new id with what it counted since
        assert paused.worker_id != old_id
        old_id = paused.worker_id
        _work(tp, 2)
        assert paused.refresh()
        assert live.refresh()
        want = 5.0 + 5.0 * (pause + 1)
        assert _requests(tl) == _requests(tp) == want  # each view, the resumed worker's own included
        assert _latency_count(tl) == _latency_count(tp) == want
        assert sample_value(tp, "mlops_telemetry_errors_total", reason="fleet_refold") is None


def test_a_worker_publishing_while_it_is_folded_is_left_alone() -> None:
    clock = _Clock()
    resume: list[FleetMetrics] = []

    class Resuming(MemoryStore):
        def get_document(self, key: str) -> Any:
            if resume and key == make_key("telemetry", "fleet", resume[0].worker_id):
                resume.pop().publish()  # its worker publishes right before the folder's last look
            return super().get_document(key)

    store = Resuming()
    live, tl = _fleet(store, clock, expired_recheck=1000.0)
    paused, tp = _fleet(store, clock)
    _work(tp, 5)
    assert paused.publish()
    assert live.refresh()
    clock.now += 100.0
    _work(tp, 1)
    resume.append(paused)
    assert live.refresh()  # its listing skips the expired document; the fold looks once more, finds it new
    doc = store.get_document(make_key("telemetry", "fleet", paused.worker_id))
    assert doc is not None  # not folded, not deleted
    assert store.get_document(_RETIRED) is None
    assert live.refresh()  # ... and reads it at the next refresh, not expired_recheck later
    assert _requests(tl) == 6.0


def test_the_retired_counts_stay_when_the_store_loses_them() -> None:
    store, clock = MemoryStore(), _Clock()
    live, tl = _fleet(store, clock)
    first, t1 = _fleet(store, clock)
    _work(t1, 7)
    assert first.publish()
    assert live.refresh()
    clock.now += 100.0
    assert live.refresh()
    assert store.get_document(_RETIRED) is not None
    store.delete(_RETIRED)  # Redis restarted empty (or was flushed)
    assert live.refresh()
    assert _requests(tl) == 7.0  # never goes back
    second, t2 = _fleet(store, clock)  # a worker of the new store's life, stopped in turn
    _work(t2, 4)
    assert second.publish()
    assert live.refresh()
    clock.now += 100.0
    assert live.refresh()  # folded into a new incarnation of the retired document
    assert live.refresh()
    assert _requests(tl) == 11.0


def test_forgotten_folds_still_stop_a_resumed_worker_counting_twice() -> None:
    from mlops_otel._retired import FORGET_AFTER_S

    store, clock = MemoryStore(), _Clock()
    live, tl = _fleet(store, clock)
    paused, tp = _fleet(store, clock)
    other, to = _fleet(store, clock)
    _work(tp, 5)
    _work(to, 1)
    assert paused.refresh()
    assert other.publish()
    assert live.refresh()
    clock.now += 100.0
    assert live.refresh()  # both folded
    clock.now += FORGET_AFTER_S
    late, tlate = _fleet(store, clock)
    _work(tlate, 2)
    assert late.publish()
    assert live.refresh()
    clock.now += 100.0
    assert live.refresh()  # folds `late`, forgets the records of the two folded a day ago
    doc = store.get_document(_RETIRED)
    assert doc is not None
    assert list(doc.value["absorbed"]) == [late.worker_id]  # type: ignore[index]
    assert paused.refresh()  # its record is gone, but so is its document after such a silence: a new id
    _work(tp, 1)
    assert paused.refresh()
    assert live.refresh()
    assert _requests(tl) == _requests(tp) == 9.0


def test_bad_retire_after_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"retire_after must be a positive number of seconds, got -1"):
        FleetMetrics(MemoryStore(), Telemetry(), retire_after=-1)


def test_a_folded_document_left_behind_is_not_counted_twice_and_is_deleted_later() -> None:
    failing = [True]

    class DeleteFailsOnce(MemoryStore):
        def delete(self, key: str) -> None:
            if failing and key != _RETIRED:
                failing.pop()
                raise ConnectionError("the folding worker lost the store between its two writes")
            super().delete(key)

    store, clock = DeleteFailsOnce(), _Clock()
    (a, ta), (b, tb) = _fleet(store, clock), _fleet(store, clock)
    gone, tg = _fleet(store, clock)
    _work(tg, 3)
    assert gone.publish()
    for fleet in (a, b):
        assert fleet.refresh()
    clock.now += 100.0
    assert not a.refresh()  # folded, but the document could not be deleted (counted as a refresh fault)
    left = make_key("telemetry", "fleet", gone.worker_id)
    assert store.get_document(left) is not None
    for fleet in (b, a):  # both read the retired document and skip the folded worker's own
        assert fleet.refresh()
        assert _requests(ta if fleet is a else tb) == 3.0
    assert store.get_document(left) is None  # a later refresh deleted it
    assert _requests(ta) == _requests(tb) == 3.0


def test_a_resumed_workers_own_view_never_dips_during_its_refresh() -> None:
    """From the review of the fold: the resumed worker's baseline and the retired counts it subtracts change
    together, so a scrape in the middle of its refresh sees neither half alone."""
    scraped: list[float | None] = []
    spying: list[Telemetry] = []

    class Spy(MemoryStore):
        def list_keys(self, prefix: str) -> list[str]:
            if spying:
                scraped.append(_requests(spying[0]))  # a scrape on the request thread, mid-refresh
            return super().list_keys(prefix)

    store, clock = Spy(), _Clock()
    live, _ = _fleet(store, clock)
    paused, tp = _fleet(store, clock)
    _work(tp, 5)
    for fleet in (paused, live):
        assert fleet.refresh()
    clock.now += 100.0
    assert live.refresh()  # folds `paused`
    spying.append(tp)
    assert paused.refresh()  # it resumes
    assert scraped == [5.0]
    assert _requests(tp) == 5.0


def test_a_worker_resuming_while_it_is_being_folded_is_counted_once_throughout() -> None:
    """From the review: the worker resumes after the folder's last look at its document and before the folder
    writes the retired document. The folder's mark makes the worker's publish fail; it finds the mark and goes
    on under a new id, so no reader ever sees a total go down."""
    clock = _Clock()
    during: list[Any] = []

    class Racy(MemoryStore):
        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            if key == _RETIRED and during:
                during.pop()()
            return super().compare_and_set(key, value, expected_version=expected_version)

    store = Racy()
    folder, _ = _fleet(store, clock)
    reader, tr = _fleet(store, clock)
    w, tw = _fleet(store, clock)
    _work(tw, 5)
    for fleet in (w, folder, reader):
        assert fleet.refresh()
    clock.now += 100.0
    old_id = w.worker_id
    totals: list[float | None] = []

    def resume() -> None:
        _work(tw, 3)
        assert w.publish()
        assert reader.refresh()
        totals.append(_requests(tr))

    during.append(resume)
    assert folder.refresh()
    assert w.worker_id != old_id
    for fleet in (reader, w, reader):
        assert fleet.refresh()
        totals.append(_requests(tr))
    assert totals == [8.0] * 4
    assert _requests(tw) == 8.0
    assert store.list_keys(_HEAD) == sorted(make_key("telemetry", "fleet", f.worker_id) for f in (folder, reader, w))


def test_a_folded_worker_resuming_after_the_store_lost_everything_counts_once() -> None:
    """From the review: Redis restarted empty while a folded worker was paused. It cannot read its record any
    more, but its document is gone after a silence long enough for a fold: it goes on under a new id."""
    store, clock = MemoryStore(), _Clock()
    reader, tr = _fleet(store, clock)
    w, tw = _fleet(store, clock)
    _work(tw, 5)
    for fleet in (w, reader):
        assert fleet.refresh()
    clock.now += 100.0
    assert reader.refresh()  # folds w
    store._docs.clear()  # restarted empty
    for fleet in (reader, w, reader, w, reader):
        assert fleet.refresh()
    assert _requests(tr) == 5.0
    _work(tw, 3)
    for fleet in (w, reader):
        assert fleet.refresh()
    assert _requests(tr) == 8.0  # the reader kept what it read of the lost retired document: 5, and w's 3
    # w itself never read the retired document the store lost (it was paused): like any worker that starts
    # after a loss, it serves what the store holds, its 3 since the fold (documented in docs/stores.md).
    assert _requests(tw) == 3.0
    assert sample_value(tw, "mlops_telemetry_errors_total", reason="fleet_refold") is None


def test_a_publish_whose_reply_was_lost_is_still_known_when_it_is_folded() -> None:
    clock = _Clock()
    lose: list[str] = []

    class LostReply(MemoryStore):
        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            won = super().compare_and_set(key, value, expected_version=expected_version)
            if lose and key == lose[0]:
                lose.pop()
                raise TimeoutError("applied, but the reply was lost")
            return won

    store = LostReply()
    live, tl = _fleet(store, clock)
    w, tw = _fleet(store, clock)
    _work(tw, 2)
    for fleet in (w, live):
        assert fleet.refresh()
    _work(tw, 3)
    clock.now += 1.0
    lose.append(make_key("telemetry", "fleet", w.worker_id))
    assert not w.publish()  # stored, but w cannot know
    clock.now += 100.0
    assert live.refresh()  # folds w's last document (5)
    _work(tw, 1)
    for fleet in (w, live):
        assert fleet.refresh()
    assert _requests(tl) == _requests(tw) == 6.0
    assert sample_value(tw, "mlops_telemetry_errors_total", reason="fleet_refold") is None


# ------------------------------------------------------------------ from the second review of the fold


def test_a_retired_document_of_a_new_store_life_is_not_taken_for_the_cached_one() -> None:
    """From the second review: r last read the retired document at version 1; the store restarts empty and
    another worker's fold writes a new one, at version 1 again. r must not take it for the copy it cached
    (its next fold would then overwrite the new document with the old one)."""
    store, clock = MemoryStore(), _Clock()
    r, tr = _fleet(store, clock)
    d1, t1 = _fleet(store, clock)
    _work(t1, 7)
    assert d1.publish()
    assert r.refresh()
    clock.now += 100.0
    assert r.refresh()  # A v1 = {d1: 7}
    store._docs.clear()  # Redis restarted empty
    g, _tg = _fleet(store, clock)
    d2, t2 = _fleet(store, clock)
    d3, t3 = _fleet(store, clock)
    _work(t2, 100)
    _work(t3, 1)
    assert d2.publish()
    assert g.refresh()
    clock.now += 100.0
    assert g.refresh()  # B v1 = {d2: 100}
    assert d3.publish()  # stopped at once
    assert r.refresh()  # reads version 1 of the new store life
    clock.now += 100.0
    assert r.refresh()  # folds d3 into it
    z, tz = _fleet(store, clock)  # a worker started now serves what the store holds
    assert z.refresh()
    assert _requests(tz) == 101.0
    assert _requests(tr) == 108.0  # r also kept what it read before the restart


class _AfterRetiredRead(MemoryStore):
    """Runs the next of *hooks* right after a read of the retired document (a worker paused just there)."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Callable[[], object]] = []

    def get_document(self, key: str) -> Any:
        got = super().get_document(key)
        if key == _RETIRED and self.hooks:
            self.hooks.pop()()
        return got


def test_a_worker_folded_between_its_read_and_its_publish_keeps_its_own_view() -> None:
    clock = _Clock()
    store = _AfterRetiredRead()
    f, _tf = _fleet(store, clock)
    w, tw = _fleet(store, clock)
    _work(tw, 5)
    for x in (w, f):
        assert x.refresh()
    assert _requests(tw) == 5.0
    clock.now += 100.0
    store.hooks.append(f.refresh)  # the folder runs while w is paused right after its read
    assert w.refresh()
    dipped = _requests(tw)
    assert w.refresh()
    assert dipped == 5.0


def test_a_worker_that_finds_the_mark_keeps_its_own_view_while_the_fold_completes() -> None:
    clock = _Clock()
    go, marked = threading.Event(), threading.Event()
    armed = [False]
    finish: list[threading.Thread] = []

    class S(MemoryStore):
        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            if key == _RETIRED and armed[0] and threading.current_thread() is not threading.main_thread():
                marked.set()
                go.wait(5)
            return super().compare_and_set(key, value, expected_version=expected_version)

        def list_keys(self, prefix: str) -> list[str]:
            if finish and threading.current_thread() is threading.main_thread():
                go.set()
                finish.pop().join(5)
            return super().list_keys(prefix)

    store = S()
    f, _tf = _fleet(store, clock)
    w, tw = _fleet(store, clock)
    _work(tw, 5)
    for x in (w, f):
        assert x.refresh()
    clock.now += 100.0
    armed[0] = True
    t = threading.Thread(target=f.refresh)
    t.start()
    assert marked.wait(5)  # f marked w's doc, about to write the retired document
    finish.append(t)
    assert w.refresh()  # w: publish refused, finds the mark, leaves; f finishes before w lists
    dipped = _requests(tw)
    assert w.refresh()
    assert dipped == 5.0


def test_a_worker_cut_off_past_its_retirement_loses_no_count() -> None:
    clock = _Clock()
    shared = MemoryStore()
    down = [False]

    class Partitioned(MemoryStore):
        def __getattribute__(self, name: str) -> Any:
            if name in ("get_document", "compare_and_set", "list_keys", "delete"):
                if down[0]:
                    def fail(*a: Any, **k: Any) -> Any:
                        raise ConnectionError("partitioned")
                    return fail
                return getattr(shared, name)
            return super().__getattribute__(name)

    live, tl = _fleet(shared, clock)
    tw = Telemetry()
    w = FleetMetrics(Partitioned(), tw, interval=1.0, ttl=5.0, retire_after=60.0, clock=clock)
    tw.use_exposition_source(w.fleet_snapshot)
    _work(tw, 5)
    for x in (w, live):
        assert x.refresh()
    down[0] = True
    for _ in range(70):  # w keeps serving and counting, cut off from the store
        clock.now += 1.0
        _work(tw, 1)
        assert not w.refresh()
        assert live.refresh()
    down[0] = False
    for x in (w, live, w):
        assert x.refresh()
    assert _requests(tl) == _requests(tw) == 75.0
    assert sample_value(tw, "mlops_telemetry_errors_total", reason="fleet_refold") is None


def test_a_folder_with_a_clock_ahead_loses_no_count_of_a_closing_worker() -> None:
    base = _Clock()

    class Ahead:
        def __call__(self) -> float:
            return base.now + 4.0

    store = _AfterRetiredRead()
    tf = Telemetry()
    f = FleetMetrics(store, tf, interval=1.0, ttl=5.0, retire_after=60.0, clock=Ahead())
    tf.use_exposition_source(f.fleet_snapshot)
    r, tr = _fleet(store, base)
    w, tw = _fleet(store, base)
    _work(tw, 5)
    for x in (w, f, r):
        assert x.refresh()
    base.now += 63.0  # f sees 67 s > 65; w sees 63 s
    _work(tw, 2)
    store.hooks.append(f.refresh)  # f folds w right after w read the retired document
    old_id = w.worker_id
    # w's document is gone and its own silence (63 s on its clock) is under ttl + retire_after, but it reads
    # the retired document again, finds its record and goes on under a new id (before the fix: the old id)
    assert w.refresh()
    assert w.worker_id != old_id
    assert store.get_document(make_key("telemetry", "fleet", w.worker_id)) is not None
    assert r.refresh()
    w.close()  # its last publish, under the new id too
    assert r.refresh()
    assert _requests(tr) == 7.0
