"""Shared buffers for large frames (``ipcluster.protocol.segments``): messages, grants and peer maps."""

from __future__ import annotations

import os
import struct

import pytest

from ipcluster.errors import MalformedMessage
from ipcluster.protocol import bufpool, segments
from ipcluster.protocol.bufpool import GRANULE, BufferPool
from ipcluster.protocol.segments import MIN_SIZE, Grants, PeerMaps

pytestmark = pytest.mark.skipif(not bufpool.HAVE_SHARED, reason="needs memfd_create (Linux)")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_request_and_reply_round_trip():
    frames = segments.encode_request([MIN_SIZE, 3 * MIN_SIZE], [7, 9])
    assert frames[0] == segments.GRANT_REQUEST
    assert segments.decode_request(frames[1]) == ((MIN_SIZE, 3 * MIN_SIZE), (7, 9))
    frames = segments.encode_reply([(5, GRANULE, True), (0, 0, False)], [9])
    assert frames[0] == segments.GRANT_REPLY
    assert segments.decode_reply(frames[1]) == ([(5, GRANULE, True), (0, 0, False)], (9,))


@pytest.mark.parametrize("payload", [
    b"",
    b"\x01\x00",
    struct.pack("<I", 1),  # a size promised, none there
    struct.pack("<IQI", 1, 5, 0) + b"extra",
    struct.pack("<I", segments.MAX_GRANTS + 1) + bytes(8 * (segments.MAX_GRANTS + 1)) + struct.pack("<I", 0),
    struct.pack("<I", 0) + struct.pack("<I", segments.MAX_PEER_MAPS + 1) + bytes(8 * (segments.MAX_PEER_MAPS + 1)),
])
def test_malformed_requests_and_replies_are_refused(payload):
    with pytest.raises(MalformedMessage):
        segments.decode_request(payload)
    with pytest.raises(MalformedMessage):
        segments.decode_reply(payload)


def test_grants_reserve_shared_buffers_and_send_each_file_once():
    pool = BufferPool()
    grants = Grants(pool=pool)
    reply, fds = grants.serve(segments.encode_request([MIN_SIZE, 2 * MIN_SIZE], [])[1])
    entries, gone = segments.decode_reply(reply[1])
    assert [cap for _, cap, _ in entries] == [GRANULE, 2 * GRANULE] and gone == ()
    assert all(new for _, _, new in entries) and len(fds) == 2
    assert pool.sizes()["shared"] == 2 and pool.sizes()["free"] == 0  # reserved: in use
    first, second = (ident for ident, _, _ in entries)
    frame = grants.claim(first, MIN_SIZE)
    assert len(frame) == MIN_SIZE and not frame.readonly
    with pytest.raises(MalformedMessage):
        grants.claim(first, MIN_SIZE)  # once only
    with pytest.raises(MalformedMessage):
        grants.claim(second, MIN_SIZE)  # not the size it was granted for
    del frame
    # the next request releases what was not used; a buffer the sender has mapped comes without its file
    reply, fds = grants.serve(segments.encode_request([MIN_SIZE], [first, 12345])[1])
    entries, gone = segments.decode_reply(reply[1])
    assert entries == [(first, GRANULE, False)] and fds == [] and gone == (12345,)
    assert pool.sizes()["free"] == 1  # the 2 MiB one, no longer reserved
    grants.clear()
    assert pool.sizes()["free"] == 2


@pytest.mark.parametrize("sizes, limit", [([MIN_SIZE - 1], -1), ([MIN_SIZE, MIN_SIZE], MIN_SIZE)])
def test_grants_refuse_small_or_oversized_requests(sizes, limit):
    grants = Grants(max_size=limit, pool=BufferPool())
    with pytest.raises(MalformedMessage):
        grants.serve(segments.encode_request(sizes, [])[1])


def test_peer_maps_write_into_the_receivers_buffer():
    pool = BufferPool()
    grants = Grants(pool=pool)
    peer = PeerMaps()
    reply, fds = grants.serve(segments.encode_request([MIN_SIZE + 5], peer.have())[1])
    entries, gone = segments.decode_reply(reply[1])
    peer.update(entries, gone, [os.dup(fd) for fd in fds])  # the sender gets copies of the files
    ident = entries[0][0]
    data = bytes(range(256)) * ((MIN_SIZE + 5) // 256) + b"12345"
    data = data[:MIN_SIZE + 5]
    assert peer.write(ident, memoryview(data))
    assert bytes(grants.claim(ident, MIN_SIZE + 5)) == data
    assert not peer.write(999, data)  # not mapped here
    assert not peer.write(ident, bytes(3 * GRANULE))  # larger than the buffer (2 MiB)
    peer.close()
    assert len(peer) == 0


def test_peer_maps_close_every_file_they_get_even_when_the_grant_is_wrong():
    peer = PeerMaps()
    r, w = os.pipe()
    with pytest.raises(MalformedMessage):
        peer.update([(1, GRANULE, True), (2, GRANULE, True)], (), [r])  # two new buffers, one file
    with pytest.raises(OSError):
        os.fstat(r)
    with pytest.raises(MalformedMessage):
        peer.update([(3, GRANULE, True)], (), [w])  # a pipe cannot be mapped
    with pytest.raises(OSError):
        os.fstat(w)


def test_peer_maps_drop_gone_least_recently_used_and_idle_maps():
    clock = Clock()
    pool = BufferPool()
    peer = PeerMaps(clock=clock)
    ids, views = [], []
    for _ in range(segments.MAX_PEER_MAPS + 2):
        ident, fd, capacity, view = pool.take_shared(MIN_SIZE)
        ids.append(ident)
        views.append(view)  # in use: the next take makes another
        peer.update([(ident, capacity, True)], (), [os.dup(fd)])
    assert peer.have() == ids[2:]  # the two least recently used went
    peer.update([], [ids[2]], [])
    assert ids[2] not in peer.have()
    clock.now += 5
    assert peer.write(ids[3], b"x" * MIN_SIZE)
    clock.now += bufpool.IDLE_SECONDS - 1
    assert peer.trim(bufpool.IDLE_SECONDS) == segments.MAX_PEER_MAPS - 2  # all but the one just used
    assert peer.have() == [ids[3]]
