"""Where the CLI's commands run: straight on a state store, or through a service's management API.

Both backends return the JSON views of :mod:`mlops_otel._views` and report
failures as :class:`CliError` with the process exit code to use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import attrs

from .._fleet import FleetMetrics
from ..semconv import MetricKind
from ..stores import StoreError

if TYPE_CHECKING:
    import httpx

    from .._runtime import Runtime
    from .._views import ManagementError

__all__ = [
    "EXIT_ALERT",
    "EXIT_DOMAIN",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Backend",
    "CliError",
    "HttpBackend",
    "StoreBackend",
]

T = TypeVar("T")

EXIT_OK = 0
#: The operation was refused: unknown test or version, conflict, invalid value.
EXIT_DOMAIN = 1
#: Bad command line (argparse's own code).
EXIT_USAGE = 2
#: ``drift check --fail-on-alert`` found a detector alerting.
EXIT_ALERT = 3
#: The store or the API could not be reached, or the token was refused.
EXIT_UNREACHABLE = 4


class CliError(Exception):
    """A failure to report in one line, exiting with *exit_code*."""

    def __init__(self, message: str, exit_code: int = EXIT_DOMAIN) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Backend(Protocol):
    """The operations every CLI command is built from (JSON views in, JSON views out)."""

    def start_test(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Start an A/B test from :class:`~mlops_otel.ABTestConfig` fields."""

    def list_tests(self) -> list[dict[str, Any]]:
        """Every A/B test, oldest first."""

    def get_test(self, name: str) -> dict[str, Any]:
        """One A/B test."""

    def evaluate_test(self, name: str) -> dict[str, Any]:
        """Evaluate an A/B test now."""

    def rollout_status(self, name: str) -> dict[str, Any]:
        """The progressive rollout of an A/B test (read only)."""

    def rollout_check(self, name: str) -> dict[str, Any]:
        """Judge a rollout's current step now and act on it."""

    def finalize_test(self, name: str, action: str, reason: str | None) -> dict[str, Any]:
        """Finalize an A/B test with ``promote`` or ``rollback``."""

    def abort_test(self, name: str, reason: str | None) -> dict[str, Any]:
        """Abort an A/B test."""

    def model_types(self) -> list[dict[str, Any]]:
        """Every model type with its champion and challenger."""

    def list_versions(self, model_type: str) -> list[dict[str, Any]]:
        """Every version of a model type."""

    def register(self, model_type: str, version: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """Register a version."""

    def promote(self, model_type: str, version: str, reason: str) -> dict[str, Any]:
        """Make a version champion."""

    def rollback(self, model_type: str, reason: str) -> dict[str, Any]:
        """Restore the previous champion."""

    def history(self, model_type: str) -> list[dict[str, Any]]:
        """A model type's role history."""

    def drift_reports(self) -> list[dict[str, Any]]:
        """One report per drift detector."""

    def close(self) -> None:
        """Release connections (and deliver pending writes)."""


def redact(url: str) -> str:
    """*url* without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    except ValueError:
        return "<unparsable url>"


class StoreBackend:
    """Runs commands in this process on a :class:`~mlops_otel.Runtime` over the store at a URL."""

    def __init__(self, url: str, *, prefix: str = "mlops") -> None:
        # Imported here: the cores pull in numpy and scipy, which --api and --help never need.
        from .._runtime import Runtime
        from .._views import Operations

        self.url = url
        try:
            # No fleet metrics: a one-shot command exports nothing.
            self.runtime: Runtime = Runtime.create(store=url, store_prefix=prefix, fleet_metrics=False)
        except ImportError as exc:
            raise CliError(f"cannot open store {redact(url)}: {exc}", EXIT_UNREACHABLE) from exc
        except ValueError as exc:
            raise CliError(f"cannot open store: {exc}", EXIT_USAGE) from exc
        self._ops = Operations(self.runtime, discover_drift=True)

    def _call(self, operation: Callable[..., T], *args: Any) -> T:
        from .._views import ManagementError

        try:
            return operation(*args)
        except ManagementError as exc:
            raise self._error(exc) from exc
        except StoreError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: StoreError) -> CliError:
        cause = exc.cause if exc.cause is not None else exc
        return CliError(f"cannot use the state store at {redact(self.url)}: {cause}", EXIT_UNREACHABLE)

    def _error(self, exc: ManagementError) -> CliError:
        if exc.kind == "unavailable":
            cause = exc.__cause__
            if isinstance(cause, StoreError):
                return self._unreachable(cause)
            return CliError(exc.message, EXIT_UNREACHABLE)
        return CliError(exc.message, EXIT_DOMAIN)

    def start_test(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Start an A/B test."""
        return self._call(self._ops.start_test, config)

    def list_tests(self) -> list[dict[str, Any]]:
        """Every A/B test."""
        return self._call(self._ops.list_tests)

    def get_test(self, name: str) -> dict[str, Any]:
        """One A/B test."""
        return self._call(self._ops.get_test, name)

    def evaluate_test(self, name: str) -> dict[str, Any]:
        """Evaluate an A/B test."""
        return self._call(self._ops.evaluate_test, name)

    def rollout_status(self, name: str) -> dict[str, Any]:
        """The rollout of an A/B test."""
        return self._call(self._ops.rollout_status, name)

    def rollout_check(self, name: str) -> dict[str, Any]:
        """Check a rollout now."""
        return self._call(self._ops.rollout_check, name)

    def finalize_test(self, name: str, action: str, reason: str | None) -> dict[str, Any]:
        """Finalize an A/B test."""
        return self._call(self._ops.finalize_test, name, action, reason)

    def abort_test(self, name: str, reason: str | None) -> dict[str, Any]:
        """Abort an A/B test."""
        return self._call(self._ops.abort_test, name, reason)

    def model_types(self) -> list[dict[str, Any]]:
        """Every model type."""
        return self._call(self._ops.model_types)

    def list_versions(self, model_type: str) -> list[dict[str, Any]]:
        """Every version of a model type."""
        return self._call(self._ops.list_versions, model_type)

    def register(self, model_type: str, version: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """Register a version."""
        return self._call(self._ops.register, model_type, version, metadata)

    def promote(self, model_type: str, version: str, reason: str) -> dict[str, Any]:
        """Make a version champion."""
        return self._call(self._ops.promote, model_type, version, reason)

    def rollback(self, model_type: str, reason: str) -> dict[str, Any]:
        """Restore the previous champion."""
        return self._call(self._ops.rollback, model_type, reason)

    def history(self, model_type: str) -> list[dict[str, Any]]:
        """A model type's role history."""
        return self._call(self._ops.history, model_type)

    def drift_reports(self) -> list[dict[str, Any]]:
        """One report per drift detector."""
        return self._call(self._ops.drift_reports)

    def close(self) -> None:
        """Publish this command's counters to the fleet view (#11), deliver pending writes, close the store."""
        runtime = self.runtime
        if runtime.store.kind != "memory" and any(
                f.spec.kind is not MetricKind.GAUGE and f.series for f in runtime.telemetry.snapshot()):
            # A decision taken here (promote, finalize, evaluate) is then exported by every
            # service sharing the store, so the alerts on it can fire. Counters only: a
            # one-shot command's gauges would be stale at once.
            FleetMetrics(runtime.store, runtime.telemetry).publish(gauges=False)
        try:
            self.runtime.close()
        except StoreError as exc:  # pragma: no cover - close flushes best-effort
            raise self._unreachable(exc) from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors (and the API's own 422s)
        return "; ".join(_validation_message(item) for item in detail)
    return str(detail) if detail is not None else str(body)


def _validation_message(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    msg = str(item.get("msg", item))
    loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "path", "query")]
    field = ".".join(loc)
    return msg if not field or msg.startswith(field) else f"{field}: {msg}"


@attrs.define
class HttpBackend:
    """Runs commands through the management API of a running service (httpx)."""

    base_url: str
    token: str | None = None
    timeout: float = 30.0
    _client: httpx.Client = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise CliError("--api needs httpx: pip install 'mlops-otel[cli]'", EXIT_USAGE) from exc
        if not self.base_url.startswith(("http://", "https://")):
            raise CliError(f"--api must be an http:// or https:// URL, got {self.base_url!r}", EXIT_USAGE)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._client = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        url = f"{self.base_url.rstrip('/')}{path}"
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise CliError(f"the management API at {self.base_url} did not answer in {self.timeout:g}s "
                           f"({type(exc).__name__})", EXIT_UNREACHABLE) from exc
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the management API at {self.base_url}: {exc}",
                           EXIT_UNREACHABLE) from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError as exc:
                raise CliError(f"{method} {url} answered {response.status_code} with a body that is not JSON; "
                               "is --api the management API's base URL?", EXIT_UNREACHABLE) from exc
        detail = _detail(response)
        code = response.status_code
        if code == 401:
            raise CliError(f"{detail} (HTTP 401; pass --token or set MLOPS_OTEL_MANAGEMENT_TOKEN)",
                           EXIT_UNREACHABLE)
        if code == 403 or code == 503:
            raise CliError(f"{detail} (HTTP {code})", EXIT_UNREACHABLE)
        if code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            raise CliError(f"{method} {url}: {detail}; is --api the management API's base URL "
                           "(e.g. http://127.0.0.1:8000/mlops)?", EXIT_UNREACHABLE)
        raise CliError(f"{detail} (HTTP {code})" if code >= 500 else detail, EXIT_DOMAIN)

    @staticmethod
    def _seg(value: str) -> str:
        return quote(value, safe="")

    def start_test(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """POST /ab/tests."""
        body = {k: v for k, v in config.items() if v is not None}
        result: dict[str, Any] = self._request("POST", "/ab/tests", body)
        return result

    def list_tests(self) -> list[dict[str, Any]]:
        """GET /ab/tests."""
        result: list[dict[str, Any]] = self._request("GET", "/ab/tests")
        return result

    def get_test(self, name: str) -> dict[str, Any]:
        """GET /ab/tests/{name}."""
        result: dict[str, Any] = self._request("GET", f"/ab/tests/{self._seg(name)}")
        return result

    def evaluate_test(self, name: str) -> dict[str, Any]:
        """POST /ab/tests/{name}/evaluate."""
        result: dict[str, Any] = self._request("POST", f"/ab/tests/{self._seg(name)}/evaluate")
        return result

    def rollout_status(self, name: str) -> dict[str, Any]:
        """GET /ab/tests/{name}/rollout."""
        result: dict[str, Any] = self._request("GET", f"/ab/tests/{self._seg(name)}/rollout")
        return result

    def rollout_check(self, name: str) -> dict[str, Any]:
        """POST /ab/tests/{name}/rollout/check."""
        result: dict[str, Any] = self._request("POST", f"/ab/tests/{self._seg(name)}/rollout/check")
        return result

    def finalize_test(self, name: str, action: str, reason: str | None) -> dict[str, Any]:
        """POST /ab/tests/{name}/finalize."""
        result: dict[str, Any] = self._request("POST", f"/ab/tests/{self._seg(name)}/finalize",
                                               {"action": action, "reason": reason})
        return result

    def abort_test(self, name: str, reason: str | None) -> dict[str, Any]:
        """POST /ab/tests/{name}/abort."""
        result: dict[str, Any] = self._request("POST", f"/ab/tests/{self._seg(name)}/abort", {"reason": reason})
        return result

    def model_types(self) -> list[dict[str, Any]]:
        """GET /registry."""
        result: list[dict[str, Any]] = self._request("GET", "/registry")
        return result

    def list_versions(self, model_type: str) -> list[dict[str, Any]]:
        """GET /registry/{model_type}/versions."""
        result: list[dict[str, Any]] = self._request("GET", f"/registry/{self._seg(model_type)}/versions")
        return result

    def register(self, model_type: str, version: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """POST /registry/{model_type}/versions."""
        body = {"version": version, "metadata": None if metadata is None else dict(metadata)}
        result: dict[str, Any] = self._request("POST", f"/registry/{self._seg(model_type)}/versions", body)
        return result

    def promote(self, model_type: str, version: str, reason: str) -> dict[str, Any]:
        """POST /registry/{model_type}/promote."""
        result: dict[str, Any] = self._request("POST", f"/registry/{self._seg(model_type)}/promote",
                                               {"version": version, "reason": reason})
        return result

    def rollback(self, model_type: str, reason: str) -> dict[str, Any]:
        """POST /registry/{model_type}/rollback."""
        result: dict[str, Any] = self._request("POST", f"/registry/{self._seg(model_type)}/rollback",
                                               {"reason": reason})
        return result

    def history(self, model_type: str) -> list[dict[str, Any]]:
        """GET /registry/{model_type}/history."""
        result: list[dict[str, Any]] = self._request("GET", f"/registry/{self._seg(model_type)}/history")
        return result

    def drift_reports(self) -> list[dict[str, Any]]:
        """GET /drift."""
        result: list[dict[str, Any]] = self._request("GET", "/drift")
        return result

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
