"""A/B test documents in the store and their life cycle: a compare-and-set state machine (no request path).

A test document moves ``active -> finalizing -> promoted | rolled_back`` or
``active -> aborted``; every move is a compare-and-set, so exactly one of
several racing workers makes it. The model type's slot (one active test per
model type) is claimed and released the same way, and every registry change
carries an idempotency key, so a finalization left half-done by a crash is
completed exactly once by whoever finds it.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from typing import Any, cast

import attrs

from ..registry import ModelRegistry, UnknownVersionError
from ..stores import JSONValue, StateStore, make_key
from ..validation import InvalidValueError
from ._config import ABTestConfig, InvalidConfigError
from ._evaluate import Decision

__all__ = ["FINAL", "ABTest", "ABTestNotFoundError", "ABTestState", "ABTestStateError", "Lifecycle", "check_action"]

NAMESPACE = "ab"
MODEL_NAMESPACE = "ab.model"
_MAX_ATTEMPTS = 64
#: A model-type claim whose test document never appeared is considered abandoned after this long.
_CLAIM_TIMEOUT = 60.0


class ABTestState(enum.StrEnum):
    """Life cycle of a test: active -> finalizing -> promoted | rolled_back, or active -> aborted."""

    ACTIVE = "active"
    FINALIZING = "finalizing"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


FINAL = {Decision.PROMOTE: ABTestState.PROMOTED, Decision.ROLLBACK: ABTestState.ROLLED_BACK}


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


def check_action(action: object) -> Decision:
    """``"promote"`` or ``"rollback"`` as a :class:`Decision` (raises :class:`InvalidValueError` otherwise)."""
    if action not in (Decision.PROMOTE, Decision.ROLLBACK):
        raise InvalidValueError("action", "'promote' or 'rollback'", action)
    return Decision(cast(str, action))


def document_key(name: str) -> str:
    """The store key of test *name*'s document."""
    return make_key(NAMESPACE, name, "test")


def slot_key(model_type: str) -> str:
    """The store key of *model_type*'s active-test slot."""
    return make_key(MODEL_NAMESPACE, model_type, "active")


@attrs.define(eq=False)
class Lifecycle:
    """Reads and moves test documents; the registry roles follow the moves."""

    store: StateStore
    registry: ModelRegistry
    clock: Callable[[], float]

    def load(self, name: str) -> ABTest | None:
        """The test *name* as stored now, or None."""
        found = self.store.get_document(document_key(name))
        return None if found is None else ABTest.from_doc(found.value)

    def start(self, config: ABTestConfig) -> ABTest:
        """Validate *config* against the registry, claim its model type, write the test, set the challenger."""
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
        if self.store.get_document(document_key(config.name)) is not None:
            raise InvalidConfigError("name", "a test name not used before on this store", config.name)

        self._claim_slot(config)
        now = self.clock()
        test = ABTest(config, ABTestState.ACTIVE, now, now + config.duration_seconds)
        if not self.store.compare_and_set(document_key(config.name), test.to_doc(), expected_version=0):
            self._release_slot(mt, config.name)
            raise InvalidConfigError("name", "a test name not used before on this store", config.name)
        self.registry.set_challenger(mt, config.treatment_version, reason=f"A/B test {config.name!r} started",
                                     idempotency_key=f"ab:{config.name}:start")
        return test

    def finalize(self, name: str, decision: Decision, why: str) -> tuple[ABTest, bool]:
        """Move test *name* to promoted / rolled back; returns (test afterwards, whether this call won)."""

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
            test, _ = self._transition(name, lambda t: attrs.evolve(t, state=FINAL[decision])
                                       if t.state is ABTestState.FINALIZING else None)
            self._release_slot(test.config.model_type, name)
        return test, won

    def abort(self, name: str, reason: str) -> tuple[ABTest, bool]:
        """Move test *name* to aborted (champion unchanged); returns (test afterwards, whether this call won)."""

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
        return test, won

    def active_holder(self, model_type: str) -> str | None:
        """The name of the test holding *model_type*'s slot, if any."""
        found = self.store.get_document(slot_key(model_type))
        return None if found is None else cast(dict[str, Any], found.value).get("test")

    def _claim_slot(self, config: ABTestConfig) -> None:
        key = slot_key(config.model_type)
        for _ in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            slot = {} if found is None else cast(dict[str, Any], found.value)
            holder = slot.get("test")
            if holder is not None:
                current = self.load(holder)
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
        key = slot_key(model_type)
        for _ in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            if found is None or cast(dict[str, Any], found.value).get("test") != name:
                return
            if self.store.compare_and_set(key, {"test": None}, expected_version=found.version):
                return

    def _transition(self, name: str, step: Callable[[ABTest], ABTest | None]) -> tuple[ABTest, bool]:
        """Compare-and-set the test document through *step*; returns (test afterwards, whether we wrote)."""
        key = document_key(name)
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

    def _apply(self, test: ABTest, decision: Decision, reason: str) -> None:
        cfg = test.config
        key = f"ab:{cfg.name}:finalize"
        if decision is Decision.PROMOTE:
            self.registry.promote(cfg.model_type, cfg.treatment_version, reason=reason, idempotency_key=key)
        else:
            self.registry.clear_challenger(cfg.model_type, version=cfg.treatment_version, reason=reason,
                                           idempotency_key=key)
