"""The model registry: versions, champion/challenger roles with history, running metrics."""

from __future__ import annotations

import copy
import enum
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, cast

import attrs

from .. import semconv
from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker
from ..stats import SufficientStats
from ..stores import CounterBuffer, JSONValue, StateStore, make_key
from ..telemetry import Telemetry, default_telemetry
from ..validation import InvalidValueError, check_name, check_result_reporting

__all__ = [
    "ModelRegistry",
    "ModelVersion",
    "RegistryConflictError",
    "Role",
    "RoleChange",
    "UnknownVersionError",
]

log = logging.getLogger("mlops_otel.registry")

T = TypeVar("T")

NAMESPACE = "registry"
#: Compare-and-set attempts before a role change gives up under contention.
_MAX_ATTEMPTS = 64
#: The view's refresher retries a lost document's restore at least this often (seconds).
_RESTORE_RETRY_S = 0.2
#: The shortest sleep of the view's refresher between two refreshes (seconds).
_MIN_REFRESH_DELAY_S = 0.01


class Role(enum.StrEnum):
    """The role of a model version within its model type."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"
    CANDIDATE = "candidate"
    ARCHIVED = "archived"


class UnknownVersionError(LookupError):
    """The model version is not registered."""

    def __init__(self, model_type: str, version: str, registered: tuple[str, ...] = ()) -> None:
        self.model_type = model_type
        self.version = version
        self.registered = registered
        known = ", ".join(registered) if registered else "none"
        super().__init__(f"version {version!r} of model type {model_type!r} is not registered "
                         f"(registered: {known})")


class RegistryConflictError(RuntimeError):
    """A role change lost the compare-and-set race too many times in a row."""

    def __init__(self, model_type: str, attempts: int) -> None:
        self.model_type = model_type
        self.attempts = attempts
        super().__init__(f"registry document of model type {model_type!r} kept changing; "
                         f"gave up after {attempts} compare-and-set attempts")


@attrs.frozen
class RoleChange:
    """One entry of a model type's history: what changed, when and why."""

    time: float
    model_type: str
    action: str
    version: str | None
    previous_champion: str | None
    reason: str
    key: str | None = None


@attrs.frozen
class ModelVersion:
    """A registered model version with its role and running performance metrics.

    The metrics derive from :attr:`stats`, the mergeable sums every worker's
    :meth:`ModelRegistry.update_metrics` adds to.
    """

    model_type: str
    version: str
    created_at: float
    metadata: Mapping[str, JSONValue]
    role: Role
    stats: SufficientStats = attrs.field(factory=SufficientStats)

    @property
    def count(self) -> int:
        """Results recorded."""
        return self.stats.n

    @property
    def error_rate(self) -> float:
        """Share of results that were errors (NaN before the first)."""
        return self.stats.error_rate

    @property
    def latency_mean_ms(self) -> float:
        """Mean inference latency in milliseconds."""
        return self.stats.latency_ms.mean

    @property
    def latency_variance(self) -> float:
        """Sample variance of the latency (ms squared)."""
        return self.stats.latency_ms.variance

    @property
    def confidence_mean(self) -> float:
        """Mean prediction confidence."""
        return self.stats.confidence.mean

    @property
    def confidence_variance(self) -> float:
        """Sample variance of the confidence."""
        return self.stats.confidence.variance

    def metrics(self) -> dict[str, float]:
        """The running metrics as a flat dict."""
        return {
            "count": float(self.count), "error_rate": self.error_rate,
            "latency_mean_ms": self.latency_mean_ms, "latency_variance": self.latency_variance,
            "confidence_mean": self.confidence_mean, "confidence_variance": self.confidence_variance,
        }


def _empty_doc() -> dict[str, Any]:
    return {"champion": None, "challenger": None, "previous": [], "versions": {}, "history": []}


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, JSONValue]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidValueError("metadata", "a mapping with string keys", metadata)
    try:
        return cast(dict[str, JSONValue], json.loads(json.dumps(dict(metadata), allow_nan=False)))
    except (TypeError, ValueError):
        raise InvalidValueError("metadata", "JSON-serialisable (no NaN or infinity)", metadata) from None


