"""Receiving and sending one multipart message with as little Python per frame as possible.

Used on every hot path (controller forwarding, engine requests, client replies); kept free of
asyncio so engines can use it without importing an event loop.
"""

from __future__ import annotations

from typing import Any, Sequence

import zmq

_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
#: Parts at least this large are sent without copying (pyzmq's default ``copy_threshold``).
COPY_THRESHOLD = 65536
# pyzmq's Python-level ``Socket.send`` adds a layer of checks per frame (about half the cost of a
# small frame); the extension type's ``send`` underneath does the work itself.
_raw_send = zmq.backend.Socket.send
_Frame = zmq.Frame


def recv_frames(sock: zmq.Socket, flags: int = _NOBLOCK) -> list[zmq.Frame]:
    """One multipart message as zero-copy frames.

    Cheaper than ``recv_multipart(copy=False)``: reads ``Frame.more`` instead of a ``getsockopt``
    per frame.
    """
    f = sock.recv(flags, copy=False)
    frames = [f]
    while f.more:
        f = sock.recv(copy=False)
        frames.append(f)
    return frames


def send_frames(sock: zmq.Socket, frames: Sequence[Any]) -> None:
    """Send a multipart message; parts may be bytes, zmq.Frame or buffer objects.

    Buffers of 64 KiB or more are sent without copying (pyzmq's ``copy_threshold``); smaller ones
    are copied, which is faster than tracking them.
    """
    last = len(frames) - 1
    for i, part in enumerate(frames):
        cls = part.__class__
        if cls is bytes:
            copy = len(part) < COPY_THRESHOLD
        elif cls is _Frame:
            copy = False
        else:
            copy = memoryview(part).nbytes < COPY_THRESHOLD
        _raw_send(sock, part, _SNDMORE if i < last else 0, copy)


def split_parts(counts: Any, frames: Sequence[Any]) -> list[list[Any]]:
    """Cut *frames* into consecutive parts of ``counts[i]`` frames (a coalesced broadcast reply).

    Raises ``ValueError`` if *counts* is not a list of positive ints adding up to ``len(frames)``.
    """
    if not isinstance(counts, list) or not all(type(n) is int and n > 0 for n in counts):
        raise ValueError("'parts' must be a list of positive frame counts")
    if sum(counts) != len(frames):
        raise ValueError(f"'parts' lists {sum(counts)} frames but the message carries {len(frames)}")
    out, i = [], 0
    for n in counts:
        out.append(list(frames[i:i + n]))
        i += n
    return out
