"""Large frames between same-host processes through shared memory: one copy instead of two.

Over a socket, a large frame is copied twice: by the sender into the kernel, then by the receiver
out of it.  On a raw link (:mod:`ipcluster.protocol.rawlink`) a frame of :data:`MIN_SIZE` bytes or
more can instead be written by the sender straight into a buffer of the receiver, which the
receiver then uses as the frame, without a copy:

1. The sender asks for buffers: ``[GRANT_REQUEST, payload]`` with the sizes of the frames and the
   ids of the receiver's buffers it has mapped already.
2. The receiver takes a shared buffer of each size from its pool
   (:meth:`~ipcluster.protocol.bufpool.BufferPool.take_shared`, an anonymous memory file), keeps
   it reserved for the link, and answers ``[GRANT_REPLY, payload]`` with each buffer's id and
   capacity; the files of buffers the sender has not mapped yet travel with the reply as file
   descriptors (``SCM_RIGHTS``).  It also names the buffers the sender listed that are gone.
3. The sender maps the files it got (it keeps the maps for the next time: mapping costs about as
   much as copying), copies each frame into its buffer, and sends the message with those frames
   replaced by their buffer ids (see the framing in :mod:`~ipcluster.protocol.rawlink`).
4. The receiver takes each such frame from its reservation: a view of its own buffer.

Ownership is plain: a buffer belongs to the receiver's pool, which reuses it once nothing references
the frame any more, exactly as for frames it read from the socket.  A sender writes to a buffer only
between a grant and the message that uses it.  Reservations end with the link or the next request.
The memory files have no name: nothing is left behind by processes that crash.  A receiver that
cannot make a buffer grants id 0 for it, and that frame goes through the socket.

The sender's maps of a peer's buffers are kept per link, at most :data:`MAX_PEER_MAPS`, and are
released after :data:`~ipcluster.protocol.bufpool.IDLE_SECONDS` unused (:func:`trim`), so buffers
the peer has let go do not stay alive in the sender.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import bufpool

#: Frames at least this large go through the receiver's shared buffers.
MIN_SIZE = bufpool.MIN_SIZE
#: A link's control messages (never signed session messages: those start with an ident or the
#: ``<IDS|MSG>`` delimiter).
GRANT_REQUEST = b"<IDS|SEG?>"
GRANT_REPLY = b"<IDS|SEG!>"
#: Maps of a peer's buffers a link keeps (the least recently used go first).
MAX_PEER_MAPS = 32
#: Most frames one grant request may ask buffers for.
MAX_GRANTS = 64

_U32 = struct.Struct("<I")
_ENTRY = struct.Struct("<QQB")  # id, capacity, whether its file descriptor follows
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


# --- messages ----------------------------------------------------------------------------------


def encode_request(sizes: Sequence[int], have: Sequence[int]) -> list[bytes]:
    return [GRANT_REQUEST, b"".join([_U32.pack(len(sizes)), struct.pack(f"<{len(sizes)}Q", *sizes),
                                     _U32.pack(len(have)), struct.pack(f"<{len(have)}Q", *have)])]


def decode_request(payload: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(sizes, have)``; raises MalformedMessage for a payload that is not a request."""
    try:
        (n,) = _U32.unpack_from(payload, 0)
        if n > MAX_GRANTS:
            raise MalformedMessage(f"a buffer request for {n} frames (at most {MAX_GRANTS})")
        sizes = struct.unpack_from(f"<{n}Q", payload, 4)
        (m,) = _U32.unpack_from(payload, 4 + 8 * n)
        if m > MAX_PEER_MAPS or len(payload) != 8 + 8 * (n + m):
            raise MalformedMessage("a malformed buffer request")
        have = struct.unpack_from(f"<{m}Q", payload, 8 + 8 * n)
    except struct.error as e:
        raise MalformedMessage(f"a malformed buffer request: {e}") from None
    return sizes, have


def encode_reply(entries: Sequence[tuple[int, int, bool]], gone: Sequence[int]) -> list[bytes]:
    return [GRANT_REPLY, b"".join([_U32.pack(len(entries)), *(_ENTRY.pack(*e) for e in entries),
                                   _U32.pack(len(gone)), struct.pack(f"<{len(gone)}Q", *gone)])]


def decode_reply(payload: Any) -> tuple[list[tuple[int, int, bool]], tuple[int, ...]]:
    """``(entries, gone)``; raises MalformedMessage for a payload that is not a reply."""
    try:
        (n,) = _U32.unpack_from(payload, 0)
        if n > MAX_GRANTS:
            raise MalformedMessage(f"a buffer grant for {n} frames (at most {MAX_GRANTS})")
        entries = [(i, cap, bool(fd)) for i, cap, fd in
                   (_ENTRY.unpack_from(payload, 4 + _ENTRY.size * k) for k in range(n))]
        pos = 4 + _ENTRY.size * n
        (m,) = _U32.unpack_from(payload, pos)
        if m > MAX_PEER_MAPS or len(payload) != pos + 4 + 8 * m:
            raise MalformedMessage("a malformed buffer grant")
        gone = struct.unpack_from(f"<{m}Q", payload, pos + 4)
    except struct.error as e:
        raise MalformedMessage(f"a malformed buffer grant: {e}") from None
    return entries, gone


