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
