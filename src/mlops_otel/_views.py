"""The JSON surface shared by the management API and the CLI.

One *view* function per core object turns it into a plain JSON dict (finite
floats or ``None``, no NaN or infinity, which JSON cannot carry). The
management API's response bodies and ``mlops-otel --json`` print exactly these
shapes.

:class:`Operations` runs the management operations on a :class:`Runtime` and
returns views. Both the management API and the CLI's store backend call it, so
a command means the same thing whether it goes through a service or straight
to the store; domain failures come out as one :class:`ManagementError` whose
``kind`` the API maps to an HTTP status and the CLI to an exit code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

from .ab import (
    ABTest,
    ABTestConfig,
    ABTestNotFoundError,
    ABTestState,
    ABTestStateError,
    Evaluation,
    RolloutCheck,
    RolloutManager,
    RolloutState,
)
from .drift import detector_key, parse_detector_key
from .registry import InvalidValueError, ModelVersion, RegistryConflictError, RoleChange, UnknownVersionError
from .stores import StoreError

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .drift import DriftDetector, DriftReport

__all__ = [
    "ErrorKind",
    "ManagementError",
    "Operations",
    "ab_test_view",
    "drift_report_view",
    "evaluation_view",
    "json_safe",
    "model_type_view",
    "model_version_view",
    "role_change_view",
    "rollout_view",
]

T = TypeVar("T")

ErrorKind = Literal["invalid", "not_found", "conflict", "unavailable"]

#: Store-key prefix of the drift detectors' shared windows (``drift:{<model_type>:<version>}:...``).
_DRIFT_KEYS = "drift:{"


def json_safe(value: Any) -> Any:
    """Return *value* with every non-finite float replaced by ``None`` (recursively), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def _safe(body: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json_safe(body)
    return result


# ---------------------------------------------------------------------- views
def model_version_view(version: ModelVersion) -> dict[str, Any]:
    """A registered model version: role, metadata and running metrics."""
    metrics = version.metrics()
    return _safe({
        "model_type": version.model_type,
        "version": version.version,
        "role": version.role.value,
        "created_at": version.created_at,
        "metadata": dict(version.metadata),
        "metrics": {**metrics, "count": version.count},
    })


def role_change_view(change: RoleChange) -> dict[str, Any]:
    """One entry of a model type's role history."""
    return {
        "time": change.time,
        "model_type": change.model_type,
        "action": change.action,
        "version": change.version,
        "previous_champion": change.previous_champion,
        "reason": change.reason,
    }


def model_type_view(model_type: str, versions: list[ModelVersion]) -> dict[str, Any]:
    """A model type: its champion, challenger and number of registered versions."""
    champion = next((v.version for v in versions if v.role == "champion"), None)
    challenger = next((v.version for v in versions if v.role == "challenger"), None)
    return {"model_type": model_type, "champion": champion, "challenger": challenger, "versions": len(versions)}


def ab_test_view(test: ABTest) -> dict[str, Any]:
    """An A/B test: its state and schedule, with its full configuration under ``config``."""
    return _safe({
        "name": test.name,
        "state": test.state.value,
        "started_at": test.started_at,
        "ends_at": test.ends_at,
        "finished_at": test.finished_at,
        "outcome": test.outcome,
        "reason": test.reason,
        "config": test.config.to_dict(),
    })


def evaluation_view(evaluation: Evaluation) -> dict[str, Any]:
    """An A/B evaluation: decision, recommendation, sample counts and per-metric effects."""
    return _safe(evaluation.to_dict())


def rollout_view(state: RolloutState, check: RolloutCheck | None = None) -> dict[str, Any]:
    """A progressive rollout: status, current step and share, schedule, step history and the step's verdict.

    ``verdict`` is the current step judged on the results since it began (``null`` when
    *check* is ``None`` or the test had ended); ``changed`` is the step change that
    *check* made (``advance``, ``rollback``, ``handover``, ``promote``) or ``null``.
    """
    return _safe({
        "test": state.test,
        "status": state.status.value,
        "step": state.step,
        "steps": len(state.schedule.steps),
        "traffic_pct": state.traffic_pct,
        "step_started_at": state.step_started_at,
        "reason": state.reason,
        "schedule": state.schedule.to_dict(),
        "history": [dict(h) for h in state.history],
        "verdict": None if check is None or check.verdict is None else check.verdict.to_dict(),
        "changed": None if check is None else check.changed,
        "roles_moved": False if check is None else check.roles_moved,
    })


def drift_report_view(report: DriftReport) -> dict[str, Any]:
    """A drift report with its detector ``key`` (``"<model_type>:<version>"``) and every key of its ``to_dict``.

    That includes the seed's ``current_drift_score``, ``alert_triggered`` and
    ``recommendation``.
    """
    return _safe({"key": f"{report.model_type}:{report.version}", **report.to_dict()})


# ----------------------------------------------------------------- operations
class ManagementError(Exception):
    """A management operation failed for a reason the caller can act on.

    *kind* is ``invalid`` (bad input: HTTP 422), ``not_found`` (404),
    ``conflict`` (the state forbids it: 409) or ``unavailable`` (the state
    store failed: 503). *field* names the offending input when there is one.
    """

    def __init__(self, kind: ErrorKind, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.field = field
        self.value = value


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except StoreError as exc:
        raise ManagementError("unavailable", f"the state store is unavailable: {exc}") from exc
    except RegistryConflictError as exc:
        raise ManagementError("conflict", str(exc)) from exc


def _invalid(exc: InvalidValueError) -> ManagementError:
    return ManagementError("invalid", str(exc), field=exc.field, value=exc.value)


_FINISHED = (ABTestState.PROMOTED, ABTestState.ROLLED_BACK, ABTestState.ABORTED)


@attrs.define(eq=False)
class Operations:
    """The management operations on one :class:`~mlops_otel.Runtime`, returning JSON views.

    Raises :class:`ManagementError` for anything the caller did wrong or
    that the current state forbids; the runtime's cores do the work.

    *discover_drift* also reports the detectors that exist only in the store
    (their windows were written by other processes), creating them on this
    runtime's monitor with its default settings. The CLI's store backend
    turns it on: a one-shot process has no detectors of its own. A service
    leaves it off, so its own detectors keep the settings it gave them.
    """

    runtime: Runtime
    discover_drift: bool = attrs.field(default=False, kw_only=True)

    def _run(self, call: Callable[[], T]) -> T:
        with _store_errors():
            try:
                return call()
            except ABTestNotFoundError as exc:
                raise ManagementError("not_found", str(exc), field="name", value=exc.name) from exc
            except UnknownVersionError as exc:
                raise ManagementError("not_found", str(exc), field="version", value=exc.version) from exc
            except ABTestStateError as exc:
                raise ManagementError("conflict", str(exc)) from exc
            except InvalidValueError as exc:
                raise _invalid(exc) from exc

    # ------------------------------------------------------------- A/B tests
    def start_test(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Start the test described by *config* (the :class:`ABTestConfig` fields)."""
        fields = {a.name for a in attrs.fields(ABTestConfig) if a.init}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ManagementError("invalid", f"{unknown[0]} is not an A/B test setting; expected one of "
                                  f"{', '.join(sorted(fields))}", field=unknown[0])
        options = {k: v for k, v in config.items() if v is not None}
        missing = sorted(f for f in ("name", "model_type", "control_version", "treatment_version")
                         if f not in options)
        if missing:
            raise ManagementError("invalid", f"{missing[0]} must be given", field=missing[0])
        ab = self.runtime.ab
        try:
            cfg = ABTestConfig(**options)
        except InvalidValueError as exc:
            raise _invalid(exc) from exc
        except TypeError as exc:  # e.g. an unknown guardrail name
            raise ManagementError("invalid", f"guardrails must name only max_error_rate_increase, "
                                  f"max_latency_increase_pct and max_confidence_decrease ({exc})",
                                  field="guardrails", value=options.get("guardrails")) from exc

        def start() -> ABTest:
            try:
                return ab.start_test(cfg)
            except InvalidValueError as exc:
                if exc.field == "name" and self._test_exists(cfg.name):
                    raise ManagementError("conflict", f"an A/B test named {cfg.name!r} already exists; "
                                          "choose another name", field="name", value=cfg.name) from exc
                raise

        return ab_test_view(self._run(start))

    def _test_exists(self, name: str) -> bool:
        try:
            self.runtime.ab.get_test(name)
        except ABTestNotFoundError:
            return False
        return True

    def list_tests(self) -> list[dict[str, Any]]:
        """Every test started on the store, oldest first."""
        return [ab_test_view(t) for t in self._run(self.runtime.ab.list_tests)]

    def get_test(self, name: str) -> dict[str, Any]:
        """The test *name*."""
        return ab_test_view(self._run(lambda: self.runtime.ab.get_test(name)))

    def evaluate_test(self, name: str) -> dict[str, Any]:
        """Evaluate the test *name* now (acting on it when the test auto-finalizes).

        A test run by a progressive rollout is judged step-aware instead (read only): on the results
        of its current step, at that step's one split, so the ramp never reads as a sample-ratio
        mismatch. Step changes are made by ``rollout_check`` (or the scheduled evaluator).
        """
        def run() -> Evaluation:
            rollouts = self._rollouts()
            if rollouts.exists(name):
                verdict = rollouts.judge(name).verdict
                if verdict is not None:
                    return verdict.evaluation
            return self.runtime.ab.evaluate_test(name)

        return evaluation_view(self._run(run))

    # -------------------------------------------------------------- rollouts
    def _rollouts(self, name: str | None = None) -> RolloutManager:
        """The rollout owner; with *name*, first require that test *name* has a rollout (404 otherwise)."""
        rollouts = RolloutManager(self.runtime.ab, telemetry=self.runtime.telemetry)
        if name is not None and not rollouts.exists(name):
            self.runtime.ab.get_test(name)  # an unknown test: not found, by name
            raise ManagementError("not_found", f"A/B test {name!r} has no progressive rollout",
                                  field="name", value=name)
        return rollouts

    def rollout_status(self, name: str) -> dict[str, Any]:
        """The rollout of test *name*: its stored state and the current step's verdict (read only)."""
        def status() -> dict[str, Any]:
            rollouts = self._rollouts(name)
            state = rollouts.get(name)
            return rollout_view(state, rollouts.judge(name))

        return self._run(status)

    def rollout_check(self, name: str) -> dict[str, Any]:
        """Judge the rollout's current step and act (advance, hand over, promote or roll back; at most once)."""
        def check() -> dict[str, Any]:
            rollouts = self._rollouts(name)
            done = rollouts.check(name)
            return rollout_view(rollouts.get(name), done)

        return self._run(check)

    def _require_open(self, name: str, verb: str) -> None:
        test = self.runtime.ab.get_test(name)
        if test.state in _FINISHED:
            raise ManagementError("conflict", f"A/B test {name!r} is already {test.state.value} ({test.reason}); "
                                  f"cannot {verb} it", field="name", value=name)

    def finalize_test(self, name: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """Finish the test *name* with ``promote`` or ``rollback``; ``changed`` says whether this call did it."""
        if action not in ("promote", "rollback"):
            raise ManagementError("invalid", f"action must be 'promote' or 'rollback', got {action!r}",
                                  field="action", value=action)
        ab = self.runtime.ab

        def finalize() -> dict[str, Any]:
            self._require_open(name, action)
            changed = ab.finalize_test(name, action, reason=reason or None)
            return {"changed": changed, "test": ab_test_view(ab.get_test(name))}

        return self._run(finalize)

    def abort_test(self, name: str, reason: str | None = None) -> dict[str, Any]:
        """Stop the test *name* without changing the champion."""
        ab = self.runtime.ab

        def abort() -> dict[str, Any]:
            self._require_open(name, "abort")
            changed = ab.abort_test(name, reason=reason or "aborted")
            return {"changed": changed, "test": ab_test_view(ab.get_test(name))}

        return self._run(abort)

    # -------------------------------------------------------------- registry
    def _versions(self, model_type: str) -> list[ModelVersion]:
        versions = self.runtime.registry.list_versions(model_type)
        if not versions:
            raise ManagementError("not_found", f"model type {model_type!r} has no registered versions",
                                  field="model_type", value=model_type)
        return versions

    def model_types(self) -> list[dict[str, Any]]:
        """Every model type with its champion, challenger and version count."""
        registry = self.runtime.registry

        def overview() -> list[dict[str, Any]]:
            return [model_type_view(mt, registry.list_versions(mt)) for mt in registry.model_types()]

        return self._run(overview)

    def list_versions(self, model_type: str) -> list[dict[str, Any]]:
        """Every version of *model_type*, oldest first."""
        return [model_version_view(v) for v in self._run(lambda: self._versions(model_type))]

    def register(self, model_type: str, version: str, metadata: Mapping[str, Any] | None = None,
                 ) -> dict[str, Any]:
        """Register *version* of *model_type* (the first version becomes champion)."""
        registry = self.runtime.registry

        def register() -> ModelVersion:
            try:
                return registry.register(model_type, version, metadata=metadata)
            except InvalidValueError as exc:
                if exc.field == "version" and self._registered(model_type, version):
                    raise ManagementError("conflict", f"version {version!r} of model type {model_type!r} "
                                          "is already registered", field="version", value=version) from exc
                raise

        return model_version_view(self._run(register))

    def _registered(self, model_type: str, version: str) -> bool:
        try:
            self.runtime.registry.get(model_type, version)
        except (UnknownVersionError, InvalidValueError):
            return False
        return True

    def promote(self, model_type: str, version: str, reason: str) -> dict[str, Any]:
        """Make *version* the champion of *model_type*."""
        registry = self.runtime.registry

        def promote() -> dict[str, Any]:
            try:
                changed = registry.promote(model_type, version, reason=reason)
            except InvalidValueError as exc:
                if exc.field == "version" and self._registered(model_type, version):
                    raise ManagementError("conflict", f"version {version!r} of model type {model_type!r} "
                                          "is archived and cannot be promoted", field="version",
                                          value=version) from exc
                raise
            champion = registry.get_champion(model_type)
            assert champion is not None  # promote leaves a champion
            return {"changed": changed, "champion": model_version_view(champion)}

        return self._run(promote)

    def rollback(self, model_type: str, reason: str) -> dict[str, Any]:
        """Restore the previous champion of *model_type*."""
        registry = self.runtime.registry

        def rollback() -> dict[str, Any]:
            self._versions(model_type)
            try:
                champion = registry.rollback(model_type, reason=reason)
            except InvalidValueError as exc:
                if exc.field == "model_type":
                    raise ManagementError("conflict", f"model type {model_type!r} has no previous champion to "
                                          "roll back to", field="model_type", value=model_type) from exc
                raise
            return {"changed": True, "champion": model_version_view(champion)}

        return self._run(rollback)

    def history(self, model_type: str) -> list[dict[str, Any]]:
        """Every role change of *model_type*, oldest first."""
        registry = self.runtime.registry

        def history() -> list[RoleChange]:
            self._versions(model_type)
            return registry.history(model_type)

        return [role_change_view(c) for c in self._run(history)]

    # ----------------------------------------------------------------- drift
    def _detectors(self) -> dict[str, DriftDetector]:
        monitor = self.runtime.drift
        detectors = dict(monitor.detectors())
        if self.discover_drift:
            head = len(_DRIFT_KEYS)
            groups = {k[head:k.index("}", head)] for k in self.runtime.store.list_keys(_DRIFT_KEYS) if "}" in k[head:]}
            for group in sorted(groups - set(detectors)):
                names = parse_detector_key(group)
                if names is not None:
                    detectors[group] = monitor.get_detector(*names)
        return detectors

    def drift_reports(self) -> list[dict[str, Any]]:
        """One report per drift detector, sorted by key."""

        def reports() -> list[dict[str, Any]]:
            detectors = self._detectors()
            return [drift_report_view(detectors[key].get_drift_report()) for key in sorted(detectors)]

        return self._run(reports)

    def drift_report(self, model_type: str, version: str) -> dict[str, Any]:
        """The report of the detector of *version* of *model_type*."""
        key = detector_key(model_type, version)

        def report() -> dict[str, Any]:
            detector = self._detectors().get(key)
            if detector is None:
                raise ManagementError("not_found", f"no drift detector for version {version!r} of model type "
                                      f"{model_type!r}", field="version", value=version)
            return drift_report_view(detector.get_drift_report())

        return self._run(report)
