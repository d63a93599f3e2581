"""Giving freed memory back to the system, so a long-running controller's RSS stays flat.

Records, outcomes and replay-guard entries are capped (see ``docs/reliability.md``, "Resource
bounds"), so the controller's live data stops growing once the caps are reached; but glibc keeps the
pages of freed blocks (of Python objects and of libzmq's messages, freed in other threads' arenas)
mapped, and a soak of a million tasks still saw RSS creep by a few percent.  ``malloc_trim`` returns
them; it runs on a timer (every :data:`TRIM_INTERVAL` seconds), never per message.  Elsewhere than
glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from typing import Any

#: Seconds between two trims (each takes a few milliseconds on a heap of a few hundred MiB).
TRIM_INTERVAL = 30.0

_trim: Any = None
try:
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    _trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):  # not glibc
    _trim = None


def trim_heap() -> bool:
    """Return free heap pages to the system; ``False`` where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Call :func:`trim_heap` every *interval* seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)  # a timer, not synchronisation
        trim_heap()


__all__ = ["TRIM_INTERVAL", "trim_heap", "trim_periodically"]
