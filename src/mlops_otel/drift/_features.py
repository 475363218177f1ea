"""Input features and embeddings: bounded local buffers (no I/O) and their drift statistics (pure).

Numeric features are compared with KS (calibrated like the outputs) and PSI;
categorical ones (string values) with a chi-square test of the category mix
and its total variation distance, unseen categories counted. Features of one
check share a Holm correction. Embeddings (vectors) are compared with the
squared maximum mean discrepancy (Gaussian kernel, median-heuristic bandwidth)
calibrated by a permutation test.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping, Sequence

import attrs
import numpy as np
from scipy import stats

from ._calibration import effective_size, ks_calibrated
from ._stats import PSI_EPSILON, FloatArray, ReferenceSample

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "EmbeddingDrift",
    "FeatureBuffer",
    "FeatureDrift",
    "FeatureReference",
    "embedding_drift",
    "feature_drift",
    "holm",
    "mmd2",
    "reference_values",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
#: Longest feature name and category value monitored (longer ones are cut).
MAX_NAME = 100
MAX_CATEGORY = 100
#: An explicit reference keeps up to this many times *reference_size* values of a categorical feature.
#: Only its category counts enter the test, and a larger reference is what raises the test's power:
#: the chi-square noncentrality scales with n*m/(n+m), so 10x the window gets 91% of the power an
#: exactly known mix would give, against 50% for a reference as large as the window.
CATEGORICAL_REFERENCE_FACTOR = 10


def valid_feature_name(name: object) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME and "{" not in name and "}" not in name
            and not any(ord(c) < 32 for c in name))


# ------------------------------------------------------------------ buffers
_Slot = tuple[str, "collections.deque[float | str]", "collections.deque[float | str]", list[float | str] | None]


@attrs.define(eq=False)
class FeatureBuffer:
    """Per-feature local windows, pending deliveries and default-reference candidates, all bounded.

    At most *max_features* features are tracked; values of further features,
    and values of the wrong kind for their feature, are counted in
    :attr:`overflow` and dropped. Each feature keeps at most *size* values
    locally and pending, and *reference_size* candidates. Embeddings keep at
    most *embedding_size* vectors of at most *max_dimensions* numbers.
    """

    size: int
    reference_size: int
    max_features: int
    embedding_size: int
    max_dimensions: int
    lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    kinds: dict[str, str] = attrs.field(factory=dict, init=False)
    values: dict[str, collections.deque[float | str]] = attrs.field(factory=dict, init=False, repr=False)
    pending: dict[str, collections.deque[float | str]] = attrs.field(factory=dict, init=False, repr=False)
    candidates: dict[str, list[float | str]] | None = attrs.field(factory=dict, init=False, repr=False)
    embeddings: collections.deque[FloatArray] = attrs.field(init=False, repr=False)
    embeddings_pending: list[list[float]] = attrs.field(factory=list, init=False, repr=False)
    embedding_candidates: list[list[float]] | None = attrs.field(factory=list, init=False, repr=False)
    dimensions: int = attrs.field(default=0, init=False)
    overflow: int = attrs.field(default=0, init=False)
    overflow_unpushed: int = attrs.field(default=0, init=False)
    candidates_sent: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    embedding_candidates_sent: int = attrs.field(default=0, init=False, repr=False)
    #: Per feature: (kind, local window, pending, candidates or None), one lookup on the hot path.
    slots: dict[str, _Slot] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.embeddings = collections.deque(maxlen=self.embedding_size)

    def reset(self, *, keep_candidates: bool) -> None:
        self.lock = threading.Lock()
        self.values = {name: collections.deque(maxlen=self.size) for name in self.kinds}
        self.pending = {name: collections.deque(maxlen=self.size) for name in self.kinds}
        self.candidates = {name: [] for name in self.kinds} if keep_candidates else None
        self.slots = {name: (kind, self.values[name], self.pending[name],
                             None if self.candidates is None else self.candidates[name])
                      for name, kind in self.kinds.items()}
        self.candidates_sent = {}
        self.embedding_candidates_sent = 0
        self.embeddings = collections.deque(maxlen=self.embedding_size)
        self.embeddings_pending = []
        self.embedding_candidates = [] if keep_candidates else None
        self.overflow = self.overflow_unpushed = 0

    def add(self, features: Mapping[str, float | str] | None, embedding: object) -> int:
        """Record one sample's features and embedding; returns how many values were dropped."""
        dropped = 0
        with self.lock:
            if features is not None:
                slots = self.slots
                for name, value in features.items():
                    kind = CATEGORICAL
                    item: float | str
                    if type(value) is float:
                        if value - value != 0.0:  # NaN or infinite
                            dropped += 1
                            continue
                        kind, item = NUMERIC, value
                    elif type(value) is str:
                        item = value if len(value) <= MAX_CATEGORY else value[:MAX_CATEGORY]
                    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        kind, item = NUMERIC, float(value)
                    else:
                        dropped += 1
                        continue
                    slot = slots.get(name)
                    if slot is None:
                        slot = self._new_slot(name, kind)
                        if slot is None:
                            dropped += 1
                            continue
                    if slot[0] is not kind:
                        dropped += 1
                        continue
                    slot[1].append(item)
                    slot[2].append(item)
                    candidates = slot[3]
                    if candidates is not None and len(candidates) < self.reference_size:
                        candidates.append(item)
            if embedding is not None:
                dropped += self._add_embedding(embedding)
            if dropped:
                self.overflow += dropped
                self.overflow_unpushed += dropped
        return dropped

    def _new_slot(self, name: str, kind: str) -> _Slot | None:
        if len(self.kinds) >= self.max_features or not valid_feature_name(name):
            return None
        self.kinds[name] = kind
        values: collections.deque[float | str] = collections.deque(maxlen=self.size)
        pending: collections.deque[float | str] = collections.deque(maxlen=self.size)
        candidates: list[float | str] | None = None if self.candidates is None else []
        self.values[name], self.pending[name] = values, pending
        if self.candidates is not None and candidates is not None:
            self.candidates[name] = candidates
        slot: _Slot = (kind, values, pending, candidates)
        self.slots[name] = slot
        return slot

    def _add_embedding(self, embedding: object) -> int:
        try:
            vector = np.asarray(embedding, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return 1
        d = int(vector.shape[0])
        if d == 0 or d > self.max_dimensions or (self.dimensions and d != self.dimensions):
            return 1
        if not np.isfinite(vector).all():
            return 1
        self.dimensions = d
        self.embeddings.append(vector)
        if len(self.embeddings_pending) < self.embedding_size:
            self.embeddings_pending.append(vector.tolist())
        if self.embedding_candidates is not None and len(self.embedding_candidates) < self.embedding_size:
            self.embedding_candidates.append(vector.tolist())
        return 0

    def stop_candidates(self) -> None:
        with self.lock:
            self.candidates = None
            self.embedding_candidates = None
            self.slots = {name: (slot[0], slot[1], slot[2], None) for name, slot in self.slots.items()}

    def snapshot(self) -> tuple[dict[str, list[float | str]], FloatArray | None]:
        with self.lock:
            values = {name: list(v) for name, v in self.values.items() if v}
            vectors = np.stack(list(self.embeddings)) if self.embeddings else None
        return values, vectors

    def take_pending(self, *, with_candidates: bool) -> tuple[dict[str, list[float | str]], list[list[float]],
                                                              dict[str, list[float | str]], list[list[float]], int]:
        """(feature values, embeddings, feature candidates, embedding candidates, overflow) not yet delivered."""
        with self.lock:
            pending = {name: list(values) for name, values in self.pending.items() if values}
            vectors, self.embeddings_pending = self.embeddings_pending, []
            overflow, self.overflow_unpushed = self.overflow_unpushed, 0
            candidates: dict[str, list[float | str]] = {}
            embedding_candidates: list[list[float]] = []
            if with_candidates and self.candidates is not None:
                # A feature's candidates stop at reference_size and are delivered once each.
                sent = self.candidates_sent
                candidates = {name: values[sent.get(name, 0):] for name, values in self.candidates.items()
                              if len(values) > sent.get(name, 0)}
                self.candidates_sent = {name: len(values) for name, values in self.candidates.items()}
            self.pending = {name: collections.deque(maxlen=self.size) for name in self.kinds}
            self.slots = {name: (kind, self.values[name], self.pending[name],
                                 None if self.candidates is None else self.candidates[name])
                          for name, kind in self.kinds.items()}
            if with_candidates and self.embedding_candidates is not None:
                embedding_candidates = self.embedding_candidates[self.embedding_candidates_sent:]
                self.embedding_candidates_sent = len(self.embedding_candidates)
        return pending, vectors, candidates, embedding_candidates, overflow


# --------------------------------------------------------------- statistics
def reference_values(values: Sequence[float | str], size: int) -> list[float | str]:
    """The newest reference values of one feature to keep: *size* numbers, or up to
    :data:`CATEGORICAL_REFERENCE_FACTOR` x *size* category values (a categorical feature: mostly strings)."""
    items = list(values)
    strings = sum(isinstance(v, str) for v in items)
    keep = size * CATEGORICAL_REFERENCE_FACTOR if 2 * strings >= len(items) else size
    return items[-keep:]


@attrs.frozen(eq=False)
class FeatureReference:
    """One feature's reference: sorted numbers (numeric) or category counts (categorical)."""

    kind: str
    size: int
    numeric: ReferenceSample | None = attrs.field(default=None, repr=False)
    effective: float = 0.0
    counts: Mapping[str, int] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_values(cls, values: Sequence[object], bins: int = 10) -> FeatureReference | None:
        """The reference of *values* (all numbers or all strings; anything else is skipped)."""
        strings = [v for v in values if isinstance(v, str)]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v)]
        if len(strings) >= len(numbers):
            if len(strings) < 2:
                return None
            return cls(CATEGORICAL, len(strings), counts=dict(collections.Counter(strings)))
        if len(numbers) < 2:
            return None
        array = np.asarray(numbers)
        return cls(NUMERIC, len(numbers), ReferenceSample.from_values(array, bins=bins), effective_size(array))


