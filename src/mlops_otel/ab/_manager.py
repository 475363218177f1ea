"""The A/B test owner: start, assign, record, evaluate, finalize, shared through a store."""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypedDict, cast

import attrs

from .. import semconv
from ..registry import ModelRegistry, SufficientStats, UnknownVersionError
from ..stores import CounterBuffer, JSONValue, StateStore, make_key
from ..telemetry import Telemetry, default_telemetry
from ..validation import InvalidValueError, check_result
from ._assign import Variant, assign
from ._config import ABTestConfig, InvalidConfigError
from ._evaluate import Decision, Evaluation, evaluate

__all__ = [
    "ABTest",
    "ABTestManager",
    "ABTestNotFoundError",
    "ABTestState",
    "ABTestStateError",
    "Assignment",
]

log = logging.getLogger("mlops_otel.ab")

NAMESPACE = "ab"
_TREATMENT_NAME: str = Variant.TREATMENT.value
_CONTROL_NAME: str = Variant.CONTROL.value
MODEL_NAMESPACE = "ab.model"
#: The ``name`` of an assignment outside any test.
CHAMPION = "champion"
_MAX_ATTEMPTS = 64
#: A model-type claim whose test document never appeared is considered abandoned after this long.
_CLAIM_TIMEOUT = 60.0
_MAX_CACHED_TESTS = 4096


class ABTestState(enum.StrEnum):
    """Life cycle of a test: active -> finalizing -> promoted | rolled_back, or active -> aborted."""

    ACTIVE = "active"
    FINALIZING = "finalizing"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


_FINAL = {Decision.PROMOTE: ABTestState.PROMOTED, Decision.ROLLBACK: ABTestState.ROLLED_BACK}


