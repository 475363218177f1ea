"""The shared production window of one detector in the store: deliveries, reads, the shared alert state.

Every worker appends its pending samples to the same store windows, so a read
sees the newest *size* samples of the whole fleet. No statistics here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import attrs

from ..stores import JSONValue, StateStore, make_key
from ._reference import CAS_ATTEMPTS, unit_values, vectors
from ._stats import FloatArray
from ._window import ANOMALY_SCORE, CONFIDENCE, Pending, WindowSnapshot

__all__ = ["SharedWindow", "detector_key", "detector_keys", "parse_detector_key"]

NAMESPACE = "drift"
#: Deliveries remembered for the shared window's time span (one ``[first, last, count]`` item each).
#: They cover the window unless a worker delivers fewer than window_size / 128 samples per
#: second; then the span's start is unknown (``None``). Reading them costs ~1 us per item.
SPANS_KEPT = 128
#: Evaluations kept in the shared score history (all workers together).
HISTORY_KEPT = 500

_KEY_NAMES = ("scores", "confidences", "spans", "counts", "reference", "alert", "history", "features",
              "embeddings", "reference_candidates/scores", "reference_candidates/confidences",
              "reference_candidates/features", "reference_candidates/embeddings")



def _encode(name: str) -> str:
    return name.replace("%", "%25").replace(":", "%3A")


def encode_name(name: str) -> str:
    """*name* with ``%`` and ``:`` percent-encoded (a key part that cannot be confused with another)."""
    return _encode(name)


def decode_name(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%")


def detector_key(model_type: str, version: str) -> str:
    """``"<model_type>:<version>"`` with ``%`` and ``:`` in either name percent-encoded: one key per pair.

    Names without those characters keep the 0.1 key (and so the 0.1 store keys).
    """
    return f"{_encode(model_type)}:{_encode(version)}"


def parse_detector_key(key: str) -> tuple[str, str] | None:
    """(model_type, version) of a :func:`detector_key`, ``None`` when *key* is not one."""
    model_type, sep, version = key.partition(":")
    if not sep or ":" in version:
        return None
    return (model_type.replace("%3A", ":").replace("%25", "%"), version.replace("%3A", ":").replace("%25", "%"))


def detector_keys(model_type: str, version: str) -> dict[str, str]:
    """Every store key of the detector of (*model_type*, *version*), by role."""
    group = detector_key(model_type, version)
    return {name: make_key(NAMESPACE, group, *name.split("/")) for name in _KEY_NAMES}


def span(spans: Sequence[JSONValue], n: int) -> tuple[float | None, float | None]:
    """Time span of the newest *n* samples from the deliveries' ``[first, last, count]`` items.

    The start is the first timestamp of the oldest delivery still (partly) in the
    window, so the span is exact to one delivery (at most ``check_every`` samples
    or one second of one worker's traffic); ``None`` when the remembered
    deliveries do not reach back to the window's oldest sample.
    """
    start: float | None = None
    end: float | None = None
    covered = 0
    for item in reversed(spans):
        if not (isinstance(item, list) and len(item) == 3):
            continue
        first, last, count = item
        if not (isinstance(first, (int, float)) and isinstance(last, (int, float)) and isinstance(count, int)):
            continue
        end = float(last) if end is None else max(end, float(last))
        start = float(first) if start is None else min(start, float(first))
        covered += count
        if covered >= n:
            return start, end
    return None, end


@attrs.define(eq=False)
class SharedWindow:
    """Delivers pending samples to the store and reads the fleet's window and alert state back."""

    store: StateStore
    keys: Mapping[str, str]
    size: int
    reference_size: int
    clock: Callable[[], float]

    def deliver(self, pending: Pending) -> None:
        store, keys = self.store, self.keys
        k = int(pending.scores.shape[0])
        if k:
            store.append(keys["scores"], pending.scores.tolist(), max_len=self.size)
            store.append(keys["confidences"], pending.confidences.tolist(), max_len=self.size)
            # One [first, last, count] item per delivery, not a timestamp per sample: enough for the
            # window's time span, and a third less to encode, keep and read.
            store.append(keys["spans"], [[pending.first, pending.last, k]], max_len=SPANS_KEPT)
        if pending.accepted or pending.invalid:
            store.incr(keys["counts"], {"samples": float(pending.accepted), "invalid": float(pending.invalid)})
        if pending.candidates:
            ref_size = self.reference_size
            store.append(keys["reference_candidates/scores"], [s for s, _ in pending.candidates], max_len=ref_size)
            store.append(keys["reference_candidates/confidences"], [c for _, c in pending.candidates],
                         max_len=ref_size)

    def feature_key(self, name: str, *, candidates: bool = False) -> str:
        base = self.keys["reference_candidates/features" if candidates else "features"]
        return f"{base}:{encode_name(name)}"

    def deliver_extra(self, features: Mapping[str, list[float | str]], embeddings: list[list[float]],
                      feature_candidates: Mapping[str, list[float | str]],
                      embedding_candidates: list[list[float]], embedding_size: int) -> None:
        """Deliver input features and embeddings (bounded like the outputs' windows)."""
        store = self.store
        for name, values in features.items():
            if values:
                store.append(self.feature_key(name), list(values), max_len=self.size)
        if embeddings:
            store.append(self.keys["embeddings"], cast("list[JSONValue]", embeddings), max_len=embedding_size)
        for name, values in feature_candidates.items():
            if values:
                store.append(self.feature_key(name, candidates=True), list(values), max_len=self.reference_size)
        if embedding_candidates:
            store.append(self.keys["reference_candidates/embeddings"], cast("list[JSONValue]", embedding_candidates),
                         max_len=embedding_size)

    def read_features(self, *, candidates: bool = False) -> dict[str, list[float | str]]:
        """Every feature window in the store (or the default reference's candidates), by feature name."""
        base = self.keys["reference_candidates/features" if candidates else "features"] + ":"
        out: dict[str, list[float | str]] = {}
        for key in self.store.list_keys(base):
            part = key[len(base):]
            if ":" in part:
                continue
            out[decode_name(part)] = [v for v in self.store.read_window(key)
                                      if isinstance(v, (str, float, int)) and not isinstance(v, bool)]
        return out

    def read_embeddings(self, *, candidates: bool = False) -> FloatArray | None:
        raw = self.store.read_window(self.keys["reference_candidates/embeddings" if candidates else "embeddings"])
        return vectors(raw)

    def read(self) -> WindowSnapshot:
        read = self.store.read_window
        values = {ANOMALY_SCORE: unit_values(read(self.keys["scores"])),
                  CONFIDENCE: unit_values(read(self.keys["confidences"]))}
        start, end = span(read(self.keys["spans"]), min(int(v.shape[0]) for v in values.values()))
        counts = self.store.read_counters(self.keys["counts"])
        return WindowSnapshot(values, start, end, int(counts.get("samples", 0.0)), int(counts.get("invalid", 0.0)),
                              self.read_features(), self.read_embeddings())

    # ---------------------------------------------------------- history
    def record(self, entry: Mapping[str, JSONValue]) -> None:
        """Append one evaluation to the shared, capped score history (write-behind: no wait)."""
        self.store.append(self.keys["history"], [dict(entry)], max_len=HISTORY_KEPT)

    def history(self) -> list[dict[str, JSONValue]]:
        return [item for item in self.store.read_window(self.keys["history"]) if isinstance(item, dict)]

    # ------------------------------------------------------------ alert
    def _alert_doc(self, alert: bool, score: float) -> JSONValue:
        return {"alert": alert, "score": score, "changed_at": self.clock()}

    def decide_alert(self, decide: Callable[[bool], tuple[bool, float]]) -> None:
        """Run *decide(prior_alert)* against the shared alert state until its transition is stored."""
        for _ in range(CAS_ATTEMPTS):
            doc = self.store.get_document(self.keys["alert"])
            prior = bool(doc.value.get("alert")) if doc is not None and isinstance(doc.value, dict) else False
            alert, score = decide(prior)
            if alert == prior or self.store.compare_and_set(
                self.keys["alert"], self._alert_doc(alert, score),
                expected_version=0 if doc is None else doc.version,
            ):
                return

    def share_alert(self, alert: bool, score: float) -> bool:
        """Store a local check's alert transition; ``True`` once the shared state equals *alert*."""
        for _ in range(CAS_ATTEMPTS):
            doc = self.store.get_document(self.keys["alert"])
            if doc is not None and isinstance(doc.value, dict) and bool(doc.value.get("alert")) == alert:
                return True
            if self.store.compare_and_set(self.keys["alert"], self._alert_doc(alert, score),
                                          expected_version=0 if doc is None else doc.version):
                return True
        return False
