"""The write-behind buffer: merged increments and pre-trimmed window appends.

The hot path only ever touches this buffer (one short lock). The flusher
*freezes* what is pending into a :class:`Batch` with a sequence number and
retries that same batch until the backend acknowledges every key in it, so a
retry after a lost reply can be recognised and skipped (exactly-once).
"""

from __future__ import annotations

import sys
import threading
from collections import deque

import attrs

__all__ = ["Batch", "PendingBuffer"]

_MAX = sys.float_info.max


@attrs.define(eq=False)
class Batch:
    """Frozen pending writes of one writer, delivered as a unit under sequence number *seq*.

    ``entries`` counts the units the batch holds against ``max_pending``: one
    per (key, field) increment and one per window item.
    """

    seq: int
    counters: dict[str, dict[str, float]]
    windows: dict[str, deque[str]]
    entries: int

    def __len__(self) -> int:
        return len(self.counters) + len(self.windows)

    def discard(self, key: str) -> int:
        """Forget *key* (acknowledged or rejected); return the entries it held."""
        fields = self.counters.pop(key, None)
        items = self.windows.pop(key, None)
        return (0 if fields is None else len(fields)) + (0 if items is None else len(items))


@attrs.define(eq=False)
class PendingBuffer:
    """Thread-safe pending writes of one process, bounded by *max_pending* entries.

    An increment of a (key, field) that is already pending merges into it and
    costs nothing; a new (key, field) costs one entry; a window item costs one
    entry until the key's pending items reach its ``max_len`` (older pending
    items are then trimmed, exactly as the store would trim them). A write that
    does not fit is rejected as a whole.

    The bound applies to what accumulates while a batch is in flight. The
    frozen batch cannot absorb new increments (it must be resent unchanged),
    so during an outage the same keys are pending twice: once frozen and once
    accumulating. Each generation holds at most *max_pending* entries, so a
    process holds at most twice that, and increments to keys it already holds
    are never dropped however long the outage lasts.
    """

    max_pending: int
    lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    counters: dict[str, dict[str, float]] = attrs.field(factory=dict, init=False)
    windows: dict[str, deque[str]] = attrs.field(factory=dict, init=False)
    #: Entries not yet frozen.
    entries: int = attrs.field(default=0, init=False)
    #: Entries of the frozen batch that is being delivered (reported, not bounded here).
    frozen_entries: int = attrs.field(default=0, init=False)

    @property
    def total(self) -> int:
        """Every entry this process holds (pending and in flight)."""
        return self.entries + self.frozen_entries

    def add_counts(self, key: str, pairs: list[tuple[str, float]]) -> bool:
        """Merge one increment; return ``False`` if it was rejected for lack of room.

        Raises :class:`OverflowError` (naming the field) without merging anything when
        the increment would make a pending sum infinite.
        """
        with self.lock:
            fields = self.counters.get(key)
            if fields is None:
                if self.entries + len(pairs) > self.max_pending:
                    return False
                fields = self.counters[key] = {}
                for name, delta in pairs:
                    fields[name] = fields.get(name, 0.0) + delta
                self.entries += len(fields)
                return True
            new = sum(1 for name, _ in pairs if name not in fields)
            if new and self.entries + new > self.max_pending:
                return False
            summed = [(name, fields.get(name, 0.0) + delta) for name, delta in pairs]
            for name, total in summed:
                if not -_MAX <= total <= _MAX:
                    raise OverflowError(name)
            fields.update(summed)
            self.entries += new
            return True

    def add_items(self, key: str, items: list[str], max_len: int) -> bool:
        """Append encoded items to the window *key*; return ``False`` if rejected for lack of room."""
        with self.lock:
            window = self.windows.get(key)
            before = 0 if window is None else len(window)
            if window is None or window.maxlen != max_len:
                # A new bound applies to what is pending too (the store trims with the latest bound).
                window = deque(window or (), maxlen=max_len)
            after = min(len(window) + len(items), max_len)
            grow = after - before
            if grow > 0 and self.entries + grow > self.max_pending:
                return False
            window.extend(items)
            self.windows[key] = window
            self.entries += grow
            return True

    def freeze(self, seq: int) -> Batch | None:
        """Move everything pending into a new :class:`Batch` (``None`` when nothing is pending)."""
        with self.lock:
            if not self.counters and not self.windows:
                return None
            batch = Batch(seq, self.counters, self.windows, self.entries)
            self.counters, self.windows = {}, {}
            self.frozen_entries += self.entries
            self.entries = 0
            return batch

    def release(self, entries: int) -> None:
        """Give back *entries* of the frozen batch (delivered or dropped)."""
        with self.lock:
            self.frozen_entries = max(0, self.frozen_entries - entries)

    def discard(self, key: str) -> None:
        """Forget this process's not-yet-frozen writes to *key*."""
        with self.lock:
            fields = self.counters.pop(key, None)
            items = self.windows.pop(key, None)
            self.entries -= (0 if fields is None else len(fields)) + (0 if items is None else len(items))
