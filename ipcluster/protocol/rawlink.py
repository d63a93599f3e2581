"""Multipart messages over a Unix stream socket: the same-host fast path for blocking calls.

A message through zmq wakes three threads per hop (the sender's zmq IO thread, the receiver's IO
thread, then the receiver), and on a small VM each wake-up costs tens of microseconds.  Between a
client thread waiting for a reply and an engine on the same host, a plain stream socket read and
written by the two threads themselves wakes only the receiver.  The messages are the same signed
multipart messages as on zmq (checked by the same :class:`~ipcluster.protocol.session.Session`);
only the framing differs::

    u32 frame count n, n x u64 frame length, then the frames back to back   (little-endian)

Sockets live in the controller's private (0700) Unix-socket directory.  Reads are bounded: at most
:data:`MAX_FRAMES` frames and ``max_size`` bytes per message, and a message whose start arrived must
be complete within the link's timeout; a peer that breaks these rules is disconnected.  Received
frames are writable (``bytearray``, or for frames of :data:`~ipcluster.protocol.bufpool.MIN_SIZE`
bytes and more a ``memoryview`` of a reused, already faulted-in buffer of the process's
:data:`~ipcluster.protocol.bufpool.POOL`), so arrays built on them need no copy to be changed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import struct
import threading
from collections import deque
from typing import Any, Callable, Sequence

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import bufpool

#: Most frames one message may have (also below the usual IOV_MAX of 1024 for one sendmsg).
MAX_FRAMES = 1000
#: Seconds a started message may take to arrive in full, and a send to be taken by the peer.
TIMEOUT = 10.0
#: Bytes read per system call when the next message's size is not known yet.
CHUNK = 65536

_COUNT = struct.Struct("<I")

#: A one-frame message a client thread sends first on each link: this prefix and its reply
#: routing id, under which engines send it the replies of its blocking load-balanced tasks.
HELLO = b"<IDS|HELLO>"
#: Name of the controller's raw listener in its Unix-socket directory (client threads' blocking
#: load-balanced tasks, see controller/rawlinks.py).
CONTROLLER_LISTENER = "raw"
#: The one-frame message the controller sends first on its link to an engine: tasks come on it
#: with the client's routing id first, and their output and replies go back on it.
CONTROLLER_HELLO = b"<IDS|CONTROLLER>"


def _nbytes(frame: Any) -> int:
    return len(frame) if frame.__class__ is bytes else memoryview(frame).nbytes


class RawLink:
    """One end of a connected stream socket carrying multipart messages (one thread at a time)."""

    def __init__(self, sock: socket.socket, max_size: int = -1, timeout: float = TIMEOUT):
        sock.settimeout(timeout)
        self.sock = sock
        self.max_size = max_size
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0  # unread bytes are self._buf[self._start:self._end]
        self._end = 0
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def buffered(self) -> bool:
        """Whether bytes of a next message were already read (poll would not report them)."""
        return self._end > self._start

    # --- sending ----------------------------------------------------------------------------

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message; blocks until the kernel took it all (raises OSError if the peer is gone)."""
        n = len(frames)
        if n > MAX_FRAMES:
            raise ValueError(f"a message of {n} frames is more than {MAX_FRAMES}")
        lengths = [_nbytes(f) for f in frames]
        bufs: list[Any] = [struct.pack(f"<I{n}Q", n, *lengths), *frames]
        remaining = 4 + 8 * n + sum(lengths)
        sent = self.sock.sendmsg(bufs)
        while sent < remaining:  # partial: drop what went out, cut the buffer it stopped in
            remaining -= sent
            while sent:
                size = _nbytes(bufs[0])
                if sent >= size:
                    sent -= size
                    bufs.pop(0)
                else:
                    bufs[0] = memoryview(bufs[0]).cast("B")[sent:]
                    sent = 0
            sent = self.sock.sendmsg(bufs)

    # --- receiving --------------------------------------------------------------------------

    def recv(self) -> list[Any] | None:
        """The next message, or ``None`` if the peer closed the connection between messages.

        Raises :class:`~ipcluster.errors.MalformedMessage` for a message beyond the limits and
        ``ConnectionError`` / ``TimeoutError`` for one cut short: the link is then unusable.
        """
        if not self._fill(4, eof_ok=True):
            return None
        (n,) = _COUNT.unpack_from(self._buf, self._start)
        if not 0 < n <= MAX_FRAMES:
            raise MalformedMessage(f"raw message with {n} frames (at most {MAX_FRAMES})")
        self._fill(4 + 8 * n)
        lengths = struct.unpack_from(f"<{n}Q", self._buf, self._start + 4)
        self._start += 4 + 8 * n
        if self.max_size >= 0 and sum(lengths) > self.max_size:
            raise MalformedMessage(f"raw message of {sum(lengths)} bytes (at most {self.max_size})")
        return [self._frame(size) for size in lengths]

    def _frame(self, size: int) -> Any:
        have = self._end - self._start
        if size <= have:
            small = self._buf[self._start:self._start + size]
            self._start += size
            return small
        if size <= CHUNK // 2:  # small: read it (and likely what follows) through the buffer
            self._fill(size)
            return self._frame(size)
        # large: straight into its own buffer, no second copy; a reused one for the largest
        # (a fresh buffer costs a page fault and zeroing per page, more than the copy itself)
        frame: Any
        view: memoryview
        if size >= bufpool.MIN_SIZE:
            frame = view = bufpool.POOL.take(size)
        else:
            frame = bytearray(size)
            view = memoryview(frame)
        view[:have] = self._view[self._start:self._end]
        self._start = self._end = 0
        got = have
        while got < size:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ConnectionError("the peer closed the connection in the middle of a message")
            got += k
        return frame

    def _fill(self, need: int, eof_ok: bool = False) -> bool:
        """Read until *need* unread bytes are buffered; ``False`` on a clean end of stream."""
        if self._end - self._start >= need:
            return True
        if need > len(self._buf) - self._start:  # make room: move what is unread to the front
            if need > len(self._buf):  # a header longer than the buffer (many frames)
                self._view.release()  # a bytearray with a live view cannot grow
                self._buf.extend(bytes(need - len(self._buf)))
                self._view = memoryview(self._buf)
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start:self._end]
            self._start, self._end = 0, n
        while self._end - self._start < need:
            k = self.sock.recv_into(self._view[self._end:])
            if not k:
                if eof_ok and self._end == self._start:
                    return False
                raise ConnectionError("the peer closed the connection in the middle of a message")
            self._end += k
        return True

    def close(self, linger: int | None = None) -> None:
        """Close the socket (*linger* is accepted for the zmq socket interface; sends never linger)."""
        if not self.closed:
            self.closed = True
            self._view.release()
            self.sock.close()


