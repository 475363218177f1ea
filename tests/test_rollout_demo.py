"""examples/rollout_demo.py: shadow, ramp, promote; a broken challenger rolled back at its first step."""

from __future__ import annotations

import mlops_otel
from examples.rollout_demo import main


def test_quick_rollout_demo() -> None:
    mlops_otel.reset_default()
    lines: list[str] = []
    try:
        assert main(quick=True, say=lines.append) == 0, "\n".join(lines)
    finally:
        mlops_otel.reset_default()
    out = "\n".join(lines)
    assert "shadow report: Ready for an A/B test" in out
    for share in ("5%", "20%", "50%"):
        assert f"treatment share {share}" in out
    assert "champion of 'gnn' is now v2.2.0" in out
    assert "rolled back at step 1 (1% of users): error_rate significantly worse" in out
    assert "champion of 'gnn' stays v2.2.0" in out
