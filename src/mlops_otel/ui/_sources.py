"""What the pages show, read through the management operations and the cores' public API.

This is the UI's adapter layer: every page reads its data through
:class:`PageData`, which turns :class:`~mlops_otel._views.Operations` views
(the JSON shapes the API and the CLI print) and the cores' public methods into
plain dicts for the templates. Nothing here writes a role, finalizes a test or
counts a decision: the current evaluation of a test is recomputed with the
pure :func:`mlops_otel.ab.evaluate` from :meth:`ABTestManager.results`.

Histories come from the cores, kept bounded in the store and shared by every
worker: :meth:`ABTestManager.evaluation_history` (the evidence path and the
decision history), :meth:`DriftDetector.score_history` (the score over time) and
:meth:`DriftDetector.distributions` (reference and production quantiles).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import numpy as np

from .._views import ManagementError, Operations, evaluation_view, json_safe
from ..ab import ABTestNotFoundError, RolloutManager, evaluate
from ..drift import detector_key
from ..stores import StoreError

__all__ = ["PageData", "evaluation_point", "histogram", "histogram_from_quantiles", "score_point"]

T = TypeVar("T")

#: Role changes shown under "recent changes" on the overview.
RECENT_CHANGES = 12


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _effects(raw: Any) -> dict[str, dict[str, Any]]:
    """Per-metric effects as ``{metric: {...}}`` whether given as a mapping or a list."""
    if isinstance(raw, Mapping):
        return {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)}
    if isinstance(raw, (list, tuple)):
        return {str(v["metric"]): dict(v) for v in raw if isinstance(v, Mapping) and "metric" in v}
    return {}


def _time(entry: Mapping[str, Any]) -> float | None:
    for key in ("time", "evaluated_at", "at", "timestamp"):
        value = _num(entry.get(key))
        if value is not None:
            return value
    return None


def _segments(current: Mapping[str, Any], history: Sequence[Any]) -> list[Mapping[str, Any]]:
    """Segment reports: the current evaluation's, else the newest recorded evaluation's (reads never evaluate)."""
    found = [sg for sg in current.get("segments") or () if isinstance(sg, Mapping)]
    for entry in reversed(history):
        if found:
            break
        if isinstance(entry, Mapping) and entry.get("by", "evaluation") == "evaluation":
            found = [sg for sg in json_safe(entry.get("segments") or []) if isinstance(sg, Mapping)]
            break
    return found


def evaluation_point(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One snapshot of an evaluation history in the shape the charts read."""
    n_c = int(_num(entry.get("n_control")) or 0)
    n_t = int(_num(entry.get("n_treatment")) or 0)
    raw = entry.get("effects") if entry.get("effects") is not None else entry.get("metrics")
    effects = {metric: {k: _num(e.get(k)) for k in ("estimate", "lower", "upper")}
               for metric, e in _effects(raw).items()}
    applied = entry.get("applied")
    return {"time": _time(entry), "n_control": n_c, "n_treatment": n_t, "n": n_c + n_t,
            "decision": str(entry.get("decision", "")), "effects": effects,
            "applied": None if applied is None else str(applied), "by": str(entry.get("by") or "evaluation")}


