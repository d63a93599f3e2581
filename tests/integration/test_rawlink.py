"""Multipart messages over Unix stream sockets (``ipcluster.protocol.rawlink``), over socketpairs and a listener."""

from __future__ import annotations

import gc
import os
import socket
import struct
import threading

import pytest

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import bufpool, rawlink, segments
from ipcluster.protocol.rawlink import CHUNK, MAX_FRAMES, Listener, RawLink, connect


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = RawLink(a, timeout=5), RawLink(b, max_size=1 << 30, timeout=5)
    yield left, right
    left.close()
    right.close()


def as_bytes(frames):
    return [bytes(f) for f in frames]


@pytest.mark.parametrize("frames", [
    [b"one"],
    [b"", b"empty frames are frames"],
    [b"a" * 10, memoryview(b"b" * 100), bytearray(b"c" * (CHUNK + 7))],
    [bytes([i % 256]) * (i % 97) for i in range(300)],  # many small frames in one read
])
def test_round_trip(pair, frames):
    left, right = pair
    left.send(frames)
    got = right.recv()
    assert as_bytes(got) == [bytes(f) for f in frames]
    assert all(type(f) is bytearray for f in got)  # writable for the user
    assert not right.buffered()


def test_back_to_back_messages_are_buffered_and_all_delivered(pair):
    left, right = pair
    msgs = [[b"m%d" % i, b"x" * i] for i in range(50)]
    for m in msgs:
        left.send(m)
    got = [as_bytes(right.recv()) for _ in msgs]
    assert got == msgs


def test_large_message_with_partial_sends_and_reads(pair):
    """Bigger than the socket buffers: the sender's sendmsg returns short, the reader reads in pieces."""
    left, right = pair
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB
    done = threading.Event()

    def send():
        left.send([b"head", big, b"tail"])
        done.set()

    t = threading.Thread(target=send)
    t.start()
    assert as_bytes(right.recv()) == [b"head", big, b"tail"]
    t.join(10)
    assert done.is_set()


def test_clean_end_between_messages_is_none(pair):
    left, right = pair
    left.send([b"last"])
    left.close()
    assert as_bytes(right.recv()) == [b"last"]
    assert right.recv() is None


def test_end_in_the_middle_of_a_message_is_an_error(pair):
    left, right = pair
    left.sock.sendall(struct.pack("<IQ", 1, 100) + b"only part")
    left.close()
    with pytest.raises(ConnectionError):
        right.recv()


@pytest.mark.parametrize("count", [0, MAX_FRAMES + 1])
def test_frame_count_out_of_bounds_is_refused(pair, count):
    left, right = pair
    left.sock.sendall(struct.pack("<I", count))
    with pytest.raises(MalformedMessage):
        right.recv()


def test_oversized_message_is_refused_before_reading_it(pair):
    left, right = pair
    right.max_size = 1000
    left.sock.sendall(struct.pack("<IQ", 1, 10**12))  # a terabyte is announced, nothing follows
    with pytest.raises(MalformedMessage, match="at most 1000"):
        right.recv()


def test_too_many_frames_to_send(pair):
    left, _ = pair
    with pytest.raises(ValueError):
        left.send([b""] * (MAX_FRAMES + 1))


def test_stalled_sender_times_out(pair):
    left, right = pair
    right.timeout = 0.2
    left.sock.sendall(struct.pack("<IQ", 1, 10))  # the frame never comes
    with pytest.raises(TimeoutError):
        right.recv()


def test_send_to_a_peer_that_stopped_reading_times_out(pair):
    left, right = pair
    left.timeout = 0.2
    with pytest.raises(TimeoutError):
        for _ in range(10000):  # fills the socket buffers, then waits for a reader that never comes
            left.send([b"x" * 65536])


def test_listener_accept_connect_and_cleanup(tmp_path):
    path = str(tmp_path / "r-test")
    lis = Listener(path, max_size=1 << 20)
    try:
        assert lis.accept() is None  # nobody yet: never blocks
        client = connect(path)
        server = None
        for _ in range(1000):
            server = lis.accept()
            if server is not None:
                break
        assert server is not None
        client.send([rawlink.HELLO + b"me"])
        assert as_bytes(server.recv()) == [rawlink.HELLO + b"me"]
        server.send([b"reply"])
        assert as_bytes(client.recv()) == [b"reply"]
        client.close()
        server.close()
    finally:
        lis.close()
    assert not (tmp_path / "r-test").exists()
    with pytest.raises(OSError):
        connect(path)