class ABTestNotFoundError(LookupError):
    """No test of that name was ever started."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no A/B test named {name!r}")


class ABTestStateError(RuntimeError):
    """The operation conflicts with the state of a test (or of its model type)."""

    def __init__(self, name: str, state: str, message: str) -> None:
        self.name = name
        self.state = state
        super().__init__(message)


class Assignment(TypedDict):
    """What :meth:`ABTestManager.assign_variant` returns (a plain dict, like the seed's)."""

    name: str
    version: str | None
    test: str | None


@attrs.frozen
class ABTest:
    """A test as stored: its configuration, state and schedule."""

    config: ABTestConfig
    state: ABTestState
    started_at: float
    ends_at: float
    finished_at: float | None = None
    #: ``"promote"`` or ``"rollback"`` once finalizing starts.
    outcome: str | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        """The test's name."""
        return self.config.name

    def to_doc(self) -> dict[str, JSONValue]:
        """The stored JSON document."""
        return {"config": self.config.to_dict(), "state": self.state.value, "started_at": self.started_at,
                "ends_at": self.ends_at, "finished_at": self.finished_at, "outcome": self.outcome,
                "reason": self.reason}

    @classmethod
    def from_doc(cls, doc: Any) -> ABTest:
        """Parse a stored document."""
        return cls(ABTestConfig.from_dict(doc["config"]), ABTestState(doc["state"]), float(doc["started_at"]),
                   float(doc["ends_at"]), doc.get("finished_at"), doc.get("outcome"), doc.get("reason"))


@attrs.frozen
class _ModelView:
    """What one process believes about a model type, and when it last checked."""

    test: ABTest | None
    champion: str | None
    fetched_at: float


@attrs.frozen
class _TestView:
    test: ABTest | None
    fetched_at: float


def _check_action(action: object) -> Decision:
    if action not in (Decision.PROMOTE, Decision.ROLLBACK):
        raise InvalidValueError("action", "'promote' or 'rollback'", action)
    return Decision(cast(str, action))


@attrs.define(eq=False)
class ABTestManager:
    """Runs A/B tests between model versions of a :class:`ModelRegistry`, shared through a store.

    ``assign_variant`` and ``record_result`` are the request path: the first
    reads a per-process view of the active tests refreshed from the store at
    most every *refresh_interval* seconds (so tests started by other workers
    are seen within that time), the second adds to counters the store buffers
    (write-behind). Neither raises. ``evaluate_test`` flushes this process's
    pending results first, so it sees everything recorded here before the call.
    ``finalize_test`` moves the registry roles exactly once however many
    workers call it at the same time (compare-and-set on the test document,
    idempotency key on the registry change).
    """

    store: StateStore
    registry: ModelRegistry
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    refresh_interval: float = attrs.field(default=5.0, kw_only=True)

    #: Tests this process last saw active, by name (kept under the seed's attribute name).
    _active_tests: dict[str, ABTestConfig] = attrs.field(factory=dict, init=False, repr=False)
    _models: dict[str, _ModelView] = attrs.field(factory=dict, init=False, repr=False)
    _tests: dict[str, _TestView] = attrs.field(factory=dict, init=False, repr=False)
    _stats_keys: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False, repr=False)
    _buffer: CounterBuffer = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if (not isinstance(self.refresh_interval, (int, float)) or isinstance(self.refresh_interval, bool)
                or not 0 <= self.refresh_interval < float("inf")):
            raise InvalidValueError("refresh_interval", "a finite number of seconds >= 0", self.refresh_interval)
        self._buffer = CounterBuffer(self.store, SufficientStats.FIELDS,
                                     on_fault=lambda exc: self._tel.fault("ab.record_result", exc))

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver the results this process buffered to the store and on to its backend.

        Returns whether nothing remains pending (see :meth:`StateStore.flush`).
        Reads in this class flush first; call it before a worker exits without
        :meth:`close`, so other workers see its last results.
        """
        return self._buffer.deliver(timeout)

    @property
    def _tel(self) -> Telemetry:
        return self.telemetry if self.telemetry is not None else default_telemetry()

    # ------------------------------------------------------------------ keys
    @staticmethod
    def _test_key(name: str) -> str:
        return make_key(NAMESPACE, name, "test")

    @staticmethod
    def _slot_key(model_type: str) -> str:
        return make_key(MODEL_NAMESPACE, model_type, "active")

    def _stats_key(self, name: str, variant: str) -> str:
        key = self._stats_keys.get((name, variant))
        if key is None:
            key = self._stats_keys[(name, variant)] = make_key(NAMESPACE, name, "stats", variant)
        return key

    # ----------------------------------------------------------------- reads
    def _load(self, name: str) -> ABTest | None:
        found = self.store.get_document(self._test_key(name))
        test = None if found is None else ABTest.from_doc(found.value)
        self._remember(name, test)
        return test

    def _remember(self, name: str, test: ABTest | None) -> None:
        if len(self._tests) >= _MAX_CACHED_TESTS:  # e.g. callers passing many wrong test names
            self._tests.clear()
        self._tests[name] = _TestView(test, self.clock())
        if test is not None and test.state is ABTestState.ACTIVE:
            self._active_tests[name] = test.config
        else:
            self._active_tests.pop(name, None)

    def get_test(self, name: str) -> ABTest:
        """Return the test *name* as stored now (raises :class:`ABTestNotFoundError`)."""
        test = self._load(name)
        if test is None:
            raise ABTestNotFoundError(name)
        return test

    def list_tests(self) -> list[ABTest]:
        """Every test ever started on this store, oldest first."""
        prefix = NAMESPACE + ":{"
        names = [k[len(prefix):k.index("}", len(prefix))] for k in self.store.list_keys(prefix)
                 if k.endswith("}:test")]
        tests = [t for t in (self._load(n) for n in names) if t is not None]
        return sorted(tests, key=lambda t: (t.started_at, t.name))

    def active_test(self, model_type: str) -> ABTest | None:
        """The running test of *model_type* as this process sees it (refreshed lazily)."""
        view = self._model_view(model_type, self.clock())
        return view.test

    # ------------------------------------------------------------ life cycle
    def start_test(self, config: ABTestConfig) -> ABTest:
        """Start *config*; its treatment becomes the registry's challenger.

        Raises :class:`InvalidConfigError` when a version is not registered (or
        archived) or the name was used before, and :class:`ABTestStateError`
        when the model type already has an active test.
        """
        if not isinstance(config, ABTestConfig):
            raise InvalidConfigError("config", "an ABTestConfig", config)
        mt = config.model_type
        for field in ("control_version", "treatment_version"):
            version = getattr(config, field)
            try:
                found = self.registry.get(mt, version)
            except UnknownVersionError as exc:
                known = ", ".join(exc.registered) or "none"
                raise InvalidConfigError(
                    field, f"a version registered for model type {mt!r} (registered: {known})", version,
                ) from None
            if found.role == "archived":
                raise InvalidConfigError(field, f"a version of {mt!r} that is not archived", version)
            if field == "treatment_version" and found.role == "champion":
                raise InvalidConfigError(field, f"a version that is not already the champion of {mt!r}", version)
        if self.store.get_document(self._test_key(config.name)) is not None:
            raise InvalidConfigError("name", "a test name not used before on this store", config.name)

        self._claim_slot(config)
        now = self.clock()
        test = ABTest(config, ABTestState.ACTIVE, now, now + config.duration_seconds)
        if not self.store.compare_and_set(self._test_key(config.name), test.to_doc(), expected_version=0):
            self._release_slot(mt, config.name)
            raise InvalidConfigError("name", "a test name not used before on this store", config.name)
        self.registry.set_challenger(mt, config.treatment_version, reason=f"A/B test {config.name!r} started",
                                     idempotency_key=f"ab:{config.name}:start")
        self._remember(config.name, test)
        self._models[mt] = _ModelView(test, self.registry.champion_version(mt), now)
        log.info("started A/B test %s: %s %s vs %s at %s%% treatment", config.name, mt,
                 config.control_version, config.treatment_version, config.treatment_traffic_pct)
        return test

    def _claim_slot(self, config: ABTestConfig) -> None:
        key = self._slot_key(config.model_type)
        for _ in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            slot = {} if found is None else cast(dict[str, Any], found.value)
            holder = slot.get("test")
            if holder is not None:
                current = self._load(holder)
                if current is None and self.clock() - float(slot.get("claimed_at", 0.0)) < _CLAIM_TIMEOUT:
                    # Claimed a moment ago by a start_test that has not written its test yet.
                    raise ABTestStateError(holder, "starting",
                                           f"model type {config.model_type!r} is starting A/B test {holder!r}")
                ended = current is not None and current.state is ABTestState.ACTIVE and self.clock() >= current.ends_at
                if current is not None and not ended and current.state in (ABTestState.ACTIVE,
                                                                           ABTestState.FINALIZING):
                    raise ABTestStateError(
                        holder, current.state.value,
                        f"model type {config.model_type!r} already has an active A/B test {holder!r}; "
                        "finalize or abort it first",
                    )
            expected = 0 if found is None else found.version
            claim: dict[str, JSONValue] = {"test": config.name, "claimed_at": self.clock()}
            if self.store.compare_and_set(key, claim, expected_version=expected):
                return
        raise ABTestStateError(config.name, "starting", f"could not claim model type {config.model_type!r}: "
                               "its slot kept changing")

    def _release_slot(self, model_type: str, name: str) -> None:
        key = self._slot_key(model_type)
        for _ in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            if found is None or cast(dict[str, Any], found.value).get("test") != name:
                return
            if self.store.compare_and_set(key, {"test": None}, expected_version=found.version):
                return

    def _transition(self, name: str, step: Callable[[ABTest], ABTest | None]) -> tuple[ABTest, bool]:
        """Compare-and-set the test document through *step*; returns (test afterwards, whether we wrote)."""
        key = self._test_key(name)
        for attempt in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            if found is None:
                raise ABTestNotFoundError(name)
            current = ABTest.from_doc(found.value)
            updated = step(current)
            if updated is None:
                return current, False
            if self.store.compare_and_set(key, updated.to_doc(), expected_version=found.version):
                return updated, True
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise ABTestStateError(name, "unknown", f"A/B test {name!r} kept changing; gave up")

    def finalize_test(self, name: str, action: str, *, reason: str | None = None) -> bool:
        """Finish test *name*: ``"promote"`` makes the treatment champion, ``"rollback"`` keeps the control.

        Exactly one of several concurrent callers wins and returns ``True``;
        the others (and later calls with the same action) return ``False``.
        Raises :class:`ABTestStateError` if the test was aborted or finalized
        with the other action.
        """
        decision = _check_action(action)
        why = reason or f"A/B test {name!r} finalized: {decision.value}"
        self.flush()  # a decision path: deliver this process's results before the test closes

        def begin(test: ABTest) -> ABTest | None:
            if test.state is ABTestState.ACTIVE:
                return attrs.evolve(test, state=ABTestState.FINALIZING, finished_at=self.clock(),
                                    outcome=decision.value, reason=why)
            if test.state is ABTestState.ABORTED or test.outcome != decision.value:
                raise ABTestStateError(name, test.state.value,
                                       f"A/B test {name!r} is {test.state.value} ({test.reason}); "
                                       f"cannot {decision.value} it")
            return None

        test, won = self._transition(name, begin)
        if test.state is ABTestState.FINALIZING:
            # The winner, or anyone who finds a finalization left half-done by a crash: the
            # registry change carries an idempotency key, so it happens exactly once.
            self._apply(test, decision, why)
            test, _ = self._transition(name, lambda t: attrs.evolve(t, state=_FINAL[decision])
                                       if t.state is ABTestState.FINALIZING else None)
            self._release_slot(test.config.model_type, name)
        self._forget(test)
        if won:
            log.info("finalized A/B test %s: %s (%s)", name, decision.value, why)
        return won

    def _apply(self, test: ABTest, decision: Decision, reason: str) -> None:
        cfg = test.config
        key = f"ab:{cfg.name}:finalize"
        if decision is Decision.PROMOTE:
            self.registry.promote(cfg.model_type, cfg.treatment_version, reason=reason, idempotency_key=key)
        else:
            self.registry.clear_challenger(cfg.model_type, version=cfg.treatment_version, reason=reason,
                                           idempotency_key=key)

    def _forget(self, test: ABTest) -> None:
        self._remember(test.name, test)
        view = self._models.get(test.config.model_type)
        if view is not None and view.test is not None and view.test.name == test.name:
            self._models.pop(test.config.model_type, None)

    def abort_test(self, name: str, *, reason: str = "aborted") -> bool:
        """Stop test *name* without changing the champion; returns whether this call aborted it."""

        def stop(test: ABTest) -> ABTest | None:
            if test.state is not ABTestState.ACTIVE:
                return None
            return attrs.evolve(test, state=ABTestState.ABORTED, finished_at=self.clock(), reason=reason)

        test, won = self._transition(name, stop)
        if test.state is ABTestState.ABORTED:
            cfg = test.config
            self.registry.clear_challenger(cfg.model_type, version=cfg.treatment_version,
                                           reason=f"A/B test {name!r} aborted: {reason}",
                                           idempotency_key=f"ab:{name}:abort")
            self._release_slot(cfg.model_type, name)
        self._forget(test)
        return won

    # -------------------------------------------------------------- decision
    def results(self, name: str) -> tuple[SufficientStats, SufficientStats]:
        """The (control, treatment) statistics of test *name*, after flushing this process's writes."""
        self.flush()
        return (SufficientStats.from_counters(self.store.read_counters(self._stats_key(name, "control"))),
                SufficientStats.from_counters(self.store.read_counters(self._stats_key(name, "treatment"))))

    def evaluate_test(self, name: str) -> Evaluation:
        """Evaluate test *name* now; with ``auto_finalize`` also act on the decision.

        A test past its ``duration_days`` resolves to promote, rollback or halt.
        """
        test = self.get_test(name)
        control, treatment = self.results(name)
        result = evaluate(control, treatment, test.config, ended=self.clock() >= test.ends_at)
        self._tel.add(semconv.AB_DECISIONS, (name, result.decision.value))
        if test.state is ABTestState.ACTIVE and test.config.auto_finalize:
            try:
                if result.decision in _FINAL:
                    self.finalize_test(name, result.decision, reason=result.recommendation)
                elif result.decision is Decision.HALT:
                    self.abort_test(name, reason=result.recommendation)
            except ABTestStateError as exc:  # another worker finished the test first, differently
                log.warning("A/B test %s: auto-finalize found it already finished: %s", name, exc)
        return result

    # ------------------------------------------------------------- hot paths
    def _model_view(self, model_type: str, now: float) -> _ModelView:
        view = self._models.get(model_type)
        if view is not None and now - view.fetched_at < self.refresh_interval:
            return view
        try:
            champion = self.registry.champion_version(model_type)
            found = self.store.get_document(self._slot_key(model_type))
            holder = None if found is None else cast(dict[str, Any], found.value).get("test")
            test = None if holder is None else self._load(holder)
            if test is not None and test.state is not ABTestState.ACTIVE:
                test = None
            view = _ModelView(test, champion, now)
        except Exception as exc:  # keep serving the last known view; retry after the interval
            self._tel.fault("ab.refresh", exc)
            view = _ModelView(None, None, now) if view is None else attrs.evolve(view, fetched_at=now)
        self._models[model_type] = view
        return view

    def assign_variant(self, model_type: str, user_id: str | None) -> Assignment:
        """Return the variant serving *user_id*: ``{"name", "version", "test"}`` (never raises).

        In a running test: ``"control"`` or ``"treatment"`` with its version
        and the test's name. Outside a test (none running, past its end, or a
        request without a user id): ``{"name": "champion", "version":
        <champion>, "test": None}``; such requests are not part of any test.
        """
        now = self.clock()
        try:
            view = self._model_view(model_type, now)
        except Exception as exc:  # e.g. an unhashable model_type: no test, no champion known
            self._tel.fault("ab.assign", exc)
            return {"name": CHAMPION, "version": None, "test": None}
        test = view.test
        if test is None or now >= test.ends_at:
            return {"name": CHAMPION, "version": view.champion, "test": None}
        cfg = test.config
        if user_id is None or user_id == "":
            self._tel.add(semconv.AB_ASSIGNMENTS, (cfg.name, CHAMPION))
            return {"name": CHAMPION, "version": view.champion or cfg.control_version, "test": None}
        try:
            variant = assign(user_id, cfg)
        except Exception as exc:  # an id whose str() fails: serve the champion
            self._tel.fault("ab.assign", exc)
            return {"name": CHAMPION, "version": view.champion or cfg.control_version, "test": None}
        # Plain strings, not variant.value: Enum attribute access is slow on this hot path.
        if variant is Variant.TREATMENT:
            name, version = _TREATMENT_NAME, cfg.treatment_version
        else:
            name, version = _CONTROL_NAME, cfg.control_version
        self._tel.add(semconv.AB_ASSIGNMENTS, (cfg.name, name))
        return {"name": name, "version": version, "test": cfg.name}

    def _cached_test(self, name: str) -> ABTest | None:
        view = self._tests.get(name)
        if view is not None and self.clock() - view.fetched_at < self.refresh_interval:
            return view.test
        try:
            return self._load(name)
        except Exception as exc:
            self._tel.fault("ab.refresh", exc)
            self._tests[name] = _TestView(None if view is None else view.test, self.clock())
            return None if view is None else view.test

    def record_result(
        self,
        test_name: str,
        variant: str,
        inference_time_ms: float | None,
        confidence: float | None,
        error: bool = False,
    ) -> None:
        """Add one result of *variant* to test *test_name* (hot path: write-behind, never raises).

        Results of the ``"champion"`` variant (requests outside the test) and
        of finished tests are ignored. Unknown tests and variants and invalid
        values are counted in ``mlops_invalid_measurements_total`` under
        ``metric="ab.<field>"``; an invalid latency or confidence is left out
        while the result still counts.
        """
        tel = self._tel
        try:
            test = self._cached_test(test_name) if isinstance(test_name, str) else None
            if test is None:
                tel.invalid("ab.test", test_name)
                return
            if test.state is not ABTestState.ACTIVE:
                return
            if variant != "control" and variant != "treatment":
                if variant != CHAMPION:
                    tel.invalid("ab.variant", variant)
                return
            latency, conf, err, rejected = check_result(inference_time_ms, confidence, error)
            if rejected:
                given = {"inference_time_ms": inference_time_ms, "confidence": confidence, "error": error}
                for field in rejected:
                    tel.invalid("ab." + field, given[field])
            if err is None:
                return
            self._buffer.add(self._stats_key(test_name, variant), SufficientStats.delta_values(latency, conf, err))
            tel.add(semconv.AB_RESULTS, (test_name, variant))
        except Exception as exc:  # the caller's request must never fail because of us
            tel.fault("ab.record_result", exc)

    def close(self) -> None:
        """Deliver buffered results (the store itself is closed by its owner). Idempotent."""
        self._buffer.close()
