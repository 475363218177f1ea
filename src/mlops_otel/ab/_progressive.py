"""The progressive rollout owner: steps an A/B test's traffic up, shared through a store.

Every step change is one compare-and-set on the rollout document: however
many workers look at the same moment, exactly one wins, counts the decision
(``rollout_step_changes_total``), writes the registry history entry and
moves the test's traffic share. A crash between those writes is repaired by
the next :meth:`RolloutManager.check` of any worker (idempotency keys on
the registry, compare-and-set on the test document).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from .. import semconv
from ..stores import JSONValue, make_key
from ..telemetry import Telemetry, default_telemetry
from ._config import ABTestConfig, InvalidConfigError
from ._evaluate import Decision, evaluate
from ._lifecycle import NAMESPACE, document_key
from ._manager import ABTest, ABTestManager, ABTestNotFoundError, ABTestState, ABTestStateError
from ._rollout import (
    RolloutSchedule,
    RolloutState,
    RolloutStatus,
    StepDecision,
    StepVerdict,
    judge_step,
    step_stats,
)
from ._variant import VariantStats

__all__ = ["RolloutCheck", "RolloutManager"]

log = logging.getLogger("mlops_otel.ab.rollout")

_MAX_ATTEMPTS = 64


@attrs.frozen
class RolloutCheck:
    """What one :meth:`RolloutManager.check` saw and did."""

    test: str
    status: RolloutStatus
    step: int
    traffic_pct: float
    #: The step's verdict (``None`` when the test was no longer active or the rollout had ended).
    verdict: StepVerdict | None
    #: ``"advance"``, ``"rollback"``, ``"handover"`` or ``"promote"`` when this call made that change.
    changed: str | None
    #: Whether registry roles moved in this call (promote or rollback applied).
    roles_moved: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values."""
        return {"test": self.test, "status": self.status.value, "step": self.step, "traffic_pct": self.traffic_pct,
                "verdict": None if self.verdict is None else self.verdict.to_dict(), "changed": self.changed,
                "roles_moved": self.roles_moved}