@attrs.frozen
class FeatureDrift:
    """Drift of one input feature.

    *score*: KS distance (numeric) or total variation distance of the
    category mix (categorical), 0..1. *p_value* is the test's (KS at effective
    sizes, or chi-square), *p_adjusted* after the Holm correction over the
    check's features. *drifted*: ``p_adjusted < alpha`` and the score reaches
    the feature effect size. *unseen*: production values of categories the
    reference never saw (categorical only).
    """

    name: str
    kind: str
    score: float
    p_value: float
    p_adjusted: float
    psi: float
    drifted: bool
    production_samples: int
    reference_samples: int
    unseen: int = 0
    most_changed: str | None = None

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def _psi(expected: FloatArray, actual: FloatArray) -> float:
    e = np.maximum(expected, PSI_EPSILON)
    a = np.maximum(actual, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_drift(name: str, reference: FeatureReference, values: Sequence[float | str]) -> FeatureDrift | None:
    """Compare a feature's production *values* with its *reference* (before multiplicity correction)."""
    if reference.kind == NUMERIC:
        numbers = np.asarray([v for v in values if not isinstance(v, str)], dtype=np.float64)
        if numbers.shape[0] < 2 or reference.numeric is None:
            return None
        ordered = np.sort(numbers)
        d = reference.numeric.ks_statistic(ordered)
        cal = ks_calibrated(d, effective_size(numbers), reference.effective)
        return FeatureDrift(name, NUMERIC, d, cal.p_value, cal.p_value, reference.numeric.psi_sorted(ordered),
                            False, int(numbers.shape[0]), reference.size)
    strings = [v for v in values if isinstance(v, str)]
    if len(strings) < 2:
        return None
    produced = collections.Counter(strings)
    categories = sorted(set(reference.counts) | set(produced))
    ref = np.asarray([reference.counts.get(c, 0) for c in categories], dtype=np.float64)
    prod = np.asarray([produced.get(c, 0) for c in categories], dtype=np.float64)
    p_ref, p_prod = ref / ref.sum(), prod / prod.sum()
    diff = p_prod - p_ref
    tvd = 0.5 * float(np.abs(diff).sum())
    if len(categories) > 1:
        chi2 = stats.chi2_contingency(np.stack([ref, prod]), correction=False)
        p_value = float(chi2.pvalue)
    else:
        p_value = 1.0
    unseen = int(sum(produced[c] for c in produced if c not in reference.counts))
    most = categories[int(np.argmax(np.abs(diff)))]
    changed = f"{most} {p_ref[categories.index(most)]:.0%} -> {p_prod[categories.index(most)]:.0%}"
    return FeatureDrift(name, CATEGORICAL, tvd, p_value, p_value, _psi(p_ref, p_prod), False, len(strings),
                        reference.size, unseen, changed)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------- embeddings
@attrs.frozen
class EmbeddingDrift:
    """Multivariate drift of the embeddings: squared MMD (V-statistic) and its permutation p-value."""

    mmd2: float
    p_value: float
    drifted: bool
    permutations: int
    bandwidth: float
    production_samples: int
    reference_samples: int
    dimensions: int

    def to_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def _sq_dists(x: FloatArray, y: FloatArray) -> FloatArray:
    xx = np.einsum("ij,ij->i", x, x)
    yy = np.einsum("ij,ij->i", y, y)
    d: FloatArray = np.maximum(xx[:, None] + yy[None, :] - 2.0 * (x @ y.T), 0.0)
    return d


def mmd2(x: FloatArray, y: FloatArray, bandwidth: float) -> float:
    """Squared MMD (V-statistic) between samples *x* and *y* (rows) with a Gaussian kernel of *bandwidth*."""
    z = np.concatenate([x, y])
    k = np.exp(-_sq_dists(z, z) / (2.0 * bandwidth * bandwidth))
    return float(_mmd2_weighted(k, _weights(int(x.shape[0]), int(y.shape[0]))[None, :])[0])


def _weights(n: int, m: int) -> FloatArray:
    return np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])


