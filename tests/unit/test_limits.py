"""Size limits per socket role, and what the controller keeps of each reply."""

from __future__ import annotations

import psutil
import pytest
import zmq

from controller.records import COMPACT_BELOW, compact
from ipcluster.protocol.limits import (DATA, DEFAULT_MAX_MESSAGE_SIZE, HEARTBEAT, HEARTBEAT_LIMIT, REQUEST,
                                       REQUEST_LIMIT, limit_for, set_limit)

pytestmark = pytest.mark.timeout(30)


def test_limits_by_kind():
    assert limit_for(DATA) == DEFAULT_MAX_MESSAGE_SIZE >= 1 << 30  # a 1 GiB push passes
    assert limit_for(REQUEST) == REQUEST_LIMIT and limit_for(HEARTBEAT) == HEARTBEAT_LIMIT
    assert limit_for(DATA, 1000) == 1000 and limit_for(REQUEST, 1000) == 1000  # never above the cluster's
    assert limit_for(DATA, -1) == -1 and limit_for(REQUEST, -1) == REQUEST_LIMIT


def test_an_oversized_frame_never_arrives():
    ctx = zmq.Context()
    try:
        server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        for s in (server, client):
            s.linger = 0
        set_limit(server, REQUEST, 10_000)
        assert server.getsockopt(zmq.MAXMSGSIZE) == 10_000
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"x" * 10_001)
        assert not server.poll(300)
        client.send(b"small")  # goes on a new connection once the client has reconnected
        assert server.poll(10_000) and server.recv_multipart()[1] == b"small"
    finally:
        ctx.destroy(linger=0)


def test_kept_replies_copy_small_received_frames_and_keep_large_ones():
    big = zmq.Frame(b"x" * COMPACT_BELOW)
    kept = compact([zmq.Frame(b"<IDS|MSG>"), b"sig", memoryview(b"json"), big])
    assert kept[:3] == [b"<IDS|MSG>", b"sig", b"json"] and all(type(f) is bytes for f in kept[:3])
    assert kept[3] is big


def test_kept_small_frames_do_not_pin_receive_buffers():
    """Why compact() exists: a received small frame keeps ~10 KB of libzmq's buffer alive."""
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.ROUTER)
        port = b.bind_to_random_port("tcp://127.0.0.1")
        a.connect(f"tcp://127.0.0.1:{port}")
        me = psutil.Process()
        kept = []
        n = 5000
        before = me.memory_info().rss
        for _ in range(n):
            a.send_multipart([b"<IDS|MSG>", b"s" * 64, b"h" * 200, b"p" * 200, b"m" * 150, b"c" * 60])
            kept.append(compact(b.recv_multipart(copy=False)))
        per_message = (me.memory_info().rss - before) / n
        assert per_message < 4000, f"{per_message:.0f} bytes kept per message"
        a.close(linger=0)
        b.close(linger=0)
    finally:
        ctx.term()
