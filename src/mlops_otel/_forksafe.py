"""Fork hooks that do not keep their owner alive."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["after_fork_in_child"]

_T = TypeVar("_T")


def after_fork_in_child(owner: _T, hook: Callable[[_T], None]) -> None:
    """Call ``hook(owner)`` in every child process forked while *owner* is alive.

    ``os.register_at_fork`` cannot unregister, so the callback holds only a weak
    reference: a collected owner costs one dead-weakref check per fork.
    """
    ref = weakref.ref(owner)

    def _run() -> None:
        target = ref()
        if target is not None:
            hook(target)

    os.register_at_fork(after_in_child=_run)
