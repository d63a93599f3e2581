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

import _signal  # getsignal/signal without the enum conversions of the signal module (per call here)
import concurrent.futures
import functools
import itertools
import select
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import zmq

from ipcluster.client.collect import ReplyCollector
from ipcluster.client.spin import SpinWait, spin_budget_from_env, worth_spinning
from ipcluster.errors import MalformedMessage
from ipcluster.protocol import rawlink
from ipcluster.protocol.frames import recv_frames, send_frames
from ipcluster.protocol.limits import DATA, set_limit

if TYPE_CHECKING:
    from ipcluster.client.client import Client

#: Poll slice (ms): how soon a waiting caller notices a request failed elsewhere (engine death).
POLL_SLICE_MS = 50


_SIGINT = int(signal.SIGINT)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class _SigintGuard:
    """Holds back a Ctrl-C (SIGINT) that arrives while a received message is being handled.

    The caller's thread handles its replies itself, so a KeyboardInterrupt could otherwise strike
    half-way through recording one (a reply taken off the books but its future never finished: a
    hang).  While the guard is installed (main thread only: elsewhere no KeyboardInterrupt can
    arrive), SIGINT outside :meth:`run` goes straight to the previous handler; inside, it is kept
    and delivered as soon as the message has been handled.
    """

    def __init__(self) -> None:
        self._inside = False
        self._pending: tuple[int, Any] | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "_SigintGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = _signal.getsignal(_SIGINT)
            if self._previous is not None:  # None: installed from C, cannot be called from here
                _signal.signal(_SIGINT, self._on_sigint)
                self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed and _signal.getsignal(_SIGINT) == self._on_sigint:
            _signal.signal(_SIGINT, self._previous)

    def run(self, fn: Any, frames: Any) -> None:
        self._inside = True
        try:
            fn(frames)
        finally:
            self._inside = False
        if self._pending is not None:
            signum, frame = self._pending
            self._pending = None
            self._deliver(signum, frame)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._inside:
            self._pending = (signum, frame)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum: int, frame: Any) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)  # the default handler raises KeyboardInterrupt here
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self._installed = False
            signal.raise_signal(signum)
        # SIG_IGN: ignored, as it would have been


_HAVE_EPOLL = hasattr(select, "epoll")  # Linux


