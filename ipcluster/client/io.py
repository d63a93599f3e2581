"""The client's IO thread: one asyncio loop that owns every socket of one Client.

User threads never touch a socket.  They build and sign frames themselves (so serialization runs in
parallel with IO), register what they are waiting for, and hand the frames to the loop with
``call_soon_threadsafe``.  The loop drains sockets on readiness and dispatches each message to the
callback the client installed for that socket.  This works the same inside Jupyter, where the user's
thread already runs an event loop: nothing here ever runs on the user's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable, Sequence, TypeVar

import zmq

from ipcluster.protocol.channel import Channel
from ipcluster.protocol.rawlink import RawChannel, RawLink

T = TypeVar("T")

#: Channels (DEALERs: their sends cannot fail) on which other threads' messages are queued for the
#: loop to send in batches, instead of each thread sending under the socket's lock.  A caller that
#: waits for one reply uses its own socket instead (see ``blocking.py``).
QUEUED = frozenset({"mux", "hub", "control"})
log = logging.getLogger("ipcluster.client")


class IOThread:
    """A daemon thread running an asyncio loop; owns the sockets registered with :meth:`add`."""

    def __init__(self, name: str = "ipcluster-client-io"):
        self.loop = asyncio.new_event_loop()
        self.channels: dict[str, Channel] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_io_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], T], timeout: float | None = 10) -> T:
        """Run *fn* in the IO thread and return its result (from any other thread)."""
        if self.in_io_thread():
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the caller
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def add(self, name: str, sock: zmq.Socket, on_message: Callable[[list[zmq.Frame]], None] | None,
            batch: Any = None) -> Channel:
        """Adopt *sock* (created by the caller, not yet used) and start reading it in the loop
        (*batch*: see :class:`~ipcluster.protocol.channel.Channel`)."""

        def install() -> Channel:
            ch = Channel(self.loop, sock, on_message, name, log, threadsafe=True, batch=batch)
            self.channels[name] = ch
            return ch

        return self.call(install)

    def add_raw(self, name: str, link: RawLink, on_message: Callable[[list[Any]], None]) -> RawChannel:
        """Adopt a raw link (see :mod:`ipcluster.protocol.rawlink`) and start reading it in the loop."""

        def install() -> RawChannel:
            ch = RawChannel(self.loop, link, on_message, name, log)
            self.channels[name] = ch  # type: ignore[assignment]
            return ch

        return self.call(install)

    def remove(self, name: str, linger: int = 0) -> None:
        """Close channel *name* (from any thread; returns at once)."""

        def close() -> None:
            ch = self.channels.pop(name, None)
            if ch is not None:
                ch.close(linger=linger)

        if self.in_io_thread():
            close()
        elif self.alive:
            self.loop.call_soon_threadsafe(close)

    def send(self, name: str, frames: Sequence[Any]) -> None:
        """Send *frames* on channel *name* from any thread (returns at once)."""
        ch = self.channels.get(name)
        if ch is None:
            raise zmq.ZMQError(zmq.ENOTSOCK, f"the client's {name} socket is closed")
        if self.in_io_thread():
            ch.send(frames)
        elif name in QUEUED:
            ch.send_soon(frames)
        else:
            ch.send_threadsafe(frames)

    def stop(self, linger: int = 0, timeout: float = 5) -> None:
        """Close every channel and stop the loop; safe to call twice or from the IO thread."""
        if not self.alive:
            return

        def close_all() -> None:
            for ch in self.channels.values():
                ch.close(linger=linger)
            self.channels.clear()
            self.loop.stop()

        if self.in_io_thread():
            close_all()
            return
        self.loop.call_soon_threadsafe(close_all)
        self._thread.join(timeout)
