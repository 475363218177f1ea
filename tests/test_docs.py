"""Docs stay true: python blocks in docs/ and README run, the metrics table matches semconv."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlops_otel
from mlops_otel import semconv

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of *path* (```py blocks are illustrations and are not run)."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def fresh_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(path: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(python_blocks(path)):
        code = compile(block, f"{path.name}[block {i}]", "exec")
        exec(code, namespace)


def test_metrics_table_matches_semconv() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    table = text.split("<!-- metrics-table:start -->")[1].split("<!-- metrics-table:end -->")[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.strip().splitlines()[2:]}
    assert set(rows) == {m.prometheus_name for m in semconv.ALL_METRICS}
    for m in semconv.ALL_METRICS:
        cells = [c.strip() for c in rows[m.prometheus_name].split("|")[1:-1]]
        assert cells[1] == m.kind.value
        assert cells[2] == ", ".join(f"`{label}`" for label in m.labels)
        assert cells[3] == f"`{m.name}` / `{m.unit}`"
        expected_buckets = ", ".join(repr(float(b)) for b in m.buckets) if m.buckets else "—"
        assert cells[4] == expected_buckets
