"""The controller's raw links (see :mod:`ipcluster.protocol.rawlink`): same-host load-balanced tasks
without zmq's thread hand-offs.

* Client threads making a blocking load-balanced call connect to ``<ipc_dir>/raw`` and send the task
  as they would on their mux DEALER (``[b"scheduler", <IDS|MSG>, ...]``).  Each connection gets a
  routing id of its own (``raw-<n>``) and its messages enter :meth:`Router.from_client` exactly like
  the mux socket's; whatever the router sends to that id (errors, output, replies the engine could
  not deliver itself) goes back on the connection (:class:`Front`).
* For each registered engine that listens on a raw socket, the controller connects to it
  (announcing itself with :data:`~ipcluster.protocol.rawlink.CONTROLLER_HELLO`) and the scheduler
  sends that engine the tasks of raw clients there (:meth:`RawLinks.send_to_engine`; other tasks
  keep to ``mux_back``, whose I/O thread batches streams of them better); the engine answers output
  and replies on the same connection, which enter :meth:`Router.from_engine` like ``mux_back``'s.

Everything runs in the controller's loop and never blocks it: reads take what is there (a partial
message waits for the rest), and sends the peer cannot take yet are queued and written when the
socket is writable.  A peer that breaks the framing rules is disconnected; a broken link to an engine
makes the scheduler's send raise ``EHOSTUNREACH``, as the zmq route does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from typing import Any, Callable, Sequence

import zmq

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import rawlink

Handler = Callable[[list[Any]], None]

LISTENER = rawlink.CONTROLLER_LISTENER
#: Routing ids the controller gives raw client connections start with this.
RAW_CLIENT_PREFIX = b"raw-"


class RawLinks:
    def __init__(self, loop: asyncio.AbstractEventLoop, ipc_dir: str, max_size: int, log: logging.Logger):
        self.loop = loop
        self.log = log
        self.max_size = max_size
        self.path = os.path.join(ipc_dir, LISTENER)
        try:
            os.unlink(self.path)  # left by a controller that was killed (restore reuses the directory)
        except OSError:
            pass
        self.listener = rawlink.Listener(self.path, max_size)
        self.clients: dict[bytes, rawlink.AsyncLink] = {}
        self.engines: dict[bytes, rawlink.AsyncLink] = {}
        self._ids = itertools.count(1)
        self.on_client_message: Handler = lambda frames: None  # Router.from_client, set by the app
        self.on_engine_message: Handler = lambda frames: None  # Router.from_engine, set by the app
        loop.add_reader(self.listener.fileno(), self._accept)

    # --- clients ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while (conn := self.listener.accept_socket()) is not None:
            link = rawlink.AsyncLink(conn, self.max_size)
            ident = RAW_CLIENT_PREFIX + b"%d" % next(self._ids)
            self.clients[ident] = link
            self.loop.add_reader(link.fileno(), self._read, link, ident, False)

    def send_to_client(self, frames: Sequence[Any]) -> bool:
        """Send *frames* (routing id first) if the id is a raw client's; ``False`` if it is not."""
        link = self.clients.get(frames[0] if frames[0].__class__ is bytes else bytes(frames[0]))
        if link is None:
            return False
        self._send(link, frames[1:], frames[0], False)
        return True

    # --- engines ------------------------------------------------------------------------------

    def connect_engine(self, uuid: bytes, path: str) -> None:
        """Open the link to a registered engine's raw socket (tasks then go there)."""
        self.drop_engine(uuid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)
            sock.connect(path)  # a Unix socket with a listener accepts at once
        except OSError as e:
            sock.close()
            self.log.warning("no raw link to engine %s at %s: %s (tasks go through zmq)", uuid[:8], path, e)
            return
        link = rawlink.AsyncLink(sock, self.max_size)
        self.engines[uuid] = link
        self.loop.add_reader(link.fileno(), self._read, link, uuid, True)
        self._send(link, [rawlink.CONTROLLER_HELLO], uuid, True)

    def drop_engine(self, uuid: bytes) -> None:
        link = self.engines.pop(uuid, None)
        if link is not None:
            self._close(link)

    def send_to_engine(self, frames: Sequence[Any]) -> bool:
        """Send a task (``[engine uuid, client id, <IDS|MSG>, ...]``) on the engine's link;
        ``False`` if it has none.  Raises ``zmq.ZMQError(EHOSTUNREACH)`` if the link broke."""
        uuid = frames[0]
        link = self.engines.get(uuid)
        if link is None:
            return False
        if not self._send(link, frames[1:], uuid, True):
            raise zmq.ZMQError(zmq.EHOSTUNREACH, "the raw link to the engine is gone")
        return True

    # --- both ---------------------------------------------------------------------------------

    def _read(self, link: rawlink.AsyncLink, ident: bytes, engine: bool) -> None:
        try:
            messages, eof = link.read()
        except (OSError, MalformedMessage) as e:
            self.log.warning("closing a raw link (%s): %s", ident[:12], e)
            self._forget(link, ident, engine)
            return
        handler = self.on_engine_message if engine else self.on_client_message
        for frames in messages:
            try:
                handler([ident, *frames])
            except Exception:
                self.log.exception("error handling a message on a raw link")
        if eof:
            self._forget(link, ident, engine)

    def _send(self, link: rawlink.AsyncLink, frames: Sequence[Any], ident: Any, engine: bool) -> bool:
        was_waiting = link.waiting
        try:
            link.send(frames)
        except OSError as e:
            self.log.info("a raw link is gone (%s): %s", bytes(ident)[:12], e)
            self._forget(link, bytes(ident), engine)
            return False
        if link.waiting and not was_waiting:
            self.loop.add_writer(link.fileno(), self._flush, link, bytes(ident), engine)
        return True

    def _flush(self, link: rawlink.AsyncLink, ident: bytes, engine: bool) -> None:
        try:
            link.flush()
        except OSError:
            self._forget(link, ident, engine)
            return
        if not link.waiting:
            self.loop.remove_writer(link.fileno())

    def _forget(self, link: rawlink.AsyncLink, ident: bytes, engine: bool) -> None:
        table = self.engines if engine else self.clients
        if table.get(ident) is link:
            del table[ident]
        self._close(link)

    def _close(self, link: rawlink.AsyncLink) -> None:
        if link.closed:
            return
        fd = link.fileno()
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        link.close()

    def close(self) -> None:
        for link in [*self.clients.values(), *self.engines.values()]:
            self._close(link)
        self.clients.clear()
        self.engines.clear()
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()


class Front:
    """The mux route's client-facing sender: raw clients' messages go on their links, the rest on
    the zmq socket.  Stands in for the front ``Channel`` in the router (``send``, ``on_message``)."""

    def __init__(self, channel: Any, links: RawLinks):
        self.channel = channel
        self.links = links

    def send(self, frames: Sequence[Any]) -> None:
        if not (self.links.clients and self.links.send_to_client(frames)):
            self.channel.send(frames)

    @property
    def on_message(self) -> Any:
        return self.channel.on_message

    @on_message.setter
    def on_message(self, handler: Any) -> None:
        self.channel.on_message = handler

    def __getattr__(self, name: str) -> Any:  # everything else is the channel's (counters, socket)
        return getattr(self.channel, name)
