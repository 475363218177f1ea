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
