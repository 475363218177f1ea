"""Write-behind delivery: batching, retry with backoff, exactly-once, over a small executor protocol.

:class:`Delivery` owns everything between the hot path's :class:`PendingBuffer`
and the backend: freezing pending writes into sequenced batches, resending the
same batch until every key is acknowledged, telling transient failures from
rejections, counting and logging. It never talks to Redis itself: an
:class:`Executor` runs one round trip of :class:`Call` objects and reports a
result or an exception per call. ``RedisStore`` plugs in its connection (or
Cluster) handling; the unit tests plug in an in-memory fake that can lose
replies, fail, reject and restart, so this logic is tested without a server.

Exactly-once contract of an executor: a call carries ``(key, companion, seq)``;
the backend applies it only if the companion's last applied ``seq`` for that
key is lower, and records the new one atomically with the update (the Redis
executor does this in one Lua script). Replies: ``1`` applied, ``0`` already
applied (a retry), ``"overflow:<field>"`` refused because a field would become
infinite (counted as invalid, marked applied).
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import attrs

from .. import semconv
from ..telemetry import Telemetry
from ._keys import hash_tag, key_slot, slot_tag
from ._writebehind import Batch, PendingBuffer

__all__ = ["Call", "Delivery", "Executor", "Incomplete"]

logger = logging.getLogger("mlops_otel.stores")


@attrs.frozen
class Call:
    """One update of a batch: ``op`` ``incr`` (args: field, delta, ...) or ``append`` (args: max_len, items...)."""

    key: str
    op: Literal["incr", "append"]
    full: str
    companion: str
    seq: int
    ttl: int
    args: tuple[str | int, ...]


class Executor(Protocol):
    """One round trip to the backend (one pipeline per node on a Cluster)."""

    def execute(self, calls: list[Call]) -> list[Any]:
        """Send *calls*; return one reply or exception per call. Raise when nothing could be sent."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether the same call may simply be sent again later (else it is rejected and dropped)."""


