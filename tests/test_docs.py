"""Docs stay true: python blocks in docs/ and README run (and print what the page shows), the metrics
table matches semconv, and every docstring example in the package runs."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlops_otel
from mlops_otel import semconv

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# A ```python block directly followed by an ```output block: the output is what the code prints.
_WITH_OUTPUT = re.compile(r"^```python\n(.*?)^```\n\s*^```output\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of *path* (```py blocks are illustrations and are not run)."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def shown_outputs(path: Path) -> dict[str, str]:
    """The ```output block shown after a python block, keyed by that block's code."""
    return dict(_WITH_OUTPUT.findall(path.read_text(encoding="utf-8")))


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


@pytest.fixture(autouse=True)
def fresh_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(path: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    outputs = shown_outputs(path)
    for i, block in enumerate(python_blocks(path)):
        code = compile(block, f"{path.name}[block {i}]", "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(code, namespace)
        if block in outputs:
            assert _lines(printed.getvalue()) == _lines(outputs[block]), f"{path.name}[block {i}] prints otherwise"


def test_output_blocks_follow_python_blocks() -> None:
    """An ```output block is only ever shown right after the python block that prints it."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        assert text.count("```output\n") == len(shown_outputs(path)), path.name


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mlops_otel.__path__, "mlops_otel."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    """Every ``>>>`` example in the package's docstrings (what ``--doctest-modules`` would run)."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
                             report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


@pytest.mark.parametrize(("marker", "specs"), [("metrics-table", semconv.ALL_METRICS),
                                               ("http-metrics-table", semconv.HTTP_SERVER_METRICS)])
def test_metrics_table_matches_semconv(marker: str, specs: tuple[semconv.MetricSpec, ...]) -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    table = text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.strip().splitlines()[2:]}
    assert set(rows) == {m.prometheus_name for m in specs}
    for m in specs:
        cells = [c.strip() for c in rows[m.prometheus_name].split("|")[1:-1]]
        assert cells[1] == m.kind.value
        assert cells[2] == ", ".join(f"`{label}`" for label in m.labels)
        assert cells[3] == f"`{m.name}` / `{m.unit}`"
        expected_buckets = ", ".join(repr(float(b)) for b in m.buckets) if m.buckets else "—"
        assert cells[4] == expected_buckets
