"""Multipart messages over a Unix stream socket: the same-host fast path for blocking calls.

A message through zmq wakes three threads per hop (the sender's zmq IO thread, the receiver's IO
thread, then the receiver), and on a small VM each wake-up costs tens of microseconds.  Between a
client thread waiting for a reply and an engine on the same host, a plain stream socket read and
written by the two threads themselves wakes only the receiver.  The messages are the same signed
multipart messages as on zmq (checked by the same :class:`~ipcluster.protocol.session.Session`);
only the framing differs::

    u32 frame count n, n x u64 frame length, then the frames back to back   (little-endian)

A frame may instead travel through the receiver's shared memory (:mod:`ipcluster.protocol.segments`):
its length then has the top bit set and the stream carries, in its place, the u64 id of the buffer
the receiver granted for it.  Control messages of the link itself (those buffer grants) are answered
inside :meth:`RawLink.recv`, which returns an empty list when that was all there was.

Sockets live in the controller's private (0700) Unix-socket directory.  Reads are bounded: at most
:data:`MAX_FRAMES` frames and ``max_size`` bytes per message, and a message whose start arrived must
be complete within the link's timeout; a peer that breaks these rules is disconnected.  Received
frames are writable (``bytearray``, or for frames of :data:`~ipcluster.protocol.bufpool.MIN_SIZE`
bytes and more a ``memoryview`` of a reused, already faulted-in buffer of the process's
:data:`~ipcluster.protocol.bufpool.POOL`), so arrays built on them need no copy to be changed.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import logging
import os
import select
import socket
import struct
import threading
from collections import deque
from typing import Any, Callable, Sequence

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import bufpool, segments

#: Most frames one message may have (also below the usual IOV_MAX of 1024 for one sendmsg).
MAX_FRAMES = 1000
#: Seconds a started message may take to arrive in full, and a send to be taken by the peer.
TIMEOUT = 10.0
#: Bytes read per system call when the next message's size is not known yet.
CHUNK = 65536

_COUNT = struct.Struct("<I")
_ID = struct.Struct("<Q")
#: Top bit of a frame length: the frame is in the receiver's shared buffer named by the u64 that
#: stands in for it in the stream.
IN_BUFFER = 1 << 63
#: Ancillary space for the file descriptors of one buffer grant.
_ANCILLARY = socket.CMSG_SPACE(segments.MAX_GRANTS * array.array("i").itemsize)

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
        # Non-blocking, waiting in poll(2) only when a call would block: a socket with a timeout
        # polls before every send and receive, two system calls more per request and reply.
        sock.setblocking(False)
        self.sock = sock
        self.timeout = timeout
        self.max_size = max_size
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._start = 0  # unread bytes are self._buf[self._start:self._end]
        self._end = 0
        self.closed = False
        #: buffers of ours granted to the peer (made on its first request)
        self.grants: segments.Grants | None = None
        #: our maps of the peer's buffers; ``None``: large frames go through the socket
        self.peer: segments.PeerMaps | None = None
        self._early: deque[list[Any]] = deque()  # messages read while waiting for a grant
        self._fds: list[int] | None = None  # while waiting for a grant: descriptors received
        #: held while answering a grant request, if others send on this link from other threads
        self.send_lock: threading.Lock | None = None

    def use_segments(self) -> None:
        """Send large frames through the peer's shared buffers (the peer must answer grant requests:
        an engine's raw listener, or a client thread's link to one)."""
        if self.peer is None and bufpool.HAVE_SHARED:
            self.peer = segments.PeerMaps()

    def fileno(self) -> int:
        return self.sock.fileno()

    def buffered(self) -> bool:
        """Whether bytes of a next message were already read (poll would not report them)."""
        return self._end > self._start or bool(self._early)

    # --- sending ----------------------------------------------------------------------------

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message; blocks until the kernel took it all (raises OSError if the peer is gone).

        With :meth:`use_segments`, frames of :data:`~ipcluster.protocol.segments.MIN_SIZE` bytes
        and more are first copied into buffers the peer grants (a round trip), and only their ids
        are sent.
        """
        n = len(frames)
        if n > MAX_FRAMES:
            raise ValueError(f"a message of {n} frames is more than {MAX_FRAMES}")
        lengths = [_nbytes(f) for f in frames]
        bufs: list[Any] = [b"", *frames]
        remaining = 4 + 8 * n + sum(lengths)
        if self.peer is not None and lengths and max(lengths) >= segments.MIN_SIZE:
            remaining -= self._place(bufs, lengths)
        bufs[0] = struct.pack(f"<I{n}Q", n, *lengths)
        try:
            sent = self.sock.sendmsg(bufs)
        except (BlockingIOError, InterruptedError):
            sent = 0
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
            self._wait(select.POLLOUT)
            try:
                sent = self.sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                sent = 0

    def _wait(self, event: int) -> None:
        """Wait until the socket is ready for *event*; ``TimeoutError`` after the link's timeout."""
        poller = select.poll()
        poller.register(self.sock.fileno(), event)
        if not poller.poll(self.timeout * 1000):
            raise TimeoutError(f"a same-host connection was not {'readable' if event == select.POLLIN else 'writable'} "
                               f"within {self.timeout:g} s")

    def _place(self, bufs: list[Any], lengths: list[int]) -> int:
        """Copy the large frames of a message into buffers the peer grants; in *bufs* (frames
        after a header slot) and *lengths*, each frame placed becomes its buffer id and flag.
        Returns how many fewer bytes the stream carries."""
        assert self.peer is not None
        big = [i for i, size in enumerate(lengths) if size >= segments.MIN_SIZE][:segments.MAX_GRANTS]
        try:
            entries = self._request_grants([lengths[i] for i in big])
        except MalformedMessage as e:  # the link is out of step now: the caller drops it
            raise ConnectionError(f"bad buffer grant from the peer: {e}") from e
        saved = 0
        for i, (ident, _capacity, _new) in zip(big, entries):
            if ident and self.peer.write(ident, bufs[i + 1]):
                bufs[i + 1] = _ID.pack(ident)
                saved += lengths[i] - _ID.size
                lengths[i] |= IN_BUFFER
        return saved

    def _request_grants(self, sizes: list[int]) -> list[tuple[int, int, bool]]:
        """Ask the peer for buffers of *sizes*; wait for its grant, keeping messages that come
        first for :meth:`recv` and answering the peer's own requests meanwhile."""
        assert self.peer is not None
        self._send_plain(segments.encode_request(sizes, self.peer.have()))
        self._fds = []
        try:
            while True:
                frames = self._read_message()
                if frames is None:
                    raise ConnectionError("the peer closed the connection while granting buffers")
                if self._control(frames, awaiting_grant=True):
                    continue
                if frames[0] == segments.GRANT_REPLY and len(frames) == 2:
                    entries, gone = segments.decode_reply(frames[1])
                    fds, self._fds = self._fds, None
                    if len(entries) != len(sizes):
                        for fd in fds:
                            os.close(fd)
                        raise MalformedMessage(f"a grant of {len(entries)} buffers for {len(sizes)} frames")
                    self.peer.update(entries, gone, fds)
                    return entries
                self._early.append(frames)
        finally:
            if self._fds is not None:  # failed: descriptors of a grant never completed
                for fd in self._fds:
                    os.close(fd)
                self._fds = None

    def _send_plain(self, frames: Sequence[Any], fds: Sequence[int] = ()) -> None:
        """Send a small message as is (with *fds* attached to its first byte)."""
        n = len(frames)
        data = b"".join([struct.pack(f"<I{n}Q", n, *(_nbytes(f) for f in frames)), *frames])
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        while True:
            try:
                sent = self.sock.sendmsg([data], ancillary)
                break
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLOUT)
        view = memoryview(data)
        while sent < len(data):
            self._wait(select.POLLOUT)
            try:
                sent += self.sock.send(view[sent:])
            except (BlockingIOError, InterruptedError):
                pass

    # --- receiving --------------------------------------------------------------------------

    def recv(self) -> list[Any] | None:
        """The next message, or ``None`` if the peer closed the connection between messages, or
        ``[]`` if all there was to read was a control message of the link (answered here).

        Raises :class:`~ipcluster.errors.MalformedMessage` for a message beyond the limits and
        ``ConnectionError`` / ``TimeoutError`` for one cut short: the link is then unusable.
        """
        if self._early:
            return self._early.popleft()
        while True:
            frames = self._read_message()
            if not frames or not self._control(frames):
                return frames
            if not self.buffered():
                return []

    def _control(self, frames: list[Any], awaiting_grant: bool = False) -> bool:
        """Answer a control message of the link; ``False`` if *frames* is not one (a grant reply
        is one only for :meth:`_request_grants`, when *awaiting_grant*)."""
        first = frames[0]
        if len(first) != len(segments.GRANT_REQUEST):  # the tags are the only frames this long
            return False
        if first == segments.GRANT_REQUEST and len(frames) == 2:
            if self.grants is None:
                self.grants = segments.Grants(self.max_size)
            reply, fds = self.grants.serve(frames[1])
            if self.send_lock is None:
                self._send_plain(reply, fds)
            else:
                with self.send_lock:
                    self._send_plain(reply, fds)
            return True
        if first == segments.GRANT_REPLY and not awaiting_grant:
            raise MalformedMessage("a buffer grant that was not asked for")
        return False

    def _read_message(self) -> list[Any] | None:
        """The next message as framed on the wire (``None``: closed between messages)."""
        if not self._fill(4, eof_ok=True):
            return None
        (n,) = _COUNT.unpack_from(self._buf, self._start)
        if not 0 < n <= MAX_FRAMES:
            raise MalformedMessage(f"raw message with {n} frames (at most {MAX_FRAMES})")
        self._fill(4 + 8 * n)
        lengths = struct.unpack_from(f"<{n}Q", self._buf, self._start + 4)
        self._start += 4 + 8 * n
        total = sum(lengths)
        if total < IN_BUFFER:  # no frame in a shared buffer (the usual case)
            if self.max_size >= 0 and total > self.max_size:
                raise MalformedMessage(f"raw message of {total} bytes (at most {self.max_size})")
            return [self._frame(size) for size in lengths]
        total = sum(size & ~IN_BUFFER for size in lengths)
        if self.max_size >= 0 and total > self.max_size:
            raise MalformedMessage(f"raw message of {total} bytes (at most {self.max_size})")
        return [self._frame(size) if size < IN_BUFFER else self._granted(size & ~IN_BUFFER) for size in lengths]

    def _granted(self, size: int) -> memoryview:
        """A frame the peer wrote into one of our shared buffers: the stream has the buffer's id."""
        self._fill(_ID.size)
        (ident,) = _ID.unpack_from(self._buf, self._start)
        self._start += _ID.size
        if self.grants is None:
            raise MalformedMessage("a frame in a shared buffer that was never granted")
        return self.grants.claim(ident, size)

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
            k = self._recv_into(view[got:])
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
            k = self._recv_into(self._view[self._end:])
            if not k:
                if eof_ok and self._end == self._start:
                    return False
                raise ConnectionError("the peer closed the connection in the middle of a message")
            self._end += k
        return True

    def _recv_into(self, view: memoryview) -> int:
        """``recv_into``, waiting (at most the timeout) if nothing is there yet; while a grant is
        awaited, also collect the file descriptors that come."""
        while True:
            try:
                return self._recv_now(view)
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLIN)

    def _recv_now(self, view: memoryview) -> int:
        if self._fds is None:
            return self.sock.recv_into(view)
        k, ancillary, flags, _ = self.sock.recvmsg_into([view], _ANCILLARY)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise MalformedMessage("more file descriptors than a buffer grant may carry")
        return k

    def close(self, linger: int | None = None) -> None:
        """Close the socket (*linger* is accepted for the zmq socket interface; sends never linger)."""
        if not self.closed:
            self.closed = True
            self._view.release()
            self.sock.close()
            if self.grants is not None:
                self.grants.clear()
            if self.peer is not None:
                self.peer.close()
            self._early.clear()


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
        # Sends may come from other threads while this loop reads: a send must never read (wait
        # for a buffer grant), so large frames go through the socket here; and the loop's answers
        # to the peer's grant requests take the senders' lock.
        if link.peer is not None:
            link.peer.close()
            link.peer = None
        link.send_lock = self.lock
        loop.add_reader(link.fileno(), self._on_ready)

    def _on_ready(self) -> None:
        try:
            while True:
                frames = self.link.recv()  # only this loop reads; the lock orders the senders
                if frames is None:
                    self.close()
                    return
                if not frames:  # a control message of the link, answered
                    if not self.link.buffered():
                        return
                    continue
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