class Incomplete(Exception):
    """Some keys of a batch are not acknowledged yet; *cause* says why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


@attrs.define(eq=False)
class Delivery:
    """The pending writes of one process and their delivery through an :class:`Executor`."""

    executor: Callable[[], Executor]
    telemetry: Callable[[], Telemetry]
    name: str
    prefix: str = "mlops"
    cluster: Callable[[], bool | None] = attrs.field(default=lambda: None)
    max_pending: int = 100_000
    max_batch: int = 5_000
    flush_interval: float = 0.1
    max_backoff: float = 5.0
    dedup_ttl: int = 86_400
    labels: tuple[str, ...] = ("redis",)

    pending: PendingBuffer = attrs.field(init=False)
    inflight: Batch | None = attrs.field(default=None, init=False)
    seq: int = attrs.field(default=0, init=False)
    writer: str = attrs.field(factory=lambda: secrets.token_hex(8), init=False)
    send_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    failures: int = attrs.field(default=0, init=False)
    next_attempt: float = attrs.field(default=0.0, init=False)
    #: Called when delivery succeeds again after failures (the store then checks its sentinel).
    on_recovery: Callable[[], None] | None = attrs.field(default=None, kw_only=True)
    _logged: set[str] = attrs.field(factory=set, init=False)
    _rejections_logged: set[str] = attrs.field(factory=set, init=False)
    _drop_logged: bool = attrs.field(default=False, init=False)
    _companions: dict[str, str] = attrs.field(factory=dict, init=False)
    _slot_tags: dict[int, str] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.pending = PendingBuffer(self.max_pending)

    def reset_after_fork(self) -> None:
        """A forked child delivers only its own writes, under a new writer identity."""
        self.pending = PendingBuffer(self.max_pending)
        self.inflight = None
        self.seq = 0
        self.writer = secrets.token_hex(8)
        self.send_lock = threading.Lock()
        self.failures = 0
        self.next_attempt = 0.0
        self._logged = set()
        self._drop_logged = False
        self._companions = {}

    # ------------------------------------------------------------ hot path
    def add_counts(self, key: str, pairs: list[tuple[str, float]], *, closed: bool) -> None:
        """Buffer one increment (already validated); drops are counted, overflows counted as invalid."""
        try:
            added = not closed and self.pending.add_counts(key, pairs)
        except OverflowError as exc:  # the pending sum would become infinite: reject this increment
            field = str(exc)
            self.telemetry().invalid(field, dict(pairs)[field])
            return
        if not added:
            self.drop(1, closed=closed)

    def add_items(self, key: str, items: list[str], max_len: int, *, closed: bool) -> None:
        """Buffer one window append (already encoded); drops are counted."""
        if closed or not self.pending.add_items(key, items, max_len):
            self.drop(1, closed=closed)

    def drop(self, operations: int, *, closed: bool) -> None:
        self.telemetry().add(semconv.STORE_DROPPED, self.labels, float(operations))
        if not self._drop_logged:
            self._drop_logged = True
            reason = "the store is closed" if closed else (
                f"{self.pending.total} writes are pending (max_pending={self.max_pending})")
            logger.warning("mlops-otel: RedisStore %s dropped a write because %s; drops are counted in "
                           "mlops_store_dropped_total (logged once per outage)", self.name, reason)

    # ------------------------------------------------------------ delivery
    def flush(self, timeout: float) -> bool:
        """Deliver everything pending now within *timeout* seconds; ``False`` keeps the rest pending."""
        deadline = time.monotonic() + timeout
        if not self.send_lock.acquire(timeout=timeout):
            return False
        try:
            return self.drain_locked(deadline, freeze=True)
        finally:
            self.send_lock.release()
            self.publish_pending()

    def tick(self) -> float | None:
        """One background attempt; return the delay before the next, ``None`` when it should come soon."""
        now = time.monotonic()
        if now < self.next_attempt:
            return self.next_attempt - now
        if not self.send_lock.acquire(blocking=False):
            return self.flush_interval  # a flush() or delete() is delivering right now
        try:
            if self.inflight is None:
                self.freeze_locked()
            ok = self.inflight is None or self.attempt_locked()
        finally:
            self.send_lock.release()
        self.publish_pending()
        if ok:
            self.next_attempt = 0.0
            return 0.0 if self.pending.entries >= self.max_batch else None
        delay = self.retry_delay()
        self.next_attempt = time.monotonic() + delay
        return delay

    def idle(self) -> bool:
        """Whether nothing is pending or in flight (the flusher may then sleep until a write comes)."""
        pending = self.pending
        return self.inflight is None and not pending.counters and not pending.windows and self.next_attempt == 0.0

    def discard_key(self, key: str, deadline: float) -> bool:
        """Forget this process's writes to *key*; ``False`` when an undelivered batch still holds it.

        Call with :attr:`send_lock` held.
        """
        self.pending.discard(key)
        batch = self.inflight
        if batch is not None and (key in batch.counters or key in batch.windows):
            return self.drain_locked(deadline, freeze=False)
        return True

    def publish_pending(self) -> None:
        self.telemetry().set(semconv.STORE_PENDING, self.labels, float(self.pending.total))

    def retry_delay(self) -> float:
        exponent = min(max(self.failures - 1, 0), 30)
        return min(self.max_backoff, self.flush_interval * 2.0**exponent) * random.uniform(0.5, 1.0)

    def freeze_locked(self) -> None:
        batch = self.pending.freeze(self.seq + 1)
        if batch is not None:
            self.seq = batch.seq
            self.inflight = batch

    def drain_locked(self, deadline: float, *, freeze: bool) -> bool:
        """Deliver the in-flight batch (and, with *freeze*, what is pending now) before *deadline*."""
        frozen = not freeze
        while True:
            if self.inflight is None:
                if frozen:
                    return True
                self.freeze_locked()
                frozen = True
                if self.inflight is None:
                    return True
            if self.attempt_locked():
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.retry_delay(), remaining))

    def attempt_locked(self) -> bool:
        """Send the in-flight batch once; return whether it is fully acknowledged."""
        batch = self.inflight
        assert batch is not None
        try:
            self.send(batch)
        except Exception as exc:
            self._on_failure(exc.cause if isinstance(exc, Incomplete) else exc)
            return False
        self.inflight = None
        self._on_success()
        return True

    def _on_success(self) -> None:
        if self.failures:
            logger.info("mlops-otel: RedisStore %s delivered pending writes after %d failed attempts",
                        self.name, self.failures)
            self.next_attempt = 0.0
            if self.on_recovery is not None:
                self.on_recovery()
        self.failures = 0
        self._logged.clear()
        self._drop_logged = False

    def _on_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.telemetry().add(semconv.STORE_FLUSH_ERRORS, self.labels)
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("mlops-otel: RedisStore %s flush failed (%s: %s); %d pending writes are kept "
                           "and retried with backoff (logged once per failure kind and outage)",
                           self.name, kind, exc, self.pending.total)

    def calls(self, batch: Batch) -> list[Call]:
        """The batch as one call per key."""
        seq, ttl = batch.seq, self.dedup_ttl
        out = []
        for key, fields in batch.counters.items():
            full = self.full(key)
            args: list[str | int] = []
            for name, delta in fields.items():
                args += (name, repr(delta))
            out.append(Call(key, "incr", full, self.companion(full), seq, ttl, tuple(args)))
        for key, items in batch.windows.items():
            full = self.full(key)
            out.append(Call(key, "append", full, self.companion(full), seq, ttl,
                            (items.maxlen or len(items), *items)))
        return out

    def send(self, batch: Batch) -> None:
        """Send *batch* once: acknowledged and rejected keys leave it; raise if any key remains."""
        executor = self.executor()
        calls = self.calls(batch)
        results = executor.execute(calls)
        released = 0
        rejected = 0
        transient: BaseException | None = None
        tel = self.telemetry()
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                if executor.is_transient(result):
                    transient = result
                    continue
                rejected += 1
                self._reject(call, result)
            elif isinstance(result, str) and result.startswith("overflow:"):
                field = result[len("overflow:"):]
                tel.invalid(field, batch.counters.get(call.key, {}).get(field))
            released += batch.discard(call.key)
        self.pending.release(released)
        if rejected:
            tel.add(semconv.STORE_DROPPED, self.labels, float(rejected))
        if transient is not None:
            raise Incomplete(transient)

    def _reject(self, call: Call, exc: BaseException) -> None:
        # A rejection repeats on every flush that touches the key: log it once per store.
        kind = type(exc).__name__
        if kind not in self._rejections_logged:
            self._rejections_logged.add(kind)
            logger.error("mlops-otel: Redis rejected the pending update of key %r (%s); it is dropped and "
                         "counted in mlops_store_dropped_total (logged once)", call.key, exc)

    # ------------------------------------------------------------ key naming
    def full(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def companion(self, full: str) -> str:
        """The writer's dedup hash for *full*: same Cluster slot, outside the key space."""
        name = self._companions.get(full)
        if name is None:
            tag = hash_tag(full)
            if tag is not None:
                anchor = "{" + tag + "}"
            elif self.cluster():
                slot = key_slot(full)
                found = self._slot_tags.get(slot)
                if found is None:
                    found = self._slot_tags[slot] = slot_tag(slot)
                anchor = "{" + found + "}"
            else:
                anchor = ""
            name = f"{self.prefix}#wb:{self.writer}:{anchor}"
            if len(self._companions) >= 100_000:
                self._companions.clear()
            self._companions[full] = name
        return name
