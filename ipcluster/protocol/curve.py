"""CurveZMQ encryption and key checking for a cluster's connections (off unless enabled).

With ``enable_curve`` the controller's sockets are CURVE servers: every connection is encrypted
(Curve25519 + XSalsa20-Poly1305), and the controller accepts only clients whose public key is on its
allow-list (checked once per connection by a ZAP handler, see :mod:`controller.curve`).  The
connection file then carries three Z85 keys:

* ``curve_serverkey`` — the controller's public key (what a client needs to connect at all);
* ``curve_publickey`` / ``curve_secretkey`` — the cluster's own client keypair, which engines and
  clients holding the connection file use and the controller always allows.

A client may bring its own keypair instead (``Client(curve_publickey=..., curve_secretkey=...)``);
its public key must then be on the controller's allow-list (``c.IPController.curve_allowed_keys`` or
``Cluster(curve_allowed_keys=[...])``).

Keys are set when sockets are made, so messages cost nothing extra in Python when Curve is off and
only libzmq's encryption when it is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zmq

from ipcluster.errors import IPClusterError

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.protocol.connection import ConnectionInfo


class CurveUnavailable(IPClusterError):
    """The installed libzmq was built without CURVE support."""


def check_available() -> None:
    if not zmq.has("curve"):
        raise CurveUnavailable(f"this libzmq ({zmq.zmq_version()}) has no CURVE support; "
                               "install a pyzmq wheel (it bundles libzmq with libsodium)")


def new_keypair() -> tuple[str, str]:
    """A fresh ``(public, secret)`` CurveZMQ keypair, Z85 text."""
    check_available()
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def public_key(secret: str) -> str:
    """The public key belonging to a Z85 *secret* key."""
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


def valid_key(key: str) -> bool:
    """Is *key* a 40-character Z85 CurveZMQ key?"""
    if len(key) != 40:
        return False
    from zmq.utils import z85

    try:
        z85.decode(key.encode("ascii"))
    except (ValueError, UnicodeError, KeyError):
        return False
    return True


def enabled(info: "ConnectionInfo") -> bool:
    """Does the cluster described by *info* use CurveZMQ?"""
    return bool(info.curve_serverkey)


def client_keypair(info: "ConnectionInfo", public: str | None = None, secret: str | None = None) -> tuple[str, str]:
    """The keypair a client of *info* uses: its own when given, else the cluster's."""
    if secret and not public:
        public = public_key(secret)
    if public and secret:
        return public, secret
    if public or secret:
        raise ValueError("give both curve_publickey and curve_secretkey (or only the secret key)")
    if not (info.curve_publickey and info.curve_secretkey):
        raise ValueError("the connection file has no client keypair for CurveZMQ; pass curve_secretkey")
    return info.curve_publickey, info.curve_secretkey


def set_client_keys(target: zmq.Socket | zmq.Context, info: "ConnectionInfo",
                    keypair: tuple[str, str] | None = None) -> None:
    """Make *target* (a socket, or a context: then every socket it makes later) a CURVE client of *info*."""
    public, secret = keypair or client_keypair(info)
    target.setsockopt(zmq.CURVE_SERVERKEY, info.curve_serverkey.encode("ascii"))
    target.setsockopt(zmq.CURVE_PUBLICKEY, public.encode("ascii"))
    target.setsockopt(zmq.CURVE_SECRETKEY, secret.encode("ascii"))


def set_server_key(sock: zmq.Socket, secret: str) -> None:
    """Make *sock* a CURVE server with *secret* (before it binds)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode("ascii"))


__all__ = ["CurveUnavailable", "check_available", "client_keypair", "enabled", "new_keypair", "public_key",
           "set_client_keys", "set_server_key", "valid_key"]
