"""The shared reference of one detector: its store I/O (pointer, data, default freeze), nothing else.

The reference lives in the store as a pointer document (``reference``: id,
source, sizes) and a data document per id (``reference:<id>``). Every worker
reads the pointer; the first one to freeze the default reference (the first
*reference_size* production samples, offered by each worker as candidates)
wins a compare-and-set on the pointer. :class:`SharedReference` does that I/O
and keeps the reference in use; it runs off the request path.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence

import attrs
import numpy as np

from ..stores import JSONValue, StateStore, StoreError, Versioned
from ._calibration import effective_size
from ._features import FeatureReference
from ._stats import FloatArray, ReferenceSample
from ._window import ANOMALY_SCORE, CONFIDENCE, OUTPUTS

__all__ = ["SOURCE_EXPLICIT", "SOURCE_PRODUCTION", "Reference", "SharedReference", "unit_values"]

log = logging.getLogger("mlops_otel.drift")

SOURCE_EXPLICIT = "explicit"
SOURCE_PRODUCTION = "production"
CAS_ATTEMPTS = 20
#: What :meth:`SharedReference._establish_default` returns when the pointer must be read again.
_RETRY = object()


def unit_values(raw: Sequence[JSONValue]) -> FloatArray:
    """A store window as an array of its numbers in [0, 1] (anything else is skipped)."""
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.asarray([x for x in raw if isinstance(x, (int, float)) and not isinstance(x, bool)],
                           dtype=np.float64)
    if array.ndim != 1:
        return np.empty(0)
    ok = (array >= 0.0) & (array <= 1.0)
    return array if bool(ok.all()) else array[ok]


def vectors(raw: object) -> FloatArray | None:
    """Stored embeddings (a list of equal-length number lists) as a 2-D array, ``None`` when unusable."""
    if not isinstance(raw, list) or not raw:
        return None
    rows = [r for r in raw if isinstance(r, list) and r]
    if not rows:
        return None
    d = len(rows[-1])
    try:
        array = np.asarray([r for r in rows if len(r) == d], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.ndim == 2 and bool(np.isfinite(array).all()) else None


def _as_list(value: object) -> list[JSONValue]:
    return value if isinstance(value, list) else []


@attrs.frozen
class Reference:
    """The reference in use: its id in the store, its origin, its data and one prepared sample per output."""

    ref_id: str
    source: str
    data: Mapping[str, FloatArray] = attrs.field(repr=False)
    samples: Mapping[str, ReferenceSample] = attrs.field(repr=False)
    #: Effective sample size of each output (its data in arrival order, serial dependence discounted).
    effective: Mapping[str, float] = attrs.field(factory=dict)
    #: Input features' raw values and prepared references, and the embeddings (rows), when monitored.
    feature_data: Mapping[str, list[float | str]] = attrs.field(factory=dict, repr=False)
    features: Mapping[str, FeatureReference] = attrs.field(factory=dict, repr=False)
    embeddings: FloatArray | None = attrs.field(default=None, repr=False)

    @property
    def size(self) -> int:
        return min(s.size for s in self.samples.values())

    @classmethod
    def prepare(cls, ref_id: str, source: str, data: Mapping[str, FloatArray], bins: int,
                features: Mapping[str, list[float | str]] | None = None,
                embeddings: FloatArray | None = None) -> Reference:
        prepared = {name: FeatureReference.from_values(values, bins) for name, values in (features or {}).items()}
        return cls(ref_id, source, dict(data),
                   {name: ReferenceSample.from_values(data[name], bins=bins) for name in OUTPUTS},
                   {name: effective_size(data[name]) for name in OUTPUTS},
                   {name: list(values) for name, values in (features or {}).items() if prepared[name] is not None},
                   {name: ref for name, ref in prepared.items() if ref is not None},
                   embeddings)

    def document(self) -> JSONValue:
        """The data document stored for this reference."""
        doc: dict[str, JSONValue] = {name: self.data[name].tolist() for name in OUTPUTS}
        if self.feature_data:
            doc["features"] = {name: list(values) for name, values in self.feature_data.items()}
        if self.embeddings is not None:
            doc["embeddings"] = self.embeddings.tolist()
        return doc

    @classmethod
    def from_document(cls, ref_id: str, source: str, doc: Mapping[str, JSONValue], bins: int) -> Reference:
        raw = doc.get("features")
        features: dict[str, list[float | str]] = {}
        if isinstance(raw, dict):
            for name, values in raw.items():
                if isinstance(values, list):
                    features[name] = [v for v in values
                                      if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
        return cls.prepare(ref_id, source, {name: unit_values(_as_list(doc.get(name))) for name in OUTPUTS}, bins,
                           features, vectors(doc.get("embeddings")))


@attrs.define(eq=False)
class SharedReference:
    """Reads, writes and freezes the shared reference of one detector (store I/O, never on a request).

    *keys* holds the store keys ``reference``, ``counts`` and the two
    ``reference_candidates/...`` windows; *size* is the default reference's size.
    """

    store: StateStore
    keys: Mapping[str, str]
    size: int
    bins: int
    clock: Callable[[], float]
    on_adopt: Callable[[], None] = attrs.field(default=lambda: None)
    on_restore: Callable[[Reference], None] = attrs.field(default=lambda _: None)
    #: The default reference's feature and embedding candidates in the store (read when freezing it).
    extra_candidates: Callable[[], tuple[dict[str, list[float | str]], FloatArray | None]] = attrs.field(
        default=lambda: ({}, None))
    current: Reference | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def _adopt(self, reference: Reference) -> Reference:
        with self._lock:
            self.current = reference
        self.on_adopt()
        return reference

    # ---------------------------------------------------------------- write
    def set(self, data: Mapping[str, FloatArray], features: Mapping[str, list[float | str]] | None = None,
            embeddings: FloatArray | None = None) -> Reference:
        """Make *data* (one array per output) the reference of every worker; replaces the old one."""
        reference = Reference.prepare(secrets.token_hex(8), SOURCE_EXPLICIT, data, self.bins, features, embeddings)
        self._write_data(reference)
        pointer = self._pointer_value(reference)
        key = self.keys["reference"]
        for _ in range(CAS_ATTEMPTS):
            current = self.store.get_document(key)
            if self.store.compare_and_set(key, pointer, expected_version=0 if current is None else current.version):
                self._adopt(reference)
                old = self._pointer_id(current)
                if old is not None and old != reference.ref_id:
                    self._discard(self._data_key(old))
                return reference
        raise StoreError("compare_and_set", key,
                         RuntimeError(f"reference kept changing; gave up after {CAS_ATTEMPTS} attempts"))

    def _data_key(self, ref_id: str) -> str:
        return f"{self.keys['reference']}:{ref_id}"

    def _write_data(self, reference: Reference) -> None:
        data = reference.document()
        if not self.store.compare_and_set(self._data_key(reference.ref_id), data, expected_version=0):
            raise StoreError("compare_and_set", self._data_key(reference.ref_id),
                             RuntimeError("a fresh random reference id was already taken"))

    def _pointer_value(self, reference: Reference) -> JSONValue:
        return {"id": reference.ref_id, "source": reference.source, "created_at": self.clock(),
                "sizes": {name: int(reference.data[name].shape[0]) for name in OUTPUTS}}

    @staticmethod
    def _pointer_id(doc: Versioned | None) -> str | None:
        if doc is None or not isinstance(doc.value, dict):
            return None
        ref_id = doc.value.get("id")
        return ref_id if isinstance(ref_id, str) else None

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:  # an orphan costs memory only; log and go on
            log.warning("mlops-otel drift: could not delete %s: %s", key, exc)

    # ----------------------------------------------------------------- read
    def load(self) -> Reference | None:
        """The store's reference (loading its data when it changed), freezing the default one if due.

        When the store has lost the reference (restarted empty, evicted) while
        this process still holds one, the held reference is written back, so
        every worker goes on comparing against the same data; *on_restore* is
        called once per write-back this process wins.
        """
        for _ in range(4):
            pointer = self.store.get_document(self.keys["reference"])
            ref_id = self._pointer_id(pointer)
            if pointer is None or ref_id is None:
                held = self.current
                if held is not None:
                    if self._restore(held):
                        return held
                    continue  # another worker restored or froze one first: read it
                frozen = self._establish_default()
                if frozen is None or isinstance(frozen, Reference):
                    return frozen
                continue  # the candidates went away under us: someone froze them, read the pointer again
            current = self.current
            if current is not None and current.ref_id == ref_id:
                return current
            data = self.store.get_document(self._data_key(ref_id))
            if data is None or not isinstance(data.value, dict):
                continue  # replaced while we read it: read the pointer again
            assert isinstance(pointer.value, dict)
            source = pointer.value.get("source")
            return self._adopt(Reference.from_document(
                ref_id, source if isinstance(source, str) else SOURCE_EXPLICIT, data.value, self.bins))
        return self.current

    def _restore(self, held: Reference) -> bool:
        """Write *held* back as the shared reference; ``True`` when this call did it."""
        data_key = self._data_key(held.ref_id)
        if self.store.get_document(data_key) is None:
            # A racing restorer may write the same document first: either copy serves.
            self.store.compare_and_set(data_key, held.document(), expected_version=0)
        if not self.store.compare_and_set(self.keys["reference"], self._pointer_value(held), expected_version=0):
            return False
        self.on_restore(held)
        return True

    def _establish_default(self) -> Reference | object | None:
        """Freeze the first *size* production samples as the shared reference, once enough exist.

        Returns :data:`_RETRY` when the candidates are gone although enough
        samples arrived: a concurrent freezer took them, so the pointer must be read again.
        """
        size = self.size
        counts = self.store.read_counters(self.keys["counts"])
        if counts.get("samples", 0.0) < size:
            return None
        self.store.flush()
        scores = unit_values(self.store.read_window(self.keys["reference_candidates/scores"]))
        confs = unit_values(self.store.read_window(self.keys["reference_candidates/confidences"]))
        if min(scores.shape[0], confs.shape[0]) < size:
            if self._pointer_id(self.store.get_document(self.keys["reference"])) is not None:
                return _RETRY
            return None
        features, embeddings = self.extra_candidates()
        reference = Reference.prepare(secrets.token_hex(8), SOURCE_PRODUCTION,
                                      {ANOMALY_SCORE: scores, CONFIDENCE: confs}, self.bins, features, embeddings)
        self._write_data(reference)
        if self.store.compare_and_set(self.keys["reference"], self._pointer_value(reference), expected_version=0):
            self._adopt(reference)
            self._discard(self.keys["reference_candidates/scores"])
            self._discard(self.keys["reference_candidates/confidences"])
            self._discard(self.keys["reference_candidates/embeddings"])
            for key in self.store.list_keys(self.keys["reference_candidates/features"] + ":"):
                self._discard(key)
            return reference
        # Another worker froze its candidates first: use theirs.
        self._discard(self._data_key(reference.ref_id))
        return _RETRY