def _check_reason(reason: object) -> str:
    if not isinstance(reason, str):
        raise InvalidValueError("reason", "a string", reason)
    return reason


@attrs.define(eq=False)
class ModelRegistry:
    """Model versions and their champion/challenger roles, shared through a :class:`StateStore`.

    All state of one model type lives in one versioned document changed by
    compare-and-set, so concurrent workers never lose or duplicate a role
    change. :meth:`update_metrics` is the hot path: validated, buffered by
    the store (write-behind) and never raising.

    The first version registered for a model type becomes its champion.
    """

    store: StateStore
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    #: Role changes kept per model type (oldest dropped first).
    max_history: int = attrs.field(default=1000, kw_only=True)

    #: Seconds after which the background refresher re-reads a document of the in-process view.
    refresh_interval: float = attrs.field(default=1.0, kw_only=True)

    _stats_keys: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False, repr=False)
    _gauge_champion: dict[str, str | None] = attrs.field(factory=dict, init=False, repr=False)
    _buffer: CounterBuffer = attrs.field(init=False, repr=False)
    _view: _DocView = attrs.field(init=False, repr=False)
    #: ``(field, value)`` of a value update_metrics() or the buffer rejects: counted under ``registry.<field>``.
    _report_invalid: Callable[[str, object], None] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.max_history, int) or isinstance(self.max_history, bool) or self.max_history < 1:
            raise InvalidValueError("max_history", "an integer >= 1", self.max_history)
        if (not isinstance(self.refresh_interval, (int, float)) or isinstance(self.refresh_interval, bool)
                or not 0 < self.refresh_interval < float("inf")):
            raise InvalidValueError("refresh_interval", "a positive number of seconds", self.refresh_interval)
        self._view = _DocView(self, float(self.refresh_interval))
        listen = getattr(self.store, "add_state_loss_listener", None)
        if callable(listen):
            listen(self._view.restore_all)
        self._report_invalid = lambda field, value: self._tel.invalid("registry." + field, value)
        # An in-process store: reads flush first, so the periodic flush only bounds how stale another
        # runtime sharing the same MemoryStore object sees the counts; once a second is enough there
        # (#16: the 0.1 s default was the memory-store service's busiest background thread at 50 requests/s).
        # On Redis the store's flusher drives the buffer (RedisStore.add_feeder) and this interval is unused.
        interval = 1.0 if getattr(self.store, "kind", None) == "memory" else 0.1
        self._buffer = CounterBuffer(self.store, SufficientStats.FIELDS, interval=interval,
                                     on_fault=lambda exc: self._tel.fault("registry.update_metrics", exc),
                                     on_invalid=self._report_invalid)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver the results this process buffered to the store and on to its backend.

        Returns whether nothing remains pending (see :meth:`StateStore.flush`).
        Reads in this class flush first; call it before a worker exits without
        :meth:`close`, so other workers see its last results. Results a ``prediction()`` deferred
        off its request path are applied first (``Telemetry.apply_pending``).
        """
        self._tel.apply_pending()
        return self._buffer.deliver(timeout)

    @property
    def _tel(self) -> Telemetry:
        return self.telemetry if self.telemetry is not None else default_telemetry()

    # --------------------------------------------------------------- keys/docs
    @staticmethod
    def _doc_key(model_type: str) -> str:
        return make_key(NAMESPACE, model_type, "doc")

    def _stats_key(self, model_type: str, version: str) -> str:
        key = self._stats_keys.get((model_type, version))
        if key is None:
            key = self._stats_keys[(model_type, version)] = make_key(NAMESPACE, model_type, "stats", version)
        return key

    def _read(self, model_type: str) -> dict[str, Any]:
        check_name("model_type", model_type)
        found = self.store.get_document(self._doc_key(model_type))
        if found is None:
            known = self._view.lost(model_type)
            if known is not None:  # the store lost it: serve what this process knows, restore it
                doc = copy.deepcopy(known)
                self._sync_gauge(model_type, doc["champion"])
                return doc
            doc = _empty_doc()
        else:
            doc = cast(dict[str, Any], found.value)
            self._view.put(model_type, doc)
        self._sync_gauge(model_type, doc["champion"])
        return doc

    def _update(self, model_type: str, mutate: Callable[[dict[str, Any]], T | None]) -> T | None:
        """Apply *mutate* to the model type's document by compare-and-set, retrying on conflict.

        *mutate* edits the document in place and returns a result, or returns
        ``None`` to leave the store untouched (a no-op).
        """
        check_name("model_type", model_type)
        key = self._doc_key(model_type)
        for attempt in range(_MAX_ATTEMPTS):
            found = self.store.get_document(key)
            version = 0 if found is None else found.version
            doc = _empty_doc() if found is None else copy.deepcopy(cast(dict[str, Any], found.value))
            result = mutate(doc)
            if result is None:
                self._sync_gauge(model_type, doc["champion"])
                return None
            del doc["history"][:-self.max_history]
            if self.store.compare_and_set(key, cast(JSONValue, doc), expected_version=version):
                self._view.put(model_type, doc)
                self._sync_gauge(model_type, doc["champion"])
                return result
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise RegistryConflictError(model_type, _MAX_ATTEMPTS)

    def _sync_gauge(self, model_type: str, champion: str | None) -> None:
        # Every read refreshes this process's gauge, so workers that did not make a
        # change still export the current champion.
        previous = self._gauge_champion.get(model_type, "")
        if previous == champion or (champion is None and model_type not in self._gauge_champion):
            return  # a read of an unknown model type must not create state (anonymous GETs)
        self._gauge_champion[model_type] = champion
        tel = self._tel
        if previous:
            tel.set(semconv.MODEL_CHAMPION, (model_type, previous), 0.0)
        if champion:
            tel.set(semconv.MODEL_CHAMPION, (model_type, champion), 1.0)

    def _entry(self, doc: dict[str, Any], action: str, version: str | None,
               reason: str, key: str | None) -> None:
        doc["history"].append({
            "time": self.clock(), "action": action, "version": version,
            "previous_champion": doc["champion"], "reason": reason, "key": key,
        })

    @staticmethod
    def _seen(doc: dict[str, Any], key: str | None) -> bool:
        return key is not None and any(h.get("key") == key for h in doc["history"])

    @staticmethod
    def _require(doc: dict[str, Any], model_type: str, version: str, *, usable: bool = False) -> None:
        check_name("version", version)
        entry = doc["versions"].get(version)
        if entry is None:
            raise UnknownVersionError(model_type, version, tuple(doc["versions"]))
        if usable and entry.get("archived"):
            raise InvalidValueError("version", f"a version of {model_type!r} that is not archived", version)

    def _version(self, model_type: str, version: str, doc: dict[str, Any]) -> ModelVersion:
        entry = doc["versions"][version]
        if entry.get("archived"):
            role = Role.ARCHIVED
        elif doc["champion"] == version:
            role = Role.CHAMPION
        elif doc["challenger"] == version:
            role = Role.CHALLENGER
        else:
            role = Role.CANDIDATE
        counters = self.store.read_counters(self._stats_key(model_type, version))
        return ModelVersion(model_type, version, float(entry["created_at"]),
                            MappingProxyType(dict(entry.get("metadata") or {})), role,
                            SufficientStats.from_counters(counters))

    # -------------------------------------------------------------- versions
    def register(self, model_type: str, version: str, *, metadata: Mapping[str, Any] | None = None,
                 ) -> ModelVersion:
        """Register *version* of *model_type*; the first version of a type becomes its champion.

        Raises :class:`InvalidValueError` for a bad name or metadata, or when
        the version is already registered.
        """
        check_name("model_type", model_type)
        check_name("version", version)
        meta = _check_metadata(metadata)

        def mutate(doc: dict[str, Any]) -> bool:
            if version in doc["versions"]:
                raise InvalidValueError("version", f"a version not yet registered for {model_type!r}", version)
            doc["versions"][version] = {"created_at": self.clock(), "metadata": meta, "archived": False}
            self._entry(doc, "register", version, "registered", None)
            if doc["champion"] is None:
                self._entry(doc, "promote", version, "first version registered", None)
                doc["champion"] = version
            return True

        self._update(model_type, mutate)
        return self.get(model_type, version)

    def get(self, model_type: str, version: str) -> ModelVersion:
        """Return *version* with its metrics (this process's pending results flushed first)."""
        doc = self._read(model_type)
        self._require(doc, model_type, version)
        self.flush()
        return self._version(model_type, version, doc)

    def list_versions(self, model_type: str) -> list[ModelVersion]:
        """Every registered version of *model_type*, oldest first."""
        doc = self._read(model_type)
        self.flush()
        versions = [self._version(model_type, v, doc) for v in doc["versions"]]
        return sorted(versions, key=lambda m: (m.created_at, m.version))

    def model_types(self) -> list[str]:
        """Every model type with a registered version, sorted."""
        prefix = NAMESPACE + ":{"
        return sorted(k[len(prefix):k.index("}", len(prefix))] for k in self.store.list_keys(prefix)
                      if k.endswith("}:doc"))

    def champion_view(self, model_type: str) -> str | None:
        """The champion of *model_type* from this process's view: no store I/O, for request paths.

        Stale-while-revalidate: the view is refreshed in the background every
        *refresh_interval* seconds (a change by another worker shows within
        about that), kept while the store is unreachable (its age is exported
        in ``mlops_view_age_seconds{view="registry"}``) and restored to the store
        when the store lost it. ``None`` until the view first holds the model
        type (any read or write of it in this process, or the background load
        this call schedules).
        """
        return self._view.champion(model_type)

    def champion_version(self, model_type: str) -> str | None:
        """The champion's version string of *model_type* (one store read, no metrics).

        Request paths should use :meth:`champion_view`, which never touches the store.
        """
        champion: str | None = self._read(model_type)["champion"]
        return champion

    def get_champion(self, model_type: str) -> ModelVersion | None:
        """The champion of *model_type* with its metrics (this process's pending results flushed first), or
        ``None`` when nothing is registered."""
        return self._role(model_type, "champion")

    def get_challenger(self, model_type: str) -> ModelVersion | None:
        """The challenger of *model_type* (e.g. an A/B test's treatment) with its metrics, as
        :meth:`get_champion`, or ``None``."""
        return self._role(model_type, "challenger")

    def _role(self, model_type: str, role: str) -> ModelVersion | None:
        doc = self._read(model_type)
        version = doc[role]
        if version is None:
            return None
        self.flush()  # as get(): the metrics include every result this process recorded before the call
        return self._version(model_type, version, doc)

    def history(self, model_type: str) -> list[RoleChange]:
        """Every role change of *model_type*, oldest first (the newest ``max_history``)."""
        doc = self._read(model_type)
        return [RoleChange(float(h["time"]), model_type, h["action"], h.get("version"),
                           h.get("previous_champion"), h.get("reason", ""), h.get("key"))
                for h in doc["history"]]

    # ----------------------------------------------------------------- roles
    def promote(self, model_type: str, version: str, *, reason: str, idempotency_key: str | None = None) -> bool:
        """Make *version* the champion; the current one can be restored with :meth:`rollback`.

        Returns whether the roles changed: ``False`` when *version* already is
        the champion or a change with the same *idempotency_key* was already
        applied (so retries and racing workers change roles exactly once).
        """
        _check_reason(reason)

        def mutate(doc: dict[str, Any]) -> bool | None:
            self._require(doc, model_type, version, usable=True)
            if self._seen(doc, idempotency_key) or doc["champion"] == version:
                return None
            self._entry(doc, "promote", version, reason, idempotency_key)
            if doc["champion"] is not None:
                doc["previous"].append(doc["champion"])
            doc["champion"] = version
            if doc["challenger"] == version:
                doc["challenger"] = None
            return True

        changed = self._update(model_type, mutate) is not None
        if changed:
            log.info("promoted %s %s to champion: %s", model_type, version, reason)
        return changed

    def rollback(self, model_type: str, *, reason: str, idempotency_key: str | None = None) -> ModelVersion:
        """Restore the previous champion; returns the champion afterwards.

        Raises :class:`InvalidValueError` when there is no previous champion.
        """
        _check_reason(reason)

        def mutate(doc: dict[str, Any]) -> bool | None:
            if self._seen(doc, idempotency_key):
                return None
            previous = [v for v in doc["previous"] if not doc["versions"][v].get("archived")]
            if not previous:
                raise InvalidValueError("model_type", "a model type with a previous champion to roll back to",
                                        model_type)
            target = previous[-1]
            self._entry(doc, "rollback", target, reason, idempotency_key)
            doc["previous"] = previous[:-1]
            doc["champion"] = target
            if doc["challenger"] == target:
                doc["challenger"] = None
            return True

        self._update(model_type, mutate)
        champion = self.get_champion(model_type)
        assert champion is not None  # rollback always leaves a champion
        return champion

    def set_challenger(self, model_type: str, version: str, *, reason: str,
                       idempotency_key: str | None = None) -> bool:
        """Make *version* the challenger (e.g. an A/B test's treatment); returns whether roles changed."""
        _check_reason(reason)

        def mutate(doc: dict[str, Any]) -> bool | None:
            self._require(doc, model_type, version, usable=True)
            if doc["champion"] == version:
                raise InvalidValueError("version", f"a version that is not the champion of {model_type!r}",
                                        version)
            if self._seen(doc, idempotency_key) or doc["challenger"] == version:
                return None
            self._entry(doc, "challenger", version, reason, idempotency_key)
            doc["challenger"] = version
            return True

        return self._update(model_type, mutate) is not None

    def clear_challenger(self, model_type: str, *, reason: str, version: str | None = None,
                         idempotency_key: str | None = None) -> bool:
        """Remove the challenger role (only from *version* when given); returns whether roles changed."""
        _check_reason(reason)

        def mutate(doc: dict[str, Any]) -> bool | None:
            current = doc["challenger"]
            if (self._seen(doc, idempotency_key) or current is None
                    or (version is not None and current != version)):
                return None
            self._entry(doc, "clear_challenger", current, reason, idempotency_key)
            doc["challenger"] = None
            return True

        return self._update(model_type, mutate) is not None

    def record_event(self, model_type: str, action: str, *, reason: str, version: str | None = None,
                     idempotency_key: str | None = None) -> bool:
        """Add an entry that moves no role (e.g. a rollout step) to the history; returns whether it was added.

        With *idempotency_key*, the entry is added once however many callers record it.
        """
        _check_reason(reason)
        check_name("action", action)

        def mutate(doc: dict[str, Any]) -> bool | None:
            if self._seen(doc, idempotency_key):
                return None
            self._entry(doc, action, version, reason, idempotency_key)
            return True

        return self._update(model_type, mutate) is not None

    def archive(self, model_type: str, version: str, *, reason: str = "archived") -> bool:
        """Retire *version*: it can no longer be promoted or rolled back to.

        The champion cannot be archived (promote another version first).
        Returns whether anything changed.
        """
        _check_reason(reason)

        def mutate(doc: dict[str, Any]) -> bool | None:
            self._require(doc, model_type, version)
            if doc["champion"] == version:
                raise InvalidValueError("version", f"a version that is not the champion of {model_type!r}",
                                        version)
            entry = doc["versions"][version]
            if entry.get("archived"):
                return None
            entry["archived"] = True
            self._entry(doc, "archive", version, reason, None)
            if doc["challenger"] == version:
                doc["challenger"] = None
            doc["previous"] = [v for v in doc["previous"] if v != version]
            return True

        return self._update(model_type, mutate) is not None

    # -------------------------------------------------------------- hot path
    def update_metrics(self, model_type: str, version: str, inference_time_ms: float | None,
                       confidence: float | None, error: bool = False) -> None:
        """Add one inference result to the version's running metrics (hot path; never raises).

        Write-behind: the store buffers the increment. Invalid values are
        counted in ``mlops_invalid_measurements_total{metric="registry.<field>"}``
        and left out; ``None`` means not measured.
        """
        try:
            checked = check_result_reporting(inference_time_ms, confidence, error, self._report_invalid)
            if checked is None:
                return
            latency, conf, err = checked
            try:
                key = self._stats_keys.get((model_type, version)) or self._stats_key(model_type, version)
            except (ValueError, TypeError):
                self._tel.invalid("registry.model_version", (model_type, version))
                return
            self._buffer.add(key, SufficientStats.delta_values(latency, conf, err))
        except Exception as exc:  # the caller's request must never fail because of us
            self._tel.fault("registry.update_metrics", exc)

    def _update_checked(self, key: str, inference_time_ms: float | None, confidence: float | None,
                        error: bool) -> None:
        """:meth:`update_metrics` for values the caller already validated (as ``check_result`` would
        accept them unchanged) and a *key* from :meth:`_stats_key`: ``runtime.prediction()``'s path,
        which must not pay for the same checks twice (A/B takes the same values). Never raises."""
        try:
            self._buffer.add(key, SufficientStats.delta_values(inference_time_ms, confidence, error))
        except Exception as exc:  # the caller's request must never fail because of us
            self._tel.fault("registry.update_metrics", exc)

    def _update_checked_many(self, key: str, inference_times_ms: Sequence[float],
                             confidences: Sequence[float]) -> None:
        """:meth:`_update_checked` of several successful results with both values, summed first (one
        buffer round): ``runtime.prediction()``'s batch of deferred results. Never raises."""
        try:
            self._buffer.add(key, SufficientStats.delta_sums(inference_times_ms, confidences))
        except Exception as exc:
            self._tel.fault("registry.update_metrics", exc)

    def close(self) -> None:
        """Deliver buffered results and stop the view's refresher (the store is closed by its owner). Idempotent."""
        self._tel.apply_pending()  # the results requests deferred off their path, into the buffer first
        self._view.close()
        self._buffer.close()


def _view_fault(ref: weakref.ref[ModelRegistry]) -> Callable[[str, BaseException], None]:
    """The refresher's error hook: count on the registry's telemetry (held weakly)."""
    def on_error(name: str, exc: BaseException) -> None:
        registry = ref()
        (registry._tel if registry is not None else default_telemetry()).fault("registry.view", exc)
    return on_error


class _DocView:
    """The registry documents this process knows, refreshed in the background (no store I/O for readers)."""

    def __init__(self, registry: ModelRegistry, interval: float) -> None:
        self._registry = weakref.ref(registry)
        self._store = registry.store
        self._interval = interval
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[dict[str, Any], float]] = {}
        self._wanted: set[str] = set()
        self._restore: set[str] = set()
        # Started lazily by the first put/champion; runs refresh_due at once and then after the delay it
        # returns, or when woken. Holds this view weakly (the view holds the registry weakly).
        self._worker: PeriodicWorker[_DocView] = PeriodicWorker(
            self, _DocView.refresh_due, name="mlops-otel-registry-view", interval=max(interval / 2, 0.001),
            run_first=True, on_error=_view_fault(self._registry))
        after_fork_in_child(self, _DocView._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._worker.after_fork()  # the next put/champion starts the child's refresher

    def put(self, model_type: str, doc: dict[str, Any]) -> None:
        with self._lock:
            self._docs[model_type] = (copy.deepcopy(doc), time.monotonic())
        self._start()

    def champion(self, model_type: str) -> str | None:
        with self._lock:
            entry = self._docs.get(model_type)
            if entry is None and model_type not in self._wanted:
                self._wanted.add(model_type)
                self._worker.wake()
        self._start()
        champion: str | None = None if entry is None else entry[0]["champion"]
        return champion

    def lost(self, model_type: str) -> dict[str, Any] | None:
        """The known document of *model_type*, now missing in the store (scheduled for restore)."""
        with self._lock:
            entry = self._docs.get(model_type)
            if entry is None:
                return None
            self._restore.add(model_type)
        self._worker.wake()
        return entry[0]

    def restore_all(self) -> None:
        """State-loss listener: write back every known document the store no longer has."""
        with self._lock:
            self._restore.update(self._docs)
        self._restore_pending()

    def _restore_pending(self) -> None:
        with self._lock:
            todo = [(mt, copy.deepcopy(self._docs[mt][0])) for mt in self._restore if mt in self._docs]
            self._restore.clear()
        restored = []
        for model_type, doc in todo:
            try:
                # Only where the document is absent: a worker that restored first (or a newer
                # change made since) wins, and the CAS makes exactly one restore count.
                if self._store.compare_and_set(ModelRegistry._doc_key(model_type), cast(JSONValue, doc),
                                               expected_version=0):
                    restored.append(model_type)
            except Exception as exc:
                with self._lock:
                    self._restore.add(model_type)  # retried on the next refresh
                registry = self._registry()
                if registry is not None:
                    registry._tel.fault("registry.restore", exc)
        if restored:
            log.warning("mlops-otel: restored the registry roles of %s to the store after it lost them",
                        ", ".join(sorted(restored)))

    def refresh_due(self) -> float:
        """Restore what was lost, re-read the documents older than the interval; return the next delay."""
        if self._restore:
            self._restore_pending()
        now = time.monotonic()
        with self._lock:
            due = [mt for mt, (_, t) in self._docs.items() if now - t >= self._interval]
            due += [mt for mt in self._wanted if mt not in self._docs]
            self._wanted.clear()
        registry = self._registry()
        for model_type in due:
            try:
                found = self._store.get_document(ModelRegistry._doc_key(model_type))
            except Exception:
                break  # unreachable: keep serving the last view; its age grows and is exported
            if found is not None:
                # get_document returns a fresh copy this view owns (every store copies on read):
                # no second deep copy on every refresh (#16).
                doc = cast(dict[str, Any], found.value)
                with self._lock:
                    self._docs[model_type] = (doc, time.monotonic())
                if registry is not None:
                    registry._sync_gauge(model_type, doc["champion"])
            elif model_type in self._docs:
                with self._lock:
                    self._restore.add(model_type)
        with self._lock:
            oldest = min((t for _, t in self._docs.values()), default=None)
        now = time.monotonic()
        if registry is not None and oldest is not None:
            registry._tel.set(semconv.VIEW_AGE, ("registry",), max(0.0, now - oldest))
        if self._restore:
            return min(self._interval / 2, _RESTORE_RETRY_S)
        # Sleep until the oldest document is due (#16: waking every half interval found nothing due
        # every other time, and a thread's wake-up is what costs); a document read just failed
        # (unreachable store) is retried after half an interval, as it was.
        if oldest is None or now - oldest >= self._interval:
            return self._interval / 2
        return max(oldest + self._interval - now, _MIN_REFRESH_DELAY_S)

    def _start(self) -> None:
        if not self._worker.started:
            self._worker.start()

    def close(self) -> None:
        self._worker.stop(timeout=5.0)