def _mmd2_weighted(k: FloatArray, w: FloatArray) -> FloatArray:
    """``w_b' K w_b`` for each row *w_b* of *w*: the squared MMD of each labelling of the pooled sample."""
    out: FloatArray = np.einsum("bi,bi->b", w @ k, w)
    return np.maximum(out, 0.0)


def embedding_drift(reference: FloatArray, sample: FloatArray, *, alpha: float, permutations: int = 100,
                    max_rows: int = 200, seed: int = 0) -> EmbeddingDrift | None:
    """MMD permutation test of *sample* against *reference* (rows: vectors of equal dimension).

    At most *max_rows* of each side are used (the newest of the sample, evenly
    spaced of the reference) so a check costs the same at any window. The
    bandwidth is the median pairwise distance of the reference (median
    heuristic); the p-value is ``(1 + #{perm >= observed}) / (1 + permutations)``.
    """
    if reference.ndim != 2 or sample.ndim != 2 or reference.shape[1] != sample.shape[1]:
        return None
    if reference.shape[0] < 4 or sample.shape[0] < 4:
        return None
    ref = reference[np.linspace(0, reference.shape[0] - 1, min(max_rows, reference.shape[0])).astype(int)]
    smp = sample[-max_rows:]
    d_ref = _sq_dists(ref, ref)
    positive = d_ref[np.triu_indices(ref.shape[0], 1)]
    positive = positive[positive > 0]
    bandwidth = float(np.sqrt(np.median(positive))) if positive.shape[0] else 1.0
    z = np.concatenate([smp, ref])
    k = np.exp(-_sq_dists(z, z) / (2.0 * bandwidth * bandwidth))
    n = int(smp.shape[0])
    rng = np.random.default_rng(seed)
    w = _weights(n, int(ref.shape[0]))
    labellings = np.stack([w] + [rng.permutation(w) for _ in range(permutations)])
    values = _mmd2_weighted(k, labellings)
    observed = float(values[0])
    p_value = (1.0 + float(np.sum(values[1:] >= observed))) / (1.0 + permutations)
    return EmbeddingDrift(observed, p_value, p_value < alpha, permutations, bandwidth, n, int(ref.shape[0]),
                          int(sample.shape[1]))
