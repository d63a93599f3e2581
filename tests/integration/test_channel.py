"""Channel over inproc sockets: sends queued by other threads keep their order with the loop's own."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
import zmq

from ipcluster.protocol.channel import Channel

pytestmark = pytest.mark.timeout(20)


def test_send_soon_from_many_threads_keeps_per_thread_order_and_loses_nothing():
    ctx = zmq.Context()
    sink = ctx.socket(zmq.PULL)
    sink.bind("inproc://sink")
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://sink")
    loop = asyncio.new_event_loop()
    ch = Channel(loop, push, None, "push", logging.getLogger("test"), threadsafe=True)
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    n, threads = 2000, 4

    def produce(k: int) -> None:
        for i in range(n):
            ch.send_soon([b"%d" % k, b"%d" % i])

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for p in producers:
        p.start()
    # the loop's own sends go after what other threads queued before them
    loop.call_soon_threadsafe(lambda: ch.send([b"loop", b"0"]))
    for p in producers:
        p.join()
    got: dict[bytes, list[int]] = {}
    poller = zmq.Poller()
    poller.register(sink, zmq.POLLIN)
    while sum(len(v) for v in got.values()) < n * threads + 1:
        assert poller.poll(5000), "a queued message was lost"
        k, i = sink.recv_multipart()
        got.setdefault(k, []).append(int(i))
    for k in range(threads):
        assert got[b"%d" % k] == list(range(n))
    assert got[b"loop"] == [0]
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    ch.close(linger=0)
    sink.close(linger=0)
    loop.close()
    ctx.term()


def test_send_soon_on_a_closed_channel_raises():
    ctx = zmq.Context()
    loop = asyncio.new_event_loop()
    ch = Channel(loop, ctx.socket(zmq.PUSH), None, "push", logging.getLogger("test"), threadsafe=True)
    ch.close(linger=0)
    with pytest.raises(zmq.ZMQError):
        ch.send_soon([b"x"])
    loop.close()
    ctx.term()
