"""The management API: A/B tests, the model registry and drift reports over HTTP.

Reads are open: they expose model versions, test configurations and
aggregate statistics, never request or user data. Every write needs
``Authorization: Bearer <token>``; with no token configured the writes are
disabled (403), not open.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# runtime, and they name dependencies local to management_router.
import hmac
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.encoders import jsonable_encoder
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._runtime import Runtime
from .._views import ManagementError, Operations
from ._models import (
    AbortIn,
    ABTestChangeOut,
    ABTestConfigIn,
    ABTestOut,
    ChampionChangeOut,
    DriftReportOut,
    ErrorOut,
    EvaluationOut,
    FinalizeIn,
    ModelTypeOut,
    ModelVersionOut,
    PromoteIn,
    RegisterIn,
    RoleChangeOut,
    RollbackIn,
)

__all__ = ["DISABLED_MESSAGE", "management_router"]

T = TypeVar("T")

DISABLED_MESSAGE = "management writes are disabled: no token configured"
MISSING_MESSAGE = "missing or malformed Authorization header: send 'Authorization: Bearer <token>'"
WRONG_MESSAGE = "the bearer token is not the management token"

_STATUS = {
    "invalid": 422,
    "not_found": status.HTTP_404_NOT_FOUND,
    "conflict": status.HTTP_409_CONFLICT,
    "unavailable": status.HTTP_503_SERVICE_UNAVAILABLE,
}

_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No bearer token (or not a Bearer Authorization header)."},
    403: {"model": ErrorOut, "description": "Wrong token, or writes disabled because no token is configured."},
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "The service has not started or its state store is unreachable."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such test or version."}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The current state forbids it (e.g. the test already finished)."},
}

TestName = Annotated[str, Path(description="The A/B test's name.")]
ModelType = Annotated[str, Path(description="The model type, e.g. 'gnn'.")]


def _input(value: Any) -> Any:
    try:
        return jsonable_encoder(value)
    except Exception:  # anything pydantic could not have produced: show it as text
        return repr(value)


def _http(exc: ManagementError, path_fields: Sequence[str]) -> HTTPException:
    """The HTTP error for *exc*; 422s use FastAPI's own validation-error shape."""
    code = _STATUS[exc.kind]
    if exc.kind != "invalid":
        return HTTPException(code, exc.message)
    where = "path" if exc.field in path_fields else "body"
    item: dict[str, Any] = {"loc": [where, exc.field] if exc.field else [where], "msg": exc.message,
                            "type": "value_error"}
    if exc.value is not None:
        item["input"] = _input(exc.value)
    return HTTPException(code, [item])


def _call(operation: Callable[[], T], *, path: Sequence[str] = ()) -> T:
    try:
        return operation()
    except ManagementError as exc:
        raise _http(exc, path) from exc