# --- the receiver's side -----------------------------------------------------------------------


class Grants:
    """Buffers of this process's pool reserved for one link's next message."""

    def __init__(self, max_size: int = -1, pool: bufpool.BufferPool | None = None) -> None:
        self.max_size = max_size
        self.pool = pool or bufpool.POOL
        self._reserved: dict[int, memoryview] = {}

    def serve(self, payload: Any) -> tuple[list[bytes], list[int]]:
        """Answer a request: the reply's frames and the file descriptors to send with it (the
        pool's own: the caller sends them and must not close them)."""
        sizes, have = decode_request(payload)
        self._reserved.clear()  # grants never used: the buffers go back to the pool
        if any(s < MIN_SIZE for s in sizes) or (self.max_size >= 0 and sum(sizes) > self.max_size):
            raise MalformedMessage(f"a buffer request for sizes {list(sizes)} (limit {self.max_size})")
        known = set(have)
        entries: list[tuple[int, int, bool]] = []
        fds: list[int] = []
        for size in sizes:
            try:
                if not bufpool.HAVE_SHARED:
                    raise OSError("no anonymous memory files on this platform")
                ident, fd, capacity, view = self.pool.take_shared(size)
            except OSError:  # no memory file (platform, limits, memory): this frame takes the socket
                entries.append((0, 0, False))
                continue
            self._reserved[ident] = view
            entries.append((ident, capacity, ident not in known))
            if ident not in known:
                fds.append(fd)
        alive = self.pool.shared_ids() if known else set()
        return encode_reply(entries, [i for i in have if i not in alive]), fds

    def claim(self, ident: int, size: int) -> memoryview:
        """The reserved buffer *ident*, now holding a frame of *size* bytes."""
        view = self._reserved.pop(ident, None)
        if view is None or len(view) != size:
            raise MalformedMessage(f"a frame in buffer {ident} that was not granted for {size} bytes")
        return view

    def clear(self) -> None:
        self._reserved.clear()


# --- the sender's side -------------------------------------------------------------------------


class _PeerMap:
    __slots__ = ("map", "capacity", "last_used")

    def __init__(self, fd: int, capacity: int, now: float) -> None:
        self.map = mmap.mmap(fd, capacity, flags=_MAP_FLAGS)
        self.capacity = capacity
        self.last_used = now


_registry: "weakref.WeakSet[PeerMaps]" = weakref.WeakSet()
_registry_lock = threading.Lock()


class PeerMaps:
    """A link's maps of the peer's shared buffers (thread-safe: :func:`trim` runs elsewhere)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._maps: OrderedDict[int, _PeerMap] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock
        with _registry_lock:
            _registry.add(self)

    def have(self) -> list[int]:
        with self._lock:
            return list(self._maps)

    def update(self, entries: Sequence[tuple[int, int, bool]], gone: Sequence[int], fds: list[int]) -> None:
        """Map the buffers whose files came with a grant (*fds*, in order; all of them are closed
        here) and drop those the peer no longer has.  Raises MalformedMessage if the files do
        not match the grant."""
        now = self._clock()
        try:
            wanted = [(i, cap) for i, cap, new in entries if new and i]
            if len(wanted) != len(fds):
                raise MalformedMessage(f"a buffer grant with {len(fds)} files for {len(wanted)} new buffers")
            with self._lock:
                for ident in gone:
                    self._drop(ident)
                for (ident, capacity), fd in zip(wanted, fds):
                    self._drop(ident)
                    try:
                        self._maps[ident] = _PeerMap(fd, capacity, now)
                    except (OSError, ValueError) as e:
                        raise MalformedMessage(f"cannot map the peer's buffer {ident}: {e}") from None
                while len(self._maps) > MAX_PEER_MAPS:
                    self._drop(next(iter(self._maps)))
        finally:
            for fd in fds:
                os.close(fd)

    def write(self, ident: int, frame: Any) -> bool:
        """Copy *frame* into the peer's buffer *ident*; ``False`` if it is not mapped here."""
        src = memoryview(frame).cast("B") if frame.__class__ is not bytes else frame
        with self._lock:
            entry = self._maps.get(ident)
            if entry is None or len(src) > entry.capacity:
                return False
            entry.last_used = self._clock()
            self._maps.move_to_end(ident)
            with memoryview(entry.map) as dst:
                dst[:len(src)] = src
        return True

    def trim(self, idle_seconds: float) -> int:
        """Drop maps unused for *idle_seconds*; returns how many."""
        now = self._clock()
        with self._lock:
            old = [i for i, e in self._maps.items() if now - e.last_used >= idle_seconds]
            for ident in old:
                self._drop(ident)
        return len(old)

    def close(self) -> None:
        with self._lock:
            for ident in list(self._maps):
                self._drop(ident)

    def _drop(self, ident: int) -> None:
        entry = self._maps.pop(ident, None)
        if entry is not None:
            entry.map.close()

    def __len__(self) -> int:
        return len(self._maps)


def trim() -> None:
    """Release what this process keeps and has not used for the pool's ``idle_seconds``: free pool
    buffers and maps of peers' buffers (engines call it when idle, clients every few seconds)."""
    bufpool.POOL.trim()
    with _registry_lock:
        maps = list(_registry)
    for peer in maps:
        peer.trim(bufpool.POOL.idle_seconds)
