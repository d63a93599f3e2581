"""Forged, replayed and malformed messages are dropped before anything is unpickled."""

from __future__ import annotations

import time

import zmq

from ipcluster.protocol.serialize import pack_apply_message
from ipcluster.protocol.session import Session, new_key


class Canary:
    """Unpickling this creates a file: proof that a pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _socket(ctx, info, role):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(info.url(role))
    return s


def test_forged_messages_never_unpickled_and_cluster_keeps_working(rc, tmp_path):
    info = rc.connection_info
    uuid = rc._engines[0]
    canary = tmp_path / "canary"
    payload = pack_apply_message(print, (Canary(canary),), {})
    ctx = zmq.Context()
    try:
        mux = _socket(ctx, info, "mux_front")
        hub = _socket(ctx, info, "hub")
        control = _socket(ctx, info, "control_front")
        forger = Session(new_key())  # wrong key
        for sock in (mux, control):
            sock.send_multipart(forger.serialize("apply_request", {}, buffers=payload, idents=[uuid]))
        hub.send_multipart(forger.serialize("controller_shutdown_request", {}))
        # right key but the buffers were swapped for different-size ones after signing
        good = Session(info.key_bytes)
        frames = good.serialize("apply_request", {}, buffers=pack_apply_message(len, ([],), {}), idents=[uuid])
        mux.send_multipart(frames[:-1] + [bytes(payload[0])])
        # a replay of a genuine message
        genuine = good.serialize("apply_request", {}, buffers=pack_apply_message(len, ([],), {}), idents=[uuid])
        mux.send_multipart(genuine)
        assert Session(info.key_bytes).deserialize(mux.recv_multipart())  # answered once
        mux.send_multipart(genuine)
        # garbage of every shape
        for junk in ([b""], [uuid], [uuid, b"<IDS|MSG>"], [b"x" * 100_000], [uuid, b"<IDS|MSG>"] + [b"{"] * 6):
            mux.send_multipart(junk)
            hub.send_multipart(junk)
            control.send_multipart(junk)
        # the cluster still works for the real client, and the controller is still up
        assert rc[:].apply_sync(lambda: "ok") == ["ok", "ok"]
        assert rc.queue_status()[0]["queue"] == 0
        # the replay got no second answer
        assert mux.poll(200) == 0
    finally:
        ctx.destroy(linger=0)
    assert not canary.exists(), "a forged pickle was executed"


def test_iopub_relays_engine_output(rc):
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"engine.1.stream")
        sub.connect(rc.connection_info.url("iopub"))
        session = Session(rc.connection_info.key_bytes)
        deadline = time.monotonic() + 10
        got = None
        # PUB/SUB subscriptions take effect asynchronously: keep producing output until one arrives
        while got is None and time.monotonic() < deadline:
            rc[1].apply_sync(lambda: print("relayed"))
            if sub.poll(100):
                got = session.deserialize(sub.recv_multipart())
        assert got is not None, "no output copy on iopub"
        assert got.idents == [b"engine.1.stream"] and got.content["text"] == "relayed\n"
        assert got.parent_header["msg_type"] == "apply_request"
    finally:
        ctx.destroy(linger=0)


def test_forged_messages_on_an_engines_direct_socket_are_dropped(rc, tmp_path):
    """The engines' same-host sockets check signatures like the controller's."""
    uuid = rc._engines[1]
    url = rc._direct_urls.get(uuid)
    assert url and url.startswith("tcp://127.0.0.1:"), "same-host engines expose a direct socket"
    canary = tmp_path / "canary"
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.connect(url)
        forger = Session(new_key())
        frames = forger.serialize("apply_request", {}, idents=[uuid],
                                  buffers=pack_apply_message(print, (Canary(canary),), {}))
        deadline = time.monotonic() + 10
        while True:  # the connection handshake must finish before a ROUTER can address the engine
            try:
                sock.send_multipart(frames)
                break
            except zmq.ZMQError:
                assert time.monotonic() < deadline, "could not reach the engine's direct socket"
                sock.poll(10)
        sock.send_multipart([uuid, b"<IDS|MSG>", b"junk"])
        assert rc[1].apply_sync(lambda: "still serving") == "still serving"
        assert sock.poll(200) == 0, "the engine answered a forged message"
    finally:
        ctx.destroy(linger=0)
    assert not canary.exists(), "a forged pickle was executed"
