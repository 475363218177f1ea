"""The management API: A/B tests, the model registry and drift reports over HTTP.

Reads are open: they expose model versions, test configurations and
aggregate statistics, never request or user data. Every write needs
``Authorization: Bearer <token>``; with no token configured the writes are
disabled (403), not open.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# runtime, and they name dependencies local to management_router.
import hmac
import json
import math
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._runtime import Runtime
from .._views import ManagementError, Operations
from ..validation import InvalidValueError
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
    RolloutOut,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DISABLED_MESSAGE", "management_router"]

#: Largest accepted request body of a management write (a test config or metadata is far smaller).
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

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
    413: {"model": ErrorOut, "description": "The body exceeds the limit (checked after authentication)."},
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


def _check_token(token: object) -> bytes | None:
    """The token as the bytes a client sends, or ``None``; raise for a token no header can carry."""
    if token is None:
        return None
    if not isinstance(token, str) or not token:
        raise InvalidValueError("token", "a non-empty string or None", token)
    # RFC 6750 token68: visible ASCII without spaces. Anything else (é, a newline, a space) can
    # never arrive intact in an Authorization header, so the writes could never be authorised.
    if not (token.isascii() and token.isprintable() and " " not in token):
        # The value is never echoed: it is a secret.
        raise InvalidValueError("token", "visible ASCII without spaces (it is sent in an HTTP "
                                "'Authorization: Bearer <token>' header)", "<a token with other characters>")
    return token.encode("ascii")


def _auth_error(expected: bytes | None, header: str | None) -> HTTPException | None:
    """The 401/403 for an ``Authorization`` header value, or ``None`` when it carries the token."""
    if expected is None:
        return HTTPException(status.HTTP_403_FORBIDDEN, DISABLED_MESSAGE)
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_MESSAGE, headers={"WWW-Authenticate": "Bearer"})
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes that were sent.
    if not hmac.compare_digest(credentials.strip().encode("latin-1"), expected):
        return HTTPException(status.HTTP_403_FORBIDDEN, WRONG_MESSAGE)
    return None


class _NonFinite:
    """Marks a NaN, Infinity or out-of-range number found while parsing a body."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _non_finite(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, _NonFinite):
        yield path, value.text
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))


def _error(exc: HTTPException) -> Response:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _guarded_route(expected: bytes | None, max_body: int) -> type[APIRoute]:
    """A route class that, for writes, authenticates and bounds the body BEFORE it is read or parsed.

    FastAPI reads and validates the body before it runs dependencies, so without this an
    unauthenticated client could make the service read and parse any amount of data, and a
    garbage body without a token got 422 instead of 401.
    """

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                if request.method in _WRITE_METHODS:
                    refused = _auth_error(expected, request.headers.get("authorization"))
                    if refused is not None:
                        return _error(refused)
                    early = await _read_body(request, max_body)
                    if early is not None:
                        return early
                return await handler(request)

            return guarded

    return GuardedRoute


async def _read_body(request: Request, max_body: int) -> Response | None:
    """Read the body up to *max_body* bytes (413 beyond) and reject non-finite numbers (422)."""
    too_large = HTTPException(413,
                              f"the request body exceeds the management API's limit of {max_body} bytes")
    declared = request.headers.get("content-length")
    try:
        if declared is not None and int(declared) > max_body:
            return _error(too_large)
    except ValueError:
        return _error(HTTPException(status.HTTP_400_BAD_REQUEST, "malformed Content-Length header"))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return _error(too_large)
    request._body = bytes(body)  # what request.body() returns to FastAPI's own parsing
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # FastAPI would answer 400, which the API does not document
        return JSONResponse({"detail": [{"loc": ["body"], "type": "json_invalid", "input": None,
                                         "msg": "body must be a UTF-8 encoded JSON document"}]}, status_code=422)
    try:
        parsed = json.loads(text, parse_float=_parse_float,
                            parse_constant=_NonFinite)  # NaN, Infinity, -Infinity
    except ValueError:
        return None  # not JSON: FastAPI answers with its own 422
    bad = [{"loc": ["body", *path], "type": "finite_number", "input": text,
            "msg": f"{'.'.join(map(str, path)) or 'body'} must be a finite number, got {text}"}
           for path, text in _non_finite(parsed)]
    if bad:
        return JSONResponse({"detail": bad}, status_code=422)
    return None


