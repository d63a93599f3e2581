"""Size limits on what a peer may make us receive (``ZMQ_MAXMSGSIZE``), by socket role.

libzmq checks each incoming frame's length before reading it and drops the connection of a peer
that announces a bigger one, so an oversized frame is never buffered, let alone decoded.  Three
classes of socket:

* **data** sockets carry task payloads and results (the mux route, same-host direct sockets, the
  client's hub socket, which receives kept results): limit ``max_message_size``, cluster-wide,
  default :data:`DEFAULT_MAX_MESSAGE_SIZE` (4 GiB per frame: a 1 GiB push passes);
* **request** sockets carry small JSON requests and replies (the controller's hub and control
  sockets, an engine's control socket): at most :data:`REQUEST_LIMIT`, or ``max_message_size``
  if that is smaller;
* the controller's heartbeat socket takes only pongs: :data:`HEARTBEAT_LIMIT`.

The controller writes ``max_message_size`` into the connection file, so engines and clients use
the same limit as the controller (``-1``: no limit).
"""

from __future__ import annotations

from typing import Any

#: Largest frame a data socket accepts by default (bytes).
DEFAULT_MAX_MESSAGE_SIZE = 4 << 30
#: Largest frame a request socket accepts (bytes).
REQUEST_LIMIT = 64 << 20
#: Largest frame the heartbeat socket accepts (bytes).
HEARTBEAT_LIMIT = 64 << 10

DATA, REQUEST, HEARTBEAT = "data", "request", "heartbeat"


def limit_for(kind: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> int:
    """The ``ZMQ_MAXMSGSIZE`` of a socket of *kind* (``-1``: none)."""
    if kind == DATA:
        return max_message_size
    cap = REQUEST_LIMIT if kind == REQUEST else HEARTBEAT_LIMIT
    return cap if max_message_size < 0 else min(cap, max_message_size)


def set_limit(sock: Any, kind: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
    """Set the zmq socket *sock*'s ``ZMQ_MAXMSGSIZE`` for its *kind* (before it connects or binds)."""
    import zmq  # not at import time: connection files are read by code that never opens a socket

    sock.setsockopt(zmq.MAXMSGSIZE, limit_for(kind, max_message_size))


__all__ = ["DATA", "DEFAULT_MAX_MESSAGE_SIZE", "HEARTBEAT", "HEARTBEAT_LIMIT", "REQUEST", "REQUEST_LIMIT",
           "limit_for", "set_limit"]
