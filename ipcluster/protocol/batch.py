"""Several small messages sent as one: what each hop does with messages that are already queued.

A stream of small tasks costs mostly per message, not per byte: a zmq send and receive per frame,
a signature, a wake-up and a Python dispatch at each hop.  When a sender finds several small
messages for the same peer queued at once (a client's IO thread with tasks a user thread submitted
in a loop; the controller with the tasks it assigned to one engine in one pass over its queued
messages; an engine with the replies of the requests of such a batch; the controller with the
replies for one client read in one pass), it sends them as one *batch*::

    [ident, ..., b"<IDS|MSG>", signature, header, parent_header, metadata, content, blob]

an ordinary signed message of type ``batch``, content ``{"parts": [[k, len, len, ...], ...]}``:
one list per part, ``k`` its routing identities, then the length of each of its frames (those
identities, then every frame after its delimiter: signature, the four JSON frames, buffers).
``blob`` is those frames, part after part, joined.  The batch's signature covers the blob's bytes
whole (it is the message's first buffer).  Each part keeps its own signature and the receiver
handles it exactly as if it had arrived alone, in order.  Engines and clients check one signature
for a batch the controller sent: a part's own signature is not recomputed (``presigned``) but still
enters their replay guard.  The controller checks each part of a client's batch in full, since it
may pass a part on alone, so everything it passes on has been checked.  Nothing waits for a batch
to fill: a message alone in the queue goes alone, unchanged.

Only small messages are packed (every frame a bytes-like object, :data:`PART_LIMIT` bytes in all):
large buffers keep their zero-copy sends.  A batch holds at most :data:`MAX_PARTS` parts and
:data:`MAX_BYTES` bytes of blob.  Batches never nest.
"""

from __future__ import annotations

from typing import Any, Sequence

import zmq

from ipcluster.errors import MalformedMessage
from ipcluster.protocol.session import DELIM, Message, Session

#: Message type of a batch.
BATCH = "batch"
#: Routing id of a batch a client sends on its mux socket (the controller unpacks it).
BATCH_TARGET = b"batch"
#: A message is packed only if all its frames together are at most this many bytes.
PART_LIMIT = 16 * 1024
#: At most this many parts per batch.
MAX_PARTS = 128
#: At most this many bytes of frames per batch: below the size from which a frame is sent without
#: copying (``frames.COPY_THRESHOLD``), whose release costs a wake-up of zmq's garbage-collector thread.
MAX_BYTES = 60 * 1024

_bytes = bytes
_Frame = zmq.Frame
_DLEN = len(DELIM)


def _size(frame: Any) -> int:
    """Bytes of a frame, or ``-1`` for anything that is not a bytes-like object."""
    cls = frame.__class__
    if cls is _bytes or cls is _Frame or cls is bytearray:
        return len(frame)
    try:
        return memoryview(frame).nbytes
    except TypeError:
        return -1


def describe(frames: Sequence[Any]) -> list[int] | None:
    """A message's part descriptor ``[k, len, len, ...]`` (``k`` routing identities, then the
    length of every frame but the delimiter), or ``None`` if it may not go in a batch (a frame that
    is not bytes-like, more than :data:`PART_LIMIT` bytes in all, or no delimiter).

    One pass over the frames: this runs for every message a sender considers batching.
    """
    lengths = [0]
    append = lengths.append
    total = 0
    k = -1
    for i, f in enumerate(frames):
        cls = f.__class__
        n = len(f) if cls is _bytes or cls is _Frame else _size(f)
        if n < 0:
            return None
        total += n
        if total > PART_LIMIT:
            return None
        if k < 0 and n == _DLEN and (f is DELIM or (f if cls is _bytes else _bytes(f)) == DELIM):
            k = i
        else:
            append(n)
    if k < 0:
        return None
    lengths[0] = k
    return lengths


def part_size(frames: Sequence[Any]) -> int:
    """Bytes of a message's frames if it may go in a batch (small, one delimiter), else ``-1``."""
    lengths = describe(frames)
    return -1 if lengths is None else sum(lengths[1:]) + _DLEN


def pack(session: Session, messages: Sequence[Sequence[Any]], idents: Sequence[bytes] = ()) -> list[Any]:
    """One signed batch (frames for ``send_multipart``, after *idents*) holding *messages*.

    Each message is a frame list as it would be sent alone: routing identities, the delimiter,
    then its signed frames; each must be small enough (:func:`describe` is not ``None``).
    """
    described = []
    for frames in messages:
        lengths = describe(frames)
        if lengths is None:
            raise ValueError("a message to pack is too large, not bytes, or has no delimiter")
        described.append((frames, lengths))
    return _pack(session, described, idents)


