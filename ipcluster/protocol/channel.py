"""A zmq socket driven by an asyncio loop: drain on readiness, no await per message.

zmq's ``FD`` is edge-triggered: it signals when the socket's state *changes*, and any
operation on the socket (even a send, even reading ``EVENTS``) may consume that edge.  So:

* on readiness, receive with ``NOBLOCK`` until ``EVENTS`` says nothing is left;
* after a send, make sure ``EVENTS`` is looked at again before the loop sleeps, because the send
  may have eaten the edge that would have woken the loop.  Inside this socket's own drain the
  drain loop does that; otherwise one drain pass is scheduled (``call_soon``, once per loop
  iteration however many messages were sent), which is cheaper than a ``getsockopt`` per send.

Every received message is handed to ``on_message(frames)`` as a list of ``zmq.Frame`` (zero-copy).
Handlers run synchronously inside the drain; an exception in a handler is logged (bounded) and the
drain continues — one bad message must never stop a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, Callable, Sequence

import zmq

from ipcluster.protocol.frames import recv_frames, send_frames

Handler = Callable[[list[zmq.Frame]], None]


_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _readable(sock: zmq.Socket) -> bool:
    """Whether a message is waiting (also re-arms the edge-triggered FD)."""
    return bool(sock.get(_EVENTS) & _POLLIN)  # type: ignore[operator]  # plain ints: the enum operators cost more than the call


class Channel:
    """Owns one zmq socket inside one asyncio loop (the loop's thread is the only user)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket,
        on_message: Handler | None,
        name: str,
        log: logging.Logger,
        threadsafe: bool = False,
        batch: Any = None,
    ):
        self.loop = loop
        # entered around each drain pass (e.g. a client's futures completed together at its end)
        self.batch = batch
        # With threadsafe=True other threads may send through send_threadsafe(); every socket
        # operation then happens under this lock (a full memory barrier, as zmq requires for
        # moving a socket between threads).
        self.lock: Any = threading.Lock() if threadsafe else contextlib.nullcontext()
        self.sock = sock
        self.name = name
        self.log = log
        self.on_message = on_message
        self._scheduled = False
        self._draining = False  # inside _on_ready: the drain loop re-checks EVENTS itself
        # messages other threads queued with send_soon(), sent by the loop thread in order
        self._outbox: list[Sequence[Any]] = []
        self._outbox_lock = threading.Lock()
        self._flush_scheduled = False
        # turns the queue send_soon() filled into what is sent (e.g. several small messages as one
        # batch: ipcluster.protocol.batch); None sends each message as queued
        self.packer: Callable[[list[Sequence[Any]]], list[Sequence[Any]]] | None = None
        self._closed = False
        self.handler_errors = 0
        self._reading = False
        if on_message is not None:
            self.start()

    def start(self) -> None:
        """Begin delivering messages to ``on_message`` (set it first)."""
        if self._reading or self.on_message is None:
            return
        self._reading = True
        self.loop.add_reader(self.sock.FD, self._on_ready)
        # messages may already be queued before the reader was installed
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._on_ready)

    def _on_ready(self) -> None:
        self._scheduled = False
        sock = self.sock
        handler = self.on_message
        if self._closed or handler is None:
            return
        lock = self.lock
        self._draining = True
        try:
            if self.batch is None:
                self._drain(sock, handler, lock)
            else:
                while True:
                    with self.batch:
                        self._drain(sock, handler, lock)
                    # leaving the batch ran callbacks that may have sent on this socket after the
                    # drain's last look at EVENTS (a send can consume the readiness edge): look again
                    with lock:
                        if self._closed or not _readable(sock):
                            break
        finally:
            self._draining = False

    def _drain(self, sock: zmq.Socket, handler: Handler, lock: Any) -> None:
        while True:
            try:
                with lock:
                    if self._closed or not _readable(sock):
                        return
                    frames = recv_frames(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                if self._closed or e.errno == zmq.ENOTSOCK:
                    return
                raise
            try:
                handler(frames)
            except Exception:
                self.handler_errors += 1
                if self.handler_errors <= 10 or self.handler_errors % 1000 == 0:
                    self.log.exception("error handling a message on %s (%d so far)", self.name, self.handler_errors)
            if self._closed:
                return

    def send(self, frames: Sequence[Any]) -> None:
        """Queue *frames* for sending (loop thread); never blocks: HWMs are unlimited or ROUTER."""
        if self._outbox:
            self._flush_outbox()  # messages other threads queued go first
        try:
            with self.lock:
                send_frames(self.sock, frames)
        finally:
            if self._reading and not self._draining:
                self._schedule()

    def send_threadsafe(self, frames: Sequence[Any]) -> None:
        """Send from a thread other than the loop's (requires ``threadsafe=True``).

        Sending directly saves a wake-up of the loop thread per message; if the send consumed the
        socket's readiness edge, the loop is asked to drain.
        """
        with self.lock:
            if self._closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "channel is closed")
            send_frames(self.sock, frames)
            pending = self._reading and _readable(self.sock)
        if pending:
            self.loop.call_soon_threadsafe(self._schedule)

    def send_soon(self, frames: Sequence[Any]) -> None:
        """Send from another thread through the loop: queued, then sent by the loop thread.

        For streams of messages (many tasks submitted in a row): the caller only appends to a
        queue, and wakes the loop once per batch rather than once per message; the loop sends the
        whole batch without contending for the socket.  Order is kept with :meth:`send`.  Errors
        of the send itself are logged, not raised: use it only on sockets whose sends cannot fail
        (DEALERs with unlimited HWM).
        """
        with self._outbox_lock:
            if self._closed:
                raise zmq.ZMQError(zmq.ENOTSOCK, "channel is closed")
            self._outbox.append(frames)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self.loop.call_soon_threadsafe(self._flush_outbox)

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if self._closed:
            return
        if self.packer is not None and len(batch) > 1:
            try:
                batch = self.packer(batch)
            except Exception:  # never lose messages: send them as they were queued
                self.log.exception("packing %d queued messages on %s failed", len(batch), self.name)
        try:
            with self.lock:
                for frames in batch:
                    send_frames(self.sock, frames)
        except zmq.ZMQError as e:
            self.log.error("sending on %s failed: %s (%d queued messages lost)", self.name, e, len(batch))
        if self._reading and not self._draining:
            self._schedule()

    def close(self, linger: int | None = None) -> None:
        if self._closed:
            return
        with self.lock:
            self._closed = True
            if self._reading:
                try:
                    self.loop.remove_reader(self.sock.FD)
                except Exception:
                    pass
            self.sock.close(linger=linger)
