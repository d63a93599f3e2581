"""What an engine is running, in memory shared with its supervisor (one small slot per engine).

The supervisor maps one anonymous shared region before forking its engines; each engine writes,
for every request it runs, the request's msg_id and time limit into its slot, and the supervisor
reads the slots without asking the engines anything.  That is what lets the supervisor

* enforce time limits even while the engine's main thread holds the GIL in C code (the engine
  could not run a timer of its own then): it interrupts the engine (SIGINT) at the deadline and
  kills it after a grace period;
* stop a running request a client cancelled;
* say which request was running when an engine died (the controller blames the death on it).

Writing a slot costs a few memory stores per request and no system call.  A request with a time
limit also writes one byte to the supervisor's wake-up pipe, so the supervisor sets its timer.

Layout of a slot (native byte order)::

    0   u64  seq       incremented when a request starts and when it ends: odd while running
    8   f64  deadline  time.monotonic() when the running request's time limit is up (0: none)
    16  f64  limit     the time limit in seconds (0: none)
    24  u8   stop      set by the supervisor before it interrupts: STOP_TIME_LIMIT or STOP_CANCEL
    25  u8   id_len    length of the msg_id
    26  ...  msg_id    ASCII, at most MAX_ID bytes

The supervisor reads ``seq``, the fields, then ``seq`` again (a sequence lock): an engine moving
on to another request in between makes it read again.  ``time.monotonic`` is the system-wide
``CLOCK_MONOTONIC`` on Linux, so both processes agree on deadlines.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

SLOT_SIZE = 256
MAX_ID = SLOT_SIZE - 26
STOP_NONE = 0
STOP_TIME_LIMIT = 1
STOP_CANCEL = 2

_Q = struct.Struct("Q")
_D = struct.Struct("d")
_DD = struct.Struct("dd")
_SEQ, _DEADLINE, _LIMIT, _STOP, _LEN, _ID = 0, 8, 16, 24, 25, 26
#: ``stop`` (cleared) and ``id_len`` bytes for each msg_id length: one slice write per request
_HEADS = [bytes((STOP_NONE, n)) for n in range(MAX_ID + 1)]


class Running(NamedTuple):
    """A request an engine is running, as its supervisor sees it."""

    seq: int
    msg_id: str
    deadline: float  # 0.0: no time limit
    limit: float


def slot_id(msg_id: str) -> str:
    """*msg_id* as a slot holds it (ASCII, at most :data:`MAX_ID` bytes): what to compare with
    :attr:`Running.msg_id`."""
    return msg_id.encode("ascii", "replace")[:MAX_ID].decode("ascii", "replace")


class TaskSlot:
    """One engine's slot (see the module docstring); the engine writes, the supervisor reads."""

    __slots__ = ("_mm", "_off", "_seq", "_limited")

    def __init__(self, mm: mmap.mmap | bytearray, offset: int = 0):
        self._mm = memoryview(mm)  # slices of a memoryview are cheaper to write than an mmap's
        self._off = offset
        self._seq = 0
        self._limited = True  # whether the deadline field may be non-zero

    def reset(self) -> None:
        """Clear the slot (supervisor, before forking an engine into it)."""
        self._mm[self._off:self._off + SLOT_SIZE] = bytes(SLOT_SIZE)
        self._seq = 0
        self._limited = False

    # --- engine side ----------------------------------------------------------------------------

    def start(self, msg_id: str, time_limit: float | None) -> None:
        """A request starts (*time_limit* in seconds, or ``None``).  Runs for every request: kept
        to one slice write and one or two struct writes."""
        mm, off = self._mm, self._off
        raw = msg_id.encode("ascii", "replace")[:MAX_ID]
        mm[off + _STOP:off + _ID + len(raw)] = _HEADS[len(raw)] + raw
        if time_limit:
            _DD.pack_into(mm, off + _DEADLINE, time.monotonic() + time_limit, time_limit)
            self._limited = True
        elif self._limited:
            _D.pack_into(mm, off + _DEADLINE, 0.0)
            self._limited = False
        self._seq += 1
        _Q.pack_into(mm, off, self._seq)

    def end(self) -> int:
        """The request ended; returns why the supervisor stopped it (``STOP_*``; 0: it did not)."""
        self._seq += 1
        _Q.pack_into(self._mm, self._off, self._seq)
        return self._mm[self._off + _STOP]

    # --- supervisor side ------------------------------------------------------------------------

    def running(self) -> Running | None:
        """The request running now, or ``None`` when idle."""
        mm, off = self._mm, self._off
        for _ in range(100):  # the engine moves on at most once per request: this ends at once
            seq = _Q.unpack_from(mm, off)[0]
            if not seq & 1:
                return None
            n = mm[off + _LEN]
            msg_id = bytes(mm[off + _ID:off + _ID + n]).decode("ascii", "replace")
            deadline = _D.unpack_from(mm, off + _DEADLINE)[0]
            limit = _D.unpack_from(mm, off + _LIMIT)[0] if deadline else 0.0
            if _Q.unpack_from(mm, off)[0] == seq:
                return Running(seq, msg_id, deadline, limit)
        return None

    def mark(self, seq: int, stop: int) -> bool:
        """Record why the request *seq* is being stopped; ``False`` if it has ended meanwhile."""
        self._mm[self._off + _STOP] = stop
        return _Q.unpack_from(self._mm, self._off)[0] == seq

    def seq(self) -> int:
        return int(_Q.unpack_from(self._mm, self._off)[0])


@dataclass
class Supervision:
    """What a supervised engine gets from its supervisor (see :mod:`engines.supervisor`)."""

    #: the routing id of the supervisor's hub socket, told to the controller at registration
    supervisor_id: str
    slot: TaskSlot
    #: write end of the supervisor's wake-up pipe (a request with a time limit writes one byte)
    wake_fd: int
    #: the uuid of the engine this one replaces (it died; the controller gives us its id)
    restart_of: str | None = None
    #: the supervisor's report of that death (``engine_died_notification`` content), repeated at
    #: registration in case the controller hears from us first
    death: dict[str, Any] | None = None

    def wake(self) -> None:
        try:
            os.write(self.wake_fd, b"t")
        except OSError:  # full (the supervisor wakes anyway) or gone (nothing to tell)
            pass


class TaskSlots:
    """*n* slots in one anonymous shared mapping, made before forking (so children share it)."""

    def __init__(self, n: int):
        self._mm = mmap.mmap(-1, max(n, 1) * SLOT_SIZE)  # MAP_SHARED | MAP_ANONYMOUS
        self.slots = [TaskSlot(self._mm, i * SLOT_SIZE) for i in range(n)]

    def __getitem__(self, index: int) -> TaskSlot:
        return self.slots[index]


__all__ = ["Running", "Supervision", "TaskSlot", "TaskSlots", "slot_id", "STOP_NONE", "STOP_TIME_LIMIT", "STOP_CANCEL", "SLOT_SIZE"]
