"""The A/B test owner: start, assign, record, evaluate, finalize, shared through a store."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, cast

import attrs

from .. import semconv
from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker
from ..registry import ModelRegistry
from ..stores import JSONValue, StateStore, make_key
from ..telemetry import Telemetry, default_telemetry
from ..validation import InvalidValueError, check_result_reporting
from ._assign import Variant, assign
from ._collect import Collector, read_cut, result_sums, result_values
from ._config import ABTestConfig, InvalidConfigError
from ._evaluate import Decision, Evaluation, evaluate
from ._lifecycle import (
    FINAL,
    NAMESPACE,
    ABTest,
    ABTestNotFoundError,
    ABTestState,
    ABTestStateError,
    Lifecycle,
    check_action,
    document_key,
    slot_key,
)
from ._variant import VariantStats

__all__ = [
    "ABTest",
    "ABTestManager",
    "ABTestNotFoundError",
    "ABTestState",
    "ABTestStateError",
    "Assignment",
]

log = logging.getLogger("mlops_otel.ab")

_TREATMENT_NAME: str = Variant.TREATMENT.value
_CONTROL_NAME: str = Variant.CONTROL.value
_TREATMENT = Variant.TREATMENT
_ACTIVE = ABTestState.ACTIVE  # module globals: Enum class attribute access is slow on the hot path
#: The ``name`` of an assignment outside any test.
CHAMPION = "champion"
_MAX_CACHED_TESTS = 4096
#: Evaluations kept per test in the shared history (``evaluation_history``).
HISTORY_LEN = 500
_LEASE_KEY = make_key(NAMESPACE, "_evaluator", "lease")


class Assignment(TypedDict):
    """What :meth:`ABTestManager.assign_variant` returns (a plain dict, like the seed's)."""

    name: str
    version: str | None
    test: str | None


@attrs.frozen
class _ModelView:
    """What one process believes about a model type, and when it last checked."""

    test: ABTest | None
    champion: str | None
    fetched_at: float
    #: When the store last answered for this view (its age is exported).
    loaded_at: float


@attrs.frozen
class _TestView:
    test: ABTest | None
    fetched_at: float


def _background_fault(ref: weakref.ref[ABTestManager]) -> Callable[[str, BaseException], None]:
    """The background round's error hook: count on the manager's telemetry (held weakly)."""
    def on_error(name: str, exc: BaseException) -> None:
        manager = ref()
        (manager._tel if manager is not None else default_telemetry()).fault("ab.sync", exc)
    return on_error


def _invalid_result(ref: weakref.ref[ABTestManager]) -> Callable[[str, object], None]:
    """Count a rejected result value on the manager's telemetry (held weakly: no cycle through the manager)."""
    def report(field: str, value: object) -> None:
        manager = ref()
        (manager._tel if manager is not None else default_telemetry()).invalid("ab." + field, value)
    return report


def _number(name: str, value: object, *, positive: bool = False, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)  # type: ignore[operator]
    if not ok:
        raise InvalidValueError(name, f"a finite number of seconds {'> 0' if positive else '>= 0'}"
                                + (" or None" if optional else ""), value)


def _metric_value(value: object) -> float | None:
    if value is True or value is False:
        return 1.0 if value else 0.0
    if type(value) in (int, float) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        x = float(value)  # type: ignore[arg-type]
        return x if math.isfinite(x) and abs(x) < 1e150 else None
    return None


@attrs.define(eq=False)
class ABTestManager:
    """Runs A/B tests between model versions of a :class:`ModelRegistry`, shared through a store.

    ``assign_variant`` and ``record_result`` are the request path and never
    touch the store: the first serves this process's view of the running
    tests, refreshed in the background every *refresh_interval* seconds
    (stale-while-revalidate: a stale view is served while the refresh runs;
    its age is exported as ``mlops_ab_view_age_seconds``); the second adds to
    this process's sums, which a background thread publishes as watermarked
    snapshots every *sync_interval* seconds (see :mod:`._collect`). Results
    for a test this process has not loaded yet (e.g. started during a store
    outage) are summed too and kept once the test is found (bounded number of
    tests). Neither raises.

    Decisions that can move roles or abort use only the data every live
    worker has delivered (the lowest watermark; workers silent for
    *worker_timeout* seconds count as dead), and report what they left out.
    With *auto_evaluate_interval* one worker at a time (a lease in the store)
    evaluates every active test on that schedule and finalizes those with
    ``auto_finalize``. ``finalize_test`` moves the registry roles exactly once
    however many workers call it at the same time.
    """

    store: StateStore
    registry: ModelRegistry
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    refresh_interval: float = attrs.field(default=5.0, kw_only=True)
    #: How often this worker publishes its results snapshot and heartbeat.
    sync_interval: float = attrs.field(default=1.0, kw_only=True)
    #: A worker whose heartbeat is older than this is dead: its last snapshot is final.
    worker_timeout: float = attrs.field(default=30.0, kw_only=True)
    #: Evaluate active tests on this schedule (seconds; None: only when asked).
    auto_evaluate_interval: float | None = attrs.field(default=None, kw_only=True)
    #: The first request of a process waits at most this long for the first background load.
    warmup_timeout: float = attrs.field(default=1.0, kw_only=True)

    #: Tests this process last saw active, by name (kept under the seed's attribute name).
    _active_tests: dict[str, ABTestConfig] = attrs.field(factory=dict, init=False, repr=False)
    _models: dict[str, _ModelView] = attrs.field(factory=dict, init=False, repr=False)
    _tests: dict[str, _TestView] = attrs.field(factory=dict, init=False, repr=False)
    _wanted: set[str] = attrs.field(factory=set, init=False, repr=False)
    _worker: str = attrs.field(factory=lambda: uuid.uuid4().hex, init=False)
    _collector: Collector = attrs.field(init=False, repr=False)
    _book: Lifecycle = attrs.field(init=False, repr=False)
    _first_loads: dict[str, threading.Event] = attrs.field(factory=dict, init=False, repr=False)
    _sync_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _worker_thread: PeriodicWorker[ABTestManager] = attrs.field(init=False, repr=False)
    _next_auto: float = attrs.field(default=0.0, init=False, repr=False)
    #: Tests this process last saw running (active/finalizing), kept when a read finds them absent:
    #: what :meth:`_state_lost` writes back after the store lost its state.
    _running: dict[str, ABTest] = attrs.field(factory=dict, init=False, repr=False)
    #: ``(field, value)`` of a result value record_result() rejects: counted under ``ab.<field>``.
    _report_invalid: Callable[[str, object], None] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _number("refresh_interval", self.refresh_interval)
        _number("sync_interval", self.sync_interval, positive=True)
        _number("worker_timeout", self.worker_timeout, positive=True)
        _number("auto_evaluate_interval", self.auto_evaluate_interval, positive=True, optional=True)
        _number("warmup_timeout", self.warmup_timeout)
        self._collector = Collector(self._worker)
        self._report_invalid = _invalid_result(weakref.ref(self))
        self._book = Lifecycle(self.store, self.registry, self.clock)
        after_fork_in_child(self, ABTestManager._after_fork)
        listen = getattr(self.store, "add_state_loss_listener", None)
        if callable(listen):
            listen(self._state_lost)  # a bound method: the store holds listeners weakly
        self._start()

    def _after_fork(self) -> None:
        self._worker = uuid.uuid4().hex
        self._collector = Collector(self._worker)
        self._sync_lock = threading.Lock()
        self._worker_thread.after_fork()  # reset first, then start the child's (a closed manager stays stopped)
        self._worker_thread.start()

    def _start(self) -> None:
        # One round at once, then every period or when a request wakes it. Holds the manager weakly:
        # a manager dropped without close() is freed and its thread exits.
        period = min(self.sync_interval, self.refresh_interval or self.sync_interval)
        self._worker_thread = PeriodicWorker(self, ABTestManager.sync, name="mlops-otel-ab", interval=period,
                                             run_first=True, on_error=_background_fault(weakref.ref(self)))
        self._worker_thread.start()

    @property
    def worker_id(self) -> str:
        """This process's id among the workers that deliver results."""
        return self._worker

    @property
    def _tel(self) -> Telemetry:
        return self.telemetry if self.telemetry is not None else default_telemetry()

    # ------------------------------------------------------------ background
    def watch(self, *model_types: str) -> None:
        """Load the views of *model_types* now (e.g. at startup, so the first request is served from them)."""
        self._wanted.update(model_types)
        self.refresh()

    def refresh(self) -> None:
        """Refresh every view now, regardless of age (the background thread does this on its schedule)."""
        for mt in list(self._models):
            self._models[mt] = attrs.evolve(self._models[mt], fetched_at=-math.inf)
        for name in list(self._tests):
            self._tests[name] = attrs.evolve(self._tests[name], fetched_at=-math.inf)
        self.sync()

    def sync(self) -> None:
        """One background round: refresh stale views, resolve new test names, publish, auto-evaluate."""
        self._tel.apply_pending()  # publish what requests deferred too
        with self._sync_lock:
            now = self.clock()
            wanted = set(self._wanted)  # request threads keep adding: take what is there, leave the rest
            self._wanted.difference_update(wanted)
            for mt in {*self._models, *wanted}:
                view = self._models.get(mt)
                if view is None or now - view.fetched_at >= self.refresh_interval:
                    self._load_model_view(mt, now)
            for name in self._collector.tests():
                self._sync_test(name, now)
            for mt, view in list(self._models.items()):
                if math.isfinite(view.loaded_at):
                    self._tel.set(semconv.AB_VIEW_AGE, (mt,), max(0.0, self.clock() - view.loaded_at))
        if self.auto_evaluate_interval is not None and self.clock() >= self._next_auto:
            self._next_auto = self.clock() + self.auto_evaluate_interval
            try:
                self.auto_evaluate()
            except Exception as exc:
                self._tel.fault("ab.auto_evaluate", exc)

    def _sync_test(self, name: str, now: float) -> None:
        view = self._tests.get(name)
        try:
            stale = view is None or now - view.fetched_at >= self.refresh_interval
            test = self._load(name) if stale or view is None else view.test
            if test is None and name in self._running:
                return  # known running, now absent: the store lost it; keep the sums until it is restored
            if test is None:
                dropped = self._collector.discard(name)
                for _ in range(dropped):
                    self._tel.invalid("ab.test", name)
                return
            allowed = frozenset(m.name for m in test.config.metrics)
            self._collector.publish(self.store, name, self.clock, allowed)
            if test.state is not ABTestState.ACTIVE:
                self._collector.retire(name)
        except Exception as exc:  # the store is down: keep summing, retry next round
            self._tel.fault("ab.sync", exc)

    def _load_model_view(self, model_type: str, now: float) -> None:
        view = self._models.get(model_type)
        if view is None and len(self._models) >= _MAX_CACHED_TESTS:  # bounded: e.g. callers' typos
            self._first_loaded(model_type)
            return
        try:
            champion = self.registry.champion_version(model_type)
            holder = self._book.active_holder(model_type)
            test = None if holder is None else self._load(holder)
            if test is not None and test.state is not ABTestState.ACTIVE:
                test = None
            if test is not None:
                self._collector.track(test.name)  # a live worker of this test from now on
            self._models[model_type] = _ModelView(test, champion, now, now)
        except Exception as exc:  # keep serving the last known view; retry after the interval
            self._tel.fault("ab.refresh", exc)
            if view is not None:
                self._models[model_type] = attrs.evolve(view, fetched_at=now)
            else:  # nothing known: serve no test (and no champion) until the store answers
                self._models[model_type] = _ModelView(None, None, now, -math.inf)
        self._first_loaded(model_type)

    def _first_loaded(self, model_type: str) -> None:
        first = self._first_loads.get(model_type)
        if first is not None:
            first.set()

    def flush(self, timeout: float | None = None, *, _final: bool = False) -> bool:
        """Publish this process's results snapshot of every test now, then flush the store.

        Returns whether everything was delivered. Decisions (evaluate,
        finalize) call it first; call it before a worker exits without
        :meth:`close`, so other workers see its last results. Results a ``prediction()`` deferred off its
        request path are applied first (``Telemetry.apply_pending``).
        """
        self._tel.apply_pending()
        ok = True
        for name in self._collector.tests():
            try:
                test = self._cached(name)
                if test is None:
                    test = self._load(name)
                if test is None:
                    continue
                self._collector.publish(self.store, name, self.clock,
                                        frozenset(m.name for m in test.config.metrics), final=_final)
            except Exception as exc:
                self._tel.fault("ab.flush", exc)
                ok = False
        return self.store.flush(timeout) and ok

    @staticmethod
    def _history_key(name: str) -> str:
        return make_key(NAMESPACE, name, "history")

    # ----------------------------------------------------------------- reads
    def _load(self, name: str) -> ABTest | None:
        test = self._book.load(name)
        self._remember(name, test)
        return test

    def _cached(self, name: str) -> ABTest | None:
        view = self._tests.get(name)
        return None if view is None else view.test

    def _remember(self, name: str, test: ABTest | None) -> None:
        if len(self._tests) >= _MAX_CACHED_TESTS:  # e.g. callers passing many wrong test names
            self._tests.clear()
        self._tests[name] = _TestView(test, self.clock())
        if test is not None:  # an absent test may be a lost one: keep it until the store says it ended
            if test.state in (ABTestState.ACTIVE, ABTestState.FINALIZING) and len(self._running) < _MAX_CACHED_TESTS:
                self._running[name] = test
            else:
                self._running.pop(name, None)
        if test is not None and test.state is ABTestState.ACTIVE:
            self._active_tests[name] = test.config
        else:
            self._active_tests.pop(name, None)

    def _state_lost(self) -> None:
        """State-loss listener (the store's background thread): write back the running tests this process knows.

        Create-if-absent only (compare-and-set at version 0): of several workers restoring at once exactly
        one writes each document and slot, and a document or slot written since the loss (a newer test,
        a finalization) is never overwritten. A slot held by another test leaves this test's document out.
        """
        restored = []
        for name, test in list(self._running.items()):
            try:
                slot = slot_key(test.config.model_type)
                claim: dict[str, JSONValue] = {"test": name, "claimed_at": self.clock()}
                if not self.store.compare_and_set(slot, claim, expected_version=0):
                    found = self.store.get_document(slot)
                    if found is None or cast(dict[str, Any], found.value).get("test") != name:
                        self._running.pop(name, None)  # the model type moved on since the loss:
                        continue  # do not resurrect this test (its sums are dropped as unknown)
                if self.store.compare_and_set(document_key(name), test.to_doc(), expected_version=0):
                    restored.append(name)
            except Exception as exc:  # the store is down again: the next loss detection retries
                self._tel.fault("ab.restore", exc)
        for mt in list(self._models):  # serve the restored tests from the next background round
            self._models[mt] = attrs.evolve(self._models[mt], fetched_at=-math.inf)
        self._worker_thread.wake()
        if restored:
            log.warning("mlops-otel: restored the running A/B tests %s to the store after it lost them "
                        "(documents and model-type slots; their evaluation history and the results of "
                        "workers no longer running are not restored)", ", ".join(sorted(restored)))

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
        """The running test of *model_type* as this process sees it (refreshed in the background)."""
        view = self._view(model_type)
        return None if view is None else view.test
    # ------------------------------------------------------------ life cycle
    def start_test(self, config: ABTestConfig) -> ABTest:
        """Start *config*; its treatment becomes the registry's challenger.

        Raises :class:`InvalidConfigError` when a version is not registered (or
        archived) or the name was used before, and :class:`ABTestStateError`
        when the model type already has an active test.
        """
        if not isinstance(config, ABTestConfig):
            raise InvalidConfigError("config", "an ABTestConfig", config)
        test = self._book.start(config)
        now = test.started_at
        self._remember(config.name, test)
        self._models[config.model_type] = _ModelView(test, self.registry.champion_version(config.model_type),
                                                     now, now)
        self._collector.track(config.name)
        log.info("started A/B test %s: %s %s vs %s at %s%% treatment", config.name, config.model_type,
                 config.control_version, config.treatment_version, config.treatment_traffic_pct)
        return test

    def finalize_test(self, name: str, action: str, *, reason: str | None = None, record: bool = True) -> bool:
        """Finish test *name*: ``"promote"`` makes the treatment champion, ``"rollback"`` keeps the control.

        Exactly one of several concurrent callers wins and returns ``True``;
        the others (and later calls with the same action) return ``False``.
        Raises :class:`ABTestStateError` if the test was aborted or finalized
        with the other action. The winner counts the decision in
        ``ab_decisions_total`` and the test's history unless *record* is false
        (a caller that counted the decision itself: auto-finalize, rollouts).
        """
        decision = check_action(action)
        why = reason or f"A/B test {name!r} finalized: {decision.value}"
        self.flush()  # a decision path: deliver this process's results before the test closes
        test, won = self._book.finalize(name, decision, why)
        self._forget(test)
        if won:
            log.info("finalized A/B test %s: %s (%s)", name, decision.value, why)
            if record:
                self._record_manual(name, decision.value, FINAL[decision].value)
        return won

    def abort_test(self, name: str, *, reason: str = "aborted", record: bool = True) -> bool:
        """Stop test *name* without changing the champion; returns whether this call aborted it."""
        self._tel.apply_pending()  # results requests deferred before the abort still count
        test, won = self._book.abort(name, reason)
        self._forget(test)
        if won and record:
            self._record_manual(name, Decision.HALT.value, ABTestState.ABORTED.value)
        return won

    def _record_manual(self, name: str, decision: str, applied: str) -> None:
        self._tel.add(semconv.AB_DECISIONS, (name, decision))
        self._record_history(name, {"time": self.clock(), "decision": decision, "applied": applied,
                                    "by": "finalize"})

    def _forget(self, test: ABTest) -> None:
        """After this process changed *test*: serve the new state from now on (a decision path: store I/O)."""
        self._remember(test.name, test)
        self._load_model_view(test.config.model_type, self.clock())

    # -------------------------------------------------------------- decision
    def _cut(self, name: str) -> Any:
        self.flush()
        return read_cut(self.store, name, self.clock(), self.worker_timeout)

    def results(self, name: str) -> tuple[VariantStats, VariantStats]:
        """Every delivered (control, treatment) result of test *name*, after publishing this process's."""
        cut = self._cut(name)
        return cut.total_control, cut.total_treatment

    def evaluate_test(self, name: str) -> Evaluation:
        """Evaluate test *name* now on the data every live worker has delivered; with ``auto_finalize`` act on it.

        A test past its ``duration_days`` resolves to promote, rollback or
        halt. The evaluation says how many results it left out (delivered
        after the lowest watermark) and whether it moved the roles
        (``applied``). Every evaluation is counted in ``ab_decisions_total``
        and kept in the shared :meth:`evaluation_history`.
        """
        test = self.get_test(name)
        cut = self._cut(name)
        now = self.clock()
        segments = cut.segments if test.config.segment_by is not None else None
        result = evaluate(cut.control, cut.treatment, test.config, ended=now >= test.ends_at, segments=segments)
        result = attrs.evolve(result, excluded_control=cut.excluded_control,
                              excluded_treatment=cut.excluded_treatment, watermark=cut.watermark,
                              evaluated_at=now)
        self._tel.add(semconv.AB_DECISIONS, (name, result.decision.value))
        applied: str | None = None
        if test.state is ABTestState.ACTIVE and test.config.auto_finalize:
            try:
                if result.decision in FINAL:
                    if self.finalize_test(name, result.decision, reason=result.recommendation, record=False):
                        applied = FINAL[result.decision].value
                elif result.decision is Decision.HALT and self.abort_test(name, reason=result.recommendation,
                                                                          record=False):
                    applied = ABTestState.ABORTED.value
            except ABTestStateError as exc:  # another worker finished the test first, differently
                log.warning("A/B test %s: auto-finalize found it already finished: %s", name, exc)
        if applied is not None:
            moved = {"promoted": f" Roles moved: {test.config.treatment_version} is now champion.",
                     "rolled_back": f" Roles moved: {test.config.treatment_version} is no longer challenger; "
                                    f"{test.config.control_version} stays champion.",
                     "aborted": " The test was aborted; the champion is unchanged."}[applied]
            result = attrs.evolve(result, applied=applied, recommendation=result.recommendation + moved)
        self._record_history(name, _history_entry(result))
        return result

    def _record_history(self, name: str, entry: dict[str, JSONValue]) -> None:
        try:
            self.store.append(self._history_key(name), [entry], max_len=HISTORY_LEN)
        except Exception as exc:
            self._tel.fault("ab.history", exc)

    def evaluation_history(self, name: str) -> list[dict[str, Any]]:
        """The last evaluations and finalizations of test *name* by any worker, oldest first (bounded).

        Each entry: ``time``, ``decision``, ``n_control``, ``n_treatment``,
        ``excluded_control``, ``excluded_treatment``, ``applied`` and, for
        evaluations, ``metrics`` (per metric: estimate, lower, upper, verdict,
        role, non_inferior).
        """
        self.store.flush()
        return [cast(dict[str, Any], e) for e in self.store.read_window(self._history_key(name))
                if isinstance(e, dict)]

    def auto_evaluate(self) -> list[Evaluation]:
        """Evaluate every active test if this worker holds the evaluator lease (compare-and-set in the store).

        Returns the evaluations made (empty when another worker holds the lease). Tests run by a
        progressive rollout are not evaluated whole: the lease holder runs ``RolloutManager.check`` on
        them instead (advance, hold or roll back the current step).
        """
        interval = self.auto_evaluate_interval or self.refresh_interval or 1.0
        now = self.clock()
        found = self.store.get_document(_LEASE_KEY)
        lease = cast(dict[str, Any], found.value) if found is not None and isinstance(found.value, dict) else {}
        if lease.get("holder") not in (None, self._worker) and float(lease.get("expires", 0.0)) > now:
            return []
        claim: dict[str, JSONValue] = {"holder": self._worker, "expires": now + 3.0 * interval}
        if not self.store.compare_and_set(_LEASE_KEY, claim, expected_version=0 if found is None else found.version):
            return []
        out = []
        rollouts = None
        for test in self.list_tests():
            if test.state is not ABTestState.ACTIVE:
                continue
            try:
                if self.store.get_document(make_key(NAMESPACE, test.name, "rollout")) is None:
                    out.append(self.evaluate_test(test.name))
                    continue
                # A progressive rollout (#14) is judged step by step (its cumulative results mix several
                # splits, which the whole-test rule would call a sample-ratio mismatch): the lease holder
                # advances or rolls it back (each step change is a compare-and-set: exactly once).
                if rollouts is None:
                    from ._progressive import RolloutManager  # here: that module imports this one
                    rollouts = RolloutManager(self, telemetry=self.telemetry, clock=self.clock)
                rollouts.check(test.name)
            except Exception as exc:
                self._tel.fault("ab.auto_evaluate", exc)
        return out

    # ------------------------------------------------------------- hot paths
    def _view(self, model_type: str) -> _ModelView | None:
        view = self._models.get(model_type)
        if view is None:
            if len(self._wanted) < _MAX_CACHED_TESTS:
                self._wanted.add(model_type)
            first = self._first_loads.get(model_type)
            if first is None and len(self._first_loads) < _MAX_CACHED_TESTS:
                # Only the first request for a model type waits (bounded) for its first background load.
                first = self._first_loads[model_type] = threading.Event()
                self._worker_thread.wake()
                first.wait(self.warmup_timeout)
            else:
                self._worker_thread.wake()
            return self._models.get(model_type)
        if self.clock() - view.fetched_at >= self.refresh_interval:
            self._worker_thread.wake()  # serve the stale view; the background thread refreshes it
        return view

    def assign_variant(self, model_type: str, user_id: str | None) -> Assignment:
        """Return the variant serving *user_id*: ``{"name", "version", "test"}`` (never raises, no store I/O).

        In a running test: ``"control"`` or ``"treatment"`` with its version
        and the test's name. Outside a test (none running, past its end, or a
        request without a user id): ``{"name": "champion", "version":
        <champion>, "test": None}``; such requests are not part of any test.
        """
        name, version, test = self._assign(model_type, user_id)
        return {"name": name, "version": version, "test": test}

    def _assign(self, model_type: str, user_id: str | None, count: bool = True) -> tuple[str, str | None, str | None]:
        """:meth:`assign_variant`'s answer as ``(name, version, test)``, no dict: ``prediction()``'s path.

        With *count* False an assignment into a test's arm is not counted here: the caller counts it
        with :meth:`_count_assignments` (``prediction()`` does at its end, with its result, off the
        request path when it can).
        """
        try:
            view = self._models.get(model_type)
            if view is None:  # not loaded yet: _view registers it (and the first request waits, bounded)
                view = self._view(model_type)
                now = self.clock()
            else:  # _view's loaded case, inlined: one clock read for the refresh and the end checks
                now = self.clock()
                if now - view.fetched_at >= self.refresh_interval:
                    self._worker_thread.wake()  # serve the stale view; the background thread refreshes it
        except Exception as exc:  # e.g. an unhashable model_type: no test, no champion known
            self._tel.fault("ab.assign", exc)
            return CHAMPION, None, None
        if view is None:
            return CHAMPION, None, None
        test = view.test
        if test is None or now >= test.ends_at:
            return CHAMPION, view.champion, None
        cfg = test.config
        try:
            if user_id is None or (type(user_id) is str and not user_id):
                self._tel.add(semconv.AB_ASSIGNMENTS, (cfg.name, CHAMPION))
                return CHAMPION, view.champion or cfg.control_version, None
            variant = assign(user_id, cfg)
        except Exception as exc:  # an id whose str() fails: serve the champion
            self._tel.fault("ab.assign", exc)
            return CHAMPION, view.champion or cfg.control_version, None
        # Plain strings, not variant.value: Enum attribute access is slow on this hot path.
        if variant is _TREATMENT:
            name, version = _TREATMENT_NAME, cfg.treatment_version
        else:
            name, version = _CONTROL_NAME, cfg.control_version
        if count:
            self._tel.add(semconv.AB_ASSIGNMENTS, (cfg.name, name))
        return name, version, cfg.name

    def _count_assignments(self, test: str, variant: str, n: int = 1) -> None:
        """Count *n* assignments of *variant* of *test* that :meth:`_assign` was told not to count."""
        self._tel.add_each(semconv.AB_ASSIGNMENTS, (test, variant), n)

    def record_result(
        self,
        test_name: str,
        variant: str,
        inference_time_ms: float | None,
        confidence: float | None,
        error: bool = False,
        *,
        metrics: Mapping[str, float | bool] | None = None,
        attributes: Mapping[str, object] | None = None,
    ) -> None:
        """Add one result of *variant* to test *test_name* (hot path: in-process sums, never raises).

        *metrics* carries the test's custom metrics (name -> float, or bool
        for binary ones); *attributes* the request's attributes, of which the
        test's ``segment_by`` one is kept for the segment report. Results of
        the ``"champion"`` variant (requests outside the test) and of
        finished tests are ignored. Results for a test this process has not
        loaded yet are kept until the background load finds it (or counted
        invalid if it does not exist). Unknown variants, undeclared metrics
        and invalid values are counted in ``mlops_invalid_measurements_total``
        under ``metric="ab.<field>"``; an invalid latency, confidence or
        custom value is left out while the result still counts.
        """
        tel = self.telemetry  # self._tel without the property call: the hot path
        if tel is None:
            tel = default_telemetry()
        try:
            if type(test_name) is not str or not test_name:
                tel.invalid("ab.test", test_name)
                return
            if variant != "control" and variant != "treatment":
                if variant != CHAMPION:
                    tel.invalid("ab.variant", variant)
                return
            view = self._tests.get(test_name)
            test = None if view is None else view.test
            if test is not None and test.state is not _ACTIVE:
                return
            checked = check_result_reporting(inference_time_ms, confidence, error, self._report_invalid)
            if checked is None:
                return
            latency, conf, err = checked
            custom: Sequence[tuple[str, float]] = ()  # no list per call without custom metrics
            if metrics:
                valid: list[tuple[str, float]] = []
                custom = valid
                declared = None if test is None else test.config.metrics
                for key, raw in metrics.items():
                    x = _metric_value(raw)
                    spec = None if declared is None else next((m for m in declared if m.name == key), None)
                    if x is None or (declared is not None and spec is None) or (
                            spec is not None and spec.kind == "binary" and x not in (0.0, 1.0)):
                        tel.invalid(f"ab.metric.{key}" if isinstance(key, str) else "ab.metric", raw)
                        continue
                    valid.append((key, x))
            segment = None
            if attributes and test is not None and test.config.segment_by is not None:
                value = attributes.get(test.config.segment_by)
                segment = None if value is None else str(value)
            if not self._collector.add(test_name, variant, result_values(latency, conf, err), custom, segment):
                tel.invalid("ab.test", test_name)  # too many distinct test names in this process
                return
            if test is None:
                self._worker_thread.wake()  # load it in the background
            tel.add(semconv.AB_RESULTS, (test_name, variant))
        except Exception as exc:  # the caller's request must never fail because of us
            tel.fault("ab.record_result", exc)

    def _record_checked(self, test_name: str, variant: str, inference_time_ms: float | None,
                        confidence: float | None, error: bool, count: bool = True) -> bool:
        """:meth:`record_result` without custom metrics or attributes, for a *test_name* and *variant*
        from :meth:`assign_variant` (``"control"``/``"treatment"``) and values the caller already
        validated (as ``check_result`` would accept them unchanged): ``runtime.prediction()``'s path,
        which must not pay for the same checks twice (the registry takes the same values). Records
        exactly what :meth:`record_result` would; never raises. With *count* False the result is not
        counted in ``mlops_ab_results_total``: the caller counts it (in its own lock round) when this
        returns True."""
        tel = self.telemetry  # self._tel without the property call: the hot path
        if tel is None:
            tel = default_telemetry()
        try:
            if not self._add_checked(tel, test_name, variant, result_values(inference_time_ms, confidence, error)):
                return False
            if not count:
                return True
            tel.add(semconv.AB_RESULTS, (test_name, variant))
        except Exception as exc:  # the caller's request must never fail because of us
            tel.fault("ab.record_result", exc)
        return False

    def _record_checked_many(self, test_name: str, variant: str, latencies: Sequence[float],
                             confidences: Sequence[float]) -> bool:
        """:meth:`_record_checked` of several successful results with both values, summed first (one lock
        round), not counted in ``mlops_ab_results_total`` (the caller counts them when this returns True):
        ``runtime.prediction()``'s batch of deferred results. Never raises."""
        tel = self.telemetry
        if tel is None:
            tel = default_telemetry()
        try:
            return self._add_checked(tel, test_name, variant, result_sums(latencies, confidences))
        except Exception as exc:
            tel.fault("ab.record_result", exc)
        return False

    def _add_checked(self, tel: Telemetry, test_name: str, variant: str, values: tuple[float, ...]) -> bool:
        """Add the sums *values* to *variant* of *test_name* unless its test is known finished; False when
        not added (finished, or too many tests in this process: counted)."""
        view = self._tests.get(test_name)
        test = None if view is None else view.test
        if test is not None and test.state is not _ACTIVE:
            return False
        if not self._collector.add(test_name, variant, values, (), None):
            tel.invalid("ab.test", test_name)  # too many distinct test names in this process
            return False
        if test is None:
            self._worker_thread.wake()  # load it in the background
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread and publish this process's last results, within *timeout* seconds.

        Idempotent. A store that does not answer in time (stalled, not just down) costs at most
        *timeout*: the last results are then lost, counted in ``mlops_telemetry_errors_total``.
        """
        deadline = time.monotonic() + timeout
        self._worker_thread.stop(timeout=max(0.0, deadline - time.monotonic()))

        def final() -> None:
            try:
                self.flush(max(0.0, deadline - time.monotonic()), _final=True)
            except Exception as exc:
                self._tel.fault("ab.close", exc)

        last = threading.Thread(target=final, name="mlops-otel-ab-close", daemon=True)
        last.start()
        last.join(timeout=max(0.0, deadline - time.monotonic()))
        if last.is_alive():
            self._tel.fault("ab.close", TimeoutError(f"final publish not done within {timeout:g} s"))


def _history_entry(result: Evaluation) -> dict[str, JSONValue]:
    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "time": result.evaluated_at, "decision": result.decision.value, "n_control": result.n_control,
        "n_treatment": result.n_treatment, "excluded_control": result.excluded_control,
        "excluded_treatment": result.excluded_treatment, "watermark": result.watermark,
        "applied": result.applied, "by": "evaluation",
        "metrics": {e.metric: {"estimate": num(e.estimate), "lower": num(e.lower), "upper": num(e.upper),
                               "verdict": e.verdict, "role": e.role, "non_inferior": e.non_inferior}
                    for e in result.effects},
        # Segment reports (reported only) ride along so read-only views (the operator's page)
        # can show them without evaluating, which would count a decision.
        "segments": [{"segment": sg.segment, "n_control": sg.n_control, "n_treatment": sg.n_treatment,
                      "indication": sg.indication,
                      "effects": {e.metric: {"estimate": num(e.estimate), "lower": num(e.lower),
                                             "upper": num(e.upper), "verdict": e.verdict} for e in sg.effects}}
                     for sg in result.segments],
    }