def connect(path: str, max_size: int = -1, timeout: float = TIMEOUT) -> RawLink:
    """A link to the listener at *path* (raises OSError if there is none)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return RawLink(sock, max_size, timeout)


class AsyncLink:
    """A link for an event loop (the controller's): reads what is there without blocking, keeps
    a partial message for later, and queues what the peer cannot take yet.

    The owner calls :meth:`read` when the socket is readable and :meth:`flush` when it is
    writable while :attr:`waiting` (data queued); both return at once.
    """

    def __init__(self, sock: socket.socket, max_size: int = -1):
        sock.setblocking(False)
        self.sock = sock
        self.max_size = max_size
        self._in = bytearray()
        self._out: deque[Any] = deque()  # buffers not sent yet, in order
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def waiting(self) -> bool:
        return bool(self._out)

    def read(self) -> tuple[list[list[bytearray]], bool]:
        """Complete messages received so far, and whether the peer has closed the connection.

        Raises :class:`~ipcluster.errors.MalformedMessage` as soon as a header breaks the limits.
        """
        eof = False
        while True:
            try:
                chunk = self.sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                eof = True
                break
            self._in += chunk
            if len(chunk) < CHUNK:
                break
        messages = []
        buf = self._in
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _COUNT.unpack_from(buf, pos)
            if not 0 < n <= MAX_FRAMES:
                raise MalformedMessage(f"raw message with {n} frames (at most {MAX_FRAMES})")
            if len(buf) - pos < 4 + 8 * n:
                break
            lengths = struct.unpack_from(f"<{n}Q", buf, pos + 4)
            total = sum(lengths)
            if self.max_size >= 0 and total > self.max_size:
                raise MalformedMessage(f"raw message of {total} bytes (at most {self.max_size})")
            start = pos + 4 + 8 * n
            if len(buf) - start < total:
                break
            frames = []
            for size in lengths:
                frames.append(buf[start:start + size])
                start += size
            messages.append(frames)
            pos = start
        if pos:
            del buf[:pos]
        if eof and buf:
            raise ConnectionError("the peer closed the connection in the middle of a message")
        return messages, eof

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message, or queue what the socket cannot take now (see :meth:`flush`)."""
        n = len(frames)
        if n > MAX_FRAMES:
            raise ValueError(f"a message of {n} frames is more than {MAX_FRAMES}")
        lengths = [_nbytes(f) for f in frames]
        self._out.append(struct.pack(f"<I{n}Q", n, *lengths))
        self._out.extend(frames)
        self.flush()

    def flush(self) -> None:
        """Send as much of the queue as the socket takes now (raises OSError if the peer is gone)."""
        out = self._out
        while out:
            try:
                sent = self.sock.sendmsg(list(itertools.islice(out, MAX_FRAMES + 1)))
            except (BlockingIOError, InterruptedError):
                return
            while sent:
                size = _nbytes(out[0])
                if sent >= size:
                    sent -= size
                    out.popleft()
                else:
                    out[0] = memoryview(out[0]).cast("B")[sent:]
                    sent = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._out.clear()
            self.sock.close()


class Listener:
    """A listening Unix socket at *path*; :meth:`accept` never blocks."""

    def __init__(self, path: str, max_size: int = -1):
        self.path = path
        self.max_size = max_size
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
            self.sock.listen(64)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> RawLink | None:
        conn = self.accept_socket()
        return None if conn is None else RawLink(conn, self.max_size)

    def accept_socket(self) -> socket.socket | None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        return conn

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class RawChannel:
    """A link read by an asyncio loop, with the send/close interface of a zmq ``Channel``: how a
    client's IO thread takes over a blocking call's link when its caller stops waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop, link: RawLink,
                 on_message: Callable[[list[Any]], None], name: str, log: logging.Logger):
        self.loop = loop
        self.link = link
        self.on_message = on_message
        self.name = name
        self.log = log
        self.lock = threading.Lock()
        loop.add_reader(link.fileno(), self._on_ready)

    def _on_ready(self) -> None:
        try:
            while True:
                frames = self.link.recv()  # only this loop reads; the lock orders the senders
                if frames is None:
                    self.close()
                    return
                try:
                    self.on_message(frames)
                except Exception:
                    self.log.exception("error handling a message on %s", self.name)
                if not self.link.buffered():
                    return
        except (OSError, MalformedMessage) as e:
            self.log.warning("closing %s: %s", self.name, e)
            self.close()

    def send(self, frames: Sequence[Any]) -> None:
        with self.lock:
            self.link.send(frames)

    send_threadsafe = send

    def close(self, linger: int | None = None) -> None:
        if not self.link.closed:
            try:
                self.loop.remove_reader(self.link.fileno())
            except (ValueError, OSError):
                pass
            self.link.close()