def _pack(session: Session, described: Sequence[tuple[Sequence[Any], list[int]]],
          idents: Sequence[bytes]) -> list[Any]:
    descr: list[list[int]] = []
    chunks: list[Any] = []
    extend = chunks.extend
    for frames, lengths in described:
        k = lengths[0]
        if k:
            extend(frames[:k])
        extend(frames[k + 1:])
        descr.append(lengths)
    blob = b"".join(chunks)
    return session.serialize(BATCH, {"parts": descr}, buffers=[blob], idents=idents)


def unpack(msg: Message) -> list[list[bytes]]:
    """The parts of a verified batch, each as the frames it would have arrived with alone
    (its routing identities, the delimiter, its signed frames).

    Raises :class:`~ipcluster.errors.MalformedMessage` for a descriptor that does not describe the
    blob exactly (before any part is handled).
    """
    if msg.msg_type != BATCH:
        raise MalformedMessage(f"a {msg.msg_type!r} message where a batch was expected")
    descr = msg.content.get("parts")
    if len(msg.buffers) != 1 or not isinstance(descr, list) or not descr or len(descr) > MAX_PARTS:
        raise MalformedMessage(f"a batch needs one buffer and 1 to {MAX_PARTS} parts")
    buf = msg.buffers[0]
    blob = buf if buf.__class__ is _bytes else (buf.bytes if hasattr(buf, "bytes") else _bytes(buf))
    out: list[list[bytes]] = []
    pos, end = 0, len(blob)
    for lengths in descr:
        if lengths.__class__ is not list or len(lengths) < 7:
            raise MalformedMessage("a batch part needs its identity count and at least 6 frame lengths")
        k = lengths[0]
        if k.__class__ is not int or not 0 <= k <= len(lengths) - 6:
            raise MalformedMessage("a batch part's identity count is out of range")
        sizes = lengths[1:]
        frames: list[bytes] = []
        append = frames.append
        try:
            if min(sizes) < 0:
                raise TypeError
            for n in sizes:  # (a slice past the end is only short: checked after the loop)
                append(blob[pos:pos + n])
                pos += n
        except TypeError:  # a length that is not a number (or is negative)
            raise MalformedMessage("a batch part's frame lengths are not all counts of bytes") from None
        if pos > end:
            raise MalformedMessage("a batch part's frame lengths do not fit its blob")
        frames.insert(k, DELIM)
        out.append(frames)
    if pos != end:
        raise MalformedMessage(f"a batch's parts cover {pos} of its {end} blob bytes")
    return out


def is_batch_target(frame: Any) -> bool:
    """Whether a routing-id frame (bytes or ``zmq.Frame``) is :data:`BATCH_TARGET`."""
    return len(frame) == len(BATCH_TARGET) and (frame if frame.__class__ is _bytes else _bytes(frame)) == BATCH_TARGET


class Packer:
    """Groups a queue of outgoing messages to one peer into batches, in order.

    :meth:`add` each message (its frame list as it would be sent alone), then :meth:`messages`
    gives what to send: runs of small messages as batches, a run of one and every large message
    unchanged.  Sending is the caller's.
    """

    __slots__ = ("session", "idents", "max_parts", "_out", "_run", "_run_bytes")

    def __init__(self, session: Session, idents: Sequence[bytes] = (), max_parts: int = MAX_PARTS):
        self.session = session
        self.idents = list(idents)
        self.max_parts = min(max_parts, MAX_PARTS)
        self._out: list[tuple[Sequence[Any], int]] = []  # (frames to send, how many messages they hold)
        self._run: list[tuple[Sequence[Any], list[int]]] = []  # (frames, descriptor) of a batch to be
        self._run_bytes = 0

    def add(self, frames: Sequence[Any]) -> None:
        lengths = describe(frames)
        if lengths is None:
            self._close_run()
            self._out.append((frames, 1))
            return
        n = sum(lengths) - lengths[0]
        if len(self._run) >= self.max_parts or self._run_bytes + n > MAX_BYTES:
            self._close_run()
        self._run.append((frames, lengths))
        self._run_bytes += n

    def _close_run(self) -> None:
        run = self._run
        if len(run) == 1:
            self._out.append((run[0][0], 1))
        elif run:
            self._out.append((_pack(self.session, run, self.idents), len(run)))
        self._run = []
        self._run_bytes = 0

    def messages(self) -> list[Sequence[Any]]:
        """What to send, in order (the packer is empty afterwards)."""
        return [frames for frames, _ in self.counted()]

    def counted(self) -> list[tuple[Sequence[Any], int]]:
        """What to send, in order, each with the number of added messages it holds."""
        self._close_run()
        out, self._out = self._out, []
        return out


def pack_queue(session: Session, queue: Sequence[Sequence[Any]], idents: Sequence[bytes] = (),
               max_parts: int = MAX_PARTS) -> list[Sequence[Any]]:
    """:class:`Packer` over a whole queue: runs of small messages as batches, the rest unchanged."""
    if len(queue) < 2:
        return list(queue)
    p = Packer(session, idents, max_parts)
    for frames in queue:
        p.add(frames)
    return p.messages()
