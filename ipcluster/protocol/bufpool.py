"""Large receive buffers kept warm for reuse.

Receiving a large message into fresh memory is slow for a reason unrelated to the copy: every page
of a new buffer costs a page fault and is zeroed by the kernel on first touch.  On a small VM that
is 0.5–1.5 GB/s, while copying into memory touched before runs at 5–6 GB/s (a 100 MiB array over
a Unix socket: ~70 ms into a new buffer, ~18 ms into a reused one).  glibc does not help: blocks
this large are mapped for each allocation and unmapped when freed.

A :class:`BufferPool` hands out buffers of at least :data:`MIN_SIZE` bytes backed by anonymous
memory maps it keeps.  A buffer is in use while anything references its map: a received array is
built on a memoryview of it, and that view keeps the map alive.  When the last such reference
goes (the array is freed or replaced) the map is free again, and the next message of a similar
size is received into the same, already faulted-in pages.  The pool notices this by the map's
reference count when it looks for a buffer: there is no callback, no lock held across a receive
and nothing to return explicitly.

Free maps are bounded: at most :attr:`BufferPool.max_free_bytes` of them are kept (1 GiB or a
sixteenth of the machine's memory; the least recently used go first), and a map unused for
:data:`IDLE_SECONDS` is released at the next :meth:`~BufferPool.trim` (engines trim when idle,
clients every few seconds) or take.  Maps in use are the caller's data and are never counted.

*Shared* buffers (:meth:`BufferPool.take_shared`) are the same, backed by an anonymous memory file
(``memfd_create``) instead of anonymous memory: a same-host sender can map the file and write a
large frame straight into the receiver's buffer (see :mod:`ipcluster.protocol.segments`).  The
file has no name, so nothing outlives the processes that map it, whatever way they end.
"""

from __future__ import annotations

import itertools
import mmap
import os
import sys
import threading
import time
from typing import Callable

#: Frames smaller than this are allocated normally (a map per frame would cost more than it saves).
MIN_SIZE = 1 << 20
#: Capacities are rounded up to a multiple of this, so similar sizes share maps.
GRANULE = 1 << 20
#: A free map is reused for a frame of at least this fraction of its capacity (no 1 GiB map for
#: a 1 MiB frame).
MIN_FILL = 0.5
#: Free maps unused this long are released.
IDLE_SECONDS = 10.0
def _default_max_free_bytes() -> int:
    """1 GiB, or a sixteenth of the machine's memory if that is less (every engine has a pool)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 30
    return min(1 << 30, total // 16)


#: Default bound on the bytes of free maps a pool keeps.
MAX_FREE_BYTES = _default_max_free_bytes()


#: A new map is faulted in by the kernel in one go (Linux ``MAP_POPULATE``): about half the time of
#: faulting its pages one by one as the first receive writes them (100 MiB: 35-45 ms against 70-140).
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


#: Shared buffers: a memory file mapped shared, faulted in the same way.
_SHARED_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
#: Whether this platform has anonymous memory files (Linux).
HAVE_SHARED = hasattr(os, "memfd_create")

_slot_ids = itertools.count(1)


class _Slot:
    __slots__ = ("map", "capacity", "last_used", "fd", "id")

    def __init__(self, capacity: int, now: float, shared: bool = False) -> None:
        self.fd = -1
        if shared:
            fd = os.memfd_create("ipcluster-buffer", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, capacity)
                self.map = mmap.mmap(fd, capacity, flags=_SHARED_FLAGS)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
        else:
            self.map = mmap.mmap(-1, capacity, flags=_MAP_FLAGS)
        self.capacity = capacity
        self.last_used = now
        self.id = next(_slot_ids)  # never reused in this process: a peer may still know an old one

    def close(self) -> None:
        self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BufferPool:
    """Warm receive buffers for one process (thread-safe)."""

    def __init__(self, max_free_bytes: int = MAX_FREE_BYTES, idle_seconds: float = IDLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_free_bytes = max_free_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self.reused = 0  # buffers handed out again (counters for tests and introspection)
        self.created = 0

    def take(self, size: int) -> memoryview:
        """A writable buffer of exactly *size* bytes (``size >= MIN_SIZE``), reused when possible."""
        with self._lock:
            return memoryview(self._take(size, False).map)[:size]

    def take_shared(self, size: int) -> tuple[int, int, int, memoryview]:
        """A shared buffer of *size* bytes: ``(id, file descriptor, capacity, buffer)``.

        The descriptor stays the pool's (a caller passing it to another process sends a copy);
        the id names the buffer for as long as the pool keeps it.  Raises OSError if the memory
        file cannot be made.
        """
        with self._lock:
            slot = self._take(size, True)
            return slot.id, slot.fd, slot.capacity, memoryview(slot.map)[:size]

    def shared_ids(self) -> set[int]:
        """Ids of the shared buffers the pool still has (in use or free)."""
        with self._lock:
            return {s.id for s in self._slots if s.fd >= 0}

    def _take(self, size: int, shared: bool) -> _Slot:
        """(lock held) The smallest free fitting map of the kind, or a new one."""
        now = self._clock()
        best: _Slot | None = None
        for slot in self._slots:
            if (size <= slot.capacity and size >= slot.capacity * MIN_FILL and (slot.fd >= 0) == shared
                    and _free(slot) and (best is None or slot.capacity < best.capacity)):
                best = slot
        if best is not None:
            self.reused += 1
        else:
            self._trim(now, extra=_round_up(size))
            best = _Slot(_round_up(size), now, shared)
            self._slots.append(best)
            self.created += 1
        best.last_used = now
        return best

    def trim(self) -> int:
        """Release free maps idle too long or beyond the bound; returns how many went."""
        with self._lock:
            return self._trim(self._clock())

    def _trim(self, now: float, extra: int = 0) -> int:
        """(lock held) Drop free maps idle for too long, then the least recently used free ones
        until the free bytes plus *extra* (a map about to be made) fit the bound."""
        free = sorted((s for s in self._slots if _free(s)), key=lambda s: s.last_used)
        free_bytes = sum(s.capacity for s in free)
        dropped = []
        for slot in free:
            if now - slot.last_used >= self.idle_seconds or free_bytes + extra > self.max_free_bytes:
                dropped.append(slot)
                free_bytes -= slot.capacity
        for slot in dropped:
            self._slots.remove(slot)
            slot.close()
        return len(dropped)

    def sizes(self) -> dict[str, int]:
        """Maps kept, in use and free, and their bytes."""
        with self._lock:
            free = [s for s in self._slots if _free(s)]
            return {"maps": len(self._slots), "free": len(free), "free_bytes": sum(s.capacity for s in free),
                    "bytes": sum(s.capacity for s in self._slots),
                    "shared": sum(1 for s in self._slots if s.fd >= 0)}


#: References to a map that is not in use: the slot's attribute and getrefcount's argument.
_IDLE_REFS = 2


def _free(slot: _Slot) -> bool:
    return sys.getrefcount(slot.map) <= _IDLE_REFS


def _round_up(size: int) -> int:
    return -(-size // GRANULE) * GRANULE


#: The pool of this process's raw-link receives (see :mod:`ipcluster.protocol.rawlink`).
POOL = BufferPool()
