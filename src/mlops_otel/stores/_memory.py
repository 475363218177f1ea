"""The embedded, thread-safe in-memory store (the default)."""

from __future__ import annotations

import json
import pickle
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import attrs

from .._forksafe import after_fork_in_child
from ..telemetry import Telemetry, default_telemetry
from ._hooks import StoreHooks
from ._protocol import JSONValue, Versioned
from ._values import (
    check_expected_version,
    check_max_len,
    clean_deltas,
    decode_item,
    encode_document,
    encode_items,
)

__all__ = ["MemoryStore"]

#: Window items are kept as numbers or as their JSON text (decoded on read, so a
#: caller can never mutate what the store holds).
_Item = float | int | str
_MAX = sys.float_info.max


def _to_item(item: object, text: str) -> _Item:
    if type(item) is float or type(item) is int:
        return item  # already checked finite by encode_items
    return text


@attrs.define(eq=False)
class MemoryStore:
    """A :class:`~mlops_otel.stores.StateStore` in process memory.

    Every operation is applied immediately under one lock, so :meth:`flush`
    has nothing to do. State is per process: after a fork each process has its
    own copy. Use :class:`~mlops_otel.stores.RedisStore` to share state
    between workers. Values are checked exactly as by ``RedisStore``: invalid
    hot-path input is counted in ``mlops_invalid_measurements_total`` of
    *telemetry* (the default one when ``None``) and skipped.
    """

    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True, repr=False)
    kind: str = attrs.field(default="memory", init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _counters: dict[str, dict[str, float]] = attrs.field(factory=dict, init=False, repr=False)
    _windows: dict[str, deque[_Item]] = attrs.field(factory=dict, init=False, repr=False)
    #: Documents as (pickle of the JSON value, version): a read unpickles a private copy (about 9x
    #: cheaper than ``copy.deepcopy`` of the value for a fleet snapshot; #16).
    _docs: dict[str, tuple[bytes, int]] = attrs.field(factory=dict, init=False, repr=False)
    _hooks: StoreHooks = attrs.field(factory=StoreHooks, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # A weak hook: registering a bound method would keep every store alive forever.
        after_fork_in_child(self, MemoryStore._reset_lock)

    def _reset_lock(self) -> None:
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.Lock()

    def _tel(self) -> Telemetry:
        return default_telemetry() if self.telemetry is None else self.telemetry

    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        if not deltas:
            return
        pairs = clean_deltas(deltas, self._tel())
        if not pairs:
            return
        if type(key) is not str:
            self._tel().invalid("store.key", key)
            return
        with self._lock:
            fields = self._counters.get(key)
            if fields is None:
                fields = self._counters[key] = {}
            summed = [(name, fields.get(name, 0.0) + delta) for name, delta in pairs]
            overflow = [name for name, total in summed if not -_MAX <= total <= _MAX]
            if not overflow:
                fields.update(summed)
        for name in overflow:  # rejected whole, like Redis's HINCRBYFLOAT that would produce infinity
            self._tel().invalid(name, dict(pairs)[name])

    def read_counters(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counters.get(key, ()))

    def append(self, key: str, items: Sequence[JSONValue], *, max_len: int) -> None:
        check_max_len(max_len)
        encoded = encode_items(key, items, self._tel())
        if not encoded:
            return
        if type(key) is not str:
            self._tel().invalid("store.key", key)
            return
        values = [_to_item(item, text) for item, text in zip(items, encoded, strict=True)]
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.maxlen != max_len:
                window = self._windows[key] = deque(window or (), maxlen=max_len)
            window.extend(values)

    def read_window(self, key: str) -> list[JSONValue]:
        with self._lock:
            items = list(self._windows.get(key, ()))
        return [decode_item(item) if type(item) is str else item for item in items]

    def get_document(self, key: str) -> Versioned | None:
        with self._lock:
            doc = self._docs.get(key)
        if doc is None:
            return None
        blob, version = doc
        return Versioned(pickle.loads(blob), version)  # a fresh copy: the caller may mutate it

    def compare_and_set(self, key: str, value: JSONValue, *, expected_version: int) -> bool:
        check_expected_version(expected_version)
        # The JSON round trip makes the same values acceptable as by RedisStore; the pickle of its
        # result (plain dicts, lists, str, float, int, bool, None, nothing shared) is what reads copy.
        blob = pickle.dumps(json.loads(encode_document(value)), pickle.HIGHEST_PROTOCOL)
        with self._lock:
            current = self._docs.get(key)
            version = 0 if current is None else current[1]
            if version != expected_version:
                return False
            self._docs[key] = (blob, version + 1)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)
            self._windows.pop(key, None)
            self._docs.pop(key, None)

    def list_keys(self, prefix: str) -> list[str]:
        with self._lock:
            keys = {*self._counters, *self._windows, *self._docs}
        return sorted(k for k in keys if k.startswith(prefix))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        """Hand the registered owners' buffered data over (nothing else to release)."""
        self._hooks.drain_owners()

    def add_owner(self, hand_over: Callable[[], None]) -> None:
        """Register an owner's *hand_over*, called first by :meth:`close` (see ``RedisStore.add_owner``)."""
        self._hooks.add_owner(hand_over)

    def add_state_loss_listener(self, callback: Callable[[], None]) -> None:
        """Accepted for parity with ``RedisStore``; process memory is never lost while the process lives."""
        self._hooks.add_state_loss_listener(callback)
