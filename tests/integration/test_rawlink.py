"""Multipart messages over Unix stream sockets (``ipcluster.protocol.rawlink``), over socketpairs and a listener."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import rawlink
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
    right.sock.settimeout(0.2)
    left.sock.sendall(struct.pack("<IQ", 1, 10))  # the frame never comes
    with pytest.raises(TimeoutError):
        right.recv()


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