def management_router(get_runtime: Callable[[], Runtime], *, token: str | None,
                      max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, ui: bool = True) -> APIRouter:
    """Return the management API as an :class:`~fastapi.APIRouter` (mount it with a prefix).

    *get_runtime* returns the running service's :class:`~mlops_otel.Runtime`
    (it may raise :class:`RuntimeError` before start-up: answered with 503).
    Write endpoints require ``Authorization: Bearer <token>`` (compared as
    bytes in constant time) and are checked before their body is read: 401
    without a token, 403 for a wrong one, then 413 for a body over
    *max_body_bytes*, 422 naming the field for NaN, Infinity or a number
    beyond the float range. With *token* ``None`` writes answer 403 and change
    nothing. A *token* that cannot be sent in an HTTP header (non-ASCII,
    spaces, control characters) raises :class:`ValueError` here, at start-up.
    With *ui*, the read-only operator's pages are served under ``/ui`` (open like the reads).
    """
    expected = _check_token(token)
    if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool) or max_body_bytes < 1:
        raise InvalidValueError("max_body_bytes", "an int >= 1", max_body_bytes)
    bearer = HTTPBearer(auto_error=False, scheme_name="ManagementToken",
                        description="The management token configured on the service.")

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        # The route class checked already, before the body; this keeps the scheme in the OpenAPI.
        header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        refused = _auth_error(expected, header)
        if refused is not None:
            raise refused

    def operations() -> Operations:
        try:
            return Operations(get_runtime())
        except RuntimeError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc

    Ops = Annotated[Operations, Depends(operations)]
    writer = [Depends(authorize)]
    router = APIRouter(responses=_UNAVAILABLE, route_class=_guarded_route(expected, max_body_bytes))

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
        return _call(lambda: ops.evaluate_test(name), path=("name",))

    @router.get("/ab/tests/{name}/rollout", tags=["ab-tests"], response_model=RolloutOut, responses=_NOT_FOUND,
                summary="Get a progressive rollout")
    def rollout_status(name: TestName, ops: Ops) -> dict[str, Any]:
        """The rollout of the test: status, current step and share, step history and the step's verdict.

        Read only; 404 when the test is unknown or has no rollout.
        """
        return _call(lambda: ops.rollout_status(name), path=("name",))

    @router.post("/ab/tests/{name}/rollout/check", tags=["ab-tests"], response_model=RolloutOut,
                 dependencies=writer, responses={**_WRITE_RESPONSES, **_NOT_FOUND},
                 summary="Check a progressive rollout now")
    def rollout_check(name: TestName, ops: Ops) -> dict[str, Any]:
        """Judge the current step and act: advance, hand over, promote or roll back (at most once).

        What the scheduled evaluator does on its own; ``changed`` says what this call did.
        """
        return _call(lambda: ops.rollout_check(name), path=("name",))

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
        return _call(ops.drift_reports)

    @router.get("/drift/{model_type}/{version}", tags=["drift"], response_model=DriftReportOut,
                responses=_NOT_FOUND, summary="Drift report of one version")
    def drift_report(model_type: ModelType, version: Annotated[str, Path(description="The model version.")],
                     ops: Ops) -> dict[str, Any]:
        """The drift report of one model version's detector."""
        return _call(lambda: ops.drift_report(model_type, version), path=("model_type", "version"))

    if ui:
        from ..ui import ui_router

        router.include_router(ui_router(get_runtime), prefix="/ui")
    return router
