"""`make demo` keeps working: the quick demo reaches an A/B decision and a drift alert."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_quick_demo_decides_and_alerts() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--quick"], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={"PATH": str(Path(sys.executable).parent), "COLUMNS": "120", "TERM": "dumb"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "decision: promote" in out  # v2.2.0 is the better model (fewer errors, higher confidence)
    assert "champion of 'gnn' is now v2.2.0" in out
    assert "alert=True" in out
    assert "roll back to the previous champion v2.1.0" in out