def management_router(get_runtime: Callable[[], Runtime], *, token: str | None, ui: bool = True) -> APIRouter:
    """Return the management API as an :class:`~fastapi.APIRouter` (mount it with a prefix).

    *get_runtime* returns the running service's :class:`~mlops_otel.Runtime`
    (it may raise :class:`RuntimeError` before start-up: answered with 503).
    Write endpoints require ``Authorization: Bearer <token>`` (compared in
    constant time); with *token* ``None`` they answer 403 and change nothing.
    With *ui*, the read-only operator's pages are served under ``/ui`` (open like the reads).
    """
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError(f"token must be a non-empty string or None, got {token!r}")
    expected = None if token is None else token.encode("utf-8")
    bearer = HTTPBearer(auto_error=False, scheme_name="ManagementToken",
                        description="The management token configured on the service.")

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if expected is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, DISABLED_MESSAGE)
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_MESSAGE,
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, WRONG_MESSAGE)

    def operations() -> Operations:
        try:
            return Operations(get_runtime())
        except RuntimeError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc

    if ui:  # the operator's pages; until the cores keep histories, the UI keeps what these calls return
        from ..ui import keep_drift_report, keep_evaluation, ui_router

    Ops = Annotated[Operations, Depends(operations)]
    writer = [Depends(authorize)]
    router = APIRouter(responses=_UNAVAILABLE)

    # -------------------------------------------------------------- A/B tests
    @router.post("/ab/tests", tags=["ab-tests"], response_model=ABTestOut, status_code=201, dependencies=writer,
                 responses={**_WRITE_RESPONSES, **_CONFLICT}, summary="Start an A/B test")
    def start_test(body: ABTestConfigIn, ops: Ops) -> dict[str, Any]:
        """Start a test; its treatment becomes the registry's challenger.

        409 when the model type already has an active test or the name was used
        before; 422 when a setting is out of range or a version is not registered.
        """
        return _call(lambda: ops.start_test(body.model_dump(exclude_none=True)))

    @router.get("/ab/tests", tags=["ab-tests"], response_model=list[ABTestOut], summary="List A/B tests")
    def list_tests(ops: Ops) -> list[dict[str, Any]]:
        """Every test started on the store, oldest first."""
        return _call(ops.list_tests)

    @router.get("/ab/tests/{name}", tags=["ab-tests"], response_model=ABTestOut, responses=_NOT_FOUND,
                summary="Get an A/B test")
    def get_test(name: TestName, ops: Ops) -> dict[str, Any]:
        """One test's state, schedule and configuration."""
        return _call(lambda: ops.get_test(name), path=("name",))

    @router.post("/ab/tests/{name}/evaluate", tags=["ab-tests"], response_model=EvaluationOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND}, summary="Evaluate an A/B test")
    def evaluate_test(name: TestName, ops: Ops) -> dict[str, Any]:
        """Evaluate the test now: decision, recommendation and per-metric effects.

        A write: it counts a decision metric and, for a test with
        ``auto_finalize``, may finalize or abort it.
        """
        result = _call(lambda: ops.evaluate_test(name), path=("name",))
        if ui:
            keep_evaluation(ops.runtime, result)
        return result

    @router.post("/ab/tests/{name}/finalize", tags=["ab-tests"], response_model=ABTestChangeOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND, **_CONFLICT},
                 summary="Finalize an A/B test")
    def finalize_test(name: TestName, body: FinalizeIn, ops: Ops) -> dict[str, Any]:
        """``promote`` makes the treatment champion; ``rollback`` keeps the control.

        Exactly once however many callers race; 409 when the test already finished.
        """
        return _call(lambda: ops.finalize_test(name, body.action, body.reason), path=("name",))

    @router.post("/ab/tests/{name}/abort", tags=["ab-tests"], response_model=ABTestChangeOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND, **_CONFLICT},
                 summary="Abort an A/B test")
    def abort_test(name: TestName, ops: Ops, body: AbortIn | None = None) -> dict[str, Any]:
        """Stop the test without changing the champion; 409 when it already finished."""
        reason = None if body is None else body.reason
        return _call(lambda: ops.abort_test(name, reason), path=("name",))

    # --------------------------------------------------------------- registry
    @router.get("/registry", tags=["registry"], response_model=list[ModelTypeOut], summary="List model types")
    def model_types(ops: Ops) -> list[dict[str, Any]]:
        """Every model type with its champion, challenger and number of versions."""
        return _call(ops.model_types)

    @router.get("/registry/{model_type}/versions", tags=["registry"], response_model=list[ModelVersionOut],
                responses=_NOT_FOUND, summary="List versions")
    def list_versions(model_type: ModelType, ops: Ops) -> list[dict[str, Any]]:
        """Every version of the model type with its role and running metrics, oldest first."""
        return _call(lambda: ops.list_versions(model_type), path=("model_type",))

    @router.post("/registry/{model_type}/versions", tags=["registry"], response_model=ModelVersionOut,
                 status_code=201, dependencies=writer, responses={**_WRITE_RESPONSES, **_CONFLICT},
                 summary="Register a version")
    def register(model_type: ModelType, body: RegisterIn, ops: Ops) -> dict[str, Any]:
        """Register a version; the first version of a model type becomes its champion. 409 if it exists."""
        return _call(lambda: ops.register(model_type, body.version, body.metadata), path=("model_type",))

    @router.post("/registry/{model_type}/promote", tags=["registry"], response_model=ChampionChangeOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND, **_CONFLICT},
                 summary="Promote a version to champion")
    def promote(model_type: ModelType, body: PromoteIn, ops: Ops) -> dict[str, Any]:
        """Make the version champion; the current champion can be restored with rollback."""
        return _call(lambda: ops.promote(model_type, body.version, body.reason), path=("model_type",))

    @router.post("/registry/{model_type}/rollback", tags=["registry"], response_model=ChampionChangeOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND, **_CONFLICT},
                 summary="Roll back to the previous champion")
    def rollback(model_type: ModelType, body: RollbackIn, ops: Ops) -> dict[str, Any]:
        """Restore the previous champion; 409 when there is none."""
        return _call(lambda: ops.rollback(model_type, body.reason), path=("model_type",))

    @router.get("/registry/{model_type}/history", tags=["registry"], response_model=list[RoleChangeOut],
                responses=_NOT_FOUND, summary="Role history")
    def history(model_type: ModelType, ops: Ops) -> list[dict[str, Any]]:
        """Every role change of the model type with time and reason, oldest first."""
        return _call(lambda: ops.history(model_type), path=("model_type",))

    # ------------------------------------------------------------------ drift
    @router.get("/drift", tags=["drift"], response_model=list[DriftReportOut], summary="Drift reports")
    def drift_reports(ops: Ops) -> list[dict[str, Any]]:
        """One report per drift detector, sorted by ``<model_type>:<version>``."""
        reports = _call(ops.drift_reports)
        for report in reports if ui else ():
            keep_drift_report(ops.runtime, report)
        return reports

    @router.get("/drift/{model_type}/{version}", tags=["drift"], response_model=DriftReportOut,
                responses=_NOT_FOUND, summary="Drift report of one version")
    def drift_report(model_type: ModelType, version: Annotated[str, Path(description="The model version.")],
                     ops: Ops) -> dict[str, Any]:
        """The drift report of one model version's detector."""
        report = _call(lambda: ops.drift_report(model_type, version), path=("model_type", "version"))
        if ui:
            keep_drift_report(ops.runtime, report)
        return report

    if ui:
        router.include_router(ui_router(get_runtime), prefix="/ui")
    return router
