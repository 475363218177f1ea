"""The embedded, thread-safe in-memory store (the default)."""

from __future__ import annotations

import copy
import json
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence

import attrs

from ._protocol import JSONValue, Versioned

__all__ = ["MemoryStore"]


def _check_max_len(max_len: int) -> None:
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")


@attrs.define
class MemoryStore:
    """A :class:`~mlops_otel.stores.StateStore` in process memory.

    Every operation is applied immediately under one lock, so :meth:`flush`
    has nothing to do. State is per process: after a fork each process has its
    own copy. Use :class:`~mlops_otel.stores.RedisStore` to share state
    between workers.
    """

    kind: str = attrs.field(default="memory", init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _counters: dict[str, dict[str, float]] = attrs.field(factory=dict, init=False, repr=False)
    _windows: dict[str, deque[JSONValue]] = attrs.field(factory=dict, init=False, repr=False)
    _docs: dict[str, Versioned] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.Lock()

    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        with self._lock:
            fields = self._counters.get(key)
            if fields is None:
                fields = self._counters[key] = {}
            for name, delta in deltas.items():
                fields[name] = fields.get(name, 0.0) + delta

    def read_counters(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counters.get(key, ()))

    def append(self, key: str, items: Sequence[JSONValue], *, max_len: int) -> None:
        _check_max_len(max_len)
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.maxlen != max_len:
                window = self._windows[key] = deque(window or (), maxlen=max_len)
            window.extend(items)

    def read_window(self, key: str) -> list[JSONValue]:
        with self._lock:
            return list(self._windows.get(key, ()))

    def get_document(self, key: str) -> Versioned | None:
        with self._lock:
            doc = self._docs.get(key)
        if doc is None:
            return None
        return Versioned(copy.deepcopy(doc.value), doc.version)

    def compare_and_set(self, key: str, value: JSONValue, *, expected_version: int) -> bool:
        # Round-trip through JSON: the same values are accepted as by RedisStore.
        stored = json.loads(json.dumps(value, allow_nan=False))
        with self._lock:
            current = self._docs.get(key)
            version = 0 if current is None else current.version
            if version != expected_version:
                return False
            self._docs[key] = Versioned(stored, version + 1)
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
        return None