def score_point(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of a drift score history in the shape the charts read."""
    score = _num(entry.get("score", entry.get("current_drift_score")))
    threshold = _num(entry.get("threshold", entry.get("bound")))
    status = entry.get("status", entry.get("level"))
    if status is None and "alert_triggered" in entry:
        status = "alert" if entry["alert_triggered"] else "ok"
    return {"time": _time(entry), "score": score, "threshold": threshold,
            "samples": _num(entry.get("production_samples", entry.get("samples"))),
            "status": "" if status is None else str(status)}


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[float]:
    """Share of *values* per bin of *edges* (the last bin is closed)."""
    data = np.asarray(list(values), dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return [0.0] * (len(edges) - 1)
    counts, _ = np.histogram(np.clip(data, edges[0], edges[-1]), bins=np.asarray(edges))
    return [float(c) / float(data.size) for c in counts]


def histogram_from_quantiles(quantiles: Sequence[float], probabilities: Sequence[float],
                             edges: Sequence[float]) -> list[float]:
    """Share per bin of a distribution given by its quantiles, binned as :func:`histogram` bins a sample.

    The CDF is linear between quantiles; mass outside the edges goes to the end bins, and a
    point mass sitting on an inner edge to the bin on its right (numpy's half-open bins).
    """
    q = np.asarray(quantiles, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(q, kind="stable")
    q, p = q[order], p[order]
    unique, first = np.unique(q, return_index=True)
    inner = np.interp(np.asarray(edges[1:-1], dtype=np.float64), unique, p[first], left=0.0, right=1.0)
    cdf = np.concatenate(([0.0], inner, [1.0]))
    return [float(max(b - a, 0.0)) for a, b in itertools.pairwise(cdf)]


def _labels(edges: Sequence[float]) -> list[str]:
    span = abs(edges[-1] - edges[0])
    digits = 2 if span <= 10 else 0
    return [f"{e:.{digits}f}" for e in edges[:-1]]


def _quantile_panel(name: str, kind: str, sides: Mapping[str, Any], levels: Sequence[float],
                    edges: Sequence[float]) -> dict[str, Any]:
    panel: dict[str, Any] = {"name": name, "kind": kind, "labels": _labels(edges)}
    for side in ("reference", "production"):
        quantiles = sides.get(side)
        panel[side] = (histogram_from_quantiles(quantiles, levels, edges)
                       if quantiles and len(quantiles) == len(levels) else None)
    return panel


@attrs.define(eq=False)
class PageData:
    """The data of each page, from one :class:`Operations` (no writes except :class:`HistoryLog`)."""

    ops: Operations
    clock: Callable[[], float] = time.time

    @property
    def _runtime(self) -> Any:
        return self.ops.runtime

    def _guard(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except StoreError as exc:
            raise ManagementError("unavailable", f"the state store is unavailable: {exc}") from exc

    # ------------------------------------------------------------ A/B tests
    def current_evaluation(self, test: Mapping[str, Any]) -> dict[str, Any]:
        """The test's evaluation now, computed without acting on it (read-only)."""
        ab = self._runtime.ab

        def compute() -> dict[str, Any]:
            control, treatment = ab.results(test["name"])
            config = ab.get_test(test["name"]).config
            ended = (test.get("finished_at") or self.clock()) >= float(test["ends_at"])
            return evaluation_view(evaluate(control, treatment, config, ended=ended))

        result: dict[str, Any] = self._guard(compute)
        return result

    def evaluation_history(self, name: str) -> list[dict[str, Any]]:
        """The test's evaluations and finalizations over time, oldest first (bounded by the A/B manager)."""
        entries = self._guard(lambda: self._runtime.ab.evaluation_history(name))
        return [evaluation_point(e) for e in json_safe(list(entries)) if isinstance(e, Mapping)]

    def experiment(self, name: str) -> dict[str, Any]:
        """Everything the experiment page shows for test *name*."""
        test = self.ops.get_test(name)
        current = self.current_evaluation(test)
        raw_history = self._guard(lambda: self._runtime.ab.evaluation_history(name))
        history = [evaluation_point(e) for e in json_safe(list(raw_history)) if isinstance(e, Mapping)]
        decisions: list[dict[str, Any]] = []
        for point in history:
            manual = point["by"] != "evaluation"
            if manual or point["applied"] or not decisions or decisions[-1]["decision"] != point["decision"] \
                    or decisions[-1]["applied"] or decisions[-1]["by"] != "evaluation":
                decisions.append({**point, "until_n": point["n"], "count": 1})
            else:
                decisions[-1]["until_n"] = point["n"]
                decisions[-1]["count"] += 1
        history = [p for p in history if p["by"] == "evaluation"]
        config = test["config"]
        fraction = float(config["treatment_traffic_pct"]) / 100.0
        total = current["n_control"] + current["n_treatment"]
        srm = {"expected_share": fraction, "observed_share": (current["n_treatment"] / total) if total else None,
               "p_value": current.get("srm_p_value"), "alpha": config.get("srm_alpha")}
        return {"test": test, "config": config, "evaluation": current, "history": history,
                "decisions": decisions, "srm": srm,
                "segments": _segments(current, raw_history),
                "rollout": self.rollout(name)}

    def rollout(self, name: str) -> dict[str, Any] | None:
        """The progressive rollout of test *name* (schedule, current step, step changes), ``None`` without one."""

        def read() -> dict[str, Any] | None:
            try:
                state = RolloutManager(self._runtime.ab).get(name)
            except ABTestNotFoundError:
                return None
            doc: dict[str, Any] = json_safe(state.to_doc())
            doc["traffic_pct"] = state.traffic_pct
            return doc

        return self._guard(read)

    # ------------------------------------------------------------ drift
    def _detector(self, model_type: str, version: str) -> Any:
        monitor = self._runtime.drift
        detector = monitor.detectors().get(detector_key(model_type, version))
        if detector is None:
            raise ManagementError("not_found", f"no drift detector for version {version!r} of model type "
                                  f"{model_type!r}", field="version", value=version)
        return detector

    def score_history(self, detector: Any) -> list[dict[str, Any]]:
        """The detector's drift score over time, oldest first (bounded by the detector)."""
        entries = self._guard(detector.score_history)
        points = [score_point(e) for e in json_safe(list(entries)) if isinstance(e, Mapping)]
        return sorted(points, key=lambda p: p["time"] or 0.0)

    def distributions(self, detector: Any, bins: int = 20) -> list[dict[str, Any]]:
        """Panels of reference vs production distributions: each output, then each input feature.

        Each panel: ``name``, ``kind`` (``output``, ``numeric`` or ``categorical``), bin ``labels`` and the
        ``reference`` and ``production`` shares per bin (``None`` for a side without data).
        """
        dist = self._guard(detector.distributions)
        levels = [float(x) for x in dist.get("quantiles", [])]
        panels: list[dict[str, Any]] = []
        unit = [i / bins for i in range(bins + 1)]
        for name, sides in (dist.get("outputs") or {}).items():
            panels.append(_quantile_panel(str(name), "output", sides, levels, unit))
        for name, sides in (dist.get("features") or {}).items():
            if sides.get("kind") == "categorical":
                labels = sorted(set(sides.get("reference") or {}) | set(sides.get("production") or {}))
                panels.append({"name": str(name), "kind": "categorical", "labels": labels, **{
                    side: None if not sides.get(side) else [float(sides[side].get(k, 0.0)) for k in labels]
                    for side in ("reference", "production")}})
                continue
            values = [v for side in ("reference", "production") for v in (sides.get(side) or ())]
            if not values:
                continue
            low, high = min(values), max(values)
            edges = [low + (high - low) * i / bins for i in range(bins + 1)] if high > low else [low - 0.5, low + 0.5]
            panels.append(_quantile_panel(str(name), "numeric", sides, levels, edges))
        return [p for p in panels if p["reference"] is not None or p["production"] is not None]

    def drift(self, model_type: str, version: str) -> dict[str, Any]:
        """Everything the drift page shows for one model version's detector."""
        report = self.ops.drift_report(model_type, version)
        detector = self._detector(model_type, version)
        return {"report": report, "history": self.score_history(detector),
                "distributions": self.distributions(detector)}

    # ------------------------------------------------------------ registry
    def registry(self, model_type: str) -> dict[str, Any]:
        """The registry page: versions and the role history, newest change first."""
        versions = self.ops.list_versions(model_type)
        history = self.ops.history(model_type)
        return {"model_type": model_type, "versions": versions, "history": list(reversed(history))}

    # ------------------------------------------------------------ overview
    def overview(self) -> dict[str, Any]:
        """Every model type, test and detector at a glance, and the newest role changes."""
        types = self.ops.model_types()
        reports = self.ops.drift_reports()
        drift_by_version = {r["key"]: r for r in reports}
        versions: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for t in types:
            mt = t["model_type"]
            split: dict[str, list[dict[str, Any]]] = {"shown": [], "hidden": []}
            for v in self.ops.list_versions(mt):
                key = v["role"] in ("champion", "challenger") or f"{mt}:{v['version']}" in drift_by_version
                split["shown" if key else "hidden"].append(v)
            versions[mt] = split
        tests = self.ops.list_tests()
        for test in tests:
            if test["state"] == "active":
                evaluation = self.current_evaluation(test)
                test["decision"] = evaluation["decision"]
                test["recommendation"] = evaluation["recommendation"]
                test["n"] = evaluation["n_control"] + evaluation["n_treatment"]
        changes = sorted((c for t in types for c in self.ops.history(t["model_type"])),
                         key=lambda c: c["time"], reverse=True)[:RECENT_CHANGES]
        finished = sorted((t for t in tests if t.get("finished_at")), key=lambda t: t["finished_at"], reverse=True)
        return {"types": types, "versions": versions, "tests": tests, "drift": reports,
                "drift_by_version": drift_by_version, "changes": changes, "finished": finished[:RECENT_CHANGES]}