# --- the controller's and engines' raw listeners in a real cluster ------------------------------


class Canary:
    """Unpickling this creates a file: it must never happen for a message that fails its checks."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _listeners(rc):
    import os

    ipc_dir = rc.connection_info.ipc_dir
    return [os.path.join(ipc_dir, rawlink.CONTROLLER_LISTENER)] + sorted(
        os.path.join(ipc_dir, n) for n in os.listdir(ipc_dir) if n.startswith("r-"))


def test_bad_input_on_raw_listeners_is_dropped_and_they_keep_serving(rc, tmp_path):
    from ipcluster.protocol.serialize import pack_apply_message
    from ipcluster.protocol.session import Session, new_key

    paths = _listeners(rc)
    assert len(paths) == 3  # the controller's and both engines'
    canary = tmp_path / "canary"
    forger = Session(new_key())
    forged = forger.serialize("apply_request", {}, idents=[b"scheduler"],
                              buffers=pack_apply_message(print, (Canary(canary),), {}))
    for path in paths:
        for junk in (struct.pack("<I", 0), struct.pack("<IQ", 1, 1 << 62), b"\xff" * 64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(junk)
            sock.close()
        link = connect(path)
        link.send(forged if path.endswith(rawlink.CONTROLLER_LISTENER) else forged[1:])
        link.close()
    lview = rc.load_balanced_view()
    assert [lview.apply_sync(lambda x: x * 2, i) for i in range(4)] == [0, 2, 4, 6]
    assert rc[:].apply_sync(lambda: 1) == [1, 1]
    assert not canary.exists()


def test_blocking_load_balanced_calls_from_threads_each_use_their_own_links(rc):
    lview = rc.load_balanced_view()
    results = {}

    def work(k):
        results[k] = [lview.apply_sync(lambda x: x + k, i) for i in range(20)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {k: [i + k for i in range(20)] for k in range(4)}
    assert not rc.outstanding


# --- large frames through the receiver's shared buffers (ipcluster.protocol.segments) ---------------

needs_shared = pytest.mark.skipif(not bufpool.HAVE_SHARED, reason="needs memfd_create (Linux)")


def in_thread(fn, *args):
    """Run *fn* in a thread; returns a function that joins it and gives its result (or raises)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: B036 - handed to the joining test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join():
        t.join(10)
        assert not t.is_alive(), f"{fn} did not finish"
        if "error" in out:
            raise out["error"]
        return out.get("value")
    return join


def recv_message(link):
    """The next message, past the empty results of answering grant requests."""
    while (frames := link.recv()) == []:
        pass
    return frames


