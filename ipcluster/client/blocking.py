"""Blocking calls that the calling thread sends and receives itself: to same-host engines, and
load-balanced tasks to the controller.

A blocking ``apply``/``execute`` normally goes out on the client's shared sockets and its reply is
received by the IO thread, which then wakes the caller: on a small machine that hand-over (a thread
wake-up and a GIL switch) is a large part of a round trip.  Here the caller uses its own DEALER
socket to each engine (one per thread and engine, connected to the engine's direct socket), sends
the requests, and waits for the outputs and replies on those sockets with the GIL released.  A
blocking load-balanced ``apply`` does the same with a DEALER of its own to the controller's mux
(the controller answers whichever socket sent the task).

Nothing else ever touches a thread's sockets, so no lock is needed.  If the wait is cut short
(Ctrl-C, or an exception), the sockets still expecting replies are handed to the IO thread, which
finishes the job, and later requests to those engines follow them there so they stay in order.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Sequence

import zmq

from ipcluster.protocol.frames import recv_frames, send_frames

if TYPE_CHECKING:
    from ipcluster.client.client import Client

#: Poll slice (ms): how soon a waiting caller notices a request failed elsewhere (engine death).
POLL_SLICE_MS = 50


class BlockingCalls:
    """Per-thread sockets to same-host engines, for calls whose caller waits for the reply."""

    def __init__(self, client: "Client", context: zmq.Context):
        self._client = client
        self._ctx = context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sockets: list[zmq.Socket] = []  # every socket made, to close them with the client

    def _socket(self, uuid: bytes, url: str) -> zmq.Socket:
        socks: dict[bytes, zmq.Socket] | None = getattr(self._local, "sockets", None)
        if socks is None:
            socks = self._local.sockets = {}
        sock = socks.get(uuid)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(url)  # a DEALER queues what it is given until the connection is up
            socks[uuid] = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def run(self, uuids: Sequence[bytes], urls: Sequence[str], requests: Sequence[list[Any]],
            futures: Sequence[concurrent.futures.Future[Any]], to_controller: bool = False) -> None:
        """Send ``requests[i]`` (frames with the engine's routing id first) to ``uuids[i]`` and wait
        here until every future is done.

        With *to_controller* the one socket goes to the controller's mux (a load-balanced task:
        ``uuids`` is ``[SCHEDULER]``) and the routing id is sent along, as the controller expects.
        """
        socks = [self._socket(u, url) for u, url in zip(uuids, urls)]
        for sock, frames in zip(socks, requests):
            send_frames(sock, frames if to_controller else frames[1:])  # an engine's DEALER needs no routing id
        handle = self._client._on_engine_message
        poller = zmq.Poller()
        for sock in set(socks):
            poller.register(sock, zmq.POLLIN)
        try:
            while not all(f.done() for f in futures):
                for sock, _ in poller.poll(POLL_SLICE_MS):
                    while True:
                        try:
                            frames = recv_frames(sock)
                        except zmq.Again:
                            break
                        handle(frames)
        except BaseException:
            self._hand_over(uuids, socks, futures)
            raise

    def _hand_over(self, uuids: Sequence[bytes], socks: Sequence[zmq.Socket],
                   futures: Sequence[concurrent.futures.Future[Any]]) -> None:
        """Give the sockets that still expect replies to the IO thread (this thread stops using them)."""
        socks_by_thread: dict[bytes, zmq.Socket] = getattr(self._local, "sockets", {})
        pending: dict[bytes, list[concurrent.futures.Future[Any]]] = {}
        by_uuid: dict[bytes, zmq.Socket] = {}
        for uuid, sock, fut in zip(uuids, socks, futures):
            by_uuid[uuid] = sock
            if not fut.done():
                pending.setdefault(uuid, []).append(fut)
        for uuid, futs in pending.items():
            sock = by_uuid[uuid]
            socks_by_thread.pop(uuid, None)
            with self._lock:
                self._sockets.remove(sock)
            self._client._adopt_route(uuid, sock, futs)

    def close(self) -> None:
        """Close every per-thread socket (called when the client closes)."""
        with self._lock:
            socks, self._sockets = self._sockets, []
        for sock in socks:
            sock.close(linger=0)
