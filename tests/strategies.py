"""Shared hypothesis strategies (append yours; keep sections per module)."""

from __future__ import annotations

from hypothesis import strategies as st

# ------------------------------------------------------------------ telemetry
#: Label values as users pass them: short printable strings.
label_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
#: Durations in milliseconds, including invalid ones.
durations_ms = st.floats(min_value=0.0, max_value=120_000.0, allow_nan=False)
any_floats = st.floats(allow_nan=True, allow_infinity=True)
unit_interval = st.floats(min_value=0.0, max_value=1.0)

# --------------------------------------------------------------------- stores
#: Values a store accepts as window items and documents (JSON, finite numbers).
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
#: Store keys as callers build them, including braces (Cluster hash tags, stray ones).
store_keys = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=24)
#: One increment: integral deltas, so sums are exact and comparable with ==.
counter_deltas = st.dictionaries(
    st.sampled_from(("n", "sum", "sumsq", "errors")),
    st.integers(-1000, 1000).map(float),
    min_size=1,
)

# --------------------------------------------------------------------- deploy
#: Strings a YAML emitter must carry verbatim: any text plus YAML look-alikes and PromQL fragments.
yaml_strings = st.text(max_size=16) | st.sampled_from((
    "yes", "No", "ON", "null", "~", "0.5", "1e3", "5m", "0.0.0.0:4317", "a: b", "- x", "#c", "&a", "*a", "!t",
    "{{ $value }}", "a\nb", "a\n  b\n", " lead", "trail ", "x\n", "\n", "a\n\nb", "sum by (job) (\n  rate(x[5m])\n)",
))
yaml_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False) | yaml_strings
)
#: Documents as the deploy generators build them: string-keyed mappings of lists, mappings, scalars.
yaml_documents = st.dictionaries(
    yaml_strings.filter(bool),
    st.recursive(
        yaml_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(yaml_strings.filter(bool), inner, max_size=4),
        max_leaves=12,
    ),
    max_size=5,
)

# ------------------------------------------------------------- registry / ab
#: User ids as services pass them: any unicode text (including empty and astral characters).
user_ids = st.text(max_size=40)
#: Traffic percentages exactly representable in assignment buckets (k / 10_000 percent).
traffic_buckets = st.integers(min_value=1, max_value=999_999)
#: Test salts (names): non-empty, no braces or control characters.
salts = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="{}"),
                min_size=1, max_size=20).filter(lambda s: s.strip() != "")
latencies_ms = st.floats(min_value=0.0, max_value=60_000.0, allow_nan=False)


@st.composite
def sufficient_stats(draw: st.DrawFn, *, max_n: int = 30) -> object:
    """A :class:`mlops_otel.registry.SufficientStats` of a few raw results."""
    from mlops_otel.registry import SufficientStats

    n = draw(st.integers(min_value=0, max_value=max_n))
    lat = draw(st.lists(latencies_ms, min_size=n, max_size=n))
    conf = draw(st.lists(unit_interval, min_size=n, max_size=n))
    errors = draw(st.integers(min_value=0, max_value=n))
    return SufficientStats.of(lat, conf, n=n, errors=errors)


@st.composite
def arm_summaries(draw: st.DrawFn) -> object:
    """A variant's statistics with realistic sizes, built from (n, errors, mean, sd) directly."""
    from mlops_otel.registry import Moments, SufficientStats

    n = draw(st.integers(min_value=0, max_value=50_000))
    errors = draw(st.integers(min_value=0, max_value=n))

    def moments(mean: float, sd: float, shift: float) -> Moments:
        d = mean - shift
        return Moments(n, n * d, n * d * d + max(n - 1, 0) * sd * sd, shift)

    lat = moments(draw(st.floats(1.0, 500.0)), draw(st.floats(0.0, 100.0)), 0.0)
    conf = moments(draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 0.5)), 0.5)
    return SufficientStats(n, errors, lat, conf)

# ---------------------------------------------------------------------- drift
#: KS samples: continuous values, or values on a coarse lattice so that ties within and
#: across the two samples are common (the hard case for matching scipy's statistic).
ks_continuous = st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=300)
ks_lattice = st.lists(st.integers(-40, 40).map(lambda k: k / 8.0), min_size=1, max_size=300)
ks_samples = ks_continuous | ks_lattice
#: A pair of KS samples of the same kind (both continuous or both on the lattice).
ks_pairs = st.tuples(ks_continuous, ks_continuous) | st.tuples(ks_lattice, ks_lattice)
#: Values a caller may hand to the drift hot path, valid or not.
drift_outputs = (
    st.floats(0.0, 1.0)
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.1, 1.1, -1e-300, 1.0000001])
    | st.sampled_from([None, "0.5", True, [0.5], b"x"])
    | st.integers(-2, 2)
)
