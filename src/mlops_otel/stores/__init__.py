"""Pluggable state stores: the protocol, the in-memory default and Redis.

:class:`RedisStore` is imported lazily, so this package works without redis-py
(install ``mlops-otel[redis]`` to use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._buffer import CounterBuffer
from ._memory import MemoryStore
from ._protocol import JSONValue, StateStore, StoreError, Versioned, make_key

if TYPE_CHECKING:
    from ._redis import RedisStore

__all__ = [
    "CounterBuffer",
    "JSONValue",
    "MemoryStore",     "RedisStore",
    "StateStore",
    "StoreError",
    "Versioned",
    "make_key",
]


def __getattr__(name: str) -> object:
    if name == "RedisStore":
        from ._redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
