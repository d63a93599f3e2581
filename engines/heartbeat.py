"""Heartbeat echo: pings from ``hb_ping`` go straight back to ``hb_pong``, in C.

A SUB socket (subscribed to everything) and a DEALER (identity = engine uuid, so the controller
knows who answered) are joined by ``zmq.proxy`` in a daemon thread.  The proxy runs inside libzmq
with the GIL released, so a task that holds the GIL for minutes does not miss heartbeats: the
controller declares an engine dead only when the *process* stops answering.
"""

from __future__ import annotations

import logging
import threading

import zmq

from ipcluster.protocol.limits import HEARTBEAT, set_limit

log = logging.getLogger("engines.heartbeat")


class Heartbeat(threading.Thread):
    """Echoes heartbeat pings until the context is terminated."""

    def __init__(self, ctx: zmq.Context, ping_url: str, pong_url: str, identity: bytes):
        super().__init__(name="engine-heartbeat", daemon=True)
        self.ctx = ctx
        self.ping_url = ping_url
        self.pong_url = pong_url
        self.identity = identity

    def run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            sub = self.ctx.socket(zmq.SUB)
            sockets.append(sub)
            dealer = self.ctx.socket(zmq.DEALER)
            sockets.append(dealer)
            for s in sockets:
                s.linger = 0
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            set_limit(sub, HEARTBEAT)  # pings are a few bytes; nothing bigger is ever read
            set_limit(dealer, HEARTBEAT)
            sub.connect(self.ping_url)
            dealer.setsockopt(zmq.IDENTITY, self.identity)
            dealer.connect(self.pong_url)
            zmq.proxy(sub, dealer)
        except zmq.ContextTerminated:
            pass  # the engine is exiting
        except zmq.ZMQError as e:
            log.error("heartbeat stopped: %s", e)
        finally:
            for s in sockets:
                s.close(linger=0)
