"""The shared Redis store (standalone or Cluster) with write-behind hot-path writes."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import attrs

from .. import semconv
from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker
from ..telemetry import Telemetry, default_telemetry
from ..validation import InvalidValueError
from ._delivery import Call, Delivery
from ._hooks import StoreHooks
from ._keys import check_prefix, glob_escape, key_slot
from ._protocol import JSONValue, StoreError, Versioned
from ._values import (
    check_expected_version,
    check_max_len,
    clean_deltas,
    decode_item,
    encode_document,
    encode_items,
)

try:
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        NoScriptError,
        OutOfMemoryError,
        ReadOnlyError,
        RedisClusterException,
        RedisError,
        ResponseError,
        TryAgainError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis-py
    raise ImportError(
        "RedisStore needs redis-py: install the 'redis' extra, pip install 'mlops-otel[redis]'"
    ) from exc

__all__ = ["RedisStore"]

logger = logging.getLogger("mlops_otel.stores")

_Client: TypeAlias = Redis | RedisCluster
_T = TypeVar("_T")
#: A write that wakes the parked flusher is delivered this long after it (seconds, at most
#: *flush_interval*): the other writes of its burst join the same batch. The background workers of a
#: process run on one schedule (see ``mlops_otel._worker``), so a loaded worker's writes (the deferred
#: batch, the drift samples, the A/B sync) come together, within the 21 ms of a beat's slots
#: (#16, docs/performance-analysis.md).
_GATHER_S = 0.03

# ----------------------------------------------------------------- Lua scripts
# Every write-behind script takes KEYS = [data key, writer's companion hash] and
# ARGV = [batch sequence number, companion TTL, ...]. The companion hash lives on
# the same Cluster slot as the data key and records, per data key, the last
# batch of this writer that was applied. A batch retried after a lost reply is
# therefore applied exactly once. The update and its bookkeeping are one script,
# so they are atomic (also in the AOF and on replicas).
_DEDUP = """
local seq = tonumber(ARGV[1])
local last = redis.call('HGET', KEYS[2], KEYS[1])
if last and tonumber(last) >= seq then return 0 end
"""
_MARK = """
redis.call('HSET', KEYS[2], KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
# An increment that would make a field infinite (Redis sums in long double, so 2 * 1.7e308 is
# stored, then read back as inf) is refused as a whole, so the sums written together never
# disagree; the batch is still marked applied and the reply names the field.
_INCR_LUA = _DEDUP + """
for i = 3, #ARGV, 2 do
  local s = (tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0) + tonumber(ARGV[i + 1])
  if s ~= s or s == math.huge or s == -math.huge then
    redis.call('HSET', KEYS[2], KEYS[1], ARGV[1])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
    return 'overflow:' .. ARGV[i]
  end
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
""" + _MARK
# RPUSH in chunks: unpack() of more than ~8000 values overflows Lua's C stack.
_APPEND_LUA = _DEDUP + """
local n = #ARGV
for i = 4, n, 4000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 3999, n)))
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
""" + _MARK
# Documents are hashes {v, doc, tok}. tok is the winner's random token: a caller
# whose reply was lost and who retries sees its own token and still wins (once).
_CAS_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'tok')
local v = tonumber(cur[1]) or 0
if v ~= tonumber(ARGV[1]) then
  if cur[2] == ARGV[3] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'v', tostring(v + 1), 'doc', ARGV[2], 'tok', ARGV[3])
