"""The controller's side of CurveZMQ: its keys and the allow-list of client keys.

A ZAP handler (pyzmq's :class:`~zmq.auth.thread.ThreadAuthenticator`, a thread of its own) answers
libzmq's question "may this public key connect?" once per connection handshake; messages on an
established connection never reach it, so routing costs nothing more than libzmq's encryption.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from ipcluster.errors import IPClusterError
from ipcluster.protocol import curve


class AllowList:
    """Public keys (Z85) that may connect; the ZAP handler's credentials provider."""

    def __init__(self, keys: Iterable[str], log: logging.Logger):
        self.keys = {k.encode("ascii") for k in keys}
        self.log = log
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.denied += 1
        if self.denied <= 10 or self.denied % 1000 == 0:
            self.log.warning("refused a connection with an unknown CurveZMQ key %s (%d refused so far)",
                             key.decode("ascii", "replace"), self.denied)
        return False


@dataclass
class CurveServer:
    """The controller's keys and its running ZAP handler."""

    server_public: str
    server_secret: str
    member_public: str  # the cluster's own client keypair, handed out in the connection file
    member_secret: str
    allowed: AllowList
    authenticator: ThreadAuthenticator | None = field(default=None, repr=False)

    def secure(self, sock: zmq.Socket) -> None:
        """Make *sock* a CURVE server (call before it binds)."""
        curve.set_server_key(sock, self.server_secret)

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def start_curve(ctx: zmq.Context, extra_keys: Iterable[str], log: logging.Logger) -> CurveServer:
    """Fresh server and member keypairs, and a ZAP handler allowing the member key and *extra_keys*."""
    bad = [k for k in extra_keys if not curve.valid_key(k)]
    if bad:
        raise IPClusterError(f"curve_allowed_keys: not a 40-character Z85 public key: {bad[0]!r}")
    server_public, server_secret = curve.new_keypair()
    member_public, member_secret = curve.new_keypair()
    allowed = AllowList([member_public, *extra_keys], log)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("controller.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allowed)
    return CurveServer(server_public, server_secret, member_public, member_secret, allowed, auth)


__all__ = ["AllowList", "CurveServer", "start_curve"]
