"""The :class:`StateStore` protocol: the few primitives the cores need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import attrs

from ..validation import InvalidValueError

__all__ = ["JSONValue", "StateStore", "StoreError", "Versioned", "make_key"]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


class StoreError(Exception):
    """A state-store operation that must report its failure to the caller failed.

    Only *decision* paths (reads, compare-and-set) raise it; hot-path writes never do.
    """

    def __init__(self, operation: str, key: str, cause: BaseException | None = None) -> None:
        self.operation = operation
        self.key = key
        self.cause = cause
        detail = f": {cause!r}" if cause is not None else ""
        super().__init__(f"state store {operation} on key {key!r} failed{detail}")


@attrs.frozen
class Versioned:
    """A document and its version (1 for the first write, +1 per successful CAS)."""

    value: JSONValue
    version: int


def make_key(namespace: str, group: str, *parts: str) -> str:
    """Build a store key whose *group* is a Redis Cluster hash tag.

    Every key of one group (one A/B test, one model version, ...) lands on the
    same Cluster slot, so multi-key operations on a group stay atomic.

    >>> make_key("ab", "gnn_test", "stats")
    'ab:{gnn_test}:stats'
    """
    for name, value in (("namespace", namespace), ("group", group)):
        if not value or any(c in value for c in "{}"):
            raise InvalidValueError(name, "a non-empty string without braces", value)
    return ":".join((namespace, "{" + group + "}", *parts))


@runtime_checkable
class StateStore(Protocol):
    """Shared state for the registry, A/B tests and drift detectors.

    Hot-path writes (:meth:`incr`, :meth:`append`) may be buffered in process
    memory and delivered later (write-behind); they never raise and never
    block on the network. Reads and :meth:`compare_and_set` go to the backend
    and may raise :class:`StoreError`. :meth:`flush` delivers this process's
    pending writes, so a read after it sees them.
    """

    #: Short name used as the ``store`` label of the store's own metrics.
    kind: str

    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        """Atomically add each delta to the float field of the same name in *key*."""

    def read_counters(self, key: str) -> dict[str, float]:
        """Return every field of the counter hash *key* (empty when absent)."""

    def append(self, key: str, items: Sequence[JSONValue], *, max_len: int) -> None:
        """Append *items* to the window *key*, keeping only the newest *max_len*."""

    def read_window(self, key: str) -> list[JSONValue]:
        """Return the window *key*, oldest item first (empty when absent)."""

    def get_document(self, key: str) -> Versioned | None:
        """Return the document at *key* with its version, or ``None``."""

    def compare_and_set(self, key: str, value: JSONValue, *, expected_version: int) -> bool:
        """Write *value* if the stored version equals *expected_version* (0 = absent).

        Returns whether this call won; exactly one of several racing writers does.
        """

    def delete(self, key: str) -> None:
        """Remove *key* whatever it holds (no error when absent)."""

    def list_keys(self, prefix: str) -> list[str]:
        """Return every key starting with *prefix*, sorted."""

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver this process's pending writes; return ``True`` when none remain."""

    def close(self) -> None:
        """Flush what can be flushed and release resources. Idempotent."""
