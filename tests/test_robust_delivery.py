"""Delivery (#10 item 4): batching, retry, exactly-once and rejection logic against a fake executor.

The fake applies calls with the same semantics as the Redis scripts (a per-writer, per-key sequence
number makes a resent batch a no-op) and can be down, lose replies, fail single keys, reject keys
and restart empty. tests/test_stores_redis.py covers the same contract on a real server.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel.stores._delivery import Call, Delivery
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value


class Down(ConnectionError):
    pass


class Rejected(ValueError):
    pass


class FakeExecutor:
    """An in-memory backend with the scripts' exactly-once semantics and injectable faults."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, float]] = {}
        self.windows: dict[str, deque[str]] = {}
        self.applied: dict[tuple[str, str], int] = {}
        self.down = False
        self.lose_replies = 0          # the next N round trips apply but the reply is lost
        self.transient: set[str] = set()  # keys answered with a transient error (not applied)
        self.rejected: set[str] = set()   # keys answered with a non-transient error
        self.round_trips = 0
        self.sent: list[list[str]] = []
        self.recovered: list[int] = []  # on_recovery calls

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)

    def _apply(self, call: Call) -> Any:
        if call.key in self.rejected:
            return Rejected(f"WRONGTYPE {call.key}")
        if call.key in self.transient:
            return Down("busy")
        mark = (call.companion, call.full)
        if self.applied.get(mark, 0) >= call.seq:
            return 0
        if call.op == "incr":
            fields = self.counters.setdefault(call.full, {})
            pairs = list(zip(call.args[::2], call.args[1::2], strict=True))
            for name, delta in pairs:
                if not math.isfinite(fields.get(str(name), 0.0) + float(delta)):
                    self.applied[mark] = call.seq
                    return f"overflow:{name}"
            for name, delta in pairs:
                fields[str(name)] = fields.get(str(name), 0.0) + float(delta)
        else:
            maxlen, *items = call.args
            window = self.windows.setdefault(call.full, deque(maxlen=int(maxlen)))
            window.extend(str(i) for i in items)
        self.applied[mark] = call.seq
        return 1

    def execute(self, calls: list[Call]) -> list[Any]:
        self.round_trips += 1
        self.sent.append([c.key for c in calls])
        if self.down:
            raise Down("connection refused")
        results = [self._apply(c) for c in calls]
        if self.lose_replies:
            self.lose_replies -= 1
            raise Down("reply lost")
        return results

    def restart_empty(self) -> None:
        self.counters.clear()
        self.windows.clear()
        self.applied.clear()


def make(executor: FakeExecutor, tel: Telemetry, **kw: Any) -> Delivery:
    return Delivery(lambda: executor, lambda: tel, "fake", prefix="p", flush_interval=0.001, max_backoff=0.01,
                    on_recovery=lambda: executor.recovered.append(1), **kw)


def test_a_batch_resent_after_a_lost_reply_is_applied_once() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    d.add_counts("k", [("n", 1.0), ("s", 2.5)], closed=False)
    d.add_items("w", ['"a"', '"b"'], 10, closed=False)
    fake.lose_replies = 1
    assert d.tick() is not None
    assert d.failures == 1
    assert d.inflight is not None
    d.add_counts("k", [("n", 1.0)], closed=False)    # accumulates beside the frozen batch
    assert d.flush(5.0)
    assert fake.counters["p:k"] == {"n": 2.0, "s": 2.5}
    assert list(fake.windows["p:w"]) == ['"a"', '"b"']
    assert fake.recovered == [1]
    assert d.failures == 0


def test_outage_keeps_writes_backs_off_and_delivers_later() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    fake.down = True
    for _ in range(100):
        d.add_counts("k", [("n", 1.0)], closed=False)
    assert d.flush(0.05) is False
    assert d.failures >= 1
    delays = [d.retry_delay() for _ in range(50)]
    assert max(delays) <= 0.01  # capped by max_backoff
    assert sample_value(tel, "mlops_store_flush_errors_total", store="redis") == float(d.failures)
    fake.down = False
    assert d.flush(5.0)
    assert fake.counters["p:k"] == {"n": 100.0}
    assert sample_value(tel, "mlops_store_pending", store="redis") == 0.0


