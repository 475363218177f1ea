"""Pluggable state stores: the protocol, the in-memory default and Redis."""

from ._memory import MemoryStore
from ._protocol import JSONValue, StateStore, StoreError, Versioned, make_key

__all__ = ["JSONValue", "MemoryStore", "StateStore", "StoreError", "Versioned", "make_key"]