@attrs.define(eq=False)
class RolloutManager:
    """Runs progressive rollouts on the A/B tests of *manager*.

    :meth:`start` starts the test at the first step's share; :meth:`check`
    (call it on a schedule, from any worker, or from an operator's job) judges the
    current step on the results collected since it began and advances, holds
    or rolls back; after the last step it applies the test's own
    promote/rollback decision on the last step's results.
    """

    manager: ABTestManager
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)

    @property
    def _tel(self) -> Telemetry:
        return self.telemetry if self.telemetry is not None else default_telemetry()

    @staticmethod
    def _key(name: str) -> str:
        return make_key(NAMESPACE, name, "rollout")

    # ----------------------------------------------------------------- reads
    def get(self, name: str) -> RolloutState:
        """The rollout of test *name* as stored now (raises :class:`ABTestNotFoundError`)."""
        found = self.manager.store.get_document(self._key(name))
        if found is None:
            raise ABTestNotFoundError(name)
        return RolloutState.from_doc(found.value)

    def exists(self, name: str) -> bool:
        """Whether test *name* is (or was) run by a rollout on this store."""
        return self.manager.store.get_document(self._key(name)) is not None

    def list_rollouts(self) -> list[RolloutState]:
        """Every rollout on this store, by test name."""
        prefix = NAMESPACE + ":{"
        names = sorted(k[len(prefix):k.index("}", len(prefix))] for k in self.manager.store.list_keys(prefix)
                       if k.endswith("}:rollout"))
        return [self.get(n) for n in names]

    # ------------------------------------------------------------- life cycle
    def start(self, config: ABTestConfig, schedule: RolloutSchedule) -> RolloutState:
        """Start test *config* at the first step of *schedule* (its ``treatment_traffic_pct`` is replaced).

        ``auto_finalize`` must be off: the rollout decides when the test ends.
        """
        if not isinstance(schedule, RolloutSchedule):
            raise InvalidConfigError("schedule", "a RolloutSchedule", schedule)
        if not isinstance(config, ABTestConfig):
            raise InvalidConfigError("config", "an ABTestConfig", config)
        if config.auto_finalize:
            raise InvalidConfigError("auto_finalize", "False for a rollout (the rollout decides)", True)
        first = schedule.steps[0]
        test = self.manager.start_test(attrs.evolve(config, treatment_traffic_pct=first.traffic_pct))
        reason = f"rollout of {config.treatment_version} started at {first.traffic_pct:g}%"
        empty: Mapping[str, float] = {}
        state = RolloutState(config.name, schedule, RolloutStatus.RAMPING, 0, test.started_at, (empty, empty),
                             reason, ({"time": test.started_at, "step": 0, "traffic_pct": float(first.traffic_pct),
                                       "decision": "start", "reason": reason},))
        if not self.manager.store.compare_and_set(self._key(config.name), cast(JSONValue, state.to_doc()),
                                                  expected_version=0):
            raise InvalidConfigError("name", "a test name without a rollout on this store", config.name)
        self._history(test, state, 0)
        self._tel.set(semconv.ROLLOUT_TRAFFIC, (config.name,), state.traffic_pct)
        log.info("started rollout %s at %s%%", config.name, first.traffic_pct)
        return state

    def _history(self, test: ABTest, state: RolloutState, index: int) -> None:
        """Write history entry *index* of *state* to the registry (once, whoever calls)."""
        event = state.history[index]
        cfg = test.config
        self.manager.registry.record_event(
            cfg.model_type, f"rollout_{event['decision']}", version=cfg.treatment_version,
            reason=f"A/B test {cfg.name!r}: {event['reason']} (traffic {float(event['traffic_pct']):g}%)",
            idempotency_key=f"rollout:{cfg.name}:{index}",
        )

    def _sync_traffic(self, test: ABTest, state: RolloutState) -> ABTest:
        """Make the test's traffic share the rollout's current step (compare-and-set; no-op when equal)."""
        want = state.traffic_pct
        if (test.state is not ABTestState.ACTIVE or state.status is RolloutStatus.ROLLED_BACK
                or float(test.config.treatment_traffic_pct) == want):
            return test
        store, key = self.manager.store, document_key(test.name)
        for attempt in range(_MAX_ATTEMPTS):
            found = store.get_document(key)
            if found is None:
                raise ABTestNotFoundError(test.name)
            current = ABTest.from_doc(found.value)
            if current.state is not ABTestState.ACTIVE or float(current.config.treatment_traffic_pct) == want:
                return current
            updated = attrs.evolve(current, config=attrs.evolve(current.config, treatment_traffic_pct=want))
            if store.compare_and_set(key, cast(JSONValue, updated.to_doc()), expected_version=found.version):
                self.manager.refresh()  # this process assigns at the new share from now on (public; off path)
                self._history(updated, state, len(state.history) - 1)
                return updated
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise ABTestStateError(test.name, "unknown", f"A/B test {test.name!r} kept changing; gave up")

    def _move(self, name: str, version: int, state: RolloutState, decision: StepDecision | str,
              reason: str, counters: tuple[Mapping[str, float], Mapping[str, float]]) -> tuple[RolloutState, bool]:
        """Compare-and-set the rollout to its next state; returns (state afterwards, whether we wrote)."""
        now = self.clock()
        if decision == "promote":
            new = attrs.evolve(state, status=RolloutStatus.PROMOTED, reason=reason, history=(*state.history, {
                "time": now, "step": state.step, "traffic_pct": state.traffic_pct, "decision": "promote",
                "reason": reason}))
        else:
            new = state.moved(StepDecision(decision), now, reason, counters)
        if self.manager.store.compare_and_set(self._key(name), cast(JSONValue, new.to_doc()),
                                              expected_version=version):
            value = decision if isinstance(decision, str) else decision.value
            self._tel.add(semconv.ROLLOUT_STEP_CHANGES, (name, value))
            log.info("rollout %s: %s (%s)", name, value, reason)
            return new, True
        return self.get(name), False

    def _ended_outside(self, name: str, version: int, state: RolloutState, test: ABTest) -> RolloutState:
        """Record that the test was finished by other means (an operator's finalize or abort)."""
        status = RolloutStatus.PROMOTED if test.state is ABTestState.PROMOTED else RolloutStatus.ROLLED_BACK
        reason = f"test {test.state.value} outside the rollout ({test.reason})"
        ended = attrs.evolve(state, status=status, reason=reason, history=(*state.history, {
            "time": self.clock(), "step": state.step, "traffic_pct": 0.0 if status is RolloutStatus.ROLLED_BACK
            else state.traffic_pct, "decision": f"ended_{test.state.value}", "reason": reason}))
        if self.manager.store.compare_and_set(self._key(name), cast(JSONValue, ended.to_doc()),
                                              expected_version=version):
            self._tel.set(semconv.ROLLOUT_TRAFFIC, (name,), ended.traffic_pct)
            return ended
        return self.get(name)

    def _finish(self, name: str, state: RolloutState) -> bool:
        """Apply a finished rollout's outcome to the test (exactly once: the test's own compare-and-set).

        The A/B manager counts the decision in ``ab_decisions_total`` (so the guardrail alert fires on a
        rollback) and keeps it in the test's evaluation history.
        """
        action = {RolloutStatus.ROLLED_BACK: Decision.ROLLBACK, RolloutStatus.PROMOTED: Decision.PROMOTE}.get(
            state.status)
        if action is None:
            return False
        try:
            # Counted once, by the finalize that wins (the rollout itself does not count A/B decisions).
            return self.manager.finalize_test(name, action, reason=f"rollout: {state.reason}")
        except ABTestStateError as exc:  # finished otherwise meanwhile (e.g. aborted by an operator)
            log.warning("rollout %s: the test was already finished: %s", name, exc)
            return False

    def judge(self, name: str) -> RolloutCheck:
        """Judge the current step of rollout *name* without acting (read only: no step change, nothing counted).

        The verdict rests on the results collected since the current step began, at that
        step's one split, so the ramp itself never reads as a sample-ratio mismatch. After
        handover it is the test's own evaluation on the last step's results.
        """
        state = self.get(name)
        test = self.manager.get_test(name)
        control, treatment = self.manager.results(name)
        c = step_stats(control.to_counters(), state.baseline[0])
        t = step_stats(treatment.to_counters(), state.baseline[1])
        verdict = self._judge(state, test, c, t, self.clock())
        return RolloutCheck(name, state.status, state.step, state.traffic_pct, verdict, None, False)

    @staticmethod
    def _judge(state: RolloutState, test: ABTest, c: VariantStats, t: VariantStats, now: float) -> StepVerdict:
        """The verdict on the current step: the ramp's rule, or after hand-over the test's own
        decision on the results at the last step's fixed split (always a HOLD for the ramp)."""
        if state.status is RolloutStatus.HANDED_OVER:
            step = state.schedule.steps[state.step]
            cfg = attrs.evolve(test.config, treatment_traffic_pct=step.traffic_pct)
            evaluation = evaluate(c, t, cfg, ended=now >= test.ends_at)
            return StepVerdict(StepDecision.HOLD, evaluation.reasons, state.step, float(step.traffic_pct),
                               c.n, t.n, now - state.step_started_at, evaluation)
        return judge_step(c, t, test.config, state.schedule, state.step, now - state.step_started_at)

    def check(self, name: str) -> RolloutCheck:
        """Judge the current step of rollout *name* and act on it (safe from any number of workers)."""
        found = self.manager.store.get_document(self._key(name))
        if found is None:
            raise ABTestNotFoundError(name)
        state = RolloutState.from_doc(found.value)
        test = self._sync_traffic(self.manager.get_test(name), state)
        tel = self._tel
        tel.set(semconv.ROLLOUT_TRAFFIC, (name,), state.traffic_pct)

        def result(verdict: StepVerdict | None, changed: str | None, moved: bool) -> RolloutCheck:
            return RolloutCheck(name, state.status, state.step, state.traffic_pct, verdict, changed, moved)

        if test.state is not ABTestState.ACTIVE:
            if state.status in (RolloutStatus.RAMPING, RolloutStatus.HANDED_OVER):
                state = self._ended_outside(name, found.version, state, test)
            return result(None, None, False)
        if state.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.PROMOTED):
            return result(None, None, self._finish(name, state))  # repair: the outcome was not applied yet
        control, treatment = self.manager.results(name)  # flushes this process's results first
        counters = (control.to_counters(), treatment.to_counters())
        c = step_stats(counters[0], state.baseline[0])
        t = step_stats(counters[1], state.baseline[1])
        verdict = self._judge(state, test, c, t, self.clock())
        if state.status is RolloutStatus.HANDED_OVER:
            evaluation = verdict.evaluation
            if evaluation.decision is Decision.CONTINUE:
                return result(verdict, None, False)
            # Promote when the ship rule says so; roll back on harm, a sample-ratio mismatch or the end.
            decision = "promote" if evaluation.decision is Decision.PROMOTE else StepDecision.ROLLBACK
            state, won = self._move(name, found.version, state, decision, evaluation.recommendation, counters)
            if won:
                self._history(test, state, len(state.history) - 1)
            return result(verdict, str(decision) if won else None, self._finish(name, state))
        if verdict.decision is StepDecision.HOLD:
            return result(verdict, None, False)
        state, won = self._move(name, found.version, state, verdict.decision, "; ".join(verdict.reasons), counters)
        if won:
            tel.set(semconv.ROLLOUT_TRAFFIC, (name,), state.traffic_pct)
            self._history(test, state, len(state.history) - 1)
            if state.status is RolloutStatus.RAMPING:
                test = self._sync_traffic(test, state)
        return result(verdict, verdict.decision.value if won else None, self._finish(name, state))