class _LinkPoller:
    """The poller of a wait on raw links only: an epoll set, registered once per set of links.

    A call on many engines waits many times, and zmq_poll (poll(2) underneath) hands the kernel
    every descriptor again on each wait: on 33 descriptors, 3.1 µs per wait that finds one ready
    against 0.75 µs with epoll (measured on 2 CPUs).  Same interface as the part of ``zmq.Poller``
    used here.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def register(self, fd: int, _events: int) -> None:
        self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):  # already closed
            pass

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        return self._epoll.poll(timeout_ms / 1000.0)

    def close(self) -> None:
        self._epoll.close()

    __del__ = close


class BlockingCalls:
    """Per-thread sockets to same-host engines, for calls whose caller waits for the reply."""

    def __init__(self, client: "Client", context: zmq.Context, identity: bytes = b""):
        self._client = client
        self._ctx = context
        self._identity = identity
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sockets: list[Any] = []  # every socket and raw link made, to close them with the client
        self._reply_ids = itertools.count(1)
        self._spin_budget = spin_budget_from_env()
        self._epolls: weakref.WeakSet[_LinkPoller] = weakref.WeakSet()

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
            set_limit(sock, DATA, self._client.connection_info.max_message_size)
            sock.connect(url)  # a DEALER queues what it is given until the connection is up
            socks[uuid] = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def reply_route(self, urls: Iterable[str], raw_urls: dict[bytes, str] | None = None) -> bytes | None:
        """The routing id of this thread's *reply socket*, connected to the direct sockets *urls*
        of the engines on this host (``None`` if there are none).

        Engines send the reply to a blocking load-balanced task straight to the socket the task
        names (``reply_to``), one hop less than through the controller; see ``Engine._reply``.
        One DEALER per thread with a fixed routing id, connected to every local engine: the
        engine that runs the task is not known in advance.  With *raw_urls* (uuid -> listener),
        the thread also has a raw link to each of those engines, announced under the same id:
        engines answer on it rather than on the DEALER.
        """
        for uuid, path in (raw_urls or {}).items():
            self._link(uuid, path)
        local = self._local
        entry = getattr(local, "reply", None)
        wanted = set(urls)
        if entry is None:
            if not wanted:
                return None
            sock = self._ctx.socket(zmq.DEALER)
            ident = self._reply_ident()
            sock.setsockopt(zmq.IDENTITY, ident)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            with self._lock:
                self._sockets.append(sock)
            connected_urls: set[str] = set()
            entry = local.reply = (sock, ident, connected_urls)
        sock, ident, connected = entry
        if wanted != connected:
            for url in connected - wanted:
                try:
                    sock.disconnect(url)
                except zmq.ZMQError:
                    pass
            for url in wanted - connected:
                sock.connect(url)
            connected.clear()
            connected.update(wanted)
        return ident

    def _link(self, uuid: bytes, path: str, hello: bool = True) -> rawlink.RawLink | None:
        """This thread's raw link to engine *uuid* (listening at *path*); ``None`` if it cannot be reached."""
        links: dict[bytes, rawlink.RawLink] | None = getattr(self._local, "links", None)
        if links is None:
            links = self._local.links = {}
        link = links.get(uuid)
        if link is None or link.closed:
            try:
                link = rawlink.connect(path, self._client.connection_info.max_message_size)
                if hello:  # an engine: replies to our load-balanced tasks may come here
                    link.send([rawlink.HELLO + self._reply_ident()])
                    link.use_segments()  # large frames go straight into the engine's buffers
            except OSError:
                return None
            links[uuid] = link
            with self._lock:
                self._sockets.append(link)
        return link

    def _reply_ident(self) -> bytes:
        """This thread's reply routing id (see :meth:`reply_route`), made on first use."""
        ident: bytes | None = getattr(self._local, "reply_ident", None)
        if ident is None:
            ident = self._local.reply_ident = b"%s-r%d" % (self._identity, next(self._reply_ids))
        return ident

    def _drop_link(self, uuid: bytes, link: rawlink.RawLink) -> None:
        links: dict[bytes, rawlink.RawLink] = getattr(self._local, "links", {})
        if links.get(uuid) is link:
            del links[uuid]
        with self._lock:
            if link in self._sockets:
                self._sockets.remove(link)
        link.close()
        self._local.pollers = None

    def run(self, uuids: Sequence[bytes], urls: Sequence[str], requests: Sequence[list[Any]],
            futures: Sequence[concurrent.futures.Future[Any]], to_controller: bool = False,
            raw_urls: Sequence[str | None] = ()) -> None:
        """Send ``requests[i]`` (frames with the engine's routing id first) to ``uuids[i]`` and wait
        here until every future is done.

        With *to_controller* the one socket goes to the controller's mux (a load-balanced task:
        ``uuids`` is ``[SCHEDULER]``) and the routing id is sent along, as the controller expects;
        the reply may also come on this thread's reply socket (see :meth:`reply_route`).
        With *raw_urls*, requests go on this thread's raw links to those engines where they can
        (see :mod:`ipcluster.protocol.rawlink`), else on its DEALERs.
        """
        socks: list[Any] = []
        for i, (uuid, url, frames) in enumerate(zip(uuids, urls, requests)):
            path = raw_urls[i] if raw_urls else None
            link = self._link(uuid, path, hello=not to_controller) if path else None
            if link is not None:
                try:
                    link.send(frames if to_controller else frames[1:])
                    socks.append(link)
                    continue
                except OSError:  # the engine went away: its DEALER reports what happens next
                    self._drop_link(uuid, link)
            sock = self._socket(uuid, url)
            send_frames(sock, frames if to_controller else frames[1:])  # an engine's DEALER needs no routing id
            socks.append(sock)
        handle = self._client._on_engine_message
        reply = getattr(self._local, "reply", None) if to_controller else None
        reply_links: list[rawlink.RawLink] = list(getattr(self._local, "links", {}).values()) if reply else []
        poller = self._poller(socks if reply is None else [*socks, reply[0], *reply_links])
        links = {s.fileno(): s for s in [*socks, *reply_links] if s.__class__ is rawlink.RawLink}
        pending = list(futures)  # not done yet (shrinks: a call on 32 engines looks at 32, then fewer)
        spin: SpinWait | None = getattr(self._local, "spin", None)
        if spin is None:
            spin = self._local.spin = SpinWait(self._spin_budget)
        # judged by the whole call: the engines that answered first are idle, but the ones still at
        # work are as many per CPU as before (a poller would take a CPU they need)
        spinning = worth_spinning(len(futures))
        collector: ReplyCollector | None = None
        if not spinning and reply is None and poller.__class__ is _LinkPoller:
            # many engines per CPU, all on raw links: fewer wake-ups, replies handled together
            collector = ReplyCollector(socks, poller, POLL_SLICE_MS)
        try:
            with _SigintGuard() as guard:
                def run_one(frames: list[Any]) -> None:
                    guard.run(handle, frames)
                while pending:
                    if collector is not None:
                        for fd, _ in collector.wait():
                            if not self._read_link(links[fd], poller, functools.partial(collector.keep, fd)):
                                collector.forget(fd)
                        if collector.due():
                            collector.handle(run_one)
                        pending = [f for f in pending if not f.done()]
                        continue
                    for sock, _ in spin.poll(poller, POLL_SLICE_MS, spinning):
                        if sock.__class__ is int:  # a raw link's file descriptor
                            self._read_link(links[sock], poller, run_one)
                        else:
                            # one message per ready socket and pass: no zmq.Again (an exception) per wait
                            while sock.get(_EVENTS) & _POLLIN:
                                guard.run(handle, recv_frames(sock))
                    pending = [f for f in pending if not f.done()]
        except BaseException:
            if collector is not None and collector.stash:
                with _SigintGuard() as guard:  # what was read goes before what the IO thread reads next
                    collector.handle(functools.partial(guard.run, handle))
            self._hand_over(uuids, socks, futures, reply[0] if reply is not None else None, reply_links)
            raise

    def _read_link(self, link: rawlink.RawLink, poller: "zmq.Poller | _LinkPoller",
                   sink: Callable[[list[Any]], None]) -> bool:
        """Give what *link* has to *sink*; ``False`` if it broke (the engine died: the IO thread
        fails its requests on the controller's notice)."""
        try:
            while True:
                frames = link.recv()
                if frames is None:
                    raise ConnectionError("the engine closed the connection")
                if frames:  # else a control message of the link, answered
                    sink(frames)
                if not link.buffered():
                    return True
        except (OSError, MalformedMessage):
            poller.unregister(link.fileno())
            by_thread: dict[bytes, rawlink.RawLink] = getattr(self._local, "links", {})
            uuid = next((u for u, lk in by_thread.items() if lk is link), b"")
            self._drop_link(uuid, link)
            return False

    def _poller(self, socks: Sequence[Any]) -> "zmq.Poller | _LinkPoller":
        """A poller for *socks*, kept per thread (a wait on the same sockets reuses it)."""
        pollers: dict[tuple[int, ...], Any] | None = getattr(self._local, "pollers", None)
        if pollers is None:
            pollers = self._local.pollers = {}
        key = tuple(sorted({id(s) for s in socks}))
        poller = pollers.get(key)
        if poller is None:
            if len(pollers) > 64:  # sockets handed over and replaced: forget old combinations
                pollers.clear()
            unique = {id(s): s for s in socks}.values()
            if _HAVE_EPOLL and all(s.__class__ is rawlink.RawLink for s in unique):
                poller = pollers[key] = _LinkPoller()
                with self._lock:
                    self._epolls.add(poller)  # closed with the client (else when forgotten)
            else:
                poller = pollers[key] = zmq.Poller()
            for sock in unique:
                # a raw link by its file descriptor: poll() reports it as that int
                poller.register(sock.fileno() if sock.__class__ is rawlink.RawLink else sock, zmq.POLLIN)
        return poller

    def _hand_over(self, uuids: Sequence[bytes], socks: Sequence[zmq.Socket],
                   futures: Sequence[concurrent.futures.Future[Any]], reply_sock: zmq.Socket | None = None,
                   reply_links: Sequence[rawlink.RawLink] = ()) -> None:
        """Give the sockets that still expect replies to the IO thread (this thread stops using them)."""
        self._local.pollers = None  # they hold sockets this thread no longer owns
        unfinished = [f for f in futures if not f.done()]
        if reply_sock is not None and unfinished:
            # the reply may come on either socket: the IO thread reads both until it has come
            self._local.reply = None
            with self._lock:
                self._sockets.remove(reply_sock)
            self._client._adopt_route(b"reply:" + self._identity, reply_sock, unfinished)
            by_thread: dict[bytes, rawlink.RawLink] = getattr(self._local, "links", {})
            for uuid, link in list(by_thread.items()):
                if link in reply_links:
                    del by_thread[uuid]
                    with self._lock:
                        self._sockets.remove(link)
                    self._client._adopt_route(b"reply-link:" + uuid, link, unfinished)
        socks_by_thread: dict[bytes, zmq.Socket] = getattr(self._local, "sockets", {})
        links_by_thread: dict[bytes, rawlink.RawLink] = getattr(self._local, "links", {})
        pending: dict[bytes, list[concurrent.futures.Future[Any]]] = {}
        by_uuid: dict[bytes, zmq.Socket] = {}
        for uuid, sock, fut in zip(uuids, socks, futures):
            by_uuid[uuid] = sock
            if not fut.done():
                pending.setdefault(uuid, []).append(fut)
        for uuid, futs in pending.items():
            sock = by_uuid[uuid]
            if sock.__class__ is rawlink.RawLink and sock in reply_links:
                continue  # adopted above with the reply links
            if links_by_thread.get(uuid) is sock:
                del links_by_thread[uuid]
            else:
                socks_by_thread.pop(uuid, None)
            with self._lock:
                self._sockets.remove(sock)
            self._client._adopt_route(uuid, sock, futs)

    def close(self) -> None:
        """Close every per-thread socket (called when the client closes)."""
        with self._lock:
            socks, self._sockets = self._sockets, []
            epolls = list(self._epolls)
        for sock in socks:
            sock.close(linger=0)
        for poller in epolls:
            poller.close()
