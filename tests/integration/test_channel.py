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


def test_a_drain_pass_runs_inside_the_batch_context():
    """Messages already queued are handled in one pass, inside one ``with batch:``."""

    class Batch:
        def __init__(self) -> None:
            self.depth = 0
            self.passes: list[list[bytes]] = []

        def __enter__(self) -> None:
            self.depth += 1
            self.passes.append([])

        def __exit__(self, *exc: object) -> None:
            self.depth -= 1

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://batched")
    push = ctx.socket(zmq.PUSH)
    push.connect("inproc://batched")
    for i in range(5):
        push.send(b"%d" % i)
    loop = asyncio.new_event_loop()
    batch = Batch()
    seen: list[bytes] = []

    def on_message(frames: list[zmq.Frame]) -> None:
        assert batch.depth == 1
        batch.passes[-1].append(frames[0].bytes)
        seen.append(frames[0].bytes)
        if len(seen) == 5:
            loop.stop()

    ch = Channel(loop, pull, on_message, "pull", logging.getLogger("test"), batch=batch)
    loop.call_later(10, loop.stop)  # a bound if the messages never come
    loop.run_forever()
    assert seen == [b"%d" % i for i in range(5)]
    assert batch.passes[0] == seen and batch.depth == 0
    ch.close(linger=0)
    push.close(linger=0)
    loop.close()
    ctx.term()