return 1
"""
_SCRIPTS = (_INCR_LUA, _APPEND_LUA, _CAS_LUA)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8")).hexdigest()  # Redis names scripts by SHA1


_INCR_SHA, _APPEND_SHA, _CAS_SHA = (_sha(s) for s in _SCRIPTS)

#: Errors after which the same batch is simply sent again later.
_TRANSIENT = (
    RedisConnectionError,  # includes BusyLoadingError (LOADING) and authentication errors
    RedisTimeoutError,
    NoScriptError,  # the server restarted and lost its script cache
    AskError,  # includes MovedError: the slot moved, refresh the topology
    TryAgainError,
    ClusterDownError,
    ReadOnlyError,  # a failover is in progress
    OutOfMemoryError,  # maxmemory reached: keep the data and retry
)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    # "BUSY Redis is busy running a script" has no exception class of its own.
    return isinstance(exc, ResponseError) and str(exc).startswith("BUSY")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _redact(url: str) -> str:
    """*url* without its password (for repr and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparsable url>"


def _check_url(_inst: object, _attr: attrs.Attribute[str], url: object) -> None:
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidValueError("url", "a URL starting with redis://, rediss:// or unix://", _redact(str(url)))


def _positive(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise InvalidValueError(attr.name, "a positive finite number", value)


def _positive_int(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidValueError(attr.name, "an int >= 1", value)


def _check_prefix(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    check_prefix(value)


def _check_cluster(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidValueError("cluster", "None (detect), True or False", value)


_SHAS = {"incr": _INCR_SHA, "append": _APPEND_SHA}


class _RedisExecutor:
    """The :class:`~mlops_otel.stores._delivery.Executor` of a :class:`RedisStore`: one pipelined round trip.

    Standalone: one non-transactional pipeline of EVALSHA calls. Cluster: one
    pipeline per primary (redis-py's ClusterPipeline refuses EVALSHA), with the
    topology refreshed after a MOVED/ASK/TRYAGAIN/CLUSTERDOWN or a node failure.
    Scripts missing after a server restart are loaded and the affected calls resent.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = weakref.ref(store)
        self.topology_stale = False

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (AskError, ClusterDownError, TryAgainError)):
            self.topology_stale = True
        return _is_transient(exc)

    def execute(self, calls: list[Call]) -> list[Any]:
        store = self._store()
        if store is None or not calls:
            return [RuntimeError("the store is gone")] * len(calls)
        client = store._get_client()
        results = self._round_trip(client, calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            store._load_scripts(client)
            for i, result in zip(missing, self._round_trip(client, [calls[i] for i in missing]), strict=True):
                results[i] = result
        return results

    def _round_trip(self, client: _Client, calls: list[Call]) -> list[Any]:
        if isinstance(client, RedisCluster):
            return self._cluster(client, calls)
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(_SHAS[call.op], 2, call.full, call.companion, call.seq, call.ttl, *call.args)
        return list(pipe.execute(raise_on_error=False))

    def _cluster(self, client: RedisCluster, calls: list[Call]) -> list[Any]:
        if self.topology_stale:
            client.nodes_manager.initialize()
            self.topology_stale = False
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, call in enumerate(calls):
            node = client.nodes_manager.get_node_from_slot(key_slot(call.full))
            groups.setdefault(node.name, (node, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for node, indexes in groups.values():
            try:
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
                for i in indexes:
                    call = calls[i]
                    pipe.evalsha(_SHAS[call.op], 2, call.full, call.companion, call.seq, call.ttl, *call.args)
                replies = list(pipe.execute(raise_on_error=False))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self.topology_stale = True
                replies = [exc] * len(indexes)
            for i, reply in zip(indexes, replies, strict=True):
                results[i] = reply
        return results


def _flusher_fault(ref: weakref.ReferenceType[RedisStore]) -> Callable[[str, BaseException], None]:
    """The flusher's error hook (_tick handles delivery faults itself): count on the store's telemetry."""
    def on_error(name: str, exc: BaseException) -> None:
        store = ref()
        (store._tel if store is not None else default_telemetry()).fault("store.flusher", exc)
    return on_error


def _close_at_exit(ref: weakref.ReferenceType[RedisStore]) -> None:
    store = ref()
    if store is not None:
        store.close()


@attrs.define(eq=False)
class RedisStore:
    """A :class:`~mlops_otel.stores.StateStore` on Redis, shared by every worker and host.

    Hot-path writes (:meth:`incr`, :meth:`append`) only touch process memory:
    increments are merged per key and field, window appends are kept trimmed to
    their ``max_len``. A daemon thread delivers them every *flush_interval*
    seconds (sooner when *max_batch* entries are pending) in one pipelined round
    trip (one per node on a Cluster). Each key's update is one Lua script that
    applies a batch at most once per writer, and a batch is retried unchanged
    until acknowledged, so delivery is exactly-once across lost replies and
    Redis restarts. While Redis is unreachable up to *max_pending* entries are
    kept (beyond that writes are dropped, counted in ``mlops_store_dropped_total``
    and logged once) and retried with exponential backoff capped at
    *max_backoff* seconds.

    Reads and :meth:`compare_and_set` go to Redis and raise
    :class:`~mlops_otel.stores.StoreError` when it fails; call :meth:`flush`
    first to read this process's own writes.

    *prefix* namespaces one deployment; keys keep their ``{hash tag}``, so all
    keys of a group share a Cluster slot. *cluster*: ``None`` detects it.
    """

    url: str = attrs.field(validator=_check_url, repr=_redact)
    prefix: str = attrs.field(default="mlops", kw_only=True, validator=_check_prefix)
    cluster: bool | None = attrs.field(default=None, kw_only=True, validator=_check_cluster)
    flush_interval: float = attrs.field(default=0.1, kw_only=True, validator=_positive)
    max_batch: int = attrs.field(default=5_000, kw_only=True, validator=_positive_int)
    max_pending: int = attrs.field(default=100_000, kw_only=True, validator=_positive_int)
    max_backoff: float = attrs.field(default=5.0, kw_only=True, validator=_positive)
    flush_timeout: float = attrs.field(default=5.0, kw_only=True, validator=_positive)
    socket_timeout: float = attrs.field(default=2.0, kw_only=True, validator=_positive)
    dedup_ttl: int = attrs.field(default=86_400, kw_only=True, validator=_positive_int)
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True, repr=False)
    #: Seconds between checks of the state sentinel (see :meth:`add_state_loss_listener`).
    epoch_interval: float = attrs.field(default=1.0, kw_only=True, validator=_positive)

    kind: str = attrs.field(default="redis", init=False)
    _hooks: StoreHooks = attrs.field(factory=StoreHooks, init=False, repr=False)
    _epoch: str | None = attrs.field(default=None, init=False, repr=False)
    _epoch_due: float = attrs.field(default=0.0, init=False, repr=False)
    _labels: tuple[str] = attrs.field(init=False, repr=False)
    _delivery: Delivery = attrs.field(init=False, repr=False)
    _executor: _RedisExecutor = attrs.field(init=False, repr=False)
    _state_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _client_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _client: _Client | None = attrs.field(default=None, init=False, repr=False)
    _inherited: list[_Client] = attrs.field(factory=list, init=False, repr=False)
    _is_cluster: bool | None = attrs.field(default=None, init=False, repr=False)
    _flusher: PeriodicWorker[RedisStore] = attrs.field(init=False, repr=False)
    _closed: bool = attrs.field(default=False, init=False, repr=False)
    #: The flusher found nothing to deliver and sleeps until the next sentinel check; the next write wakes it.
    _parked: bool = attrs.field(default=False, init=False, repr=False)
    #: The flusher returned a parked delay: its next tick is a write's wake-up or the sentinel check.
    _resting: bool = attrs.field(default=False, init=False, repr=False)
    #: When the flusher last delivered a batch (monotonic): the next one comes *flush_interval* later at the soonest.
    _delivered_at: float = attrs.field(default=float("-inf"), init=False, repr=False)
    _atexit_hook: Callable[[], None] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def _tel(self) -> Telemetry:
        # Resolved per use: a store built before configure() reports into the configured default.
        return default_telemetry() if self.telemetry is None else self.telemetry

    def __attrs_post_init__(self) -> None:
        self._labels = (self.kind,)
        self._is_cluster = self.cluster
        self._executor = _RedisExecutor(self)
        self._delivery = Delivery(
            lambda: self._executor, lambda: self._tel, _redact(self.url), prefix=self.prefix,
            cluster=lambda: self._is_cluster, max_pending=self.max_pending, max_batch=self.max_batch,
            flush_interval=self.flush_interval, max_backoff=self.max_backoff, dedup_ttl=self.dedup_ttl,
            labels=self._labels, on_recovery=self._on_recovery,
        )
        # The flusher (started by the first write) runs _tick at once and then after the delay it
        # returns, or when woken (a full batch, Redis back). It holds the store weakly: a store dropped
        # without close() is collected and the thread exits at its next wake-up.
        self._flusher = PeriodicWorker(self, RedisStore._tick, name="mlops-otel-redis-flusher",
                                       interval=self.flush_interval, run_first=True,
                                       on_error=_flusher_fault(weakref.ref(self)))
        # Exit: under a Runtime, the runtime's exit hook closes this store after its owners (the
        # stated order) and close() unregisters this hook. A store used without a Runtime keeps its
        # own hook, so what it buffered is still delivered at exit (owners drained first).
        self._atexit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit_hook)
        after_fork_in_child(self, RedisStore._after_fork)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "mlops",
        cluster: bool | None = None,
        flush_interval: float = 0.1,
        max_batch: int = 5_000,
        max_pending: int = 100_000,
        max_backoff: float = 5.0,
        flush_timeout: float = 5.0,
        socket_timeout: float = 2.0,
        dedup_ttl: int = 86_400,
        telemetry: Telemetry | None = None,
        epoch_interval: float = 1.0,
    ) -> RedisStore:
        """Create a store for ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS) or ``unix://``.

        Nothing connects yet: the first read, write delivery or flush does, so a
        service can start while Redis is still coming up.
        """
        return cls(
            url, prefix=prefix, cluster=cluster, flush_interval=flush_interval, max_batch=max_batch,
            max_pending=max_pending, max_backoff=max_backoff, flush_timeout=flush_timeout,
            socket_timeout=socket_timeout, dedup_ttl=dedup_ttl, telemetry=telemetry,
            epoch_interval=epoch_interval,
        )

    # ------------------------------------------------------------ lifecycle
    def _after_fork(self) -> None:
        # The parent's pending writes are the parent's to deliver. The child gets
        # fresh buffers, locks, a new writer identity and, lazily, its own
        # connections and flusher thread.
        self._delivery.reset_after_fork()
        self._state_lock = threading.Lock()
        self._client_lock = threading.Lock()
        if self._client is not None:
            # Never close the parent's sockets from here; just stop using them.
            self._inherited.append(self._client)
        self._client = None
        self._flusher.after_fork()  # the child's first write starts its own flusher
        self._epoch_due = 0.0
        self._parked = False
        self._resting = False
        self._delivered_at = float("-inf")

    def _ensure_flusher(self) -> None:
        with self._state_lock:
            if self._flusher.started or self._closed:
                return
        self._flusher.start()

    def close(self, timeout: float | None = None) -> None:
        """Drain the owners buffering into this store, deliver pending writes, stop the flusher.

        Returns within *timeout* seconds (default *flush_timeout*) whatever Redis
        does: the delivery runs on a helper thread that is abandoned at the
        deadline, and what is still pending then is counted in
        ``mlops_store_dropped_total`` and logged. Idempotent; also runs at
        interpreter exit. Writes after closing are dropped and counted.
        """
        with self._state_lock:
            if self._closed:
                return
            limit = self.flush_timeout if timeout is None else max(0.0, timeout)
            deadline = time.monotonic() + limit
        # Owners first (registry, A/B, drift buffers): their sums become pending writes here.
        self._hooks.drain_owners()
        with self._state_lock:
            self._closed = True
        done = threading.Event()
        delivered = [False]

        def deliver() -> None:
            try:
                delivered[0] = self.flush(max(0.0, deadline - time.monotonic()))
            finally:
                done.set()

        helper = threading.Thread(target=deliver, name="mlops-otel-redis-close", daemon=True)
        helper.start()
        try:
            done.wait(max(0.0, deadline - time.monotonic()))
            if not delivered[0]:
                lost = self._delivery.pending.total
                if lost:
                    self._tel.add(semconv.STORE_DROPPED, self._labels, float(lost))
                    logger.warning("mlops-otel: RedisStore %s closed with %d undelivered pending writes "
                                   "(counted in mlops_store_dropped_total)", _redact(self.url), lost)
        finally:
            self._flusher.stop(timeout=max(0.0, deadline - time.monotonic()))
            if self._atexit_hook is not None:
                atexit.unregister(self._atexit_hook)
                self._atexit_hook = None
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:  # pragma: no cover - closing sockets should not fail
                    logger.debug("mlops-otel: closing the Redis client failed", exc_info=True)

    # ------------------------------------------------------------ owners and state loss
    def add_owner(self, hand_over: Callable[[], None]) -> None:
        """Register an owner's *hand_over*, called by :meth:`close` before the final delivery.

        :class:`~mlops_otel.stores.CounterBuffer` registers itself, so closing the
        store before its owners no longer loses what they buffered.
        """
        self._hooks.add_owner(hand_over)

    def add_feeder(self, hand_over: Callable[[], None]) -> Callable[[], None]:
        """Have the flusher call *hand_over* (held weakly) right before each delivery attempt.

        A buffer in front of this store (:class:`~mlops_otel.stores.CounterBuffer`) then needs
        no thread of its own, and what it buffers reaches Redis in the same flusher tick (#16:
        one thread and ten wake-ups a second less per process). Returns the function to call after
        each write that makes the buffer non-empty: it starts the flusher on the first one, and wakes
        a flusher that found nothing to deliver and is sleeping until its next sentinel check.
        """
        self._hooks.add_feeder(hand_over)
        return self._kick

    def add_state_loss_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the flusher thread) whenever the store's state is found lost.

        The store keeps a sentinel key (``<prefix>#epoch``) with a random value
        and checks it every *epoch_interval* seconds in the background. When it
        disappears or changes (Redis restarted without its data, ``FLUSHALL``,
        a failover to an empty replica) the store logs it, counts
        ``mlops_store_state_lost_total``, writes a new sentinel and calls every
        listener, so owners can restore what this process knows.
        """
        self._hooks.add_state_loss_listener(callback)
        self._ensure_flusher()

    def _check_epoch(self) -> None:
        """Compare the sentinel with the one last seen (flusher thread; errors are left to delivery)."""
        self._epoch_due = time.monotonic() + self.epoch_interval
        key = f"{self.prefix}#epoch"
        try:
            client = self._get_client()
            value = client.get(key)
            if value is None:
                client.set(key, secrets.token_hex(8), nx=True)
                value = client.get(key)
        except Exception:  # unreachable: delivery counts and logs the outage
            return
        if value is None:
            return
        seen, self._epoch = self._epoch, _text(value)
        if seen is not None and seen != self._epoch:
            self._tel.add(semconv.STORE_STATE_LOST, self._labels)
            logger.warning("mlops-otel: RedisStore %s lost its state (the sentinel %s changed: Redis restarted "
                           "empty or was flushed); restoring what this process knows (counted in "
                           "mlops_store_state_lost_total)", _redact(self.url), key)
            self._hooks.state_lost()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ key naming
    def _full(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _companion(self, full: str) -> str:
        """The writer's dedup hash for *full* (see :meth:`Delivery.companion`)."""
        return self._delivery.companion(full)

    # ------------------------------------------------------------ connections
    def _retry(self) -> Retry:
        # One immediate retry: a pooled connection broken by a server restart
        # reconnects. Safe for every command we send: writes are deduplicated,
        # compare-and-set recognises its own token, reads are idempotent.
        # Only connection errors: retrying a timeout doubled every stall (a 2 s socket timeout
        # blocked 4 s, and a shutdown with Redis down overran its flush_timeout).
        return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))

    def _get_client(self) -> _Client:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:  # not _state_lock: connecting may take socket_timeout
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> _Client:
        timeout = self.socket_timeout
        if self._is_cluster is None:
            probe = Redis.from_url(self.url, decode_responses=True, socket_timeout=timeout,
                                   socket_connect_timeout=timeout, retry=self._retry())
            try:
                info = probe.info("cluster")
                self._is_cluster = bool(isinstance(info, Mapping) and info.get("cluster_enabled"))
            except BaseException:
                probe.close()
                raise
            if not self._is_cluster:
                return probe
            probe.close()
        if self._is_cluster:
            return RedisCluster.from_url(self.url, decode_responses=True, socket_timeout=timeout,
                                         socket_connect_timeout=timeout, retry=self._retry())
        return Redis.from_url(self.url, decode_responses=True, socket_timeout=timeout,
                              socket_connect_timeout=timeout, retry=self._retry())

    def _load_scripts(self, client: _Client) -> None:
        for script in _SCRIPTS:
            client.script_load(script)  # on a Cluster: every primary

    def _request(self, operation: str, key: str, call: Callable[[_Client], _T]) -> _T:
        """Run a decision-path request; any failure becomes :class:`StoreError`."""
        if self._closed:
            raise StoreError(operation, key, RuntimeError("the store is closed"))
        try:
            client = self._get_client()
            try:
                return call(client)
            except NoScriptError:
                self._load_scripts(client)
                return call(client)
        except (RedisError, RedisClusterException, OSError, ValueError) as exc:
            raise StoreError(operation, key, exc) from exc

    # ------------------------------------------------------------ hot path
    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        """Add *deltas* to the float fields of *key* (buffered; never raises, never blocks on I/O)."""
        pairs = clean_deltas(deltas, self._tel)
        if not pairs:
            return
        if type(key) is not str:
            self._tel.invalid("store.key", key)
            return
        self._delivery.add_counts(key, pairs, closed=self._closed)
        self._kick()

    def append(self, key: str, items: Sequence[JSONValue], *, max_len: int) -> None:
        """Append *items* to the window *key*, keeping the newest *max_len* (buffered; only a bad *max_len* raises)."""
        check_max_len(max_len)
        encoded = encode_items(key, items, self._tel)
        if not encoded:
            return
        if type(key) is not str:
            self._tel.invalid("store.key", key)
            return
        self._delivery.add_items(key, encoded, max_len, closed=self._closed)
        self._kick()

    def _kick(self) -> None:
        # After the write is buffered (the flusher sets _parked before it looks at the buffer: one of
        # the two sees the other, so a write never waits for a parked flusher's next sentinel check).
        if not self._flusher.started:
            self._ensure_flusher()
        elif self._parked or self._delivery.pending.entries >= self.max_batch:
            self._parked = False
            self._flusher.wake()

    # ------------------------------------------------------------ delivery
    def flush(self, timeout: float | None = None) -> bool:
        """Deliver every write this process made before the call.

        Waits up to *timeout* seconds (default *flush_timeout*) and returns
        whether everything was delivered; a ``False`` keeps the writes pending
        for the flusher. A read after a successful flush sees them.
        """
        return self._delivery.flush(self.flush_timeout if timeout is None else max(0.0, timeout))

    def _tick(self) -> float:
        """One flusher iteration; return the seconds to wait before the next one.

        A tick that finds nothing to deliver **parks** the flusher: it sleeps until its next sentinel
        check (*epoch_interval*) instead of waking every *flush_interval*, and the next buffered write
        wakes it (:meth:`_kick`, also called by the buffers it feeds on). It then waits
        :data:`_GATHER_S` for the rest of the write's burst, and at least until *flush_interval* after
        its last delivery (so never more than one batch per *flush_interval*, whatever the write
        rate), and delivers. A loaded worker's background writes come in bursts (its background
        workers share one schedule): per burst the flusher wakes for the write, to deliver, and once
        more to find nothing and park. Writes that keep coming (a request path's buffered sums) keep
        it ticking every *flush_interval*, with no wake-up by the writers (#16: each wake-up of a
        thread costs about 0.1-0.3 ms of CPU on the virtual machines measured,
        docs/performance-analysis.md).
        """
        resumed, self._resting = self._resting, False
        self._parked = False
        now = time.monotonic()
        if resumed and now < self._epoch_due:
            # Woken before its sentinel check: a write (direct, or a buffer's first sum since the last
            # hand-over). Gather the rest of its burst, and keep to one batch per flush_interval.
            return max(min(_GATHER_S, self.flush_interval), self._delivered_at + self.flush_interval - now)
        self._hooks.feed()  # the buffers in front of this store hand over their sums first
        if time.monotonic() >= self._epoch_due and time.monotonic() >= self._delivery.next_attempt:
            self._check_epoch()
        sent = not self._delivery.idle()
        delay = self._delivery.tick()
        until_epoch = max(0.0, self._epoch_due - time.monotonic())
        if delay is None:
            if sent:
                self._delivered_at = time.monotonic()
            if not sent and self._delivery.idle():
                self._parked = True  # first the flag, then the buffers: see _kick
                self._hooks.feed()
                if self._delivery.idle():
                    self._resting = True
                    return until_epoch
                self._parked = False
            return min(self.flush_interval, until_epoch)
        return min(delay, max(until_epoch, self.flush_interval) if delay > 0 else 0.0)

    def _on_recovery(self) -> None:
        # Redis is back: end the flusher's backoff wait now, and look at the sentinel at once
        # (it may have come back empty).
        self._epoch_due = 0.0
        self._flusher.wake()

    # ------------------------------------------------------------ decision paths
    def read_counters(self, key: str) -> dict[str, float]:
        """Return every field of the counter hash *key* from Redis (raises :class:`StoreError`)."""
        full = self._full(key)
        raw = self._request("read_counters", key, lambda c: c.hgetall(full))
        try:
            return {_text(name): float(value) for name, value in raw.items()}
        except ValueError as exc:
            raise StoreError("read_counters", key, exc) from exc

    def read_window(self, key: str) -> list[JSONValue]:
        """Return the window *key* from Redis, oldest item first (raises :class:`StoreError`)."""
        full = self._full(key)
        raw = self._request("read_window", key, lambda c: c.lrange(full, 0, -1))
        try:
            return [decode_item(_text(item)) for item in raw]
        except ValueError as exc:
            raise StoreError("read_window", key, exc) from exc

    def get_document(self, key: str) -> Versioned | None:
        """Return the document at *key* with its version, or ``None`` (raises :class:`StoreError`)."""
        full = self._full(key)
        version, doc = self._request("get_document", key, lambda c: c.hmget(full, ["v", "doc"]))
        if version is None or doc is None:
            return None
        try:
            value: JSONValue = json.loads(_text(doc))
            return Versioned(value, int(_text(version)))
        except ValueError as exc:
            raise StoreError("get_document", key, exc) from exc

    def compare_and_set(self, key: str, value: JSONValue, *, expected_version: int) -> bool:
        """Write *value* if the stored version is *expected_version*; exactly one racer wins.

        Raises :class:`ValueError`/:class:`TypeError` for a value that is not JSON
        and :class:`StoreError` when Redis fails (the write may then have happened).
        """
        check_expected_version(expected_version)
        doc = encode_document(value)
        full = self._full(key)
        token = secrets.token_hex(12)
        won = self._request("compare_and_set", key,
                            lambda c: c.evalsha(_CAS_SHA, 1, full, expected_version, doc, token))
        return bool(int(won))

    def delete(self, key: str) -> None:
        """Remove *key*, including this process's pending writes to it (raises :class:`StoreError`)."""
        full = self._full(key)
        deadline = time.monotonic() + self.flush_timeout
        lock = self._delivery.send_lock
        if not lock.acquire(timeout=self.flush_timeout):
            raise StoreError("delete", key, TimeoutError("pending writes are still being delivered"))
        try:
            if not self._delivery.discard_key(key, deadline):
                raise StoreError("delete", key, TimeoutError("earlier writes to the key are undelivered"))
            self._request("delete", key, lambda c: c.delete(full))
        finally:
            lock.release()

    def list_keys(self, prefix: str) -> list[str]:
        """Return every key starting with *prefix* (without the deployment prefix), sorted.

        Scans every primary of a Cluster; the store's internal keys are never listed.
        """
        head = self._full("")
        pattern = glob_escape(head + prefix) + "*"

        def scan(client: _Client) -> list[str]:
            return [_text(k) for k in client.scan_iter(match=pattern, count=1000)]

        found = self._request("list_keys", prefix, scan)
        return sorted({k[len(head):] for k in found if k.startswith(head)})