def big_frame(size=3 * segments.MIN_SIZE, seed=0):
    return (bytes(range(seed, 256)) + bytes(range(seed))) * (size // 256)


@needs_shared
def test_large_frames_are_written_into_the_receivers_shared_buffers(pair):
    left, right = pair
    left.use_segments()
    # free shared buffers left in this process's pool by earlier tests may be granted too: the
    # pool grows by at most the two this message needs
    pool_before = bufpool.POOL.sizes()["shared"]
    big = big_frame()
    for seed in range(3):
        big = big_frame(seed=seed)
        sent = in_thread(left.send, [b"head", big, memoryview(big)[:segments.MIN_SIZE], b"tail"])
        got = recv_message(right)
        sent()
        assert as_bytes(got) == [b"head", big, big[:segments.MIN_SIZE], b"tail"]
        assert type(got[1]) is memoryview and not got[1].readonly  # the receiver's own buffer
        del got
    # the two buffers are reused each time: the sender mapped each once
    assert bufpool.POOL.sizes()["shared"] - pool_before <= 2
    assert len(left.peer) == 2
    assert right.grants is not None and not left.buffered() and not right.buffered()


@needs_shared
def test_small_frames_and_links_without_segments_use_the_socket(pair):
    left, right = pair
    big = big_frame()
    sent = in_thread(left.send, [b"x" * (segments.MIN_SIZE - 1), big])  # no use_segments: all on the socket
    assert as_bytes(recv_message(right)) == [b"x" * (segments.MIN_SIZE - 1), big]
    sent()
    assert right.grants is None
    left.use_segments()
    sent = in_thread(left.send, [b"x" * (segments.MIN_SIZE - 1)])  # below the threshold: no grant asked
    assert as_bytes(right.recv()) == [b"x" * (segments.MIN_SIZE - 1)]  # (recv would return [] after one)
    sent()


@needs_shared
def test_messages_that_come_while_waiting_for_a_grant_keep_their_order(pair):
    left, right = pair
    left.use_segments()
    big = big_frame()
    right.send([b"first"])
    right.send([b"second"])
    received = in_thread(recv_message, right)  # answers the grant request, then gets the message
    left.send([big])
    assert as_bytes(received()) == [big]
    assert left.buffered()
    assert as_bytes(left.recv()) == [b"first"]
    assert as_bytes(left.recv()) == [b"second"]
    assert not left.buffered()


@needs_shared
def test_both_ends_sending_large_frames_at_once(pair):
    left, right = pair
    left.use_segments()
    right.use_segments()
    a, b = big_frame(seed=1), big_frame(seed=2)

    def send_then_recv(link, frames):
        link.send(frames)
        return as_bytes(recv_message(link))

    from_left = in_thread(send_then_recv, left, [b"L", a])
    assert send_then_recv(right, [b"R", b]) == [b"L", a]
    assert from_left() == [b"R", b]


@needs_shared
def test_a_frame_in_a_buffer_never_granted_is_refused(pair):
    left, right = pair
    left.sock.sendall(struct.pack("<IQ", 1, rawlink.IN_BUFFER | segments.MIN_SIZE) + struct.pack("<Q", 1))
    with pytest.raises(MalformedMessage, match="never granted"):
        right.recv()


@needs_shared
def test_a_grant_nobody_asked_for_and_a_bad_request_are_refused(pair):
    left, right = pair
    left.send(segments.encode_reply([(1, segments.MIN_SIZE, False)], []))
    with pytest.raises(MalformedMessage, match="not asked for"):
        right.recv()
    left2, right2 = (RawLink(s, timeout=5) for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        left2.send(segments.encode_request([10], []))  # too small to need a shared buffer
        with pytest.raises(MalformedMessage):
            right2.recv()
    finally:
        left2.close()
        right2.close()


@needs_shared
def test_a_peer_that_breaks_off_during_a_grant_fails_the_send(pair):
    left, right = pair
    left.use_segments()
    sent = in_thread(left.send, [big_frame()])
    assert right._read_message()[0] == segments.GRANT_REQUEST  # read the request, never answer it
    right.close()
    with pytest.raises(ConnectionError):
        sent()


@needs_shared
def test_shared_buffers_leave_no_file_descriptor_behind():
    def fds():
        return len(os.listdir("/proc/self/fd"))

    def release_all():
        gc.collect()  # links of earlier tests
        old = bufpool.POOL.idle_seconds
        bufpool.POOL.idle_seconds = 0  # every free buffer is idle enough
        try:
            bufpool.POOL.trim()
        finally:
            bufpool.POOL.idle_seconds = old

    release_all()
    before = fds()
    for _ in range(3):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        left, right = RawLink(a, timeout=5), RawLink(b, timeout=5)
        left.use_segments()
        held = []
        for size in (segments.MIN_SIZE, 2 * segments.MIN_SIZE, 5 * segments.MIN_SIZE):
            sent = in_thread(left.send, [big_frame(size)])
            held.append(recv_message(right))  # kept: each message needs a new buffer
            sent()
        assert fds() > before + 3  # the pool's memory files
        left.close()
        right.close()
        del held
    release_all()
    assert fds() == before


@needs_shared
def test_a_link_taken_over_by_an_event_loop_answers_grants_and_sends_on_the_socket(pair):
    import asyncio
    import logging

    left, right = pair
    left.use_segments()
    right.use_segments()  # a client thread's link, before its caller stopped waiting
    loop = asyncio.new_event_loop()
    got: list = []
    arrived = threading.Event()

    def on_message(frames):
        got.append(as_bytes(frames))
        arrived.set()

    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    channel_box: list = []
    ready = threading.Event()

    def make_channel():
        channel_box.append(rawlink.RawChannel(loop, right, on_message, "test", logging.getLogger("test")))
        ready.set()

    loop.call_soon_threadsafe(make_channel)
    assert ready.wait(5)
    channel = channel_box[0]
    try:
        assert right.peer is None  # the loop's sends never wait for grants
        big = big_frame()
        left.send([b"to-loop", big])  # the loop answers the grant request
        assert arrived.wait(5)
        assert got == [[b"to-loop", big]]
        sent = in_thread(channel.send, [b"from-loop", big])  # through the socket
        assert as_bytes(left.recv()) == [b"from-loop", big]
        sent()
    finally:
        loop.call_soon_threadsafe(channel.close)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
