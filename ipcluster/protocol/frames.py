"""Receiving and sending one multipart message with as little Python per frame as possible.

Used on every hot path (controller forwarding, engine requests, client replies); kept free of
asyncio so engines can use it without importing an event loop.
"""

from __future__ import annotations

from typing import Any, Sequence

import zmq

_SNDMORE = zmq.SNDMORE
_NOBLOCK = zmq.NOBLOCK


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
    send = sock.send
    last = len(frames) - 1
    for i, part in enumerate(frames):
        send(part, _SNDMORE if i < last else 0, copy=False)
