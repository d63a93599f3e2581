"""Large arrays between the client and same-host engines: written into the receiver's shared
buffers (ipcluster/protocol/segments.py) or received into reused warm ones
(ipcluster/protocol/bufpool.py), without ever overwriting an array someone still holds."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from ipcluster.protocol import bufpool
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(120)

N = 3 * bufpool.MIN_SIZE // 8  # float64 items: 3 MiB, above the pool's threshold


def test_pulled_arrays_are_intact_while_held_and_their_buffers_reused_once_dropped(rc) -> None:
    dv = rc[0]
    dv.push({"a": np.full(N, 1.0)}, block=True)
    first = dv.pull("a", block=True)
    dv.push({"a": np.full(N, 2.0)}, block=True)
    second = dv.pull("a", block=True)  # first is held: its buffer must not be reused
    assert np.all(first == 1.0) and np.all(second == 2.0)
    assert first.flags.writeable
    del first, second
    before = bufpool.POOL.reused
    for k in range(3):
        dv.push({"a": np.full(N, float(k))}, block=True)
        got = dv.pull("a", block=True)
        assert got.shape == (N,) and np.all(got == k)
        del got
        rc.purge_results()  # the client keeps recent results for lookup by msg_id (up to 64 MiB)
    assert bufpool.POOL.reused >= before + 2


def test_engine_keeps_each_pushed_array_intact_when_the_next_arrives(rc) -> None:
    dv = rc[0]
    dv.push({"x": np.full(N, 5.0)}, block=True)
    dv.execute("kept = x", block=True)  # the engine holds the first array under another name
    dv.push({"x": np.full(N, 6.0)}, block=True)
    dv.execute("sums = (float(kept.sum()), float(x.sum()))\ndel kept, x", block=True)
    assert dv.pull("sums", block=True) == (5.0 * N, 6.0 * N)


def test_scatter_and_gather_of_a_large_array_round_trip(rc) -> None:
    view = rc[:]
    data = np.arange(4 * N, dtype=np.float64)
    view.scatter("part", data, block=True)
    view.execute("size = len(part)", block=True)
    sizes = view.pull("size", block=True)
    assert sum(sizes) == data.size and all(s > 0 for s in sizes)
    first = view.gather("part", block=True)
    view.scatter("part", data * 2, block=True)
    second = view.gather("part", block=True)
    assert np.array_equal(first, data) and np.array_equal(second, data * 2)
    first[0] = -1.0  # a gathered array is the caller's to change
    assert second[0] == 0.0
    ar = view.scatter("part", data, block=False)
    ar.get(timeout=60)
    assert np.array_equal(view.gather("part", block=False).get(timeout=60), data)


def test_the_client_releases_buffers_left_unused(rc, monkeypatch) -> None:
    monkeypatch.setattr(bufpool.POOL, "idle_seconds", 0.2)
    rc[0].push({"big": np.ones(N)}, block=True)
    handed_out = bufpool.POOL.created + bufpool.POOL.reused
    got = rc[0].pull("big", block=True)
    assert got.sum() == N
    assert bufpool.POOL.created + bufpool.POOL.reused > handed_out  # received into a pooled map
    del got
    rc.purge_results()
    rc[0].execute("del big", block=True)
    # the client's IO thread trims the pool every few seconds: the free map goes
    wait_for(lambda: bufpool.POOL.sizes()["free"] == 0, 20, what="the pool to release its free maps")


def peer_buffer_maps() -> int:
    """How many maps of other processes' pool memory files this process has."""
    own = {os.fstat(slot.fd).st_ino for slot in list(bufpool.POOL._slots) if slot.fd >= 0}
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:ipcluster-buffer" in line and int(line.split()[4]) not in own)


def named_segments() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.skipif(not bufpool.HAVE_SHARED, reason="needs memfd_create (Linux)")
def test_large_arrays_are_written_once_into_the_receivers_shared_buffers(rc) -> None:
    dv = rc[0]
    shm_before = named_segments()
    dv.push({"a": np.full(N, 3.0)}, block=True)
    # the engine's array is its own shared buffer, which the client wrote into
    assert dv.apply_sync(engine_pool_sizes)["shared"] >= 1
    assert dv.apply_sync(array_in_memory_file, "a")
    got = dv.pull("a", block=True)  # and the other way: the engine writes into the client's buffer
    assert np.all(got == 3.0) and got.flags.writeable
    assert bufpool.POOL.sizes()["shared"] >= 1
    assert named_segments() == shm_before  # nothing with a name: nothing outlives the processes


def engine_pool_sizes() -> dict:
    from ipcluster.protocol import bufpool

    return bufpool.POOL.sizes()


def array_in_memory_file(name: str) -> bool:
    """Whether the engine's array *name* lives in a map of one of its pool's memory files."""
    import __main__  # the engine's namespace

    addr = getattr(__main__, name).ctypes.data
    with open("/proc/self/maps") as f:
        for line in f:
            span, *rest = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return "memfd:ipcluster-buffer" in line
    return False


@pytest.mark.skipif(not bufpool.HAVE_SHARED, reason="needs memfd_create (Linux)")
def test_buffers_of_a_killed_engine_are_let_go(fresh_cluster, monkeypatch) -> None:
    import ipcluster

    monkeypatch.setattr(bufpool.POOL, "idle_seconds", 0.2)
    client = ipcluster.Client(url_file=fresh_cluster.connection_file)
    try:
        client.wait_for_engines(2, timeout=30)
        before = peer_buffer_maps()
        client[0].push({"a": np.ones(N)}, block=True)
        assert peer_buffer_maps() > before  # the client maps the engine's buffer to write into it
        pid = client[0].apply_sync(os.getpid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: 0 not in client.ids, 30, what="the killed engine to be unregistered")
        # the client's trim (every few seconds) drops maps unused for idle_seconds
        wait_for(lambda: peer_buffer_maps() <= before, 30, what="the client to unmap the dead engine's buffer")
        assert client[client.ids[0]].apply_sync(engine_pool_sizes)["maps"] >= 0  # the other engine serves
    finally:
        client.close()
