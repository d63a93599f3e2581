"""Holding the controller's mux messages while it handles what is already queued, then sending
them per peer as batches (``ipcluster.protocol.batch``).

Entered (``with outboxes:``) around a pass over the engines' replies and around the parts of a
client's batch: messages for engines (tasks, requests) and for clients (replies, output, the
controller's own error replies) are kept per peer, in order, and sent when the outermost block
ends, several small ones to one peer as one batch.  Outside such a block every message is sent
at once, so nothing ever waits for more to come; inside, a peer's queue is sent as soon as it
holds a full batch.

Bookkeeping never waits: the router and the scheduler note a request as sent when they hand it
over.  If an engine turns out to be unreachable when its batch is sent, each message's
``on_unreachable`` callback undoes that, as the immediate send's error path would have.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Sequence

import zmq

from ipcluster.protocol.batch import BATCH_TARGET, MAX_PARTS, Packer
from ipcluster.protocol.session import Session

Unreachable = Callable[[], None]
Send = Callable[[list[Any]], None]
_Frame = zmq.Frame


def _b(frame: Any) -> bytes:
    return frame.bytes if frame.__class__ is _Frame else bytes(frame)


class _Outbox(abc.ABC):
    """What both outboxes share: while a block is entered (``with outbox:``, nested blocks count)
    messages are queued per peer; the outermost block's end sends every queue (:meth:`_flush_peer`)."""

    depth = 0
    queued: dict[bytes, list[Any]]

    @abc.abstractmethod
    def _flush_peer(self, peer: bytes) -> None:
        """Send what is queued for *peer* (each outbox its own way)."""

    def flush(self) -> None:
        while self.queued:
            self._flush_peer(next(iter(self.queued)))

    def __enter__(self) -> "_Outbox":
        self.depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.flush()


class EngineOutbox(_Outbox):
    """Messages ``[engine, client, <IDS|MSG>, ...]`` for the engines' mux sockets."""

    def __init__(self, session: Session, send: Send, send_single: Send | None = None,
                 immediate_prefix: bytes = b"", takes_batches: Callable[[bytes], bool] | None = None):
        self.session = session
        # whether an engine said it takes batches (an engine of an older version gets each message alone)
        self.takes_batches = takes_batches
        self.send_batch = send  # the mux_back socket
        self.send_single = send_single or send  # a message sent alone (may take an engine's raw link)
        # clients whose messages are never held (blocking calls on raw links: latency counts)
        self.immediate_prefix = immediate_prefix
        self.depth = 0
        self.queued: dict[bytes, list[tuple[list[Any], Unreachable | None, Send | None]]] = {}
        self.batches_sent = self.parts_sent = 0

    def send(self, frames: list[Any], on_unreachable: Unreachable | None = None, via: Send | None = None) -> None:
        """Send (or, inside a block, queue) *frames*; *on_unreachable* runs if the engine is not
        connected (``EHOSTUNREACH``), now or when the queue is sent.  *via*: how to send it if it
        goes alone (default: the mux_back socket)."""
        if self.depth == 0 or (self.immediate_prefix and _b(frames[1]).startswith(self.immediate_prefix)):
            self._send_now(frames, on_unreachable, via)
            return
        engine = _b(frames[0])
        q = self.queued.get(engine)
        if q is None:
            q = self.queued[engine] = []
        q.append((frames, on_unreachable, via))
        if len(q) >= MAX_PARTS:
            self._flush_peer(engine)

    def _send_now(self, frames: list[Any], on_unreachable: Unreachable | None, via: Send | None) -> None:
        try:
            (via or self.send_single)(frames)
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH or on_unreachable is None:
                raise
            on_unreachable()

    def _flush_peer(self, engine: bytes) -> None:
        items = self.queued.pop(engine, None)
        if not items:
            return
        if len(items) == 1 or (self.takes_batches is not None and not self.takes_batches(engine)):
            for item in items:
                self._send_now(*item)
            return
        packer = Packer(self.session, [engine])
        for queued, _, _ in items:
            packer.add(queued[1:])
        done = 0
        for out, count in packer.counted():
            try:
                if count == 1:
                    (items[done][2] or self.send_single)(items[done][0])
                else:
                    self.send_batch(list(out))
                    self.batches_sent += 1
                    self.parts_sent += count
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH:
                    raise
                for _, cb, _ in items[done:]:  # the engine is gone: nothing more reaches it
                    if cb is not None:
                        cb()
                return
            done += count



class ClientOutbox(_Outbox):
    """Messages ``[client, route, <IDS|MSG>, ...]`` for clients on the mux front socket.

    Only clients that sent a batch themselves get batches (they understand them); a client's
    other sockets (a blocking call's own connection) have other routing ids and never do.
    """

    #: Clients remembered as taking batches (the oldest forgotten first).
    MAX_CLIENTS = 10_000

    def __init__(self, session: Session, front: Any):
        self.session = session
        self.front = front
        self.depth = 0
        self.queued: dict[bytes, list[Sequence[Any]]] = {}
        self.batch_clients: dict[bytes, None] = {}
        self.batches_sent = self.parts_sent = 0

    def takes_batches(self, client: bytes) -> None:
        bc = self.batch_clients
        if client not in bc:
            if len(bc) >= self.MAX_CLIENTS:
                del bc[next(iter(bc))]
            bc[client] = None

    def forget(self, client: bytes) -> None:
        self.batch_clients.pop(client, None)

    def send(self, frames: Sequence[Any]) -> None:
        if self.depth == 0:
            self.front.send(frames)
            return
        client = _b(frames[0])
        if client not in self.batch_clients:
            self.front.send(frames)
            return
        q = self.queued.get(client)
        if q is None:
            q = self.queued[client] = []
        q.append(frames)
        if len(q) >= MAX_PARTS:
            self._flush_peer(client)

    def _flush_peer(self, client: bytes) -> None:
        items = self.queued.pop(client, None)
        if not items:
            return
        if len(items) == 1:
            self.front.send(items[0])
            return
        packer = Packer(self.session, [client, BATCH_TARGET])
        for frames in items:
            packer.add(frames[1:])
        for frames, count in packer.counted():
            if count == 1:
                self.front.send([client, *frames])
            else:
                self.front.send(frames)
                self.batches_sent += 1
                self.parts_sent += count



class Outboxes:
    """Both outboxes entered together (a context manager for ``Channel.batch``)."""

    def __init__(self, engines: EngineOutbox, clients: ClientOutbox):
        self.engines = engines
        self.clients = clients

    def __enter__(self) -> "Outboxes":
        self.engines.depth += 1
        self.clients.depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        # engines first: they start working while the clients' replies go out
        self.engines.__exit__()
        self.clients.__exit__()