def test_only_unacknowledged_keys_are_resent() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    for key in ("a", "b", "c"):
        d.add_counts(key, [("n", 1.0)], closed=False)
    fake.transient = {"b"}
    assert d.flush(0.02) is False
    fake.transient = set()
    fake.sent.clear()
    assert d.flush(5.0)
    assert fake.sent == [["b"]]
    assert {k: v["n"] for k, v in fake.counters.items()} == {"p:a": 1.0, "p:b": 1.0, "p:c": 1.0}


def test_a_rejected_key_is_dropped_and_counted_the_rest_delivered(caplog: pytest.LogCaptureFixture) -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    fake.rejected = {"bad"}
    for _ in range(3):
        d.add_counts("bad", [("n", 1.0)], closed=False)
        d.add_counts("good", [("n", 1.0)], closed=False)
        assert d.flush(5.0)
    assert fake.counters == {"p:good": {"n": 3.0}}
    assert sample_value(tel, "mlops_store_dropped_total", store="redis") == 3.0
    assert len([r for r in caplog.records if "rejected the pending update" in r.getMessage()]) == 1


def test_pending_is_bounded_and_drops_are_counted() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel, max_pending=3)
    fake.down = True
    for key in "abcde":
        d.add_counts(key, [("n", 1.0)], closed=False)
    assert sample_value(tel, "mlops_store_dropped_total", store="redis") == 2.0
    d.add_counts("a", [("n", 1.0)], closed=False)  # merges into a pending key: never dropped
    d.add_items("w", ['"x"'], 5, closed=True)     # after close: dropped
    assert sample_value(tel, "mlops_store_dropped_total", store="redis") == 3.0
    fake.down = False
    assert d.flush(5.0)
    assert fake.counters == {"p:a": {"n": 2.0}, "p:b": {"n": 1.0}, "p:c": {"n": 1.0}}


def test_an_overflowing_update_is_counted_invalid_and_not_retried() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    d.add_counts("k", [("sq", 1.7e308)], closed=False)
    assert d.flush(5.0)
    d.add_counts("k", [("sq", 1.7e308)], closed=False)
    assert d.flush(5.0)
    assert fake.counters["p:k"] == {"sq": 1.7e308}
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="sq") == 1.0
    assert d.inflight is None


def test_discard_key_waits_for_the_batch_that_holds_it() -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    d.add_counts("k", [("n", 1.0)], closed=False)
    fake.down = True
    assert d.tick() is not None  # frozen and in flight
    with d.send_lock:
        assert d.discard_key("k", 0.0) is False  # undelivered: the caller must not delete yet
    fake.down = False
    with d.send_lock:
        assert d.discard_key("k", 1e18) is True
    assert fake.counters["p:k"] == {"n": 1.0}


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["ok", "down", "lost", "transient"])),
                      min_size=1, max_size=40))
def test_every_increment_is_applied_exactly_once_whatever_fails(steps: list[tuple[int, str]]) -> None:
    fake, tel = FakeExecutor(), Telemetry()
    d = make(fake, tel)
    expected: dict[str, float] = {}
    for i, (key_index, fault) in enumerate(steps):
        key = f"k{key_index}"
        d.add_counts(key, [("n", 1.0), ("i", float(i))], closed=False)
        expected[key] = expected.get(key, 0.0) + 1.0
        fake.down = fault == "down"
        fake.lose_replies = 1 if fault == "lost" else 0
        fake.transient = {key} if fault == "transient" else set()
        d.tick()
    fake.down, fake.lose_replies, fake.transient = False, 0, set()
    assert d.flush(5.0)
    assert {k[2:]: v["n"] for k, v in fake.counters.items()} == expected
    assert d.pending.total == 0
