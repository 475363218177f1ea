"""The operator's pages: an :class:`~fastapi.APIRouter` of server-rendered HTML, no JavaScript."""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at runtime.
import math
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from .._runtime import Runtime
from .._views import ManagementError, Operations
from . import _charts
from ._sources import PageData

__all__ = ["ui_router"]

_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "unavailable": 503}
#: Per metric: lower is better, shown in percent.
_METRICS = {"error_rate": (True, True), "latency_ms": (True, True), "confidence": (False, False)}


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "-"
        if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: Any, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def _effect(value: Any, metric: str) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return _pct(value, signed=True) if _METRICS.get(metric, (False, False))[1] else f"{value:+.4f}"


def _environment() -> jinja2.Environment:
    # ChainableUndefined: a field a core drops or renames renders empty instead of failing the page.
    env = jinja2.Environment(loader=jinja2.PackageLoader("mlops_otel.ui", "templates"),
                             autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, num=_num, pct=_pct, effect=_effect,
                       q=lambda v: urllib.parse.quote(str(v), safe=""))
    env.globals.update(charts=_charts, metrics=_METRICS)
    return env


def _scalars(mapping: Mapping[str, Any], skip: Collection[str]) -> list[tuple[str, Any]]:
    """The plain values of *mapping* not shown elsewhere (forward compatible: new keys appear)."""
    return [(k, v) for k, v in mapping.items()
            if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))]


def ui_router(get_runtime: Callable[[], Runtime]) -> APIRouter:
    """Return the operator's pages as an :class:`~fastapi.APIRouter` (the management router mounts it at ``/ui``).

    Read-only and open like the management API's reads; every page is plain
    HTML with inline SVG charts: no script, no external asset. Unknown tests,
    model types or versions answer 404 and invalid names 422, as the API does.
    """
    env = _environment()
    router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    def data() -> PageData:
        try:
            return PageData(Operations(get_runtime()))
        except RuntimeError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc

    Data = Annotated[PageData, Depends(data)]

    def render(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
        base = request.url_for("mlops_ui_overview").path
        docs = getattr(request.app, "docs_url", None)
        root = str(request.scope.get("root_path", "")).rstrip("/")
        html = env.get_template(template).render(base=base, title=title, now=time.time(), scalars=_scalars,
                                                 docs_url=root + docs if docs else None, **context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    def page(request: Request, template: str, title: str, build: Callable[[], Mapping[str, Any]]) -> HTMLResponse:
        try:
            context = build()
        except ManagementError as exc:
            code = _STATUS[exc.kind]
            response = render(request, "error.html", f"{code}", code=code, message=exc.message, field=exc.field)
            response.status_code = code
            return response
        return render(request, template, title, **context)

    @router.get("", name="mlops_ui_overview")
    def overview(request: Request, data: Data) -> HTMLResponse:
        """Every model type, test and detector at a glance."""
        return page(request, "overview.html", "Overview", data.overview)

    @router.get("/", name="mlops_ui_overview_slash")
    def overview_slash(request: Request) -> RedirectResponse:
        return RedirectResponse(request.url_for("mlops_ui_overview").path, status_code=307)

    @router.get("/experiments/{name}", name="mlops_ui_experiment")
    def experiment(request: Request, name: Annotated[str, Path()], data: Data) -> HTMLResponse:
        """One A/B test: evidence path, decision rule, sample ratio, decision history."""
        return page(request, "experiment.html", f"Experiment {name}", lambda: data.experiment(name))

    @router.get("/drift/{model_type}/{version}", name="mlops_ui_drift")
    def drift(request: Request, model_type: Annotated[str, Path()], version: Annotated[str, Path()],
              data: Data) -> HTMLResponse:
        """One model version's drift: distributions, score over time, calibration, recommendation."""
        return page(request, "drift.html", f"Drift {model_type} {version}", lambda: data.drift(model_type, version))

    @router.get("/registry/{model_type}", name="mlops_ui_registry")
    def registry(request: Request, model_type: Annotated[str, Path()], data: Data) -> HTMLResponse:
        """One model type's versions and role history."""
        return page(request, "registry.html", f"Registry {model_type}", lambda: data.registry(model_type))

    return router

